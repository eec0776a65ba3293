"""HLS playback of a video stream (broker/video/hls.py, hls_service.py, media_codec.py):
GetHLSStreamingSessionURL through boto3, then the session URL opened by FFmpeg's own HLS
player (PyAV's `hls` demuxer over HTTP), which fetches the playlists and segments from Shoal.

Goal: what a camera sent plays back from the URL with the same frames and timestamps, in both
containers; the URL stops working at its expiry.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import av
import botocore.exceptions
import pytest

from broker.client.video_producer import PutMediaTarget, put_media
from broker.clock import ManualClock, SystemClock
from broker.node import Node
from broker.video.acks import AckEventType
from tests.conftest import node_config, running_node
from tests.video.media import decoded_frame_times_ms, h264_mkv
from tests.video.test_control_plane import call, video_client
from tests.video.test_media_end_to_end import PRODUCER_START_S, _upload

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
def node(shared_node: Node) -> Node:
    """The module's node (tests/video/conftest.py): each test uses streams of its own."""
    return shared_node


@pytest.fixture
def clock(shared_clock: ManualClock) -> ManualClock:
    return shared_clock


def _play(url: str) -> list[int]:
    """Frame times (ms) as FFmpeg's HLS player decodes them from `url`."""
    times: list[int] = []
    with av.open(url, mode="r", format="hls", timeout=20) as container:
        for frame in container.decode(video=0):
            assert frame.pts is not None
            assert frame.time_base is not None
            times.append(round(frame.pts * frame.time_base * 1000))
    return times


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def _session_url(node: Node, stream: str, **request: Any) -> str:
    archived = video_client(node, "kinesis-video-archived-media")
    start = datetime.fromtimestamp(PRODUCER_START_S - 1, tz=UTC)
    answer = await call(
        archived.get_hls_streaming_session_url,
        StreamName=stream,
        PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP",
            "TimestampRange": {
                "StartTimestamp": start,
                "EndTimestamp": start + timedelta(minutes=5),
            },
        },
        **request,
    )
    url: str = answer["HLSStreamingSessionURL"]
    return url


@pytest.mark.parametrize("container", ["FRAGMENTED_MP4", "MPEG_TS"])
async def test_on_demand_hls_plays_the_frames_that_went_in(
    node: Node, clock: ManualClock, container: str
) -> None:
    kvs = video_client(node)
    name = f"hls-cam-{container.lower().replace('_', '-')}"
    await call(kvs.create_stream, StreamName=name, DataRetentionInHours=24)
    video = h264_mkv(frames=75, fps=25)
    await _upload(node, name, video)
    url = await _session_url(node, name, ContainerFormat=container, Expires=300)
    assert url.startswith(f"http://127.0.0.1:{node.http_port}/hls/v1/getHLSMasterPlaylist.m3u8?")

    status, master = await asyncio.to_thread(_fetch, url)
    assert status == 200
    assert master.startswith(b"#EXTM3U")
    played = await asyncio.to_thread(_play, url)
    sent = decoded_frame_times_ms(video)
    # The player keeps the producer's timestamps (from the first fragment's) or starts at 0
    # (MPEG-TS players shift by their own start); either way the spacing and count match.
    assert len(played) == len(sent) == 75
    assert [t - played[0] for t in played] == [t - sent[0] for t in sent]

    clock.advance(ms=301_000)
    status, body = await asyncio.to_thread(_fetch, url)
    assert status == 401
    assert b"expired" in body


async def test_hls_session_errors(node: Node) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="empty", DataRetentionInHours=1)
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        await _session_url(node, "empty")
    await call(kvs.create_stream, StreamName="no-retention")
    with pytest.raises(Exception, match="NoDataRetentionException"):
        await _session_url(node, "no-retention")
    archived = video_client(node, "kinesis-video-archived-media")
    with pytest.raises(Exception, match="InvalidArgumentException"):
        await call(
            archived.get_hls_streaming_session_url, StreamName="empty", PlaybackMode="LIVE_REPLAY"
        )
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        await call(archived.get_hls_streaming_session_url, StreamName="empty", PlaybackMode="LIVE")
    status, _ = await asyncio.to_thread(
        _fetch,
        f"http://127.0.0.1:{node.http_port}/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=forged.x",
    )
    assert status == 401


