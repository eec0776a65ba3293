"""Continuous image generation (UpdateImageGenerationConfiguration) delivering to S3: moto's
S3 server on loopback, reached through boto3 with AWS_ENDPOINT_URL_S3 as any AWS SDK user
would (broker/video/image_delivery.py).

Goal: once a stream's configuration is ENABLED, each new fragment's frames at the sampling
interval arrive in the bucket as images of the configured format and size, under keys fixed
by the sampling time (delivered again, they overwrite, never duplicate).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from broker.clock import ManualClock
from broker.node import Node
from broker.video.image_delivery import image_key, sampling_times
from tests.conftest import node_config, running_node
from tests.s3_server import S3Server
from tests.video.media import h264_mkv
from tests.video.test_control_plane import call, video_client
from tests.video.test_media_end_to_end import PRODUCER_START_S, _upload

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


@pytest.fixture
def s3_environment(aws_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The node's boto3 finds moto's server as any SDK user's would: AWS_ENDPOINT_URL_S3."""
    for name, value in aws_server.environment().items():
        monkeypatch.setenv(name, value)
    return aws_server


@pytest.fixture
async def s3_node(
    s3_environment: S3Server, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Node]:
    async with running_node(node_config(tmp_path / "node"), clock) as node:
        yield node


def test_sampling_times_and_keys() -> None:
    assert sampling_times(1_000_250, 1000, 500) == [1_000_500, 1_001_000]
    assert sampling_times(1_000_000, 1000, 500) == [1_000_000, 1_000_500]
    assert sampling_times(1_000_100, 300, 500) == []
    assert image_key("cams/", "porch", 1_700_000_000_500, "JPEG") == (
        "cams/porch/2023/11/14/22/1700000000500.jpg"
    )
    assert image_key("", "porch", 0, "PNG") == "porch/1970/01/01/00/0.png"


async def test_enabled_configuration_delivers_images_to_s3(
    s3_node: Node, s3_environment: S3Server
) -> None:
    s3_environment.create_bucket("frames")
    kvs = video_client(s3_node)
    await call(kvs.create_stream, StreamName="porch", DataRetentionInHours=24)
    await call(
        kvs.update_image_generation_configuration,
        StreamName="porch",
        ImageGenerationConfiguration={
            "Status": "ENABLED",
            "ImageSelectorType": "PRODUCER_TIMESTAMP",
            "DestinationConfig": {"Uri": "s3://frames/cams", "DestinationRegion": "us-east-1"},
            "SamplingInterval": 500,
            "Format": "JPEG",
            "FormatConfig": {"JPEGQuality": "70"},
            "WidthPixels": 80,
        },
    )
    await _upload(s3_node, "porch", h264_mkv(frames=75, fps=25))  # 3 fragments of 1 s
    start_ms = round(PRODUCER_START_S * 1000)
    expected = {
        image_key("cams", "porch", start_ms + offset, "JPEG") for offset in range(0, 3000, 500)
    }
    objects: dict[str, bytes] = {}
    async with asyncio.timeout(DEADLINE_S):
        while set(objects) != expected:
            objects = await asyncio.to_thread(s3_environment.objects, "frames", "cams/")
            assert set(objects) <= expected, sorted(objects)
            await asyncio.sleep(0.2)
    for body in objects.values():
        with av.open(io.BytesIO(body), mode="r", format="image2pipe") as container:
            frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (80, 60)  # the source's 4:3 kept
