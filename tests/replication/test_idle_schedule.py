"""Idle shards cost nothing between heartbeats (issue 6): `ShardReplica.next_tick_ms`, the
unanswered idle heartbeat, and the driver that ticks only the replicas whose tick is due.

Goal: the schedule never hides work. Method: a seeded random run of one shard on three
replicas on virtual time (proposals, lost and late messages, ticks at random moments), checking
after every step that a tick before `next_tick_ms` changes nothing (on a copy); then scenario
tests for the heartbeat a follower leaves unanswered; then three real drivers on one loop whose
idle replicas are not ticked at all, while a write still reaches every follower.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from broker.clock import VirtualClock
from broker.log.group_commit import GroupCommitWriter
from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, NewRecord, new_record
from broker.meta.image import MetadataImage
from broker.replication import replica as replica_module
from broker.replication.driver import ReplicationDriver
from broker.replication.messages import Append, AppendAck, Envelope
from broker.replication.replica import (
    ReplicaDurableState,
    ReplicationKnobs,
    Role,
    ShardReplica,
)
from broker.types import NodeId, Offset, ShardUid
from tests.meta.factories import one_stream_image, shard_meta

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")
NODES = (A, B, C)
SHARD = ShardUid(5)
KNOBS = ReplicationKnobs(heartbeat_ms=10, resend_ms=100, idle_heartbeat_ms=500)


@dataclass
class Member:
    """One replica and its store, executed the way the driver does (durable at once)."""

    node_id: NodeId
    store: MemoryLogStore = field(default_factory=MemoryLogStore)
    replica: ShardReplica | None = None

    def start(self) -> None:
        durable = ReplicaDurableState.from_store(self.store, SHARD, rejoin_floor=None)
        self.replica = ShardReplica(SHARD, self.node_id, durable, knobs=KNOBS)

    @property
    def r(self) -> ShardReplica:
        assert self.replica is not None
        return self.replica

    def flush(self, now_ms: int) -> list[Envelope]:
        sent: list[Envelope] = []
        for _ in range(100):  # bounded: Readys run out
            if not self.r.has_ready():
                return sent
            ready = self.r.ready()
            if ready.reset_to is not None:
                self.store.reset_log(SHARD, log_start=ready.reset_to)
            if ready.truncate_from is not None:
                self.store.truncate_suffix(SHARD, from_offset=ready.truncate_from)
            if ready.promise is not None:
                self.store.promise(SHARD, ready.promise)
            if ready.appends:
                self.store.append(ready.appends)
            if ready.high_watermark is not None:
                self.store.set_high_watermark(SHARD, ready.high_watermark)
            sent.extend(ready.to_send)
            for request in ready.reads:
                batches = self.store.read_batches(
                    SHARD,
                    start_offset=request.start_offset,
                    end_offset=request.end_offset,
                    bytes_max=request.bytes_max,
                )
                self.r.read_done(request, batches, now_ms)
            self.r.advance(ready)
        raise AssertionError("Readys never ran out")


def _started(now_ms: int) -> dict[NodeId, Member]:
    members = {n: Member(n) for n in NODES}
    for member in members.values():
        member.start()
        member.r.configure(epoch=1, leader=A, replicas=NODES, sealing=False, now_ms=now_ms)
    return members


def _tick_changes_nothing(replica: ShardReplica, now_ms: int) -> bool:
    """A tick at `now_ms` (on a copy) leaves no Ready and the same statistics."""
    probe = copy.deepcopy(replica)
    probe.tick(now_ms)
    return not probe.has_ready() and probe.statistics() == replica.statistics()


@pytest.mark.parametrize("seed", range(10))  # 4,000 random steps; tests/sim runs more
def test_a_tick_before_next_tick_ms_never_does_anything(seed: int) -> None:
    rng = random.Random(seed)
    now_ms = 1_000
    members = _started(now_ms)
    in_flight: list[tuple[int, Envelope]] = []  # (deliver at, envelope)
    checked_early = 0
    for _ in range(400):
        now_ms += rng.choice((0, 1, 5, 20, 90, 150, 600))
        event = rng.random()
        if event < 0.2 and members[A].r.role is Role.LEADER:
            records = [NewRecord(partition_key="k", data=b"x" * rng.randint(1, 50))]
            members[A].r.propose(records, now_ms)
        elif event < 0.6:
            due = [item for item in in_flight if item[0] <= now_ms]
            in_flight = [item for item in in_flight if item[0] > now_ms]
            for _, envelope in due:
                if rng.random() < 0.2:
                    continue  # lost
                members[envelope.to].r.step(envelope.message, now_ms)
        else:
            for member in members.values():
                member.r.tick(now_ms)
        for member in members.values():
            for envelope in member.flush(now_ms):
                in_flight.append((now_ms + rng.randint(0, 120), envelope))
        for member in members.values():
            due_ms = member.r.next_tick_ms()
            if due_ms is None or now_ms < due_ms:
                checked_early += 1
                assert _tick_changes_nothing(member.r, now_ms), (seed, member.node_id, now_ms)
                if due_ms is not None:
                    assert _tick_changes_nothing(member.r, due_ms - 1)
    assert checked_early > 0


def test_followers_are_never_due_and_an_idle_leader_at_its_next_heartbeat() -> None:
    now_ms = 1_000
    members = _started(now_ms)
    assert members[B].r.next_tick_ms() is None
    outbox = members[A].flush(now_ms)
    members[A].r.propose([new_record("k", b"v")], now_ms)
    outbox += members[A].flush(now_ms)
    # Until it is answered, the leader's next tick is a resend.
    assert members[A].r.next_tick_ms() == now_ms + KNOBS.heartbeat_ms
    for _ in range(10):  # bounded: a few round trips settle it
        replies: list[Envelope] = []
        for envelope in outbox:
            members[envelope.to].r.step(envelope.message, now_ms)
        for member in members.values():
            replies += member.flush(now_ms)
        outbox = replies
        if not outbox:
            break
        now_ms += KNOBS.heartbeat_ms
        for member in members.values():
            member.r.tick(now_ms)
            outbox += member.flush(now_ms)
    assert not outbox
    statistics = members[A].r.statistics()
    assert all(f.match_end == statistics.log_end for f in statistics.followers)
    due_ms = members[A].r.next_tick_ms()
    assert due_ms is not None
    assert due_ms - now_ms >= KNOBS.idle_heartbeat_ms - KNOBS.heartbeat_ms
    assert members[B].r.next_tick_ms() is None


# --- The heartbeat a caught-up follower leaves unanswered --------------------------------------


def _heartbeat(first: int, *, log_start: int, hw: int, epoch: int = 1) -> Append:
    return Append(
        shard_uid=SHARD,
        epoch=epoch,
        leader=A,
        first_offset=Offset(first),
        prev_epoch=1 if first > 0 else 0,
        batches=(),
        leader_hw=Offset(hw),
        leader_log_start=Offset(log_start),
    )


def _follower_holding(count: int) -> Member:
    """B, following A at epoch 1, holding `count` records (offset 0 is A's epoch marker)."""
    members = _started(0)
    members[A].r.propose([new_record("k", b"v") for _ in range(count - 1)], 0)
    for envelope in members[A].flush(0):
        if envelope.to == B:
            members[B].r.step(envelope.message, 0)
    members[B].flush(0)
    assert members[B].r.statistics().log_end == count
    return members[B]


def _acks(member: Member, now_ms: int) -> list[AppendAck]:
    return [e.message for e in member.flush(now_ms) if isinstance(e.message, AppendAck)]


def test_a_caught_up_follower_does_not_answer_an_idle_heartbeat() -> None:
    follower = _follower_holding(3)
    follower.r.step(_heartbeat(3, log_start=0, hw=3), 10)
    assert _acks(follower, 10) == []
    assert follower.r.high_watermark == 3  # the HW it carried still counts


def test_a_heartbeat_the_answer_changes_something_for_is_answered() -> None:
    follower = _follower_holding(3)
    # The leader checks below what we hold (it does not know we hold more): answered.
    follower.r.step(_heartbeat(1, log_start=0, hw=1), 10)
    (ack,) = _acks(follower, 10)
    assert ack.ok
    assert ack.log_end == 3
    # At the leader's log start: the leader may know less than that (below its start).
    follower.r.step(_heartbeat(3, log_start=3, hw=3), 20)
    assert len(_acks(follower, 20)) == 1
    # A new leader knows nothing of us yet: it checks at its log start, and hears back.
    follower.r.step(_heartbeat(0, log_start=0, hw=3, epoch=2), 30)
    (ack,) = _acks(follower, 30)
    assert (ack.ok, ack.log_end) == (True, 3)
    # Beyond our log: refused, answered.
    follower.r.step(_heartbeat(5, log_start=0, hw=3, epoch=2), 40)
    (refusal,) = _acks(follower, 40)
    assert not refusal.ok


# --- The driver ticks only what is due -----------------------------------------------------------

SHARDS = 40


def _image() -> MetadataImage:
    return one_stream_image(
        *(
            shard_meta(
                100 + i,
                index=i,
                hash_key_start=i,
                hash_key_end=i if i < SHARDS - 1 else 2**128 - 1,
                replicas=NODES,
                leader=NODES[i % 3],
                epoch=1,
            )
            for i in range(SHARDS)
        )
    )


@dataclass
class Drivers:
    drivers: dict[NodeId, ReplicationDriver] = field(default_factory=dict)
    sent: int = 0
    clock: VirtualClock = field(default_factory=VirtualClock)  # every driver's timers


@pytest.fixture
async def drivers() -> AsyncIterator[Drivers]:
    image = _image()
    wired = Drivers()
    writers = []

    class Loopback:
        def __init__(self, me: NodeId) -> None:
            self.me = me

        def send(self, envelope: Envelope) -> None:
            wired.sent += 1
            wired.drivers[envelope.to].deliver(envelope.message)

        def send_all(self, envelopes: Sequence[Envelope]) -> None:
            for envelope in envelopes:
                self.send(envelope)

        async def fetch_batches(
            self,
            peer: NodeId,
            shard_uid: ShardUid,
            *,
            start_offset: Offset,
            end_offset: Offset,
            bytes_max: int,
        ) -> list[AppendBatch]:
            return await wired.drivers[peer].serve_fetch(
                shard_uid, start_offset=start_offset, end_offset=end_offset, bytes_max=bytes_max
            )

    async with asyncio.TaskGroup() as group:
        for node in NODES:
            store = MemoryLogStore()
            writer = GroupCommitWriter(store)
            writer.start()
            writers.append(writer)
            wired.drivers[node] = ReplicationDriver(
                node_id=node,
                store=store,
                writer=writer,
                transport=Loopback(node),
                clock=wired.clock,
                image=lambda: image,
                tick_ms=5,
                knobs=ReplicationKnobs(heartbeat_ms=20, resend_ms=200, idle_heartbeat_ms=60_000),
            )
        tasks = [group.create_task(d.run()) for d in wired.drivers.values()]
        try:
            yield wired
        finally:
            for task in tasks:
                task.cancel()
    for writer in writers:
        writer.stop()


def _all_caught_up(wired: Drivers) -> bool:
    ends = set()
    for driver in wired.drivers.values():
        for stats in driver.replica_statistics(frozenset()):
            ends.add((stats.shard_uid, stats.log_end, stats.high_watermark))
            if stats.role is Role.LEADER and any(
                f.match_end < stats.log_end for f in stats.followers
            ):
                return False
    return len(ends) == SHARDS  # every replica of a shard agrees on its end and HW


async def test_idle_replicas_are_not_ticked_and_a_write_still_reaches_every_follower(
    drivers: Drivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = drivers.clock
    await clock.run_until(lambda: _all_caught_up(drivers), step_ms=5)
    ticks = 0
    real_tick = replica_module.ShardReplica.tick

    def counting_tick(self: ShardReplica, now_ms: int) -> None:
        nonlocal ticks
        ticks += 1
        real_tick(self, now_ms)

    monkeypatch.setattr(replica_module.ShardReplica, "tick", counting_tick)
    await clock.run_for(300)  # settle: the last HW heartbeats go out at `heartbeat_ms`
    assert clock.next_due_ms() is not None  # the drivers' timers wait on the virtual clock
    ticks, sent = 0, drivers.sent
    await clock.run_for(500)  # 100 timer turns per driver (virtual); idle: no tick, no message
    assert (ticks, drivers.sent - sent) == (0, 0)
    shard = ShardUid(100)
    leader = drivers.drivers[A]
    appending = asyncio.create_task(
        leader.append(shard, epoch=1, records=[new_record("k", b"v")], now_ms=clock.wall_ms())
    )
    await clock.run_until(appending.done, step_ms=5)
    first, _ = appending.result()
    # The followers learn the new HW from the leader's next (scheduled) heartbeat.
    await clock.run_until(
        lambda: all(d.readable_end(shard) == first + 1 for d in drivers.drivers.values()),
        step_ms=5,
        deadline_s=5.0,
    )
    assert ticks > 0
