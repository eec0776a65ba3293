"""The clocks' sleeps and timed waits (broker/clock.py): a `VirtualClock`'s end exactly when
the clock reaches them, in order, and never in real time."""

from __future__ import annotations

import asyncio

from broker.clock import ManualClock, VirtualClock


async def test_a_virtual_sleep_ends_when_the_clock_reaches_it_and_not_before() -> None:
    clock = VirtualClock(monotonic_ms=0)
    sleeping = asyncio.create_task(clock.sleep(100))
    await clock.settle()
    clock.advance(ms=99)
    await clock.settle()
    assert not sleeping.done()
    clock.advance(ms=1)
    await clock.settle()
    assert sleeping.done()


async def test_sleepers_wake_in_deadline_order_and_a_cancelled_one_is_skipped() -> None:
    clock = VirtualClock(monotonic_ms=0)
    woke: list[int] = []

    async def sleeper(ms: int) -> None:
        await clock.sleep(ms)
        woke.append(clock.monotonic_ms())

    tasks = [asyncio.create_task(sleeper(ms)) for ms in (300, 100, 200)]
    cancelled = asyncio.create_task(clock.sleep(50))
    await clock.settle()
    cancelled.cancel()
    await clock.run_for(1_000)
    assert woke == [100, 200, 300]  # run_for stops at every deadline on its way
    assert clock.monotonic_ms() == 1_000
    assert clock.next_due_ms() is None
    await asyncio.gather(*tasks)


async def test_a_loop_runs_every_pass_of_a_virtual_minute_at_once() -> None:
    clock = VirtualClock(monotonic_ms=0)
    passes: list[int] = []

    async def every_100_ms() -> None:
        while True:
            passes.append(clock.monotonic_ms())
            await clock.sleep(100)

    task = asyncio.create_task(every_100_ms())
    try:
        async with asyncio.timeout(5):  # a real bound; a real-time loop would take 60 s
            await clock.run_for(60_000)
        assert passes == list(range(0, 60_001, 100))
    finally:
        task.cancel()


async def test_a_virtual_wait_ends_with_the_event_or_at_its_deadline() -> None:
    clock = VirtualClock(monotonic_ms=0)
    event = asyncio.Event()
    timed_out = asyncio.create_task(clock.wait(event, 500))
    await clock.run_for(499)
    assert not timed_out.done()
    await clock.run_for(1)
    assert timed_out.done() and timed_out.result() is False
    woken = asyncio.create_task(clock.wait(event, 500))
    await clock.settle()
    event.set()
    await clock.settle()
    assert woken.done() and woken.result() is True
    assert clock.monotonic_ms() == 500  # the set event moved no time
    assert clock.next_due_ms() is None  # the woken wait's sleep was cancelled


async def test_a_manual_clock_stands_still_while_its_sleeps_take_real_time() -> None:
    clock = ManualClock(monotonic_ms=0)
    began = clock.timer_ms()
    await clock.sleep(20)
    assert clock.monotonic_ms() == 0
    assert clock.timer_ms() - began >= 15  # the event loop's clock; allow its granularity
    assert await clock.wait(asyncio.Event(), 1) is False
