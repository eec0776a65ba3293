"""The Kinesis Video Streams control plane (botocore's `kinesisvideo` model): the operations
behind both doors, over the metadata quorum.

Every operation takes the validated AWS-shaped request and the `Caller`, whose account and
region scope the streams it sees: a stream is found by name within them, or by an ARN that
must name them. Changes are proposed as metadata commands (`commands.CreateVideoStream`, ...)
whose transitions check every precondition again at apply time. Loop-bound, like the
metadata frontend it proposes through.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker import arns, error_messages, limits
from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.frontend import MetadataFrontend
from broker.meta.video_table import SignalingChannelMeta, VideoStreamMeta, VideoStreamStatus
from broker.video import messages
from broker.video.channels import (
    CHANNEL_OPERATIONS,
    STREAM_CONFIGURATION_OPERATIONS,
    ChannelControl,
    ChannelSettings,
)
from broker.video.edge_storage import (
    EDGE_STORAGE_OPERATIONS,
    EdgeStorageControl,
    EdgeStorageSettings,
    require_storage_tier_format,
    storage_tier_of,
)

Request = Mapping[str, Any]

RETENTION_HOURS_MAX = 87_600  # the model's DataRetentionInHours ceiling (10 years)
_DATA_APIS = frozenset(
    {
        "PUT_MEDIA",
        "GET_MEDIA",
        "LIST_FRAGMENTS",
        "GET_MEDIA_FOR_FRAGMENT_LIST",
        "GET_HLS_STREAMING_SESSION_URL",
        "GET_DASH_STREAMING_SESSION_URL",
        "GET_CLIP",
        "GET_IMAGES",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoSettings:
    """What the control plane needs from the node's configuration."""

    # This node's AWS door, "http(s)://host:port" (known once it listens): every data API is
    # served there.
    data_endpoint: Callable[[], str]
    creating_ms: int  # how long a new stream shows CREATING
    updating_ms: int  # how long an updated stream shows UPDATING
    channels: ChannelSettings
    # How long an edge configuration no Edge Agent acknowledges shows SYNCING (AWS: 15 min).
    edge_sync_timeout_ms: int = limits.video_edge_sync_timeout_ms


def stream_arn(caller: Caller, name: str, created_ms: int) -> str:
    return arns.regional(
        "kinesisvideo", caller.region, caller.account_id, f"stream/{name}/{created_ms}"
    )


def default_kms_key(caller: Caller) -> str:
    return arns.regional("kms", caller.region, caller.account_id, "alias/aws/kinesisvideo")


def new_version() -> str:
    """A stream version: opaque, changes with every update (the model's [a-zA-Z0-9]+)."""
    return secrets.token_hex(10)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def stream_info(meta: VideoStreamMeta, *, now_ms: int) -> dict[str, Any]:
    """The model's StreamInfo of one stream."""
    return {
        "DeviceName": meta.device_name,
        "StreamName": meta.name,
        "StreamARN": meta.arn,
        "MediaType": meta.media_type,
        "KmsKeyId": meta.kms_key_id,
        "Version": meta.version,
        "Status": meta.status(now_ms=now_ms).value,
        "CreationTime": _datetime(meta.created_ms),
        "DataRetentionInHours": meta.data_retention_hours,
    }


