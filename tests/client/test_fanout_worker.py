"""The KCL-style worker in enhanced fan-out mode (`WorkerConfig(retrieval="fanout")`).

Goal: with fan-out chosen by configuration, the worker registers one stream consumer named
after the application (once, however many workers start), reads every shard through
SubscribeToShard, follows ChildShards across a split (parents before children, nothing
skipped), and subscribes again from the last continuation number when a subscription ends, so
no record is delivered twice or lost across the 5-minute boundary.

Method: an in-process node (real gRPC, RocksDB) whose manual clock the test moves to end
subscriptions; workers share an InMemoryLeaseClient; bounded waits on conditions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.client.worker import (
    InitializationInput,
    InMemoryLeaseClient,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
    Worker,
    WorkerConfig,
)
from broker.clock import ManualClock
from broker.node import Node
from broker.service.subscriptions import Subscriptions
from tests.conftest import connected_client, node_config, running_node

pytestmark = pytest.mark.integration

APP = "fanout-app"
STREAM = "s"
LIFETIME_MS = 1_000  # below the 2 s session timeout: moving the clock must not fence the node


async def wait_for(predicate: Callable[[], bool], *, deadline_s: float, what: str) -> None:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def subscriptions_of(node: Node) -> Subscriptions:
    """The node's open subscriptions (its statistics are what the bound is checked on)."""
    assert node.service is not None
    return node.service.subscriptions


