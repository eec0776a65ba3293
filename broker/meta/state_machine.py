"""The metadata state machine: `apply(image, command) -> Applied`, pure and deterministic.

Every replica of the metadata quorum, leader or follower, applies the same commands in the
same order through this one function (Kafka's records-and-replay), so it must compute the same
image everywhere: it reads no clock, environment or randomness. Time comes only from
`command.now_ms`, the proposer's clock; generated values (secrets, ARNs) come in the command.

Every precondition is checked here, against the image at apply time, not only by the caller
before proposing: two racing CreateStream calls for one name both pass the gateway's early
check, and exactly one of them must win. A failed precondition is a value
(`Applied.error`, a ShoalError with AWS's name and message), never an exception, because the
quorum must keep applying the next command. The image is still advanced
(`applied_commands` counts every command), so a failed command leaves a trace that replicas
agree on.

Exceptions other than ShoalError (an assertion, a bug in a rule) escape: they mean replicas can
no longer be trusted to agree, and the node must stop rather than guess.

Messages follow AWS's texts as reproduced by kinesalite (`actions/*.js`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import assert_never

from broker import limits
from broker.consumers import leases, registry
from broker.errors import ErrorCode, ShoalError
from broker.meta import capacity
from broker.meta.commands import (
    AddTags,
    BeginReshard,
    ChangeConsumerTags,
    ChangeRetention,
    CheckpointLeaseCommand,
    Command,
    CompleteReshard,
    CreateLeasesCommand,
    CreateStream,
    DeleteApplicationCommand,
    DeleteLeaseCommand,
    DeleteStream,
    DeregisterStreamConsumer,
    ForgetStream,
    InitCluster,
    LeaseCommand,
    RecordScalingEvent,
    RegisterNode,
    RegisterStreamConsumer,
    ReleaseLeaseCommand,
    RemoveNode,
    RemoveTags,
    RenewLeaseCommand,
    ReportShardLoads,
    SetEnhancedMonitoring,
    SetNodeState,
    SetShardLeader,
    StealLeaseCommand,
    TakeLeaseCommand,
    UpdateAccountLimits,
    UpdateAccountSettings,
    UpdateMaxRecordSize,
    UpdateStreamLimits,
    UpdateStreamMode,
)
from broker.meta.image import (
    MetadataImage,
    NodeMeta,
    NodeState,
    ReshardKind,
    ReshardRequest,
    ShardMeta,
    ShardState,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.meta.placement import place_shards
from broker.streams import account_settings, resharding, throttling
from broker.types import NodeId, ShardIndex, ShardUid, StreamName, StreamUid

DAY_MS = 86_400_000

# Used in messages about a stream that does not exist, when no ARN names the account. Shoal
# serves one account per cluster; every ARN it issues carries the same account id.
ACCOUNT_ID_FALLBACK = "000000000000"
REGION_FALLBACK = "us-east-1"
_LIMITS_PAGE = (
    "Refer to the AWS Service Limits page "
    "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) "
    "for current limits and how to request higher limits."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """The outcome of one command: the next image, and a result or an error (never both)."""

    image: MetadataImage
    result: object = None
    error: ShoalError | None = None


def apply(image: MetadataImage, command: Command) -> Applied:
    """Applies `command` to `image` and returns the next image; never mutates `image`."""
    assert command.now_ms >= 0
    try:
        next_image, result = _dispatch(image, command)
    except ShoalError as error:
        counted = dataclasses.replace(image, applied_commands=image.applied_commands + 1)
        return Applied(image=counted, error=error)
    assert next_image.applied_commands == image.applied_commands
    assert next_image.next_stream_uid >= image.next_stream_uid
    assert next_image.next_shard_uid >= image.next_shard_uid
    counted = dataclasses.replace(next_image, applied_commands=image.applied_commands + 1)
    return Applied(image=counted, result=result)


def _dispatch(image: MetadataImage, command: Command) -> tuple[MetadataImage, object]:
    match command:
        case InitCluster():
            return _init_cluster(image, command)
        case CreateStream():
            return _create_stream(image, command)
        case DeleteStream():
            return _delete_stream(image, command)
        case ForgetStream():
            return _forget_stream(image, command)
        case ChangeRetention():
            return _change_retention(image, command)
        case AddTags():
            return _add_tags(image, command)
        case RemoveTags():
            return _remove_tags(image, command)
        case SetEnhancedMonitoring():
            return _set_enhanced_monitoring(image, command)
        case BeginReshard():
            return _begin_reshard(image, command)
        case CompleteReshard():
            return _complete_reshard(image, command)
        case UpdateStreamMode():
            return _update_stream_mode(image, command)
        case UpdateMaxRecordSize():
            return _update_max_record_size(image, command)
        case RegisterNode():
            return _register_node(image, command)
        case SetNodeState():
            return _set_node_state(image, command)
        case SetShardLeader():
            return _set_shard_leader(image, command)
        case RemoveNode():
            return _remove_node(image, command)
        case (
            CreateLeasesCommand()
            | TakeLeaseCommand()
            | StealLeaseCommand()
            | RenewLeaseCommand()
            | ReleaseLeaseCommand()
            | CheckpointLeaseCommand()
            | DeleteLeaseCommand()
            | DeleteApplicationCommand()
        ):
            return _lease_operation(image, command)
        case RegisterStreamConsumer():
            return _register_consumer(image, command)
        case DeregisterStreamConsumer():
            return _deregister_consumer(image, command)
        case ChangeConsumerTags():
            return _change_consumer_tags(image, command)
        case UpdateStreamLimits():
            return _update_stream_limits(image, command)
        case UpdateAccountSettings() | UpdateAccountLimits():
            return _update_account(image, command)
        case ReportShardLoads():
            return capacity.apply_report(image, command)
        case RecordScalingEvent():
            return capacity.apply_event(image, command)
        case _:
            assert_never(command)


# --- Helpers ---------------------------------------------------------------------------------


def _arn_part(arn: str, index: int) -> str | None:
    """arn:aws:kinesis:<region>:<account>:stream/<name>; index 3 is the region, 4 the account."""
    parts = arn.split(":")
    if len(parts) >= 6 and parts[index]:
        return parts[index]
    return None


def _account_id(image: MetadataImage) -> str:
    """The account every stream's ARN names (the first by name, for determinism)."""
    for name in sorted(image.streams):
        account = _arn_part(image.streams[name].arn, 4)
        if account is not None:
            return account
    return ACCOUNT_ID_FALLBACK


