"""Video streams' lifecycle and settings: CreateVideoStream, DeleteVideoStream,
UpdateVideoStream, UpdateVideoRetention, TagVideoStream, UntagVideoStream, and the edge
configuration and storage tier (SetVideoEdgeConfiguration, DeleteVideoEdgeConfiguration,
UpdateVideoStorageTier).

The same contract as every transition (pure, time from `command.now_ms`, preconditions
checked here at apply time): two racing CreateStream calls for one name both pass the
service's early check, and exactly one wins here; an update naming a version that another
update already replaced gets VersionMismatchException.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    CreateVideoStream,
    DeleteVideoEdgeConfiguration,
    DeleteVideoStream,
    SetVideoEdgeConfiguration,
    TagVideoStream,
    UntagVideoStream,
    UpdateVideoRetention,
    UpdateVideoStorageTier,
    UpdateVideoStream,
)
from broker.meta.image import MetadataImage
from broker.meta.video_table import (
    EdgeConfiguration,
    EdgeSyncStatus,
    VideoStreamMeta,
    VideoStreamStatus,
)


def _stream(image: MetadataImage, arn: str) -> VideoStreamMeta:
    meta = image.video.by_arn(arn)
    if meta is None:
        raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
    return meta


def _check_version(meta: VideoStreamMeta, version: str | None) -> None:
    if version is not None and version != meta.version:
        raise ShoalError(ErrorCode.VERSION_MISMATCH)


def _require_active(meta: VideoStreamMeta, *, now_ms: int) -> None:
    status = meta.status(now_ms=now_ms)
    if status is not VideoStreamStatus.ACTIVE:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.video_stream_not_active(name=meta.name, status=status.value),
        )


def _store(image: MetadataImage, meta: VideoStreamMeta) -> tuple[MetadataImage, object]:
    return dataclasses.replace(image, video=image.video.with_stream(meta)), meta


def create(image: MetadataImage, command: CreateVideoStream) -> tuple[MetadataImage, object]:
    stream = command.stream
    if image.video.by_name(stream.account_id, stream.region, stream.name) is not None:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE, error_messages.video_stream_exists(name=stream.name)
        )
    if image.video.count(stream.account_id, stream.region) >= command.streams_max:
        raise ShoalError(ErrorCode.ACCOUNT_STREAM_LIMIT_EXCEEDED)
    assert image.video.by_arn(stream.arn) is None, stream.arn  # the creation ms differs
    return _store(image, stream)


def delete(image: MetadataImage, command: DeleteVideoStream) -> tuple[MetadataImage, object]:
    meta = _stream(image, command.arn)
    _check_version(meta, command.current_version)
    return dataclasses.replace(image, video=image.video.without(meta.arn)), None


def update(image: MetadataImage, command: UpdateVideoStream) -> tuple[MetadataImage, object]:
    meta = _stream(image, command.arn)
    _check_version(meta, command.current_version)
    _require_active(meta, now_ms=command.now_ms)
    changed = dataclasses.replace(
        meta,
        device_name=meta.device_name if command.device_name is None else command.device_name,
        media_type=meta.media_type if command.media_type is None else command.media_type,
        version=command.new_version,
        transient_status=VideoStreamStatus.UPDATING,
        status_until_ms=command.now_ms + command.updating_ms,
    )
    return _store(image, changed)


def update_retention(
    image: MetadataImage, command: UpdateVideoRetention
) -> tuple[MetadataImage, object]:
    meta = _stream(image, command.arn)
    _check_version(meta, command.current_version)
    _require_active(meta, now_ms=command.now_ms)
    sign = 1 if command.increase else -1
    hours = meta.data_retention_hours + sign * command.change_hours
    if hours < 0 or hours > command.retention_hours_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.video_retention_out_of_range(
                hours=hours, maximum=command.retention_hours_max
            ),
        )
    changed = dataclasses.replace(
        meta,
        data_retention_hours=hours,
        version=command.new_version,
        transient_status=VideoStreamStatus.UPDATING,
        status_until_ms=command.now_ms + command.updating_ms,
    )
    return _store(image, changed)


def _retagged(
    image: MetadataImage, arn: str, tags: tuple[tuple[str, str], ...]
) -> tuple[MetadataImage, object]:
    """The stream or signaling channel `arn` with `tags` (both are tagged by ARN)."""
    channel = image.video.channel_by_arn(arn)
    if channel is not None:
        changed_channel = dataclasses.replace(channel, tags=tags)
        return dataclasses.replace(
            image, video=image.video.with_channel(changed_channel)
        ), changed_channel
    return _store(image, dataclasses.replace(_stream(image, arn), tags=tags))


def _tags_of(image: MetadataImage, arn: str) -> tuple[tuple[str, str], ...]:
    channel = image.video.channel_by_arn(arn)
    return channel.tags if channel is not None else _stream(image, arn).tags


def tag(image: MetadataImage, command: TagVideoStream) -> tuple[MetadataImage, object]:
    merged = dict(_tags_of(image, command.arn))
    merged.update(command.tags)
    if len(merged) > command.tags_max:
        raise ShoalError(ErrorCode.TAGS_PER_RESOURCE_EXCEEDED)
    return _retagged(image, command.arn, tuple(sorted(merged.items())))


def untag(image: MetadataImage, command: UntagVideoStream) -> tuple[MetadataImage, object]:
    removed = set(command.keys)
    kept = tuple((k, v) for k, v in _tags_of(image, command.arn) if k not in removed)
    return _retagged(image, command.arn, kept)


def update_storage_tier(
    image: MetadataImage, command: UpdateVideoStorageTier
) -> tuple[MetadataImage, object]:
    meta = _stream(image, command.arn)
    _check_version(meta, command.current_version)
    _require_active(meta, now_ms=command.now_ms)
    changed = dataclasses.replace(
        meta,
        storage_tier=command.storage_tier,
        version=command.new_version,
        transient_status=VideoStreamStatus.UPDATING,
        status_until_ms=command.now_ms + command.updating_ms,
    )
    return _store(image, changed)


def _current_edge(
    meta: VideoStreamMeta, *, now_ms: int, sync_timeout_ms: int
) -> tuple[EdgeConfiguration, EdgeSyncStatus] | None:
    """The stream's edge configuration and its status, None when it has none (or its deletion
    has finished)."""
    if meta.edge is None:
        return None
    status = meta.edge.status(now_ms=now_ms, sync_timeout_ms=sync_timeout_ms)
    return None if status is None else (meta.edge, status)


def set_edge(
    image: MetadataImage, command: SetVideoEdgeConfiguration
) -> tuple[MetadataImage, object]:
    meta = _stream(image, command.arn)
    if meta.data_retention_hours == 0:
        raise ShoalError(ErrorCode.NO_DATA_RETENTION)
    current = _current_edge(meta, now_ms=command.now_ms, sync_timeout_ms=command.sync_timeout_ms)
    created_ms = command.now_ms
    if current is not None:
        edge, status = current
        if status is not EdgeSyncStatus.SYNC_FAILED:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.video_edge_configuration_busy(name=meta.name, status=status.value),
            )
        if edge.hub_device_arn != command.hub_device_arn:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.video_edge_other_hub_device(
                    name=meta.name, hub_device_arn=edge.hub_device_arn
                ),
            )
        created_ms = edge.created_ms
    edge = EdgeConfiguration(
        document=command.document,
        hub_device_arn=command.hub_device_arn,
        created_ms=created_ms,
        updated_ms=command.now_ms,
    )
    return _store(image, dataclasses.replace(meta, edge=edge))


def delete_edge(
    image: MetadataImage, command: DeleteVideoEdgeConfiguration
) -> tuple[MetadataImage, object]:
    meta = _stream(image, command.arn)
    current = _current_edge(meta, now_ms=command.now_ms, sync_timeout_ms=command.sync_timeout_ms)
    if current is None:
        raise ShoalError(ErrorCode.STREAM_EDGE_CONFIGURATION_NOT_FOUND)
    edge, status = current
    if status is EdgeSyncStatus.DELETING:
        return image, meta  # already being deleted
    deleting = dataclasses.replace(edge, deleting_until_ms=command.now_ms + command.deleting_ms)
    return _store(image, dataclasses.replace(meta, edge=deleting))
