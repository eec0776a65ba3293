"""The Kinesis Video Streams control plane through boto3's `kinesisvideo` client, against an
in-process node (broker/video/control.py behind broker/gateway/video_http.py).

Goal: a user's KVS control-plane code works unmodified against Shoal: ARNs, versions, states,
tags in both forms, pagination, the data endpoint, and AWS's errors with the model's statuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import grpc
import pytest

from broker.api.video.v1 import video_pb2, video_pb2_grpc
from broker.clock import ManualClock
from broker.errors import ErrorCode
from broker.gateway.validation import service_model
from broker.node import Node
from broker.video.channels import SIGNALING_OPERATIONS
from broker.video.control import VideoControl
from broker.video.service import ARCHIVED_MEDIA_OPERATIONS, MEDIA_OPERATIONS
from broker.wire.error_mapping import error_from_rpc_error
from tests.required_members import (
    boto3_ask,
    grpc_ask,
    grpc_operations,
    malformed_request_answer,
    sweep,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
def node(shared_node: Node) -> Node:
    """The module's node (tests/video/conftest.py): each test uses streams of its own."""
    return shared_node


@pytest.fixture
def clock(shared_clock: ManualClock) -> ManualClock:
    return shared_clock


REGION = "us-east-1"


def video_client(node: Node, service: str = "kinesisvideo", **kwargs: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
        **kwargs,
    )


@pytest.fixture
def kvs(node: Node) -> Iterator[Any]:
    client = video_client(node)
    try:
        yield client
    finally:
        client.close()


async def call(function: Any, /, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, **kwargs)


def _error(raised: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, int]:
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


async def test_create_describe_list_delete(node: Node, kvs: Any, clock: ManualClock) -> None:
    created = await call(
        kvs.create_stream,
        StreamName="camera-1",
        DeviceName="porch",
        MediaType="video/h264",
        DataRetentionInHours=24,
        Tags={"site": "home"},
    )
    arn = created["StreamARN"]
    assert arn.startswith("arn:aws:kinesisvideo:us-east-1:000000000000:stream/camera-1/")
    assert arn.rsplit("/", 1)[1] == str(clock.wall_ms())

    info = (await call(kvs.describe_stream, StreamName="camera-1"))["StreamInfo"]
    assert info["StreamARN"] == arn
    assert info["Status"] == "ACTIVE"
    assert info["DeviceName"] == "porch"
    assert info["MediaType"] == "video/h264"
    assert info["DataRetentionInHours"] == 24
    assert info["KmsKeyId"] == "arn:aws:kms:us-east-1:000000000000:alias/aws/kinesisvideo"
    assert info["Version"]
    assert (await call(kvs.describe_stream, StreamARN=arn))["StreamInfo"] == info

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.create_stream, StreamName="camera-1")
    assert _error(raised) == ("ResourceInUseException", 400)

    await call(kvs.create_stream, StreamName="camera-2")
    await call(kvs.create_stream, StreamName="door-1")
    listed = await call(kvs.list_streams)
    assert [s["StreamName"] for s in listed["StreamInfoList"]] == ["camera-1", "camera-2", "door-1"]
    prefixed = await call(
        kvs.list_streams,
        StreamNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "camera"},
    )
    assert [s["StreamName"] for s in prefixed["StreamInfoList"]] == ["camera-1", "camera-2"]
    page = await call(kvs.list_streams, MaxResults=2)
    assert len(page["StreamInfoList"]) == 2
    rest = await call(kvs.list_streams, MaxResults=2, NextToken=page["NextToken"])
    assert [s["StreamName"] for s in rest["StreamInfoList"]] == ["door-1"]
    assert "NextToken" not in rest

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.delete_stream, StreamARN=arn, CurrentVersion="stale")
    assert _error(raised) == ("VersionMismatchException", 400)
    await call(kvs.delete_stream, StreamARN=arn, CurrentVersion=info["Version"])
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.describe_stream, StreamName="camera-1")
    assert _error(raised) == ("ResourceNotFoundException", 404)
    # A new incarnation under the same name has a new ARN.
    clock.advance(ms=5)
    again = await call(kvs.create_stream, StreamName="camera-1")
    assert again["StreamARN"] != arn
    assert again["StreamARN"].endswith(f"/camera-1/{clock.wall_ms()}")


