"""The replication driver around real replicas: three drivers in one loop, each with its own
MemoryLogStore and GroupCommitWriter, wired by a loopback transport that can drop a node.

Goal: the driver executes Ready in the order the replica needs (persist, send, answer,
advance), keeps ticking (followers learn the leader's HW from heartbeats, not only from the
next append), answers Prepare only once the promise is durable, and never answers a producer
whose records did not commit. Waits are bounded by the drivers' own timeouts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from broker.clock import SystemClock
from broker.log.group_commit import GroupCommitWriter
from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, LogCorruptionError, new_record
from broker.meta.image import MetadataImage, ShardMeta, ShardState, StreamMeta, StreamMode
from broker.replication.driver import ReplicationDriver
from broker.replication.messages import Envelope
from broker.replication.network import FetchRefused
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.types import NodeId, Offset, ShardIndex, ShardUid, StreamName, StreamUid

NODES = (NodeId("a"), NodeId("b"), NodeId("c"))
SHARD = ShardUid(7)


def _image(*, leader: NodeId, epoch: int) -> MetadataImage:
    shard = ShardMeta(
        index=ShardIndex(0),
        uid=SHARD,
        hash_key_start=0,
        hash_key_end=2**128 - 1,
        parent_index=None,
        adjacent_parent_index=None,
        created_ms=0,
        state=ShardState.OPEN,
        replicas=NODES,
        leader=leader,
        epoch=epoch,
    )
    stream = StreamMeta(
        name=StreamName("s"),
        uid=StreamUid(1),
        arn="arn:aws:kinesis:us-east-1:000000000000:stream/s",
        created_ms=0,
        mode=StreamMode.PROVISIONED,
        retention_hours=24,
        shards=(shard,),
        next_shard_index=ShardIndex(1),
        transient_status=None,
    )
    return MetadataImage(streams={stream.name: stream})


@dataclass
class Cluster:
    image: MetadataImage
    drivers: dict[NodeId, ReplicationDriver] = field(default_factory=dict)
    stores: dict[NodeId, MemoryLogStore] = field(default_factory=dict)
    down: set[NodeId] = field(default_factory=set)

    def transport(self, me: NodeId) -> object:
        cluster = self

        class Loopback:
            def send(self, envelope: Envelope) -> None:
                if me in cluster.down or envelope.to in cluster.down:
                    return
                cluster.drivers[envelope.to].deliver(envelope.message)

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
    clock = SystemClock()
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
                clock=clock,
                image=lambda: cluster.image,
                tick_ms=10,
            )
            cluster.drivers[node] = driver
            cluster.stores[node] = store
        tasks = [group.create_task(d.run()) for d in cluster.drivers.values()]
        try:
            yield cluster
        finally:
            for task in tasks:
                task.cancel()
    for writer in writers:
        writer.stop()


async def _wait(predicate: object, *, timeout_s: float = 30.0) -> None:  # a bound under load
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  # polls replica state; no event exists
            await asyncio.sleep(0.01)


async def _append(cluster: Cluster, node: NodeId, epoch: int, data: bytes) -> tuple[int, int]:
    first, arrival = await cluster.drivers[node].append(
        SHARD, epoch=epoch, records=[new_record("k", data)], now_ms=SystemClock().wall_ms()
    )
    return first, arrival


async def test_append_commits_on_a_majority_and_followers_learn_the_hw(cluster: Cluster) -> None:
    first, _ = await _append(cluster, NODES[0], 1, b"one")
    assert first == 1  # offset 0 is the epoch-start marker
    leader_end, leader_hw = cluster.statistics(NODES[0])
    assert leader_hw == leader_end == 2
    # No further append: the HW reaches the followers by heartbeat (ticks).
    await _wait(lambda: all(cluster.statistics(n) == (2, 2) for n in NODES))
    assert cluster.drivers[NODES[1]].readable_end(SHARD) == 2


async def test_a_minority_cannot_commit_and_the_producer_is_not_answered(
    cluster: Cluster,
) -> None:
    await _append(cluster, NODES[0], 1, b"one")
    cluster.down = {NODES[1], NODES[2]}
    pending = asyncio.ensure_future(_append(cluster, NODES[0], 1, b"alone"))
    await asyncio.sleep(0.2)  # a window in which an unsafe driver would have answered
    assert not pending.done()
    cluster.down = set()
    first, _ = await asyncio.wait_for(pending, timeout=5)
    assert first == 2


def _gate(cluster: Cluster, node: NodeId) -> threading.Event:
    """Holds `node`'s group commits (its writer thread waits) until the event is set."""
    store = cluster.stores[node]
    gate = threading.Event()
    append = store.append

    def gated(batches: Sequence[AppendBatch]) -> None:
        gate.wait(timeout=10)  # bounded: a failing test must not hang the writer's join
        append(batches)

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
        first = asyncio.ensure_future(_append(cluster, NODES[0], 1, b"one"))
        await _wait(lambda: cluster.statistics(NODES[0])[0] == 3)  # durable on the leader
        leader.clear()
        second = asyncio.ensure_future(_append(cluster, NODES[0], 1, b"two"))
        await asyncio.sleep(0.1)  # the leader's turn for "two" is now waiting on its disk
        assert not first.done()
        for gate in followers:
            gate.set()
        await asyncio.wait_for(asyncio.shield(first), timeout=5)
        await _wait(lambda: all(cluster.statistics(n)[0] == 4 for n in NODES[1:]))
        await asyncio.sleep(0.1)  # a window in which an unsafe leader would answer "two"
        assert not second.done()
        assert cluster.statistics(NODES[0])[1] == 3  # its HW stops at its durable end
        leader.set()
        assert (await asyncio.wait_for(second, timeout=5))[0] == 3
    finally:
        for gate in (*followers, leader):
            gate.set()


