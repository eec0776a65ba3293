"""The KCL-style worker (broker/client/worker.py) against an in-process node.

Goal: several workers in one process, sharing one InMemoryLeaseClient, behave as a KCL fleet:
shards are spread evenly; a killed worker's shards are processed by the others within the
failover time; across a split and a merge no record is skipped and no child record comes before
its parents' records; a graceful shutdown hands the shards over at their checkpoints; KPL
aggregates are de-aggregated and a sub-sequence checkpoint resumes at the next user record; and
no two workers ever both checkpoint a shard in one lease period.

Method: real time with a short failover (1 s) and bounded waits on conditions (`wait_for`); the
node keeps its manual clock (nothing here depends on the node's time).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.client.kpl import UserRecord, aggregate
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
from broker.consumers.leases import Checkpoint, CheckpointLease, Lease, LeaseError

pytestmark = pytest.mark.integration

APP = "app"
STREAM = "s"
FAILOVER_MS = 1_000
TAKE_MS = 200


async def wait_for(predicate: Callable[[], bool], *, deadline_s: float, what: str) -> float:
    """Poll `predicate` until true; returns the seconds it took; fails after `deadline_s`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@dataclass
class Delivery:
    worker_id: str
    shard_id: str
    data: bytes
    sequence_number: str
    sub_sequence_number: int


@dataclass
class Journal:
    """Everything every processor saw, in the order the event loop delivered it."""

    deliveries: list[Delivery] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (worker, shard, event)
    checkpoint_every_batch: bool = True
    checkpoint_on_shutdown: bool = True
    # (sequence number, sub-sequence number): checkpoint exactly there instead.
    checkpoint_at: tuple[str, int] | None = None

    def delivered(self) -> set[bytes]:
        return {d.data for d in self.deliveries}

    def event_count(self, event: str, worker_id: str | None = None) -> int:
        return sum(
            1 for w, _, e in self.events if e == event and (worker_id is None or w == worker_id)
        )


class JournalProcessor:
    def __init__(self, journal: Journal, worker_id: str) -> None:
        self.journal = journal
        self.worker_id = worker_id
        self.shard_id = ""

    async def initialize(self, initialization_input: InitializationInput) -> None:
        self.shard_id = initialization_input.shard_id
        self.journal.events.append((self.worker_id, self.shard_id, "initialize"))

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        if not process_records_input.records:  # only with WorkerConfig.process_empty_batches
            behind = process_records_input.millis_behind_latest
            self.journal.events.append((self.worker_id, self.shard_id, f"empty {behind}"))
        for record in process_records_input.records:
            assert record.sequence_number is not None
            self.journal.deliveries.append(
                Delivery(
                    self.worker_id,
                    self.shard_id,
                    record.data,
                    record.sequence_number,
                    record.sub_sequence_number,
                )
            )
        checkpointer = process_records_input.checkpointer
        at = self.journal.checkpoint_at
        if at is not None:
            await checkpointer.checkpoint(*at)
        elif self.journal.checkpoint_every_batch:
            await checkpointer.checkpoint()

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self.journal.events.append((self.worker_id, self.shard_id, "lease_lost"))

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self.journal.events.append((self.worker_id, self.shard_id, "shard_ended"))
        await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        self.journal.events.append((self.worker_id, self.shard_id, "shutdown_requested"))
        if self.journal.checkpoint_on_shutdown:
            await shutdown_requested_input.checkpointer.checkpoint()