async def test_updates_change_the_version(kvs: Any) -> None:
    await call(kvs.create_stream, StreamName="cam", DataRetentionInHours=1)
    version = (await call(kvs.describe_stream, StreamName="cam"))["StreamInfo"]["Version"]
    await call(kvs.update_stream, StreamName="cam", CurrentVersion=version, DeviceName="garage")
    info = (await call(kvs.describe_stream, StreamName="cam"))["StreamInfo"]
    assert info["DeviceName"] == "garage"
    assert info["Version"] != version
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.update_stream, StreamName="cam", CurrentVersion=version, MediaType="x/y")
    assert _error(raised) == ("VersionMismatchException", 400)

    await call(
        kvs.update_data_retention,
        StreamName="cam",
        CurrentVersion=info["Version"],
        Operation="INCREASE_DATA_RETENTION",
        DataRetentionChangeInHours=47,
    )
    info = (await call(kvs.describe_stream, StreamName="cam"))["StreamInfo"]
    assert info["DataRetentionInHours"] == 48
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            kvs.update_data_retention,
            StreamName="cam",
            CurrentVersion=info["Version"],
            Operation="DECREASE_DATA_RETENTION",
            DataRetentionChangeInHours=49,
        )
    assert _error(raised) == ("InvalidArgumentException", 400)


async def test_tags_both_forms(kvs: Any) -> None:
    arn = (await call(kvs.create_stream, StreamName="tagged", Tags={"a": "1"}))["StreamARN"]
    await call(kvs.tag_stream, StreamName="tagged", Tags={"b": "2"})
    await call(kvs.tag_resource, ResourceARN=arn, Tags=[{"Key": "c", "Value": "3"}])
    assert (await call(kvs.list_tags_for_stream, StreamARN=arn))["Tags"] == {
        "a": "1",
        "b": "2",
        "c": "3",
    }
    await call(kvs.untag_stream, StreamName="tagged", TagKeyList=["a"])
    await call(kvs.untag_resource, ResourceARN=arn, TagKeyList=["b"])
    assert (await call(kvs.list_tags_for_resource, ResourceARN=arn))["Tags"] == {"c": "3"}
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.tag_stream, StreamName="tagged", Tags={f"k{i}": "v" for i in range(50)})
    assert _error(raised) == ("TagsPerResourceExceededLimitException", 400)


async def test_data_endpoint_and_errors(node: Node, kvs: Any) -> None:
    await call(kvs.create_stream, StreamName="ep")
    for api in ("PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST"):
        endpoint = await call(kvs.get_data_endpoint, StreamName="ep", APIName=api)
        assert endpoint["DataEndpoint"] == f"http://127.0.0.1:{node.http_port}"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.get_data_endpoint, StreamName="nope", APIName="GET_MEDIA")
    assert _error(raised) == ("ResourceNotFoundException", 404)
    # The model's constraints, checked by the node even when the client does not check them.
    raw = boto3.client(
        "kinesisvideo",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            parameter_validation=False, retries={"total_max_attempts": 1}
        ),
    )
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(raw.create_stream, StreamName="bad name!")
    code, status = _error(raised)
    assert (code, status) == ("ValidationException", 400)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(raw.describe_stream)
    assert _error(raised) == ("InvalidArgumentException", 400)
    # The Kinesis Data Streams API on the same port is untouched.
    kinesis = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    assert (await call(kinesis.list_streams))["StreamNames"] == []


