"""PutMedia across a node's death on a 3-node cluster of real processes (broker/video/).

A producer uploads through the node that leads the video stream's internal shard (the worst
place to be: its connection and the shard's leader die together). That node is killed with
SIGKILL in the middle of the upload. The producer then resumes on another node from the first
fragment it holds no PERSISTED for, as the KVS producer SDKs do. Afterwards GetMedia through a
surviving node must return every fragment that was acknowledged PERSISTED, under the number it
was acknowledged with, in order, and decode to every frame that went in (a fragment persisted
whose acknowledgement was lost may come twice, as on AWS; none may be missing).

The same cluster (one per module: forming it is most of the cost) then serves signaling
channels: a channel's sessions live on its home node, which every node computes alike from the
metadata (rendezvous hashing over the ACTIVE nodes): GetSignalingChannelEndpoint asked on any
node names the same endpoint, so a master and a viewer that asked different nodes meet there,
and a WebSocket opened on another node is refused with a 400 that names the home. When the home
is killed (SIGKILL) and fenced, the endpoint moves to a survivor, and clients that reconnect
through GetSignalingChannelEndpoint (as the KVS SDKs do when their socket closes) meet again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from broker.client.video_producer import PutMediaTarget, put_media
from broker.video import ebml, mkv
from broker.video.acks import AckEventType
from broker.video.archive import internal_name
from broker.video.media_chunks import read_tags, split_chunks
from broker.video.mkv import MkvFragment, MkvSplitter
from tests.cluster.helpers import shard_leaders, wait_applied_everywhere, wait_formed
from tests.meta.video_factories import video_stream
from tests.support import REPO, ClusterProcesses, wait_until
from tests.video.media import decoded_frame_times_ms, h264_mkv

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FRAGMENTS = 12
FPS = 25


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcesses]:
    """One 3-node cluster for the module (forming one is most of a test's cost); each test
    uses its own stream."""
    processes = ClusterProcesses(Path(tmp_path_factory.mktemp("video-cluster")))
    processes.start()
    try:
        wait_formed(processes)
        yield processes
    finally:
        processes.stop()


@pytest.fixture
def cluster(shared_cluster: ClusterProcesses) -> Iterator[ClusterProcesses]:
    """The shared cluster, whole: a node an earlier test killed is restarted first."""
    if any(node.process is None for node in shared_cluster.nodes):
        for node in shared_cluster.nodes:
            if node.process is None:
                node.start()
        wait_formed(shared_cluster)
    try:
        yield shared_cluster
    except BaseException:
        print(shared_cluster.logs())
        raise


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=60),
    )


def _mkv_from(header: bytes, clusters: list[bytes]) -> bytes:
    return (
        header[: _ebml_end(header)]
        + ebml.encode_id(mkv.SEGMENT)
        + ebml.unknown_size()
        + (header[_ebml_end(header) :] + b"".join(clusters))
    )


def _ebml_end(header: bytes) -> int:
    first = ebml.read_header(header, 0)
    assert first is not None
    return first.header_length + first.size


class _Upload:
    """One PutMedia session in a thread, its clusters sent `pace_s` apart (a camera)."""

    def __init__(self, endpoint: str, body: list[bytes], pace_s: float, stream: str) -> None:
        self.persisted: dict[int, str] = {}  # timecode -> fragment number
        self.errors: list[str] = []
        self._target = PutMediaTarget(
            endpoint=endpoint, stream_name=stream, producer_start_timestamp_s=1_700_000_000.0
        )
        self._body = body
        self._pace_s = pace_s
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _pieces(self) -> AsyncIterator[bytes]:
        for piece in self._body:
            yield piece
            await asyncio.sleep(self._pace_s)

    async def _run(self) -> None:
        try:
            async for ack in put_media(self._target, self._pieces()):
                if ack.event_type is AckEventType.PERSISTED:
                    assert ack.timecode_ms is not None
                    assert ack.fragment_number is not None
                    self.persisted[ack.timecode_ms] = ack.fragment_number
                elif ack.event_type is AckEventType.ERROR:
                    self.errors.append(f"{ack.error_id}: {ack.error_message}")
        except Exception as error:  # the node died under the connection
            self.errors.append(repr(error))


def test_playback_resumes_on_another_node_with_the_continuation_token(
    cluster: ClusterProcesses,
) -> None:
    """A GetMedia reader whose node is killed mid-playback goes on through another node from
    the last chunk's continuation token: every fragment once, in order."""
    first, reader_node, other = cluster.nodes
    kvs = _client("kinesisvideo", f"http://127.0.0.1:{first.http_port}")
    kvs.create_stream(StreamName="porch-playback", DataRetentionInHours=24)
    video = h264_mkv(frames=FRAGMENTS * FPS, fps=FPS)
    upload = _Upload(f"http://127.0.0.1:{first.http_port}", [video], 0, "porch-playback")
    upload.thread.start()
    upload.thread.join(timeout=60)
    assert len(upload.persisted) == FRAGMENTS, upload.errors
    numbers = [upload.persisted[1000 * i] for i in range(FRAGMENTS)]
    wait_applied_everywhere(cluster.endpoints)  # the reader's node knows the stream

    media = _client("kinesis-video-media", f"http://127.0.0.1:{reader_node.http_port}")
    response = media.get_media(
        StreamName="porch-playback", StartSelector={"StartSelectorType": "EARLIEST"}
    )
    raw = response["Payload"]._raw_stream
    received = b""
    try:
        while len(split_chunks(received)) < 5:  # four whole chunks and the start of a fifth
            data = raw.read1(4096)
            assert data, "the answer ended early"
            received += data
    finally:
        reader_node.kill()  # mid-playback
        response["Payload"].close()
    seen = split_chunks(received)[:-1]
    token = read_tags(seen[-1])["AWS_KINESISVIDEO_CONTINUATION_TOKEN"]

    media = _client("kinesis-video-media", f"http://127.0.0.1:{other.http_port}")
    rest = media.get_media(
        StreamName="porch-playback",
        StartSelector={"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": token},
    )["Payload"].read()
    chunks = seen + split_chunks(rest)
    assert [read_tags(c)["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for c in chunks] == numbers
    times = sorted(t for chunk in chunks for t in decoded_frame_times_ms(chunk))
    assert times == [1000 * i // FPS for i in range(FRAGMENTS * FPS)]


def test_producer_resumes_on_another_node_and_nothing_persisted_is_lost(
    cluster: ClusterProcesses,
) -> None:
    first = cluster.nodes[0]
    kvs = _client("kinesisvideo", f"http://127.0.0.1:{first.http_port}")
    arn = kvs.create_stream(StreamName="porch-resume", DataRetentionInHours=24)["StreamARN"]
    video = h264_mkv(frames=FRAGMENTS * FPS, fps=FPS)
    fragments = [e for e in MkvSplitter().feed(video) if isinstance(e, MkvFragment)]
    assert len(fragments) == FRAGMENTS
    header = fragments[0].header
    clusters = [f.cluster for f in fragments]

    # A first fragment through node 1 creates the internal stream; find its shard's leader.
    for _ in range(3):  # the cluster may still be moving leaderships after a restart
        warmup = _Upload(
            f"http://127.0.0.1:{first.http_port}",
            [_mkv_from(header, clusters[:1])],
            0,
            "porch-resume",
        )
        warmup.thread.start()
        warmup.thread.join(timeout=60)
        if warmup.persisted:
            break
    assert list(warmup.persisted) == [0], warmup.errors
    wait_applied_everywhere(cluster.endpoints)  # every node knows both streams
    created_ms = int(arn.rsplit("/", 1)[1])
    internal = internal_name(video_stream("porch-resume", created_ms=created_ms))
    leader_id = wait_until(
        lambda: shard_leaders(first.endpoint, internal).get("shardId-000000000000"),
        deadline_s=30,
        what="the internal shard's leader",
    )
    assert leader_id is not None
    leader = cluster.node_named(leader_id)
    survivor = next(n for n in cluster.nodes if n is not leader)

    # The rest through the leader, a cluster every 0.15 s; kill it after 3 PERSISTED.
    body = [_mkv_from(header, []), *clusters[1:]]
    upload = _Upload(f"http://127.0.0.1:{leader.http_port}", body, 0.15, "porch-resume")
    upload.thread.start()
    wait_until(lambda: len(upload.persisted) >= 3, deadline_s=60, what="3 fragments persisted")
    leader.kill()
    upload.thread.join(timeout=60)
    assert not upload.thread.is_alive()
    assert upload.errors, "the producer must have seen its connection fail"
    acknowledged = {0: warmup.persisted[0], **upload.persisted}
    assert len(acknowledged) < FRAGMENTS

    # Resume from the first fragment without a PERSISTED, on a surviving node; retried while
    # the cluster elects the shard's new leader (ERROR 5001 until then).
    next_index = max(acknowledged) // 1000 + 1
    deadline = time.monotonic() + 60
    while True:
        resumed = _Upload(
            f"http://127.0.0.1:{survivor.http_port}",
            [_mkv_from(header, clusters[next_index:])],
            0,
            "porch-resume",
        )
        resumed.thread.start()
        resumed.thread.join(timeout=60)
        if len(resumed.persisted) == FRAGMENTS - next_index:
            break
        assert time.monotonic() < deadline, resumed.errors
        next_index += len(resumed.persisted)
        acknowledged.update(resumed.persisted)
        time.sleep(0.2)
    acknowledged.update(resumed.persisted)
    assert sorted(acknowledged) == [1000 * i for i in range(FRAGMENTS)]

    media = _client("kinesis-video-media", f"http://127.0.0.1:{survivor.http_port}")
    payload = media.get_media(
        StreamName="porch-resume", StartSelector={"StartSelectorType": "EARLIEST"}
    )
    body_bytes = payload["Payload"].read()
    numbers = [
        read_tags(chunk)["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for chunk in split_chunks(body_bytes)
    ]
    # Every acknowledged fragment is there under its number, in the order acknowledged.
    positions = [numbers.index(number) for _, number in sorted(acknowledged.items())]
    assert positions == sorted(positions)
    times = sorted(set(decoded_frame_times_ms(body_bytes)))
    assert times == [1000 * i // FPS for i in range(FRAGMENTS * FPS)]


def test_shoal_video_put_fails_over_to_the_next_node(cluster: ClusterProcesses) -> None:
    """The shipped producer (`shoal video put` with two nodes) keeps every fragment until
    PERSISTED and, when its node is killed mid-upload, resumes on the other from the first
    fragment not acknowledged: every fragment and frame arrives."""
    first = cluster.nodes[0]
    kvs = _client("kinesisvideo", f"http://127.0.0.1:{first.http_port}")
    kvs.create_stream(StreamName="porch-put", DataRetentionInHours=24)
    wait_applied_everywhere(cluster.endpoints)  # the producer starts on node 2
    video = h264_mkv(frames=FRAGMENTS * FPS, fps=FPS)
    fragments = [e for e in MkvSplitter().feed(video) if isinstance(e, MkvFragment)]
    header, clusters = fragments[0].header, [f.cluster for f in fragments]
    victim, survivor = cluster.nodes[1], cluster.nodes[2]
    lines: list[str] = []
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker",
            "video",
            "put",
            "porch-put",
            "--http-endpoint",
            f"http://127.0.0.1:{victim.http_port},http://127.0.0.1:{survivor.http_port}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        stdout = process.stdout
        reading = threading.Thread(
            target=lambda: lines.extend(line.decode().strip() for line in stdout), daemon=True
        )
        reading.start()
        try:
            process.stdin.write(_mkv_from(header, []))
            for index, piece in enumerate(clusters):
                process.stdin.write(piece)
                process.stdin.flush()
                if index == 4:
                    wait_until(
                        lambda: sum(line.startswith("PERSISTED") for line in lines) >= 3,
                        deadline_s=60,
                        what="3 fragments persisted",
                    )
                    victim.kill()  # the producer's node, mid-upload
                time.sleep(0.15)
            process.stdin.close()
            process.wait(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        reading.join(timeout=10)
        errors = process.stderr.read().decode()
    assert process.returncode == 0, (lines, errors)
    assert "sessions)" in lines[-1], lines  # it did resume in a second session
    persisted = [line.split() for line in lines if line.startswith("PERSISTED")]
    assert {int(timecode) for _, timecode, _ in persisted} == {1000 * i for i in range(FRAGMENTS)}

    media = _client("kinesis-video-media", f"http://127.0.0.1:{survivor.http_port}")
    payload = media.get_media(
        StreamName="porch-put", StartSelector={"StartSelectorType": "EARLIEST"}
    )
    body = payload["Payload"].read()
    numbers = [read_tags(c)["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for c in split_chunks(body)]
    assert {number for _, _, number in persisted} <= set(numbers)
    times = sorted(set(decoded_frame_times_ms(body)))
    assert times == [1000 * i // FPS for i in range(FRAGMENTS * FPS)]


# --- Signaling channels on the same cluster (broker/video/signaling*.py) -----------------


def _kvs(port: int) -> Any:
    return boto3.client(
        "kinesisvideo",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )


def _endpoint(port: int, arn: str, role: str) -> str:
    answer = _kvs(port).get_signaling_channel_endpoint(
        ChannelARN=arn,
        SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS"], "Role": role},
    )
    endpoint: str = answer["ResourceEndpointList"][0]["ResourceEndpoint"]
    return endpoint


def _url(endpoint: str, arn: str, client_id: str | None = None) -> str:
    query = {"X-Amz-ChannelARN": arn}
    if client_id:
        query["X-Amz-ClientId"] = client_id
    return f"{endpoint}/?{urllib.parse.urlencode(query)}"


def _offer_reaches_master(master_endpoint: str, viewer_endpoint: str, arn: str) -> None:
    with (
        connect(_url(master_endpoint, arn), open_timeout=10) as master,
        connect(_url(viewer_endpoint, arn, "viewer"), open_timeout=10) as viewer,
    ):
        payload = base64.b64encode(b'{"type":"offer","sdp":"v=0"}').decode()
        viewer.send(json.dumps({"action": "SDP_OFFER", "messagePayload": payload}))
        got = json.loads(master.recv(timeout=10))
        assert (got["senderClientId"], got["messagePayload"]) == ("viewer", payload)


def test_a_channel_is_served_by_one_home_node_that_moves_when_it_dies(
    cluster: ClusterProcesses,
) -> None:
    ports = [node.http_port for node in cluster.nodes]
    arn = _kvs(ports[0]).create_signaling_channel(ChannelName="door")["ChannelARN"]
    wait_until(
        lambda: all(
            "door" in str(_kvs(port).list_signaling_channels()["ChannelInfoList"]) for port in ports
        ),
        deadline_s=30,
        what="every node to see the channel",
    )
    homes = {_endpoint(port, arn, role) for port in ports for role in ("MASTER", "VIEWER")}
    assert len(homes) == 1, homes
    (home,) = homes
    home_port = int(home.rsplit(":", 1)[1])
    others = [port for port in ports if port != home_port]
    # The master asked one node, the viewer another: they meet at the home.
    _offer_reaches_master(
        _endpoint(others[0], arn, "MASTER"), _endpoint(others[1], arn, "VIEWER"), arn
    )
    with pytest.raises(InvalidStatus) as refused:
        connect(_url(f"ws://127.0.0.1:{others[0]}", arn, "lost"), open_timeout=10)
    assert refused.value.response.status_code == 400
    assert f"127.0.0.1:{home_port}".encode() in refused.value.response.body  # names the home

    victim = next(node for node in cluster.nodes if node.http_port == home_port)
    victim.kill()
    deadline = time.monotonic() + 60

    def moved() -> bool:
        try:
            return _endpoint(others[0], arn, "MASTER") != home
        except Exception:
            return False  # a survivor may be electing a new metadata leader

    wait_until(moved, deadline_s=max(1.0, deadline - time.monotonic()), what="a new home")
    new_home = _endpoint(others[1], arn, "VIEWER")
    assert new_home == _endpoint(others[0], arn, "MASTER") != home
    _offer_reaches_master(new_home, new_home, arn)
