"""`shoal backup` and `shoal restore` end to end: real nodes, a real S3-compatible server.

Goal (issue 16 item 5): a backup copies a stream's records (with their shard and order),
lineage, settings, tags and consumers to a bucket or a directory, incrementally; a restore on
another cluster recreates the stream with the same shard ids, lineage and per-shard record
order, and its encryption: a stream backed up encrypted is restored encrypted under the same
KeyId, no restored record ever stored in the clear. Goal (s28): the backup itself holds none
of an encrypted stream's records in the clear (segments sealed under the stream's master key),
and a restore where that key is missing fails with KMS's error before creating anything.
Method: two single-node clusters (separate processes and data) sharing one master key file,
moto's S3 server on loopback reached through AWS_ENDPOINT_URL_S3, the CLI as an operator runs it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.client.grpc_client import ShoalClient
from broker.client.limits import LimitsClient
from broker.crypto.master_keys import create_key_file
from tests.s3_server import running_s3_server
from tests.support import REPO, NodeProcess, read_shard, serving, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]


def shoal(endpoint: str, env: dict[str, str], *args: str) -> str:
    result = run_shoal(endpoint, env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def run_shoal(endpoint: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "--endpoint", endpoint, *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stream_contents(endpoint: str, stream: str) -> dict[str, Any]:
    """Per shard: parents, hash range and the records' (key, data) in order; and settings."""
    with ShoalClient(endpoint) as client:
        shards = client.call("ListShards", {"StreamName": stream})["Shards"]
        summary = client.call("DescribeStreamSummary", {"StreamName": stream})[
            "StreamDescriptionSummary"
        ]
        tags = client.call("ListTagsForStream", {"StreamName": stream})["Tags"]
        consumers = client.call("ListStreamConsumers", {"StreamARN": summary["StreamARN"]})
        return {
            "shards": {
                s["ShardId"]: (
                    s.get("ParentShardId"),
                    s.get("AdjacentParentShardId"),
                    s["HashKeyRange"]["StartingHashKey"],
                    [
                        (r["PartitionKey"], r["Data"])
                        for r in read_shard(client, stream, s["ShardId"])
                    ],
                )
                for s in shards
            },
            "retention": summary["RetentionPeriodHours"],
            "tags": sorted((t["Key"], t["Value"]) for t in tags),
            "consumers": sorted(c["ConsumerName"] for c in consumers["Consumers"]),
        }


