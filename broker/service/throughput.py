"""The node's per-shard throttles: one write and one read throttle per shard it serves.

Each shard's rates are the cluster's (configuration) overridden by its stream's
`StreamLimits` (UpdateStreamLimits, in the metadata image). Throttles are created lazily on a
shard's first request and rebuilt when the shard's rates or its leadership change; housekeeping
drops those of shards that are gone, so memory follows the number of live shards served here.
Node view; loop-only.

Leader changes: the buckets live on the shard's leader (`ShardClient.serve_append/serve_read`),
whichever gateway a request came through. A node that takes over a shard's leadership builds
its throttles as if they had been empty when its leadership began (`ShardMeta.leader_since_ms`,
`throttling.fill_fraction`), so the old leader's last burst and the new leader's first one
never add up to more than one burst plus the rate (docs/ARCHITECTURE.md, "Limits").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker import error_messages
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import MetadataImage, StreamMeta
from broker.service.probe import StreamProbe
from broker.streams import throttling
from broker.streams.throttling import ShardReadThrottle, ShardWriteThrottle, ThroughputLimits
from broker.types import ShardUid, StreamUid


@dataclass(frozen=True, slots=True)
class _Budget:
    """What a shard's throttles are built from; a throttle built from another is rebuilt."""

    limits: ThroughputLimits
    leader_since_ms: int
    took_over: bool  # a leader after the first (its buckets start from empty, see above)


class Throttles:
    """Every shard budget this node enforces. `image` gives the current metadata image (the
    per-stream overrides and each shard's leadership); `clock` the wall clock leader changes
    are measured on."""

    def __init__(
        self,
        defaults: ThroughputLimits,
        *,
        image: Callable[[], MetadataImage] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.limits = defaults
        self._image = image
        self._clock = clock
        self._writes: dict[ShardUid, tuple[_Budget, ShardWriteThrottle]] = {}
        self._reads: dict[ShardUid, tuple[_Budget, ShardReadThrottle]] = {}
        # The budget of every shard, rebuilt per stream when its StreamMeta object changes
        # (an image change reuses the objects of the streams it did not touch).
        self._built_for: MetadataImage | None = None
        self._streams: dict[StreamUid, StreamMeta] = {}
        self._budgets: dict[ShardUid, _Budget] = {}

    @property
    def writes_limited(self) -> bool:
        """Whether the cluster default limits writes (a stream may still override it)."""
        return self.limits.writes_limited

    @property
    def reads_limited(self) -> bool:
        return self.limits.reads_limited

    def writes_limited_for(self, shard_uid: ShardUid) -> bool:
        return self._budget(shard_uid).limits.writes_limited

    def reads_limited_for(self, shard_uid: ShardUid) -> bool:
        return self._budget(shard_uid).limits.reads_limited

    def shard_limits(self, shard_uid: ShardUid) -> ThroughputLimits:
        """The rates the shard is held to (the cluster's for a shard this image lacks)."""
        return self._budget(shard_uid).limits

    def write(self, shard_uid: ShardUid, *, now_ms: int) -> ShardWriteThrottle:
        budget = self._budget(shard_uid)
        entry = self._writes.get(shard_uid)
        if entry is None or entry[0] != budget:
            throttle = ShardWriteThrottle(budget.limits, now_ms=now_ms, fill=self._fill(budget))
            entry = self._writes[shard_uid] = (budget, throttle)
        return entry[1]

    def read(self, shard_uid: ShardUid, *, now_ms: int) -> ShardReadThrottle:
        budget = self._budget(shard_uid)
        entry = self._reads.get(shard_uid)
        if entry is None or entry[0] != budget:
            throttle = ShardReadThrottle(budget.limits, now_ms=now_ms, fill=self._fill(budget))
            entry = self._reads[shard_uid] = (budget, throttle)
        return entry[1]

    def retain_only(self, live: Iterable[ShardUid]) -> None:
        """Forget the throttles of shards that no longer exist."""
        keep = set(live)
        for table in (self._writes, self._reads):
            for uid in [uid for uid in table if uid not in keep]:
                del table[uid]

    def _fill(self, budget: _Budget) -> float:
        if not budget.took_over or self._clock is None:
            return 1.0
        return throttling.fill_fraction(
            leader_since_ms=budget.leader_since_ms, now_ms=self._clock.wall_ms(), took_over=True
        )

    def _budget(self, shard_uid: ShardUid) -> _Budget:
        if self._image is not None:
            image = self._image()
            if image is not self._built_for:
                self._rebuild(image)
        budget = self._budgets.get(shard_uid)
        if budget is None:
            return _Budget(self.limits, 0, False)
        return budget

    def _rebuild(self, image: MetadataImage) -> None:
        current = {meta.uid: meta for meta in image.streams.values()}
        for uid, meta in self._streams.items():
            if current.get(uid) is not meta:
                for shard in meta.shards:
                    self._budgets.pop(shard.uid, None)
        for uid, meta in current.items():
            if self._streams.get(uid) is meta:
                continue
            limits = throttling.resolve(self.limits, meta.throughput_limits)
            for shard in meta.shards:
                self._budgets[shard.uid] = _Budget(
                    limits, shard.leader_since_ms, shard.epoch > 1 and shard.leader_since_ms > 0
                )
        self._streams = current
        self._built_for = image


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
    """AWS's message for a throttled shard on PutRecord, per record in PutRecords, and on
    GetShardIterator: "Rate exceeded for shard shardId-000000000000 in stream orders under
    account 123456789012." (as AWS's PutRecords example and SDK logs show it)."""
    return ShoalError(
        ErrorCode.THROUGHPUT_EXCEEDED,
        error_messages.shard_rate_exceeded(
            shard_id=shard_id, stream_name=stream_name, account_id=account_id
        ),
    )


def get_records_rate_exceeded(*, shard_id: str, stream_name: str, account_id: str) -> ShoalError:
    """AWS words a throttled GetRecords differently from the writes: "Rate exceeded for Shard -
    123456789012/orders/shardId-000000000003" (the KCL's and other consumers' logs against
    Kinesis, e.g. awslabs/amazon-kinesis-client#1521), with no final period."""
    return ShoalError(
        ErrorCode.THROUGHPUT_EXCEEDED,
        error_messages.shard_read_rate_exceeded(
            account_id=account_id, stream_name=stream_name, shard_id=shard_id
        ),
    )
