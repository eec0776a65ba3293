"""Sample capacity commands (issue 6), for the codec tests' list of every command."""

from __future__ import annotations

from broker.meta.capacity_table import ReportedLoad, ScalingEvent, ScalingEventKind
from broker.meta.commands import BeginReshard, Command, RecordScalingEvent, ReportShardLoads
from broker.meta.image import ReshardKind
from broker.types import NodeId, ShardIndex, StreamUid


def every_capacity_command(*, now_ms: int) -> list[Command]:
    return [
        ReportShardLoads(
            now_ms=now_ms,
            node_id=NodeId("n1"),
            loads=(
                ReportedLoad(
                    stream_uid=StreamUid(1),
                    shard_index=ShardIndex(0),
                    node_id=NodeId("n1"),
                    epoch=3,
                    reported_ms=now_ms,
                    span_ms=60_000,
                    records=2**40,
                    size_bytes=2**50,
                    bytes_bound=True,
                    split_at_ppm=999_999,
                    hot_key_share_ppm=123_456,
                    heavy_keys=(("ü-key", 10, 2, 1_000, 20), ("k2", 3, 2, 300, 20)),
                ),
                ReportedLoad(
                    stream_uid=StreamUid(1),
                    shard_index=ShardIndex(1),
                    node_id=NodeId("n1"),
                    epoch=1,
                    reported_ms=now_ms,
                    span_ms=1_000,
                    records=0,
                    size_bytes=0,
                    hot_key="k",
                    hot_key_share_ppm=1_000_000,
                ),
            ),
        ),
        RecordScalingEvent(
            now_ms=now_ms,
            stream_uid=StreamUid(2),
            event=ScalingEvent(
                time_ms=now_ms,
                kind=ScalingEventKind.HOT_KEY,
                shard_ids=("shardId-000000000007",),
                reason="one key carries it",
            ),
        ),
        BeginReshard(
            now_ms=now_ms,
            name="s1",
            kind=ReshardKind.MERGE,
            shard_index=ShardIndex(0),
            adjacent_shard_index=ShardIndex(1),
            automatic_reason="cold",
        ),
    ]
