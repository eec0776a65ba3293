"""Explicit hash keys put through nodes that do not lead the shard count where they were routed.

Goal: on a real 3-node cluster, PutRecords with ExplicitHashKey sent only to the two nodes that
do not lead the shard (so every record is forwarded over NodeService.ShardAppend) make the
leader report the traffic split key among the explicit hash keys, and the hot key and rates
as sent. The partition keys' MD5s all lie in the upper half of the range, so a leader that
hashed them again would report a split key at or above 2^127. Method: `ClusterProcesses` with
short load windows (env knobs), the public Kinesis and Capacity gRPC APIs, bounded waits.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from broker.client.capacity import CapacityClient
from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import wait_applied_everywhere
from tests.support import ClusterProcesses, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KNOBS = {
    "SHOAL_LOAD_WINDOW_MS": "1000",
    "SHOAL_LOAD_WINDOW_COUNT": "5",
    "SHOAL_LOAD_REPORT_INTERVAL_MS": "100",
    "SHOAL_LOAD_REPORT_STALE_MS": "4000",
}
LOW = 2**125  # every explicit hash key lies below: the traffic halves near 2^124


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return KNOBS


def _upper_half_keys(count: int) -> list[str]:
    keys = (f"user-{i}" for i in range(20 * count))
    md5 = hashlib.md5
    return [k for k in keys if int.from_bytes(md5(k.encode()).digest(), "big") >= 2**127][:count]


def _shard_load(endpoint: str) -> dict[str, Any]:
    with CapacityClient(endpoint) as capacity:
        shards: list[dict[str, Any]] = capacity.describe_hot_shards("s")["shards"]
        return shards[0]


def test_explicit_hash_keys_through_non_leaders_place_the_split_key(
    cluster: ClusterProcesses,
) -> None:
    endpoints = cluster.endpoints
    with ShoalClient(endpoints[0]) as client:
        client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
        wait_until(
            lambda: (
                client.call("DescribeStreamSummary", {"StreamName": "s"})[
                    "StreamDescriptionSummary"
                ]["StreamStatus"]
                == "ACTIVE"
            ),
            deadline_s=30,
            what="stream ACTIVE",
        )
    wait_until(lambda: bool(_shard_load(endpoints[0])["leader"]), deadline_s=30, what="a leader")
    wait_applied_everywhere(endpoints)  # the writes go through the other nodes
    leader = cluster.node_named(_shard_load(endpoints[0])["leader"]).endpoint
    others = [endpoint for endpoint in endpoints if endpoint != leader]
    assert len(others) == 2

    keys = ["hot"] * 20 + _upper_half_keys(30)
    batch = [
        {"PartitionKey": key, "Data": b"x" * 100, "ExplicitHashKey": str(i * (LOW // len(keys)))}
        for i, key in enumerate(keys)
    ]
    for round_ in range(6):
        with ShoalClient(others[round_ % 2]) as client:
            answer = client.call("PutRecords", {"StreamName": "s", "Records": batch})
        assert answer["FailedRecordCount"] == 0, answer

    load: dict[str, Any] = {}

    def reported() -> bool:
        nonlocal load
        load = _shard_load(endpoints[0])
        return bool(load.get("split_hash_key"))

    wait_until(reported, deadline_s=20, what="the leader's split key")
    assert 0 < int(load["split_hash_key"]) < LOW, load  # MD5s would put it at >= 2^127
    assert load["records_per_second"] > 0
    with CapacityClient(endpoints[1]) as capacity:
        hot = capacity.describe_hot_keys("s", limit=1)["keys"]
    assert [k["partition_key"] for k in hot] == ["hot"], hot
