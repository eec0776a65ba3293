"""The replication driver around real replicas: three drivers in one loop, each with its own
MemoryLogStore and GroupCommitWriter, wired by a loopback transport that can drop a node.

Goal: the driver executes Ready in the order the replica needs (persist, send, answer,
advance), keeps ticking (followers learn the leader's HW from heartbeats, not only from the
next append), answers Prepare only once the promise is durable, and never answers a producer
whose records did not commit.

The drivers' timers run on one VirtualClock: a test moves it while it waits (`_wait`,
`_append`), each wait bounded by a real deadline (the writer threads take real time). A
"nothing may happen" window first waits for what would make an unsafe driver act (a write
durable, a disk turn blocked), then runs the clock: the drivers tick and sweep through it in
no real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from broker.clock import VirtualClock
from broker.log.group_commit import GroupCommitWriter
from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, LogCorruptionError, new_record
from broker.log.store import LogStoreError
from broker.meta.image import MetadataImage
from broker.replication.driver import ReplicationDriver
from broker.replication.messages import Append, AppendAck, Envelope
from broker.replication.network import FetchRefused
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.types import NodeId, Offset, ShardUid
from tests.meta.factories import one_stream_image, shard_meta

NODES = (NodeId("a"), NodeId("b"), NodeId("c"))
SHARD = ShardUid(7)


def _image(*, leader: NodeId, epoch: int) -> MetadataImage:
    return one_stream_image(shard_meta(SHARD, replicas=NODES, leader=leader, epoch=epoch))


@dataclass
class Cluster:
    image: MetadataImage
    clock: VirtualClock = field(default_factory=VirtualClock)  # every driver's timers
    drivers: dict[NodeId, ReplicationDriver] = field(default_factory=dict)
    stores: dict[NodeId, MemoryLogStore] = field(default_factory=dict)
    writers: dict[NodeId, GroupCommitWriter] = field(default_factory=dict)
    down: set[NodeId] = field(default_factory=set)
    sent: Callable[[NodeId, Envelope], None] | None = None  # sees every envelope sent
    sent_alone: list[Envelope] = field(default_factory=list)  # by `send`, not `send_all`

    def transport(self, me: NodeId) -> object:
        cluster = self

        class Loopback:
            def send(self, envelope: Envelope) -> None:
                cluster.sent_alone.append(envelope)
                self.deliver(envelope)

            def deliver(self, envelope: Envelope) -> None:
                if me in cluster.down or envelope.to in cluster.down:
                    return
                if cluster.sent is not None:
                    cluster.sent(me, envelope)
                cluster.drivers[envelope.to].deliver(envelope.message)

            def send_all(self, envelopes: Sequence[Envelope]) -> None:
                for envelope in envelopes:
                    self.deliver(envelope)

            async def fetch_batches(
                self,
                peer: NodeId,
                shard_uid: ShardUid,
                *,
                start_offset: Offset,
                end_offset: Offset,
                bytes_max: int,
            ) -> list[AppendBatch]:
                if me in cluster.down or peer in cluster.down:
                    raise FetchRefused(f"{peer} is down")
                return await cluster.drivers[peer].serve_fetch(
                    shard_uid, start_offset=start_offset, end_offset=end_offset, bytes_max=bytes_max
                )

        return Loopback()

    def statistics(self, node: NodeId) -> tuple[int, int]:
        (replica,) = self.drivers[node].replica_statistics(frozenset())
        return replica.durable_end, replica.high_watermark


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    cluster = Cluster(image=_image(leader=NODES[0], epoch=1))
    writers = []
    async with asyncio.TaskGroup() as group:
        for node in NODES:
            store = MemoryLogStore()
            writer = GroupCommitWriter(store)
            writer.start()
            writers.append(writer)
            driver = ReplicationDriver(
                node_id=node,
                store=store,
                writer=writer,
                transport=cluster.transport(node),  # type: ignore[arg-type]
                clock=cluster.clock,
                image=lambda: cluster.image,
                tick_ms=10,
            )
            cluster.drivers[node] = driver
            cluster.stores[node] = store
            cluster.writers[node] = writer
        tasks = [group.create_task(d.run()) for d in cluster.drivers.values()]
        try:
            yield cluster
        finally:
            for task in tasks:
                task.cancel()
    for writer in writers:
        writer.stop()


async def _wait(cluster: Cluster, predicate: Callable[[], bool]) -> None:
    """Runs the drivers' clock until `predicate()` holds; 30 s real at most (a bound under
    load: the writer threads take real time)."""
    await cluster.clock.run_until(predicate, step_ms=10, deadline_s=30.0)


def _start_append(
    cluster: Cluster, node: NodeId, epoch: int, data: bytes
) -> asyncio.Future[tuple[int, int]]:
    """An append to `node` as a future; the clock runs only while a test waits (`_wait`)."""
    return asyncio.ensure_future(
        cluster.drivers[node].append(
            SHARD, epoch=epoch, records=[new_record("k", data)], now_ms=cluster.clock.wall_ms()
        )
    )


async def _until_answered(cluster: Cluster, pending: asyncio.Future[tuple[int, int]]) -> int:
    """The first offset of an append's records, once answered (the clock runs meanwhile)."""
    await _wait(cluster, pending.done)
    return pending.result()[0]


