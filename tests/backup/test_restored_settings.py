"""What a logical backup carries (broker/backup/logical.py), against an in-process node.

Goal (issue 16, s27): a restored stream is the stream that was backed up in every property a
Kinesis user sets on it, not only its records and lineage: encryption (type and KeyId, the
stream encrypted before its first restored record), the record size limit (in force before
the first record: a record above 1 MiB is restored), retention, enhanced monitoring, tags,
the capacity mode with an on-demand stream's warm throughput and record distribution, its
consumers, the resource policies of the stream and of each consumer (naming the new ARNs),
and (s28) the throughput limits set on it with `shoal limits`. Method: back up a stream with
all of them set to a directory, restore it under another name on the same node through the
real gRPC API, compare what the API shows.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from broker.backup.logical import BackupError, back_up, manifest_key, restore
from broker.backup.store import DirectoryStore
from broker.client.backup_keys import BackupKeyClient
from broker.client.grpc_client import ShoalClient
from broker.client.limits import LimitsClient
from broker.node import Node
from tests.conftest import shared_node_fixtures
from tests.support import read_shard

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

clock, node, client = shared_node_fixtures()

KEY_ID = "alias/aws/kinesis"
BIG = 1536 * 1024  # above the default 1 MiB record limit


def _policy(arn: str, action: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "read",
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": [action],
                    "Resource": arn,
                }
            ],
        }
    )


class Recorded:
    """The node's API (a blocking gRPC client), recording each operation called."""

    def __init__(self, endpoint: str) -> None:
        self.client = ShoalClient(endpoint)
        self.keys = BackupKeyClient(endpoint)  # seals an encrypted stream's backup
        self.limits = LimitsClient(endpoint)
        self.operations: list[str] = []

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.operations.append(operation)
        return self.client.call(operation, request)

    def summary(self, name: str) -> dict[str, Any]:
        answer = self.client.call("DescribeStreamSummary", {"StreamName": name})
        summary: dict[str, Any] = answer["StreamDescriptionSummary"]
        return summary

    def wait_active(self, name: str) -> None:
        for _ in range(500):
            if self.summary(name)["StreamStatus"] == "ACTIVE":
                return
            self.operations.append("(waited)")
        raise AssertionError(f"{name} never became ACTIVE")

    # `LimitsAccess`: the stream's throughput limits through the LimitsService.
    def stream_overrides(self, stream: str) -> dict[str, int]:
        overrides: dict[str, int] = self.limits.describe_stream(stream)["overrides"]
        return overrides

    def set_stream_overrides(self, stream: str, rates: dict[str, int]) -> None:
        self.limits.update_stream(stream, rates)

    def wait_keyed(self, name: str) -> None:
        self.operations.append("(every replica keyed)")

    def properties(self, name: str) -> dict[str, Any]:
        summary = self.summary(name)
        arn = summary["StreamARN"]
        consumers = self.client.call("ListStreamConsumers", {"StreamARN": arn})["Consumers"]
        tags = self.client.call("ListTagsForStream", {"StreamName": name})["Tags"]
        return {
            "encryption": (summary["EncryptionType"], summary.get("KeyId")),
            "retention": summary["RetentionPeriodHours"],
            "metrics": sorted(summary["EnhancedMonitoring"][0]["ShardLevelMetrics"]),
            "mode": summary["StreamModeDetails"]["StreamMode"],
            "warm": summary.get("WarmThroughput", {}).get("TargetMiBps"),
            "distribution": summary.get("RecordDistributionStrategy"),
            "max_record_kib": summary["MaxRecordSizeInKiB"],
            "throughput_limits": self.stream_overrides(name),
            "tags": sorted((t["Key"], t["Value"]) for t in tags),
            # Each policy with the resource's own ARN written as "<self>".
            "policy": self._policy_of(arn),
            "consumers": {
                c["ConsumerName"]: (
                    self._policy_of(c["ConsumerARN"]),
                    self._tags_of(c["ConsumerARN"]),
                )
                for c in consumers
            },
        }

    def _tags_of(self, arn: str) -> list[tuple[str, str]]:
        tags = self.client.call("ListTagsForResource", {"ResourceARN": arn})["Tags"]
        return sorted((t["Key"], t["Value"]) for t in tags)

    def _policy_of(self, arn: str) -> str:
        policy: str = self.client.call("GetResourcePolicy", {"ResourceARN": arn})["Policy"]
        return policy.replace(arn, "<self>")


