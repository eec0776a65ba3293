"""The value types of the capacity table (`MetadataImage.capacity`); the rules are in
`meta/capacity.py`, which says what the table holds and why. Kept apart so that `image.py` can
hold the table without importing those rules (they read images)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from broker import limits
from broker.streams.hot_keys import RATE_SPAN_MS_MIN, KeyLoad, ShardLoad
from broker.types import NodeId, ShardIndex, StreamName, StreamUid

# The table's bounds (why each is what it is: limits.py, "Shard load reports").
EVENTS_PER_STREAM_MAX = limits.capacity_events_per_stream_max
REPORT_KEYS_MAX = limits.load_report_keys_max
REPORT_KEY_SHARE_MIN_PPM = limits.load_report_key_share_min_ppm
REPORT_SHARDS_MAX = limits.load_report_shards_max
REPORT_FLOOR_PPM = limits.load_report_floor_ppm
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
    integers). `records` and `size_bytes` are totals over `span_ms`. `heavy_keys` are the
    shard's heavy partition keys ranked by the binding dimension (`bytes_bound`), each a
    `KeyLoad` as a positional tuple (partition key, records, records error, bytes, bytes
    error): field names per key made up most of a key's ~110 bytes in the Raft entry, the
    tuple takes ~35. `top_keys` gives them back as `KeyLoad`s."""

    stream_uid: StreamUid
    shard_index: ShardIndex
    node_id: NodeId
    epoch: int
    reported_ms: int  # the reporting node's wall clock
    span_ms: int
    records: int
    size_bytes: int
    bytes_bound: bool = False
    # Where the traffic halves, as millionths of the way through the shard's hash range (see
    # `split_position_ppm`): 6 digits instead of a 39-digit hash key, and no loss that matters
    # (the tracker's histogram resolves 1/64 of the range).
    split_at_ppm: int | None = None
    hot_key: str | None = None
    hot_key_share_ppm: int = 0
    heavy_keys: tuple[tuple[str, int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        assert self.span_ms >= RATE_SPAN_MS_MIN
        assert self.records >= 0
        assert self.size_bytes >= 0
        assert 0 <= self.hot_key_share_ppm <= PPM
        assert self.split_at_ppm is None or 0 <= self.split_at_ppm <= PPM
        assert len(self.heavy_keys) <= REPORT_KEYS_MAX

    @staticmethod
    def pack_keys(keys: tuple[KeyLoad, ...]) -> tuple[tuple[str, int, int, int, int], ...]:
        """`keys` as `heavy_keys` tuples."""
        return tuple(
            (k.partition_key, k.records, k.records_error, k.size_bytes, k.size_bytes_error)
            for k in keys
        )

    @property
    def top_keys(self) -> tuple[KeyLoad, ...]:
        return tuple(
            KeyLoad(
                partition_key=key,
                records=records,
                records_error=records_error,
                size_bytes=size_bytes,
                size_bytes_error=size_bytes_error,
            )
            for key, records, records_error, size_bytes, size_bytes_error in self.heavy_keys
        )

    @property
    def records_per_second(self) -> float:
        return self.records * 1000 / self.span_ms

    @property
    def bytes_per_second(self) -> float:
        return self.size_bytes * 1000 / self.span_ms

    def split_key(self, *, hash_key_start: int, hash_key_end: int) -> int | None:
        """The split key in the shard's range (`split_hash_key`)."""
        if self.split_at_ppm is None:
            return None
        return split_hash_key(self.split_at_ppm, hash_key_start, hash_key_end)

    def to_shard_load(self, *, hash_key_start: int, hash_key_end: int) -> ShardLoad:
        """As the tracker's snapshot, for the shard with this inclusive hash range."""
        return ShardLoad(
            span_ms=self.span_ms,
            bytes_per_second=self.bytes_per_second,
            records_per_second=self.records_per_second,
            bytes_bound=self.bytes_bound,
            top_keys=self.top_keys,
            split_key=self.split_key(hash_key_start=hash_key_start, hash_key_end=hash_key_end),
            hot_key=self.hot_key,
            hot_key_share=self.hot_key_share_ppm / PPM,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReporterSeen:
    """When a node's latest ReportShardLoads was proposed (its wall clock). Its entries that
    did not change since are as fresh as this: a node re-sends an entry only when the shard's
    rates move, and otherwise proposes an empty report now and then to say "still so"."""

    node_id: NodeId
    reported_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityTable:
    """`MetadataImage.capacity`. Tuples kept sorted (loads by stream uid and shard index, logs
    by stream uid, reporters by node id), so equal tables encode to equal bytes on every
    replica."""

    loads: tuple[ReportedLoad, ...] = ()
    scaling_logs: tuple[StreamScalingLog, ...] = ()
    reporters: tuple[ReporterSeen, ...] = ()

    def confirmed_ms(self, entry: ReportedLoad) -> int:
        """When `entry` was last known to hold: its own report, or a later one of its node."""
        for seen in self.reporters:
            if seen.node_id == entry.node_id:
                return max(entry.reported_ms, seen.reported_ms)
        return entry.reported_ms


def split_position_ppm(split_key: int, hash_key_start: int, hash_key_end: int) -> int:
    """`split_key`'s place in the inclusive range, in millionths (rounded down)."""
    assert hash_key_start <= split_key <= hash_key_end
    return (split_key - hash_key_start) * PPM // (hash_key_end + 1 - hash_key_start)


def split_hash_key(position_ppm: int, hash_key_start: int, hash_key_end: int) -> int | None:
    """The hash key `position_ppm` of the way through the range, kept a valid
    NewStartingHashKey (start + 1 < key < end); None when the range cannot be split."""
    assert 0 <= position_ppm <= PPM
    if hash_key_end - hash_key_start < 3:
        return None
    key = hash_key_start + (hash_key_end + 1 - hash_key_start) * position_ppm // PPM
    return min(max(key, hash_key_start + 2), hash_key_end - 1)
