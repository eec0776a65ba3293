"""Queues: creation, attributes, deletion, and every change of a record's delivery state.

The rules of delivery live in `broker.queues.state`; this module finds the queue and its
stream in the image, checks what needs the rest of the image (the stream's mode, the shared
consumer limit, unique names), and stores the result. Receives and settlements are applied
here like any other command, so every replica holds the same delivery state.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.consumers.registry import ConsumerStatus
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    ChangeQueueTags,
    ClaimQueueRecords,
    CreateQueue,
    DeleteQueue,
    SettleQueueRecords,
    UpdateQueue,
)
from broker.meta.image import MetadataImage, StreamMode
from broker.queues import state
from broker.queues.state import QueueMeta
from broker.types import StreamUid


def _queue(image: MetadataImage, arn: str) -> QueueMeta:
    queue = image.queues.by_arn(arn)
    if queue is None:
        raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.queue_not_found(arn))
    return queue


def _stored(image: MetadataImage, queue: QueueMeta) -> MetadataImage:
    return dataclasses.replace(image, queues=image.queues.with_queue(queue))


def create(image: MetadataImage, command: CreateQueue) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    stream = image.stream_by_uid(StreamUid(command.stream_uid))
    if stream is None or stream.is_gone(now_ms=now_ms):
        raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.queue_not_found(command.arn))
    if stream.mode is not StreamMode.ON_DEMAND:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, error_messages.queue_needs_on_demand(stream.arn)
        )
    if image.queues.by_name(command.account_id, command.region, command.name) is not None:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.queue_name_in_use(command.name, command.account_id),
        )
    consumers = sum(
        1
        for consumer in image.consumers.for_stream(stream.uid, now_ms=now_ms)
        if consumer.status(now_ms=now_ms) is not ConsumerStatus.DELETING
    )
    if consumers + len(image.queues.on_stream(stream.uid)) >= command.consumers_per_stream_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.queue_consumers_exceeded(stream.name, command.consumers_per_stream_max),
        )
    queue = QueueMeta(
        arn=command.arn,
        queue_id=command.queue_id,
        name=command.name,
        account_id=command.account_id,
        region=command.region,
        stream_name=stream.name,
        stream_arn=stream.arn,
        stream_uid=stream.uid,
        stream_created_ms=stream.created_ms,
        created_ms=now_ms,
        starting_position=command.starting_position,
        start_timestamp_ms=command.start_timestamp_ms,
        visibility_timeout_s=command.visibility_timeout_s,
        dead_letter_enabled=command.dead_letter_enabled,
        max_receive_count=command.max_receive_count,
        tags=command.tags,
    )
    return _stored(image, queue), queue


def update(image: MetadataImage, command: UpdateQueue) -> tuple[MetadataImage, object]:
    queue = _queue(image, command.arn)
    changed = dataclasses.replace(
        queue,
        visibility_timeout_s=(
            queue.visibility_timeout_s
            if command.visibility_timeout_s is None
            else command.visibility_timeout_s
        ),
        dead_letter_enabled=(
            queue.dead_letter_enabled
            if command.dead_letter_enabled is None
            else command.dead_letter_enabled
        ),
        max_receive_count=(
            queue.max_receive_count
            if command.max_receive_count is None
            else command.max_receive_count
        ),
    )
    return _stored(image, changed), changed


def delete(image: MetadataImage, command: DeleteQueue) -> tuple[MetadataImage, object]:
    queue = _queue(image, command.arn)
    return dataclasses.replace(image, queues=image.queues.without(queue.arn)), queue


def claim(image: MetadataImage, command: ClaimQueueRecords) -> tuple[MetadataImage, object]:
    queue = _queue(image, command.arn)
    changed, delivered = state.receive(
        queue,
        dead_letter=command.dead_letter,
        advances=command.advances,
        redeliveries=command.redeliveries,
        dropped=command.dropped,
        token_seed=command.token_seed,
        visibility_ms=command.visibility_ms,
        limit=command.limit,
        now_ms=command.now_ms,
    )
    return _stored(image, changed), delivered


def settle(image: MetadataImage, command: SettleQueueRecords) -> tuple[MetadataImage, object]:
    queue = _queue(image, command.arn)
    changed, succeeded, failed = state.settle(
        queue, command.settlement, command.entries, now_ms=command.now_ms
    )
    return _stored(image, changed), (succeeded, failed)


def change_tags(image: MetadataImage, command: ChangeQueueTags) -> tuple[MetadataImage, object]:
    queue = _queue(image, command.arn)
    tags = dict(queue.tags)
    tags.update(command.added)
    for key in command.removed:
        tags.pop(key, None)
    if len(tags) > command.tags_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED, error_messages.too_many_queue_tags(command.tags_max)
        )
    changed = dataclasses.replace(queue, tags=tuple(sorted(tags.items())))
    return _stored(image, changed), changed


def refuse_if_stream_has_queues(image: MetadataImage, stream_uid: int, stream_name: str) -> None:
    """DeleteStream, and switching a stream to provisioned, need every queue deleted first."""
    if image.queues.on_stream(stream_uid):
        account = image.queues.on_stream(stream_uid)[0].account_id
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE, error_messages.stream_has_queues(stream_name, account)
        )
