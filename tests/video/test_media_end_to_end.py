"""Real media through PutMedia and back (broker/video/, broker/gateway/video_http.py), against
an in-process node: an H.264 test video made with FFmpeg's libraries (PyAV) is uploaded raw
over PutMedia and with `shoal video put`, then read back through boto3's
`kinesis-video-media` and `kinesis-video-archived-media` clients and decoded with PyAV.

Goal: what a camera sends is what a player gets: the same frames with the same timestamps,
split into the same fragments, each acknowledged PERSISTED only once appended to the log.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker import limits
from broker.caller import Caller
from broker.client.video_producer import PutMediaRefused, PutMediaTarget, put_media
from broker.clock import ManualClock
from broker.node import Node
from broker.service.in_process import LocalKinesis
from broker.video import ebml, mkv
from broker.video.acks import Ack, AckErrorId, AckEventType
from broker.video.archive import internal_name
from broker.video.media_chunks import read_tags, split_chunks
from broker.video.media_codec import fragment_as_mkv
from broker.video.mkv import MkvFragment, MkvSplitter
from tests.support import REPO
from tests.video.media import decoded_frame_times_ms, h264_mkv
from tests.video.test_control_plane import call, video_client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
def node(shared_node: Node) -> Node:
    """The module's node (tests/video/conftest.py): each test uses streams of its own."""
    return shared_node


@pytest.fixture
def clock(shared_clock: ManualClock) -> ManualClock:
    return shared_clock


PRODUCER_START_S = 1_700_000_000.5


@pytest.fixture(autouse=True)
def short_live_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """GetMedia ends its answer after this long at the live edge with nothing new."""
    monkeypatch.setattr(limits, "video_get_media_idle_ms", 300)