class AuditedLeaseClient(InMemoryLeaseClient):
    """Records every successful checkpoint with the lease period (counter) it was made in."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: list[tuple[str, int, str]] = []  # (shard, counter, owner)

    async def checkpoint(self, operation: CheckpointLease) -> Lease | LeaseError:
        result = await super().checkpoint(operation)
        if isinstance(result, Lease):
            self.checkpoints.append((result.lease_key, operation.expected_counter, operation.owner))
        return result

    def assert_one_checkpointer_per_period(self) -> None:
        owners: dict[tuple[str, int], str] = {}
        for shard, counter, owner in self.checkpoints:
            assert owners.setdefault((shard, counter), owner) == owner, (shard, counter)

    def owners(self) -> dict[str, str | None]:
        return {
            lease.lease_key: lease.lease_owner
            for lease in self.table.stream_leases(APP, STREAM).values()
        }


@dataclass
class Fleet:
    client: AsyncShoalClient
    lease_client: AuditedLeaseClient
    journal: Journal
    workers: dict[str, Worker] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, worker_id: str, **overrides: Any) -> Worker:
        settings: dict[str, Any] = {
            "worker_id": worker_id,
            "failover_ms": FAILOVER_MS,
            "lease_take_interval_ms": TAKE_MS,
            "polling_idle_interval_ms": 20,
            "shard_sync_interval_ms": 500,
            "parent_poll_interval_ms": 50,
            "retry_backoff_ms_min": 10,
            "retry_backoff_ms_max": 100,
            "shutdown_timeout_ms": 10_000,
            "rng": random.Random(worker_id),
        }
        worker = Worker(
            application=APP,
            stream_name=STREAM,
            processor_factory=lambda: JournalProcessor(self.journal, worker_id),
            lease_client=self.lease_client,
            kinesis=self.client,
            config=WorkerConfig(**{**settings, **overrides}),
        )
        self.workers[worker_id] = worker
        self.tasks[worker_id] = asyncio.create_task(worker.run())
        return worker

    async def kill(self, worker_id: str) -> None:
        """A crash: cancel the worker; it releases nothing."""
        task = self.tasks.pop(worker_id)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del self.workers[worker_id]

    async def shutdown(self, worker_id: str) -> None:
        async with asyncio.timeout(15):
            await self.workers.pop(worker_id).shutdown()
            await self.tasks.pop(worker_id)

    def held(self) -> dict[str, int]:
        return {w: len(worker.statistics().held_shard_ids) for w, worker in self.workers.items()}

    def balanced(self, shard_count: int) -> bool:
        counts = self.held()
        owners = self.lease_client.owners()
        return (
            sum(counts.values()) == shard_count
            and max(counts.values()) - min(counts.values()) <= 1
            and all(owner in self.workers for owner in owners.values())
        )


@pytest.fixture
async def fleet(client: AsyncShoalClient) -> AsyncIterator[Fleet]:
    fleet = Fleet(client=client, lease_client=AuditedLeaseClient(), journal=Journal())
    try:
        yield fleet
    finally:
        for worker_id in list(fleet.tasks):
            await fleet.kill(worker_id)
        fleet.lease_client.assert_one_checkpointer_per_period()


async def create_stream(client: AsyncShoalClient, shards: int) -> None:
    await client.call("CreateStream", {"StreamName": STREAM, "ShardCount": shards})


async def put(client: AsyncShoalClient, prefix: str, count: int) -> set[bytes]:
    """`count` records spread over the hash space (one PutRecords)."""
    data = [f"{prefix}-{i}".encode() for i in range(count)]
    entries = [{"Data": d, "PartitionKey": f"key-{d.decode()}"} for d in data]
    response = await client.call("PutRecords", {"StreamName": STREAM, "Records": entries})
    assert response["FailedRecordCount"] == 0
    return set(data)


async def test_workers_share_shards_evenly(fleet: Fleet) -> None:
    await create_stream(fleet.client, 7)
    for worker_id in ("w0", "w1", "w2"):
        fleet.start(worker_id)
    await wait_for(lambda: fleet.balanced(7), deadline_s=15, what="3 workers holding 3/2/2")
    assert sorted(fleet.held().values()) == [2, 2, 3]
    records = await put(fleet.client, "a", 300)
    await wait_for(lambda: records <= fleet.journal.delivered(), deadline_s=15, what="delivery")
    # A fourth worker joins: the fleet rebalances to 2/2/2/1 by stealing.
    fleet.start("w3")
    await wait_for(lambda: fleet.balanced(7), deadline_s=15, what="4 workers holding 2/2/2/1")
    assert sorted(fleet.held().values()) == [1, 2, 2, 2]
    assert sum(w.statistics().leases_stolen for w in fleet.workers.values()) >= 1
    assert fleet.journal.event_count("lease_lost") >= 1, "a victim of stealing loses its lease"
    more = await put(fleet.client, "b", 300)
    await wait_for(lambda: more <= fleet.journal.delivered(), deadline_s=15, what="delivery")


async def test_a_killed_workers_shards_are_processed_by_others(fleet: Fleet) -> None:
    """A worker is cancelled without shutting down; the survivors notice its counters stand
    still for the failover time (their own clocks) and take its shards: records put after the
    kill are processed within about failover + take interval."""
    await create_stream(fleet.client, 4)
    for worker_id in ("w0", "w1", "w2"):
        fleet.start(worker_id)
    await wait_for(lambda: fleet.balanced(4), deadline_s=15, what="balance")
    victim = max(fleet.held(), key=lambda w: fleet.held()[w])
    victim_shards = set(fleet.workers[victim].statistics().held_shard_ids)
    await fleet.kill(victim)
    records = await put(fleet.client, "after-kill", 200)
    took_s = await wait_for(
        lambda: records <= fleet.journal.delivered(), deadline_s=10, what="takeover"
    )
    assert took_s < (FAILOVER_MS + 3 * TAKE_MS) / 1000 + 2.0
    survivors = {d.shard_id: d.worker_id for d in fleet.journal.deliveries[-len(records) :]}
    assert victim_shards <= set(survivors)
    assert victim not in survivors.values()
    await wait_for(lambda: fleet.balanced(4), deadline_s=15, what="rebalance over survivors")


async def test_split_and_merge_during_consumption(fleet: Fleet) -> None:
    """Producers keep writing while shard 0 is split (children 2, 3) and those are merged
    (child 4); workers consume throughout. Every record is delivered, and each child's first
    record comes after every record of its parents was delivered."""
    await create_stream(fleet.client, 2)
    fleet.start("w0")
    fleet.start("w1")
    await wait_for(lambda: fleet.balanced(2), deadline_s=15, what="balance")
    written: set[bytes] = set()
    stop = asyncio.Event()

    async def produce() -> None:
        batch = 0
        while not stop.is_set():
            written.update(await put(fleet.client, f"p{batch}", 20))
            batch += 1
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    await wait_for(lambda: len(fleet.journal.deliveries) > 100, deadline_s=10, what="progress")
    await fleet.client.call(
        "SplitShard",
        {
            "StreamName": STREAM,
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": str(2**126),
        },
    )
    await wait_for(lambda: len(fleet.journal.deliveries) > 400, deadline_s=10, what="progress")
    await fleet.client.call(
        "MergeShards",
        {
            "StreamName": STREAM,
            "ShardToMerge": "shardId-000000000002",
            "AdjacentShardToMerge": "shardId-000000000003",
        },
    )
    await wait_for(lambda: len(fleet.journal.deliveries) > 700, deadline_s=10, what="progress")
    stop.set()
    await producer
    await wait_for(lambda: written <= fleet.journal.delivered(), deadline_s=20, what="all records")
    first: dict[bytes, int] = {}
    by_shard: dict[str, list[int]] = {}
    for index, delivery in enumerate(fleet.journal.deliveries):
        first.setdefault(delivery.data, index)
        by_shard.setdefault(delivery.shard_id, []).append(index)
    lineage = {
        "shardId-000000000002": ["shardId-000000000000"],
        "shardId-000000000003": ["shardId-000000000000"],
        "shardId-000000000004": ["shardId-000000000002", "shardId-000000000003"],
    }
    for child, parents in lineage.items():
        assert by_shard.get(child), f"{child} was consumed"
        child_first = min(by_shard[child])
        for parent in parents:
            parent_last_first = max(
                first[d.data] for d in fleet.journal.deliveries if d.shard_id == parent
            )
            assert parent_last_first < child_first, (child, parent)
    assert fleet.journal.event_count("shard_ended") >= 3
    for parent in ("shardId-000000000000", "shardId-000000000002", "shardId-000000000003"):
        lease = fleet.lease_client.table.get(APP, STREAM, parent)
        assert lease is not None
        assert lease.checkpoint.is_shard_end
        assert lease.lease_owner is None, "a finished lease is released"


async def test_graceful_shutdown_hands_over_at_the_checkpoints(fleet: Fleet) -> None:
    """A worker shutting down checkpoints in shutdown_requested and releases its leases; the
    other takes them at its next take (no failover wait) and resumes after the checkpoints:
    no record is delivered twice."""
    await create_stream(fleet.client, 4)
    fleet.start("w0")
    fleet.start("w1")
    await wait_for(lambda: fleet.balanced(4), deadline_s=15, what="balance")
    fleet.journal.checkpoint_every_batch = False  # only the shutdown checkpoints
    records = await put(fleet.client, "a", 200)
    await wait_for(lambda: records <= fleet.journal.delivered(), deadline_s=10, what="delivery")
    lost_before = fleet.journal.event_count("lease_lost", "w0")  # stolen while balancing
    await fleet.shutdown("w0")
    assert fleet.journal.event_count("shutdown_requested", "w0") == 2
    assert fleet.journal.event_count("lease_lost", "w0") == lost_before
    took_s = await wait_for(lambda: fleet.held() == {"w1": 4}, deadline_s=10, what="handover")
    assert took_s < FAILOVER_MS / 1000, "released leases are taken without waiting for expiry"
    more = await put(fleet.client, "b", 200)
    await wait_for(lambda: more <= fleet.journal.delivered(), deadline_s=10, what="delivery")
    data = [d.data for d in fleet.journal.deliveries]
    assert len(data) == len(set(data)) == 400, "resumed exactly after the checkpoints"


async def test_aggregated_records_resume_at_the_sub_sequence_checkpoint(fleet: Fleet) -> None:
    """Two KPL aggregates of 5 user records each. The first worker checkpoints at the third
    user record of the second aggregate and shuts down; the next worker starts at the fourth."""
    await create_stream(fleet.client, 1)
    sequence_numbers = []
    for a in range(2):
        blob = aggregate(
            [UserRecord(partition_key=f"k{i}", data=f"agg{a}-{i}".encode()) for i in range(5)]
        )
        response = await fleet.client.call(
            "PutRecord",
            {
                "StreamName": STREAM,
                "Data": blob.data,
                "PartitionKey": blob.partition_key,
                "ExplicitHashKey": blob.explicit_hash_key,
            },
        )
        sequence_numbers.append(int(response["SequenceNumber"]))
    fleet.journal.checkpoint_at = (str(sequence_numbers[1]), 2)
    fleet.journal.checkpoint_on_shutdown = False
    fleet.start("w0")
    await wait_for(lambda: len(fleet.journal.deliveries) == 10, deadline_s=10, what="delivery")
    first = fleet.journal.deliveries
    assert [d.data for d in first] == [f"agg{a}-{i}".encode() for a in range(2) for i in range(5)]
    assert [d.sub_sequence_number for d in first] == [0, 1, 2, 3, 4] * 2
    await fleet.shutdown("w0")
    lease = fleet.lease_client.table.get(APP, STREAM, "shardId-000000000000")
    assert lease is not None
    assert lease.checkpoint == Checkpoint(str(sequence_numbers[1]), 2)
    fleet.journal.deliveries = []
    fleet.journal.checkpoint_at = None
    fleet.start("w1")
    await wait_for(lambda: len(fleet.journal.deliveries) == 2, deadline_s=10, what="resume")
    resumed = fleet.journal.deliveries
    assert [(d.worker_id, d.data, d.sub_sequence_number) for d in resumed] == [
        ("w1", b"agg1-3", 3),
        ("w1", b"agg1-4", 4),
    ]


class StrictProcessor(JournalProcessor):
    """Tries a checkpoint beyond what it was given, then checkpoints normally; keeps errors."""

    def __init__(self, journal: Journal, worker_id: str) -> None:
        super().__init__(journal, worker_id)
        self.errors: list[Exception] = []

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        last = process_records_input.records[-1]
        assert last.sequence_number is not None
        with pytest.raises(ValueError, match="outside"):
            await process_records_input.checkpointer.checkpoint(str(int(last.sequence_number) + 1))
        try:
            await super().process_records(process_records_input)
        except Exception as error:
            self.errors.append(error)
            raise


async def test_the_checkpointer_refuses_out_of_range_values_and_lost_leases(
    fleet: Fleet,
) -> None:
    """A checkpoint above the last delivered record is a ValueError. When someone else takes
    the lease (here the test, as a worker that judged it expired), the old owner's next
    checkpoint raises LeaseLostError, lease_lost is called, and it never checkpoints again."""
    from broker.client.worker import LeaseLostError
    from broker.consumers import leases

    await create_stream(fleet.client, 1)
    processors: list[StrictProcessor] = []

    def factory() -> StrictProcessor:
        processors.append(StrictProcessor(fleet.journal, "w0"))
        return processors[-1]

    worker = Worker(
        application=APP,
        stream_name=STREAM,
        processor_factory=factory,
        lease_client=fleet.lease_client,
        kinesis=fleet.client,
        config=WorkerConfig(
            worker_id="w0",
            failover_ms=60_000,  # the renewer must not notice first
            lease_take_interval_ms=TAKE_MS,
            polling_idle_interval_ms=20,
        ),
    )
    fleet.workers["w0"] = worker
    fleet.tasks["w0"] = asyncio.create_task(worker.run())
    first = await put(fleet.client, "a", 10)
    await wait_for(lambda: first <= fleet.journal.delivered(), deadline_s=10, what="delivery")
    lease = fleet.lease_client.table.get(APP, STREAM, "shardId-000000000000")
    assert lease is not None
    assert lease.lease_owner == "w0"
    fleet.lease_client.table, taken = leases.take(
        fleet.lease_client.table,
        leases.TakeLease(
            application=APP,
            stream_name=STREAM,
            lease_key=lease.lease_key,
            owner="other",
            expected_owner="w0",
            expected_counter=lease.lease_counter,
        ),
    )
    assert isinstance(taken, Lease)
    checkpoints_before = len(fleet.lease_client.checkpoints)
    second = await put(fleet.client, "b", 10)
    await wait_for(lambda: second <= fleet.journal.delivered(), deadline_s=10, what="delivery")
    await wait_for(
        lambda: fleet.journal.event_count("lease_lost", "w0") == 1, deadline_s=10, what="lost"
    )
    assert [type(e) for e in processors[0].errors] == [LeaseLostError]
    assert len(fleet.lease_client.checkpoints) == checkpoints_before
    assert worker.statistics().leases_lost == 1
    await wait_for(lambda: not worker.statistics().held_shard_ids, deadline_s=5, what="dropped")


class FlakyProcessor(JournalProcessor):
    """Fails its first batch ever (shared across instances), then behaves."""

    failed = False

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        await super().process_records(process_records_input)
        if not FlakyProcessor.failed:
            FlakyProcessor.failed = True
            raise RuntimeError("processor bug")


async def test_a_failing_processor_gives_the_shard_up_without_skipping(fleet: Fleet) -> None:
    """A processor that raises (without checkpointing) makes the worker release the lease; the
    shard is taken again and resumes at the last checkpoint: the failed batch is redelivered."""
    await create_stream(fleet.client, 1)
    FlakyProcessor.failed = False
    worker = Worker(
        application=APP,
        stream_name=STREAM,
        processor_factory=lambda: FlakyProcessor(fleet.journal, "w0"),
        lease_client=fleet.lease_client,
        kinesis=fleet.client,
        config=WorkerConfig(
            worker_id="w0",
            failover_ms=FAILOVER_MS,
            lease_take_interval_ms=TAKE_MS,
            polling_idle_interval_ms=20,
        ),
    )
    fleet.journal.checkpoint_every_batch = False
    records = await put(fleet.client, "a", 10)
    fleet.workers["w0"] = worker
    fleet.tasks["w0"] = asyncio.create_task(worker.run())
    await wait_for(lambda: len(fleet.journal.deliveries) == 20, deadline_s=10, what="redelivery")
    first, second = fleet.journal.deliveries[:10], fleet.journal.deliveries[10:]
    assert {d.data for d in first} == {d.data for d in second} == records
    assert worker.statistics().leases_taken == 2


async def test_empty_batches_reach_the_processor_only_when_asked(fleet: Fleet) -> None:
    """The KCL's callProcessRecordsEvenForEmptyRecordList: with it, the processor hears of
    the empty reads at the shard's end (MillisBehindLatest 0); without it, only of records."""
    await create_stream(fleet.client, 1)
    records = await put(fleet.client, "a", 3)
    quiet = fleet.start("quiet")
    await wait_for(lambda: records <= fleet.journal.delivered(), deadline_s=15, what="delivery")
    empty_before = quiet.statistics().empty_batches
    await wait_for(  # empty reads at the shard's end, each one not delivered
        lambda: quiet.statistics().empty_batches >= empty_before + 3,
        deadline_s=10,
        what="three empty reads",
    )
    assert not any(event.startswith("empty") for _, _, event in fleet.journal.events)
    await fleet.kill("quiet")
    fleet.start("told", process_empty_batches=True)  # takes the lease once it expired
    await wait_for(
        lambda: fleet.journal.event_count("empty 0", "told") > 0,
        deadline_s=15,
        what="an empty batch delivered to the told worker",
    )