async def lease_rows(endpoint: str, stream: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    from broker.client.leases import GrpcLeaseClient

    async with GrpcLeaseClient(endpoint) as client:
        leases = await client.list_leases(application="app", stream_name=stream)
    return {x.lease_key: (x.checkpoint.sequence_number, x.parent_shard_ids) for x in leases}


async def checkpoint_shard_0(endpoint: str, sequence_number: str) -> None:
    """The KCL's way: create the application's leases, take shard 0's, checkpoint it."""
    from broker.client.leases import GrpcLeaseClient
    from broker.consumers.leases import (
        Checkpoint,
        CheckpointLease,
        CreateLeases,
        Lease,
        NewLease,
        TakeLease,
    )

    async with GrpcLeaseClient(endpoint) as client:
        await client.create_leases(
            CreateLeases(
                application="app",
                stream_name="orders",
                leases=(
                    NewLease(shard_id="shardId-000000000000"),
                    NewLease(shard_id="shardId-000000000001"),
                ),
            )
        )
        taken = await client.take(
            TakeLease(
                application="app",
                stream_name="orders",
                lease_key="shardId-000000000000",
                owner="worker-1",
                expected_owner=None,
                expected_counter=0,
            )
        )
        assert isinstance(taken, Lease), taken
        done = await client.checkpoint(
            CheckpointLease(
                application="app",
                stream_name="orders",
                lease_key="shardId-000000000000",
                owner="worker-1",
                expected_counter=taken.lease_counter,
                checkpoint=Checkpoint(sequence_number),
            )
        )
        assert isinstance(done, Lease), done


PAYLOAD = b"order-payload-"  # every record's data starts with it: the disk scan looks for it


def stored_bytes(node: NodeProcess) -> bytes:
    """Every file of the node's shard log (RocksDB's SSTs and WAL), read while it runs."""
    log = node.data_dir / "log"
    return b"".join(path.read_bytes() for path in log.rglob("*") if path.is_file())


def encryption(endpoint: str, stream: str) -> tuple[str, str | None]:
    with ShoalClient(endpoint) as client:
        summary = client.call("DescribeStreamSummary", {"StreamName": stream})
    return summary["StreamDescriptionSummary"]["EncryptionType"], summary[
        "StreamDescriptionSummary"
    ].get("KeyId")


def put(endpoint: str, stream: str, keys: range, tag: str) -> None:
    with ShoalClient(endpoint) as client:
        client.call(
            "PutRecords",
            {
                "StreamName": stream,
                "Records": [
                    {"PartitionKey": f"k{i}", "Data": PAYLOAD + f"{tag}-{i}".encode()} for i in keys
                ],
            },
        )


def bucket_bytes(s3: Any, bucket: str) -> bytes:
    """Every object of the bucket, concatenated."""
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    return b"".join(client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)


def test_backup_to_s3_incrementally_and_restore_on_another_cluster(tmp_path: Path) -> None:
    # One master key file for both clusters (as for a cluster and its disaster-recovery twin):
    # the backup's data keys are wrapped by it, so only a cluster holding it restores them.
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    keyed = {"SHOAL_ENCRYPTION_MASTER_KEY": "file", "SHOAL_ENCRYPTION_KEY_FILE": str(key_file)}
    source = NodeProcess(tmp_path / "source", extra_env=keyed)
    target = NodeProcess(tmp_path / "target", extra_env=keyed)
    source.start()
    target.start()
    try:
        with running_s3_server() as s3:
            s3.create_bucket("backups")
            env = s3.client_env()
            wait_until(
                lambda: serving(source.endpoint) and serving(target.endpoint),
                deadline_s=60,
                what="both nodes",
            )
            with ShoalClient(source.endpoint) as client:
                client.call("CreateStream", {"StreamName": "orders", "ShardCount": 2})
                wait_until(
                    lambda: (
                        client.call("DescribeStreamSummary", {"StreamName": "orders"})[
                            "StreamDescriptionSummary"
                        ]["StreamStatus"]
                        == "ACTIVE"
                    ),
                    deadline_s=30,
                    what="ACTIVE",
                )
                client.call("AddTagsToStream", {"StreamName": "orders", "Tags": {"team": "ops"}})
                client.call(
                    "IncreaseStreamRetentionPeriod",
                    {"StreamName": "orders", "RetentionPeriodHours": 48},
                )
                arn = client.call("DescribeStreamSummary", {"StreamName": "orders"})[
                    "StreamDescriptionSummary"
                ]["StreamARN"]
                client.call("RegisterStreamConsumer", {"StreamARN": arn, "ConsumerName": "app"})
            with LimitsClient(source.endpoint) as limits:  # `shoal limits set`, carried along
                limits.update_stream("orders", {"read_calls_per_second": 50})
            put(source.endpoint, "orders", range(50), "first")
            with ShoalClient(source.endpoint) as client:  # its first records stay clear here
                client.call(
                    "StartStreamEncryption",
                    {"StreamName": "orders", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
                )
            with ShoalClient(source.endpoint) as client:
                shard_0 = read_shard(client, "orders", "shardId-000000000000")
            checkpointed = shard_0[4]["SequenceNumber"]
            asyncio.run(checkpoint_shard_0(source.endpoint, checkpointed))
            out = shoal(source.endpoint, env, "backup", "orders", "--to", "s3://backups/nightly")
            assert "50 new records" in out

            # More writes and a split, then an incremental backup copies only what is new.
            put(source.endpoint, "orders", range(50, 80), "second")
            shoal(source.endpoint, {}, "split", "orders", "shardId-000000000000", "--wait")
            put(source.endpoint, "orders", range(80, 120), "third")
            out = shoal(source.endpoint, env, "backup", "orders", "--to", "s3://backups/nightly")
            assert "70 new records" in out
            keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket="backups")["Contents"]}
            assert "nightly/streams/orders/manifest.json" in keys
            # Sealed: no object of the bucket holds a record's data (the 50 records stored
            # in the clear on the source included), nor a clear segment's partition key.
            backed_up = bucket_bytes(s3, "backups")
            assert PAYLOAD not in backed_up, "a backed-up record is in the clear"
            # A clear segment holds data in base64: every record's starts with this.
            assert base64.b64encode(PAYLOAD[:12]) not in backed_up, "a record in base64"
            assert b'"pk": ' not in backed_up  # a clear segment's field

            mapping = tmp_path / "sequence-map.json"
            out = shoal(
                target.endpoint,
                env,
                "restore",
                "orders",
                "--from",
                "s3://backups/nightly",
                "--sequence-map",
                str(mapping),
            )
            assert "restored orders: 120 records in 4 shards" in out
            assert stream_contents(target.endpoint, "orders") == stream_contents(
                source.endpoint, "orders"
            )
            # Restored encrypted, under the same KeyId, before its first record: none of the
            # records is on the target's disk in the clear (the scan can see one: the
            # source's records written before its encryption are there in the clear).
            assert PAYLOAD in stored_bytes(source)
            assert PAYLOAD not in stored_bytes(target), "a restored record is stored in the clear"
            assert encryption(target.endpoint, "orders") == ("KMS", "alias/aws/kinesis")
            with LimitsClient(target.endpoint) as limits:
                assert limits.describe_stream("orders")["overrides"] == {
                    "read_calls_per_second": 50
                }
            sequence_map = json.loads(mapping.read_text())
            assert len(sequence_map) == 120
            # The consumer's lease came along, its checkpoint on the same record's new number.
            restored = asyncio.run(lease_rows(target.endpoint, "orders"))
            assert restored == {
                "shardId-000000000000": (sequence_map[checkpointed], ()),
                "shardId-000000000001": ("TRIM_HORIZON", ()),
            }

        # The same to a directory, restored under another name.
        shoal(source.endpoint, {}, "backup", "orders", "--to", str(tmp_path / "dir-backup"))
        shoal(
            target.endpoint,
            {},
            "restore",
            "orders",
            "--from",
            str(tmp_path / "dir-backup"),
            "--as",
            "orders-copy",
        )
        copy = stream_contents(target.endpoint, "orders-copy")
        assert copy["shards"] == stream_contents(source.endpoint, "orders")["shards"]
        assert encryption(target.endpoint, "orders-copy") == ("KMS", "alias/aws/kinesis")
        assert PAYLOAD not in stored_bytes(target), "a restored record is stored in the clear"

        # A backup whose data keys a master key this cluster lacks wraps: KMS's error, and
        # nothing is created.
        manifest_path = tmp_path / "dir-backup" / "streams" / "orders" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        for wrapped in [k["wrapped"] for k in manifest["data_keys"]] + [
            manifest["seal"]["wrapped"]
        ]:
            assert wrapped["wrapping"].startswith("local:")
            wrapped["wrapping"] = "local:00000000-0000-0000-0000-000000000000"
        manifest_path.write_text(json.dumps(manifest))
        refused = run_shoal(
            target.endpoint,
            {},
            "restore",
            "orders",
            "--from",
            str(tmp_path / "dir-backup"),
            "--as",
            "orders-lost",
        )
        assert refused.returncode == 1 and "KMSNotFoundException" in refused.stderr, refused
        with ShoalClient(target.endpoint) as client:
            names = client.call("ListStreams", {})["StreamNames"]
        assert "orders-lost" not in names
    finally:
        source.terminate()
        target.terminate()
