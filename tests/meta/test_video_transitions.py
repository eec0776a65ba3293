"""The video stream transitions (broker/meta/transitions/video_streams.py) through
`state_machine.apply`: preconditions checked at apply time, versions, tags, and the image's
round trip through its codec."""

from __future__ import annotations

import dataclasses

from broker.errors import ErrorCode
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
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import Applied, apply
from broker.meta.video_table import EdgeSyncStatus, VideoStreamStatus
from tests.meta.video_factories import video_stream


def _created(image: MetadataImage | None = None) -> MetadataImage:
    applied = apply(
        image or MetadataImage(),
        CreateVideoStream(now_ms=1_000, stream=video_stream(), streams_max=10),
    )
    assert applied.error is None
    return applied.image


def test_two_creates_of_one_name_one_wins() -> None:
    image = _created()
    # The second proposer saw no stream either; its ARN differs (a later creation time).
    second = apply(
        image,
        CreateVideoStream(now_ms=1_001, stream=video_stream(created_ms=1_001), streams_max=10),
    )
    assert second.error is not None
    assert second.error.code is ErrorCode.RESOURCE_IN_USE
    # Another account may use the same name.
    other = apply(
        image,
        CreateVideoStream(
            now_ms=1_001,
            stream=video_stream(created_ms=1_001, account_id="111111111111"),
            streams_max=10,
        ),
    )
    assert other.error is None
    assert len(other.image.video.streams) == 2


def test_account_stream_limit() -> None:
    image = _created()
    refused = apply(
        image,
        CreateVideoStream(now_ms=2_000, stream=video_stream("b", created_ms=2_000), streams_max=1),
    )
    assert refused.error is not None
    assert refused.error.code is ErrorCode.ACCOUNT_STREAM_LIMIT_EXCEEDED


def test_updates_need_the_current_version_and_an_active_stream() -> None:
    image = _created()
    arn = video_stream().arn
    update = UpdateVideoStream(
        now_ms=1_100,
        arn=arn,
        current_version="v1",
        new_version="v2",
        device_name="garage",
        media_type=None,
        updating_ms=50,
    )
    creating = apply(image, update)
    assert creating.error is not None
    assert creating.error.code is ErrorCode.RESOURCE_IN_USE
    updated = apply(image, dataclasses.replace(update, now_ms=1_300))
    assert updated.error is None
    meta = updated.image.video.streams[arn]
    assert (meta.device_name, meta.media_type, meta.version) == ("garage", "video/h264", "v2")
    assert meta.status(now_ms=1_320) is VideoStreamStatus.UPDATING
    assert meta.status(now_ms=1_350) is VideoStreamStatus.ACTIVE
    stale = apply(
        updated.image,
        UpdateVideoRetention(
            now_ms=1_400,
            arn=arn,
            current_version="v1",
            new_version="v3",
            increase=True,
            change_hours=1,
            retention_hours_max=87_600,
            updating_ms=0,
        ),
    )
    assert stale.error is not None
    assert stale.error.code is ErrorCode.VERSION_MISMATCH
    below_zero = apply(
        updated.image,
        UpdateVideoRetention(
            now_ms=1_400,
            arn=arn,
            current_version="v2",
            new_version="v3",
            increase=False,
            change_hours=25,
            retention_hours_max=87_600,
            updating_ms=0,
        ),
    )
    assert below_zero.error is not None
    assert below_zero.error.code is ErrorCode.INVALID_ARGUMENT


