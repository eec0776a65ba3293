"""Per-stream overrides of the shard rates, and the buckets a new shard leader starts with."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.streams.throttling import (
    RATE_NAMES,
    ShardWriteThrottle,
    StreamLimits,
    ThroughputLimits,
    fill_fraction,
    merge_overrides,
    resolve,
)

CLUSTER = ThroughputLimits(
    write_bytes_per_second=1024 * 1024,
    write_records_per_second=1000,
    read_calls_per_second=5,
    read_bytes_per_second=2 * 1024 * 1024,
)


def test_unset_overrides_follow_the_cluster_and_zero_lifts_a_limit() -> None:
    assert resolve(CLUSTER, StreamLimits()) is CLUSTER
    resolved = resolve(CLUSTER, StreamLimits(write_records_per_second=0, read_calls_per_second=9))
    assert resolved.write_records_per_second == 0
    assert resolved.read_calls_per_second == 9
    assert resolved.write_bytes_per_second == CLUSTER.write_bytes_per_second
    assert resolved.read_bytes_per_second == CLUSTER.read_bytes_per_second
    assert resolved.writes_limited  # bytes still are
    assert not resolve(
        CLUSTER, StreamLimits(write_records_per_second=0, write_bytes_per_second=0)
    ).writes_limited


def test_merge_sets_some_keeps_others_and_resets_named_ones() -> None:
    current = StreamLimits(write_bytes_per_second=10, read_calls_per_second=3)
    merged = merge_overrides(
        current, StreamLimits(read_bytes_per_second=0), reset=("write_bytes_per_second",)
    )
    assert merged == StreamLimits(read_calls_per_second=3, read_bytes_per_second=0)
    assert merge_overrides(merged, StreamLimits(), reset=RATE_NAMES).is_default()


def test_a_negative_rate_is_a_programmer_error() -> None:
    with pytest.raises(AssertionError):
        StreamLimits(write_bytes_per_second=-1)


def test_fill_fraction() -> None:
    assert fill_fraction(leader_since_ms=5_000, now_ms=5_000, took_over=False) == 1.0
    assert fill_fraction(leader_since_ms=5_000, now_ms=5_000, took_over=True) == 0.0
    assert fill_fraction(leader_since_ms=5_000, now_ms=5_250, took_over=True) == 0.25
    assert fill_fraction(leader_since_ms=5_000, now_ms=9_000, took_over=True) == 1.0
    # This node's clock behind the proposer's: no time has passed, not a negative fill.
    assert fill_fraction(leader_since_ms=5_000, now_ms=4_000, took_over=True) == 0.0


@settings(deadline=None)  # its examples take what the machine gives: no per-example deadline
@given(
    rate=st.integers(min_value=1, max_value=2_000),
    change_ms=st.integers(min_value=0, max_value=3_000),
    steps_ms=st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=80),
)
def test_a_leader_change_never_admits_more_than_one_burst_plus_the_rate(
    rate: int, change_ms: int, steps_ms: list[int]
) -> None:
    """A greedy producer takes everything two successive leaders admit, the second starting
    at `change_ms` (its buckets empty then, refilled since). Over every window [a, b] the
    admitted count stays within rate (burst) + rate * (b - a) / 1000, as for one bucket."""
    limits = ThroughputLimits(
        write_bytes_per_second=0,
        write_records_per_second=rate,
        read_calls_per_second=0,
        read_bytes_per_second=0,
    )
    old = ShardWriteThrottle(limits, now_ms=0)
    new: ShardWriteThrottle | None = None
    admitted: list[int] = []  # the time of every admitted record
    now = 0
    for step in steps_ms:
        now += step
        if now >= change_ms and new is None:
            now_wall = now  # one clock here: the new leader sees the change `now - change_ms` ago
            fill = fill_fraction(leader_since_ms=change_ms, now_ms=now_wall, took_over=True)
            new = ShardWriteThrottle(limits, now_ms=now, fill=fill)
        throttle = old if new is None else new
        for _ in range(rate * 3):  # more than any bucket could hold
            if not throttle.admit(record_bytes=1, now_ms=now):
                break
            admitted.append(now)
    admitted.sort()
    times = sorted(set(admitted))
    for i, start in enumerate(times):
        first = bisect.bisect_left(admitted, start)
        for end in times[i:]:
            inside = bisect.bisect_right(admitted, end) - first
            assert inside <= rate + rate * (end - start) / 1000 + 1e-6
