"""Durability through a real crash: kill -9 of a node process after PutRecords has answered.

Goal: every acknowledged record is readable after a restart at the sequence number it was
acknowledged with, and streams, shards (including a completed split), tags and retention are
intact. Method: a real `shoal serve` child process; producer threads write concurrently through
gRPC and remember what was acknowledged; SIGKILL (no shutdown code runs); restart on the same
data dir; read every shard back and compare.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from broker.client.grpc_client import ShoalClient
from tests.support import NodeProcess, read_shard, serving, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]


def test_kill_9_after_acknowledgement_loses_nothing(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node")
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=120, what="node to serve")
        acknowledged: dict[bytes, tuple[str, str]] = {}
        lock = threading.Lock()
        with ShoalClient(node.endpoint) as client:
            client.call("CreateStream", {"StreamName": "durable", "ShardCount": 2})
            client.call("AddTagsToStream", {"StreamName": "durable", "Tags": {"team": "core"}})
            client.call(
                "IncreaseStreamRetentionPeriod",
                {"StreamName": "durable", "RetentionPeriodHours": 72},
            )
            client.call(
                "SplitShard",
                {
                    "StreamName": "durable",
                    "ShardToSplit": "shardId-000000000000",
                    "NewStartingHashKey": str(2**126),
                },
            )

            def produce(worker: int) -> None:
                for batch in range(10):
                    entries: list[dict[str, Any]] = [
                        {"PartitionKey": f"{worker}-{i}", "Data": f"{worker}:{batch}:{i}".encode()}
                        for i in range(100)
                    ]
                    response = client.call(
                        "PutRecords", {"StreamName": "durable", "Records": entries}
                    )
                    assert response["FailedRecordCount"] == 0
                    with lock:
                        for entry, result in zip(entries, response["Records"], strict=True):
                            acknowledged[entry["Data"]] = (
                                result["ShardId"],
                                result["SequenceNumber"],
                            )

            threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert len(acknowledged) == 4_000
        node.kill()
        node.start()
        wait_until(lambda: serving(node.endpoint), deadline_s=60, what="node to restart")
        with ShoalClient(node.endpoint) as client:
            summary = client.call("DescribeStreamSummary", {"StreamName": "durable"})[
                "StreamDescriptionSummary"
            ]
            assert summary["RetentionPeriodHours"] == 72
            assert summary["OpenShardCount"] == 3
            tags = client.call("ListTagsForStream", {"StreamName": "durable"})["Tags"]
            assert tags == [{"Key": "team", "Value": "core"}]
            shards = client.call("ListShards", {"StreamName": "durable"})["Shards"]
            assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(4)]
            found: dict[bytes, tuple[str, str]] = {}
            for shard in shards:
                for record in read_shard(client, "durable", shard["ShardId"]):
                    assert record["Data"] not in found
                    found[record["Data"]] = (shard["ShardId"], record["SequenceNumber"])
            assert found == acknowledged
            # The restarted node keeps taking writes after the recovered log ends.
            more = client.call(
                "PutRecord", {"StreamName": "durable", "PartitionKey": "0-0", "Data": b"after"}
            )
            same_shard = [v for v in acknowledged.values() if v[0] == more["ShardId"]]
            assert int(more["SequenceNumber"]) > max(int(n) for _, n in same_shard)
    finally:
        node.terminate()