def _set_everything(api: Recorded, name: str) -> None:
    call = api.client.call
    # An account setting (not the stream's: a backup does not carry it), which warm
    # throughput needs.
    call("UpdateAccountSettings", {"MinimumThroughputBillingCommitment": {"Status": "ENABLED"}})
    call("CreateStream", {"StreamName": name, "ShardCount": 2})
    api.wait_active(name)
    arn = api.summary(name)["StreamARN"]
    call("UpdateMaxRecordSize", {"StreamARN": arn, "MaxRecordSizeInKiB": 2048})
    api.wait_active(name)
    call("StartStreamEncryption", {"StreamName": name, "EncryptionType": "KMS", "KeyId": KEY_ID})
    api.wait_active(name)
    call("IncreaseStreamRetentionPeriod", {"StreamName": name, "RetentionPeriodHours": 72})
    call("EnableEnhancedMonitoring", {"StreamName": name, "ShardLevelMetrics": ["IncomingBytes"]})
    call("AddTagsToStream", {"StreamName": name, "Tags": {f"t{i}": str(i) for i in range(12)}})
    consumer = call(
        "RegisterStreamConsumer",
        {"StreamARN": arn, "ConsumerName": "reader", "Tags": {"owner": "analytics"}},
    )
    consumer_arn = consumer["Consumer"]["ConsumerARN"]
    call(
        "PutRecords",
        {
            "StreamName": name,
            "Records": [
                {"PartitionKey": "big", "Data": b"b" * BIG},
                *({"PartitionKey": f"k{i}", "Data": b"r%d" % i} for i in range(20)),
            ],
        },
    )
    api.wait_active(name)
    call("UpdateStreamMode", {"StreamARN": arn, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}})
    api.wait_active(name)
    call("UpdateStreamWarmThroughput", {"StreamARN": arn, "WarmThroughputMiBps": 30})
    api.wait_active(name)
    call(
        "UpdateStreamRecordDistributionStrategy",
        {"StreamARN": arn, "RecordDistributionStrategy": "AUTO"},
    )
    api.wait_active(name)
    # Throughput limits (`shoal limits set`), low enough that the restore's writes would be
    # throttled if they were set before the records.
    api.set_stream_overrides(name, {"write_records_per_second": 5, "read_calls_per_second": 20})
    call("PutResourcePolicy", {"ResourceARN": arn, "Policy": _policy(arn, "kinesis:GetRecords")})
    call(
        "PutResourcePolicy",
        {"ResourceARN": consumer_arn, "Policy": _policy(consumer_arn, "kinesis:SubscribeToShard")},
    )


async def test_a_restored_stream_keeps_every_property_set_on_it(node: Node, tmp_path: Path) -> None:
    api = Recorded(f"127.0.0.1:{node.grpc_port}")
    try:
        await asyncio.to_thread(_set_everything, api, "everything")
        store = DirectoryStore(tmp_path)
        await asyncio.to_thread(
            lambda: back_up(api.call, store, "everything", keys=api.keys, limits=api)
        )
        api.operations.clear()
        report = await asyncio.to_thread(
            lambda: restore(
                api.call,
                store,
                "everything",
                as_name="everything-restored",
                wait_active=api.wait_active,
                wait_keyed=api.wait_keyed,
                keys=api.keys,
                limits=api,
            )
        )
        assert report.records_written == 21
        before = await asyncio.to_thread(api.properties, "everything")
        after = await asyncio.to_thread(api.properties, "everything-restored")
        assert after == before
        assert before["encryption"] == ("KMS", KEY_ID)  # the comparison compares something
        assert before["warm"] == 30 and before["distribution"] == "AUTO"
        assert before["throughput_limits"] == {
            "write_records_per_second": 5,
            "read_calls_per_second": 20,
        }
        assert "<self>" in before["policy"] and "<self>" in before["consumers"]["reader"][0]
        assert before["consumers"]["reader"][1] == [("owner", "analytics")]
        # Encrypted, and every replica keyed, before the first record is written.
        operations = [op for op in api.operations if op != "(waited)"]
        first_record = operations.index("PutRecords")
        assert operations[:4] == [
            "DescribeAccountSettings",  # warm throughput allowed here, before anything
            "CreateStream",
            "StartStreamEncryption",
            "(every replica keyed)",
        ]
        assert first_record > 3
    finally:
        api.client.close()
        api.keys.close()
        api.limits.close()


