"""Video stream commands and metadata for the metadata tests (issue 13)."""

from __future__ import annotations

from broker.meta.commands import (
    CreateSignalingChannel,
    CreateVideoStream,
    DeleteSignalingChannel,
    DeleteVideoEdgeConfiguration,
    DeleteVideoStream,
    SetChannelMediaStorage,
    SetVideoEdgeConfiguration,
    SetVideoStreamConfiguration,
    TagVideoStream,
    UntagVideoStream,
    UpdateSignalingChannel,
    UpdateVideoRetention,
    UpdateVideoStorageTier,
    UpdateVideoStream,
    VideoCommand,
)
from broker.meta.video_table import SignalingChannelMeta, VideoStreamMeta, VideoStreamStatus


def video_stream(
    name: str = "cam", *, created_ms: int = 1_000, account_id: str = "000000000000"
) -> VideoStreamMeta:
    return VideoStreamMeta(
        arn=f"arn:aws:kinesisvideo:us-east-1:{account_id}:stream/{name}/{created_ms}",
        name=name,
        account_id=account_id,
        region="us-east-1",
        created_ms=created_ms,
        version="v1",
        device_name="porch",
        media_type="video/h264",
        kms_key_id="arn:aws:kms:us-east-1:000000000000:alias/aws/kinesisvideo",
        data_retention_hours=24,
        tags=(("site", "home"),),
        transient_status=VideoStreamStatus.CREATING,
        status_until_ms=created_ms + 200,
    )


def every_video_command(*, now_ms: int) -> list[VideoCommand]:
    stream = video_stream()
    return [
        CreateVideoStream(now_ms=now_ms, stream=stream, streams_max=10),
        UpdateVideoStream(
            now_ms=now_ms,
            arn=stream.arn,
            current_version="v1",
            new_version="v2",
            device_name=None,
            media_type="video/h265",
            updating_ms=0,
        ),
        UpdateVideoRetention(
            now_ms=now_ms,
            arn=stream.arn,
            current_version="v2",
            new_version="v3",
            increase=True,
            change_hours=10,
            retention_hours_max=87_600,
            updating_ms=0,
        ),
        TagVideoStream(now_ms=now_ms, arn=stream.arn, tags=(("a", "1"),), tags_max=50),
        UntagVideoStream(now_ms=now_ms, arn=stream.arn, keys=("a",)),
        SetVideoStreamConfiguration(
            now_ms=now_ms, arn=stream.arn, kind="notification", document='{"Status":"ENABLED"}'
        ),
        SetVideoEdgeConfiguration(
            now_ms=now_ms,
            arn=stream.arn,
            document='{"HubDeviceArn":"arn:aws:iot:us-east-1:000000000000:thing/hub"}',
            hub_device_arn="arn:aws:iot:us-east-1:000000000000:thing/hub",
            sync_timeout_ms=900_000,
        ),
        DeleteVideoEdgeConfiguration(
            now_ms=now_ms, arn=stream.arn, deleting_ms=0, sync_timeout_ms=900_000
        ),
        UpdateVideoStorageTier(
            now_ms=now_ms,
            arn=stream.arn,
            current_version="v3",
            new_version="v4",
            storage_tier="WARM",
            updating_ms=0,
        ),
        CreateSignalingChannel(now_ms=now_ms, channel=signaling_channel(), channels_max=10),
        UpdateSignalingChannel(
            now_ms=now_ms,
            arn=signaling_channel().arn,
            current_version="v1",
            new_version="v2",
            message_ttl_seconds=90,
            updating_ms=0,
        ),
        SetChannelMediaStorage(
            now_ms=now_ms, arn=signaling_channel().arn, stream_arn=stream.arn, enabled=True
        ),
        DeleteSignalingChannel(now_ms=now_ms, arn=signaling_channel().arn, current_version="v2"),
        DeleteVideoStream(now_ms=now_ms, arn=stream.arn, current_version=None),
    ]


def signaling_channel(name: str = "door", *, created_ms: int = 1_000) -> SignalingChannelMeta:
    return SignalingChannelMeta(
        arn=f"arn:aws:kinesisvideo:us-east-1:000000000000:channel/{name}/{created_ms}",
        name=name,
        account_id="000000000000",
        region="us-east-1",
        created_ms=created_ms,
        version="v1",
        channel_type="SINGLE_MASTER",
        message_ttl_seconds=60,
        tags=(("site", "home"),),
        transient_status=VideoStreamStatus.CREATING,
        status_until_ms=created_ms + 200,
    )
