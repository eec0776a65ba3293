"""Builders shared by the streams tests: streams and shards in a given state."""

from __future__ import annotations

import dataclasses

from broker.meta.image import ShardMeta, StreamMeta, StreamMode
from broker.streams.resharding import initial_shards
from broker.types import ShardIndex, StreamName, StreamUid

CREATED_MS = 1_700_000_000_000


def make_stream(
    shard_count: int = 1,
    *,
    created_ms: int = CREATED_MS,
    retention_hours: int = 24,
    name: str = "s",
) -> StreamMeta:
    shards = initial_shards(shard_count, first_uid=1, now_ms=created_ms)
    return StreamMeta(
        name=StreamName(name),
        uid=StreamUid(7),
        arn=f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}",
        created_ms=created_ms,
        mode=StreamMode.PROVISIONED,
        retention_hours=retention_hours,
        shards=shards,
        next_shard_index=ShardIndex(shard_count),
        transient_status=None,
    )


def with_shards(stream: StreamMeta, shards: tuple[ShardMeta, ...]) -> StreamMeta:
    return dataclasses.replace(stream, shards=shards, next_shard_index=ShardIndex(len(shards)))