async def _append(cluster: Cluster, node: NodeId, epoch: int, data: bytes) -> int:
    return await _until_answered(cluster, _start_append(cluster, node, epoch, data))


def _durable_end(cluster: Cluster, node: NodeId) -> int:
    return cluster.statistics(node)[0]


async def test_append_commits_on_a_majority_and_followers_learn_the_hw(cluster: Cluster) -> None:
    first = await _append(cluster, NODES[0], 1, b"one")
    assert first == 1  # offset 0 is the epoch-start marker
    leader_end, leader_hw = cluster.statistics(NODES[0])
    assert leader_hw == leader_end == 2
    # No further append: the HW reaches the followers by heartbeat (ticks).
    await _wait(cluster, lambda: all(cluster.statistics(n) == (2, 2) for n in NODES))
    assert cluster.drivers[NODES[1]].readable_end(SHARD) == 2


async def test_a_minority_cannot_commit_and_the_producer_is_not_answered(
    cluster: Cluster,
) -> None:
    await _append(cluster, NODES[0], 1, b"one")
    cluster.down = {NODES[1], NODES[2]}
    pending = _start_append(cluster, NODES[0], 1, b"alone")
    # Durable on the leader: an unsafe driver answers now. Then 20 ticks (virtual).
    await _wait(cluster, lambda: _durable_end(cluster, NODES[0]) == 3)
    await cluster.clock.run_for(200)
    assert not pending.done()
    cluster.down = set()
    assert await _until_answered(cluster, pending) == 2


