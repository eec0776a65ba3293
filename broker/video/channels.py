"""Signaling channels and the video configurations (botocore's `kinesisvideo` model):
Create/Describe/List/Update/DeleteSignalingChannel, GetSignalingChannelEndpoint, the
channel's media-storage configuration and the stream's notification and image-generation
configurations, over the metadata quorum; and the `kinesis-video-signaling` operations
(GetIceServerConfig, SendAlexaOfferToMaster) over this node's `SignalingHub`.

Channels are found as streams are (`control.VideoControl.find`): by name within the caller's
account and region, or by an ARN that must name them. GetSignalingChannelEndpoint answers the
channel's home node (`signaling_rules.home_node`); the data-plane operations refuse to run
anywhere else, since the channel's sessions live there. Loop-bound.
"""

from __future__ import annotations

import asyncio
import base64
import json
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
from broker.types import NodeId
from broker.video import messages
from broker.video.signaling import MASTER, SignalingHub
from broker.video.signaling_rules import ClientMessage, home_node, turn_credentials

Request = Mapping[str, Any]

CHANNEL_OPERATIONS = frozenset(
    {
        "CreateSignalingChannel",
        "DescribeSignalingChannel",
        "ListSignalingChannels",
        "UpdateSignalingChannel",
        "DeleteSignalingChannel",
        "GetSignalingChannelEndpoint",
        "DescribeMediaStorageConfiguration",
        "UpdateMediaStorageConfiguration",
    }
)
STREAM_CONFIGURATION_OPERATIONS = frozenset(
    {
        "DescribeNotificationConfiguration",
        "UpdateNotificationConfiguration",
        "DescribeImageGenerationConfiguration",
        "UpdateImageGenerationConfiguration",
    }
)
SIGNALING_OPERATIONS = frozenset({"GetIceServerConfig", "SendAlexaOfferToMaster"})
_PROTOCOL_SCHEMES = {"WSS": ("wss", "ws"), "HTTPS": ("https", "http")}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSettings:
    node_id: str
    data_endpoint: Callable[[], str]  # this node's "http(s)://host:port"
    tls: bool
    creating_ms: int
    updating_ms: int
    turn_uris: tuple[str, ...] = ()
    turn_secret: str = ""


def channel_arn(caller: Caller, name: str, created_ms: int) -> str:
    return arns.regional(
        "kinesisvideo", caller.region, caller.account_id, f"channel/{name}/{created_ms}"
    )


def channel_info(meta: SignalingChannelMeta, *, now_ms: int) -> dict[str, Any]:
    return {
        "ChannelName": meta.name,
        "ChannelARN": meta.arn,
        "ChannelType": meta.channel_type,
        "ChannelStatus": meta.status(now_ms=now_ms).value,
        "CreationTime": datetime.fromtimestamp(meta.created_ms / 1000, tz=UTC),
        "SingleMasterConfiguration": {"MessageTtlSeconds": meta.message_ttl_seconds},
        "Version": meta.version,
    }