async def test_native_grpc_control_plane(node: Node, kvs: Any) -> None:
    """The same control plane on the gRPC door (VideoStreamsService); a stream made there is
    the one boto3 sees."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = video_pb2_grpc.VideoStreamsServiceStub(channel)
        created = await stub.CreateStream(
            video_pb2.CreateStreamInput(
                stream_name="native", data_retention_in_hours=5, tags={"via": "grpc"}
            )
        )
        assert created.stream_arn.startswith("arn:aws:kinesisvideo:us-east-1:")
        described = await stub.DescribeStream(video_pb2.DescribeStreamInput(stream_name="native"))
        assert described.stream_info.status == "ACTIVE"
        assert described.stream_info.data_retention_in_hours == 5
        tags = await stub.ListTagsForStream(
            video_pb2.ListTagsForStreamInput(stream_arn=created.stream_arn)
        )
        assert dict(tags.tags) == {"via": "grpc"}
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DescribeStream(video_pb2.DescribeStreamInput(stream_name="nope"))
        error = error_from_rpc_error(raised.value)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.code.kinesis_name == "ResourceNotFoundException"
        assert error.message == ErrorCode.VIDEO_RESOURCE_NOT_FOUND.spec.default_message
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateStream(video_pb2.CreateStreamInput(stream_name="bad name!"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Signaling channels and the configurations are on this door too.
        channel_arn = (
            await stub.CreateSignalingChannel(
                video_pb2.CreateSignalingChannelInput(
                    channel_name="native-door",
                    single_master_configuration=video_pb2.SingleMasterConfiguration(
                        message_ttl_seconds=40
                    ),
                    tags=[video_pb2.Tag(key="via", value="grpc")],
                )
            )
        ).channel_arn
        endpoints = await stub.GetSignalingChannelEndpoint(
            video_pb2.GetSignalingChannelEndpointInput(channel_arn=channel_arn)
        )
        assert [e.protocol for e in endpoints.resource_endpoint_list] == ["WSS", "HTTPS"]
        await stub.UpdateNotificationConfiguration(
            video_pb2.UpdateNotificationConfigurationInput(
                stream_name="native",
                notification_configuration=video_pb2.NotificationConfiguration(
                    status="DISABLED",
                    destination_config=video_pb2.NotificationDestinationConfig(
                        uri="arn:aws:sns:us-east-1:000000000000:topic"
                    ),
                ),
            )
        )
    info = (await call(kvs.describe_stream, StreamName="native"))["StreamInfo"]
    assert info["StreamARN"] == created.stream_arn
    channel = (await call(kvs.describe_signaling_channel, ChannelName="native-door"))["ChannelInfo"]
    assert channel["ChannelARN"] == channel_arn
    assert channel["SingleMasterConfiguration"] == {"MessageTtlSeconds": 40}
    notification = await call(kvs.describe_notification_configuration, StreamName="native")
    assert notification["NotificationConfiguration"]["Status"] == "DISABLED"


# --- Edge configurations, storage tiers, mapped resources (broker/video/edge_storage.py) -------

HUB = "arn:aws:iot:us-east-1:000000000000:thing/hub-1"
CHANNEL_ARN_PREFIX = "arn:aws:kinesisvideo:us-east-1:000000000000:channel"
SECRET = "arn:aws:secretsmanager:us-east-1:000000000000:secret:camera-1"


def _edge_config(hub: str = HUB, **extra: Any) -> dict[str, Any]:
    return {
        "HubDeviceArn": hub,
        "RecorderConfig": {
            "MediaSourceConfig": {"MediaUriSecretArn": SECRET, "MediaUriType": "RTSP_URI"}
        },
        **extra,
    }


async def test_edge_configuration_lifecycle_with_no_edge_agent(
    kvs: Any, clock: ManualClock
) -> None:
    """AWS's edge-configuration API for a hub device that never connects: SYNCING, refused
    while syncing, SYNC_FAILED after the 15-minute deadline with its details, updatable
    again (same hub only), listed by hub device, then deleted."""
    arn = (await call(kvs.create_stream, StreamName="edge-1", DataRetentionInHours=24))["StreamARN"]
    await call(kvs.create_stream, StreamName="edge-0")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.describe_edge_configuration, StreamName="edge-1")
    assert _error(raised) == ("StreamEdgeConfigurationNotFoundException", 404)
    with pytest.raises(botocore.exceptions.ClientError) as raised:  # retention 0
        await call(
            kvs.start_edge_configuration_update, StreamName="edge-0", EdgeConfig=_edge_config()
        )
    assert _error(raised) == ("NoDataRetentionException", 400)
    schedule = {"ScheduleExpression": "0 0 * * * ?", "DurationInSeconds": 600}
    with pytest.raises(botocore.exceptions.ClientError) as raised:  # not a Quartz expression
        await call(
            kvs.start_edge_configuration_update,
            StreamName="edge-1",
            EdgeConfig=_edge_config(
                UploaderConfig={"ScheduleConfig": {**schedule, "ScheduleExpression": "every hour!"}}
            ),
        )
    assert _error(raised) == ("InvalidArgumentException", 400)

    config = _edge_config(
        UploaderConfig={"ScheduleConfig": schedule},
        DeletionConfig={"EdgeRetentionInHours": 24, "DeleteAfterUpload": True},
    )
    started = await call(kvs.start_edge_configuration_update, StreamARN=arn, EdgeConfig=config)
    assert started["StreamName"] == "edge-1" and started["StreamARN"] == arn
    assert started["SyncStatus"] == "SYNCING"
    assert started["EdgeConfig"] == config
    created = started["CreationTime"]
    assert created == started["LastUpdatedTime"]
    described = await call(kvs.describe_edge_configuration, StreamName="edge-1")
    assert described["SyncStatus"] == "SYNCING" and described["EdgeConfig"] == config
    assert "EdgeAgentStatus" not in described and "FailedStatusDetails" not in described
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.start_edge_configuration_update, StreamARN=arn, EdgeConfig=config)
    assert _error(raised) == ("ResourceInUseException", 400)

    clock.advance(ms=15 * 60_000)
    failed = await call(kvs.describe_edge_configuration, StreamARN=arn)
    assert failed["SyncStatus"] == "SYNC_FAILED"
    assert HUB in failed["FailedStatusDetails"]
    with pytest.raises(botocore.exceptions.ClientError) as raised:  # another hub: delete first
        await call(
            kvs.start_edge_configuration_update,
            StreamARN=arn,
            EdgeConfig=_edge_config("arn:aws:iot:us-east-1:000000000000:thing/hub-2"),
        )
    assert _error(raised) == ("InvalidArgumentException", 400)
    clock.advance(ms=1_000)
    again = await call(
        kvs.start_edge_configuration_update, StreamARN=arn, EdgeConfig=_edge_config()
    )
    assert again["SyncStatus"] == "SYNCING"
    assert again["CreationTime"] == created and again["LastUpdatedTime"] > created

    await call(kvs.create_stream, StreamName="edge-2", DataRetentionInHours=1)
    await call(kvs.start_edge_configuration_update, StreamName="edge-2", EdgeConfig=config)
    listed = await call(kvs.list_edge_agent_configurations, HubDeviceArn=HUB)
    assert [c["StreamName"] for c in listed["EdgeConfigs"]] == ["edge-1", "edge-2"]
    assert listed["EdgeConfigs"][1]["EdgeConfig"] == config
    page = await call(kvs.list_edge_agent_configurations, HubDeviceArn=HUB, MaxResults=1)
    assert [c["StreamName"] for c in page["EdgeConfigs"]] == ["edge-1"]
    rest = await call(
        kvs.list_edge_agent_configurations,
        HubDeviceArn=HUB,
        MaxResults=1,
        NextToken=page["NextToken"],
    )
    assert [c["StreamName"] for c in rest["EdgeConfigs"]] == ["edge-2"]
    assert "NextToken" not in rest
    other = await call(
        kvs.list_edge_agent_configurations,
        HubDeviceArn="arn:aws:iot:us-east-1:000000000000:thing/elsewhere",
    )
    assert other["EdgeConfigs"] == []

    # DELETING lasts the stream update time, 0 on this node (tests/meta pins the state).
    await call(kvs.delete_edge_configuration, StreamName="edge-2")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.describe_edge_configuration, StreamName="edge-2")
    assert _error(raised) == ("StreamEdgeConfigurationNotFoundException", 404)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.delete_edge_configuration, StreamName="edge-2")
    assert _error(raised) == ("StreamEdgeConfigurationNotFoundException", 404)
    listed = await call(kvs.list_edge_agent_configurations, HubDeviceArn=HUB)
    assert [c["StreamName"] for c in listed["EdgeConfigs"]] == ["edge-1"]
    # Deleted, a stream takes another hub device's configuration.
    moved = await call(
        kvs.start_edge_configuration_update,
        StreamName="edge-2",
        EdgeConfig=_edge_config("arn:aws:iot:us-east-1:000000000000:thing/hub-2"),
    )
    assert moved["SyncStatus"] == "SYNCING" and moved["CreationTime"] > created


async def test_storage_tier_and_mapped_resources(kvs: Any) -> None:
    await call(kvs.create_stream, StreamName="tier-hot", DataRetentionInHours=1)
    warm_arn = (
        await call(
            kvs.create_stream,
            StreamName="tier-warm",
            DataRetentionInHours=720,
            StreamStorageConfiguration={"DefaultStorageTier": "WARM"},
        )
    )["StreamARN"]
    hot = await call(kvs.describe_stream_storage_configuration, StreamName="tier-hot")
    assert hot["StreamStorageConfiguration"] == {"DefaultStorageTier": "HOT"}
    assert hot["StreamName"] == "tier-hot"
    warm = await call(kvs.describe_stream_storage_configuration, StreamARN=warm_arn)
    assert warm["StreamStorageConfiguration"] == {"DefaultStorageTier": "WARM"}

    version = (await call(kvs.describe_stream, StreamName="tier-hot"))["StreamInfo"]["Version"]
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            kvs.update_stream_storage_configuration,
            StreamName="tier-hot",
            CurrentVersion="stale",
            StreamStorageConfiguration={"DefaultStorageTier": "WARM"},
        )
    assert _error(raised) == ("VersionMismatchException", 400)
    await call(
        kvs.update_stream_storage_configuration,
        StreamName="tier-hot",
        CurrentVersion=version,
        StreamStorageConfiguration={"DefaultStorageTier": "WARM"},
    )
    info = (await call(kvs.describe_stream, StreamName="tier-hot"))["StreamInfo"]
    assert info["Version"] != version  # (UPDATING for the update time: 0 on this node)
    tier = await call(kvs.describe_stream_storage_configuration, StreamName="tier-hot")
    assert tier["StreamStorageConfiguration"] == {"DefaultStorageTier": "WARM"}

    # The stream's mapped resource: the signaling channel whose media it stores.
    assert (await call(kvs.describe_mapped_resource_configuration, StreamARN=warm_arn))[
        "MappedResourceConfigurationList"
    ] == []
    channel_arn = (await call(kvs.create_signaling_channel, ChannelName="tier-channel"))[
        "ChannelARN"
    ]
    await call(
        kvs.update_media_storage_configuration,
        ChannelARN=channel_arn,
        MediaStorageConfiguration={"Status": "ENABLED", "StreamARN": warm_arn},
    )
    mapped = await call(
        kvs.describe_mapped_resource_configuration, StreamName="tier-warm", MaxResults=1
    )
    assert mapped["MappedResourceConfigurationList"] == [
        {"Type": "SIGNALING_CHANNEL", "ARN": channel_arn}
    ]
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(kvs.describe_mapped_resource_configuration, StreamName="tier-none")
    assert _error(raised) == ("ResourceNotFoundException", 404)


async def test_edge_and_storage_on_the_grpc_door(node: Node, kvs: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = video_pb2_grpc.VideoStreamsServiceStub(channel)
        await stub.CreateStream(
            video_pb2.CreateStreamInput(
                stream_name="edge-grpc",
                data_retention_in_hours=2,
                stream_storage_configuration=video_pb2.StreamStorageConfiguration(
                    default_storage_tier="WARM"
                ),
            )
        )
        tier = await stub.DescribeStreamStorageConfiguration(
            video_pb2.DescribeStreamStorageConfigurationInput(stream_name="edge-grpc")
        )
        assert tier.stream_storage_configuration.default_storage_tier == "WARM"
        started = await stub.StartEdgeConfigurationUpdate(
            video_pb2.StartEdgeConfigurationUpdateInput(
                stream_name="edge-grpc",
                edge_config=video_pb2.EdgeConfig(
                    hub_device_arn=HUB,
                    recorder_config=video_pb2.RecorderConfig(
                        media_source_config=video_pb2.MediaSourceConfig(
                            media_uri_secret_arn=SECRET, media_uri_type="FILE_URI"
                        )
                    ),
                ),
            )
        )
        assert started.sync_status == "SYNCING"
        assert started.edge_config.recorder_config.media_source_config.media_uri_type == (
            "FILE_URI"
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DescribeEdgeConfiguration(
                video_pb2.DescribeEdgeConfigurationInput(stream_name="edge-none")
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        # A stream of this test's own with no edge configuration (not another test's).
        await stub.CreateStream(video_pb2.CreateStreamInput(stream_name="edge-grpc-bare"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DeleteEdgeConfiguration(
                video_pb2.DeleteEdgeConfigurationInput(stream_name="edge-grpc-bare")
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_from_rpc_error(raised.value).code.kinesis_name == (
            "StreamEdgeConfigurationNotFoundException"
        )
    # The same configuration through boto3.
    described = await call(kvs.describe_edge_configuration, StreamName="edge-grpc")
    assert described["EdgeConfig"]["HubDeviceArn"] == HUB


async def test_the_webrtc_storage_api_is_refused_not_faked(node: Node) -> None:
    """JoinStorageSession(AsViewer) need WebRTC ingestion's media server, which Shoal does not
    run (GetSignalingChannelEndpoint refuses WEBRTC too): a call gets an error naming the
    operation, never a 200 the client would take for a joined session."""
    storage = video_client(node, "kinesis-video-webrtc-storage")
    channel = "arn:aws:kinesisvideo:us-east-1:000000000000:channel/webrtc/1"
    try:
        for method, extra in (
            (storage.join_storage_session, {}),
            (storage.join_storage_session_as_viewer, {"clientId": "viewer"}),
        ):
            with pytest.raises(botocore.exceptions.ClientError) as raised:
                await call(method, channelArn=channel, **extra)
            assert _error(raised) == ("UnknownOperationException", 400)
            assert "JoinStorageSession" in raised.value.response["Error"]["Message"]
    finally:
        storage.close()


# --- Every request shape of the four models (tests/required_members.py) -----------------------
# Every operation Shoal serves of botocore's four Kinesis Video models (kinesisvideo,
# kinesis-video-media, kinesis-video-archived-media, kinesis-video-signaling), with nothing,
# with only its required members and with each required member missing, through boto3 (its own
# validation off), and the control plane's through gRPC too (the other three are HTTP-only
# APIs): a missing member is AWS's ValidationException naming it, never a 500/INTERNAL. The
# requests name a stream and a signaling channel that exist, so "required only" reaches the
# service's own checks. Every operation of the four models is served.

REQUIRED_STREAM = "required-video"
REQUIRED_CHANNEL = "required-channel"
SERVED = {  # the control plane last: its sweep deletes the stream and the channel
    "kinesis-video-media": MEDIA_OPERATIONS,
    "kinesis-video-archived-media": ARCHIVED_MEDIA_OPERATIONS,
    "kinesis-video-signaling": SIGNALING_OPERATIONS,
    "kinesisvideo": VideoControl.OPERATIONS,
}


def _unvalidated_client(node: Node, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            parameter_validation=False,
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


NAMING = ("StreamName", "StreamARN", "ChannelName", "ChannelARN")


async def _required_samples(node: Node, door: str) -> dict[str, Any]:
    """A stream and a signaling channel of the door's own (each sweep deletes them last)."""
    stream_name = f"{REQUIRED_STREAM}-{door}"
    channel_name = f"{REQUIRED_CHANNEL}-{door}"
    kvs = _unvalidated_client(node, "kinesisvideo")
    try:
        stream_arn = (
            await call(kvs.create_stream, StreamName=stream_name, DataRetentionInHours=1)
        )["StreamARN"]
        created = await call(kvs.create_signaling_channel, ChannelName=channel_name)
        stream = (await call(kvs.describe_stream, StreamARN=stream_arn))["StreamInfo"]
    finally:
        kvs.close()
    return {
        "StreamName": stream_name,
        "StreamARN": stream_arn,
        "ChannelName": channel_name,
        "ChannelARN": created["ChannelARN"],
        "ResourceARN": stream_arn,
        "CurrentVersion": stream["Version"],
        "DataRetentionChangeInHours": 1,
        "Operation": "INCREASE_DATA_RETENTION",
        "APIName": "GET_MEDIA",
        "TagKeyList": ["missing"],
        "StartTimestamp": datetime(2020, 1, 1, tzinfo=UTC),
        "EndTimestamp": datetime(2020, 1, 1, 0, 1, tzinfo=UTC),
        "Fragments": ["91343852333181432392682062607743920146264772717"],
        "SenderClientId": "viewer",
        "MessagePayload": "e30=",
        "HubDeviceArn": HUB,
        "MediaUriSecretArn": SECRET,
        "StreamStorageConfiguration": {"DefaultStorageTier": "HOT"},
    }