class VideoControl:
    """The control-plane operations of one node (module docstring)."""

    STREAM_OPERATIONS = frozenset(
        {
            "CreateStream",
            "DescribeStream",
            "ListStreams",
            "DeleteStream",
            "UpdateStream",
            "UpdateDataRetention",
            "GetDataEndpoint",
            "TagStream",
            "UntagStream",
            "ListTagsForStream",
            "TagResource",
            "UntagResource",
            "ListTagsForResource",
        }
    )
    OPERATIONS = (
        STREAM_OPERATIONS
        | CHANNEL_OPERATIONS
        | STREAM_CONFIGURATION_OPERATIONS
        | EDGE_STORAGE_OPERATIONS
    )

    def __init__(
        self, *, metadata: MetadataFrontend, clock: Clock, settings: VideoSettings
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self._settings = settings
        self.channels = ChannelControl(
            metadata=metadata,
            clock=clock,
            settings=settings.channels,
            find_stream=self.find,
            new_version=new_version,
        )
        self.edge_storage = EdgeStorageControl(
            metadata=metadata,
            clock=clock,
            settings=EdgeStorageSettings(
                updating_ms=settings.updating_ms, sync_timeout_ms=settings.edge_sync_timeout_ms
            ),
            find_stream=self.find,
            new_version=new_version,
        )

    @property
    def operations(self) -> frozenset[str]:
        return self.OPERATIONS

    async def call(self, operation: str, request: Request, caller: Caller) -> dict[str, Any]:
        if operation in CHANNEL_OPERATIONS or operation in STREAM_CONFIGURATION_OPERATIONS:
            return await self.channels.call(operation, request, caller)
        if operation in EDGE_STORAGE_OPERATIONS:
            return await self.edge_storage.call(operation, request, caller)
        handler = getattr(self, "_" + _snake(operation), None)
        if operation not in self.OPERATIONS or handler is None:
            raise ShoalError(ErrorCode.UNKNOWN_OPERATION)
        result: dict[str, Any] = await handler(request, caller)
        return result

    # --- Lookups -------------------------------------------------------------------------------

    def find(
        self, caller: Caller, *, name: str | None, arn: str | None, arn_member: str = "StreamARN"
    ) -> VideoStreamMeta:
        """The caller's stream named by `name` or `arn` (exactly one of them)."""
        if (name is None) == (arn is None):
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.stream_name_or_arn(arn_member=arn_member),
            )
        table = self._metadata.image().video
        if arn is not None:
            meta = table.by_arn(arn)
            if meta is None or not meta.belongs_to(caller.account_id, caller.region):
                raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
            return meta
        assert name is not None
        found = table.by_name(caller.account_id, caller.region, name)
        if found is None:
            raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
        return found

    def _find(self, request: Request, caller: Caller) -> VideoStreamMeta:
        return self.find(caller, name=request.get("StreamName"), arn=request.get("StreamARN"))

    async def _propose(self, command: commands.Command) -> object:
        return await self._metadata.propose(command)

    # --- Operations ----------------------------------------------------------------------------

    async def _create_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        now_ms = self._clock.wall_ms()
        name: str = request["StreamName"]
        if self._metadata.image().video.by_name(caller.account_id, caller.region, name):
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE, error_messages.video_stream_exists(name=name)
            )
        tags = dict(request.get("Tags") or {})
        if len(tags) > limits.video_tags_per_stream_max:
            raise ShoalError(ErrorCode.TAGS_PER_RESOURCE_EXCEEDED)
        storage_tier = storage_tier_of(request)
        require_storage_tier_format(self._metadata, storage_tier)
        creating = self._settings.creating_ms
        stream = VideoStreamMeta(
            arn=stream_arn(caller, name, now_ms),
            name=name,
            account_id=caller.account_id,
            region=caller.region,
            created_ms=now_ms,
            version=new_version(),
            device_name=request.get("DeviceName", ""),
            media_type=request.get("MediaType", ""),
            kms_key_id=request.get("KmsKeyId") or default_kms_key(caller),
            data_retention_hours=request.get("DataRetentionInHours", 0),
            tags=tuple(sorted(tags.items())),
            transient_status=VideoStreamStatus.CREATING if creating > 0 else None,
            status_until_ms=now_ms + creating,
            storage_tier=storage_tier,
        )
        await self._propose(
            commands.CreateVideoStream(
                now_ms=now_ms, stream=stream, streams_max=limits.video_streams_per_account_max
            )
        )
        return {"StreamARN": stream.arn}

    async def _describe_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        meta = self._find(request, caller)
        return {"StreamInfo": stream_info(meta, now_ms=self._clock.wall_ms())}

    async def _list_streams(self, request: Request, caller: Caller) -> dict[str, Any]:
        now_ms = self._clock.wall_ms()
        streams = self._metadata.image().video.listed(caller.account_id, caller.region)
        condition = request.get("StreamNameCondition")
        if condition is not None:
            prefix = condition.get("ComparisonValue", "")
            streams = [meta for meta in streams if meta.name.startswith(prefix)]
        after = _decode_token(request.get("NextToken"))
        if after is not None:
            streams = [meta for meta in streams if meta.name > after]
        page_size = request.get("MaxResults", limits.video_list_page_max)
        page = streams[:page_size]
        response: dict[str, Any] = {
            "StreamInfoList": [stream_info(meta, now_ms=now_ms) for meta in page]
        }
        if len(streams) > len(page):
            response["NextToken"] = _encode_token(page[-1].name)
        return response

    async def _delete_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        meta = self.find(caller, name=None, arn=request["StreamARN"])
        await self._propose(
            commands.DeleteVideoStream(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                current_version=request.get("CurrentVersion"),
            )
        )
        return {}

    async def _update_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        meta = self._find(request, caller)
        await self._propose(
            commands.UpdateVideoStream(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                current_version=request["CurrentVersion"],
                new_version=new_version(),
                device_name=request.get("DeviceName"),
                media_type=request.get("MediaType"),
                updating_ms=self._settings.updating_ms,
            )
        )
        return {}

    async def _update_data_retention(self, request: Request, caller: Caller) -> dict[str, Any]:
        meta = self._find(request, caller)
        await self._propose(
            commands.UpdateVideoRetention(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                current_version=request["CurrentVersion"],
                new_version=new_version(),
                increase=request["Operation"] == "INCREASE_DATA_RETENTION",
                change_hours=request["DataRetentionChangeInHours"],
                retention_hours_max=RETENTION_HOURS_MAX,
                updating_ms=self._settings.updating_ms,
            )
        )
        return {}

    async def _get_data_endpoint(self, request: Request, caller: Caller) -> dict[str, Any]:
        self._find(request, caller)
        if request["APIName"] not in _DATA_APIS:  # the model's enum already checked it
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, messages.unknown_api_name(api_name=request["APIName"])
            )
        return {"DataEndpoint": self._settings.data_endpoint()}

    async def _tag(
        self, meta: VideoStreamMeta | SignalingChannelMeta, tags: Mapping[str, str]
    ) -> None:
        await self._propose(
            commands.TagVideoStream(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                tags=tuple(sorted(tags.items())),
                tags_max=limits.video_tags_per_stream_max,
            )
        )

    async def _untag(self, meta: VideoStreamMeta | SignalingChannelMeta, keys: list[str]) -> None:
        await self._propose(
            commands.UntagVideoStream(
                now_ms=self._clock.wall_ms(), arn=meta.arn, keys=tuple(sorted(set(keys)))
            )
        )

    async def _tag_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        await self._tag(self._find(request, caller), request["Tags"])
        return {}

    async def _untag_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        await self._untag(self._find(request, caller), request["TagKeyList"])
        return {}

    async def _list_tags_for_stream(self, request: Request, caller: Caller) -> dict[str, Any]:
        meta = self._find(request, caller)
        return {"Tags": dict(meta.tags)}

    def _resource(self, request: Request, caller: Caller) -> VideoStreamMeta | SignalingChannelMeta:
        """The stream or signaling channel named by ResourceARN (both are tagged by ARN)."""
        arn: str = request["ResourceARN"]
        if self._metadata.image().video.channel_by_arn(arn) is not None:
            return self.channels.find(caller, name=None, arn=arn)
        return self.find(caller, name=None, arn=arn, arn_member="ResourceARN")

    async def _tag_resource(self, request: Request, caller: Caller) -> dict[str, Any]:
        tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
        await self._tag(self._resource(request, caller), tags)
        return {}

    async def _untag_resource(self, request: Request, caller: Caller) -> dict[str, Any]:
        await self._untag(self._resource(request, caller), request["TagKeyList"])
        return {}

    async def _list_tags_for_resource(self, request: Request, caller: Caller) -> dict[str, Any]:
        return {"Tags": dict(self._resource(request, caller).tags)}


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii")


def _decode_token(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.NEXT_TOKEN_INVALID) from error
