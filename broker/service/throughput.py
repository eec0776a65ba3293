"""The node's per-shard throttles: one write and one read throttle per shard it serves.

Created lazily on a shard's first request and dropped by housekeeping when the shard is gone,
so memory follows the number of live shards. Node view; loop-only. (With replication, the
shard leader owns these; a leader change starts the new leader with full buckets, which lets
at most one extra second of traffic through.)
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.errors import ErrorCode, ShoalError
from broker.streams.throttling import ShardReadThrottle, ShardWriteThrottle, ThroughputLimits
from broker.types import ShardUid


class Throttles:
    def __init__(self, shard_limits: ThroughputLimits) -> None:
        self.limits = shard_limits
        self.writes_limited = bool(
            shard_limits.write_bytes_per_second or shard_limits.write_records_per_second
        )
        self.reads_limited = bool(
            shard_limits.read_calls_per_second or shard_limits.read_bytes_per_second
        )
        self._writes: dict[ShardUid, ShardWriteThrottle] = {}
        self._reads: dict[ShardUid, ShardReadThrottle] = {}

    def write(self, shard_uid: ShardUid, *, now_ms: int) -> ShardWriteThrottle:
        throttle = self._writes.get(shard_uid)
        if throttle is None:
            throttle = self._writes[shard_uid] = ShardWriteThrottle(self.limits, now_ms=now_ms)
        return throttle

    def read(self, shard_uid: ShardUid, *, now_ms: int) -> ShardReadThrottle:
        throttle = self._reads.get(shard_uid)
        if throttle is None:
            throttle = self._reads[shard_uid] = ShardReadThrottle(self.limits, now_ms=now_ms)
        return throttle

    def retain_only(self, live: Iterable[ShardUid]) -> None:
        """Forget the throttles of shards that no longer exist."""
        keep = set(live)
        for table in (self._writes, self._reads):
            for uid in [uid for uid in table if uid not in keep]:
                del table[uid]


def rate_exceeded(*, shard_id: str, stream_name: str, account_id: str) -> ShoalError:
    """AWS's message for a throttled shard, on both reads and writes."""
    return ShoalError(
        ErrorCode.THROUGHPUT_EXCEEDED,
        f"Rate exceeded for shard {shard_id} in stream {stream_name} under account {account_id}.",
    )