async def _pieces(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def _upload(node: Node, stream: str, data: bytes) -> list[Ack]:
    target = PutMediaTarget(
        endpoint=f"http://127.0.0.1:{node.http_port}",
        stream_name=stream,
        producer_start_timestamp_s=PRODUCER_START_S,
    )
    return [ack async for ack in put_media(target, _pieces(data))]


def _read_payload(response: dict[str, Any]) -> bytes:
    body = response["Payload"]
    try:
        return bytes(body.read())
    finally:
        body.close()


async def _get_media(node: Node, stream: str, selector: dict[str, Any]) -> bytes:
    kvs = video_client(node)
    endpoint = (await call(kvs.get_data_endpoint, StreamName=stream, APIName="GET_MEDIA"))[
        "DataEndpoint"
    ]
    media = video_client(node, "kinesis-video-media")
    assert media.meta.endpoint_url == endpoint
    response = await call(media.get_media, StreamName=stream, StartSelector=selector)
    assert response["ContentType"] == "video/webm"
    return await asyncio.to_thread(_read_payload, response)


async def test_put_media_then_get_media_decodes_the_same_frames(
    node: Node, clock: ManualClock
) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="camera", DataRetentionInHours=24)
    video = h264_mkv(frames=75, fps=25)
    sent_times = decoded_frame_times_ms(video)
    assert len(sent_times) == 75

    acks = await _upload(node, "camera", video)
    kinds = [ack.event_type for ack in acks if ack.event_type is not AckEventType.IDLE]
    assert kinds.count(AckEventType.BUFFERING) == 3
    assert kinds.count(AckEventType.RECEIVED) == 3
    persisted = [ack for ack in acks if ack.event_type is AckEventType.PERSISTED]
    assert [ack.timecode_ms for ack in persisted] == [0, 1000, 2000]
    numbers = [ack.fragment_number for ack in persisted]
    assert all(number is not None for number in numbers)
    assert [int(n) for n in numbers if n] == sorted(int(n) for n in numbers if n)
    # Each fragment's PERSISTED comes after its RECEIVED.
    for ack in persisted:
        received = next(
            i
            for i, a in enumerate(acks)
            if a.event_type is AckEventType.RECEIVED and a.timecode_ms == ack.timecode_ms
        )
        assert received < acks.index(ack)

    body = await _get_media(node, "camera", {"StartSelectorType": "EARLIEST"})
    chunks = split_chunks(body)
    assert len(chunks) == 3
    exposition = node.metrics.exposition()[0].decode()
    assert 'kinesis_video_put_media_incoming_fragments_total{stream="camera"} 3.0' in exposition
    assert f'kinesis_video_put_media_incoming_bytes_total{{stream="camera"}} {len(video)}.0' in (
        exposition
    )
    assert "kinesis_video_put_media_fragment_persist_latency_seconds_count 3.0" in exposition
    assert 'kinesis_video_get_media_outgoing_fragments_total{stream="camera"} 3.0' in exposition
    assert (
        'kinesis_api_requests_total{code="OK",operation="kinesisvideo:PutMedia"} 1.0' in exposition
    )
    tags = [read_tags(chunk) for chunk in chunks]
    assert [t["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for t in tags] == numbers
    assert [t["AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"] for t in tags] == [
        "1700000000.500",
        "1700000001.500",
        "1700000002.500",
    ]
    server_s = clock.wall_ms() / 1000
    assert all(float(t["AWS_KINESISVIDEO_SERVER_TIMESTAMP"]) == server_s for t in tags)
    assert [t["AWS_KINESISVIDEO_CONTINUATION_TOKEN"] for t in tags] == numbers
    assert decoded_frame_times_ms(body) == sent_times
    assert [len(decoded_frame_times_ms(chunk)) for chunk in chunks] == [25, 25, 25]

    after_first = await _get_media(
        node, "camera", {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": numbers[0]}
    )
    assert decoded_frame_times_ms(after_first) == sent_times[25:]
    continued = await _get_media(
        node, "camera", {"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": numbers[1]}
    )
    assert decoded_frame_times_ms(continued) == sent_times[50:]
    by_producer_time = await _get_media(
        node,
        "camera",
        {
            "StartSelectorType": "PRODUCER_TIMESTAMP",
            "StartTimestamp": datetime.fromtimestamp(PRODUCER_START_S + 1.2, tz=UTC),
        },
    )
    assert decoded_frame_times_ms(by_producer_time) == sent_times[25:]
    assert await _get_media(node, "camera", {"StartSelectorType": "NOW"}) == b""

    archived = video_client(node, "kinesis-video-archived-media")
    listed = await call(archived.list_fragments, StreamName="camera")
    fragments = listed["Fragments"]
    assert [f["FragmentNumber"] for f in fragments] == numbers
    assert [f["FragmentLengthInMilliseconds"] for f in fragments] == [1000, 1000, 1000]
    assert [f["ProducerTimestamp"].timestamp() for f in fragments] == [
        PRODUCER_START_S,
        PRODUCER_START_S + 1,
        PRODUCER_START_S + 2,
    ]
    assert all(f["FragmentSizeInBytes"] > 1000 for f in fragments)
    page = await call(archived.list_fragments, StreamName="camera", MaxResults=2)
    assert [f["FragmentNumber"] for f in page["Fragments"]] == numbers[:2]
    rest = await call(
        archived.list_fragments, StreamName="camera", MaxResults=2, NextToken=page["NextToken"]
    )
    assert [f["FragmentNumber"] for f in rest["Fragments"]] == numbers[2:]
    start = datetime.fromtimestamp(PRODUCER_START_S + 0.5, tz=UTC)
    ranged = await call(
        archived.list_fragments,
        StreamName="camera",
        FragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP",
            "TimestampRange": {"StartTimestamp": start, "EndTimestamp": start + timedelta(hours=1)},
        },
    )
    assert [f["FragmentNumber"] for f in ranged["Fragments"]] == numbers[1:]

    selected = await call(
        archived.get_media_for_fragment_list,
        StreamName="camera",
        Fragments=[numbers[2], numbers[0]],
    )
    payload = await asyncio.to_thread(_read_payload, selected)
    assert decoded_frame_times_ms(split_chunks(payload)[0]) == sent_times[50:]
    assert decoded_frame_times_ms(split_chunks(payload)[1]) == sent_times[:25]


async def test_put_media_errors(node: Node) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="cam", DataRetentionInHours=1)
    with pytest.raises(PutMediaRefused) as refused:
        await _upload(node, "absent", h264_mkv(frames=5))
    assert (refused.value.status, refused.value.error_type) == (404, "ResourceNotFoundException")

    acks = await _upload(node, "cam", b"\x1a\x45\xdf\xa3\x84abcd" + b"\x42" * 64)
    assert acks[-1].event_type is AckEventType.ERROR
    assert acks[-1].error_id is AckErrorId.INVALID_MKV_DATA

    video = h264_mkv(frames=50)
    acks = await _upload(node, "cam", video[: len(video) - 100])  # cut inside the last Cluster
    assert acks[-1].event_type is AckEventType.ERROR
    assert acks[-1].error_id is AckErrorId.STREAM_READ_ERROR
    assert [a.timecode_ms for a in acks if a.event_type is AckEventType.PERSISTED] == [0]

    archived = video_client(node, "kinesis-video-archived-media")
    listed = await call(archived.list_fragments, StreamName="cam")
    assert len(listed["Fragments"]) == 1  # the truncated fragment was not stored


async def test_stream_without_retention_stores_nothing(node: Node) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="live-only")
    acks = await _upload(node, "live-only", h264_mkv(frames=50))
    kinds = [a.event_type for a in acks]
    assert kinds.count(AckEventType.RECEIVED) == 2
    assert AckEventType.PERSISTED not in kinds
    archived = video_client(node, "kinesis-video-archived-media")
    with pytest.raises(Exception, match="NoDataRetentionException"):
        await call(archived.list_fragments, StreamName="live-only")