def _region(image: MetadataImage) -> str:
    for name in sorted(image.streams):
        region = _arn_part(image.streams[name].arn, 3)
        if region is not None:
            return region
    return REGION_FALLBACK


def _not_found(image: MetadataImage, name: str) -> ShoalError:
    return ShoalError(
        ErrorCode.RESOURCE_NOT_FOUND,
        f"Stream {name} under account {_account_id(image)} not found.",
    )


def _live_stream(image: MetadataImage, name: str, *, now_ms: int) -> StreamMeta:
    meta = image.stream(name, now_ms=now_ms)
    if meta is None:
        raise _not_found(image, name)
    return meta


def _require_active(image: MetadataImage, meta: StreamMeta, *, now_ms: int) -> None:
    status = meta.status(now_ms=now_ms)
    if status is not StreamStatus.ACTIVE:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            f"Stream {meta.name} under account {_account_id(image)} not ACTIVE, "
            f"instead in state {status.value}",
        )


def _with_stream(image: MetadataImage, meta: StreamMeta) -> MetadataImage:
    """A new image with `meta` stored under its name; the input's dict is copied, not changed."""
    streams = dict(image.streams)
    streams[meta.name] = meta
    return dataclasses.replace(image, streams=streams)


def _live_streams(image: MetadataImage, *, now_ms: int) -> list[StreamMeta]:
    return [meta for meta in image.streams.values() if not meta.is_gone(now_ms=now_ms)]


def _open_shard_count(image: MetadataImage, *, now_ms: int) -> int:
    """Open shards, counting each reshard in flight as completed when it adds shards: a
    split's parent is SEALING (open) and its children do not exist yet, so two streams
    splitting at once would otherwise both fit under the limit and together pass it."""
    return sum(
        len(meta.open_shards()) + _reshard_growth(meta)
        for meta in _live_streams(image, now_ms=now_ms)
    )


def _reshard_growth(meta: StreamMeta) -> int:
    """The open shards `meta`'s reshard in flight will add (never negative: a merge frees
    room only once it completed)."""
    request = meta.reshard
    if request is None:
        return 0
    if request.kind is ReshardKind.SPLIT:
        return 1
    if request.kind is ReshardKind.UNIFORM_SCALING:
        assert request.target_shard_count is not None
        return max(0, request.target_shard_count - len(meta.open_shards()))
    return 0


def _on_demand_count(image: MetadataImage, *, now_ms: int) -> int:
    return sum(
        1 for meta in _live_streams(image, now_ms=now_ms) if meta.mode is StreamMode.ON_DEMAND
    )


