"""Token buckets and shard throttles on virtual time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker import limits
from broker.streams.throttling import (
    ShardReadThrottle,
    ShardWriteThrottle,
    ThroughputLimits,
    TokenBucket,
)

MiB = 1024 * 1024


def shard_limits(**overrides: int) -> ThroughputLimits:
    values = {
        "write_bytes_per_second": MiB,
        "write_records_per_second": 1000,
        "read_calls_per_second": 5,
        "read_bytes_per_second": 2 * MiB,
    }
    values.update(overrides)
    return ThroughputLimits(**values)


def test_bucket_holds_one_second_and_refills_linearly() -> None:
    bucket = TokenBucket(rate_per_second=10, now_ms=0)
    assert bucket.take(10, now_ms=0)
    assert not bucket.take(1, now_ms=0)
    assert not bucket.take(1, now_ms=99)
    assert bucket.take(1, now_ms=100)
    assert bucket.available(now_ms=100_000) == 10  # never more than one second's worth


def test_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(rate_per_second=10, now_ms=1_000)
    assert bucket.take(10, now_ms=1_000)
    assert not bucket.take(1, now_ms=0)
    assert bucket.available(now_ms=1_000) == 0


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 200)), max_size=200))
def test_writes_never_exceed_rate_plus_one_second_burst(steps: list[tuple[int, int]]) -> None:
    """Whatever the arrival pattern, admitted records over a window of T ms never exceed the
    rate times T plus the one-second burst."""
    throttle = ShardWriteThrottle(shard_limits(write_records_per_second=100), now_ms=0)
    now_ms = 0
    admitted = 0
    for gap_ms, attempts in steps:
        now_ms += gap_ms
        admitted += sum(throttle.admit(record_bytes=10, now_ms=now_ms) for _ in range(attempts))
    assert admitted <= 100 + now_ms * 100 // 1000 + 1


def test_write_bytes_limit_refuses_the_record_whole() -> None:
    throttle = ShardWriteThrottle(shard_limits(), now_ms=0)
    assert throttle.admit(record_bytes=MiB - 10, now_ms=0)
    assert not throttle.admit(record_bytes=100, now_ms=0)
    assert throttle.admit(record_bytes=10, now_ms=0)
    assert throttle.admit(record_bytes=100, now_ms=1)


def test_record_larger_than_one_second_needs_a_full_bucket() -> None:
    throttle = ShardWriteThrottle(shard_limits(), now_ms=0)
    assert throttle.admit(record_bytes=5 * MiB, now_ms=0)  # full bucket: admitted into debt
    assert not throttle.admit(record_bytes=1, now_ms=3_000)
    assert throttle.admit(record_bytes=1, now_ms=5_000)


def test_unlimited_admits_everything() -> None:
    unlimited = shard_limits(
        write_bytes_per_second=0,
        write_records_per_second=0,
        read_calls_per_second=0,
        read_bytes_per_second=0,
    )
    writes = ShardWriteThrottle(unlimited, now_ms=0)
    reads = ShardReadThrottle(unlimited, now_ms=0)
    assert all(writes.admit(record_bytes=MiB, now_ms=0) for _ in range(10_000))
    assert all(reads.admit_get_records(now_ms=0) for _ in range(1_000))
    reads.record_read(read_bytes=100 * MiB, now_ms=0)
    assert reads.admit_get_records(now_ms=0)


def test_read_calls_and_bytes() -> None:
    reads = ShardReadThrottle(shard_limits(), now_ms=0)
    assert all(reads.admit_get_records(now_ms=0) for _ in range(5))
    assert not reads.admit_get_records(now_ms=0)
    assert reads.admit_get_records(now_ms=200)
    reads.record_read(read_bytes=3 * MiB, now_ms=200)  # overdrawn by 1 MiB
    assert not reads.admit_get_records(now_ms=600)
    assert reads.admit_get_records(now_ms=1_300)


def test_ten_mib_read_penalty_lasts_five_seconds() -> None:
    reads = ShardReadThrottle(shard_limits(read_bytes_per_second=100 * MiB), now_ms=0)
    assert reads.admit_get_records(now_ms=0)
    reads.record_read(read_bytes=limits.read_penalty_bytes, now_ms=0)
    assert not reads.admit_get_records(now_ms=4_999)
    assert reads.admit_get_records(now_ms=5_000)


def test_get_shard_iterator_has_its_own_bucket() -> None:
    reads = ShardReadThrottle(shard_limits(), now_ms=0)
    assert all(reads.admit_get_shard_iterator(now_ms=0) for _ in range(5))
    assert not reads.admit_get_shard_iterator(now_ms=0)
    assert reads.admit_get_records(now_ms=0)