async def test_on_demand_dash_plays_the_frames_that_went_in(node: Node) -> None:
    """GetDASHStreamingSessionURL: the MPD and the fragmented-MP4 segments it lists, served by
    Shoal, play back the frames that went in."""
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="dash-cam", DataRetentionInHours=24)
    video = h264_mkv(frames=75, fps=25)
    await _upload(node, "dash-cam", video)
    archived = video_client(node, "kinesis-video-archived-media")
    start = datetime.fromtimestamp(PRODUCER_START_S - 1, tz=UTC)
    answer = await call(
        archived.get_dash_streaming_session_url,
        StreamName="dash-cam",
        PlaybackMode="ON_DEMAND",
        DASHFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP",
            "TimestampRange": {
                "StartTimestamp": start,
                "EndTimestamp": start + timedelta(minutes=5),
            },
        },
    )
    url: str = answer["DASHStreamingSessionURL"]
    assert url.startswith(f"http://127.0.0.1:{node.http_port}/dash/v1/getDASHManifest.mpd?")
    status, manifest = await asyncio.to_thread(_fetch, url)
    assert status == 200
    assert manifest.count(b"<SegmentURL") == 3
    # What a DASH player does with a static SegmentList: the init segment, then every media
    # segment in order, fetched relative to the manifest and played as one MP4 stream.
    namespace = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}
    root = ElementTree.fromstring(manifest)
    segment_list = root.find(".//mpd:SegmentList", namespace)
    assert segment_list is not None
    init = segment_list.find("mpd:Initialization", namespace)
    assert init is not None
    urls = [init.attrib["sourceURL"]] + [
        element.attrib["media"] for element in segment_list.findall("mpd:SegmentURL", namespace)
    ]
    timeline = segment_list.findall(".//mpd:S", namespace)
    assert [int(s.attrib["d"]) for s in timeline] == [1000, 1000, 1000]
    # FFmpeg's DASH demuxer sizes its buffer for a SegmentList URL from the manifest URL's
    # length (plus the Representation's id and bandwidth): no URL may be much longer.
    assert all(len(urllib.parse.urljoin(url, relative)) <= len(url) + 4 for relative in urls)
    parts = []
    for relative in urls:
        status, part = await asyncio.to_thread(_fetch, urllib.parse.urljoin(url, relative))
        assert status == 200
        parts.append(part)
    assert parts[0][4:8] == b"ftyp"
    assert all(part[4:8] == b"moof" for part in parts[1:])
    with av.open(io.BytesIO(b"".join(parts)), mode="r", format="mp4") as container:
        played = [
            round(frame.pts * frame.time_base * 1000)
            for frame in container.decode(video=0)
            if frame.pts is not None and frame.time_base is not None
        ]
    sent = decoded_frame_times_ms(video)
    assert len(played) == len(sent)
    assert [t - played[0] for t in played] == [t - sent[0] for t in sent]

    # A real DASH player: FFmpeg's DASH demuxer (Debian's ffprobe: PyAV's wheel is built
    # without libxml2, so it has the DASH muxer but no demuxer).
    played = await asyncio.to_thread(_dash_player_frame_times, url)
    assert [t - played[0] for t in played] == [t - sent[0] for t in sent]