def _check_shard_limit(
    image: MetadataImage, *, now_ms: int, additional: int, limit: int, current: int | None = None
) -> None:
    """LimitExceededException when `additional` more open shards would pass the account limit.

    `current` overrides the account's open-shard count (UpdateShardCount replaces a stream's
    shards rather than adding to them)."""
    count = _open_shard_count(image, now_ms=now_ms) if current is None else current
    limit = image.account.effective_shard_limit(limit)  # a runtime limit wins (issue 6)
    if additional > 0 and count + additional > limit:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            f"This request would exceed the shard limit for the account {_account_id(image)} "
            f"in {_region(image)}. Current shard count for the account: {count}. "
            f"Limit: {limit}. Number of additional shards that would have resulted from this "
            f"request: {additional}. {_LIMITS_PAGE}",
        )


def _check_on_demand_limit(image: MetadataImage, *, now_ms: int, limit: int) -> None:
    limit = image.account.effective_on_demand_stream_limit(limit)
    count = _on_demand_count(image, now_ms=now_ms)
    if count + 1 > limit:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            f"This request would exceed the on-demand stream limit for the account "
            f"{_account_id(image)} in {_region(image)}. Current on-demand stream count for "
            f"the account: {count}. Limit: {limit}. {_LIMITS_PAGE}",
        )


def _check_retention_bounds(hours: int) -> None:
    if hours < limits.retention_hours_min:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Minimum allowed retention period is {limits.retention_hours_min} hours. "
            f"Requested retention period ({hours} hours) is too short.",
        )
    if hours > limits.retention_hours_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Maximum allowed retention period is {limits.retention_hours_max} hours. "
            f"Requested retention period ({hours} hours) is too long.",
        )


def _check_record_size(kib: int) -> None:
    if not limits.record_size_kib_min <= kib <= limits.record_size_kib_max:
        raise ShoalError(
            ErrorCode.VALIDATION,
            f"1 validation error detected: Value '{kib}' at 'maxRecordSizeInKiB' failed to "
            f"satisfy constraint: Member must have value between {limits.record_size_kib_min} "
            f"and {limits.record_size_kib_max}",
        )


def _merged_tags(
    image: MetadataImage, name: str, current: dict[str, str], added: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    merged = dict(current)
    merged.update(added)  # a key given twice keeps its last value, as a JSON object would
    if len(merged) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Failed to add tags to stream {name} under account {_account_id(image)} because "
            f"a given stream cannot have more than {limits.tags_per_stream_max} tags "
            "associated with it.",
        )
    return tuple(sorted(merged.items()))


def _recent(times_ms: tuple[int, ...], *, now_ms: int) -> tuple[int, ...]:
    """The timestamps within the rolling 24 hours before `now_ms`."""
    return tuple(t for t in times_ms if t > now_ms - DAY_MS)


# --- Cluster and stream lifecycle ---------------------------------------------------------------


def _init_cluster(image: MetadataImage, command: InitCluster) -> tuple[MetadataImage, object]:
    # Every node proposes InitCluster at start with its own random values; the first one
    # applied wins and the others are no-ops, so the cluster agrees on one id and one secret.
    if image.cluster_id:
        return image, image.cluster_id
    assert command.cluster_id
    assert command.iterator_secret
    initialised = dataclasses.replace(
        image, cluster_id=command.cluster_id, iterator_secret=command.iterator_secret
    )
    return initialised, initialised.cluster_id


def _create_stream(image: MetadataImage, command: CreateStream) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    existing = image.streams.get(StreamName(command.name))
    if existing is not None and not existing.is_gone(now_ms=now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            f"Stream {command.name} under account {_account_id(image)} already exists.",
        )
    if not 1 <= command.shard_count <= limits.shard_count_per_stream_max:
        raise ShoalError(
            ErrorCode.VALIDATION,
            f"1 validation error detected: Value '{command.shard_count}' at 'shardCount' "
            f"failed to satisfy constraint: Member must have value between 1 and "
            f"{limits.shard_count_per_stream_max}",
        )
    _check_retention_bounds(command.retention_hours)
    _check_record_size(command.max_record_size_kib)
    _check_shard_limit(
        image,
        now_ms=now_ms,
        additional=command.shard_count,
        limit=command.shard_count_per_account_max,
    )
    if command.mode is StreamMode.ON_DEMAND:
        _check_on_demand_limit(image, now_ms=now_ms, limit=command.on_demand_streams_max)
    tags = _merged_tags(image, command.name, {}, command.tags)
    _check_replication_factor(image, command.replication_factor)
    shards = resharding.initial_shards(
        command.shard_count, first_uid=ShardUid(image.next_shard_uid), now_ms=now_ms
    )
    assert len(shards) == command.shard_count
    placements = place_shards(
        image,
        shard_count=command.shard_count,
        replication_factor=command.replication_factor,
        now_ms=now_ms,
    )
    shards = tuple(
        dataclasses.replace(shard, replicas=placement.replicas, leader=placement.leader, epoch=1)
        for shard, placement in zip(shards, placements, strict=True)
    )
    meta = StreamMeta(
        name=StreamName(command.name),
        uid=StreamUid(image.next_stream_uid),
        arn=command.arn,
        created_ms=now_ms,
        mode=command.mode,
        retention_hours=command.retention_hours,
        shards=shards,
        next_shard_index=ShardIndex(len(shards)),
        tags=tags,
        max_record_size_kib=command.max_record_size_kib,
        transient_status=StreamStatus.CREATING,
        status_until_ms=now_ms + command.creating_ms,
        replication_factor=command.replication_factor,
    )
    # A gone incarnation under this name is replaced here; its shard uids leave the image, so
    # the nodes may drop its log data.
    created = _without_stream_leases(_with_stream(image, meta), meta.name)
    created = dataclasses.replace(
        created,
        next_stream_uid=image.next_stream_uid + 1,
        next_shard_uid=image.next_shard_uid + len(shards),
    )
    return created, meta


