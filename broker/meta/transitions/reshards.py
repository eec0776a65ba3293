"""Resharding in two commands: BeginReshard seals the shards a split, merge or UpdateShardCount
replaces (the stream shows UPDATING); CompleteReshard, once the sealed shards' end offsets are
known, closes them and adds the children (streams/resharding.py computes both).

Children inherit their parent's replica set and leader, so a parent's readers and its child's
writers meet on the same nodes. A DeleteStream abandons a pending reshard, and a stale or
repeated CompleteReshard never applies to the wrong one.
"""

from __future__ import annotations

import dataclasses
from typing import assert_never

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta import capacity
from broker.meta.commands import BeginReshard, CompleteReshard
from broker.meta.image import (
    FIRST_SHARD_EPOCH,
    MetadataImage,
    ReshardKind,
    ReshardRequest,
    ShardMeta,
    ShardState,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.meta.transitions.account_limits import check_shard_limit, open_shard_count
from broker.meta.transitions.common import (
    account_id,
    account_of,
    live_stream,
    require_active,
    with_stream,
    within_last_day,
)
from broker.streams import resharding
from broker.streams.namespaces import name_of
from broker.types import ShardIndex, ShardUid


def _reshard_request(image: MetadataImage, command: BeginReshard) -> ReshardRequest:
    """The request with exactly the parameters its kind needs; ValidationException otherwise."""
    missing: str | None = None
    match command.kind:
        case ReshardKind.SPLIT:
            if command.shard_index is None:
                missing = "shardToSplit"
            elif command.new_starting_hash_key is None:
                missing = "newStartingHashKey"
            return_request = ReshardRequest(
                kind=command.kind,
                shard_index=command.shard_index,
                new_starting_hash_key=command.new_starting_hash_key,
            )
        case ReshardKind.MERGE:
            if command.shard_index is None:
                missing = "shardToMerge"
            elif command.adjacent_shard_index is None:
                missing = "adjacentShardToMerge"
            return_request = ReshardRequest(
                kind=command.kind,
                shard_index=command.shard_index,
                adjacent_shard_index=command.adjacent_shard_index,
            )
        case ReshardKind.UNIFORM_SCALING:
            if command.target_shard_count is None:
                missing = "targetShardCount"
            return_request = ReshardRequest(
                kind=command.kind, target_shard_count=command.target_shard_count
            )
        case _:
            assert_never(command.kind)
    if missing is not None:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.validation_errors(
                [
                    error_messages.constraint_violation(
                        "null", missing, error_messages.MUST_NOT_BE_NULL
                    )
                ]
            ),
        )
    return return_request


def _validate_reshard(
    image: MetadataImage, meta: StreamMeta, request: ReshardRequest, command: BeginReshard
) -> None:
    """The kind-specific rules (streams/resharding.py) and the account's shard limit.

    `shard_count_per_account_max` of 0 means the proposer did not ask for the account check."""
    now_ms = command.now_ms
    account_max = command.shard_count_per_account_max
    match request.kind:
        case ReshardKind.SPLIT:
            assert request.shard_index is not None
            assert request.new_starting_hash_key is not None
            resharding.validate_split(
                meta,
                shard_index=request.shard_index,
                new_starting_hash_key=request.new_starting_hash_key,
            )
            if account_max > 0:
                check_shard_limit(
                    image, now_ms=now_ms, arn=meta.arn, additional=1, limit=account_max
                )
        case ReshardKind.MERGE:
            assert request.shard_index is not None
            assert request.adjacent_shard_index is not None
            resharding.validate_merge(
                meta,
                shard_index=request.shard_index,
                adjacent_shard_index=request.adjacent_shard_index,
            )
        case ReshardKind.UNIFORM_SCALING:
            assert request.target_shard_count is not None
            if account_max > 0:
                # Scaling up past the account's whole limit is reported first, in
                # UpdateShardCount's own words (kinesalite's recording of AWS). Every binary
                # refuses such a request (the account check below does: the account's open
                # shards include the stream's), so only the text is new.
                limit = image.account.effective_shard_limit(account_max)
                open_count = len(meta.open_shards())
                if request.target_shard_count > max(limit, open_count):
                    raise ShoalError(
                        ErrorCode.LIMIT_EXCEEDED,
                        error_messages.shard_count_above_maximum(
                            limit, open_count, request.target_shard_count
                        ),
                    )
            resharding.validate_update_shard_count(
                meta, target_shard_count=request.target_shard_count, now_ms=now_ms
            )
            if account_max > 0:
                current = open_shard_count(image, now_ms=now_ms, arn=meta.arn)
                additional = request.target_shard_count - len(meta.open_shards())
                check_shard_limit(
                    image,
                    now_ms=now_ms,
                    arn=meta.arn,
                    additional=additional,
                    limit=account_max,
                    current=current,
                )
        case _:
            assert_never(request.kind)