def _dash_player_frame_times(url: str) -> list[int]:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe (Debian's ffmpeg, installed by scripts/install as root) is missing")
    result = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-f",
            "dash",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [round(float(line.split(",")[0]) * 1000) for line in result.stdout.split()]


async def test_live_hls_playlist_follows_the_stream(node: Node) -> None:
    """A LIVE session's media playlist lists the newest fragments, numbered on (media
    sequence), with no end; after more fragments arrive, the same URL shows them."""
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="live-cam", DataRetentionInHours=24)
    await _upload(node, "live-cam", h264_mkv(frames=75))
    archived = video_client(node, "kinesis-video-archived-media")
    answer = await call(
        archived.get_hls_streaming_session_url,
        StreamName="live-cam",
        PlaybackMode="LIVE",
        MaxMediaPlaylistFragmentResults=2,
    )
    url: str = answer["HLSStreamingSessionURL"]
    _, master = await asyncio.to_thread(_fetch, url)
    media_url = urllib.parse.urljoin(url, master.decode().strip().splitlines()[-1])

    def segments(playlist: bytes) -> tuple[int, list[str]]:
        lines = playlist.decode().splitlines()
        sequence = next(int(x.split(":")[1]) for x in lines if x.startswith("#EXT-X-MEDIA-SEQ"))
        return sequence, [x for x in lines if x.startswith("getMP4MediaFragment")]

    status, first = await asyncio.to_thread(_fetch, media_url)
    assert status == 200
    assert b"#EXT-X-ENDLIST" not in first
    sequence, listed = segments(first)
    assert len(listed) == 2
    await _upload(node, "live-cam", h264_mkv(frames=50))
    _, second = await asyncio.to_thread(_fetch, media_url)
    later, relisted = segments(second)
    assert later == sequence + 2  # two fragments more: the window slid by two
    assert len(relisted) == 2
    assert not set(relisted) & set(listed)
    for segment in relisted:
        status, data = await asyncio.to_thread(_fetch, urllib.parse.urljoin(media_url, segment))
        assert status == 200
        assert data[4:8] == b"moof"


async def _upload_at(node: Node, stream: str, data: bytes, producer_start_s: float) -> None:
    target = PutMediaTarget(
        endpoint=f"http://127.0.0.1:{node.http_port}",
        stream_name=stream,
        producer_start_timestamp_s=producer_start_s,
    )
    acks = [ack async for ack in put_media(target, _one_piece(data))]
    assert sum(ack.event_type is AckEventType.PERSISTED for ack in acks) == 3


async def _one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_live_replay_plays_from_the_start_at_real_speed(
    node: Node, clock: ManualClock
) -> None:
    """LIVE_REPLAY: from StartTimestamp, one fragment more each time the session's clock
    covers the media before it, on into fragments ingested after the session opened; with an
    EndTimestamp the playlist ends after its last fragment."""
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="replay", DataRetentionInHours=24)
    await _upload_at(node, "replay", h264_mkv(frames=75), PRODUCER_START_S)  # 3 x 1 s
    archived = video_client(node, "kinesis-video-archived-media")
    start = datetime.fromtimestamp(PRODUCER_START_S - 1, tz=UTC)

    async def media_playlist(**selector: Any) -> str:
        answer = await call(
            archived.get_hls_streaming_session_url,
            StreamName="replay",
            PlaybackMode="LIVE_REPLAY",
            HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", **selector},
        )
        url: str = answer["HLSStreamingSessionURL"]
        _, master = await asyncio.to_thread(_fetch, url)
        return urllib.parse.urljoin(url, master.decode().strip().splitlines()[-1])

    async def listed(url: str) -> tuple[list[str], bool]:
        status, playlist = await asyncio.to_thread(_fetch, url)
        assert status == 200
        lines = playlist.decode().splitlines()
        return [x for x in lines if x.startswith("getMP4MediaFragment")], "#EXT-X-ENDLIST" in lines

    open_ended = await media_playlist(TimestampRange={"StartTimestamp": start})
    bounded = await media_playlist(
        TimestampRange={"StartTimestamp": start, "EndTimestamp": start + timedelta(seconds=2.5)}
    )
    assert [len((await listed(url))[0]) for url in (open_ended, bounded)] == [1, 1]
    clock.advance(ms=1000)
    assert (await listed(open_ended))[0].__len__() == 2
    clock.advance(ms=1000)
    segments, ended = await listed(open_ended)
    assert (len(segments), ended) == (3, False)
    segments, ended = await listed(bounded)  # its third fragment starts after EndTimestamp
    assert (len(segments), ended) == (2, True)
    # Fragments ingested after the session opened join when its clock reaches them.
    await _upload_at(node, "replay", h264_mkv(frames=75), PRODUCER_START_S + 3)
    assert len((await listed(open_ended))[0]) == 3
    clock.advance(ms=1000)
    segments, ended = await listed(open_ended)
    assert (len(segments), ended) == (4, False)
    for segment in segments:
        status, data = await asyncio.to_thread(_fetch, urllib.parse.urljoin(open_ended, segment))
        assert status == 200 and data[4:8] == b"moof"

    with pytest.raises(botocore.exceptions.ClientError) as raised:  # StartTimestamp needed
        await call(
            archived.get_hls_streaming_session_url,
            StreamName="replay",
            PlaybackMode="LIVE_REPLAY",
        )
    assert raised.value.response["Error"]["Code"] == "InvalidArgumentException"