async def test_shoal_video_put_uploads_a_live_stream_from_a_pipe(node: Node) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="cli-cam", DataRetentionInHours=2)
    video = h264_mkv(frames=50, live=True)
    environment = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "video",
        "put",
        "cli-cam",
        "--http-endpoint",
        f"http://127.0.0.1:{node.http_port}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=environment,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(input=video)  # as from `ffmpeg ... -f matroska -`
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[-1] == "2 fragments received, 2 persisted"
    assert [line.split()[:2] for line in lines[:-1]] == [["PERSISTED", "0"], ["PERSISTED", "1000"]]
    body = await _get_media(node, "cli-cam", {"StartSelectorType": "EARLIEST"})
    assert decoded_frame_times_ms(body) == decoded_frame_times_ms(video)

    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "video",
        "get",
        "cli-cam",
        "--http-endpoint",
        f"http://127.0.0.1:{node.http_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=environment,
    )
    async with asyncio.timeout(60):
        out, err = await reader.communicate()
    assert reader.returncode == 0, err.decode()
    assert decoded_frame_times_ms(out) == decoded_frame_times_ms(video)


async def test_server_timestamps_select_by_arrival(node: Node, clock: ManualClock) -> None:
    """SERVER_TIMESTAMP selectors use the node's clock when each fragment started arriving
    (and the log's time index to get there)."""
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="arrivals", DataRetentionInHours=24)
    first_at = clock.wall_ms()
    await _upload(node, "arrivals", h264_mkv(frames=50))
    clock.advance(ms=60_000)
    second = h264_mkv(frames=25)
    await _upload(node, "arrivals", second)
    middle = datetime.fromtimestamp((first_at + 30_000) / 1000, tz=UTC)

    archived = video_client(node, "kinesis-video-archived-media")
    listed = await call(
        archived.list_fragments,
        StreamName="arrivals",
        FragmentSelector={
            "FragmentSelectorType": "SERVER_TIMESTAMP",
            "TimestampRange": {
                "StartTimestamp": middle,
                "EndTimestamp": middle + timedelta(minutes=1),
            },
        },
    )
    assert [f["ServerTimestamp"].timestamp() * 1000 for f in listed["Fragments"]] == [
        first_at + 60_000
    ]
    body = await _get_media(
        node, "arrivals", {"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": middle}
    )
    assert len(decoded_frame_times_ms(body)) == 25