def _delete_stream(image: MetadataImage, command: DeleteStream) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = _live_stream(image, command.name, now_ms=now_ms)
    status = meta.status(now_ms=now_ms)
    if meta.transient_status is StreamStatus.DELETING:
        # Already deleting: succeed without restarting the timer, so that a retry after an
        # unknown outcome is harmless (kinesalite also accepts a second delete).
        return _without_stream_leases(image, meta.name), meta
    if status is StreamStatus.CREATING:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            "Attempt to change a resource which is still in use: Stream is being created: "
            f"{command.name}",
        )
    # Registered consumers (CREATING or ACTIVE; a deregistered one no longer counts).
    registered = [
        consumer
        for consumer in image.consumers.for_stream(meta.uid, now_ms=now_ms)
        if consumer.status(now_ms=now_ms) is not registry.ConsumerStatus.DELETING
    ]
    if registered and not command.enforce_consumer_deletion:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            f"Stream {command.name} under account {_account_id(image)} has registered "
            "consumers; deregister them or set EnforceConsumerDeletion.",
        )
    # A pending reshard is abandoned: its CompleteReshard becomes a no-op (see there), and
    # the stream shows DELETING rather than UPDATING.
    deleting = dataclasses.replace(
        meta,
        transient_status=StreamStatus.DELETING,
        status_until_ms=now_ms + command.deleting_ms,
        reshard=None,
    )
    # The consumers' leases and checkpoints go with the stream: a stream recreated under this
    # name must not inherit checkpoints of sequence numbers it never had.
    return _without_stream_leases(_with_stream(image, deleting), meta.name), deleting


def _forget_stream(image: MetadataImage, command: ForgetStream) -> tuple[MetadataImage, object]:
    meta = image.stream_by_uid(command.uid)
    if meta is None or not meta.is_gone(now_ms=command.now_ms):
        return image, None
    streams = dict(image.streams)
    del streams[meta.name]
    forgotten = dataclasses.replace(
        image, streams=streams, capacity=capacity.without_stream(image.capacity, meta.uid)
    )
    return _without_stream_leases(forgotten, meta.name), None


def _without_stream_leases(image: MetadataImage, name: StreamName) -> MetadataImage:
    """Drops the stream's consumer leases and its registered consumers (AWS deletes a
    stream's consumers with it; a stream recreated under the name starts with none)."""
    table = image.leases.without_stream(name)
    if table is not image.leases:
        image = dataclasses.replace(image, leases=table)
    consumers = registry.drop_stream(image.consumers, stream_name=name)
    if consumers is not image.consumers:
        image = dataclasses.replace(image, consumers=consumers)
    return image


# --- Stream settings ----------------------------------------------------------------------------


def _change_retention(
    image: MetadataImage, command: ChangeRetention
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = _live_stream(image, command.name, now_ms=now_ms)
    _check_retention_bounds(command.retention_hours)
    requested, existing = command.retention_hours, meta.retention_hours
    if command.increase and requested < existing:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Requested retention period ({requested} hours) for stream {command.name} can not "
            f"be shorter than existing retention period ({existing} hours). "
            "Use DecreaseRetentionPeriod API.",
        )
    if not command.increase and requested > existing:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Requested retention period ({requested} hours) for stream {command.name} can not "
            f"be longer than existing retention period ({existing} hours). "
            "Use IncreaseRetentionPeriod API.",
        )
    _require_active(image, meta, now_ms=now_ms)
    changed = dataclasses.replace(meta, retention_hours=requested)
    return _with_stream(image, changed), changed


