"""A video stream's edge configuration, storage tier and mapped resources (botocore's
`kinesisvideo` model): StartEdgeConfigurationUpdate, DescribeEdgeConfiguration,
DeleteEdgeConfiguration, ListEdgeAgentConfigurations, Describe/UpdateStreamStorageConfiguration
and DescribeMappedResourceConfiguration, over the metadata quorum.

Shoal runs no Edge Agent (the IoT Greengrass component that records cameras on a hub device):
an edge configuration is kept, described, listed and deleted exactly as AWS keeps one whose
hub device never connects. It shows SYNCING from each update until AWS's 15-minute sync
deadline, then SYNC_FAILED with a FailedStatusDetails, and never reports an
EdgeAgentStatus; a deletion shows DELETING for the stream update time, then the configuration
is gone (`video_table.EdgeConfiguration`). The storage tier (HOT or WARM) is recorded and
reported; Shoal stores both tiers' fragments alike. The mapped resource of a stream is the
signaling channel whose media storage (UpdateMediaStorageConfiguration) ingests into it.

Loop-bound, like the metadata frontend it proposes through.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker import limits
from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.frontend import MetadataFrontend
from broker.meta.metadata_format import VIDEO_EDGE_LEVEL
from broker.meta.video_table import EdgeSyncStatus, VideoStreamMeta
from broker.video import messages

Request = Mapping[str, Any]

EDGE_STORAGE_OPERATIONS = frozenset(
    {
        "StartEdgeConfigurationUpdate",
        "DescribeEdgeConfiguration",
        "DeleteEdgeConfiguration",
        "ListEdgeAgentConfigurations",
        "DescribeStreamStorageConfiguration",
        "UpdateStreamStorageConfiguration",
        "DescribeMappedResourceConfiguration",
    }
)
DEFAULT_STORAGE_TIER = "HOT"
# The Type of a stream's mapped resource: the signaling channel that ingests into it. (AWS's
# documentation leaves the value unstated; this names what the ARN is.)
MAPPED_CHANNEL_TYPE = "SIGNALING_CHANNEL"


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeStorageSettings:
    updating_ms: int  # how long an updated stream shows UPDATING, and a deletion DELETING
    sync_timeout_ms: int = limits.video_edge_sync_timeout_ms


def storage_tier_of(request: Request) -> str:
    """CreateStream's StreamStorageConfiguration tier (HOT when absent)."""
    configuration = request.get("StreamStorageConfiguration") or {}
    tier: str = configuration.get("DefaultStorageTier", DEFAULT_STORAGE_TIER)
    return tier


def require_storage_tier_format(metadata: MetadataFrontend, tier: str) -> None:
    """A tier other than the default is a member the formats before VIDEO_EDGE_LEVEL lack."""
    if tier != DEFAULT_STORAGE_TIER:
        metadata.require_format(VIDEO_EDGE_LEVEL)