class Recorder:
    """Every record every processor saw, as (shard, data, sequence number), in order."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, str]] = []
        self.ended: list[str] = []

    def data(self) -> list[bytes]:
        return [data for _, data, _ in self.records]


class RecordingProcessor:
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._shard_id = ""

    async def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        for record in process_records_input.records:
            assert record.sequence_number is not None
            self._recorder.records.append((self._shard_id, record.data, record.sequence_number))
        await process_records_input.checkpointer.checkpoint()

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        pass

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self._recorder.ended.append(self._shard_id)
        await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        await shutdown_requested_input.checkpointer.checkpoint()


@pytest.fixture
async def fanout_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(
        tmp_path / "node",
        settings={"subscription_bytes_per_second": 0},
        consumer_creating_ms=0,
        subscription_lifetime_ms=LIFETIME_MS,
        subscription_heartbeat_ms=LIFETIME_MS // 2,
        subscription_takeover_ms=LIFETIME_MS // 2,
    )
    async with running_node(config, clock) as node:
        yield node


@pytest.fixture
async def kinesis(fanout_node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(fanout_node) as client:
        yield client


def fanout_worker(
    kinesis: AsyncShoalClient, leases: InMemoryLeaseClient, recorder: Recorder, worker_id: str
) -> Worker:
    return Worker(
        application=APP,
        stream_name=STREAM,
        processor_factory=lambda: RecordingProcessor(recorder),
        lease_client=leases,
        kinesis=kinesis,
        config=WorkerConfig(
            worker_id=worker_id,
            retrieval="fanout",
            failover_ms=1_000,
            lease_take_interval_ms=200,
            shard_sync_interval_ms=200,
            parent_poll_interval_ms=100,
            retry_backoff_ms_min=50,
            retry_backoff_ms_max=500,
        ),
    )


async def put_many(kinesis: AsyncShoalClient, prefix: str, count: int) -> list[bytes]:
    data = [f"{prefix}-{i}".encode() for i in range(count)]
    response = await kinesis.call(
        "PutRecords",
        {
            "StreamName": STREAM,
            "Records": [{"PartitionKey": d.decode(), "Data": d} for d in data],
        },
    )
    assert response["FailedRecordCount"] == 0
    return data


async def stop(worker: Worker, run: asyncio.Task[None]) -> None:
    async with asyncio.timeout(30):
        await worker.shutdown()
        await run


async def test_fanout_worker_reads_every_shard_through_subscriptions(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    await kinesis.call("CreateStream", {"StreamName": STREAM, "ShardCount": 2})
    recorder = Recorder()
    leases = InMemoryLeaseClient()
    workers = [fanout_worker(kinesis, leases, recorder, f"w{i}") for i in range(2)]
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        expected = await put_many(kinesis, "a", 40)
        await wait_for(
            lambda: set(recorder.data()) >= set(expected), deadline_s=20, what="every record"
        )
        # One consumer for the application, however many workers registered it.
        stream_arn = (await kinesis.call("DescribeStreamSummary", {"StreamName": STREAM}))[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        consumers = (await kinesis.call("ListStreamConsumers", {"StreamARN": stream_arn}))[
            "Consumers"
        ]
        assert [c["ConsumerName"] for c in consumers] == [APP]
        # Read through subscriptions, one per shard (once the leases settled), not GetRecords.
        subscriptions = subscriptions_of(fanout_node)
        await wait_for(
            lambda: (
                sorted(s.shard_id for s in subscriptions.statistics())
                == ["shardId-000000000000", "shardId-000000000001"]
            ),
            deadline_s=10,
            what="a subscription per shard",
        )
        assert all(
            s.consumer_arn == consumers[0]["ConsumerARN"] for s in subscriptions.statistics()
        )
        # A record put now is pushed.
        pushed = await put_many(kinesis, "b", 4)
        await wait_for(lambda: set(recorder.data()) >= set(pushed), deadline_s=10, what="a push")
        # At least once: a lease stolen while the workers balanced is read again from its
        # checkpoint, so a record may repeat; none is missing.
        assert set(recorder.data()) == set(expected + pushed)
    finally:
        for worker, run in zip(workers, runs, strict=True):
            await stop(worker, run)
    await wait_for(lambda: subscriptions_of(fanout_node).count == 0, deadline_s=5, what="closed")


async def test_fanout_worker_resubscribes_after_the_lifetime_without_gaps_or_repeats(
    fanout_node: Node, kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    await kinesis.call("CreateStream", {"StreamName": STREAM, "ShardCount": 1})
    recorder = Recorder()
    worker = fanout_worker(kinesis, InMemoryLeaseClient(), recorder, "w0")
    run = asyncio.create_task(worker.run())
    subscriptions = subscriptions_of(fanout_node)
    try:
        first = await put_many(kinesis, "a", 10)
        await wait_for(lambda: recorder.data() == first, deadline_s=20, what="the first records")
        assert [s.records_sent for s in subscriptions.statistics()] == [10]
        clock.advance(ms=LIFETIME_MS)  # the subscription ends; the worker subscribes again
        await wait_for(  # from its continuation number: the new one has sent nothing yet
            lambda: [s.records_sent for s in subscriptions.statistics()] == [0],
            deadline_s=10,
            what="a new subscription",
        )
        second = await put_many(kinesis, "b", 10)
        await wait_for(
            lambda: len(recorder.data()) >= 20, deadline_s=10, what="records after resubscribing"
        )
        # No repeat can come: the new subscription sent exactly the new records (it resumed
        # after the first ten), and the worker processed everything it was sent.
        assert [s.records_sent for s in subscriptions.statistics()] == [10]
        assert recorder.data() == first + second
    finally:
        await stop(worker, run)


async def test_fanout_worker_follows_child_shards_parents_first(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    await kinesis.call("CreateStream", {"StreamName": STREAM, "ShardCount": 1})
    recorder = Recorder()
    worker = fanout_worker(kinesis, InMemoryLeaseClient(), recorder, "w0")
    run = asyncio.create_task(worker.run())
    try:
        before = await put_many(kinesis, "p", 20)
        await wait_for(lambda: set(recorder.data()) >= set(before), deadline_s=20, what="parent")
        await kinesis.call(
            "SplitShard",
            {
                "StreamName": STREAM,
                "ShardToSplit": "shardId-000000000000",
                "NewStartingHashKey": str(2**127),
            },
        )
        after = await put_many(kinesis, "c", 20)
        await wait_for(
            lambda: set(recorder.data()) >= set(after), deadline_s=30, what="the children's records"
        )
        assert recorder.ended == ["shardId-000000000000"]
        parent_positions = [i for i, r in enumerate(recorder.records) if r[0].endswith("0")]
        child_positions = [i for i, r in enumerate(recorder.records) if not r[0].endswith("0")]
        assert max(parent_positions) < min(child_positions)  # every parent record first
        assert sorted(recorder.data()) == sorted(before + after)
    finally:
        await stop(worker, run)