class _Gate(threading.Event):
    """Holds a node's group commits (its writer thread waits) until it is set; `held` counts
    the writes waiting at it now."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0


def _gate(cluster: Cluster, node: NodeId) -> _Gate:
    store = cluster.stores[node]
    gate = _Gate()
    append = store.append

    def gated(
        batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        gate.held += 1
        try:
            gate.wait(timeout=10)  # bounded: a failing test must not hang the writer's join
        finally:
            gate.held -= 1
        append(batches, written=written)

    store.append = gated  # type: ignore[method-assign]
    return gate


async def test_acks_answer_producers_while_the_leaders_next_fsync_is_in_flight(
    cluster: Cluster,
) -> None:
    """The driver steps what arrives while a turn's writes are in flight: the followers'
    acks commit a record (and answer its producer) while the leader's own write of the next
    one still waits for its disk, and that next one is answered only once the leader's copy
    is durable too (replica.py rule 3)."""
    await _append(cluster, NODES[0], 1, b"zero")
    followers = [_gate(cluster, node) for node in NODES[1:]]
    leader = _gate(cluster, NODES[0])
    try:
        leader.set()
        first = _start_append(cluster, NODES[0], 1, b"one")
        await _wait(cluster, lambda: _durable_end(cluster, NODES[0]) == 3)  # durable on the leader
        leader.clear()
        second = _start_append(cluster, NODES[0], 1, b"two")
        # The leader's turn for "two" waits on its disk.
        await _wait(cluster, lambda: leader.held == 1)
        assert not first.done()
        for gate in followers:
            gate.set()
        await _until_answered(cluster, first)
        await _wait(cluster, lambda: all(_durable_end(cluster, n) == 4 for n in NODES[1:]))
        # The followers' acks for "two" are in: an unsafe leader answers now. 10 ticks more.
        await cluster.clock.run_for(100)
        assert not second.done()
        assert cluster.statistics(NODES[0])[1] == 3  # its HW stops at its durable end
        leader.set()
        assert await _until_answered(cluster, second) == 3
    finally:
        for gate in (*followers, leader):
            gate.set()


async def test_a_producer_answered_by_acks_replies_before_the_leaders_next_turn(
    cluster: Cluster,
) -> None:
    """The acknowledgements that commit a record answer its producer while the leader drains
    its inbox; the driver then lets the producer resume before it takes its next turn, so the
    reply does not wait behind that turn's work (issue 18: ~0.1 ms of a PutRecord's round trip
    at factor 3, traced). Not a turn is taken between the answer and the reply."""
    await _append(cluster, NODES[0], 1, b"zero")
    driver = cluster.drivers[NODES[0]]
    core = driver._core
    local = core.locals[SHARD]
    proposed = replied = False
    behind: list[str] = []  # turns taken with the producer answered but not resumed yet

    def watched(take: Callable[[], object], name: str) -> Callable[[], object]:
        def taking() -> object:
            if proposed and not local.waiters and not replied:
                behind.append(name)
            return take()

        return taking

    core.take_turn = watched(core.take_turn, "turn")  # type: ignore[assignment]
    core.take_pipelined_turn = watched(core.take_pipelined_turn, "pipelined")  # type: ignore[assignment]

    async def produce() -> None:
        nonlocal replied
        await driver.append(
            SHARD, epoch=1, records=[new_record("k", b"one")], now_ms=cluster.clock.wall_ms()
        )
        replied = True

    followers = [_gate(cluster, node) for node in NODES[1:]]
    try:
        producer = asyncio.ensure_future(produce())
        await asyncio.sleep(0)  # proposed: the producer waits on the leader
        assert len(local.waiters) == 1
        proposed = True
        # The leader's own copy durable first: the followers' acks are what commits it.
        await _wait(cluster, lambda: _durable_end(cluster, NODES[0]) == 3)
        await _wait(cluster, lambda: all(gate.held == 1 for gate in followers))
        for gate in followers:
            gate.set()
        await _wait(cluster, producer.done)
        producer.result()
        assert behind == []
    finally:
        for gate in followers:
            gate.set()


async def test_records_waiting_to_be_sent_go_before_the_replies_of_answered_producers(
    cluster: Cluster,
) -> None:
    """When the acknowledgements that answer a producer arrive with other records proposed
    and not sent yet, the leader's turn sends those first and the answered producer resumes
    after it: the followers write the next records while the replies are made (a reply first
    cost 7-18 % of the replicated throughput at 3 producers of 500 records, measured)."""
    await _append(cluster, NODES[0], 1, b"zero")
    driver = cluster.drivers[NODES[0]]
    events: list[str] = []
    second: list[asyncio.Future[None]] = []

    async def produce(data: bytes) -> None:
        await driver.append(
            SHARD, epoch=1, records=[new_record("k", data)], now_ms=cluster.clock.wall_ms()
        )
        events.append(f"{data.decode()} answered")

    def sent(sender: NodeId, envelope: Envelope) -> None:
        message = envelope.message
        if isinstance(message, AppendAck):
            if sender != NODES[0] and message.log_end == 3 and not second:
                # The first ack of "one": "two" is proposed before the leader steps it.
                second.append(asyncio.ensure_future(produce(b"two")))
        elif isinstance(message, Append) and any(b.first_offset == 3 for b in message.batches):
            events.append("two sent")

    followers = [_gate(cluster, node) for node in NODES[1:]]
    try:
        first = asyncio.ensure_future(produce(b"one"))
        await _wait(cluster, lambda: _durable_end(cluster, NODES[0]) == 3)
        await _wait(cluster, lambda: all(gate.held == 1 for gate in followers))
        cluster.sent = sent
        for gate in followers:
            gate.set()
        await _wait(cluster, lambda: first.done() and bool(second) and second[0].done())
        first.result()
        second[0].result()
        assert events.index("two sent") < events.index("one answered"), events
    finally:
        for gate in followers:
            gate.set()


async def test_a_leaders_own_write_is_queued_in_the_step_that_sends_its_appends(
    cluster: Cluster,
) -> None:
    """The leader's batch goes to its writer in the loop step that sent its Appends, not in a
    task started after whatever the loop had queued by then (issue 18: behind the producers'
    requests, a leader's own write started 3 ms after its followers' at 3 producers, and the
    commit waits for it). A callback queued at the send sees the batch queued already."""
    await _append(cluster, NODES[0], 1, b"zero")
    writer = cluster.writers[NODES[0]]
    submit = writer.submit
    submitted = 0

    async def counting(make_batch: Callable[[], AppendBatch]) -> asyncio.Future[None]:
        nonlocal submitted
        submitted += 1
        return await submit(make_batch)

    writer.submit = counting  # type: ignore[method-assign]
    seen_at_send: list[int] = []
    loop = asyncio.get_running_loop()

    def sent(sender: NodeId, envelope: Envelope) -> None:
        message = envelope.message
        if sender == NODES[0] and isinstance(message, Append) and message.batches:
            loop.call_soon(lambda: seen_at_send.append(submitted))

    cluster.sent = sent
    assert await _append(cluster, NODES[0], 1, b"one") == 2
    assert seen_at_send == [1, 1]  # one Append to each follower, the leader's batch queued


async def test_a_turns_appends_and_acknowledgements_leave_together_at_once(
    cluster: Cluster,
) -> None:
    """A turn's Appends and a follower's acknowledgements go through `send_all` (issue 18):
    the framed transport writes them in the call, where `send`'s small frames wait for the end
    of the loop turn (~0.05-0.1 ms on each side of a commit's round trip, measured)."""
    await _append(cluster, NODES[0], 1, b"one")
    assert await _append(cluster, NODES[0], 1, b"two") == 2
    assert [e for e in cluster.sent_alone if isinstance(e.message, (Append, AppendAck))] == []


async def test_a_followers_next_batch_goes_to_its_writer_while_the_last_is_fsynced(
    cluster: Cluster,
) -> None:
    """Turns are pipelined (issue 18, etcd-raft's asynchronous storage writes): while a
    follower's write waits for its disk, the next Append's batch is queued to its writer
    behind it (the group commit takes it with the next fsync), and nothing of either counts
    as durable, is acknowledged or commits before its own write is durable."""
    await _append(cluster, NODES[0], 1, b"zero")
    follower = NODES[1]
    cluster.down = {NODES[2]}  # the leader's majority needs this follower's writes
    gate = _gate(cluster, follower)
    try:
        first = _start_append(cluster, NODES[0], 1, b"one")
        await _wait(cluster, lambda: gate.held == 1)  # the follower's write of "one" waits
        second = _start_append(cluster, NODES[0], 1, b"two")
        writer = cluster.writers[follower]
        await _wait(cluster, lambda: writer.statistics().queued_batches == 1)
        await cluster.clock.run_for(100)  # an unsafe follower acknowledges now
        assert not first.done() and not second.done()
        assert _durable_end(cluster, follower) == 2
        assert cluster.statistics(NODES[0])[1] == 2  # the leader's HW: "zero" only
        gate.set()
        assert await _until_answered(cluster, first) == 2
        assert await _until_answered(cluster, second) == 3
        assert _durable_end(cluster, follower) == 4
    finally:
        gate.set()


async def test_a_followers_failed_write_is_not_acknowledged_and_it_recovers(
    cluster: Cluster,
) -> None:
    """A follower's turn ends when its writer's own futures do (`ReplicationDriver.run`): a failed
    group commit must fail that turn (no ack for records not on its disk) and rebuild the
    replica from its store; the resent records commit once its disk works again."""
    await _append(cluster, NODES[0], 1, b"zero")
    follower = NODES[1]
    cluster.down = {NODES[2]}  # the leader's majority needs this follower's write
    store = cluster.stores[follower]
    append = store.append
    failures = 0
    failing = True

    def failing_append(
        batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        nonlocal failures
        if failing:
            failures += 1
            raise LogStoreError("disk on fire")
        append(batches, written=written)

    store.append = failing_append  # type: ignore[method-assign]
    pending = _start_append(cluster, NODES[0], 1, b"one")
    await _wait(cluster, lambda: failures >= 2)  # failed, recovered, failed again on a resend
    await cluster.clock.run_for(300)
    assert not pending.done()
    assert store.log_end(SHARD) == 2  # its disk (the replica may be reopening from it now)
    failing = False
    assert await _until_answered(cluster, pending) == 2
    assert store.log_end(SHARD) == 3


async def test_prepare_fences_the_leader_and_the_new_leader_keeps_committed_records(
    cluster: Cluster,
) -> None:
    await _append(cluster, NODES[0], 1, b"one")
    # The test names the new leader itself rather than choosing the longest log among the
    # promises as the controller does, so every replica must hold the record first (it is
    # committed once one follower holds it, and b may not have it yet).
    await _wait(cluster, lambda: all(cluster.statistics(n)[0] == 2 for n in NODES))
    for node in NODES[1:]:
        promise = await cluster.drivers[node].prepare(SHARD, 2)
        assert promise is not None
        assert promise.ok
        assert cluster.stores[node].promised_epoch(SHARD) == 2  # durable before the answer
    # The old leader can no longer gather a majority at epoch 1: its producer waits until
    # the new leader's log cuts the record off, and is then told: outcome unknown. (If a
    # follower's answer already told the old leader of epoch 2, it refuses the append before
    # storing it: STALE_EPOCH at once, which is as safe. Never a success.)
    fenced = _start_append(cluster, NODES[0], 1, b"fenced")
    # Refused, or durable on the old leader (an unsafe driver answers now); then 10 ticks.
    await _wait(cluster, lambda: fenced.done() or _durable_end(cluster, NODES[0]) == 3)
    await cluster.clock.run_for(100)
    refused_at_once = fenced.done()
    if refused_at_once:
        assert isinstance(fenced.exception(), ShardRefusedError)
        assert fenced.exception().reason is RefusalReason.STALE_EPOCH  # type: ignore[union-attr]
    cluster.image = _image(leader=NODES[1], epoch=2)
    with pytest.raises(ShardRefusedError) as stale:
        await _append(cluster, NODES[1], 1, b"old epoch")
    assert stale.value.reason is RefusalReason.STALE_EPOCH
    first = await _append(cluster, NODES[1], 2, b"two")
    await _wait(cluster, fenced.done)
    with pytest.raises(ShardRefusedError) as cut:
        fenced.result()
    if not refused_at_once:
        assert cut.value.reason is RefusalReason.OUTCOME_UNKNOWN
    records = cluster.stores[NODES[1]].read(
        SHARD,
        start_offset=Offset(0),
        end_offset=Offset(first + 1),
        records_max=100,
        bytes_max=1 << 20,
    )
    assert [r.data for r in records] == [b"one", b"two"]
    await _wait(cluster, lambda: len({cluster.statistics(n) for n in NODES}) == 1)


def _repaired(driver: ReplicationDriver) -> Callable[[], bool]:
    return lambda: not driver.repair_pending(SHARD)


async def test_a_damaged_range_is_repaired_from_another_replica(cluster: Cluster) -> None:
    """decisions/0002 "Corruption": a follower's and the leader's copies of records stop
    reading back. Each reported range is marked damaged, then copied back from a replica that
    holds it committed (the leader first, a follower for the leader's own), and reads back."""
    for i in range(5):
        await _append(cluster, NODES[0], 1, b"r%d" % i)
    await _wait(cluster, lambda: all(cluster.statistics(n) == (6, 6) for n in NODES))
    for node, offset in ((NODES[1], 2), (NODES[0], 4)):
        cluster.stores[node].corrupt(SHARD, Offset(offset), count=2)
        with pytest.raises(LogCorruptionError) as failed:
            cluster.stores[node].read(
                SHARD, start_offset=Offset(0), end_offset=Offset(6), records_max=10, bytes_max=99
            )
        driver = cluster.drivers[node]
        driver.report_corruption(failed.value)
        await _wait(cluster, _repaired(driver))
        records = cluster.stores[node].read(
            SHARD, start_offset=Offset(0), end_offset=Offset(6), records_max=10, bytes_max=99
        )
        assert [r.data for r in records] == [b"r%d" % i for i in range(5)]


async def test_a_range_no_other_replica_holds_stays_damaged(cluster: Cluster) -> None:
    await _append(cluster, NODES[0], 1, b"only")
    await _wait(cluster, lambda: all(cluster.statistics(n) == (2, 2) for n in NODES))
    cluster.down = {NODES[1], NODES[2]}
    cluster.stores[NODES[0]].corrupt(SHARD, Offset(1))
    driver = cluster.drivers[NODES[0]]
    driver.report_corruption(LogCorruptionError("test", shard_uid=SHARD, offset=Offset(1)))
    await _wait(cluster, lambda: driver.damaged(SHARD) is not None)
    await cluster.clock.run_for(5_000)  # virtual: a careless repair would have given up
    damage = driver.damaged(SHARD)
    assert damage is not None
    assert (damage.start, damage.end) == (1, 2)
    assert driver.metrics_view().damaged_replicas == 1


def test_image_factory_is_consistent() -> None:
    image = _image(leader=NODES[0], epoch=1)
    (stream,) = image.streams.values()
    assert dataclasses.replace(stream.shards[0], epoch=2).epoch == 2


async def test_a_stopping_node_waits_for_its_producers_answers_bounded(cluster: Cluster) -> None:
    """Node.stop waits for the producers waiting on its replicas before it closes the
    replication streams: still waiting while no majority answers, answered once one does."""
    leader = cluster.drivers[NODES[0]]
    await _append(cluster, NODES[0], 1, b"one")
    assert await leader.wait_producers_answered(timeout_s=1) == 0  # nobody waits
    cluster.down = {NODES[1], NODES[2]}
    pending = _start_append(cluster, NODES[0], 1, b"waits")
    # The proposal is queued on the leader (durable there, unanswered).
    await _wait(cluster, lambda: _durable_end(cluster, NODES[0]) == 3)
    assert await leader.wait_producers_answered(timeout_s=0.01) == 1  # bounded: still waiting
    assert not pending.done()
    cluster.down = set()
    # Replication flows again on the clock; the wait ends with the answer.
    answered = asyncio.ensure_future(leader.wait_producers_answered(timeout_s=30))
    await _wait(cluster, answered.done)
    assert answered.result() == 0
    assert pending.done()
    assert pending.result()[0] == 2


async def test_a_stopping_node_answers_its_waiting_readers_at_once(cluster: Cluster) -> None:
    leader = cluster.drivers[NODES[0]]
    await _append(cluster, NODES[0], 1, b"one")
    end = leader.readable_end(SHARD)
    assert end is not None
    waiting = asyncio.ensure_future(leader.wait_readable(SHARD, end, timeout_s=60))
    await cluster.clock.run_for(100)  # nothing new to read: it waits
    assert not waiting.done()
    leader.release_waiting_readers()
    await asyncio.wait_for(waiting, timeout=5)  # well before its own 60 s
    # Later reads do not wait either.
    await asyncio.wait_for(leader.wait_readable(SHARD, end, timeout_s=60), timeout=5)


async def test_placed_gets_the_appends_place_before_it_commits(cluster: Cluster) -> None:
    """`append`'s `placed` (the service prepares its answer there) runs once, while the
    leader's writer writes the records, with the first offset and arrival time the append then
    answers; it never stands for the commit: it runs before the answer."""
    await _append(cluster, NODES[0], 1, b"one")
    placed: list[tuple[int, int, bool]] = []
    pending: asyncio.Future[tuple[Offset, int]] = asyncio.ensure_future(
        cluster.drivers[NODES[0]].append(
            SHARD,
            epoch=1,
            records=[new_record("k", b"two")],
            now_ms=cluster.clock.wall_ms(),
            placed=lambda first, arrival: placed.append((first, arrival, pending.done())),
        )
    )
    await _wait(cluster, pending.done)
    first, arrival_ms = pending.result()
    assert placed == [(first, arrival_ms, False)]
    assert first == 2
