"""Brute force on access keys, throttled: failed authentications counted per client address.

After `failures_max` failed attempts (unknown key, bad signature) within `window_ms`, every
attempt from that address is refused until the window since its first failure has passed,
right or wrong, so guessing costs the window per `failures_max` guesses. A success does not
reset the count (a valid key must not open the door for guessing other keys). Pure: the
caller passes `now_ms`. Bounded: at most `addresses_max` addresses are tracked; the oldest
window is dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

FAILURES_MAX = 20
WINDOW_MS = 60_000
ADDRESSES_MAX = 10_000


@dataclass(slots=True)
class _Window:
    started_ms: int
    failures: int


class FailureThrottle:
    def __init__(
        self,
        *,
        failures_max: int = FAILURES_MAX,
        window_ms: int = WINDOW_MS,
        addresses_max: int = ADDRESSES_MAX,
    ) -> None:
        assert failures_max > 0
        assert window_ms > 0
        self._failures_max = failures_max
        self._window_ms = window_ms
        self._addresses_max = addresses_max
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def blocked(self, address: str, *, now_ms: int) -> bool:
        window = self._windows.get(address)
        if window is None:
            return False
        if now_ms - window.started_ms >= self._window_ms:
            del self._windows[address]
            return False
        return window.failures >= self._failures_max

    def failed(self, address: str, *, now_ms: int) -> None:
        window = self._windows.get(address)
        if window is None or now_ms - window.started_ms >= self._window_ms:
            window = _Window(started_ms=now_ms, failures=0)
            self._windows.pop(address, None)
            self._windows[address] = window
        window.failures += 1
        while len(self._windows) > self._addresses_max:
            self._windows.popitem(last=False)