async def test_live_dash_manifest_is_dynamic_and_follows_the_stream(
    node: Node, clock: ManualClock
) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="live-dash", DataRetentionInHours=24)
    await _upload_at(node, "live-dash", h264_mkv(frames=75), PRODUCER_START_S)
    archived = video_client(node, "kinesis-video-archived-media")
    answer = await call(
        archived.get_dash_streaming_session_url,
        StreamName="live-dash",
        PlaybackMode="LIVE",
        MaxManifestFragmentResults=2,
    )
    url: str = answer["DASHStreamingSessionURL"]
    namespace = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}

    async def manifest() -> tuple[ElementTree.Element, list[tuple[int, int]], list[str]]:
        status, body = await asyncio.to_thread(_fetch, url)
        assert status == 200
        root = ElementTree.fromstring(body)
        timeline = [
            (int(s.attrib["t"]), int(s.attrib["d"])) for s in root.iterfind(".//mpd:S", namespace)
        ]
        media = [s.attrib["media"] for s in root.iterfind(".//mpd:SegmentURL", namespace)]
        return root, timeline, media

    root, timeline, media = await manifest()
    assert root.attrib["type"] == "dynamic"
    assert "mediaPresentationDuration" not in root.attrib
    assert root.attrib["minimumUpdatePeriod"] == "PT1S"
    # The live edge at the session's start is the end of the newest fragment, now.
    newest_end = timeline[-1][0] + timeline[-1][1]
    available_from = datetime.fromisoformat(root.attrib["availabilityStartTime"])
    assert round(available_from.timestamp() * 1000) == clock.wall_ms() - newest_end
    assert len(timeline) == len(media) == 2
    assert timeline[1][0] == timeline[0][0] + timeline[0][1]  # back to back

    clock.advance(ms=3000)  # the camera goes on: its next three seconds
    await _upload_at(node, "live-dash", h264_mkv(frames=75, first_frame=75), PRODUCER_START_S)
    root, later, later_media = await manifest()
    assert root.attrib["availabilityStartTime"] == available_from.isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    assert later == [(4000, 1000), (5000, 1000)]
    assert not set(later_media) & set(media)
    for relative in later_media:
        status, data = await asyncio.to_thread(_fetch, urllib.parse.urljoin(url, relative))
        assert status == 200 and data[4:8] == b"moof"


async def test_live_dash_plays_in_ffmpegs_dash_player(tmp_path: Path) -> None:
    """FFmpeg's DASH demuxer (Debian's ffprobe) follows the dynamic MPD: it picks segments by
    the wall clock against availabilityStartTime, so the node's clock is the real one here."""
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe (Debian's ffmpeg, installed by scripts/install as root) is missing")
    clock = ManualClock(wall_ms=SystemClock().wall_ms())
    async with running_node(node_config(tmp_path / "node"), clock) as node:
        kvs = video_client(node)
        await call(kvs.create_stream, StreamName="live-dash", DataRetentionInHours=24)
        await _upload_at(node, "live-dash", h264_mkv(frames=75), PRODUCER_START_S)
        archived = video_client(node, "kinesis-video-archived-media")
        url = (
            await call(
                archived.get_dash_streaming_session_url,
                StreamName="live-dash",
                PlaybackMode="LIVE",
            )
        )["DASHStreamingSessionURL"]
        result = await asyncio.to_thread(
            subprocess.run,
            [
                "ffprobe",
                "-v",
                "error",
                "-f",
                "dash",
                "-select_streams",
                "v:0",
                "-read_intervals",
                "%+#30",
                "-show_entries",
                "frame=pts_time",
                "-of",
                "csv=p=0",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 30  # frames of more than one live segment
