"""Tumbling windows and watermarks: which window a row belongs to, and when a window closes.

Pure rules over integers (epoch milliseconds). A tumbling window of `size_ms` covers
[start, start + size_ms) with `start` a multiple of the size since the epoch, so every node and
every restart assigns a row to the same window (KDA's STEP and FLOOR align the same way).

The watermark is the time up to which the application has seen every row: its input's ROWTIME
(the records' arrival time in the input stream) never goes backwards within a shard, so the
largest ROWTIME read is a watermark while the reader is behind. Once the reader has caught up
(MillisBehindLatest 0), no record can still arrive with an earlier arrival time than the wall
clock minus the in-flight allowance, so the watermark follows the clock: an idle stream still
closes its windows, as KDA's ROWTIME windows close on the clock. A window closes when the
watermark reaches its end, once; rows arriving for a closed window are late and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable


def window_start(time_ms: int, size_ms: int) -> int:
    """The start of the window of `size_ms` holding `time_ms` (floor division: negative
    times fall in the window before, not after)."""
    assert size_ms > 0
    return (time_ms // size_ms) * size_ms


def closed(starts: Iterable[int], size_ms: int, watermark_ms: int) -> list[int]:
    """The windows among `starts` whose end the watermark has reached, oldest first."""
    return sorted(start for start in starts if start + size_ms <= watermark_ms)


def is_late(time_ms: int, size_ms: int, watermark_ms: int) -> bool:
    """A row whose window already closed."""
    return window_start(time_ms, size_ms) + size_ms <= watermark_ms


def next_watermark(
    previous_ms: int,
    *,
    max_rowtime_ms: int | None,
    caught_up: bool,
    now_ms: int,
    in_flight_ms: int,
) -> int:
    """The watermark after a read: the largest ROWTIME seen, or (caught up) the clock less the
    in-flight allowance; never lower than before."""
    assert in_flight_ms >= 0
    candidate = previous_ms
    if max_rowtime_ms is not None:
        candidate = max(candidate, max_rowtime_ms)
    if caught_up:
        candidate = max(candidate, now_ms - in_flight_ms)
    return candidate
