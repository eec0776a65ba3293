"""CapacityService through its public gRPC API on an in-process node (real clock): a skewed
workload shows its hot key and hot shard first; an ON_DEMAND stream splits under sustained
load where its traffic halves (not at the midpoint) and merges once the load stops, with every
acknowledged record read back exactly once and in order per partition key.

Goal: the whole loop works end to end (leader-side trackers → ReportShardLoads → image →
autoscaler → BeginReshard → controller → CapacityService). Method: short windows and timers
(knobs), a producer task, bounded waits on what the public API shows."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from broker.client.capacity import CapacityClient
from broker.client.grpc_client import AsyncShoalClient
from broker.clock import SystemClock
from broker.errors import ErrorCode, ShoalError
from broker.node import Node
from tests.conftest import connected_client, node_config

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture
async def fast_node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(
        node_config(
            tmp_path / "node",
            # Short windows and timers: rates over the last 1-1.5 s, reports every 100 ms.
            load_window_ms=500,
            load_window_count=3,
            load_report_interval_ms=100,
            load_report_stale_ms=2_000,
            autoscaler_pass_interval_ms=100,
            on_demand_split_records_per_second=50,
            on_demand_merge_percent=2,  # a pair below 20 records/s is cold
            on_demand_hot_for_ms=1_000,
            on_demand_cold_for_ms=1_500,
            on_demand_cooldown_ms=1_000,
            on_demand_min_shards=1,
            on_demand_max_shards=2,
        ),
        clock=SystemClock(),
    )
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture
async def fast_client(fast_node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(fast_node) as connected:
        yield connected


@pytest.fixture
def capacity(fast_node: Node) -> Iterator[CapacityClient]:
    with CapacityClient(f"127.0.0.1:{fast_node.grpc_port}") as client:
        yield client


async def _eventually(
    probe: Callable[[], T], accept: Callable[[T], bool], *, deadline_s: float, what: str
) -> T:
    """Polls the blocking `probe` in a thread (the node runs on this loop) until `accept`."""
    give_up = time.monotonic() + deadline_s
    while True:
        value = await asyncio.to_thread(probe)
        if accept(value):
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.05)


async def _create(client: AsyncShoalClient, name: str, shards: int) -> None:
    await client.call("CreateStream", {"StreamName": name, "ShardCount": shards})
    for _ in range(200):
        described = await client.call("DescribeStreamSummary", {"StreamName": name})
        if described["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("stream never became ACTIVE")


def _hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


async def test_a_skewed_workload_shows_its_hot_key_and_shard_first(
    fast_client: AsyncShoalClient, capacity: CapacityClient
) -> None:
    await _create(fast_client, "skewed", 2)
    records = [{"PartitionKey": "hot", "Data": b"x" * 100}] * 60 + [
        {"PartitionKey": f"cold-{i}", "Data": b"x" * 100} for i in range(40)
    ]
    for _ in range(3):
        answer = await fast_client.call("PutRecords", {"StreamName": "skewed", "Records": records})
        assert answer["FailedRecordCount"] == 0

    keys = await _eventually(
        lambda: capacity.describe_hot_keys("skewed")["keys"],
        lambda keys: bool(keys),
        deadline_s=10,
        what="hot keys reported",
    )
    assert keys[0]["partition_key"] == "hot"
    assert keys[0]["records_per_second"] >= keys[0]["records_per_second_error"] > -1
    hot_shard = keys[0]["shard_id"]
    assert len(keys) <= 10

    shards = await asyncio.to_thread(capacity.describe_hot_shards, "skewed")
    assert shards["stream_mode"] == "PROVISIONED"
    assert shards["open_shard_count"] == 2
    assert shards["shards"][0]["shard_id"] == hot_shard
    assert shards["shards"][0]["reported"] is True
    assert shards["shards"][0]["records_per_second"] > shards["shards"][1]["records_per_second"]
    only = (
        await asyncio.to_thread(capacity.describe_hot_keys, "skewed", shard_id=hot_shard, limit=1)
    )["keys"]
    assert [k["partition_key"] for k in only] == ["hot"]
    assert (await asyncio.to_thread(capacity.list_scaling_events, "skewed"))["events"] == []


async def test_capacity_errors_are_kinesis_errors(
    fast_client: AsyncShoalClient, capacity: CapacityClient
) -> None:
    with pytest.raises(ShoalError) as missing:
        await asyncio.to_thread(capacity.describe_hot_shards, "nope")
    assert missing.value.code is ErrorCode.RESOURCE_NOT_FOUND
    await _create(fast_client, "s", 1)
    with pytest.raises(ShoalError) as bad_limit:
        await asyncio.to_thread(capacity.describe_hot_keys, "s", limit=0)
    assert bad_limit.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(ShoalError) as bad_shard:
        await asyncio.to_thread(capacity.describe_hot_keys, "s", shard_id="shardId-000000000009")
    assert bad_shard.value.code is ErrorCode.RESOURCE_NOT_FOUND


def _lower_quarter_keys(count: int) -> list[str]:
    """Partition keys hashing below 2^126: all traffic in the lowest quarter of the range."""
    keys = [k for k in (f"user-{i}" for i in range(20 * count)) if _hash_key(k) < 2**126]
    return keys[:count]


async def _read_all(client: AsyncShoalClient, stream: str) -> list[dict[str, Any]]:
    """Every shard from TRIM_HORIZON, in index order (parents before children)."""
    listed = await client.call("ListShards", {"StreamName": stream})
    records: list[dict[str, Any]] = []
    for shard in sorted(listed["Shards"], key=lambda s: s["ShardId"]):
        iterator = (
            await client.call(
                "GetShardIterator",
                {
                    "StreamName": stream,
                    "ShardId": shard["ShardId"],
                    "ShardIteratorType": "TRIM_HORIZON",
                },
            )
        )["ShardIterator"]
        for _ in range(10_000):
            answer = await client.call("GetRecords", {"ShardIterator": iterator})
            records += answer["Records"]
            iterator = answer.get("NextShardIterator")
            if iterator is None or (not answer["Records"] and answer["MillisBehindLatest"] == 0):
                break
        else:
            raise AssertionError("shard did not end")
    return records


@pytest.mark.slow
async def test_on_demand_stream_splits_where_traffic_halves_and_merges_when_idle(
    fast_client: AsyncShoalClient, capacity: CapacityClient
) -> None:
    client = fast_client
    await _create(client, "auto", 1)
    arn = (await client.call("DescribeStreamSummary", {"StreamName": "auto"}))[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    await client.call(
        "UpdateStreamMode", {"StreamARN": arn, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
    )
    keys = _lower_quarter_keys(40)
    acknowledged: dict[str, list[bytes]] = {key: [] for key in keys}
    in_children = 0  # records acknowledged by a shard other than the first
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal in_children
        counter = 0
        while not stop.is_set():
            batch: list[dict[str, Any]] = []
            for _ in range(10):
                key = keys[counter % len(keys)]
                batch.append({"PartitionKey": key, "Data": f"{key}:{counter}".encode()})
                counter += 1
            answer = await client.call("PutRecords", {"StreamName": "auto", "Records": batch})
            for sent, result in zip(batch, answer["Records"], strict=True):
                if "SequenceNumber" in result:
                    acknowledged[sent["PartitionKey"]].append(sent["Data"])
                    in_children += result["ShardId"] != "shardId-000000000000"
            await asyncio.sleep(0.04)  # about 200 records/s: four times the split rate

    producer = asyncio.create_task(produce())
    try:
        split = await _eventually(
            lambda: capacity.list_scaling_events("auto")["events"],
            lambda events: any(e["kind"] == "SPLIT" for e in events),
            deadline_s=30,
            what="an automatic split",
        )
        # Keep writing until the children hold records too (the read-back below spans both).
        await _eventually(
            lambda: in_children, lambda count: count >= 50, deadline_s=10, what="children's records"
        )
    finally:
        stop.set()
        await producer
    assert split[0]["kind"] == "SPLIT", split
    assert "halves its recent traffic" in split[0]["reason"]

    listed = (await client.call("ListShards", {"StreamName": "auto"}))["Shards"]
    children = [s for s in listed if s.get("ParentShardId") == "shardId-000000000000"]
    assert len(children) == 2
    split_key = max(int(s["HashKeyRange"]["StartingHashKey"]) for s in children)
    # All traffic hashes below 2^126, so the key that halves it does too: far from the
    # midpoint (2^127) that AWS's split would use.
    assert 0 < split_key < 2**126, split_key

    events = await _eventually(
        lambda: capacity.list_scaling_events("auto")["events"],
        lambda events: any(e["kind"] == "MERGE" for e in events),
        deadline_s=30,
        what="an automatic merge once the load stopped",
    )
    assert [e["kind"] for e in events] == ["SPLIT", "MERGE"], events
    summary = await _eventually(
        lambda: capacity.describe_hot_shards("auto"),
        lambda answer: answer["open_shard_count"] == 1,
        deadline_s=10,
        what="one open shard after the merge",
    )
    assert summary["stream_mode"] == "ON_DEMAND"
    described = await client.call("DescribeStreamSummary", {"StreamName": "auto"})
    assert described["StreamDescriptionSummary"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}

    read = await _read_all(client, "auto")
    by_key: dict[str, list[bytes]] = {key: [] for key in keys}
    for record in read:
        by_key[record["PartitionKey"]].append(record["Data"])
    total = sum(len(v) for v in acknowledged.values())
    assert total > 200
    assert len(read) == total  # nothing lost, nothing stored twice
    for key in keys:
        assert by_key[key] == acknowledged[key], key  # in order per partition key