def _split_unevenly(api: Recorded, name: str) -> None:
    call = api.client.call
    call("CreateStream", {"StreamName": name, "ShardCount": 1})
    api.wait_active(name)
    call(
        "SplitShard",
        {
            "StreamName": name,
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": str(2**125),  # an eighth: not where CreateStream cuts
        },
    )
    api.wait_active(name)
    records = [{"PartitionKey": f"k{i}", "Data": b"u%d" % i} for i in range(40)]
    call("PutRecords", {"StreamName": name, "Records": records})


def _open_shards(api: Recorded, name: str) -> dict[tuple[str, str], list[bytes]]:
    """Hash range -> the open shard's records' data, in order."""
    shards = api.client.call("ListShards", {"StreamName": name})["Shards"]
    return {
        (s["HashKeyRange"]["StartingHashKey"], s["HashKeyRange"]["EndingHashKey"]): [
            r["Data"] for r in read_shard(api.client, name, s["ShardId"])
        ]
        for s in shards
        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    }


async def test_roots_whose_parent_expired_are_restored_with_their_hash_ranges(
    node: Node, tmp_path: Path
) -> None:
    """A backup taken after the parent of a split expired lists only the children: roots that
    CreateStream cannot lay out. The restore carves them from one shard."""
    api = Recorded(f"127.0.0.1:{node.grpc_port}")
    try:
        await asyncio.to_thread(_split_unevenly, api, "uneven")
        store = DirectoryStore(tmp_path)
        await asyncio.to_thread(back_up, api.call, store, "uneven")
        manifest_path = tmp_path / manifest_key("uneven")
        manifest = json.loads(manifest_path.read_text())
        # As ListShards shows the stream once the parent is past its retention.
        manifest["shards"] = [s for s in manifest["shards"] if s["parent"] is not None]
        assert len(manifest["shards"]) == 2
        manifest_path.write_text(json.dumps(manifest))
        report = await asyncio.to_thread(
            lambda: restore(
                api.call,
                store,
                "uneven",
                as_name="uneven-restored",
                wait_active=api.wait_active,
                wait_keyed=api.wait_keyed,
            )
        )
        source = await asyncio.to_thread(_open_shards, api, "uneven")
        restored = await asyncio.to_thread(_open_shards, api, "uneven-restored")
        assert restored == source
        assert sum(len(records) for records in restored.values()) == 40
        assert sorted(report.shard_ids) == ["shardId-000000000001", "shardId-000000000002"]
    finally:
        api.client.close()
        api.keys.close()
        api.limits.close()


async def test_warm_throughput_the_target_account_does_not_allow_stops_the_restore_first(
    tmp_path: Path,
) -> None:
    """Warm throughput needs the account's MinimumThroughputBillingCommitment, which a backup
    does not carry: without it the restore stops before CreateStream (it used to fail at
    UpdateStreamWarmThroughput, after every record was written)."""
    manifest = {
        "v": 1,
        "stream": "warm",
        "settings": {"warm_throughput_mibps": 30, "max_record_size_kib": 1024},
        "shards": [],
    }
    (tmp_path / "streams" / "warm").mkdir(parents=True)
    (tmp_path / manifest_key("warm")).write_text(json.dumps(manifest))
    called: list[str] = []

    def call(operation: str, request: dict[str, Any]) -> dict[str, Any]:
        called.append(operation)
        assert operation == "DescribeAccountSettings", operation
        return {"MinimumThroughputBillingCommitment": {"Status": "DISABLED"}}

    with pytest.raises(BackupError, match="MinimumThroughputBillingCommitment"):
        restore(
            call,
            DirectoryStore(tmp_path),
            "warm",
            wait_active=lambda _: None,
            wait_keyed=lambda _: None,
        )
    assert called == ["DescribeAccountSettings"]
