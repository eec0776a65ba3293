"""The node's per-shard throttles: one write and one read throttle per shard it serves.

Created lazily on a shard's first request and dropped by housekeeping when the shard is gone,
so memory follows the number of live shards. Node view; loop-only. (With replication, the
shard leader owns these; a leader change starts the new leader with full buckets, which lets
at most one extra second of traffic through.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from broker.errors import ErrorCode, ShoalError
from broker.meta.image import MetadataImage
from broker.metrics import StreamProbe
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


class ShardMeter:
    """Reports shard events to the node's `StreamProbe` under the stream's and shard's names
    and with the stream's enhanced-monitoring setting, looked up by shard uid in the current
    metadata image (the table is rebuilt only when the image changes, so an event costs two
    dict lookups). Used where the shard is served: on its leader, for every gateway."""

    def __init__(self, probe: StreamProbe, image: Callable[[], MetadataImage]) -> None:
        self.probe = probe
        self._image = image
        self._built_for: MetadataImage | None = None
        self._labels: dict[ShardUid, tuple[str, str, tuple[str, ...]]] = {}

    def _lookup(self, shard_uid: ShardUid) -> tuple[str, str, tuple[str, ...]] | None:
        image = self._image()
        if image is not self._built_for:
            self._labels = {
                shard.uid: (stream.name, shard.shard_id, stream.enhanced_metrics)
                for stream in image.streams.values()
                for shard in stream.shards
            }
            self._built_for = image
        return self._labels.get(shard_uid)

    def written(self, shard_uid: ShardUid, records: int, bytes_: int) -> None:
        """Records committed on a shard this node leads."""
        labels = self._lookup(shard_uid)
        if labels is not None:
            self.probe.records_written(labels[0], labels[1], records, bytes_, labels[2])

    def write_throttled(self, shard_uid: ShardUid, records: int) -> None:
        labels = self._lookup(shard_uid)
        if labels is not None:
            self.probe.write_throttled(labels[0], labels[1], records, labels[2])

    def read_throttled(self, shard_uid: ShardUid) -> None:
        labels = self._lookup(shard_uid)
        if labels is not None:
            self.probe.read_throttled(labels[0], labels[1], labels[2])


def rate_exceeded(*, shard_id: str, stream_name: str, account_id: str) -> ShoalError:
    """AWS's message for a throttled shard, on both reads and writes."""
    return ShoalError(
        ErrorCode.THROUGHPUT_EXCEEDED,
        f"Rate exceeded for shard {shard_id} in stream {stream_name} under account {account_id}.",
    )
