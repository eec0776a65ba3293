"""Time, behind a protocol: the only module that reads the operating system's clocks.

Cores take `now_ms` as an argument; the shells that call them hold a `Clock`, and take their
sleeps and timed waits from it too. Three clocks:

- `SystemClock`: the operating system's clocks; sleeps are real.
- `ManualClock`: reads move only when told to (expiry, retention and state timers run on
  virtual time), sleeps are real: a node built on it still heartbeats and polls in real time.
- `VirtualClock`: a `ManualClock` whose sleeps and timed waits are virtual too: they end when
  `advance` moves the clock past them, so a shell's loop runs a minute of its schedule in
  milliseconds of real time, and a test says how much time passes instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time (epoch milliseconds) and monotonic time (milliseconds), and
    the sleeps and timed waits of the shells that hold it."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch; may jump (NTP), never used for timeouts."""
        ...

    def monotonic_ms(self) -> int:
        """Milliseconds from an arbitrary origin; never goes back; used for timeouts."""
        ...

    def timer_ms(self) -> float:
        """The time `sleep` and `wait` run on (milliseconds, never goes back): a loop that
        schedules its own timers reads this, not `monotonic_ms`, so its schedule and its sleeps
        agree (they differ only on a `ManualClock`, whose reads stand still while it sleeps)."""
        ...

    async def sleep(self, ms: float) -> None:
        """Returns after `ms` milliseconds of this clock's timer time (at once if <= 0)."""
        ...

    async def wait(self, event: asyncio.Event, ms: float | None) -> bool:
        """Waits until `event` is set or `ms` milliseconds of timer time have passed (None: no
        bound, the caller's own wake-up only). Returns whether the event is set."""
        ...


async def _wait_real(event: asyncio.Event, ms: float | None) -> bool:
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(None if ms is None else max(0.0, ms) / 1000):
            await event.wait()
    return event.is_set()


class SystemClock:
    """The operating system's clocks. Stateless; safe from any thread."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def timer_ms(self) -> float:
        return time.monotonic() * 1000  # the event loop's own clock (asyncio's default)

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms) / 1000)

    async def wait(self, event: asyncio.Event, ms: float | None) -> bool:
        return await _wait_real(event, ms)


class ManualClock:
    """A clock that moves only when told to; its sleeps are real (module docstring). For tests
    and the simulator; not thread-safe."""

    def __init__(self, *, wall_ms: int = 1_700_000_000_000, monotonic_ms: int = 0) -> None:
        assert wall_ms >= 0
        assert monotonic_ms >= 0
        self._wall_ms = wall_ms
        self._monotonic_ms = monotonic_ms

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic_ms(self) -> int:
        return self._monotonic_ms

    def timer_ms(self) -> float:
        return time.monotonic() * 1000

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms) / 1000)

    async def wait(self, event: asyncio.Event, ms: float | None) -> bool:
        return await _wait_real(event, ms)

    def advance(self, *, ms: int) -> None:
        """Move both clocks forward by `ms` milliseconds."""
        assert ms >= 0
        self._wall_ms += ms
        self._monotonic_ms += ms


# Loop passes `VirtualClock.settle` gives the woken tasks: enough for a shell's pass (its
# sleep returns, it reads, decides and sleeps again) when that pass awaits no real I/O.
_SETTLE_PASSES = 20


class VirtualClock(ManualClock):
    """A `ManualClock` whose sleeps and timed waits are virtual: each ends when `advance` moves
    the clock to its deadline. For tests of the async shells; one event loop, not thread-safe.
    Real I/O a shell awaits (a thread, a socket) still takes real time: `run_for` yields to the
    loop after every step, and tests that wait on such I/O keep a real deadline."""

    def __init__(self, *, wall_ms: int = 1_700_000_000_000, monotonic_ms: int = 0) -> None:
        super().__init__(wall_ms=wall_ms, monotonic_ms=monotonic_ms)
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties wake in the order they slept

    def timer_ms(self) -> float:
        return float(self._monotonic_ms)

    async def sleep(self, ms: float) -> None:
        if ms <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A deadline between two milliseconds is due at the later one: never early.
        due_ms = self._monotonic_ms + int(-(-ms // 1))
        heapq.heappush(self._sleepers, (due_ms, next(self._order), woken))
        await woken  # cancelled with the sleeper: `advance` skips a done future

    async def wait(self, event: asyncio.Event, ms: float | None) -> bool:
        if event.is_set() or ms is None:
            await event.wait()
            return True
        waiting = asyncio.ensure_future(event.wait())
        sleeping = asyncio.ensure_future(self.sleep(ms))
        try:
            await asyncio.wait({waiting, sleeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            sleeping.cancel()
        return event.is_set()

    def advance(self, *, ms: int) -> None:
        """Move both clocks forward by `ms` milliseconds and wake every sleeper now due (they
        run at the loop's next passes: `settle`)."""
        super().advance(ms=ms)
        while self._sleepers and self._sleepers[0][0] <= self._monotonic_ms:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():
                woken.set_result(None)

    def next_due_ms(self) -> int | None:
        """The deadline of the earliest pending sleep, if any."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self) -> None:
        """Lets the tasks woken by the last move run until they sleep again (bounded passes of
        the event loop; real I/O they await is not waited for)."""
        for _ in range(_SETTLE_PASSES):
            await asyncio.sleep(0)

    async def run_for(self, ms: int) -> None:
        """Moves the clock `ms` milliseconds forward, stopping at every sleeper's deadline on
        the way so that each loop runs every pass it would have run in real time."""
        assert ms >= 0
        until = self._monotonic_ms + ms
        await self.settle()
        while True:
            due = self.next_due_ms()
            if due is None or due > until:
                break
            self.advance(ms=max(0, due - self._monotonic_ms))
            await self.settle()
        self.advance(ms=until - self._monotonic_ms)
        await self.settle()

    async def run_until(
        self, predicate: Callable[[], bool], *, step_ms: int, deadline_s: float = 10.0
    ) -> None:
        """Runs the clock forward `step_ms` at a time until `predicate()` holds; bounded by a
        real deadline (the real I/O the shells await between steps takes real time)."""
        assert step_ms > 0
        async with asyncio.timeout(deadline_s):
            while not predicate():
                await self.run_for(step_ms)
                await asyncio.sleep(0.001)  # a thread's result reaches the loop
