"""Signaling channels and the video configurations: CreateSignalingChannel,
DeleteSignalingChannel, UpdateSignalingChannel, SetChannelMediaStorage and
SetVideoStreamConfiguration.

The same contract as every transition (pure, time from `command.now_ms`, preconditions checked
again here at apply time): two racing CreateSignalingChannel calls for one name both pass the
service's early check and exactly one wins here; an update naming a replaced version gets
VersionMismatchException.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    CreateSignalingChannel,
    DeleteSignalingChannel,
    SetChannelMediaStorage,
    SetVideoStreamConfiguration,
    UpdateSignalingChannel,
)
from broker.meta.image import MetadataImage
from broker.meta.video_table import SignalingChannelMeta, VideoStreamStatus


def _channel(image: MetadataImage, arn: str) -> SignalingChannelMeta:
    meta = image.video.channel_by_arn(arn)
    if meta is None:
        raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
    return meta


def _check_version(meta: SignalingChannelMeta, version: str | None) -> None:
    if version is not None and version != meta.version:
        raise ShoalError(ErrorCode.VERSION_MISMATCH)


def _store(image: MetadataImage, meta: SignalingChannelMeta) -> tuple[MetadataImage, object]:
    return dataclasses.replace(image, video=image.video.with_channel(meta)), meta


def create(image: MetadataImage, command: CreateSignalingChannel) -> tuple[MetadataImage, object]:
    channel = command.channel
    if image.video.channel_by_name(channel.account_id, channel.region, channel.name):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE, error_messages.signaling_channel_exists(name=channel.name)
        )
    if image.video.channel_count(channel.account_id, channel.region) >= command.channels_max:
        raise ShoalError(ErrorCode.ACCOUNT_CHANNEL_LIMIT_EXCEEDED)
    assert image.video.channel_by_arn(channel.arn) is None, channel.arn
    return _store(image, channel)


def delete(image: MetadataImage, command: DeleteSignalingChannel) -> tuple[MetadataImage, object]:
    meta = _channel(image, command.arn)
    _check_version(meta, command.current_version)
    return dataclasses.replace(image, video=image.video.without_channel(meta.arn)), None


def update(image: MetadataImage, command: UpdateSignalingChannel) -> tuple[MetadataImage, object]:
    meta = _channel(image, command.arn)
    _check_version(meta, command.current_version)
    status = meta.status(now_ms=command.now_ms)
    if status is not VideoStreamStatus.ACTIVE:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.signaling_channel_not_active(name=meta.name, status=status.value),
        )
    ttl = meta.message_ttl_seconds
    changed = dataclasses.replace(
        meta,
        message_ttl_seconds=ttl
        if command.message_ttl_seconds is None
        else command.message_ttl_seconds,
        version=command.new_version,
        transient_status=VideoStreamStatus.UPDATING,
        status_until_ms=command.now_ms + command.updating_ms,
    )
    return _store(image, changed)


def set_media_storage(
    image: MetadataImage, command: SetChannelMediaStorage
) -> tuple[MetadataImage, object]:
    meta = _channel(image, command.arn)
    if command.stream_arn:
        stream = image.video.by_arn(command.stream_arn)
        if stream is None or not stream.belongs_to(meta.account_id, meta.region):
            raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
        if command.enabled and stream.data_retention_hours == 0:
            raise ShoalError(ErrorCode.NO_DATA_RETENTION)
    changed = dataclasses.replace(
        meta, media_storage_stream_arn=command.stream_arn, media_storage_enabled=command.enabled
    )
    return _store(image, changed)


def set_stream_configuration(
    image: MetadataImage, command: SetVideoStreamConfiguration
) -> tuple[MetadataImage, object]:
    meta = image.video.by_arn(command.arn)
    if meta is None:
        raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
    if command.kind == "notification":
        changed = dataclasses.replace(meta, notification_json=command.document)
    elif command.kind == "image_generation":
        changed = dataclasses.replace(meta, image_generation_json=command.document)
    else:
        raise ValueError(f"unknown video stream configuration {command.kind!r}")
    return dataclasses.replace(image, video=image.video.with_stream(changed)), changed
