"""Time, behind a protocol: the only module that reads the operating system's clocks.

Cores take `now_ms` as an argument; the shells that call them hold a `Clock`. Tests and the
simulator pass a `ManualClock` so that expiry, retention and state timers run on virtual time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time (epoch milliseconds) and monotonic time (milliseconds)."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch; may jump (NTP), never used for timeouts."""
        ...

    def monotonic_ms(self) -> int:
        """Milliseconds from an arbitrary origin; never goes back; used for timeouts."""
        ...


class SystemClock:
    """The operating system's clocks. Stateless; safe from any thread."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to. For tests and the simulator; not thread-safe."""

    def __init__(self, *, wall_ms: int = 1_700_000_000_000, monotonic_ms: int = 0) -> None:
        assert wall_ms >= 0
        assert monotonic_ms >= 0
        self._wall_ms = wall_ms
        self._monotonic_ms = monotonic_ms

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic_ms(self) -> int:
        return self._monotonic_ms

    def advance(self, *, ms: int) -> None:
        """Move both clocks forward by `ms` milliseconds."""
        assert ms >= 0
        self._wall_ms += ms
        self._monotonic_ms += ms
