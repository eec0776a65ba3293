"""Signaling channels: the control plane through boto3's `kinesisvideo` client, the
`kinesis-video-signaling` API (GetIceServerConfig, SendAlexaOfferToMaster) through boto3, and
the KVS WebSocket signaling protocol with real WebSocket clients, as the KVS WebRTC SDKs speak
it (master with X-Amz-ChannelARN, viewers with X-Amz-ClientId, AWS's JSON with base64
payloads). The last test negotiates a real WebRTC peer connection (aiortc) through the relay
and sends data over it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiortc
import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.exceptions
import httpx
import pytest
import websockets
from botocore.credentials import Credentials

from broker.clock import ManualClock, SystemClock
from broker.node import Node
from broker.video.signaling_rules import home_node, turn_credentials
from tests.conftest import node_config, running_node
from tests.video.test_control_plane import _error, call, kvs, video_client

pytestmark = pytest.mark.integration
__all__ = ["kvs"]  # the boto3 kinesisvideo client fixture, shared with the stream tests
# The tests on `node` share the module's node (tests/video/conftest.py), on the module's loop.
ON_THE_MODULE_NODE = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def node(shared_node: Node) -> Node:
    return shared_node


@pytest.fixture
def clock(shared_clock: ManualClock) -> ManualClock:
    return shared_clock


DEADLINE = 15.0


def _b64(document: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def _unb64(payload: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(payload))
    return decoded


async def _endpoints(kvs: Any, arn: str, role: str) -> dict[str, str]:
    answer = await call(
        kvs.get_signaling_channel_endpoint,
        ChannelARN=arn,
        SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": role},
    )
    return {item["Protocol"]: item["ResourceEndpoint"] for item in answer["ResourceEndpointList"]}


def _ws_url(endpoint: str, arn: str, client_id: str | None = None) -> str:
    query = {"X-Amz-ChannelARN": arn}
    if client_id is not None:
        query["X-Amz-ClientId"] = client_id
    return f"{endpoint}/?{urllib.parse.urlencode(query)}"


async def _receive(socket: Any) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE):
        message: dict[str, Any] = json.loads(await socket.recv())
    return message


@ON_THE_MODULE_NODE
async def test_channel_control_plane(node: Node, kvs: Any, clock: ManualClock) -> None:
    created = await call(
        kvs.create_signaling_channel,
        ChannelName="door",
        SingleMasterConfiguration={"MessageTtlSeconds": 30},
        Tags=[{"Key": "site", "Value": "home"}],
    )
    arn = created["ChannelARN"]
    assert arn == f"arn:aws:kinesisvideo:us-east-1:000000000000:channel/door/{clock.wall_ms()}"
    info = (await call(kvs.describe_signaling_channel, ChannelName="door"))["ChannelInfo"]
    assert info["ChannelARN"] == arn
    assert info["ChannelType"] == "SINGLE_MASTER"
    assert info["ChannelStatus"] == "ACTIVE"
    assert info["SingleMasterConfiguration"] == {"MessageTtlSeconds": 30}
    assert (await call(kvs.describe_signaling_channel, ChannelARN=arn))["ChannelInfo"] == info

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.create_signaling_channel, ChannelName="door")
    assert _error(raised) == ("ResourceInUseException", 400)
    # The model's limits, checked by the server too (boto3 would refuse to send this).
    async with httpx.AsyncClient() as raw:
        refused = await raw.post(
            f"http://127.0.0.1:{node.http_port}/createSignalingChannel",
            json={"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 1}},
        )
    assert refused.status_code == 400
    assert refused.headers["x-amzn-errortype"] == "ValidationException"  # as for streams
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.create_signaling_channel, ChannelName="mesh", ChannelType="FULL_MESH")
    assert _error(raised) == ("InvalidArgumentException", 400)

    for name in ("door-2", "yard"):
        await call(kvs.create_signaling_channel, ChannelName=name)
    listed = await call(kvs.list_signaling_channels)
    assert [c["ChannelName"] for c in listed["ChannelInfoList"]] == ["door", "door-2", "yard"]
    assert listed["ChannelInfoList"][1]["SingleMasterConfiguration"] == {"MessageTtlSeconds": 60}
    prefixed = await call(
        kvs.list_signaling_channels,
        ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "door"},
    )
    assert [c["ChannelName"] for c in prefixed["ChannelInfoList"]] == ["door", "door-2"]
    page = await call(kvs.list_signaling_channels, MaxResults=2)
    rest = await call(kvs.list_signaling_channels, MaxResults=2, NextToken=page["NextToken"])
    assert [c["ChannelName"] for c in rest["ChannelInfoList"]] == ["yard"]

    # Tags: at creation and by ARN, next to streams' (the same operations).
    tags = await call(kvs.list_tags_for_resource, ResourceARN=arn)
    assert tags["Tags"] == {"site": "home"}
    await call(kvs.tag_resource, ResourceARN=arn, Tags=[{"Key": "floor", "Value": "1"}])
    await call(kvs.untag_resource, ResourceARN=arn, TagKeyList=["site"])
    assert (await call(kvs.list_tags_for_resource, ResourceARN=arn))["Tags"] == {"floor": "1"}

    version = info["Version"]
    await call(
        kvs.update_signaling_channel,
        ChannelARN=arn,
        CurrentVersion=version,
        SingleMasterConfiguration={"MessageTtlSeconds": 90},
    )
    updated = (await call(kvs.describe_signaling_channel, ChannelARN=arn))["ChannelInfo"]
    assert updated["SingleMasterConfiguration"] == {"MessageTtlSeconds": 90}
    assert updated["Version"] != version
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.update_signaling_channel, ChannelARN=arn, CurrentVersion=version)
    assert _error(raised) == ("VersionMismatchException", 400)

    for role in ("MASTER", "VIEWER"):
        endpoints = await _endpoints(kvs, arn, role)
        assert endpoints == {
            "WSS": f"ws://{node.config.host}:{node.http_port}",
            "HTTPS": f"http://{node.config.host}:{node.http_port}",
        }
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            kvs.get_signaling_channel_endpoint,
            ChannelARN=arn,
            SingleMasterChannelEndpointConfiguration={"Protocols": ["WEBRTC"], "Role": "MASTER"},
        )
    assert _error(raised) == ("InvalidArgumentException", 400)

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.delete_signaling_channel, ChannelARN=arn, CurrentVersion=version)
    assert _error(raised) == ("VersionMismatchException", 400)
    await call(kvs.delete_signaling_channel, ChannelARN=arn)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.describe_signaling_channel, ChannelName="door")
    assert _error(raised) == ("ResourceNotFoundException", 404)


@ON_THE_MODULE_NODE
async def test_configurations(kvs: Any) -> None:
    live = (await call(kvs.create_stream, StreamName="live", DataRetentionInHours=0))["StreamARN"]
    kept = (await call(kvs.create_stream, StreamName="kept", DataRetentionInHours=2))["StreamARN"]
    channel = (await call(kvs.create_signaling_channel, ChannelName="cam"))["ChannelARN"]

    storage = await call(kvs.describe_media_storage_configuration, ChannelARN=channel)
    assert storage["MediaStorageConfiguration"] == {"Status": "DISABLED"}
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            kvs.update_media_storage_configuration,
            ChannelARN=channel,
            MediaStorageConfiguration={"StreamARN": live, "Status": "ENABLED"},
        )
    assert _error(raised) == ("NoDataRetentionException", 400)
    await call(
        kvs.update_media_storage_configuration,
        ChannelARN=channel,
        MediaStorageConfiguration={"StreamARN": kept, "Status": "ENABLED"},
    )
    storage = await call(kvs.describe_media_storage_configuration, ChannelName="cam")
    assert storage["MediaStorageConfiguration"] == {"StreamARN": kept, "Status": "ENABLED"}

    assert "NotificationConfiguration" not in await call(
        kvs.describe_notification_configuration, StreamName="kept"
    )
    notification: dict[str, Any] = {
        "Status": "ENABLED",
        "DestinationConfig": {"Uri": "arn:aws:sns:us-east-1:000000000000:fragments"},
    }
    for bad, code in (
        ({**notification, "DestinationConfig": {"Uri": "s3://bucket/x"}}, "InvalidArgument"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await call(
                kvs.update_notification_configuration,
                StreamName="kept",
                NotificationConfiguration=bad,
            )
        assert _error(raised) == (f"{code}Exception", 400)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            kvs.update_notification_configuration,
            StreamName="live",
            NotificationConfiguration=notification,
        )
    assert _error(raised) == ("NoDataRetentionException", 400)
    await call(
        kvs.update_notification_configuration,
        StreamARN=kept,
        NotificationConfiguration=notification,
    )
    described = await call(kvs.describe_notification_configuration, StreamName="kept")
    assert described["NotificationConfiguration"] == notification

    images: dict[str, Any] = {
        "Status": "ENABLED",
        "ImageSelectorType": "SERVER_TIMESTAMP",
        "DestinationConfig": {"Uri": "s3://frames/kept", "DestinationRegion": "us-east-1"},
        "SamplingInterval": 1000,
        "Format": "JPEG",
        "FormatConfig": {"JPEGQuality": "80"},
        "WidthPixels": 320,
        "HeightPixels": 240,
    }
    for bad in (
        {**images, "SamplingInterval": 100},
        {**images, "Format": "PNG"},  # JPEGQuality is for JPEG only
        {**images, "FormatConfig": {"JPEGQuality": "101"}},
        {**images, "DestinationConfig": {"Uri": "s3://f/k", "DestinationRegion": "eu-west-1"}},
        {**images, "DestinationConfig": {"Uri": "http://f/k", "DestinationRegion": "us-east-1"}},
    ):
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await call(
                kvs.update_image_generation_configuration,
                StreamName="kept",
                ImageGenerationConfiguration=bad,
            )
        assert _error(raised) == ("InvalidArgumentException", 400), bad
    await call(
        kvs.update_image_generation_configuration,
        StreamName="kept",
        ImageGenerationConfiguration=images,
    )
    described = await call(kvs.describe_image_generation_configuration, StreamARN=kept)
    assert described["ImageGenerationConfiguration"] == images
    # No configuration: removed, as AWS does.
    await call(kvs.update_image_generation_configuration, StreamName="kept")
    described = await call(kvs.describe_image_generation_configuration, StreamARN=kept)
    assert "ImageGenerationConfiguration" not in described


@ON_THE_MODULE_NODE
async def test_master_and_viewers_over_websockets(node: Node, kvs: Any) -> None:
    arn = (await call(kvs.create_signaling_channel, ChannelName="porch"))["ChannelARN"]
    viewer_endpoint = (await _endpoints(kvs, arn, "VIEWER"))["WSS"]
    master_endpoint = (await _endpoints(kvs, arn, "MASTER"))["WSS"]

    # A viewer that connects before the master: its offer waits (MessageTtlSeconds).
    async with websockets.connect(_ws_url(viewer_endpoint, arn, "viewer-1")) as early:
        offer = _b64({"type": "offer", "sdp": "v=0 early"})
        await early.send(json.dumps({"action": "SDP_OFFER", "messagePayload": offer}))
        async with websockets.connect(_ws_url(master_endpoint, arn)) as master:
            waited = await _receive(master)
            assert waited == {
                "messageType": "SDP_OFFER",
                "messagePayload": offer,
                "senderClientId": "viewer-1",
            }
            async with websockets.connect(_ws_url(viewer_endpoint, arn, "viewer-2")) as second:
                offer2 = _b64({"type": "offer", "sdp": "v=0 second"})
                await second.send(json.dumps({"action": "SDP_OFFER", "messagePayload": offer2}))
                got = await _receive(master)
                assert (got["senderClientId"], got["messagePayload"]) == ("viewer-2", offer2)

                # The master answers each viewer by its client id; candidates both ways.
                for viewer, client_id in ((early, "viewer-1"), (second, "viewer-2")):
                    answer = _b64({"type": "answer", "sdp": f"v=0 {client_id}"})
                    await master.send(
                        json.dumps(
                            {
                                "action": "SDP_ANSWER",
                                "recipientClientId": client_id,
                                "messagePayload": answer,
                            }
                        )
                    )
                    got = await _receive(viewer)
                    assert got == {
                        "messageType": "SDP_ANSWER",
                        "messagePayload": answer,
                        "senderClientId": "",
                    }
                candidate = _b64({"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host"})
                await second.send(
                    json.dumps({"action": "ICE_CANDIDATE", "messagePayload": candidate})
                )
                got = await _receive(master)
                assert got["messageType"] == "ICE_CANDIDATE"
                assert got["senderClientId"] == "viewer-2"

                # A refused message with a correlation id gets AWS's STATUS_RESPONSE.
                await master.send(
                    json.dumps(
                        {"action": "SDP_ANSWER", "messagePayload": answer, "correlationId": "c1"}
                    )
                )
                status = await _receive(master)
                assert status["messageType"] == "STATUS_RESPONSE"
                assert status["statusResponse"]["correlationId"] == "c1"
                assert status["statusResponse"]["errorType"] == "InvalidArgumentException"

                # A newer connection with the same client id replaces the older.
                async with websockets.connect(_ws_url(viewer_endpoint, arn, "viewer-2")):
                    with pytest.raises(websockets.ConnectionClosed):
                        async with asyncio.timeout(DEADLINE):
                            await second.recv()

            # Deleting the channel ends its sessions.
            await call(kvs.delete_signaling_channel, ChannelARN=arn)
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(DEADLINE):
                    await master.recv()

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(_ws_url(viewer_endpoint, arn, "late")):
            pass
    assert refused.value.response.status_code == 404


async def test_ice_servers_and_alexa_offer(tmp_path: Path, clock: ManualClock) -> None:
    turn = {"video_turn_uris": ("turn:127.0.0.1:3478?transport=udp",), "video_turn_secret": "s"}
    async with running_node(node_config(tmp_path / "node", settings=turn), clock) as node:
        kvs = video_client(node)
        arn = (await call(kvs.create_signaling_channel, ChannelName="echo"))["ChannelARN"]
        endpoints = await _endpoints(kvs, arn, "MASTER")
        signaling = boto3.client(
            "kinesis-video-signaling",
            endpoint_url=endpoints["HTTPS"],
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )
        servers = (await call(signaling.get_ice_server_config, ChannelARN=arn, ClientId="v1"))[
            "IceServerList"
        ]
        username, password = turn_credentials("s", "v1", now_seconds=clock.wall_ms() // 1000)
        assert servers == [
            {
                "Uris": ["turn:127.0.0.1:3478?transport=udp"],
                "Username": username,
                "Password": password,
                "Ttl": 300,
            }
        ]

        with pytest.raises(botocore.exceptions.ClientError) as raised:  # no master yet
            await call(
                signaling.send_alexa_offer_to_master,
                ChannelARN=arn,
                SenderClientId="alexa",
                MessagePayload=_b64({"sdp": "offer"}),
            )
        assert _error(raised) == ("ResourceNotFoundException", 404)

        async with websockets.connect(_ws_url(endpoints["WSS"], arn)) as master:

            async def answer_one() -> None:
                offer = await _receive(master)
                assert offer["senderClientId"] == "alexa"
                sdp = _unb64(offer["messagePayload"])["sdp"]
                await master.send(
                    json.dumps(
                        {
                            "action": "SDP_ANSWER",
                            "recipientClientId": "alexa",
                            "messagePayload": _b64({"sdp": f"answer to {sdp}"}),
                        }
                    )
                )

            answering = asyncio.create_task(answer_one())
            answer = await call(
                signaling.send_alexa_offer_to_master,
                ChannelARN=arn,
                SenderClientId="alexa",
                MessagePayload=_b64({"sdp": "offer"}),
            )
            await answering
        assert _unb64(answer["Answer"]) == {"sdp": "answer to offer"}


@pytest.fixture
async def signed_node(tmp_path: Path) -> AsyncIterator[Node]:
    clock = ManualClock(wall_ms=SystemClock().wall_ms())  # SigV4 checks dates: a real clock
    config = node_config(tmp_path / "node", settings={"aws_credentials": ("AKID:SECRET",)})
    async with running_node(config, clock) as node:
        yield node


def _presigned(url: str, secret: str) -> str:
    """The URL the KVS SDKs open: SigV4 in the query string, service kinesisvideo."""
    request = botocore.awsrequest.AWSRequest(method="GET", url=url)
    signer = botocore.auth.SigV4QueryAuth(
        Credentials("AKID", secret), "kinesisvideo", "us-east-1", expires=300
    )
    signer.add_auth(request)
    return str(request.url)


async def test_signed_websocket(signed_node: Node) -> None:
    kvs = boto3.client(
        "kinesisvideo",
        endpoint_url=f"http://127.0.0.1:{signed_node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
    )
    arn = (await call(kvs.create_signaling_channel, ChannelName="cam"))["ChannelARN"]
    endpoint = (await _endpoints(kvs, arn, "MASTER"))["WSS"]
    for url in (_ws_url(endpoint, arn), _presigned(_ws_url(endpoint, arn), "WRONG")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code in {400, 403}
    async with websockets.connect(_presigned(_ws_url(endpoint, arn), "SECRET")) as master:
        viewer_url = _presigned(_ws_url(endpoint, arn, "v"), "SECRET")
        async with websockets.connect(viewer_url) as viewer:
            await viewer.send(json.dumps({"action": "SDP_OFFER", "messagePayload": _b64({})}))
            assert (await _receive(master))["senderClientId"] == "v"


def test_home_node_is_stable_and_spread() -> None:
    nodes = ["n0", "n1", "n2"]
    homes = [home_node(f"arn:channel/{i}", nodes) for i in range(300)]
    assert all(home_node(f"arn:channel/{i}", reversed(nodes)) == homes[i] for i in range(300))
    assert {homes.count(n) for n in nodes} <= set(range(70, 131))  # roughly a third each
    # A node leaving moves only its own channels.
    survivors = ["n0", "n2"]
    for i, home in enumerate(homes):
        if home != "n1":
            assert home_node(f"arn:channel/{i}", survivors) == home
    assert home_node("arn", []) is None


@ON_THE_MODULE_NODE
async def test_a_webrtc_peer_connection_negotiated_through_the_relay(node: Node, kvs: Any) -> None:
    """Two real WebRTC peers (aiortc: ICE, DTLS, SCTP) meet through Shoal's relay only: the
    viewer's offer and the master's answer travel as AWS's signaling messages, and then a
    data channel carries a message both ways."""
    arn = (await call(kvs.create_signaling_channel, ChannelName="webrtc"))["ChannelARN"]
    endpoint = (await _endpoints(kvs, arn, "MASTER"))["WSS"]
    master_peer = aiortc.RTCPeerConnection()
    viewer_peer = aiortc.RTCPeerConnection()
    echoed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @master_peer.on("datachannel")
    def on_channel(channel: Any) -> None:
        @channel.on("message")
        def on_message(message: str) -> None:
            channel.send(f"echo {message}")

    channel = viewer_peer.createDataChannel("chat")

    @channel.on("open")
    def on_open() -> None:
        channel.send("hello")

    @channel.on("message")
    def on_reply(message: str) -> None:
        if not echoed.done():
            echoed.set_result(message)

    try:
        async with (
            websockets.connect(_ws_url(endpoint, arn)) as master,
            websockets.connect(_ws_url(endpoint, arn, "viewer")) as viewer,
        ):
            # aiortc gathers every candidate before the description is set (no trickle).
            await viewer_peer.setLocalDescription(await viewer_peer.createOffer())
            offer = viewer_peer.localDescription
            await viewer.send(
                json.dumps(
                    {
                        "action": "SDP_OFFER",
                        "messagePayload": _b64({"type": offer.type, "sdp": offer.sdp}),
                    }
                )
            )
            received = await _receive(master)
            remote = _unb64(received["messagePayload"])
            await master_peer.setRemoteDescription(
                aiortc.RTCSessionDescription(sdp=remote["sdp"], type=remote["type"])
            )
            await master_peer.setLocalDescription(await master_peer.createAnswer())
            answer = master_peer.localDescription
            await master.send(
                json.dumps(
                    {
                        "action": "SDP_ANSWER",
                        "recipientClientId": received["senderClientId"],
                        "messagePayload": _b64({"type": answer.type, "sdp": answer.sdp}),
                    }
                )
            )
            replied = _unb64((await _receive(viewer))["messagePayload"])
            await viewer_peer.setRemoteDescription(
                aiortc.RTCSessionDescription(sdp=replied["sdp"], type=replied["type"])
            )
            async with asyncio.timeout(DEADLINE):
                assert await echoed == "echo hello"
    finally:
        await viewer_peer.close()
        await master_peer.close()


def test_messages_waiting_for_absent_peers_are_bounded() -> None:
    from broker import limits
    from broker.video.signaling import SignalingHub
    from broker.video.signaling_rules import ClientMessage

    clock = ManualClock(wall_ms=1_000_000)
    hub = SignalingHub(clock=clock)
    master = hub.connect("arn", "")
    for index in range(limits.video_channel_pending_recipients_max * 2):
        message = ClientMessage(
            action="SDP_ANSWER",
            payload="eA==",
            recipient_client_id=f"v{index}",
            correlation_id=None,
        )
        hub.relay(master, message, ttl_seconds=60)
    channel = hub._channels["arn"]
    assert len(channel.pending) <= limits.video_channel_pending_recipients_max
    late = hub.connect("arn", f"v{limits.video_channel_pending_recipients_max * 2 - 1}")
    assert late.outbox.qsize() == 1  # the newest kept theirs
    clock.advance(ms=61_000)  # past the TTL: nothing waits any more
    fresh = ClientMessage(
        action="SDP_ANSWER", payload="eA==", recipient_client_id="fresh", correlation_id=None
    )
    hub.relay(master, fresh, ttl_seconds=60)
    assert list(channel.pending) == ["fresh"]
