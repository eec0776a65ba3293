"""Encryption at rest on three real node processes with no key setup at all (the default
cluster master key, derived from what every node of a cluster shares):

- every replica stores the records written after StartStreamEncryption sealed: RocksDB's files
  (SSTs, WAL, every file of each node's log directory) hold no byte of the sealed records'
  distinctive text on any node, while a record written before is found in the clear;
- each node's own replica opens them (read through the internal replica read);
- a video stream (always encrypted under its KmsKeyId, AWS's alias/aws/kinesisvideo by
  default) stores its fragments on every replica, sealed, and a surviving node serves them
  with GetMedia;
- kill -9 of the shard's leader loses no acknowledged record: the new leader reads them back.

The files are read while the survivors run (RocksDB's WAL holds what the memtables do) and as
the killed leader left them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import boto3
import pytest

from broker.client.grpc_client import ShoalClient
from broker.client.video_producer import PutMediaTarget, put_media
from broker.video.acks import AckEventType
from broker.video.archive import internal_name
from tests.chaos.workload import create_stream, read_replica
from tests.cluster.helpers import check_no_loss, cluster_status, shard_leaders
from tests.meta.video_factories import video_stream
from tests.support import ClusterProcesses, NodeProcess, wait_until
from tests.video.media import h264_mkv

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SHARD = "shardId-000000000000"
CLEAR = b"CLEAR-written-before-encryption"
SEALED = b"SEALED-distinctive-"  # the text no stored byte may show


def _upload_video(node: NodeProcess, video: bytes) -> str:
    """Creates video stream "cam" and uploads `video` through `node` until every fragment is
    PERSISTED (stored on a quorum of the internal shard's replicas); its internal stream."""
    kvs = boto3.client(
        "kinesisvideo",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    arn = kvs.create_stream(StreamName="cam", DataRetentionInHours=24)["StreamARN"]
    # Sealed under its KmsKeyId (AWS's default below); the disk scan shows it is.
    described = kvs.describe_stream(StreamARN=arn)["StreamInfo"]
    assert described["KmsKeyId"] == "arn:aws:kms:us-east-1:000000000000:alias/aws/kinesisvideo"
    target = PutMediaTarget(
        endpoint=f"http://127.0.0.1:{node.http_port}",
        stream_name="cam",
        producer_start_timestamp_s=1_700_000_000.0,
    )

    async def body() -> AsyncIterator[bytes]:
        yield video

    async def upload() -> list[AckEventType]:
        return [ack.event_type async for ack in put_media(target, body())]

    events = asyncio.run(asyncio.wait_for(upload(), timeout=60))
    assert events.count(AckEventType.PERSISTED) == 2, events
    return internal_name(video_stream("cam", created_ms=int(arn.rsplit("/", 1)[1])))


def _get_media(node: NodeProcess) -> bytes:
    media = boto3.client(
        "kinesis-video-media",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    answer = media.get_media(StreamName="cam", StartSelector={"StartSelectorType": "EARLIEST"})
    body: bytes = answer["Payload"].read()
    return body


def _put(endpoint: str, datas: list[bytes]) -> dict[bytes, tuple[str, str]]:
    with ShoalClient(endpoint) as client:
        answer = client.call(
            "PutRecords",
            {
                "StreamName": "vault",
                "Records": [{"PartitionKey": "k", "Data": data} for data in datas],
            },
        )
    assert answer["FailedRecordCount"] == 0
    assert answer["EncryptionType"] == "KMS" or datas[0].startswith(CLEAR)
    return {
        data: (entry["ShardId"], entry["SequenceNumber"])
        for data, entry in zip(datas, answer["Records"], strict=True)
    }


def _no_loss(endpoint: str, acknowledged: dict[bytes, tuple[str, str]]) -> bool:
    try:
        check_no_loss(endpoint, "vault", acknowledged)
    except AssertionError:
        return False
    return True


def _encrypted_everywhere(cluster: ClusterProcesses) -> bool:
    for endpoint in cluster.endpoints:
        with ShoalClient(endpoint) as client:
            summary = client.call("DescribeStreamSummary", {"StreamName": "vault"})
        if summary["StreamDescriptionSummary"]["EncryptionType"] != "KMS":
            return False
    return True


def test_every_replica_stores_sealed_batches_and_survives_a_leader_kill(
    cluster: ClusterProcesses,
) -> None:
    first = cluster.endpoints[0]
    create_stream(first, "vault", 1)
    # Several: RocksDB's WAL splits records across its 32 KiB blocks (tests/crypto).
    acknowledged = _put(first, [CLEAR + b"-%d" % i for i in range(5)])
    with ShoalClient(first) as client:
        client.call(
            "StartStreamEncryption",
            {"StreamName": "vault", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
        )
    # Each replica seals from the moment its node applies the command (as AWS, which allows
    # a few seconds): wait until every node has.
    wait_until(lambda: _encrypted_everywhere(cluster), deadline_s=30, what="KMS on every node")
    for batch in range(20):
        datas = [SEALED + f"{batch}-{i}".encode() + bytes(100) for i in range(50)]
        acknowledged |= _put(cluster.endpoints[batch % 3], datas)

    # Two fragments of video through a follower of the data stream's shard, so its internal
    # shard has replicas on all three nodes like every shard here.
    video = h264_mkv(frames=50, fps=25)
    video_slices = [
        video[at : at + 32] for at in range(len(video) // 4, len(video), len(video) // 5)
    ]
    leader_id = shard_leaders(first, "vault")[SHARD]
    video_internal = _upload_video(
        next(n for n in cluster.nodes if n.extra_env["SHOAL_NODE_ID"] != leader_id), video
    )

    leader = cluster.node_named(leader_id)
    leader.kill()
    survivors = [node.endpoint for node in cluster.nodes if node is not leader]
    wait_until(
        lambda: shard_leaders(survivors[0], "vault").get(SHARD) not in (None, leader_id),
        deadline_s=60,
        what="a new leader for the shard",
    )
    for endpoint in survivors:
        # The new leader serves up to its high watermark, which passes the last acknowledged
        # batch once its first write of the new epoch commits: poll, then assert.
        wait_until(
            lambda: _no_loss(endpoint, acknowledged),  # noqa: B023
            deadline_s=30,
            what=f"every acknowledged record via {endpoint}",
        )
        check_no_loss(endpoint, "vault", acknowledged)

    shards = {s.stream_name: s for s in cluster_status(survivors[0]).shards}
    for node in cluster.nodes:
        if node is not leader:  # each survivor opens its own replica's sealed batches
            node_id = node.extra_env["SHOAL_NODE_ID"]
            own = read_replica(node.endpoint, node_id, SHARD, shards["vault"].shard_uid)
            assert {data for _, data in own.records} >= set(acknowledged)
            fragments = read_replica(
                node.endpoint, node_id, SHARD, shards[video_internal].shard_uid
            )
            assert fragments.records, f"{node_id} holds no video fragment"
            served = _get_media(node)
            assert all(piece in served for piece in video_slices)
    clear_on = []
    video_clear_on = []
    for node in cluster.nodes:  # the killed leader's files as it left them, the others' live
        stored = b"".join(
            path.read_bytes() for path in (node.data_dir / "log").rglob("*") if path.is_file()
        )
        assert SEALED not in stored, f"{node.data_dir}: a sealed record is on disk in the clear"
        if any(piece in stored for piece in video_slices):
            video_clear_on.append(node.data_dir.name)
        if CLEAR in stored:
            clear_on.append(node.data_dir.name)
        metadata = b"".join(
            path.read_bytes() for path in (node.data_dir / "meta").rglob("*") if path.is_file()
        )
        assert SEALED not in metadata
    # The scan sees a record stored in the clear (so it can fail). Not necessarily on every
    # node: a replica that received the batch after applying StartStreamEncryption (a slow
    # follower, or one rebuilt from the new leader after the kill) stored it sealed.
    assert clear_on, "the record written before encryption is in the clear on no node"
    # The video's internal stream is created encrypted: no node ever stores it in the clear
    # (tests/video/test_archive_encryption.py replays the late-node window deterministically).
    assert not video_clear_on, f"video in the clear on {video_clear_on}"
