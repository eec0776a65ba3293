"""The console's Kinesis Video pages against an in-process node: the streams list, a stream's
fragments (ListFragments), and an HLS session URL (GetHLSStreamingSessionURL) that serves a
playlist."""

from __future__ import annotations

import asyncio
import html
import re
import urllib.request
from collections.abc import AsyncIterator

import httpx
import pytest

from broker.node import Node
from tests.video.media import h264_mkv
from tests.video.test_control_plane import call, video_client
from tests.video.test_media_end_to_end import _upload

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@pytest.fixture
async def web(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{node.http_port}", timeout=30
    ) as client:
        yield client


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        return bytes(response.read())


async def test_video_streams_fragments_and_an_hls_url(node: Node, web: httpx.AsyncClient) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="door-cam", DataRetentionInHours=24)
    await call(kvs.create_stream, StreamName="no-archive")
    await _upload(node, "door-cam", h264_mkv(frames=50, fps=25))
    kvs.close()

    listing = await web.get("/console/video")
    assert listing.status_code == 200
    assert "door-cam" in listing.text and "no-archive" in listing.text
    assert "__shoal." not in listing.text  # the fragments' internal streams stay hidden

    page = await web.get("/console/video/door-cam")
    assert page.status_code == 200
    fragments = re.findall(r'<th scope="row"><code>([0-9]+)</code></th>', page.text)
    assert fragments, "no fragment listed"
    empty = await web.get("/console/video/no-archive")
    assert "keeps no data" in empty.text

    token = CSRF.search(page.text)
    assert token is not None
    start = re.search(r'name="start" value="([^"]+)"', page.text)
    end = re.search(r'name="end" value="([^"]+)"', page.text)
    assert start is not None and end is not None
    answer = await web.post(
        "/console/video/door-cam/hls",
        data={
            "csrf": token.group(1),
            "start": html.unescape(start.group(1)),
            "end": html.unescape(end.group(1)),
        },
    )
    assert answer.status_code == 200, answer.text
    found = re.search(r'id="hls-url" href="([^"]+)"', answer.text)
    assert found is not None
    playlist = await asyncio.to_thread(_fetch, html.unescape(found.group(1)))
    assert playlist.startswith(b"#EXTM3U")

    missing = await web.get("/console/video/nowhere")
    assert missing.status_code == 404 and "ResourceNotFoundException" in missing.text  # as KVS
