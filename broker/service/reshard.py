"""Split, merge and UpdateShardCount as a two-step workflow around the shard logs.

1. `BeginReshard` is proposed here: the state machine validates it against the current state
   (so a second reshard while one is running fails there) and marks the parents SEALING.
2. The controller (on the metadata quorum's leader, `meta/controller.py`) asks each parent's
   shard leader to seal (`ReplicationService.Seal`): the leader refuses new appends and answers
   once everything it appended is committed, which fixes the parent's final end.
3. The controller proposes `CompleteReshard` with those ends: parents become CLOSED (their
   EndingSequenceNumber is now known) and the children open on the parents' replicas.

This node waits (bounded) for step 3, so a client that lists shards after SplitShard sees the
children, as with one node before. Writes refused in step 2 are routed again once step 3 is
visible (`records.py`). If the controller's node dies between the steps, the next controller
finishes the job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from broker import limits
from broker.errors import ShoalError
from broker.meta import commands
from broker.meta.image import (
    MetadataImage,
    ReshardKind,
    ShardMeta,
    ShardState,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.service.context import ServiceContext
from broker.streams import resharding
from broker.streams.hash_keys import parse_hash_key

Request = Mapping[str, Any]
Response = dict[str, Any]


async def split_shard(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for_reshard(request, (request["ShardToSplit"],))
    shard = ctx.shard_for(stream, request["ShardToSplit"], resharding=True)
    new_key = _new_starting_hash_key(ctx, stream, shard, request["NewStartingHashKey"])
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


def _new_starting_hash_key(
    ctx: ServiceContext, stream: StreamMeta, shard: ShardMeta, text: str
) -> int:
    """NewStartingHashKey as an integer. A key past 2^128-1 that the model's pattern lets
    through (39 digits) is refused as AWS refuses it, with the split's range text naming the
    shard (kinesalite's recording), when the split would otherwise be judged on its key."""
    try:
        return parse_hash_key(text, field="NewStartingHashKey")
    except ShoalError:
        judged = (
            stream.status(now_ms=ctx.now_ms()) is StreamStatus.ACTIVE
            and shard.state is ShardState.OPEN
            and text.isdigit()
        )
        if not judged:
            raise
        resharding.validate_split(stream, shard_index=shard.index, new_starting_hash_key=int(text))
        raise


async def merge_shards(ctx: ServiceContext, request: Request) -> Response:
    shard_ids = (request["ShardToMerge"], request["AdjacentShardToMerge"])
    stream = ctx.stream_for_reshard(request, shard_ids)
    shard = ctx.shard_for(stream, request["ShardToMerge"], resharding=True)
    adjacent = ctx.shard_for(stream, request["AdjacentShardToMerge"], resharding=True)
    if (
        stream.status(now_ms=ctx.now_ms()) is StreamStatus.ACTIVE
        and stream.mode is StreamMode.PROVISIONED
        and shard.state is ShardState.OPEN
        and adjacent.state is ShardState.OPEN
    ):
        # The state machine judges the stream's state and the shards' first (ResourceInUse,
        # already merged or split, not adjacent at all); only a pair it would accept is
        # refused here, for its order.
        resharding.check_merge_order(
            stream, shard_index=shard.index, adjacent_shard_index=adjacent.index
        )
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
        "StreamName": stream.display_name,
        "StreamARN": stream.arn,
        "CurrentShardCount": current,
        "TargetShardCount": target,
    }


async def _run(ctx: ServiceContext, stream: StreamMeta, begin: commands.BeginReshard) -> None:
    """Propose BeginReshard, then wait (bounded) for the controller to complete it.

    Past the wait the call still succeeds, as AWS's returns with the stream UPDATING: the
    controller completes the reshard as soon as the parents' leaders can seal.
    """
    sealed = await ctx.metadata.propose(begin)
    assert isinstance(sealed, tuple)
    if not sealed:
        return

    def completed(image: MetadataImage) -> bool:
        current = image.stream_by_uid(stream.uid)
        return current is None or current.reshard is None

    with contextlib.suppress(ShoalError):
        await ctx.metadata.wait_for_image(completed, timeout_s=limits.reshard_wait_ms / 1000)