class EdgeStorageControl:
    """The operations of the module docstring, for one node."""

    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        clock: Clock,
        settings: EdgeStorageSettings,
        find_stream: Callable[..., VideoStreamMeta],
        new_version: Callable[[], str],
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self._settings = settings
        self._find_stream = find_stream
        self._new_version = new_version

    async def call(self, operation: str, request: Request, caller: Caller) -> dict[str, Any]:
        now_ms = self._clock.wall_ms()
        match operation:
            case "StartEdgeConfigurationUpdate":
                return await self._start_edge(request, caller, now_ms)
            case "DescribeEdgeConfiguration":
                return self._describe_edge(self._stream(request, caller), now_ms)
            case "DeleteEdgeConfiguration":
                await self._metadata.propose(
                    commands.DeleteVideoEdgeConfiguration(
                        now_ms=now_ms,
                        arn=self._stream(request, caller).arn,
                        deleting_ms=self._settings.updating_ms,
                        sync_timeout_ms=self._settings.sync_timeout_ms,
                    )
                )
                return {}
            case "ListEdgeAgentConfigurations":
                return self._list_edge(request, caller, now_ms)
            case "DescribeStreamStorageConfiguration":
                stream = self._stream(request, caller)
                return {
                    "StreamName": stream.name,
                    "StreamARN": stream.arn,
                    "StreamStorageConfiguration": {"DefaultStorageTier": stream.storage_tier},
                }
            case "UpdateStreamStorageConfiguration":
                return await self._update_storage(request, caller, now_ms)
            case "DescribeMappedResourceConfiguration":
                return self._mapped_resources(request, caller)
        raise ShoalError(ErrorCode.UNKNOWN_OPERATION)

    def _stream(self, request: Request, caller: Caller) -> VideoStreamMeta:
        return self._find_stream(
            caller, name=request.get("StreamName"), arn=request.get("StreamARN")
        )

    # --- Edge configurations -------------------------------------------------------------------

    async def _start_edge(self, request: Request, caller: Caller, now_ms: int) -> dict[str, Any]:
        stream = self._stream(request, caller)
        edge_config = request["EdgeConfig"]
        _check_schedules(edge_config)
        if stream.data_retention_hours == 0:  # checked again at apply time
            raise ShoalError(ErrorCode.NO_DATA_RETENTION)
        self._metadata.require_format(VIDEO_EDGE_LEVEL)
        changed = await self._metadata.propose(
            commands.SetVideoEdgeConfiguration(
                now_ms=now_ms,
                arn=stream.arn,
                document=json.dumps(edge_config, sort_keys=True, separators=(",", ":")),
                hub_device_arn=edge_config["HubDeviceArn"],
                sync_timeout_ms=self._settings.sync_timeout_ms,
            )
        )
        assert isinstance(changed, VideoStreamMeta)
        described = self._edge_description(changed, now_ms)
        assert described is not None  # just set: SYNCING
        return described

    def _edge_description(self, stream: VideoStreamMeta, now_ms: int) -> dict[str, Any] | None:
        """The model's edge-configuration members of `stream`, None when it has none."""
        edge = stream.edge
        if edge is None:
            return None
        status = edge.status(now_ms=now_ms, sync_timeout_ms=self._settings.sync_timeout_ms)
        if status is None:
            return None
        described: dict[str, Any] = {
            "StreamName": stream.name,
            "StreamARN": stream.arn,
            "CreationTime": _datetime(edge.created_ms),
            "LastUpdatedTime": _datetime(edge.updated_ms),
            "SyncStatus": status.value,
            "EdgeConfig": json.loads(edge.document),
        }
        if status is EdgeSyncStatus.SYNC_FAILED:
            described["FailedStatusDetails"] = messages.edge_sync_failed(
                hub_device_arn=edge.hub_device_arn,
                minutes=self._settings.sync_timeout_ms // 60_000,
            )
        return described

    def _describe_edge(self, stream: VideoStreamMeta, now_ms: int) -> dict[str, Any]:
        described = self._edge_description(stream, now_ms)
        if described is None:
            raise ShoalError(ErrorCode.STREAM_EDGE_CONFIGURATION_NOT_FOUND)
        return described

    def _list_edge(self, request: Request, caller: Caller, now_ms: int) -> dict[str, Any]:
        hub_device_arn: str = request["HubDeviceArn"]
        configured: list[dict[str, Any]] = []
        for stream in self._metadata.image().video.listed(caller.account_id, caller.region):
            if stream.edge is None or stream.edge.hub_device_arn != hub_device_arn:
                continue
            described = self._edge_description(stream, now_ms)
            if described is not None:
                configured.append(described)
        after = _decode_token(request.get("NextToken"))
        if after is not None:
            configured = [item for item in configured if item["StreamName"] > after]
        page = configured[: request.get("MaxResults", limits.video_edge_list_page_default)]
        response: dict[str, Any] = {"EdgeConfigs": page}
        if len(configured) > len(page):
            response["NextToken"] = _encode_token(page[-1]["StreamName"])
        return response

    # --- Storage tier and mapped resources -----------------------------------------------------

    async def _update_storage(
        self, request: Request, caller: Caller, now_ms: int
    ) -> dict[str, Any]:
        stream = self._stream(request, caller)
        self._metadata.require_format(VIDEO_EDGE_LEVEL)
        await self._metadata.propose(
            commands.UpdateVideoStorageTier(
                now_ms=now_ms,
                arn=stream.arn,
                current_version=request["CurrentVersion"],
                new_version=self._new_version(),
                storage_tier=request["StreamStorageConfiguration"]["DefaultStorageTier"],
                updating_ms=self._settings.updating_ms,
            )
        )
        return {}

    def _mapped_resources(self, request: Request, caller: Caller) -> dict[str, Any]:
        stream = self._stream(request, caller)
        channels = [
            channel
            for channel in self._metadata.image().video.listed_channels(
                caller.account_id, caller.region
            )
            if channel.media_storage_stream_arn == stream.arn and channel.media_storage_enabled
        ]
        after = _decode_token(request.get("NextToken"))
        if after is not None:
            channels = [channel for channel in channels if channel.name > after]
        page = channels[: request.get("MaxResults", 1)]  # the model allows 1 per page
        response: dict[str, Any] = {
            "MappedResourceConfigurationList": [
                {"Type": MAPPED_CHANNEL_TYPE, "ARN": channel.arn} for channel in page
            ]
        }
        if len(channels) > len(page):
            response["NextToken"] = _encode_token(page[-1].name)
        return response


def _check_schedules(edge_config: Mapping[str, Any]) -> None:
    """A ScheduleExpression must be a Quartz cron expression (6 or 7 fields): the model checks
    only its length."""
    for config_member in ("RecorderConfig", "UploaderConfig"):
        schedule = (edge_config.get(config_member) or {}).get("ScheduleConfig")
        if schedule is None:
            continue
        expression: str = schedule["ScheduleExpression"]
        if len(expression.split()) not in (6, 7):
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.schedule_expression_invalid(
                    member=f"EdgeConfig.{config_member}.ScheduleConfig.ScheduleExpression",
                    expression=expression,
                ),
            )


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _encode_token(name: str) -> str:
    """A page token in the model's NextToken alphabet ([a-zA-Z0-9+/=]*)."""
    return base64.b64encode(name.encode("utf-8")).decode("ascii")


def _decode_token(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        return base64.b64decode(token.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.NEXT_TOKEN_INVALID) from error
