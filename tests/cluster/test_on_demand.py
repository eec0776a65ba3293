"""On-demand scaling on a real 3-node cluster: a stream splits under sustained load where its
traffic halves and merges once the load stops, with no record lost, doubled or reordered within
a partition key.

Method: `ClusterProcesses` with short load windows and on-demand timers (env knobs); a
producer thread writes through all three nodes in turn, so most puts are forwarded to the
shard's leader and counted there; the scaling log and the shard list are watched through the
public APIs (CapacityService, ListShards); afterwards every shard is read back, parents first.
Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from broker.client.capacity import CapacityClient
from broker.client.grpc_client import ShoalClient
from broker.errors import ShoalError
from tests.cluster.helpers import wait_applied_everywhere
from tests.support import ClusterProcesses, read_shard, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KNOBS = {
    "SHOAL_LOAD_WINDOW_MS": "500",
    "SHOAL_LOAD_WINDOW_COUNT": "3",
    "SHOAL_LOAD_REPORT_INTERVAL_MS": "100",
    "SHOAL_LOAD_REPORT_STALE_MS": "2000",
    "SHOAL_AUTOSCALER_PASS_INTERVAL_MS": "100",
    "SHOAL_ON_DEMAND_SPLIT_RECORDS_PER_SECOND": "50",
    "SHOAL_ON_DEMAND_MERGE_PERCENT": "2",
    "SHOAL_ON_DEMAND_HOT_FOR_MS": "1000",
    "SHOAL_ON_DEMAND_COLD_FOR_MS": "1500",
    "SHOAL_ON_DEMAND_COOLDOWN_MS": "1000",
    "SHOAL_ON_DEMAND_MIN_SHARDS": "1",
    "SHOAL_ON_DEMAND_MAX_SHARDS": "2",
}


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return KNOBS


def _lower_quarter_keys(count: int) -> list[str]:
    """Partition keys whose MD5 lies below 2^126: all traffic in a quarter of the hash range."""
    keys = (f"user-{i}" for i in range(50 * count))
    low = [k for k in keys if int.from_bytes(hashlib.md5(k.encode()).digest(), "big") < 2**126]
    return low[:count]


class KeyedProducer:
    """A thread writing 10-record PutRecords about every 40 ms through each endpoint in turn,
    remembering per partition key the data acknowledged, in acknowledgement order. A failed
    call is not retried (a retry could store a record twice), only counted."""

    def __init__(self, endpoints: list[str], stream: str, keys: list[str]) -> None:
        self.endpoints = endpoints
        self.stream = stream
        self.keys = keys
        self.acknowledged: dict[str, list[bytes]] = {key: [] for key in keys}
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        clients = [ShoalClient(endpoint, timeout_s=30) for endpoint in self.endpoints]
        counter = 0
        try:
            while not self._stop.wait(0.04):
                batch: list[dict[str, Any]] = []
                for _ in range(10):
                    key = self.keys[counter % len(self.keys)]
                    batch.append({"PartitionKey": key, "Data": f"{key}:{counter}".encode()})
                    counter += 1
                client = clients[counter // 10 % len(clients)]
                try:
                    answer = client.call(
                        "PutRecords", {"StreamName": self.stream, "Records": batch}
                    )
                except ShoalError:
                    self.failed += 1
                    continue
                for sent, result in zip(batch, answer["Records"], strict=True):
                    if "SequenceNumber" in result:
                        self.acknowledged[sent["PartitionKey"]].append(sent["Data"])
                    else:
                        self.failed += 1
        finally:
            for client in clients:
                client.close()


def _events(endpoint: str, stream: str) -> list[dict[str, Any]]:
    with CapacityClient(endpoint) as capacity:
        events: list[dict[str, Any]] = capacity.list_scaling_events(stream)["events"]
        return events


def test_an_on_demand_stream_splits_under_load_and_merges_when_it_stops(
    cluster: ClusterProcesses,
) -> None:
    endpoints = cluster.endpoints
    with ShoalClient(endpoints[0]) as client:
        client.call("CreateStream", {"StreamName": "auto", "ShardCount": 1})
        wait_until(
            lambda: (
                client.call("DescribeStreamSummary", {"StreamName": "auto"})[
                    "StreamDescriptionSummary"
                ]["StreamStatus"]
                == "ACTIVE"
            ),
            deadline_s=30,
            what="stream ACTIVE",
        )
        arn = client.call("DescribeStreamSummary", {"StreamName": "auto"})[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        client.call(
            "UpdateStreamMode",
            {"StreamARN": arn, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}},
        )
    keys = _lower_quarter_keys(40)
    producer = KeyedProducer(endpoints, "auto", keys)
    producer.start()
    try:
        wait_until(
            lambda: any(e["kind"] == "SPLIT" for e in _events(endpoints[1], "auto")),
            deadline_s=40,
            what="an automatic split",
        )
        acknowledged_at_split = sum(len(v) for v in producer.acknowledged.values())
        wait_until(
            lambda: (
                sum(len(v) for v in producer.acknowledged.values()) > acknowledged_at_split + 100
            ),
            deadline_s=20,
            what="writes into the children",
        )
    finally:
        producer.stop()

    wait_applied_everywhere(endpoints)  # node 3 has the split node 2 reported
    with ShoalClient(endpoints[2]) as client:
        shards = client.call("ListShards", {"StreamName": "auto"})["Shards"]
    children = [s for s in shards if s.get("ParentShardId") == "shardId-000000000000"]
    assert len(children) == 2, shards
    split_key = max(int(s["HashKeyRange"]["StartingHashKey"]) for s in children)
    assert 0 < split_key < 2**126, split_key  # where the traffic halves, not the midpoint

    wait_until(
        lambda: any(e["kind"] == "MERGE" for e in _events(endpoints[2], "auto")),
        deadline_s=40,
        what="an automatic merge once the load stopped",
    )
    events = _events(endpoints[0], "auto")
    assert [e["kind"] for e in events] == ["SPLIT", "MERGE"], events

    with ShoalClient(endpoints[1], timeout_s=30) as client:
        wait_until(
            lambda: (
                len(
                    [
                        s
                        for s in client.call("ListShards", {"StreamName": "auto"})["Shards"]
                        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
                    ]
                )
                == 1
            ),
            deadline_s=20,
            what="one open shard",
        )
        shards = client.call("ListShards", {"StreamName": "auto"})["Shards"]
        read: dict[str, list[bytes]] = {key: [] for key in keys}
        for shard in sorted(shards, key=lambda s: s["ShardId"]):  # parents before children
            for record in read_shard(client, "auto", shard["ShardId"]):
                read[record["PartitionKey"]].append(record["Data"])
    total = sum(len(v) for v in producer.acknowledged.values())
    assert total > 200
    for key in keys:
        acked = producer.acknowledged[key]
        got = read[key]
        assert len(got) == len(set(got)), f"{key}: a record stored twice"
        # Acknowledged records all read back, in acknowledgement order (a failed call's records
        # may or may not have been stored: they may sit between them, never reorder them).
        missing = [data for data in acked if data not in got]
        assert not missing, f"{key}: {len(missing)} acknowledged records lost"
        positions = [got.index(data) for data in acked]
        assert positions == sorted(positions), key
        if producer.failed == 0:
            assert got == acked, key
