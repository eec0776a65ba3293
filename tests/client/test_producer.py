"""KinesisProducer against an in-process node (broker/client/producer.py).

Goal: every user record put is stored once, in the shard its hash key belongs to, and reads
back (de-aggregated) as it was put, with aggregation on or off, under throttling and across a
reshard. Throttling tests share the node's manual clock with the producer, so a backoff or a
refill happens when the test moves virtual time, not after real sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.client.kpl import UserRecord, deaggregate
from broker.client.producer import (
    KinesisProducer,
    ProducerConfig,
    ProducerError,
    PutResult,
)
from broker.clock import ManualClock
from broker.node import Node
from tests.conftest import node_config

pytestmark = pytest.mark.integration

HASH_MAX = 2**128 - 1


def md5_hash(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


async def shard_ranges(client: AsyncShoalClient, stream: str) -> dict[str, tuple[int, int]]:
    response = await client.call("ListShards", {"StreamName": stream})
    return {
        shard["ShardId"]: (
            int(shard["HashKeyRange"]["StartingHashKey"]),
            int(shard["HashKeyRange"]["EndingHashKey"]),
        )
        for shard in response["Shards"]
    }


async def read_shard(client: AsyncShoalClient, stream: str, shard_id: str) -> list[dict[str, Any]]:
    response = await client.call(
        "GetShardIterator",
        {"StreamName": stream, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"},
    )
    token = response["ShardIterator"]
    records: list[dict[str, Any]] = []
    for _ in range(1_000):
        response = await client.call("GetRecords", {"ShardIterator": token})
        records += response["Records"]
        token = response.get("NextShardIterator")
        if token is None or (not response["Records"] and response["MillisBehindLatest"] == 0):
            return records
    raise AssertionError("the shard did not end")


async def read_users(
    client: AsyncShoalClient, stream: str
) -> tuple[dict[str, list[UserRecord]], int]:
    """Every shard's user records, de-aggregated with its hash range as the KCL does, and how
    many Kinesis records held them."""
    by_shard: dict[str, list[UserRecord]] = {}
    kinesis_records = 0
    for shard_id, hash_range in (await shard_ranges(client, stream)).items():
        records = await read_shard(client, stream, shard_id)
        kinesis_records += len(records)
        by_shard[shard_id] = [
            user for record in records for user in deaggregate(record, shard_hash_range=hash_range)
        ]
    return by_shard, kinesis_records


async def put_all(
    producer: KinesisProducer, records: list[tuple[str, bytes]]
) -> list[asyncio.Future[PutResult]]:
    return [await producer.put(key, data) for key, data in records]


def workload(count: int, *, keys: int) -> list[tuple[str, bytes]]:
    return [(f"key-{i % keys}", f"record-{i}".encode()) for i in range(count)]


async def check_stored_once(
    client: AsyncShoalClient,
    stream: str,
    records: list[tuple[str, bytes]],
    results: list[PutResult],
    *,
    ordered: bool = False,
) -> int:
    """Each record is stored once, in its hash key's shard, where its PutResult says (and with
    `ordered`, in put order per key: retries may reorder); returns how many Kinesis records
    held them."""
    ranges = await shard_ranges(client, stream)
    by_shard, kinesis_records = await read_users(client, stream)
    stored = {
        (user.sequence_number, user.sub_sequence_number): (shard_id, user)
        for shard_id, users in by_shard.items()
        for user in users
    }
    assert sum(len(users) for users in by_shard.values()) == len(records)  # no duplicates
    for (key, data), result in zip(records, results, strict=True):
        shard_id, user = stored[(result.sequence_number, result.sub_sequence_number)]
        assert shard_id == result.shard_id
        assert (user.partition_key, user.data) == (key, data)
        low, high = ranges[shard_id]
        assert low <= md5_hash(key) <= high
    for users in by_shard.values() if ordered else ():
        for key in {u.partition_key for u in users}:
            datas = [u.data for u in users if u.partition_key == key]
            assert datas == [d for k, d in records if k == key and d in datas]
    return kinesis_records


async def wait_all(
    futures: list[asyncio.Future[PutResult]],
    *,
    tick: Callable[[], None] | None = None,
    deadline_s: float = 30.0,
) -> None:
    """Wait for every future; with `tick`, call it between short waits (to move virtual time)."""
    async with asyncio.timeout(deadline_s):
        while not all(f.done() for f in futures):
            if tick is not None:
                tick()
            await asyncio.wait(futures, timeout=0.01)


async def wait_done(futures: list[asyncio.Future[PutResult]], *, count: int) -> None:
    async with asyncio.timeout(10):
        while sum(f.done() for f in futures) < count:
            await asyncio.wait(
                [f for f in futures if not f.done()], return_when=asyncio.FIRST_COMPLETED
            )


async def create_stream(client: AsyncShoalClient, name: str, shards: int) -> None:
    await client.call("CreateStream", {"StreamName": name, "ShardCount": shards})


@pytest.mark.parametrize("aggregation", [True, False], ids=["aggregated", "plain"])
async def test_records_land_in_their_shards_and_read_back(
    client: AsyncShoalClient, aggregation: bool
) -> None:
    await create_stream(client, "s", 4)
    records = workload(400, keys=37)
    config = ProducerConfig(aggregation_enabled=aggregation, aggregation_bytes_max=2_000)
    async with KinesisProducer(client, stream_name="s", config=config) as producer:
        futures = await put_all(producer, records)
        await producer.flush(timeout_ms=30_000)
    results = [f.result() for f in futures]
    kinesis_records = await check_stored_once(client, "s", records, results, ordered=True)
    if aggregation:
        assert kinesis_records < len(records) // 10
        assert any(r.sub_sequence_number > 0 for r in results)
    else:
        assert kinesis_records == len(records)
        assert all(r.sub_sequence_number == 0 for r in results)
    assert all(r.attempts == 1 for r in results)


async def test_a_record_too_large_to_aggregate_is_sent_alone(client: AsyncShoalClient) -> None:
    await create_stream(client, "s", 1)
    records = [("a", b"small-1"), ("a", b"x" * 5_000), ("a", b"small-2"), ("a", b"small-3")]
    config = ProducerConfig(aggregation_bytes_max=1_000)
    async with KinesisProducer(client, stream_name="s", config=config) as producer:
        futures = await put_all(producer, records)
    results = [f.result() for f in futures]
    assert [r.sub_sequence_number for r in results] == [0, 0, 0, 1]
    stored = await read_shard(client, "s", "shardId-000000000000")
    assert [r["Data"] for r in stored[:2]] == [b"small-1", b"x" * 5_000]  # plain, as the KPL
    assert await check_stored_once(client, "s", records, results, ordered=True) == 3


async def test_explicit_hash_keys_route_records(client: AsyncShoalClient) -> None:
    await create_stream(client, "s", 2)
    ranges = await shard_ranges(client, "s")
    async with KinesisProducer(client, stream_name="s") as producer:
        futures = [
            await producer.put(f"k{i}", b"%d" % i, explicit_hash_key=str(i * (HASH_MAX // 9)))
            for i in range(10)
        ]
    by_shard, _ = await read_users(client, "s")
    for i, future in enumerate(futures):
        low, high = ranges[future.result().shard_id]
        assert low <= i * (HASH_MAX // 9) <= high
    users = [u for users in by_shard.values() for u in users]
    assert sorted(u.data for u in users) == sorted(b"%d" % i for i in range(10))
    assert all(u.explicit_hash_key is not None for u in users)


async def test_records_go_out_after_the_linger_time(client: AsyncShoalClient) -> None:
    """Without a flush, buffered records are sent once they waited record_max_buffered_time_ms
    (the producer's own clock is the real one here)."""
    await create_stream(client, "s", 1)
    config = ProducerConfig(record_max_buffered_time_ms=20)
    async with KinesisProducer(client, stream_name="s", config=config) as producer:
        futures = await put_all(producer, workload(5, keys=2))
        await wait_all(futures, deadline_s=10)
        assert producer.statistics().kinesis_records_sent == 1  # one aggregate


async def test_put_waits_while_the_producer_is_full(client: AsyncShoalClient) -> None:
    """A put finding the producer full sends what is buffered at once (not after the linger
    time) and returns only once a record resolved."""
    await create_stream(client, "s", 1)
    config = ProducerConfig(buffered_records_max=3, record_max_buffered_time_ms=600_000)
    async with KinesisProducer(client, stream_name="s", config=config) as producer:
        futures = await put_all(producer, workload(3, keys=3))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not any(f.done() for f in futures)  # lingering
        async with asyncio.timeout(10):
            fourth = await producer.put("k", b"fourth")
        assert any(f.done() for f in futures)
        assert producer.statistics().outstanding_records <= 3
    assert fourth.result().sequence_number
    assert all(f.result().attempts == 1 for f in futures)


@pytest.fixture
def throttled_node(tmp_path: Path, clock: ManualClock) -> Callable[[], Awaitable[Node]]:
    nodes: list[Node] = []

    async def start() -> Node:
        settings = {"shard_write_records_per_second": 5}
        node = Node(node_config(tmp_path / "node", settings=settings), clock=clock)
        await node.start()
        nodes.append(node)
        return node

    return start


@pytest.fixture
async def throttled_client(
    throttled_node: Callable[[], Awaitable[Node]],
) -> AsyncIterator[AsyncShoalClient]:
    node = await throttled_node()
    client = AsyncShoalClient(f"127.0.0.1:{node.grpc_port}")
    try:
        yield client
    finally:
        await client.close()
        await node.stop()


async def test_throttled_records_are_retried(
    throttled_client: AsyncShoalClient, clock: ManualClock
) -> None:
    """A shard takes 5 records/s; 20 plain records with the producer's limiter off are mostly
    refused at first, retried with backoff while virtual time passes, and all stored once."""
    await create_stream(throttled_client, "s", 1)
    config = ProducerConfig(aggregation_enabled=False, rate_limit_enabled=False, attempts_max=50)
    records = workload(20, keys=4)
    producer = KinesisProducer(throttled_client, stream_name="s", config=config, clock=clock)
    async with producer:
        futures = await put_all(producer, records)
        await wait_all(futures, tick=lambda: clock.advance(ms=100))
        assert producer.statistics().retries >= 15
    results = [f.result() for f in futures]
    assert max(r.attempts for r in results) > 1
    await check_stored_once(throttled_client, "s", records, results)


async def test_records_fail_after_the_last_attempt(
    throttled_client: AsyncShoalClient, clock: ManualClock
) -> None:
    """The node's clock stands still, so its bucket never refills: after attempts_max tries
    the records it refused fail with the throttling error (real-time backoff here)."""
    await create_stream(throttled_client, "s", 1)
    config = ProducerConfig(
        aggregation_enabled=False,
        rate_limit_enabled=False,
        attempts_max=3,
        retry_backoff_ms_min=1,
        retry_backoff_ms_max=2,
    )
    async with KinesisProducer(throttled_client, stream_name="s", config=config) as producer:
        futures = await put_all(producer, workload(8, keys=8))
        await wait_all(futures, deadline_s=10)
    failed = [f.exception() for f in futures if f.exception() is not None]
    assert len(failed) == 3
    for error in failed:
        assert isinstance(error, ProducerError)
        assert error.error_code == "ProvisionedThroughputExceededException"
        assert error.attempts == 3


async def test_the_rate_limiter_holds_records_back(
    client: AsyncShoalClient, clock: ManualClock
) -> None:
    """With the producer's limiter at 4 records/s per shard, 10 plain records take three
    refills of virtual time; the (unlimited) node never throttles."""
    await create_stream(client, "s", 1)
    config = ProducerConfig(
        aggregation_enabled=False, shard_records_per_second=4, rate_limit_percent=100
    )
    producer = KinesisProducer(client, stream_name="s", config=config, clock=clock)
    async with producer:
        futures = await put_all(producer, workload(10, keys=1))
        flushing = asyncio.ensure_future(producer.flush(timeout_ms=30_000))
        sent: list[int] = []
        for _ in range(3):
            await wait_done(futures, count=min(10, 4 * (len(sent) + 1)))
            sent.append(producer.statistics().kinesis_records_sent)
            clock.advance(ms=1_000)
        await flushing
    assert sent == [4, 8, 10]
    assert all(f.result().attempts == 1 for f in futures)


async def test_a_reshard_under_a_stale_shard_map_stores_every_record_once(
    client: AsyncShoalClient,
) -> None:
    """The producer predicts from one shard; the stream is split to two before it sends, so
    its aggregates land in a child holding records of both children. Those are sent again
    and their first copy is the one the KCL's range check drops."""
    await _reshard_under_a_stale_map(client)


async def test_a_reshard_still_updating_is_judged_once_its_shards_are_listed(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the reshard keeps the stream UPDATING, its listing shows the old shard (as AWS's
    does) though records already land in the children: the producer waits until the children
    are listed before judging, so an aggregate stored in range is not written twice."""
    node = Node(node_config(tmp_path / "node", stream_updating_ms=60_000), clock=clock)
    await node.start()
    client = AsyncShoalClient(f"127.0.0.1:{node.grpc_port}")
    listed = asyncio.Event()  # a ListShards answered since the reshard
    call = client.call

    async def counting_call(
        operation: str, request: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        answer = await call(operation, request)
        if operation == "ListShards":
            listed.set()
        return answer

    monkeypatch.setattr(client, "call", counting_call)

    async def updating_ends() -> None:
        # The producer meets the old listing first (the one UPDATING shows), then it ends.
        listed.clear()
        await asyncio.wait_for(listed.wait(), timeout=30)
        clock.advance(ms=60_000)

    try:
        results = await _reshard_under_a_stale_map(client, after_reshard=updating_ends)
    finally:
        await client.close()
        await node.stop()
    # The first records (the low half's keys only; the aggregate holding the 100th may hold
    # mixed ones too) were misplaced in range: kept at once, never written twice.
    assert all(result.attempts == 1 for result in results[:50])


async def _reshard_under_a_stale_map(
    client: AsyncShoalClient, *, after_reshard: Callable[[], Awaitable[None]] | None = None
) -> list[PutResult]:
    await create_stream(client, "s", 1)
    config = ProducerConfig(record_max_buffered_time_ms=600_000, aggregation_bytes_max=1_000)
    # The split puts the children's boundary at 2^127. First records of the low half only (their
    # aggregates are misplaced but hold no foreign record), then both halves mixed.
    candidates = [f"key-{i}" for i in range(200)]
    low = [k for k in candidates if md5_hash(k) < 2**127][:10]
    high = [k for k in candidates if md5_hash(k) >= 2**127][:10]
    records = [(low[i % 10], b"low-%d" % i) for i in range(100)]
    records += [((low, high)[i % 2][i % 10], b"mixed-%d" % i) for i in range(100)]
    async with KinesisProducer(client, stream_name="s", config=config) as producer:
        futures = await put_all(producer, records)
        await client.call(
            "UpdateShardCount",
            {"StreamName": "s", "TargetShardCount": 2, "ScalingType": "UNIFORM_SCALING"},
        )
        ending = None if after_reshard is None else asyncio.ensure_future(after_reshard())
        await producer.flush(timeout_ms=30_000)
        if ending is not None:
            await ending
        assert producer.statistics().retries > 0
    results = [f.result() for f in futures]
    assert {r.shard_id for r in results} == {"shardId-000000000001", "shardId-000000000002"}
    assert any(r.attempts == 1 for r in results)  # misplaced, but every record in range: kept
    assert any(r.attempts > 1 for r in results)  # misplaced with out-of-range records: resent
    await check_stored_once(client, "s", records, results)
    return results
