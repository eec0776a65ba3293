"""Video streams (Kinesis Video Streams) as metadata: value types in the MetadataImage.

A video stream belongs to one account and region (its `Caller`'s) and is known by its ARN,
`arn:aws:kinesisvideo:<region>:<account>:stream/<name>/<creation ms>`, which names one
incarnation: a stream deleted and created again under the same name gets a new ARN, and so a
new internal stream for its fragments. `version` changes with every update of its settings
(UpdateStream, UpdateDataRetention), so an update that names the version it read
(`CurrentVersion`) cannot overwrite another it did not see. Changed only by the video commands
(`broker/meta/transitions/video_streams.py`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field


class VideoStreamStatus(enum.Enum):
    CREATING = "CREATING"
    ACTIVE = "ACTIVE"
    UPDATING = "UPDATING"
    DELETING = "DELETING"


class EdgeSyncStatus(enum.Enum):
    """The model's SyncStatus values that a configuration with no Edge Agent reaches."""

    SYNCING = "SYNCING"
    SYNC_FAILED = "SYNC_FAILED"
    DELETING = "DELETING"


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeConfiguration:
    """A stream's edge configuration (StartEdgeConfigurationUpdate): the validated EdgeConfig
    as canonical JSON, for the Edge Agent on `hub_device_arn`.

    Its SyncStatus follows from time alone, as AWS's does for a hub device that never
    connects: SYNCING from each update until the sync deadline, then SYNC_FAILED; after
    DeleteEdgeConfiguration, DELETING until `deleting_until_ms`, then gone. (Shoal runs no
    Edge Agent: nothing ever acknowledges a configuration, see docs/ARCHITECTURE.md.)"""

    document: str
    hub_device_arn: str
    created_ms: int
    updated_ms: int
    deleting_until_ms: int = 0  # 0: not being deleted

    def status(self, *, now_ms: int, sync_timeout_ms: int) -> EdgeSyncStatus | None:
        """The SyncStatus at `now_ms`; None once a deletion has finished."""
        if self.deleting_until_ms:
            return EdgeSyncStatus.DELETING if now_ms < self.deleting_until_ms else None
        if now_ms < self.updated_ms + sync_timeout_ms:
            return EdgeSyncStatus.SYNCING
        return EdgeSyncStatus.SYNC_FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoStreamMeta:
    arn: str
    name: str
    account_id: str
    region: str
    created_ms: int
    version: str
    device_name: str
    media_type: str
    kms_key_id: str
    data_retention_hours: int
    tags: tuple[tuple[str, str], ...] = ()  # sorted by key
    # The status shown until `status_until_ms` (CREATING after CreateStream, UPDATING after an
    # update); ACTIVE afterwards.
    transient_status: VideoStreamStatus | None = None
    status_until_ms: int = 0
    # UpdateNotificationConfiguration / UpdateImageGenerationConfiguration: the validated
    # configuration as canonical JSON (the model's shape), "" for none.
    notification_json: str = ""
    image_generation_json: str = ""
    # StreamStorageConfiguration's DefaultStorageTier (CreateStream,
    # UpdateStreamStorageConfiguration): "HOT" or "WARM".
    storage_tier: str = "HOT"
    edge: EdgeConfiguration | None = None  # StartEdgeConfigurationUpdate's, None for none

    def status(self, *, now_ms: int) -> VideoStreamStatus:
        if self.transient_status is not None and now_ms < self.status_until_ms:
            return self.transient_status
        return VideoStreamStatus.ACTIVE

    def belongs_to(self, account_id: str, region: str) -> bool:
        return self.account_id == account_id and self.region == region


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalingChannelMeta:
    """A WebRTC signaling channel (CreateSignalingChannel), known by its ARN
    `arn:aws:kinesisvideo:<region>:<account>:channel/<name>/<creation ms>`. Its live sessions
    (the connected master and viewers) are not metadata: they are held by the channel's home
    node (`broker.video.signaling`)."""

    arn: str
    name: str
    account_id: str
    region: str
    created_ms: int
    version: str
    channel_type: str  # SINGLE_MASTER (the only type the model lets a caller create)
    message_ttl_seconds: int  # how long an undelivered message waits for its recipient
    tags: tuple[tuple[str, str], ...] = ()  # sorted by key
    transient_status: VideoStreamStatus | None = None
    status_until_ms: int = 0
    # UpdateMediaStorageConfiguration: the stream the channel's media is ingested to ("" for
    # none) and whether ingestion is ENABLED.
    media_storage_stream_arn: str = ""
    media_storage_enabled: bool = False

    def status(self, *, now_ms: int) -> VideoStreamStatus:
        if self.transient_status is not None and now_ms < self.status_until_ms:
            return self.transient_status
        return VideoStreamStatus.ACTIVE

    def belongs_to(self, account_id: str, region: str) -> bool:
        return self.account_id == account_id and self.region == region


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoTable:
    """Every video stream and signaling channel of every account and region, by ARN."""

    streams: dict[str, VideoStreamMeta] = field(default_factory=dict)
    channels: dict[str, SignalingChannelMeta] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict field: identity is enough, tables are never keys
        return id(self)

    def by_arn(self, arn: str) -> VideoStreamMeta | None:
        return self.streams.get(arn)

    def by_name(self, account_id: str, region: str, name: str) -> VideoStreamMeta | None:
        for meta in self.streams.values():
            if meta.name == name and meta.belongs_to(account_id, region):
                return meta
        return None

    def listed(self, account_id: str, region: str) -> list[VideoStreamMeta]:
        """The account's streams in the region, sorted by name (ListStreams' order)."""
        return sorted(
            (m for m in self.streams.values() if m.belongs_to(account_id, region)),
            key=lambda meta: meta.name,
        )

    def count(self, account_id: str, region: str) -> int:
        return sum(1 for m in self.streams.values() if m.belongs_to(account_id, region))

    def with_stream(self, meta: VideoStreamMeta) -> VideoTable:
        streams = dict(self.streams)
        streams[meta.arn] = meta
        return dataclasses.replace(self, streams=streams)

    def without(self, arn: str) -> VideoTable:
        streams = dict(self.streams)
        del streams[arn]
        return dataclasses.replace(self, streams=streams)

    # --- Signaling channels ------------------------------------------------------------------

    def channel_by_arn(self, arn: str) -> SignalingChannelMeta | None:
        return self.channels.get(arn)

    def channel_by_name(
        self, account_id: str, region: str, name: str
    ) -> SignalingChannelMeta | None:
        for meta in self.channels.values():
            if meta.name == name and meta.belongs_to(account_id, region):
                return meta
        return None

    def listed_channels(self, account_id: str, region: str) -> list[SignalingChannelMeta]:
        """The account's channels in the region, sorted by name (ListSignalingChannels)."""
        return sorted(
            (m for m in self.channels.values() if m.belongs_to(account_id, region)),
            key=lambda meta: meta.name,
        )

    def channel_count(self, account_id: str, region: str) -> int:
        return sum(1 for m in self.channels.values() if m.belongs_to(account_id, region))

    def with_channel(self, meta: SignalingChannelMeta) -> VideoTable:
        channels = dict(self.channels)
        channels[meta.arn] = meta
        return dataclasses.replace(self, channels=channels)

    def without_channel(self, arn: str) -> VideoTable:
        channels = dict(self.channels)
        del channels[arn]
        return dataclasses.replace(self, channels=channels)