def test_tags_limit_and_delete() -> None:
    image = _created()
    arn = video_stream().arn
    tagged = apply(
        image, TagVideoStream(now_ms=1_100, arn=arn, tags=(("a", "1"), ("b", "2")), tags_max=3)
    )
    assert tagged.error is None
    assert tagged.image.video.streams[arn].tags == (("a", "1"), ("b", "2"), ("site", "home"))
    too_many = apply(
        tagged.image, TagVideoStream(now_ms=1_100, arn=arn, tags=(("c", "3"),), tags_max=3)
    )
    assert too_many.error is not None
    assert too_many.error.code is ErrorCode.TAGS_PER_RESOURCE_EXCEEDED
    untagged = apply(tagged.image, UntagVideoStream(now_ms=1_100, arn=arn, keys=("a", "zz")))
    assert untagged.image.video.streams[arn].tags == (("b", "2"), ("site", "home"))
    assert decode_image(encode_image(untagged.image)) == untagged.image
    deleted = apply(untagged.image, DeleteVideoStream(now_ms=1_200, arn=arn))
    assert deleted.error is None
    assert deleted.image.video.streams == {}
    gone = apply(deleted.image, DeleteVideoStream(now_ms=1_200, arn=arn))
    assert gone.error is not None
    assert gone.error.code is ErrorCode.VIDEO_RESOURCE_NOT_FOUND


def test_signaling_channels_and_configurations_through_apply() -> None:
    from broker.meta.commands import (
        CreateSignalingChannel,
        DeleteSignalingChannel,
        SetChannelMediaStorage,
        SetVideoStreamConfiguration,
        UpdateSignalingChannel,
    )
    from tests.meta.video_factories import signaling_channel

    image = _created()
    channel = signaling_channel()
    created = apply(image, CreateSignalingChannel(now_ms=1_000, channel=channel, channels_max=1))
    assert created.error is None
    image = created.image
    # One name per account and region; the account's limit.
    again = apply(
        image,
        CreateSignalingChannel(
            now_ms=1_001, channel=signaling_channel(created_ms=1_001), channels_max=5
        ),
    )
    assert again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE
    over = apply(
        image,
        CreateSignalingChannel(
            now_ms=1_001, channel=signaling_channel("other", created_ms=1_001), channels_max=1
        ),
    )
    assert over.error is not None
    assert over.error.code is ErrorCode.ACCOUNT_CHANNEL_LIMIT_EXCEEDED

    def update(version: str, now_ms: int) -> Applied:
        return apply(
            image,
            UpdateSignalingChannel(
                now_ms=now_ms,
                arn=channel.arn,
                current_version=version,
                new_version="v2",
                message_ttl_seconds=90,
                updating_ms=100,
            ),
        )

    busy = update("v1", 1_100)  # still CREATING
    assert busy.error is not None and busy.error.code is ErrorCode.RESOURCE_IN_USE
    stale = update("v0", 2_000)
    assert stale.error is not None and stale.error.code is ErrorCode.VERSION_MISMATCH
    image = update("v1", 2_000).image
    meta = image.video.channel_by_arn(channel.arn)
    assert meta is not None and (meta.message_ttl_seconds, meta.version) == (90, "v2")
    assert meta.status(now_ms=2_050) is VideoStreamStatus.UPDATING

    stream = video_stream()
    stored = apply(
        image,
        SetChannelMediaStorage(now_ms=2_000, arn=channel.arn, stream_arn=stream.arn, enabled=True),
    )
    assert stored.error is None
    configured = apply(
        stored.image,
        SetVideoStreamConfiguration(
            now_ms=2_000, arn=stream.arn, kind="notification", document='{"Status":"ENABLED"}'
        ),
    )
    assert configured.error is None
    image = configured.image
    assert decode_image(encode_image(image)) == image  # channels survive the snapshot

    deleted = apply(image, DeleteSignalingChannel(now_ms=2_000, arn=channel.arn))
    assert deleted.error is None and deleted.image.video.channels == {}


HUB = "arn:aws:iot:us-east-1:000000000000:thing/hub"
SYNC_MS = 900_000


def _set_edge(image: MetadataImage, now_ms: int, hub: str = HUB) -> Applied:
    return apply(
        image,
        SetVideoEdgeConfiguration(
            now_ms=now_ms,
            arn=video_stream().arn,
            document=f'{{"HubDeviceArn":"{hub}"}}',
            hub_device_arn=hub,
            sync_timeout_ms=SYNC_MS,
        ),
    )


def _delete_edge(image: MetadataImage, now_ms: int) -> Applied:
    return apply(
        image,
        DeleteVideoEdgeConfiguration(
            now_ms=now_ms, arn=video_stream().arn, deleting_ms=100, sync_timeout_ms=SYNC_MS
        ),
    )


