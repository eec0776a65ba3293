"""GetClip and GetImages through boto3's `kinesis-video-archived-media` client
(broker/video/clips.py): the clip decodes (FFmpeg) to the frames of the range, and the images
are real JPEG/PNG of the requested size at the sampling interval, NO_MEDIA outside the
fragments."""

from __future__ import annotations

import asyncio
import base64
import io
from datetime import UTC, datetime, timedelta

import av
import pytest

from broker.node import Node
from tests.video.media import decoded_frame_times_ms, h264_mkv
from tests.video.test_control_plane import call, video_client
from tests.video.test_media_end_to_end import PRODUCER_START_S, _read_payload, _upload

pytestmark = pytest.mark.integration

START = datetime.fromtimestamp(PRODUCER_START_S, tz=UTC)


def _mp4_frame_count(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


async def test_get_clip_and_images(node: Node) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="clip-cam", DataRetentionInHours=24)
    video = h264_mkv(frames=75, fps=25, width=320, height=240)
    assert len(decoded_frame_times_ms(video)) == 75
    await _upload(node, "clip-cam", video)
    archived = video_client(node, "kinesis-video-archived-media")

    clip = await call(
        archived.get_clip,
        StreamName="clip-cam",
        ClipFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP",
            "TimestampRange": {
                "StartTimestamp": START + timedelta(milliseconds=500),
                "EndTimestamp": START + timedelta(seconds=10),
            },
        },
    )
    assert clip["ContentType"] == "video/mp4"
    data = await asyncio.to_thread(_read_payload, clip)
    assert data[4:8] == b"ftyp"
    assert _mp4_frame_count(data) == 50  # the fragments starting at 1 s and 2 s

    images = await call(
        archived.get_images,
        StreamName="clip-cam",
        ImageSelectorType="PRODUCER_TIMESTAMP",
        StartTimestamp=START,
        EndTimestamp=START + timedelta(seconds=4),
        SamplingInterval=1000,
        Format="JPEG",
        FormatConfig={"JPEGQuality": "90"},
        WidthPixels=160,
        MaxResults=3,
    )
    first_page = images["Images"]
    assert [i["TimeStamp"] for i in first_page] == [START + timedelta(seconds=s) for s in (0, 1, 2)]
    for image in first_page:
        content = base64.b64decode(image["ImageContent"])
        assert content[:2] == b"\xff\xd8"  # a JPEG
        with av.open(io.BytesIO(content), mode="r", format="image2pipe") as picture:
            frame = next(picture.decode(video=0))
            assert (frame.width, frame.height) == (160, 120)
    rest = await call(
        archived.get_images,
        StreamName="clip-cam",
        ImageSelectorType="PRODUCER_TIMESTAMP",
        StartTimestamp=START,
        EndTimestamp=START + timedelta(seconds=4),
        SamplingInterval=1000,
        Format="PNG",
        MaxResults=3,
        NextToken=images["NextToken"],
    )
    assert [i.get("Error") for i in rest["Images"]] == ["NO_MEDIA", "NO_MEDIA"]  # 3 s and 4 s
    assert "NextToken" not in rest
    png = await call(
        archived.get_images,
        StreamName="clip-cam",
        ImageSelectorType="PRODUCER_TIMESTAMP",
        StartTimestamp=START + timedelta(milliseconds=1500),
        EndTimestamp=START + timedelta(milliseconds=1500),
        SamplingInterval=1000,
        Format="PNG",
    )
    assert base64.b64decode(png["Images"][0]["ImageContent"])[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(Exception, match="ResourceNotFoundException"):
        await call(
            archived.get_clip,
            StreamName="clip-cam",
            ClipFragmentSelector={
                "FragmentSelectorType": "SERVER_TIMESTAMP",
                "TimestampRange": {
                    "StartTimestamp": START - timedelta(days=1),
                    "EndTimestamp": START - timedelta(hours=23),
                },
            },
        )
    with pytest.raises(Exception, match="InvalidArgumentException"):
        await call(
            archived.get_images,
            StreamName="clip-cam",
            ImageSelectorType="PRODUCER_TIMESTAMP",
            StartTimestamp=START,
            EndTimestamp=START + timedelta(minutes=10),
            SamplingInterval=1000,
            Format="PNG",
        )
