"""A stream's consumers: the KCL-style lease table (`consumers/leases.py`) and the enhanced
fan-out registry (`consumers/registry.py`), both pure tables wrapped here by commands.

A table's refusal (a value) becomes the ShoalError of its code and leaves the image's table as
it was; these functions add the checks that need the rest of the image (the stream is live,
its shards exist, the ARN names this incarnation).
"""

from __future__ import annotations

import dataclasses

from broker import error_messages, limits
from broker.consumers import leases, registry
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    ChangeConsumerTags,
    CreateLeasesCommand,
    DeregisterStreamConsumer,
    LeaseCommand,
    RegisterStreamConsumer,
)
from broker.meta.image import MetadataImage, StreamMeta, StreamStatus
from broker.meta.transitions.common import account_id, account_of, live_stream, not_found
from broker.streams.namespaces import keys_for_arn, name_of


def lease_operation(image: MetadataImage, command: LeaseCommand) -> tuple[MetadataImage, object]:
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
    meta = live_stream(image, operation.stream_name, now_ms=command.now_ms)
    if meta.transient_status is StreamStatus.DELETING:
        raise not_found(image, operation.stream_name)
    shard_ids = {shard.shard_id for shard in meta.shards}
    for new in operation.leases:
        if new.shard_id not in shard_ids:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.shard_does_not_exist(
                    shard_id=new.shard_id, name=meta.name, account_id=account_id(image)
                ),
            )


def _stream_by_arn(image: MetadataImage, arn: str, *, now_ms: int) -> StreamMeta:
    """The live stream this exact ARN names (a stream of another account or region, or an
    older incarnation's ARN, is not found)."""
    for key in keys_for_arn(arn):  # the bare key, then the namespaced one
        meta = image.stream(key, now_ms=now_ms)
        if meta is not None and meta.arn == arn:
            return meta
    _, _, name = arn.partition(":stream/")
    raise not_found(image, name or arn)


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


def register_consumer(
    image: MetadataImage, command: RegisterStreamConsumer
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = _stream_by_arn(image, command.stream_arn, now_ms=now_ms)
    status = meta.status(now_ms=now_ms)
    if status not in (StreamStatus.ACTIVE, StreamStatus.UPDATING):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.stream_not_active(
                name=name_of(meta.name),
                account_id=account_of(image, meta.name),
                status=status.value,
            ),
        )
    if len(dict(command.tags)) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.consumer_tags_at_creation(
                tags_per_stream_max=limits.tags_per_stream_max
            ),
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
        # Queues count as registered consumers (AWS: they share the limit).
        limit=command.consumers_per_stream_max - len(image.queues.on_stream(meta.uid)),
    )
    return _consumer_result(image, table, result)


def deregister_consumer(
    image: MetadataImage, command: DeregisterStreamConsumer
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    arn = command.consumer_arn
    if arn is None:
        if command.stream_arn is None or command.consumer_name is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.CONSUMER_ARN_OR_STREAM_AND_NAME,
            )
        meta = _stream_by_arn(image, command.stream_arn, now_ms=now_ms)
        consumer = image.consumers.by_name(meta.uid, command.consumer_name, now_ms=now_ms)
        if consumer is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.consumer_name_not_found(
                    consumer_name=command.consumer_name, name=meta.name
                ),
            )
        arn = consumer.arn
    table, result = registry.deregister(
        image.consumers, arn=arn, now_ms=now_ms, deleting_ms=command.deleting_ms
    )
    return _consumer_result(image, table, result)


def change_consumer_tags(
    image: MetadataImage, command: ChangeConsumerTags
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    consumer = image.consumers.by_arn(command.consumer_arn, now_ms=now_ms)
    if consumer is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.consumer_not_found(arn=command.consumer_arn),
        )
    tags = dict(consumer.tags)
    tags.update(command.added)
    for key in command.removed:
        tags.pop(key, None)  # absent keys are ignored, as for streams
    if len(tags) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.too_many_consumer_tags(
                name=consumer.name, tags_per_stream_max=limits.tags_per_stream_max
            ),
        )
    table, result = registry.set_tags(
        image.consumers, arn=consumer.arn, tags=tuple(tags.items()), now_ms=now_ms
    )
    return _consumer_result(image, table, result)
