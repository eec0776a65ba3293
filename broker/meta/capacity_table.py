"""The value types of the capacity table (`MetadataImage.capacity`); the rules are in
`meta/capacity.py`, which says what the table holds and why. Kept apart so that `image.py` can
hold the table without importing those rules (they read images)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from broker.streams.hot_keys import RATE_SPAN_MS_MIN, KeyLoad, ShardLoad
from broker.types import NodeId, ShardIndex, StreamName, StreamUid

# Enough to see what the controller did over a day of a busy stream; the oldest go first.
EVENTS_PER_STREAM_MAX = 100
# Hot keys carried per shard in a report. Reports cross the metadata quorum: this bounds their
# size (a key is up to 256 characters) whatever the tracker keeps.
REPORT_KEYS_MAX = 10
# Shards per report: a node leading more busy shards reports the busiest this many each period.
REPORT_SHARDS_MAX = 2_000
PPM = 1_000_000  # hot-key shares in parts per million: JSON has no exact floats


class ScalingEventKind(enum.Enum):
    SPLIT = "SPLIT"  # the controller began splitting a hot shard
    MERGE = "MERGE"  # the controller began merging two cold neighbours
    HOT_KEY = "HOT_KEY"  # one partition key keeps a shard hot; splitting cannot help
    REFUSED = "REFUSED"  # a decision the metadata refused (limits, a concurrent change)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingEvent:
    time_ms: int  # the proposer's wall clock
    kind: ScalingEventKind
    shard_ids: tuple[str, ...]
    reason: str  # a sentence for operators


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamScalingLog:
    """One stream incarnation's events, oldest first."""

    stream_name: StreamName
    stream_uid: StreamUid
    events: tuple[ScalingEvent, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportedLoad:
    """One shard's recent write load as its leader reported it (`hot_keys.ShardLoad` in
    integers). `records` and `size_bytes` are totals over `span_ms`; `top_keys` are ranked by
    the binding dimension (`bytes_bound`)."""

    stream_uid: StreamUid
    shard_index: ShardIndex
    node_id: NodeId
    epoch: int
    reported_ms: int  # the reporting node's wall clock
    span_ms: int
    records: int
    size_bytes: int
    bytes_bound: bool = False
    split_key: int | None = None
    hot_key: str | None = None
    hot_key_share_ppm: int = 0
    top_keys: tuple[KeyLoad, ...] = ()

    def __post_init__(self) -> None:
        assert self.span_ms >= RATE_SPAN_MS_MIN
        assert self.records >= 0
        assert self.size_bytes >= 0
        assert 0 <= self.hot_key_share_ppm <= PPM
        assert len(self.top_keys) <= REPORT_KEYS_MAX

    @property
    def records_per_second(self) -> float:
        return self.records * 1000 / self.span_ms

    @property
    def bytes_per_second(self) -> float:
        return self.size_bytes * 1000 / self.span_ms

    def to_shard_load(self) -> ShardLoad:
        return ShardLoad(
            span_ms=self.span_ms,
            bytes_per_second=self.bytes_per_second,
            records_per_second=self.records_per_second,
            bytes_bound=self.bytes_bound,
            top_keys=self.top_keys,
            split_key=self.split_key,
            hot_key=self.hot_key,
            hot_key_share=self.hot_key_share_ppm / PPM,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityTable:
    """`MetadataImage.capacity`. Tuples kept sorted (loads by stream uid and shard index, logs
    by stream uid), so equal tables encode to equal bytes on every replica."""

    loads: tuple[ReportedLoad, ...] = ()
    scaling_logs: tuple[StreamScalingLog, ...] = ()