def begin_reshard(image: MetadataImage, command: BeginReshard) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    require_active(image, meta, now_ms=now_ms)
    if meta.mode is StreamMode.ON_DEMAND and command.automatic_reason is None:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.only_in_provisioned_mode(
                name_of(meta.name), account_of(image, meta.name)
            ),
        )
    capacity.check_automatic_reshard(meta, command)
    request = _reshard_request(image, command)
    if request.kind is ReshardKind.UNIFORM_SCALING:
        # The rolling 24-hour window is pruned before validation, which counts what is left.
        meta = dataclasses.replace(
            meta, shard_count_updates_ms=within_last_day(meta.shard_count_updates_ms, now_ms=now_ms)
        )
    _validate_reshard(image, meta, request, command)
    if request.kind is ReshardKind.UNIFORM_SCALING:
        meta = dataclasses.replace(
            meta, shard_count_updates_ms=(*meta.shard_count_updates_ms, now_ms)
        )
    sealed = resharding.shards_to_seal(meta, request)
    assert len(set(sealed)) == len(sealed)
    request = dataclasses.replace(request, sealed=tuple(sorted(sealed)))
    if not sealed:
        # Nothing to seal (a uniform scaling to the current count): complete now.
        completed_image, _ = _finish_reshard(
            image, meta, request, end_offsets={}, now_ms=now_ms, updating_ms=command.updating_ms
        )
        return completed_image, ()
    sealed_set = frozenset(sealed)
    shards = tuple(
        dataclasses.replace(shard, state=ShardState.SEALING) if shard.index in sealed_set else shard
        for shard in meta.shards
    )
    for index in sealed:
        assert meta.shards[index].state is ShardState.OPEN
    sealing = dataclasses.replace(meta, shards=shards, reshard=request)
    sealing_image = capacity.log_automatic_reshard(with_stream(image, sealing), command, sealed)
    return sealing_image, request.sealed


def _finish_reshard(
    image: MetadataImage,
    meta: StreamMeta,
    request: ReshardRequest,
    *,
    end_offsets: dict[int, int],
    now_ms: int,
    updating_ms: int,
) -> tuple[MetadataImage, StreamMeta]:
    outcome = resharding.complete_reshard(
        meta,
        request,
        end_offsets=end_offsets,
        now_ms=now_ms,
        next_shard_uid=ShardUid(image.next_shard_uid),
    )
    assert outcome.next_shard_uid >= image.next_shard_uid
    assert outcome.next_shard_index >= meta.next_shard_index
    completed = dataclasses.replace(
        meta,
        shards=_inherit_placement(outcome.shards, first_child=meta.next_shard_index),
        next_shard_index=ShardIndex(outcome.next_shard_index),
        reshard=None,
        transient_status=StreamStatus.UPDATING,
        status_until_ms=now_ms + updating_ms,
    )
    next_image = dataclasses.replace(
        with_stream(image, completed), next_shard_uid=int(outcome.next_shard_uid)
    )
    return next_image, completed


def complete_reshard(
    image: MetadataImage, command: CompleteReshard
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = image.stream_by_uid(command.stream_uid)
    if meta is None or meta.is_gone(now_ms=now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.stream_uid_not_found_in_account(
                stream_uid=command.stream_uid, account_id=account_id(image)
            ),
        )
    if meta.reshard is None:
        # Already completed (a retry after an unknown outcome), or abandoned by DeleteStream:
        # nothing to do, and the caller learns the current shards.
        return image, meta
    end_offsets = {int(index): int(offset) for index, offset in command.end_offsets}
    if set(end_offsets) != set(meta.reshard.sealed):
        # A stale completion of an earlier reshard: its parents are closed, so they cannot
        # match the shards this reshard sealed. Refused, never applied to the wrong reshard.
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.reshard_sealed_mismatch(
                name=meta.name, end_offsets=sorted(end_offsets), sealed=list(meta.reshard.sealed)
            ),
        )
    next_image, completed = _finish_reshard(
        image,
        meta,
        meta.reshard,
        end_offsets=end_offsets,
        now_ms=now_ms,
        updating_ms=command.updating_ms,
    )
    return next_image, completed


def _inherit_placement(
    shards: tuple[ShardMeta, ...], *, first_child: ShardIndex
) -> tuple[ShardMeta, ...]:
    """Children (indices from `first_child`) take their parent's replica set and leader at
    FIRST_SHARD_EPOCH (their logs start empty); a merge's child takes ShardToMerge's (its
    `parent_index`). The parent's log stays where it is, so its readers and the child's
    writers meet on the same nodes. Intermediate shards of a uniform scaling are parents too:
    shards are resolved in index order."""
    resolved: list[ShardMeta] = []
    for shard in shards:
        if shard.index >= first_child:
            assert shard.parent_index is not None
            assert shard.parent_index < shard.index
            parent = resolved[shard.parent_index]
            assert parent.replicas, "every parent has a replica set"
            shard = dataclasses.replace(
                shard, replicas=parent.replicas, leader=parent.leader, epoch=FIRST_SHARD_EPOCH
            )
        resolved.append(shard)
    return tuple(resolved)
