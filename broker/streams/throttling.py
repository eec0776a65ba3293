"""Per-shard throughput limits as token buckets, the way Kinesis enforces them.

Writes: a shard takes `write_bytes_per_second` (partition keys included) and
`write_records_per_second`; a record that does not fit is refused whole (PutRecords reports it
per record, PutRecord fails the call). Reads: `read_calls_per_second` GetRecords calls and
`read_bytes_per_second`; a read may overdraw the byte bucket (the data is already read), after
which calls are refused until it refills, and a call that returns `read_penalty_bytes` or more
blocks reads for `read_penalty_ms` (AWS: "the next 5 seconds"). GetShardIterator has its own
call bucket at the read call rate.

Every bucket holds at most one second of its rate (AWS allows no larger bursts). A rate of 0
means unlimited. Pure and single-threaded: time comes in as `now_ms` (monotonic).

Where the rates come from: the cluster's defaults (`Config.shard_*_per_second`) overridden per
stream by `StreamLimits` (kept in the stream's metadata, set by UpdateStreamLimits); `resolve`
combines them. A field left unset follows the cluster default; 0 lifts that limit.

Leader changes: a shard's buckets live on its leader. A new leader does not start with full
buckets (that would let a client that just drained the old leader's buckets send another full
second at once); it starts them as if they had been empty when its leadership began
(`fill_fraction`), so over any window of T seconds a shard admits at most one burst plus
T seconds of its rate, whichever nodes led it meanwhile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from broker import limits

# The rate names, in the order the API and the CLI show them.
RATE_NAMES = (
    "write_bytes_per_second",
    "write_records_per_second",
    "read_calls_per_second",
    "read_bytes_per_second",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThroughputLimits:
    """Per-shard rates; 0 lifts a limit."""

    write_bytes_per_second: int
    write_records_per_second: int
    read_calls_per_second: int
    read_bytes_per_second: int

    def __post_init__(self) -> None:
        assert self.write_bytes_per_second >= 0
        assert self.write_records_per_second >= 0
        assert self.read_calls_per_second >= 0
        assert self.read_bytes_per_second >= 0

    @property
    def writes_limited(self) -> bool:
        return bool(self.write_bytes_per_second or self.write_records_per_second)

    @property
    def reads_limited(self) -> bool:
        return bool(self.read_calls_per_second or self.read_bytes_per_second)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimits:
    """One stream's overrides of the cluster's per-shard rates (every shard of the stream gets
    them). None: the cluster default; 0: unlimited; otherwise the rate. A value type stored in
    `StreamMeta.throughput_limits` and changed only by the UpdateStreamLimits command."""

    write_bytes_per_second: int | None = None
    write_records_per_second: int | None = None
    read_calls_per_second: int | None = None
    read_bytes_per_second: int | None = None

    def __post_init__(self) -> None:
        for name in RATE_NAMES:
            value = getattr(self, name)
            if value is not None:
                assert 0 <= value <= limits.shard_rate_per_second_max, (name, value)

    def is_default(self) -> bool:
        return all(getattr(self, name) is None for name in RATE_NAMES)


def resolve(defaults: ThroughputLimits, overrides: StreamLimits) -> ThroughputLimits:
    """The rates a stream's shards get: its overrides where set, the cluster's elsewhere."""
    if overrides.is_default():
        return defaults
    values = {}
    for name in RATE_NAMES:
        override = getattr(overrides, name)
        values[name] = getattr(defaults, name) if override is None else override
    return ThroughputLimits(**values)


def merge_overrides(
    current: StreamLimits, changes: StreamLimits, *, reset: tuple[str, ...]
) -> StreamLimits:
    """`current` with the set fields of `changes` applied and the `reset` fields returned to
    the cluster default. A name both set and reset is a caller bug."""
    assert set(reset) <= set(RATE_NAMES), reset
    updates: dict[str, int | None] = {
        name: getattr(changes, name) for name in RATE_NAMES if getattr(changes, name) is not None
    }
    assert not set(updates) & set(reset)
    updates.update(dict.fromkeys(reset))
    return dataclasses.replace(current, **updates)


def fill_fraction(*, leader_since_ms: int, now_ms: int, took_over: bool) -> float:
    """How full a shard's buckets start when this node begins serving the shard.

    The first leader of a new shard starts full (a new stream takes a burst at once, as on
    AWS). A leader that took over from another starts from empty at the moment its leadership
    began (`leader_since_ms`, the SetShardLeader proposer's wall clock) and has refilled since:
    the old leader may have spent its whole burst just before the change (module docstring).
    `now_ms` is this node's wall clock; a clock behind the proposer's counts as no time passed."""
    if not took_over:
        return 1.0
    elapsed_ms = max(0, now_ms - leader_since_ms)
    return min(1.0, elapsed_ms / 1000)


class TokenBucket:
    """A bucket refilled at `rate_per_second`, holding at most one second of tokens; it starts
    `fill` full (1.0 unless a leader change says otherwise)."""

    def __init__(self, *, rate_per_second: int, now_ms: int, fill: float = 1.0) -> None:
        assert rate_per_second > 0
        assert 0.0 <= fill <= 1.0
        self.rate_per_second = rate_per_second
        self._tokens = float(rate_per_second) * fill
        self._updated_ms = now_ms

    def _refill(self, now_ms: int) -> None:
        elapsed_ms = max(0, now_ms - self._updated_ms)  # a clock that steps back adds nothing
        self._updated_ms = max(self._updated_ms, now_ms)
        capacity = float(self.rate_per_second)
        self._tokens = min(capacity, self._tokens + elapsed_ms * self.rate_per_second / 1000)

    def available(self, *, now_ms: int) -> float:
        self._refill(now_ms)
        return self._tokens

    def take(self, amount: int, *, now_ms: int) -> bool:
        """Take `amount` if the bucket holds it; all or nothing."""
        assert amount >= 0
        self._refill(now_ms)
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True

    def overdraw(self, amount: int, *, now_ms: int) -> None:
        """Take `amount` even past zero: the work is done, the debt delays what follows."""
        assert amount >= 0
        self._refill(now_ms)
        self._tokens -= amount


class ShardWriteThrottle:
    """Write admission for one shard. Node-local, loop-only."""

    def __init__(self, shard_limits: ThroughputLimits, *, now_ms: int, fill: float = 1.0) -> None:
        bytes_rate = shard_limits.write_bytes_per_second
        records_rate = shard_limits.write_records_per_second
        self._bytes = (
            TokenBucket(rate_per_second=bytes_rate, now_ms=now_ms, fill=fill)
            if bytes_rate
            else None
        )
        self._records = (
            TokenBucket(rate_per_second=records_rate, now_ms=now_ms, fill=fill)
            if records_rate
            else None
        )

    def admit(self, *, record_bytes: int, now_ms: int) -> bool:
        """Admit one record of `record_bytes` (data + partition key), or refuse it whole.

        A record larger than one second of the byte rate (streams raised to 10 MiB records by
        UpdateMaxRecordSize) is admitted when the bucket is full and leaves it in debt."""
        if self._bytes is not None:
            needed = min(record_bytes, self._bytes.rate_per_second)
            if self._bytes.available(now_ms=now_ms) < needed:
                return False
        if self._records is not None and not self._records.take(1, now_ms=now_ms):
            return False
        if self._bytes is not None:
            self._bytes.overdraw(record_bytes, now_ms=now_ms)
        return True


class ShardReadThrottle:
    """GetRecords and GetShardIterator admission for one shard. Node-local, loop-only."""

    def __init__(self, shard_limits: ThroughputLimits, *, now_ms: int, fill: float = 1.0) -> None:
        calls_rate = shard_limits.read_calls_per_second
        bytes_rate = shard_limits.read_bytes_per_second
        self._calls = (
            TokenBucket(rate_per_second=calls_rate, now_ms=now_ms, fill=fill)
            if calls_rate
            else None
        )
        self._iterator_calls = (
            TokenBucket(rate_per_second=calls_rate, now_ms=now_ms, fill=fill)
            if calls_rate
            else None
        )
        self._bytes = (
            TokenBucket(rate_per_second=bytes_rate, now_ms=now_ms, fill=fill)
            if bytes_rate
            else None
        )
        self._penalty_until_ms = 0

    def admit_get_records(self, *, now_ms: int) -> bool:
        if now_ms < self._penalty_until_ms:
            return False
        if self._bytes is not None and self._bytes.available(now_ms=now_ms) <= 0:
            return False
        return self._calls is None or self._calls.take(1, now_ms=now_ms)

    def record_read(self, *, read_bytes: int, now_ms: int) -> None:
        """Charge what an admitted GetRecords call returned."""
        if self._bytes is None:
            return
        self._bytes.overdraw(read_bytes, now_ms=now_ms)
        if read_bytes >= limits.read_penalty_bytes:
            self._penalty_until_ms = now_ms + limits.read_penalty_ms

    def admit_get_shard_iterator(self, *, now_ms: int) -> bool:
        return self._iterator_calls is None or self._iterator_calls.take(1, now_ms=now_ms)