async def test_every_operation_of_the_models_is_served() -> None:
    for model, served in SERVED.items():
        assert served == set(service_model(model).operation_names), model


async def test_every_request_shape_through_boto3_never_answers_500(node: Node) -> None:
    values = await _required_samples(node, "http")
    problems: list[str] = []
    for model, served in SERVED.items():
        client = _unvalidated_client(node, model)
        try:
            problems += await sweep(model, served, values, boto3_ask(client), NAMING)
        finally:
            client.close()
    assert not problems, "\n".join(problems)


async def test_every_request_shape_through_grpc_never_answers_internal(node: Node) -> None:
    values = await _required_samples(node, "grpc")
    service = video_pb2.DESCRIPTOR.services_by_name["VideoStreamsService"]
    served = grpc_operations(service)
    assert served == VideoControl.OPERATIONS
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        problems = await sweep("kinesisvideo", served, values, grpc_ask(channel, service), NAMING)
        malformed = await malformed_request_answer(channel, service, "DescribeStream")
    assert not problems, "\n".join(problems)
    assert malformed == (grpc.StatusCode.INVALID_ARGUMENT, "SerializationException")


async def test_every_member_of_a_wrong_type_gets_a_client_error(node: Node) -> None:
    """The control plane's REST-JSON bodies with each member (and nested member) of another
    JSON type, or not a JSON object: a 4xx, never a 5xx."""
    from broker.gateway import rest_json
    from tests.required_members import wrong_type_bodies, wrong_type_problems

    paths = {operation: path for path, operation in rest_json.routes("kinesisvideo").items()}
    samples = {"StreamName": "wrong-types", "ChannelARN": f"{CHANNEL_ARN_PREFIX}/wrong/1"}
    bodies = wrong_type_bodies("kinesisvideo", samples)
    assert len(bodies) > 100  # the scope is real
    requests = [
        (f"{operation} ({label})", paths[operation], {"Content-Type": "application/json"}, body)
        for operation, label, body in bodies
    ]
    problems = await wrong_type_problems(f"http://127.0.0.1:{node.http_port}", requests)
    assert not problems, "\n".join(problems)
