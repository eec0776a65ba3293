"""A stream's life: CreateStream (validation, shard uids, placement), DeleteStream (a timed
DELETING state), ForgetStream (the gone stream leaves the image), and InitCluster, the cluster's
own creation.

A stream's consumer leases and registered consumers go with it: a stream recreated under the
same name starts with none.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages, limits
from broker.consumers import registry
from broker.errors import ErrorCode, ShoalError
from broker.meta import capacity
from broker.meta.commands import (
    CreateStream,
    DeleteStream,
    ForgetStream,
    InitCluster,
    SetMetadataFormat,
)
from broker.meta.image import (
    FIRST_SHARD_EPOCH,
    MetadataImage,
    RecordDistribution,
    StreamDataKey,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.meta.metadata_format import AWS_SEQUENCE_NUMBERS_LEVEL, FIRST_FORMAT
from broker.meta.placement import place_shards
from broker.meta.transitions import delivery_streams, queues
from broker.meta.transitions.account_limits import check_on_demand_limit, check_shard_limit
from broker.meta.transitions.common import account_of, live_stream, with_stream
from broker.meta.transitions.nodes import check_replication_factor
from broker.meta.transitions.stream_settings import (
    check_record_size,
    check_retention_bounds,
    merged_tags,
)
from broker.streams import resharding
from broker.streams.namespaces import name_of
from broker.types import ShardIndex, ShardUid, StreamName, StreamUid


def init_cluster(image: MetadataImage, command: InitCluster) -> tuple[MetadataImage, object]:
    # Every node proposes InitCluster at start with its own random values; the first one
    # applied wins and the others are no-ops, so the cluster agrees on one id and one secret.
    if image.cluster_id:
        return image, image.cluster_id
    assert command.cluster_id
    assert command.iterator_secret
    initialised = dataclasses.replace(
        image,
        cluster_id=command.cluster_id,
        iterator_secret=command.iterator_secret,
        metadata_format=FIRST_FORMAT,
    )
    return initialised, initialised.cluster_id


def set_metadata_format(
    image: MetadataImage, command: SetMetadataFormat
) -> tuple[MetadataImage, object]:
    # Never lowered: a replayed or late command for a level already reached is a no-op.
    # (A binary that cannot read `level` cannot decode this command either: it stops there.)
    if command.level <= image.metadata_format:
        return image, image.metadata_format
    raised = dataclasses.replace(image, metadata_format=command.level)
    return raised, raised.metadata_format


def create_stream(image: MetadataImage, command: CreateStream) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    existing = image.streams.get(StreamName(command.name))
    if existing is not None and not existing.is_gone(now_ms=now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.stream_already_exists(
                name=name_of(command.name), account_id=account_of(image, command.name)
            ),
        )
    if not 1 <= command.shard_count <= limits.shard_count_per_stream_max:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.shard_count_out_of_range(
                shard_count=command.shard_count,
                shard_count_per_stream_max=limits.shard_count_per_stream_max,
            ),
        )
    check_retention_bounds(command.retention_hours)
    check_record_size(command.max_record_size_kib)
    check_shard_limit(
        image,
        now_ms=now_ms,
        arn=command.arn,
        additional=command.shard_count,
        limit=command.shard_count_per_account_max,
    )
    if command.mode is StreamMode.ON_DEMAND:
        check_on_demand_limit(
            image, now_ms=now_ms, arn=command.arn, limit=command.on_demand_streams_max
        )
    elif command.warm_throughput_mibps is not None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.warm_throughput_needs_on_demand(
                name_of(command.name), account_of(image, command.name)
            ),
        )
    elif command.record_distribution is not RecordDistribution.USER_PARTITION_KEY:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.distribution_needs_on_demand(
                name_of(command.name), account_of(image, command.name)
            ),
        )
    tags = merged_tags(image, command.name, {}, command.tags)
    check_replication_factor(image, command.replication_factor)
    requested = command.requested_replication_factor
    if requested and not command.replication_factor < requested <= limits.replication_factor_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.requested_replication_factor_invalid(
                requested=requested, placed=command.replication_factor
            ),
        )
    shards = resharding.initial_shards(
        command.shard_count,
        first_uid=ShardUid(image.next_shard_uid),
        now_ms=now_ms,
        aws_sequence_numbers=image.metadata_format >= AWS_SEQUENCE_NUMBERS_LEVEL,
    )
    assert len(shards) == command.shard_count
    placements = place_shards(
        image,
        shard_count=command.shard_count,
        replication_factor=command.replication_factor,
        now_ms=now_ms,
    )
    shards = tuple(
        dataclasses.replace(
            shard,
            replicas=placement.replicas,
            leader=placement.leader,
            epoch=FIRST_SHARD_EPOCH,
        )
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
        replication_factor=max(command.replication_factor, requested),
        record_distribution=command.record_distribution,
        warm_throughput_mibps=command.warm_throughput_mibps,
    )
    if command.data_key is not None or command.key_id is not None:
        meta = _created_encrypted(meta, command)
    # A gone incarnation under this name is replaced here; its shard uids leave the image, so
    # the nodes may drop its log data.
    created = _without_stream_leases(with_stream(image, meta), meta.name)
    created = dataclasses.replace(
        created,
        next_stream_uid=image.next_stream_uid + 1,
        next_shard_uid=image.next_shard_uid + len(shards),
    )
    return created, meta


def _created_encrypted(meta: StreamMeta, command: CreateStream) -> StreamMeta:
    """`meta` encrypted from its creation under the command's KeyId: its data key version 1."""
    if command.data_key is None or command.key_id is None:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.CREATED_ENCRYPTED_NEEDS_BOTH)
    key = StreamDataKey(
        version=1,
        wrapped=command.data_key.wrapped,
        wrapping=command.data_key.wrapping,
        created_ms=command.now_ms,
    )
    return dataclasses.replace(meta, encryption_type="KMS", key_id=command.key_id, data_keys=(key,))


def delete_stream(image: MetadataImage, command: DeleteStream) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    if meta.transient_status is StreamStatus.DELETING:
        # Already deleting: succeed without restarting the timer, so that a retry after an
        # unknown outcome is harmless (kinesalite also accepts a second delete).
        return _without_stream_leases(image, meta.name), meta
    # A CREATING stream may be deleted, as on AWS.
    queues.refuse_if_stream_has_queues(image, meta.uid, meta.name)
    delivery_streams.refuse_if_stream_has_channels(image, meta.name, name_of(meta.name))
    # Registered consumers (CREATING or ACTIVE; a deregistered one no longer counts).
    registered = [
        consumer
        for consumer in image.consumers.for_stream(meta.uid, now_ms=now_ms)
        if consumer.status(now_ms=now_ms) is not registry.ConsumerStatus.DELETING
    ]
    if registered and not command.enforce_consumer_deletion:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.stream_has_consumers(
                name=name_of(command.name), account_id=account_of(image, command.name)
            ),
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
    return _without_stream_leases(with_stream(image, deleting), meta.name), deleting


def forget_stream(image: MetadataImage, command: ForgetStream) -> tuple[MetadataImage, object]:
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