def _add_tags(image: MetadataImage, command: AddTags) -> tuple[MetadataImage, object]:
    meta = _live_stream(image, command.name, now_ms=command.now_ms)
    tags = _merged_tags(image, command.name, dict(meta.tags), command.tags)
    changed = dataclasses.replace(meta, tags=tags)
    return _with_stream(image, changed), changed


def _remove_tags(image: MetadataImage, command: RemoveTags) -> tuple[MetadataImage, object]:
    meta = _live_stream(image, command.name, now_ms=command.now_ms)
    removed = frozenset(command.keys)  # absent keys are ignored, as AWS does
    changed = dataclasses.replace(
        meta, tags=tuple((key, value) for key, value in meta.tags if key not in removed)
    )
    return _with_stream(image, changed), changed


def _set_enhanced_monitoring(
    image: MetadataImage, command: SetEnhancedMonitoring
) -> tuple[MetadataImage, object]:
    meta = _live_stream(image, command.name, now_ms=command.now_ms)
    current = meta.enhanced_metrics
    if command.enable:
        desired = tuple(sorted(set(current) | set(command.metrics)))
    else:
        desired = tuple(sorted(set(current) - set(command.metrics)))
    changed = dataclasses.replace(meta, enhanced_metrics=desired)
    return _with_stream(image, changed), (current, desired)


def _update_stream_mode(
    image: MetadataImage, command: UpdateStreamMode
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = _live_stream(image, command.name, now_ms=now_ms)
    if meta.mode is command.mode:
        # Nothing to change: succeed without using one of the two daily switches, so that a
        # retry after an unknown outcome does not fail or count twice.
        return image, meta
    _require_active(image, meta, now_ms=now_ms)
    recent = _recent(meta.mode_updates_ms, now_ms=now_ms)
    if len(recent) >= limits.update_stream_mode_per_day_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            f"Stream {meta.name} under account {_account_id(image)} has already had its "
            f"capacity mode updated {len(recent)} times in the last 24 hours. Limit: "
            f"{limits.update_stream_mode_per_day_max}.",
        )
    if command.mode is StreamMode.ON_DEMAND:
        _check_on_demand_limit(image, now_ms=now_ms, limit=command.on_demand_streams_max)
    changed = dataclasses.replace(
        meta,
        mode=command.mode,
        transient_status=StreamStatus.UPDATING,
        status_until_ms=now_ms + command.updating_ms,
        mode_updates_ms=(*recent, now_ms),
    )
    return _with_stream(image, changed), changed


