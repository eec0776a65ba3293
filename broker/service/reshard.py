"""Split, merge and UpdateShardCount as a two-step workflow around the shard log.

1. `BeginReshard` is proposed: the state machine validates it against the current state (so a
   second reshard while one is running fails there) and marks the parents SEALING.
2. Each parent's writer is sealed: it refuses new appends and waits for the ones in flight to be
   durable, which fixes the parent's final record count.
3. `CompleteReshard` is proposed with those counts: parents become CLOSED (their
   EndingSequenceNumber is now known) and the children open.

Writes refused in step 2 are routed again once step 3 is visible (`records.py`). If the node
dies between the steps, `complete_pending_reshards` finishes the job at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.meta import commands
from broker.meta.image import ReshardKind, StreamMeta
from broker.service.context import ServiceContext
from broker.streams.hash_keys import parse_hash_key
from broker.types import Offset, ShardIndex, StreamUid

Request = Mapping[str, Any]
Response = dict[str, Any]


async def split_shard(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for(request)
    shard = ctx.shard_for(stream, request["ShardToSplit"])
    new_key = parse_hash_key(request["NewStartingHashKey"], field="NewStartingHashKey")
    await _run(
        ctx,
        stream,
        commands.BeginReshard(
            now_ms=ctx.now_ms(),
            name=stream.name,
            kind=ReshardKind.SPLIT,
            shard_index=shard.index,
            new_starting_hash_key=new_key,
            updating_ms=ctx.config.knobs.stream_updating_ms,
            shard_count_per_account_max=ctx.config.shard_count_per_account_max,
        ),
    )
    return {}


async def merge_shards(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for(request)
    shard = ctx.shard_for(stream, request["ShardToMerge"])
    adjacent = ctx.shard_for(stream, request["AdjacentShardToMerge"])
    await _run(
        ctx,
        stream,
        commands.BeginReshard(
            now_ms=ctx.now_ms(),
            name=stream.name,
            kind=ReshardKind.MERGE,
            shard_index=shard.index,
            adjacent_shard_index=adjacent.index,
            updating_ms=ctx.config.knobs.stream_updating_ms,
            shard_count_per_account_max=ctx.config.shard_count_per_account_max,
        ),
    )
    return {}


async def update_shard_count(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for(request)
    current = len(stream.open_shards())
    target = request["TargetShardCount"]
    await _run(
        ctx,
        stream,
        commands.BeginReshard(
            now_ms=ctx.now_ms(),
            name=stream.name,
            kind=ReshardKind.UNIFORM_SCALING,
            target_shard_count=target,
            updating_ms=ctx.config.knobs.stream_updating_ms,
            shard_count_per_account_max=ctx.config.shard_count_per_account_max,
        ),
    )
    return {
        "StreamName": stream.name,
        "StreamARN": stream.arn,
        "CurrentShardCount": current,
        "TargetShardCount": target,
    }


async def _run(ctx: ServiceContext, stream: StreamMeta, begin: commands.BeginReshard) -> None:
    sealed = await ctx.metadata.propose(begin)
    assert isinstance(sealed, tuple)
    if sealed:
        await complete_reshard(ctx, stream.uid)


async def complete_reshard(ctx: ServiceContext, stream_uid: StreamUid) -> None:
    """Seal the parents of the stream's pending reshard and propose its completion."""
    stream = ctx.image().stream_by_uid(stream_uid)
    if stream is None or stream.reshard is None:
        return
    end_offsets: list[tuple[ShardIndex, Offset]] = []
    for index in stream.reshard.sealed:
        shard = stream.shards[index]
        end_offsets.append((index, await ctx.writers.seal(shard.uid)))
    await ctx.metadata.propose(
        commands.CompleteReshard(
            now_ms=ctx.now_ms(),
            stream_uid=stream_uid,
            end_offsets=tuple(end_offsets),
            updating_ms=ctx.config.knobs.stream_updating_ms,
        )
    )


async def complete_pending_reshards(ctx: ServiceContext) -> int:
    """Finish every reshard a previous run of this node left between its two steps."""
    pending = [m.uid for m in ctx.image().streams.values() if m.reshard is not None]
    for uid in pending:
        await complete_reshard(ctx, uid)
    return len(pending)