def _block(timecode: int, payload: bytes) -> bytes:
    """A SimpleBlock of track 1 (a key frame) at `timecode` relative to its Cluster."""
    return ebml.element(
        mkv.SIMPLE_BLOCK, b"\x81" + timecode.to_bytes(2, "big", signed=True) + b"\x80" + payload
    )


async def test_a_fragment_larger_than_a_put_records_request(node: Node) -> None:
    """A 12 MiB fragment takes 13 records and two log appends; it comes back byte for byte."""
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="big", DataRetentionInHours=1)
    (fragment,) = [e for e in MkvSplitter().feed(h264_mkv(frames=25)) if isinstance(e, MkvFragment)]
    blocks = b"".join(_block(40 * i, bytes([i]) * (1 << 20)) for i in range(12))
    cluster = ebml.element(mkv.CLUSTER, ebml.uint_element(mkv.CLUSTER_TIMECODE, 0) + blocks)
    acks = await _upload(node, "big", fragment_as_mkv(fragment.header, cluster))
    persisted = [a for a in acks if a.event_type is AckEventType.PERSISTED]
    assert len(persisted) == 1
    archived = video_client(node, "kinesis-video-archived-media")
    listed = await call(archived.list_fragments, StreamName="big")
    assert [f["FragmentNumber"] for f in listed["Fragments"]] == [persisted[0].fragment_number]
    assert listed["Fragments"][0]["FragmentSizeInBytes"] > 12 << 20
    answer = await call(
        archived.get_media_for_fragment_list,
        StreamName="big",
        Fragments=[persisted[0].fragment_number],
    )
    body = await asyncio.to_thread(_read_payload, answer)
    assert cluster in body


async def test_retention_follows_the_video_stream(node: Node) -> None:
    """The internal stream keeps fragments as long as the video stream says (at least
    Kinesis' 24 hours), and follows UpdateDataRetention."""
    kvs = video_client(node)
    arn = (await call(kvs.create_stream, StreamName="kept", DataRetentionInHours=48))["StreamARN"]
    await _upload(node, "kept", h264_mkv(frames=25))
    assert node.service is not None
    assert node.video is not None
    local = LocalKinesis(node.service)
    meta = node.video.control.find(
        Caller(region="us-east-1", account_id="000000000000"), name=None, arn=arn
    )

    async def internal_retention() -> int:
        summary = await local.call("DescribeStreamSummary", {"StreamName": internal_name(meta)})
        hours: int = summary["StreamDescriptionSummary"]["RetentionPeriodHours"]
        return hours

    assert await internal_retention() == 48
    version = (await call(kvs.describe_stream, StreamARN=arn))["StreamInfo"]["Version"]
    await call(
        kvs.update_data_retention,
        StreamARN=arn,
        CurrentVersion=version,
        Operation="INCREASE_DATA_RETENTION",
        DataRetentionChangeInHours=100,
    )
    assert await internal_retention() == 148


async def test_idle_acknowledgements_while_the_producer_is_silent(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that sends nothing for a while gets IDLE (the session is alive), then its
    fragments are acknowledged as usual."""
    monkeypatch.setattr(limits, "video_ack_idle_interval_ms", 100)
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="quiet", DataRetentionInHours=1)
    (fragment,) = [e for e in MkvSplitter().feed(h264_mkv(frames=25)) if isinstance(e, MkvFragment)]

    async def slow() -> AsyncIterator[bytes]:
        yield fragment_as_mkv(fragment.header, b"")
        await asyncio.sleep(0.5)  # a camera that has not started yet
        yield fragment.cluster

    target = PutMediaTarget(endpoint=f"http://127.0.0.1:{node.http_port}", stream_name="quiet")
    kinds = [ack.event_type async for ack in put_media(target, slow())]
    assert kinds[0] is AckEventType.IDLE
    assert AckEventType.PERSISTED in kinds
