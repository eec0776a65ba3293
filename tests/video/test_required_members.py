"""No Kinesis Video request shape answers 500: every operation Shoal serves of botocore's four
Kinesis Video models (kinesisvideo, kinesis-video-media, kinesis-video-archived-media,
kinesis-video-signaling), with nothing, with only its required members and with each required
member missing, through boto3 (HTTP, the client's own validation off), and the control plane's
through gRPC too (the other three are HTTP-only APIs). A missing member is AWS's
ValidationException naming it (`tests/required_members.py`).

The requests name a stream and a signaling channel that exist, so "required only" reaches the
service's own checks. The operations of the models Shoal does not serve (edge agents, stream
storage, mapped resources) answer UnknownOperationException by design and are listed here, so
serving one adds it to the sweep. One node for the module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.config
import grpc
import pytest

from broker.api.video.v1 import video_pb2
from broker.clock import ManualClock
from broker.gateway.validation import service_model
from broker.node import Node
from broker.video.channels import SIGNALING_OPERATIONS
from broker.video.control import VideoControl
from broker.video.service import ARCHIVED_MEDIA_OPERATIONS, MEDIA_OPERATIONS
from tests.compat.conftest import call
from tests.required_members import boto3_ask, grpc_ask, grpc_operations, sweep

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REGION = "us-east-1"
STREAM = "required-video"
CHANNEL = "required-channel"
SERVED = {  # the control plane last: its sweep deletes the stream and the channel
    "kinesis-video-media": MEDIA_OPERATIONS,
    "kinesis-video-archived-media": ARCHIVED_MEDIA_OPERATIONS,
    "kinesis-video-signaling": SIGNALING_OPERATIONS,
    "kinesisvideo": VideoControl.OPERATIONS,
}
NOT_SERVED = {
    "DeleteEdgeConfiguration",
    "DescribeEdgeConfiguration",
    "DescribeMappedResourceConfiguration",
    "DescribeStreamStorageConfiguration",
    "ListEdgeAgentConfigurations",
    "StartEdgeConfigurationUpdate",
    "UpdateStreamStorageConfiguration",
}


@pytest.fixture
def node(shared_node: Node) -> Node:
    return shared_node


@pytest.fixture
def clock(shared_clock: ManualClock) -> ManualClock:
    return shared_clock


def _client(node: Node, service: str) -> Any:
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


async def _samples(node: Node, door: str) -> dict[str, Any]:
    """A stream and a signaling channel of the door's own (each sweep deletes them last)."""
    stream_name = f"{STREAM}-{door}"
    channel_name = f"{CHANNEL}-{door}"
    kvs = _client(node, "kinesisvideo")
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
    }


async def test_the_unserved_operations_are_the_known_ones() -> None:
    modelled = set(service_model("kinesisvideo").operation_names)
    assert modelled - VideoControl.OPERATIONS == NOT_SERVED
    for model, served in SERVED.items():
        assert served <= set(service_model(model).operation_names), model


async def test_boto3_never_answers_500(node: Node) -> None:
    values = await _samples(node, "http")
    problems: list[str] = []
    for model, served in SERVED.items():
        client = _client(node, model)
        try:
            problems += await sweep(model, served, values, boto3_ask(client), NAMING)
        finally:
            client.close()
    assert not problems, "\n".join(problems)


async def test_grpc_never_answers_internal(node: Node) -> None:
    values = await _samples(node, "grpc")
    service = video_pb2.DESCRIPTOR.services_by_name["VideoStreamsService"]
    served = grpc_operations(service)
    assert served == VideoControl.OPERATIONS
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        problems = await sweep("kinesisvideo", served, values, grpc_ask(channel, service), NAMING)
    assert not problems, "\n".join(problems)