class ChannelControl:
    """The channel and configuration operations of one node (module docstring)."""

    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        clock: Clock,
        settings: ChannelSettings,
        find_stream: Callable[..., VideoStreamMeta],
        new_version: Callable[[], str],
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self._settings = settings
        self._find_stream = find_stream
        self._new_version = new_version
        self.hub = SignalingHub(clock=clock)

    # --- Lookups -------------------------------------------------------------------------------

    def find(self, caller: Caller, *, name: str | None, arn: str | None) -> SignalingChannelMeta:
        if (name is None) == (arn is None):
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.CHANNEL_NAME_OR_ARN,
            )
        table = self._metadata.image().video
        meta = (
            table.channel_by_arn(arn)
            if arn is not None
            else table.channel_by_name(caller.account_id, caller.region, str(name))
        )
        if meta is None or not meta.belongs_to(caller.account_id, caller.region):
            raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.CHANNEL_NOT_FOUND)
        return meta

    def channel_of(self, arn: str) -> SignalingChannelMeta | None:
        return self._metadata.image().video.channel_by_arn(arn)

    def home_endpoint(self, arn: str) -> tuple[str, bool]:
        """The channel's home node as "http(s)://host:port", and whether it is this node."""
        image = self._metadata.image()
        placeable = [node_id for node_id, node in image.nodes.items() if node.is_placeable()]
        home = home_node(arn, placeable) or self._settings.node_id
        if home == self._settings.node_id or home not in image.nodes:
            return self._settings.data_endpoint(), True
        scheme = "https" if self._settings.tls else "http"
        return f"{scheme}://{image.nodes[NodeId(home)].http_address}", False

    def require_home(self, meta: SignalingChannelMeta) -> None:
        """Refuses a data-plane call for a channel another node serves."""
        endpoint, here = self.home_endpoint(meta.arn)
        if not here:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.channel_served_elsewhere(name=meta.name, endpoint=endpoint),
            )

    # --- Control plane -------------------------------------------------------------------------

    async def call(self, operation: str, request: Request, caller: Caller) -> dict[str, Any]:
        now_ms = self._clock.wall_ms()
        match operation:
            case "CreateSignalingChannel":
                return await self._create(request, caller, now_ms)
            case "DescribeSignalingChannel":
                meta = self.find(
                    caller, name=request.get("ChannelName"), arn=request.get("ChannelARN")
                )
                return {"ChannelInfo": channel_info(meta, now_ms=now_ms)}
            case "ListSignalingChannels":
                return self._list(request, caller, now_ms)
            case "UpdateSignalingChannel":
                meta = self.find(caller, name=None, arn=request["ChannelARN"])
                ttl = (request.get("SingleMasterConfiguration") or {}).get("MessageTtlSeconds")
                await self._metadata.propose(
                    commands.UpdateSignalingChannel(
                        now_ms=now_ms,
                        arn=meta.arn,
                        current_version=request["CurrentVersion"],
                        new_version=self._new_version(),
                        message_ttl_seconds=ttl,
                        updating_ms=self._settings.updating_ms,
                    )
                )
                return {}
            case "DeleteSignalingChannel":
                meta = self.find(caller, name=None, arn=request["ChannelARN"])
                await self._metadata.propose(
                    commands.DeleteSignalingChannel(
                        now_ms=now_ms, arn=meta.arn, current_version=request.get("CurrentVersion")
                    )
                )
                self.hub.close_channel(meta.arn)
                return {}
            case "GetSignalingChannelEndpoint":
                return self._endpoint(request, caller)
            case "DescribeMediaStorageConfiguration":
                meta = self.find(
                    caller, name=request.get("ChannelName"), arn=request.get("ChannelARN")
                )
                storage: dict[str, Any] = {
                    "Status": "ENABLED" if meta.media_storage_enabled else "DISABLED"
                }
                if meta.media_storage_stream_arn:
                    storage["StreamARN"] = meta.media_storage_stream_arn
                return {"MediaStorageConfiguration": storage}
            case "UpdateMediaStorageConfiguration":
                return await self._update_media_storage(request, caller, now_ms)
            case "DescribeNotificationConfiguration" | "DescribeImageGenerationConfiguration":
                stream = self._stream(request, caller)
                kind = _configuration_kind(operation)
                document = getattr(stream, f"{kind}_json")
                member = operation.removeprefix("Describe")
                return {member: json.loads(document)} if document else {}
            case "UpdateNotificationConfiguration" | "UpdateImageGenerationConfiguration":
                return await self._update_configuration(operation, request, caller, now_ms)
        raise ShoalError(ErrorCode.UNKNOWN_OPERATION)

    def _stream(self, request: Request, caller: Caller) -> VideoStreamMeta:
        return self._find_stream(
            caller, name=request.get("StreamName"), arn=request.get("StreamARN")
        )

    async def _create(self, request: Request, caller: Caller, now_ms: int) -> dict[str, Any]:
        name: str = request["ChannelName"]
        if self._metadata.image().video.channel_by_name(caller.account_id, caller.region, name):
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE, error_messages.signaling_channel_exists(name=name)
            )
        channel_type = request.get("ChannelType", "SINGLE_MASTER")
        if channel_type != "SINGLE_MASTER":
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.channel_type_not_supported(channel_type=channel_type),
            )  # AWS refuses FULL_MESH the same way: it is reserved
        tags = {tag["Key"]: tag["Value"] for tag in request.get("Tags") or ()}
        if len(tags) > limits.video_tags_per_stream_max:
            raise ShoalError(ErrorCode.TAGS_PER_RESOURCE_EXCEEDED)
        ttl = (request.get("SingleMasterConfiguration") or {}).get(
            "MessageTtlSeconds", limits.video_channel_message_ttl_seconds_default
        )
        creating = self._settings.creating_ms
        channel = SignalingChannelMeta(
            arn=channel_arn(caller, name, now_ms),
            name=name,
            account_id=caller.account_id,
            region=caller.region,
            created_ms=now_ms,
            version=self._new_version(),
            channel_type=channel_type,
            message_ttl_seconds=ttl,
            tags=tuple(sorted(tags.items())),
            transient_status=VideoStreamStatus.CREATING if creating > 0 else None,
            status_until_ms=now_ms + creating,
        )
        await self._metadata.propose(
            commands.CreateSignalingChannel(
                now_ms=now_ms, channel=channel, channels_max=limits.video_channels_per_account_max
            )
        )
        return {"ChannelARN": channel.arn}

    def _list(self, request: Request, caller: Caller, now_ms: int) -> dict[str, Any]:
        channels = self._metadata.image().video.listed_channels(caller.account_id, caller.region)
        condition = request.get("ChannelNameCondition")
        if condition is not None:
            prefix = condition.get("ComparisonValue", "")
            channels = [meta for meta in channels if meta.name.startswith(prefix)]
        token = request.get("NextToken")
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
            except (ValueError, UnicodeError) as error:
                raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.NEXT_TOKEN_INVALID) from error
            channels = [meta for meta in channels if meta.name > after]
        page = channels[: request.get("MaxResults", limits.video_list_page_max)]
        response: dict[str, Any] = {
            "ChannelInfoList": [channel_info(meta, now_ms=now_ms) for meta in page]
        }
        if len(channels) > len(page):
            response["NextToken"] = base64.urlsafe_b64encode(page[-1].name.encode()).decode()
        return response

    def _endpoint(self, request: Request, caller: Caller) -> dict[str, Any]:
        meta = self.find(caller, name=None, arn=request["ChannelARN"])
        configuration = request.get("SingleMasterChannelEndpointConfiguration") or {}
        protocols = configuration.get("Protocols") or ["WSS", "HTTPS"]
        unserved = sorted(set(protocols) - set(_PROTOCOL_SCHEMES))
        if unserved:  # WEBRTC: the WebRTC ingestion media server
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.protocols_not_served(protocols=", ".join(unserved)),
            )
        endpoint, _ = self.home_endpoint(meta.arn)
        tls = endpoint.startswith("https://")
        host = endpoint.split("://", 1)[1]
        endpoints = []
        for protocol in dict.fromkeys(protocols):
            secure, plain = _PROTOCOL_SCHEMES[protocol]
            endpoints.append(
                {"Protocol": protocol, "ResourceEndpoint": f"{secure if tls else plain}://{host}"}
            )
        return {"ResourceEndpointList": endpoints}

    async def _update_media_storage(
        self, request: Request, caller: Caller, now_ms: int
    ) -> dict[str, Any]:
        meta = self.find(caller, name=None, arn=request["ChannelARN"])
        storage = request["MediaStorageConfiguration"]
        enabled = storage["Status"] == "ENABLED"
        stream_arn = storage.get("StreamARN", "")
        if enabled and not stream_arn:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.MEDIA_STORAGE_STREAM_ARN_REQUIRED,
            )
        if stream_arn:
            stream = self._find_stream(caller, name=None, arn=stream_arn)
            if enabled and stream.data_retention_hours == 0:
                raise ShoalError(ErrorCode.NO_DATA_RETENTION)
        await self._metadata.propose(
            commands.SetChannelMediaStorage(
                now_ms=now_ms, arn=meta.arn, stream_arn=stream_arn, enabled=enabled
            )
        )
        return {}

    async def _update_configuration(
        self, operation: str, request: Request, caller: Caller, now_ms: int
    ) -> dict[str, Any]:
        stream = self._stream(request, caller)
        member = operation.removeprefix("Update")
        configuration = request.get(member)
        document = ""
        if configuration is not None:
            _check_configuration(member, configuration, stream)
            document = json.dumps(configuration, sort_keys=True, separators=(",", ":"))
        await self._metadata.propose(
            commands.SetVideoStreamConfiguration(
                now_ms=now_ms,
                arn=stream.arn,
                kind=_configuration_kind(operation),
                document=document,
            )
        )
        return {}

    # --- kinesis-video-signaling ---------------------------------------------------------------

    async def signaling_call(
        self, operation: str, request: Request, caller: Caller
    ) -> dict[str, Any]:
        meta = self.find(caller, name=None, arn=request["ChannelARN"])
        self.require_home(meta)
        if operation == "GetIceServerConfig":
            return {"IceServerList": self._ice_servers(request.get("ClientId") or "master")}
        if operation == "SendAlexaOfferToMaster":
            return {"Answer": await self._alexa_offer(meta, request)}
        raise ShoalError(ErrorCode.UNKNOWN_OPERATION)

    def _ice_servers(self, client: str) -> list[dict[str, Any]]:
        """The configured TURN servers with fresh credentials (none configured: none)."""
        settings = self._settings
        if not settings.turn_uris:
            return []
        username, password = turn_credentials(
            settings.turn_secret, client, now_seconds=self._clock.wall_ms() // 1000
        )
        return [
            {
                "Uris": list(settings.turn_uris),
                "Username": username,
                "Password": password,
                "Ttl": 300,
            }
        ]

    async def _alexa_offer(self, meta: SignalingChannelMeta, request: Request) -> str:
        """Relays an SDP offer to the master as viewer SenderClientId and waits for its
        SDP_ANSWER (ICE candidates are not relayed back: Alexa's offer carries them all)."""
        client_id: str = request["SenderClientId"]
        if MASTER not in self.hub.connected(meta.arn):
            raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.NO_MASTER_CONNECTED)
        peer = self.hub.connect(meta.arn, client_id)
        try:
            self.hub.relay(
                peer,
                ClientMessage(
                    action="SDP_OFFER",
                    payload=request["MessagePayload"],
                    recipient_client_id=None,
                    correlation_id=None,
                ),
                ttl_seconds=meta.message_ttl_seconds,
            )
            deadline = limits.video_alexa_answer_timeout_ms / 1000
            async with asyncio.timeout(deadline):
                while True:
                    text = await peer.outbox.get()
                    if text is None:
                        break
                    message = json.loads(text)
                    if message.get("messageType") == "SDP_ANSWER":
                        return str(message["messagePayload"])
        except TimeoutError:
            pass
        finally:
            self.hub.disconnect(peer)
        raise ShoalError(ErrorCode.CLIENT_LIMIT_EXCEEDED, messages.MASTER_DID_NOT_ANSWER)


