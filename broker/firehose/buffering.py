"""When a delivery buffer is written out: BufferingHints, size or interval, whichever first.

Pure (the clock is passed in). AWS's defaults for S3 are 5 MiB and 300 s; the hints' own limits
(1-128 MiB, 0-900 s) are the model's and are checked at the door.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
DEFAULT_SIZE_MIB = 5
DEFAULT_INTERVAL_S = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Hints:
    size_bytes: int
    interval_ms: int

    def __post_init__(self) -> None:
        assert self.size_bytes > 0
        assert self.interval_ms >= 0


def hints_from(configuration: Mapping[str, Any]) -> Hints:
    """The hints of a destination configuration (its `BufferingHints`, AWS's defaults for what
    is absent). A Redshift destination buffers as its S3 staging configuration says."""
    if "BufferingHints" not in configuration and "CopyCommand" in configuration:
        configuration = configuration.get("S3Configuration") or {}
    hints = configuration.get("BufferingHints") or {}
    size_mib = int(hints.get("SizeInMBs", DEFAULT_SIZE_MIB))
    interval_s = int(hints.get("IntervalInSeconds", DEFAULT_INTERVAL_S))
    return Hints(size_bytes=size_mib * MIB, interval_ms=interval_s * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferState:
    """What a buffer holds: its size and when its first record entered it (None: empty)."""

    size_bytes: int = 0
    records: int = 0
    opened_ms: int | None = None

    def add(self, size_bytes: int, *, now_ms: int) -> BufferState:
        assert size_bytes >= 0
        opened = self.opened_ms if self.opened_ms is not None else now_ms
        return BufferState(
            size_bytes=self.size_bytes + size_bytes, records=self.records + 1, opened_ms=opened
        )


EMPTY = BufferState()


def flush_reason(state: BufferState, hints: Hints, *, now_ms: int) -> str | None:
    """ "size" or "interval" when the buffer must be delivered now, else None."""
    if state.records == 0:
        return None
    if state.size_bytes >= hints.size_bytes:
        return "size"
    assert state.opened_ms is not None
    if now_ms - state.opened_ms >= hints.interval_ms:
        return "interval"
    return None


def flush_due_ms(state: BufferState, hints: Hints) -> int | None:
    """When the interval runs out for this buffer (None while empty)."""
    if state.opened_ms is None:
        return None
    return state.opened_ms + hints.interval_ms
