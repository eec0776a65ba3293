"""Sample capacity commands (issue 6), for the codec tests' list of every command."""

from __future__ import annotations

from broker import limits
from broker.meta.capacity_table import ReportedLoad, ScalingEvent, ScalingEventKind
from broker.meta.commands import BeginReshard, Command, RecordScalingEvent, ReportShardLoads
from broker.meta.image import ReshardKind
from broker.streams.hot_keys import KeyLoad
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
                    split_key=limits.hash_key_max - 1,
                    hot_key_share_ppm=123_456,
                    top_keys=(
                        KeyLoad(
                            partition_key="ü-key",
                            records=10,
                            records_error=2,
                            size_bytes=1_000,
                            size_bytes_error=20,
                        ),
                    ),
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