async def test_prepare_fences_the_leader_and_the_new_leader_keeps_committed_records(
    cluster: Cluster,
) -> None:
    await _append(cluster, NODES[0], 1, b"one")
    # The test names the new leader itself rather than choosing the longest log among the
    # promises as the controller does, so every replica must hold the record first (it is
    # committed once one follower holds it, and b may not have it yet).
    await _wait(lambda: all(cluster.statistics(n)[0] == 2 for n in NODES))
    for node in NODES[1:]:
        promise = await cluster.drivers[node].prepare(SHARD, 2)
        assert promise is not None
        assert promise.ok
        assert cluster.stores[node].promised_epoch(SHARD) == 2  # durable before the answer
    # The old leader can no longer gather a majority at epoch 1: its producer waits until
    # the new leader's log cuts the record off, and is then told: outcome unknown. (If a
    # follower's answer already told the old leader of epoch 2, it refuses the append before
    # storing it: STALE_EPOCH at once, which is as safe. Never a success.)
    fenced = asyncio.ensure_future(_append(cluster, NODES[0], 1, b"fenced"))
    await asyncio.sleep(0.1)  # a window in which an unsafe driver would have answered
    refused_at_once = fenced.done()
    if refused_at_once:
        assert isinstance(fenced.exception(), ShardRefusedError)
        assert fenced.exception().reason is RefusalReason.STALE_EPOCH  # type: ignore[union-attr]
    cluster.image = _image(leader=NODES[1], epoch=2)
    with pytest.raises(ShardRefusedError) as stale:
        await _append(cluster, NODES[1], 1, b"old epoch")
    assert stale.value.reason is RefusalReason.STALE_EPOCH
    first, _ = await _append(cluster, NODES[1], 2, b"two")
    with pytest.raises(ShardRefusedError) as cut:
        await asyncio.wait_for(fenced, timeout=5)
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
    await _wait(lambda: len({cluster.statistics(n) for n in NODES}) == 1)


async def test_a_damaged_range_is_repaired_from_another_replica(cluster: Cluster) -> None:
    """decisions/0002 "Corruption": a follower's and the leader's copies of records stop
    reading back. Each reported range is marked damaged, then copied back from a replica that
    holds it committed (the leader first, a follower for the leader's own), and reads back."""
    for i in range(5):
        await _append(cluster, NODES[0], 1, b"r%d" % i)
    await _wait(lambda: all(cluster.statistics(n) == (6, 6) for n in NODES))
    for node, offset in ((NODES[1], 2), (NODES[0], 4)):
        cluster.stores[node].corrupt(SHARD, Offset(offset), count=2)
        with pytest.raises(LogCorruptionError) as failed:
            cluster.stores[node].read(
                SHARD, start_offset=Offset(0), end_offset=Offset(6), records_max=10, bytes_max=99
            )
        driver = cluster.drivers[node]
        driver.report_corruption(failed.value)
        await _wait(lambda driver=driver: not driver.repair_pending(SHARD))
        records = cluster.stores[node].read(
            SHARD, start_offset=Offset(0), end_offset=Offset(6), records_max=10, bytes_max=99
        )
        assert [r.data for r in records] == [b"r%d" % i for i in range(5)]


async def test_a_range_no_other_replica_holds_stays_damaged(cluster: Cluster) -> None:
    await _append(cluster, NODES[0], 1, b"only")
    await _wait(lambda: all(cluster.statistics(n) == (2, 2) for n in NODES))
    cluster.down = {NODES[1], NODES[2]}
    cluster.stores[NODES[0]].corrupt(SHARD, Offset(1))
    driver = cluster.drivers[NODES[0]]
    driver.report_corruption(LogCorruptionError("test", shard_uid=SHARD, offset=Offset(1)))
    await _wait(lambda: driver.damaged(SHARD) is not None)
    await asyncio.sleep(0.2)  # a window in which a careless repair would have given up
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
    pending = asyncio.ensure_future(_append(cluster, NODES[0], 1, b"waits"))
    await _wait(lambda: leader.statistics().leaders == 1 and not pending.done())
    await asyncio.sleep(0.05)  # the proposal is queued on the leader
    assert await leader.wait_producers_answered(timeout_s=0.2) == 1
    assert not pending.done()
    cluster.down = set()
    assert await leader.wait_producers_answered(timeout_s=5) == 0
    first, _ = await asyncio.wait_for(pending, timeout=1)
    assert first == 2


async def test_a_stopping_node_answers_its_waiting_readers_at_once(cluster: Cluster) -> None:
    leader = cluster.drivers[NODES[0]]
    await _append(cluster, NODES[0], 1, b"one")
    end = leader.readable_end(SHARD)
    assert end is not None
    waiting = asyncio.ensure_future(leader.wait_readable(SHARD, end, timeout_s=60))
    await asyncio.sleep(0.1)  # nothing new to read: it waits
    assert not waiting.done()
    leader.release_waiting_readers()
    await asyncio.wait_for(waiting, timeout=5)  # well before its own 60 s
    # Later reads do not wait either.
    await asyncio.wait_for(leader.wait_readable(SHARD, end, timeout_s=60), timeout=5)