def test_edge_configuration_states_at_apply_time() -> None:
    """SYNCING refuses an update until the sync deadline (then SYNC_FAILED takes one for the
    same hub device only); a deletion is DELETING (refusing updates, idempotent) until its
    time has passed, then gone; everything round-trips through the image codec."""
    arn = video_stream().arn
    image = _created()
    none = _delete_edge(image, 2_000)
    assert none.error is not None
    assert none.error.code is ErrorCode.STREAM_EDGE_CONFIGURATION_NOT_FOUND
    image = _set_edge(image, 2_000).image
    edge = image.video.streams[arn].edge
    assert edge is not None and (edge.created_ms, edge.updated_ms) == (2_000, 2_000)
    assert edge.status(now_ms=2_000 + SYNC_MS - 1, sync_timeout_ms=SYNC_MS) is (
        EdgeSyncStatus.SYNCING
    )
    busy = _set_edge(image, 3_000)
    assert busy.error is not None and busy.error.code is ErrorCode.RESOURCE_IN_USE
    failed_at = 2_000 + SYNC_MS
    assert edge.status(now_ms=failed_at, sync_timeout_ms=SYNC_MS) is EdgeSyncStatus.SYNC_FAILED
    other = _set_edge(image, failed_at, hub=HUB + "-2")
    assert other.error is not None and other.error.code is ErrorCode.INVALID_ARGUMENT
    image = _set_edge(image, failed_at).image
    edge = image.video.streams[arn].edge
    assert edge is not None and (edge.created_ms, edge.updated_ms) == (2_000, failed_at)
    assert decode_image(encode_image(image)) == image

    deleting = _delete_edge(image, failed_at + 10).image
    edge = deleting.video.streams[arn].edge
    assert edge is not None
    assert edge.status(now_ms=failed_at + 50, sync_timeout_ms=SYNC_MS) is EdgeSyncStatus.DELETING
    again = _delete_edge(deleting, failed_at + 20)  # already deleting: unchanged
    assert again.error is None and again.image.video.streams[arn] == deleting.video.streams[arn]
    refused = _set_edge(deleting, failed_at + 50)
    assert refused.error is not None and refused.error.code is ErrorCode.RESOURCE_IN_USE
    assert edge.status(now_ms=failed_at + 110, sync_timeout_ms=SYNC_MS) is None
    gone = _delete_edge(deleting, failed_at + 110)
    assert gone.error is not None
    assert gone.error.code is ErrorCode.STREAM_EDGE_CONFIGURATION_NOT_FOUND
    moved = _set_edge(deleting, failed_at + 110, hub=HUB + "-2").image.video.streams[arn].edge
    assert moved is not None and moved.created_ms == failed_at + 110  # a new configuration

    no_retention = dataclasses.replace(video_stream(), data_retention_hours=0)
    bare = apply(
        MetadataImage(), CreateVideoStream(now_ms=1_000, stream=no_retention, streams_max=10)
    ).image
    refused = _set_edge(bare, 2_000)
    assert refused.error is not None and refused.error.code is ErrorCode.NO_DATA_RETENTION


def test_storage_tier_update_needs_the_version_and_an_active_stream() -> None:
    arn = video_stream().arn
    image = _created()

    def update(version: str, now_ms: int) -> Applied:
        return apply(
            image,
            UpdateVideoStorageTier(
                now_ms=now_ms,
                arn=arn,
                current_version=version,
                new_version="v2",
                storage_tier="WARM",
                updating_ms=100,
            ),
        )

    creating = update("v1", 1_100)
    assert creating.error is not None and creating.error.code is ErrorCode.RESOURCE_IN_USE
    stale = update("v0", 2_000)
    assert stale.error is not None and stale.error.code is ErrorCode.VERSION_MISMATCH
    changed = update("v1", 2_000).image.video.streams[arn]
    assert (changed.storage_tier, changed.version) == ("WARM", "v2")
    assert changed.status(now_ms=2_050) is VideoStreamStatus.UPDATING