def _configuration_kind(operation: str) -> str:
    return "notification" if "Notification" in operation else "image_generation"


def _check_configuration(
    member: str, configuration: Mapping[str, Any], stream: VideoStreamMeta
) -> None:
    """AWS's checks beyond the model's shapes."""
    enabled = configuration.get("Status") == "ENABLED"
    if enabled and stream.data_retention_hours == 0:
        raise ShoalError(ErrorCode.NO_DATA_RETENTION)
    uri: str = configuration["DestinationConfig"]["Uri"]
    if member == "NotificationConfiguration":
        if (parsed := arns.parse(uri)) is None or parsed.service != "sns":
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.NOTIFICATION_URI_NOT_SNS,
            )
        return
    if not uri.startswith("s3://"):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.IMAGE_GENERATION_URI_NOT_S3,
        )
    if configuration["DestinationConfig"]["DestinationRegion"] != stream.region:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.destination_region(region=stream.region),
        )
    interval = configuration["SamplingInterval"]
    if not 200 <= interval <= 20_000:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.IMAGE_GENERATION_SAMPLING_INTERVAL)
    format_config = configuration.get("FormatConfig") or {}
    for key, value in format_config.items():
        if key != "JPEGQuality" or configuration["Format"] != "JPEG":
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.FORMAT_CONFIG_ONLY_JPEG_QUALITY)
        if not (value.isdigit() and 1 <= int(value) <= 100):
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.JPEG_QUALITY_RANGE)
    if configuration.get("HeightPixels", 1) > 2160:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.HEIGHT_PIXELS_MAX)
