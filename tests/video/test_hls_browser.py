"""The HLS URL plays in a real browser: hls.js (vendored, pinned) in headless Chromium
(Debian's `chromium` and `chromium-driver`, installed by scripts/install; the console's browser
set-up, tests/console/test_browser.py), driven by selenium, against a real node process.

A page on a loopback server (another origin than the node, as a real player page is) loads the
ON_DEMAND session URL GetHLSStreamingSessionURL returned (hls.js 1.7.4, the console's vendored
copy); hls.js fetches the playlists and
fragmented-MP4 segments from Shoal, feeds them to Media Source Extensions, and the video's
currentTime advances through the stream with no hls.js error.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import shutil
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from broker.client.video_producer import PutMediaTarget, put_media
from tests.console.test_browser import browser
from tests.support import REPO, NodeProcess, serving, wait_until
from tests.video.media import h264_mkv

pytestmark = [pytest.mark.process, pytest.mark.slow]
__all__ = ["browser"]  # headless Chromium, shared with the console's browser tests

# The console's vendored copy (broker/console/static/VENDORED.md; its hash is pinned by
# tests/console/test_static.py, and again here).
VENDOR = REPO / "broker" / "console" / "static"
HLS_JS = "hls.light.min.js"
HLS_JS_SHA256 = "482cccb3a224554f64d8c2cf0d335dba4a3819bdb726afbfddfe15de4c277d82"  # 1.7.4
PRODUCER_START_S = 1_700_000_000.0
PLAY_WAIT_S = 60  # generous: the suite shares two cores with other work

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>player</title></head>
<body><video id="video" muted playsinline></video>
<script src="hls.light.min.js"></script>
<script>
  const source = new URLSearchParams(location.search).get("src");
  const video = document.getElementById("video");
  window.player = {errors: [], supported: Hls.isSupported(), parsed: false};
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (event, data) => {
    window.player.errors.push(`${data.type}:${data.details}:${data.fatal}`);
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    window.player.parsed = true;
    video.play();
  });
  hls.loadSource(source);
  hls.attachMedia(video);
</script></body></html>
"""


def test_vendored_hls_js_is_the_pinned_release() -> None:
    assert hashlib.sha256((VENDOR / HLS_JS).read_bytes()).hexdigest() == HLS_JS_SHA256


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data = tmp_path_factory.mktemp("hls-node") / "node"
    process = NodeProcess(data, extra_env={"SHOAL_REPLICATION_FACTOR": "1"})
    process.start()
    try:
        wait_until(lambda: serving(process.endpoint), deadline_s=60, what="the node to serve")
        yield process
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The player page and hls.js on a loopback HTTP server of their own."""
    root = tmp_path_factory.mktemp("player")
    (root / "player.html").write_text(PAGE)
    shutil.copy(VENDOR / HLS_JS, root / HLS_JS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/player.html"
    finally:
        server.shutdown()
        server.server_close()


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _upload(endpoint: str, stream: str, video: bytes) -> None:
    target = PutMediaTarget(
        endpoint=endpoint, stream_name=stream, producer_start_timestamp_s=PRODUCER_START_S
    )

    async def run() -> int:
        return sum(
            [ack.event_type.value == "PERSISTED" async for ack in put_media(target, _single(video))]
        )

    assert asyncio.run(run()) == 6


def test_hls_url_plays_in_chromium_with_hls_js(
    browser: Any, node: NodeProcess, page_server: str
) -> None:
    endpoint = f"http://127.0.0.1:{node.http_port}"
    settings: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    kvs = boto3.client("kinesisvideo", **settings)
    kvs.create_stream(StreamName="browser-cam", DataRetentionInHours=24)
    _upload(endpoint, "browser-cam", h264_mkv(frames=150, fps=25, width=320, height=240))
    archived = boto3.client("kinesis-video-archived-media", **settings)
    start = datetime.fromtimestamp(PRODUCER_START_S - 1, tz=UTC)
    url = archived.get_hls_streaming_session_url(
        StreamName="browser-cam",
        PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP",
            "TimestampRange": {
                "StartTimestamp": start,
                "EndTimestamp": start + timedelta(minutes=5),
            },
        },
    )["HLSStreamingSessionURL"]

    browser.get(f"{page_server}?{urllib.parse.urlencode({'src': url})}")
    supported = browser.execute_script(
        "return MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42c01e\"')"
        " || MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.64001e\"')"
    )
    if not supported:
        pytest.skip("this Chromium build plays no H.264 through Media Source Extensions")
    deadline = time.monotonic() + PLAY_WAIT_S
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = browser.execute_script(
            "const v = document.getElementById('video');"
            "return {player: window.player, time: v.currentTime, ended: v.ended,"
            " error: v.error && v.error.message, duration: v.duration};"
        )
        if state["player"]["errors"] or state["error"] or state["time"] >= 3.0:
            break
        time.sleep(0.2)
    assert state["player"]["supported"] and state["player"]["parsed"], state
    assert not state["player"]["errors"] and not state["error"], state
    assert state["time"] >= 3.0, state  # played through three of the six seconds
    assert abs(state["duration"] - 6.0) < 0.5, state