def _update_max_record_size(
    image: MetadataImage, command: UpdateMaxRecordSize
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    _check_record_size(command.max_record_size_kib)
    meta = _live_stream(image, command.name, now_ms=now_ms)
    _require_active(image, meta, now_ms=now_ms)
    changed = dataclasses.replace(meta, max_record_size_kib=command.max_record_size_kib)
    return _with_stream(image, changed), changed


# --- Resharding ---------------------------------------------------------------------------------


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
            f"1 validation error detected: Value null at '{missing}' failed to satisfy "
            "constraint: Member must not be null",
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
                _check_shard_limit(image, now_ms=now_ms, additional=1, limit=account_max)
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
            resharding.validate_update_shard_count(
                meta, target_shard_count=request.target_shard_count, now_ms=now_ms
            )
            if account_max > 0:
                current = _open_shard_count(image, now_ms=now_ms)
                additional = request.target_shard_count - len(meta.open_shards())
                _check_shard_limit(
                    image,
                    now_ms=now_ms,
                    additional=additional,
                    limit=account_max,
                    current=current,
                )
        case _:
            assert_never(request.kind)


def _begin_reshard(image: MetadataImage, command: BeginReshard) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = _live_stream(image, command.name, now_ms=now_ms)
    _require_active(image, meta, now_ms=now_ms)
    if meta.mode is StreamMode.ON_DEMAND and command.automatic_reason is None:
        raise ShoalError(
            ErrorCode.VALIDATION,
            f"Stream {meta.name} under account {_account_id(image)} is in ON_DEMAND capacity "
            "mode; this operation is only supported in PROVISIONED mode.",
        )
    capacity.check_automatic_reshard(meta, command)
    request = _reshard_request(image, command)
    if request.kind is ReshardKind.UNIFORM_SCALING:
        # The rolling 24-hour window is pruned before validation, which counts what is left.
        meta = dataclasses.replace(
            meta, shard_count_updates_ms=_recent(meta.shard_count_updates_ms, now_ms=now_ms)
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
    sealing_image = capacity.log_automatic_reshard(_with_stream(image, sealing), command, sealed)
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
        _with_stream(image, completed), next_shard_uid=int(outcome.next_shard_uid)
    )
    return next_image, completed


def _complete_reshard(
    image: MetadataImage, command: CompleteReshard
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = image.stream_by_uid(command.stream_uid)
    if meta is None or meta.is_gone(now_ms=now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            f"Stream with id {command.stream_uid} under account {_account_id(image)} not found.",
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
            f"CompleteReshard for stream {meta.name} names shards {sorted(end_offsets)} but "
            f"the pending reshard sealed {list(meta.reshard.sealed)}.",
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
    epoch 1; a merge's child takes ShardToMerge's (its `parent_index`). The parent's log stays
    where it is, so its readers and the child's writers meet on the same nodes. Intermediate
    shards of a uniform scaling are parents too: shards are resolved in index order."""
    resolved: list[ShardMeta] = []
    for shard in shards:
        if shard.index >= first_child:
            assert shard.parent_index is not None
            assert shard.parent_index < shard.index
            parent = resolved[shard.parent_index]
            assert parent.replicas, "every parent has a replica set"
            shard = dataclasses.replace(
                shard, replicas=parent.replicas, leader=parent.leader, epoch=1
            )
        resolved.append(shard)
    return tuple(resolved)


# --- Nodes and shard placement ------------------------------------------------------------------


def _check_replication_factor(image: MetadataImage, replication_factor: int) -> None:
    if replication_factor < 1:
        raise ShoalError(
            ErrorCode.VALIDATION,
            f"1 validation error detected: Value '{replication_factor}' at "
            "'replicationFactor' failed to satisfy constraint: Member must have value greater "
            "than or equal to 1",
        )
    active = len(image.active_node_ids())
    if replication_factor > active:
        # Retryable: a node that is restarting or being unfenced brings the count back.
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            f"Cannot place {replication_factor} replicas per shard: only {active} nodes are "
            "ACTIVE.",
        )


def _node(image: MetadataImage, node_id: NodeId) -> NodeMeta:
    node = image.nodes.get(node_id)
    if node is None:
        raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, f"Node {node_id} is not registered.")
    return node


def _with_node(image: MetadataImage, node: NodeMeta) -> MetadataImage:
    nodes = dict(image.nodes)
    nodes[node.node_id] = node
    return dataclasses.replace(image, nodes=nodes)


def _register_node(image: MetadataImage, command: RegisterNode) -> tuple[MetadataImage, object]:
    if not command.node_id or not command.api_address:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, "A node needs a node id and an API address.")
    for other in image.nodes.values():
        if other.node_id == command.node_id or other.state is NodeState.REMOVED:
            continue
        if other.api_address == command.api_address:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                f"Node {other.node_id} already uses the API address {command.api_address}.",
            )
    previous = image.nodes.get(command.node_id)
    incarnation = 1 if previous is None else previous.incarnation + 1
    draining = previous is not None and previous.state is NodeState.DRAINING
    node = NodeMeta(
        node_id=command.node_id,
        api_address=command.api_address,
        http_address=command.http_address,
        raft_address=command.raft_address,
        voter=command.voter,
        state=NodeState.DRAINING if draining else NodeState.ACTIVE,
        incarnation=incarnation,
        registered_ms=command.now_ms,
    )
    return _with_node(image, node), node


def _set_node_state(image: MetadataImage, command: SetNodeState) -> tuple[MetadataImage, object]:
    node = _node(image, command.node_id)
    if command.state is NodeState.REMOVED:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, "Use RemoveNode to remove a node.")
    if node.state is NodeState.REMOVED:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Node {node.node_id} was removed; it must register again first.",
        )
    if node.incarnation != command.expected_incarnation:
        # Decided about an earlier (or later) incarnation: the node restarted meanwhile.
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Node {node.node_id} is at incarnation {node.incarnation}, not "
            f"{command.expected_incarnation}.",
        )
    if node.state is command.state:
        return image, node
    changed = dataclasses.replace(node, state=command.state)
    return _with_node(image, changed), changed


def _set_shard_leader(
    image: MetadataImage, command: SetShardLeader
) -> tuple[MetadataImage, object]:
    meta = image.stream_by_uid(command.stream_uid)
    if meta is None or meta.is_gone(now_ms=command.now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND, f"Stream with id {command.stream_uid} not found."
        )
    shard = meta.shard_by_index(command.shard_index)
    if shard is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            f"Shard {command.shard_index} of stream {meta.name} not found.",
        )
    if shard.epoch != command.expected_epoch:
        # Compare-and-set: someone else changed the shard since the caller looked.
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Shard {shard.shard_id} of stream {meta.name} is at epoch {shard.epoch}, not "
            f"{command.expected_epoch}.",
        )
    if command.epoch <= command.expected_epoch:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"A new epoch must exceed {command.expected_epoch}, got {command.epoch}.",
        )
    _check_replica_set(image, shard, command)
    # A new leader's throttles start empty at this moment (streams/throttling.py); the same
    # leader in a new epoch (a replica set change) keeps its buckets.
    since_ms = shard.leader_since_ms if command.leader == shard.leader else command.now_ms
    changed = dataclasses.replace(
        shard,
        replicas=command.replicas,
        leader=command.leader,
        epoch=command.epoch,
        leader_since_ms=since_ms,
    )
    shards = tuple(changed if s.index == shard.index else s for s in meta.shards)
    return _with_stream(image, dataclasses.replace(meta, shards=shards)), changed


def _check_replica_set(image: MetadataImage, shard: ShardMeta, command: SetShardLeader) -> None:
    replicas = command.replicas
    if not replicas or len(set(replicas)) != len(replicas):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, f"Bad replica set {list(replicas)}: empty or repeated."
        )
    for node_id in replicas:
        node = image.nodes.get(node_id)
        if node is None or node.state is NodeState.REMOVED:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, f"Replica {node_id} is not a registered node."
            )
    changed = set(replicas) ^ set(shard.replicas)
    if shard.replicas and len(changed) > 1:
        # One node in or out per epoch: any majority of the old set then overlaps any
        # majority of the new one (Raft's single-server membership change).
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"The replica set of {shard.shard_id} may change by one node per epoch: "
            f"{list(shard.replicas)} -> {list(replicas)}.",
        )
    if command.leader is None:
        return
    if command.leader not in replicas:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, f"Leader {command.leader} is not one of the replicas."
        )
    # DRAINING may lead: the controller avoids it, but a leaving node that holds the only
    # complete log must lead until the others caught up (choose_leader never picks a
    # shorter log). FENCED and REMOVED nodes never lead.
    state = image.nodes[command.leader].state
    if state not in (NodeState.ACTIVE, NodeState.DRAINING):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Node {command.leader} is {state.value}; only an ACTIVE or DRAINING node may lead.",
        )


def _remove_node(image: MetadataImage, command: RemoveNode) -> tuple[MetadataImage, object]:
    node = _node(image, command.node_id)
    if node.state is NodeState.REMOVED:
        return image, node  # a retry after an unknown outcome
    now_ms = command.now_ms
    for name in sorted(image.streams):
        stream = image.streams[name]
        if stream.is_gone(now_ms=now_ms):
            continue
        for shard in stream.shards:
            if shard.is_expired(now_ms=now_ms, retention_hours=stream.retention_hours):
                continue
            if node.node_id in shard.replicas:
                raise ShoalError(
                    ErrorCode.RESOURCE_IN_USE,
                    f"Node {node.node_id} still holds a replica of {shard.shard_id} of stream "
                    f"{stream.name}; drain it first.",
                )
    removed = dataclasses.replace(node, state=NodeState.REMOVED)
    return _with_node(image, removed), removed


# --- Consumer leases ----------------------------------------------------------------------------


def _lease_operation(image: MetadataImage, command: LeaseCommand) -> tuple[MetadataImage, object]:
    """Applies one lease operation (`leases.apply_lease_operation`); its refusal becomes the
    ShoalError of its code (CONFLICT -> RESOURCE_IN_USE, NOT_FOUND -> RESOURCE_NOT_FOUND,
    INVALID -> INVALID_ARGUMENT) and leaves the table as it was."""
    if isinstance(command, CreateLeasesCommand):
        _check_lease_shards(image, command)
    table, result = leases.apply_lease_operation(image.leases, command.operation)
    if isinstance(result, leases.LeaseError):
        assert table is image.leases
        raise ShoalError(result.error_code, result.message)
    if table is image.leases:
        return image, result
    return dataclasses.replace(image, leases=table), result


def _check_lease_shards(image: MetadataImage, command: CreateLeasesCommand) -> None:
    """Leases only for shards of a live stream. A deleting stream counts as gone: its leases
    are dropped when it is deleted, and none may come back before it is forgotten."""
    operation = command.operation
    meta = _live_stream(image, operation.stream_name, now_ms=command.now_ms)
    if meta.transient_status is StreamStatus.DELETING:
        raise _not_found(image, operation.stream_name)
    shard_ids = {shard.shard_id for shard in meta.shards}
    for new in operation.leases:
        if new.shard_id not in shard_ids:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"Shard {new.shard_id} in stream {meta.name} under account "
                f"{_account_id(image)} does not exist",
            )


# --- Enhanced fan-out consumers -----------------------------------------------------------------


def _stream_by_arn(image: MetadataImage, arn: str, *, now_ms: int) -> StreamMeta:
    """The live stream this exact ARN names (a stream of another account or region, or an
    older incarnation's ARN, is not found)."""
    _, _, name = arn.partition(":stream/")
    meta = image.stream(name, now_ms=now_ms) if name else None
    if meta is None or meta.arn != arn:
        raise _not_found(image, name or arn)
    return meta


def _consumer_result(
    image: MetadataImage,
    table: registry.ConsumerTable,
    result: registry.StreamConsumer | registry.ConsumerError,
) -> tuple[MetadataImage, object]:
    if isinstance(result, registry.ConsumerError):
        assert table is image.consumers
        raise ShoalError(result.error_code, result.message)
    if table is image.consumers:
        return image, result
    return dataclasses.replace(image, consumers=table), result


def _register_consumer(
    image: MetadataImage, command: RegisterStreamConsumer
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = _stream_by_arn(image, command.stream_arn, now_ms=now_ms)
    status = meta.status(now_ms=now_ms)
    if status not in (StreamStatus.ACTIVE, StreamStatus.UPDATING):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            f"Stream {meta.name} under account {_account_id(image)} not ACTIVE, "
            f"instead in state {status.value}",
        )
    if len(dict(command.tags)) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"A consumer cannot have more than {limits.tags_per_stream_max} tags.",
        )
    table, result = registry.register(
        image.consumers,
        name=command.consumer_name,
        stream_name=meta.name,
        stream_uid=meta.uid,
        stream_arn=meta.arn,
        tags=command.tags,
        now_ms=now_ms,
        creating_ms=command.creating_ms,
        limit=command.consumers_per_stream_max,
    )
    return _consumer_result(image, table, result)


def _deregister_consumer(
    image: MetadataImage, command: DeregisterStreamConsumer
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    arn = command.consumer_arn
    if arn is None:
        if command.stream_arn is None or command.consumer_name is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                "Either ConsumerARN or both StreamARN and ConsumerName must be provided.",
            )
        meta = _stream_by_arn(image, command.stream_arn, now_ms=now_ms)
        consumer = image.consumers.by_name(meta.uid, command.consumer_name, now_ms=now_ms)
        if consumer is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"Consumer {command.consumer_name} under stream {meta.name} not found.",
            )
        arn = consumer.arn
    table, result = registry.deregister(
        image.consumers, arn=arn, now_ms=now_ms, deleting_ms=command.deleting_ms
    )
    return _consumer_result(image, table, result)


def _change_consumer_tags(
    image: MetadataImage, command: ChangeConsumerTags
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    consumer = image.consumers.by_arn(command.consumer_arn, now_ms=now_ms)
    if consumer is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND, f"Consumer {command.consumer_arn} not found."
        )
    tags = dict(consumer.tags)
    tags.update(command.added)
    for key in command.removed:
        tags.pop(key, None)  # absent keys are ignored, as for streams
    if len(tags) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Failed to add tags to consumer {consumer.name} because a given resource cannot "
            f"have more than {limits.tags_per_stream_max} tags associated with it.",
        )
    table, result = registry.set_tags(
        image.consumers, arn=consumer.arn, tags=tuple(tags.items()), now_ms=now_ms
    )
    return _consumer_result(image, table, result)


# --- Limits and account settings (issue 6) ------------------------------------------------------


def _update_stream_limits(
    image: MetadataImage, command: UpdateStreamLimits
) -> tuple[MetadataImage, object]:
    meta = _live_stream(image, command.name, now_ms=command.now_ms)
    merged = throttling.merge_overrides(
        meta.throughput_limits, command.changes, reset=command.reset
    )
    if merged == meta.throughput_limits:
        return image, meta
    changed = dataclasses.replace(meta, throughput_limits=merged)
    return _with_stream(image, changed), changed


def _update_account(
    image: MetadataImage, command: UpdateAccountSettings | UpdateAccountLimits
) -> tuple[MetadataImage, object]:
    current = image.account
    if isinstance(command, UpdateAccountSettings):
        change = (
            account_settings.enable_commitment
            if command.commitment_enabled
            else account_settings.disable_commitment
        )
        commitment = change(current.billing_commitment, now_ms=command.now_ms)
        updated = dataclasses.replace(current, billing_commitment=commitment)
    else:
        updated = account_settings.update_account_limits(
            current,
            shard_limit=command.shard_limit,
            on_demand_stream_limit=command.on_demand_stream_limit,
            reset=command.reset,
        )
    if updated == current:
        return image, current
    return dataclasses.replace(image, account=updated), updated