def test_initial_leases_follow_the_initial_position() -> None:
    """TRIM_HORIZON leases every listed shard (descendants at TRIM_HORIZON); LATEST leases only
    open shards, except that a child of a leased parent always starts at TRIM_HORIZON."""
    from broker.client.worker import InitialPosition, ShardInfo, _leases_to_create

    whole = (0, 2**128 - 1)
    shards = {
        "shardId-000000000000": ShardInfo(
            shard_id="shardId-000000000000", parent_shard_ids=(), hash_range=whole, closed=True
        ),
        "shardId-000000000001": ShardInfo(
            shard_id="shardId-000000000001",
            parent_shard_ids=("shardId-000000000000",),
            hash_range=whole,
        ),
    }
    horizon = _leases_to_create(shards, set(), InitialPosition.TRIM_HORIZON)
    assert [(n.shard_id, n.checkpoint.sequence_number) for n in horizon] == [
        ("shardId-000000000000", "TRIM_HORIZON"),
        ("shardId-000000000001", "TRIM_HORIZON"),
    ]
    latest = _leases_to_create(shards, set(), InitialPosition.LATEST)
    assert [(n.shard_id, n.checkpoint.sequence_number) for n in latest] == [
        ("shardId-000000000001", "LATEST"),
    ]
    later = _leases_to_create(shards, {"shardId-000000000000"}, InitialPosition.LATEST)
    assert [(n.shard_id, n.checkpoint.sequence_number) for n in later] == [
        ("shardId-000000000001", "TRIM_HORIZON"),
    ]
