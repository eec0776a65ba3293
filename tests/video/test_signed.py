"""SigV4 on the Kinesis Video APIs (service name `kinesisvideo`) when the node has access
keys: boto3's signed calls and `shoal video put`'s UNSIGNED-PAYLOAD PutMedia are accepted; a
wrong key or an unsigned PutMedia is refused before any byte is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from botocore.credentials import Credentials

from broker.client.video_producer import PutMediaRefused, PutMediaTarget, put_media
from broker.clock import ManualClock, SystemClock
from broker.node import Node
from broker.video.acks import AckEventType
from tests.conftest import node_config, running_node
from tests.video.media import h264_mkv
from tests.video.test_control_plane import call

pytestmark = pytest.mark.integration


@pytest.fixture
async def signed_node(tmp_path: Path) -> AsyncIterator[Node]:
    # SigV4 checks the request date against the node's wall clock: a real one here.
    clock = ManualClock(wall_ms=SystemClock().wall_ms())
    config = node_config(tmp_path / "node", settings={"aws_credentials": ("AKID:SECRET",)})
    async with running_node(config, clock) as node:
        yield node


def _client(node: Node, secret: str) -> Any:
    return boto3.client(
        "kinesisvideo",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="AKID",
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_signed_requests_only(signed_node: Node) -> None:
    await call(
        _client(signed_node, "SECRET").create_stream, StreamName="cam", DataRetentionInHours=1
    )
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(_client(signed_node, "WRONG").describe_stream, StreamName="cam")
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"

    endpoint = f"http://127.0.0.1:{signed_node.http_port}"
    video = h264_mkv(frames=25)
    unsigned = PutMediaTarget(endpoint=endpoint, stream_name="cam")
    with pytest.raises(PutMediaRefused) as refused:
        [ack async for ack in put_media(unsigned, _body(video))]
    assert refused.value.error_type == "MissingAuthenticationTokenException"
    signed = PutMediaTarget(
        endpoint=endpoint, stream_name="cam", credentials=Credentials("AKID", "SECRET")
    )
    acks = [ack async for ack in put_media(signed, _body(video))]
    assert [a.event_type for a in acks if a.event_type is AckEventType.PERSISTED] == [
        AckEventType.PERSISTED
    ]
