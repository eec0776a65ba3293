"""A 3-node cluster holds 1,000 open shards and keeps serving (issue 6 point 5).

Functional, not timing (the figures are `scripts/bench --only scale`'s): five 200-shard
streams are created through different nodes; every stream takes a record on a few shards and
gives it back; ListShards pages through all of a stream's shards with NextToken and
DescribeStream with ExclusiveStartShardId, each shard once; DescribeLimits counts the 1,000
open shards and a stream that would pass the account limit (lowered at runtime) is refused.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from broker.client.grpc_client import ShoalClient
from broker.client.limits import LimitsClient
from broker.errors import ShoalError
from broker.limits import hash_key_max
from tests.support import ClusterProcesses, read_shard, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STREAMS = 5
SHARDS = 200


def _writable(client: ShoalClient, name: str, records: list[dict[str, Any]]) -> bool:
    try:
        answer = client.call("PutRecords", {"StreamName": name, "Records": records})
    except ShoalError:
        return False
    return bool(answer["FailedRecordCount"] == 0)


def test_a_thousand_open_shards(cluster: ClusterProcesses) -> None:
    space = hash_key_max + 1  # shard i starts at i * space // SHARDS (uniform_ranges)
    probes = (0, 77, SHARDS - 1)  # shard indexes written and read back in every stream
    for i in range(STREAMS):
        endpoint = cluster.endpoints[i % len(cluster.endpoints)]
        with ShoalClient(endpoint, timeout_s=60) as client:
            name = f"big-{i}"
            client.call("CreateStream", {"StreamName": name, "ShardCount": SHARDS})
            records = [
                {
                    "PartitionKey": "k",
                    "Data": f"{name}/{p}".encode(),
                    "ExplicitHashKey": str(p * space // SHARDS),
                }
                for p in probes
            ]
            wait_until(
                partial(_writable, client, name, records),
                deadline_s=60,
                what=f"{name} writable",
            )

    with ShoalClient(cluster.endpoints[1], timeout_s=60) as client:
        limits = client.call("DescribeLimits", {})
        assert limits["OpenShardCount"] == STREAMS * SHARDS
        for i in range(STREAMS):
            name = f"big-{i}"
            for p in probes:
                records = read_shard(client, name, f"shardId-{p:012d}")
                assert [r["Data"] for r in records] == [f"{name}/{p}".encode()]

        listed: list[str] = []
        answer = client.call("ListShards", {"StreamName": "big-3", "MaxResults": 64})
        listed += [s["ShardId"] for s in answer["Shards"]]
        pages = 1
        while "NextToken" in answer:
            answer = client.call("ListShards", {"NextToken": answer["NextToken"], "MaxResults": 64})
            listed += [s["ShardId"] for s in answer["Shards"]]
            pages += 1
        assert pages == 4
        assert listed == [f"shardId-{p:012d}" for p in range(SHARDS)]

        described: list[str] = []
        request: dict[str, Any] = {"StreamName": "big-4"}
        while True:
            description = client.call("DescribeStream", request)["StreamDescription"]
            assert len(description["Shards"]) <= 100
            described += [s["ShardId"] for s in description["Shards"]]
            if not description["HasMoreShards"]:
                break
            request["ExclusiveStartShardId"] = described[-1]
        assert described == listed

    with LimitsClient(cluster.endpoints[2]) as limits_client:
        limits_client.update_account(shard_limit=STREAMS * SHARDS + 10)
    with ShoalClient(cluster.endpoints[0], timeout_s=60) as client:
        with pytest.raises(ShoalError) as caught:
            client.call("CreateStream", {"StreamName": "one-too-many", "ShardCount": 11})
        assert caught.value.code.kinesis_name == "LimitExceededException"
        client.call("CreateStream", {"StreamName": "fits", "ShardCount": 10})
