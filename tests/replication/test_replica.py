"""Scenario tests for `ShardReplica`, driven by hand (STYLE B.5 "scenario tests").

`Node` plays the driver: it persists each Ready into a `MemoryLogStore` (durable at once),
collects what it would send into an outbox, runs the reads, and advances. Tests move messages
between nodes explicitly (`deliver`), so each one states exactly which messages arrive, are
lost or arrive late.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, NewRecord
from broker.replication.messages import (
    Append,
    AppendAck,
    Envelope,
    Prepare,
    Promise,
    ReplicationMessage,
)
from broker.replication.refusals import RefusalReason
from broker.replication.replica import (
    Proposal,
    Ready,
    Refusal,
    ReplicaDurableState,
    ReplicationKnobs,
    Role,
    ShardReplica,
    end_for_epoch,
    epoch_at,
)
from broker.types import NodeId, Offset, ShardUid

SHARD = ShardUid(9)
A, B, C = NodeId("a"), NodeId("b"), NodeId("c")
NODES = (A, B, C)
KNOBS = ReplicationKnobs(heartbeat_ms=10, resend_ms=100)


def rec(text: str) -> NewRecord:
    return NewRecord(partition_key="pk", data=text.encode())


@dataclass
class Node:
    node_id: NodeId
    store: MemoryLogStore = field(default_factory=MemoryLogStore)
    replica: ShardReplica | None = None
    outbox: list[Envelope] = field(default_factory=list)
    committed_end: Offset | None = None
    abandoned: int = 0

    def start(self, *, rejoin_floor: int | None = None, knobs: ReplicationKnobs = KNOBS) -> None:
        durable = ReplicaDurableState.from_store(self.store, SHARD, rejoin_floor=rejoin_floor)
        self.replica = ShardReplica(SHARD, self.node_id, durable, knobs=knobs)

    @property
    def r(self) -> ShardReplica:
        assert self.replica is not None
        return self.replica

    def flush(self, now_ms: int = 0) -> None:
        """Executes Readys until there is nothing left (persist, send, read, advance)."""
        for _ in range(100):
            if not self.r.has_ready():
                return
            ready = self.r.ready()
            self._persist(ready)
            self.outbox.extend(ready.to_send)
            if ready.committed_end is not None:
                self.committed_end = ready.committed_end
            self.abandoned += ready.abandoned
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

    def _persist(self, ready: Ready) -> None:
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

    def take(self, to: NodeId | None = None) -> list[ReplicationMessage]:
        taken = [e.message for e in self.outbox if to is None or e.to == to]
        self.outbox = [e for e in self.outbox if to is not None and e.to != to]
        return taken

    def data(self) -> list[bytes]:
        records = self.store.read(
            SHARD,
            start_offset=Offset(0),
            end_offset=Offset(10**9),
            records_max=10**6,
            bytes_max=10**9,
        )
        return [r.data for r in records]

    def epochs(self) -> list[int]:
        batches = self.store.read_batches(
            SHARD, start_offset=Offset(0), end_offset=Offset(10**9), bytes_max=10**9
        )
        return [b.epoch for b in batches for _ in b.records]


class Cluster:
    def __init__(self, nodes: tuple[NodeId, ...] = NODES) -> None:
        self.nodes = {n: Node(n) for n in nodes}
        self.replicas = nodes
        self.now = 0
        for node in self.nodes.values():
            node.start()

    def __getitem__(self, node_id: NodeId) -> Node:
        return self.nodes[node_id]

    def configure(
        self,
        epoch: int,
        leader: NodeId,
        *,
        only: tuple[NodeId, ...] | None = None,
        sealing: bool = False,
    ) -> None:
        for node_id in only or self.replicas:
            node = self.nodes[node_id]
            node.r.configure(
                epoch=epoch, leader=leader, replicas=self.replicas, sealing=sealing, now_ms=self.now
            )
            node.flush(self.now)

    def propose(self, leader: NodeId, *texts: str) -> Proposal:
        result = self.nodes[leader].r.propose([rec(t) for t in texts], self.now)
        assert isinstance(result, Proposal), result
        self.nodes[leader].flush(self.now)
        return result

    def deliver(
        self, sender: NodeId, to: NodeId | None = None, *, keep: bool = False
    ) -> list[ReplicationMessage]:
        """Delivers `sender`'s outbox (to one node or all); returns what was delivered."""
        messages = [
            (e.to, e.message) for e in self.nodes[sender].outbox if to is None or e.to == to
        ]
        if not keep:
            self.nodes[sender].outbox = [
                e for e in self.nodes[sender].outbox if to is not None and e.to != to
            ]
        for receiver, message in messages:
            if receiver in self.nodes and self.nodes[receiver].replica is not None:
                self.nodes[receiver].r.step(message, self.now)
                self.nodes[receiver].flush(self.now)
        return [m for _, m in messages]

    def settle(self, rounds: int = 30, *, down: tuple[NodeId, ...] = ()) -> None:
        """Delivers everything between live nodes, ticking, until quiet."""
        for _ in range(rounds):
            self.now += KNOBS.heartbeat_ms
            for node_id, node in self.nodes.items():
                if node_id in down:
                    node.outbox.clear()
                    continue
                node.r.tick(self.now)
                node.flush(self.now)
            for node_id in self.nodes:
                if node_id not in down:
                    for envelope in list(self.nodes[node_id].outbox):
                        if envelope.to in down:
                            self.nodes[node_id].outbox.remove(envelope)
                    self.deliver(node_id)

    def prepare(self, epoch: int, *voters: NodeId) -> list[Promise]:
        promises = []
        for node_id in voters:
            node = self.nodes[node_id]
            promise = node.r.step(Prepare(shard_uid=SHARD, epoch=epoch), self.now)
            assert promise is not None
            node.flush(self.now)  # the Promise is sent only after this (module docstring)
            promises.append(promise)
        return promises


def test_history_helpers() -> None:
    history = ((1, Offset(0)), (3, Offset(5)), (4, Offset(9)))
    assert epoch_at(history, -1) == 0
    assert epoch_at(history, 0) == 1
    assert epoch_at(history, 4) == 1
    assert epoch_at(history, 5) == 3
    assert epoch_at(history, 100) == 4
    assert epoch_at((), 3) == 0
    assert end_for_epoch(history, 1, Offset(20)) == 5
    assert end_for_epoch(history, 2, Offset(20)) == 5  # the largest epoch <= 2 is 1
    assert end_for_epoch(history, 4, Offset(20)) == 20
    assert end_for_epoch(history, 0, Offset(20)) == 0


def test_happy_path_marker_dense_offsets_and_commit() -> None:
    """The leader writes its epoch-start marker first, gives dense offsets in propose order,
    and commits once a majority (itself included) holds the records durably."""
    c = Cluster()
    c.configure(1, A)
    assert c[A].r.role is Role.LEADER
    first = c.propose(A, "x", "y")
    second = c.propose(A, "z")
    assert (first.first_offset, first.end_offset) == (1, 3)  # offset 0 is the marker
    assert (second.first_offset, second.end_offset) == (3, 4)
    assert c[A].committed_end == 0  # nobody else has it yet
    c.deliver(A, B)
    c.deliver(B)
    assert c[A].committed_end == 4  # A and B are a majority
    assert c[A].r.high_watermark == 4
    c.settle()
    for node in c.nodes.values():
        assert node.data() == [b"x", b"y", b"z"]
        assert node.r.high_watermark == 4
        assert node.store.epoch_history(SHARD) == ((1, 0),)
        assert node.store.high_watermark(SHARD) == 4


def test_refusals_on_followers_sealing_and_stale_epoch() -> None:
    c = Cluster()
    c.configure(1, A)
    refused = c[B].r.propose([rec("x")], 0)
    assert refused == Refusal(reason=RefusalReason.NOT_SHARD_LEADER, leader=A)
    c.prepare(2, B, C)  # A is not asked, but the image still names it
    c.settle()  # B and C refuse A's epoch 1 and tell it: A is fenced
    assert c[A].r.role is Role.FOLLOWER
    assert c[A].abandoned == 1
    assert c[A].r.statistics().fenced
    assert c[A].r.propose([rec("x")], 0) == Refusal(reason=RefusalReason.STALE_EPOCH, leader=None)


def test_follower_catch_up_through_log_reads() -> None:
    """A follower that was down catches up from the log (no tail cache) in bounded Appends."""
    knobs = ReplicationKnobs(
        heartbeat_ms=10, resend_ms=100, tail_cache_bytes_max=0, append_bytes_max=8, read_bytes_max=8
    )
    c = Cluster()
    for node in c.nodes.values():
        node.start(knobs=knobs)
    c.configure(1, A)
    for i in range(10):
        c.propose(A, f"r{i}")
        c.settle(1, down=(C,))
    assert c[A].r.high_watermark == 11
    assert c[C].data() == []
    c.settle(60)
    assert c[C].data() == [f"r{i}".encode() for i in range(10)]
    assert c[C].r.high_watermark == 11
    for message in c[A].take():
        if isinstance(message, Append):
            assert sum(b.size_bytes for b in message.batches) <= 8 or len(message.batches) == 1


def test_divergent_suffix_truncated_by_epoch_history_kip101() -> None:
    """KIP-101: a follower holds an uncommitted suffix of an old epoch the new leader never
    had; it truncates exactly that suffix (never by HW, never committed records)."""
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "committed")
    c.settle()
    c.propose(A, "lost-1", "lost-2")
    c.deliver(A, B)  # only B gets the tail; C does not; A dies before B's ack counts
    c[B].take()
    assert c[A].r.high_watermark == 2
    # C becomes leader without A or B's tail (B and C promise; C picked by the test).
    c.prepare(2, B, C)
    c.configure(2, C, only=(B, C))
    c.propose(C, "new")
    c.settle(down=(A,))
    assert c[B].data() == [b"committed", b"new"]
    assert c[B].epochs() == [1, 1, 2, 2]
    assert c[B].store.epoch_history(SHARD) == ((1, 0), (2, 2))
    assert c[B].r.high_watermark == c[C].r.high_watermark == 4


def test_double_failover_kip279() -> None:
    """KIP-279: two quick leader changes leave a follower with a suffix from an epoch the
    current leader does not know; one refusal hint skips that whole epoch."""
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "base")
    c.settle()
    # Epoch 2: B leads, writes a tail only it has.
    c.prepare(2, B, C)
    c.configure(2, B, only=(B, C))
    c.propose(B, "b-only-1", "b-only-2")
    c[B].take()
    # Epoch 3: C leads (it has no epoch-2 tail, only B's marker was lost too).
    c.prepare(3, A, C)
    c.configure(3, C, only=(A, C))
    c.propose(C, "c-1", "c-2", "c-3")
    c.configure(3, C, only=(B,))
    c.settle()
    assert c[B].data() == [b"base", b"c-1", b"c-2", b"c-3"]
    assert [e for e, _ in c[B].store.epoch_history(SHARD)] == [1, 3]
    for node in c.nodes.values():
        assert node.r.high_watermark == 6


def test_stale_epoch_append_refused_and_prepare_fences_old_leader() -> None:
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "x")
    stale = c[A].take(B)
    promises = c.prepare(2, B, C)
    assert all(p.ok and p.promised_epoch == 2 for p in promises)
    assert c[B].store.promised_epoch(SHARD) == 2  # durable before the Promise may leave
    for message in stale:
        c[B].r.step(message, 0)
    c[B].flush()
    acks = c[B].take(A)
    assert acks
    for ack in acks:
        assert isinstance(ack, AppendAck)
        assert not ack.ok
        assert ack.promised_epoch == 2
    c[A].r.step(acks[0], 0)
    c[A].flush()
    assert c[A].r.role is Role.FOLLOWER
    assert c[A].r.high_watermark == 0  # fenced: it can never commit "x" in epoch 1
    # A Prepare below the promise is refused too.
    (late,) = c.prepare(1, B)
    assert not late.ok
    assert late.promised_epoch == 2


def test_only_a_leader_whose_marker_committed_knows_the_committed_end() -> None:
    """A follower's HW lags its leader's by one Append, and a new leader starts from the HW
    it had as a follower: both below a record already acknowledged. Readers must not take
    either for the end of the shard (service/shards.py); `knows_committed_end` says when the
    HW is the committed end. The issue-16 rolling upgrade read "x" missing this way."""
    c = Cluster()
    c.configure(1, A)
    c.settle()
    assert c[A].r.knows_committed_end()
    c.propose(A, "x")  # offset 1
    c.deliver(A, B)
    c.deliver(B, A)
    assert c[A].committed_end == 2  # acknowledged to its producer
    assert c[B].r.high_watermark == 1  # B learns it with A's next Append
    assert not c[B].r.knows_committed_end() and not c[C].r.knows_committed_end()
    c[A].take()  # that Append never leaves: A is replaced (a preferred-leader move)
    c.prepare(2, B, C)
    c.configure(2, B, only=(B, C))
    assert c[B].r.role is Role.LEADER
    assert c[B].r.high_watermark == 1  # below "x": not the end of the shard
    assert not c[B].r.knows_committed_end()
    c.settle(down=(A,))  # "x" and the marker (offset 2) reach C, which acknowledges
    assert c[B].r.high_watermark == 3
    assert c[B].r.knows_committed_end()
    assert not c[C].r.knows_committed_end()


def test_raft_figure_8_old_epoch_record_on_a_majority_is_not_committed() -> None:
    """Raft's Figure 8: a new leader re-replicates an old-epoch record to a majority; it must
    not count as committed until a record of the leader's own epoch (its marker) is on a
    majority too, or a later leader without it could overwrite it."""
    c = Cluster()
    c.configure(1, A)
    c.settle()
    c.propose(A, "old")  # offset 1, epoch 1, only on A
    c[A].take()
    c.prepare(2, B, C)
    c.configure(2, B, only=(B, C))
    c[B].take()  # B's marker (offset 1, epoch 2) reaches nobody
    # A leads again in epoch 3 with "old" at offset 1; its marker is offset 2.
    c.prepare(3, A, C)
    c.configure(3, A, only=(A, C))
    c.deliver(A, C)  # optimistic: the marker at 2 leaves a gap at C (it ends at 1)
    c.deliver(C, A)  # the refusal sends A back to offset 1
    appends = [m for m in c[A].take(C) if isinstance(m, Append)]
    # Deliver only the part with the epoch-1 record: C now holds "old" (a majority: A, C).
    old_only = [
        Append(
            shard_uid=SHARD,
            epoch=3,
            leader=A,
            first_offset=m.first_offset,
            prev_epoch=m.prev_epoch,
            batches=tuple(b for b in m.batches if b.epoch == 1),
            leader_hw=m.leader_hw,
            leader_log_start=m.leader_log_start,
        )
        for m in appends
    ]
    for message in old_only:
        c[C].r.step(message, 0)
    c[C].flush()
    c.deliver(C, A)
    assert c[C].data() == [b"old"]
    assert c[A].r.high_watermark == 1  # "old" (offset 1) is on a majority but NOT committed
    c.settle()
    assert c[A].r.high_watermark == 3  # the marker of epoch 3 committed it
    assert c[C].data() == [b"old"]


def test_hw_never_goes_back_and_reload_clamps_it() -> None:
    c = Cluster()
    c.configure(1, A)
    seen = []
    for i in range(5):
        c.propose(A, f"r{i}")
        c.settle(2)
        seen.append(c[B].r.high_watermark)
    assert seen == sorted(seen)
    # A lower HW on disk after a crash is allowed (lazily written), never a higher one.
    c[B].store.set_high_watermark(SHARD, Offset(10**6))
    c[B].start()
    assert c[B].r.high_watermark == c[B].store.log_end(SHARD)


def test_sealing_refuses_appends_then_reports_the_final_end() -> None:
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "x", "y")
    c.configure(1, A, sealing=True)
    refused = c[A].r.propose([rec("z")], 0)
    assert refused == Refusal(reason=RefusalReason.SHARD_SEALED, leader=A)
    assert c[A].r.sealed_end() is None  # not committed yet
    c.settle()
    assert c[A].r.sealed_end() == 3
    assert c[B].r.sealed_end() is None  # only the leader reports it


def test_new_leader_of_a_sealing_shard_seals_after_its_marker() -> None:
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "x")
    c.settle()
    c.prepare(2, B, C)
    c.configure(2, B, only=(B, C), sealing=True)
    assert c[B].r.sealed_end() is None
    c.settle(down=(A,))
    assert c[B].r.sealed_end() == 3  # marker 0, "x" 1, marker 2


def test_trimmed_prefix_catch_up_resets_a_follower_behind_log_start() -> None:
    """Rule 5: a follower whose log ends below the leader's log start drops its log and
    restarts there."""
    c = Cluster()
    c.configure(1, A)
    for i in range(4):
        c.propose(A, f"r{i}")
    c.settle(down=(C,))
    assert c[A].r.high_watermark == 5
    # Retention trims A (and B) up to offset 5: C, at 1 (marker only), can no longer copy.
    for node_id in (A, B):
        node = c[node_id]
        node.store.trim(SHARD, arrival_ms_before=1)
        node.r.trimmed(node.store.log_start(SHARD))
    assert c[A].store.log_start(SHARD) == 5
    c.propose(A, "after-trim")
    c.settle()
    assert c[C].store.log_start(SHARD) == 5
    assert c[C].data() == [b"after-trim"]
    assert c[C].r.high_watermark == 6


def test_a_replica_that_lost_its_disk_fences_nobody_and_counts_only_from_a_new_epoch() -> None:
    """decisions/0002 "Lost disk": C comes back empty while A leads epoch 1 (the floor C read
    after the loss). C promises nothing new (A keeps leading), copies the log, and its
    acknowledgements do not count for epoch 1: with B down, A commits nothing. It votes once
    caught up, and counts again from epoch 2 (the controller's "rejoined" epoch change)."""
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "x")
    c.settle()
    c[C].store = MemoryLogStore()  # C's disk is replaced
    c[C].start(rejoin_floor=1)
    c[C].r.configure(epoch=1, leader=A, replicas=NODES, sealing=False, now_ms=0)
    c[C].flush()
    assert c[C].r.statistics().promised_epoch == 1  # fences nobody
    assert c[A].r.role is Role.LEADER
    (promise,) = c.prepare(1, C)
    assert not promise.ok  # no vote while recovering
    before = c[A].r.high_watermark
    c.propose(A, "y")
    c.settle(down=(B,))
    assert c[C].data() == [b"x", b"y"]  # C holds the log...
    assert c[A].r.high_watermark == before  # ...but does not count for epoch 1
    stats = c[C].r.statistics()
    assert stats.rejoin_floor == 1
    c.settle()  # B is back: y commits with B, and C learns the HW
    assert c[A].r.high_watermark == c[A].r.statistics().log_end
    stats = c[C].r.statistics()
    assert not stats.recovering  # caught up: may vote and lead...
    assert stats.rejoin_floor == 1  # ...but waits for a new epoch to count
    (promise,) = c.prepare(2, C)
    assert promise.ok
    c.prepare(2, A, B)
    c.configure(2, A)
    assert c[C].r.statistics().rejoin_floor is None
    c.propose(A, "z")
    c.settle(down=(B,))
    assert c[A].r.high_watermark == c[A].r.statistics().log_end  # A and C commit epoch 2
    assert c[C].data() == [b"x", b"y", b"z"]


def test_a_rejoining_replica_cannot_help_the_leader_its_lost_promise_fenced() -> None:
    """Why a rejoining replica's acks do not count at or below its floor: B and C promised
    epoch 2 (a leader change whose commit is still on its way), then C lost its disk. A, the
    epoch-1 leader, is fenced by that majority; C forgot its promise and takes A's records,
    but A must not commit them with C, or the epoch-2 leader (chosen from B's and C's old
    logs) would lose them."""
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "x")
    c.settle()
    assert all(p.ok for p in c.prepare(2, B, C))
    c[C].store = MemoryLogStore()
    c[C].start(rejoin_floor=1)  # the image C reads still says epoch 1 (the floor)
    c[C].r.configure(epoch=1, leader=A, replicas=NODES, sealing=False, now_ms=0)
    c[C].flush()
    hw = c[A].r.high_watermark
    c.propose(A, "y")
    c.settle(down=(B,))
    assert b"y" in c[C].data()  # C took it...
    assert c[A].r.high_watermark == hw  # ...but A could not commit it


def test_a_set_of_two_whose_leader_lost_its_disk_commits_again_under_the_survivor() -> None:
    """C led a set of two and lost its disk. A, the survivor, is chosen for epoch 2 (the
    controller's current-epoch rule: half of the set, holding a record of epoch 1). A's epoch
    marker and records need C's acknowledgement to commit, and C, still copying the log,
    stopped copying only once a record of epoch 2 was committed: neither ever happened (a
    rejoining replica's acks counted only once caught up), so the shard took no more writes
    and C never caught up. Epoch 2 is above C's floor, so A counts C's acks."""
    c = Cluster((A, C))
    c.configure(1, C)
    c.propose(C, "x")
    c.settle()
    c[C].store = MemoryLogStore()
    c[C].start(rejoin_floor=1)
    c[C].r.configure(epoch=1, leader=C, replicas=(A, C), sealing=False, now_ms=0)
    c[C].flush()
    assert [p.ok for p in c.prepare(2, A, C)] == [True, False]
    c.configure(2, A)
    c.propose(A, "y")
    c.settle()
    assert c[A].r.high_watermark == c[A].r.statistics().log_end  # y committed with C
    assert c[C].data() == [b"x", b"y"]
    stats = c[C].r.statistics()
    assert not stats.recovering and stats.rejoin_floor is None  # caught up, counts again
    assert [p.ok for p in c.prepare(3, A, C)] == [True, True]


def test_a_replica_that_lost_its_disk_never_leads_what_it_lacks() -> None:
    """C was the leader of epoch 1 and lost its disk: named leader by the image, it does not
    lead (it lacks the log) until an epoch change elects another replica."""
    c = Cluster()
    c.configure(1, C)
    c.propose(C, "x")
    c.settle()
    c[C].store = MemoryLogStore()
    c[C].start(rejoin_floor=1)
    c[C].r.configure(epoch=1, leader=C, replicas=NODES, sealing=False, now_ms=0)
    c[C].flush()
    assert c[C].r.role is Role.FOLLOWER
    refused = c[C].r.propose([rec("lost?")], 0)
    assert isinstance(refused, Refusal)
    promises = c.prepare(2, A, B, C)
    assert [p.ok for p in promises] == [True, True, False]
    c.configure(2, A)
    c.settle()
    assert c[C].data() == [b"x"]
    assert not c[C].r.statistics().recovering


def test_one_ready_at_a_time_and_promise_waits_for_persistence() -> None:
    c = Cluster()
    c.configure(1, A)
    c.propose(A, "x")
    replica = c[B].r
    replica.step(Prepare(shard_uid=SHARD, epoch=5), 0)
    ready = replica.ready()
    assert ready.promise == 5
    with pytest.raises(AssertionError):
        replica.ready()
    replica.advance(ready)
    assert not replica.has_ready()


def test_append_batches_carry_epochs() -> None:
    batch = AppendBatch(
        shard_uid=SHARD,
        first_offset=Offset(0),
        arrival_ms=1,
        records=(rec("a"), rec("b"), rec("c")),
        epoch=4,
    )
    piece = batch.slice(Offset(1), Offset(3))
    assert (piece.first_offset, len(piece.records), piece.epoch) == (1, 2, 4)
    assert batch.slice(Offset(0), Offset(9)) is batch


def test_a_leader_that_lost_a_sent_tail_leads_again_only_in_a_new_epoch() -> None:
    """Rules 3 and 6: the leader's Appends go out before its own write is durable. Its HW
    stays within its durable log however far the followers acknowledge; after a crash that
    lost the sent tail it does not lead on in that epoch (the followers hold the tail under
    it), and in a new epoch its marker makes its log win."""
    c = Cluster()
    c.configure(1, A)
    c.settle()
    assert c[A].r.high_watermark == 1  # the marker
    proposal = c[A].r.propose([rec("x")], c.now)
    assert isinstance(proposal, Proposal)
    ready = c[A].r.ready()  # sent before it is persisted (DriverCore.send_ahead)
    for envelope in ready.to_send:
        assert isinstance(envelope.message, Append)
        c[envelope.to].r.step(envelope.message, c.now)
        c[envelope.to].flush(c.now)
    for ack in c[B].take() + c[C].take():
        assert isinstance(ack, AppendAck) and ack.ok and ack.log_end == 2
        c[A].r.step(ack, c.now)
    assert c[A].r.high_watermark == 1  # a majority of followers holds x; the leader does not
    # The leader crashes before its fsync: x is on B and C only, under epoch 1.
    c[A].outbox.clear()
    c[A].start()
    assert c[A].store.log_end(SHARD) == 1
    c[A].r.configure(epoch=1, leader=A, replicas=NODES, sealing=False, now_ms=c.now)
    assert c[A].r.role is Role.FOLLOWER and c[A].r.fenced()
    refused = c[A].r.propose([rec("y")], c.now)
    assert isinstance(refused, Refusal) and refused.reason is RefusalReason.STALE_EPOCH
    assert c[A].r.statistics().fenced  # in its heartbeats: the controller changes the epoch
    # The controller's new epoch, led by A (the worst case: the shortest log of the three).
    c.prepare(2, A, B, C)
    c.configure(2, A)
    assert c[A].r.role is Role.LEADER and not c[A].r.fenced()
    c.propose(A, "y")
    c.settle()
    for node in c.nodes.values():
        assert node.data() == [b"y"]  # x, never acknowledged, is gone everywhere
        assert node.epochs() == [1, 2, 2]
        assert node.r.high_watermark == 3


def test_a_single_replica_leads_on_in_its_epoch_after_a_restart() -> None:
    """Rule 6 spares a shard with one replica: it sent nothing to anyone."""
    c = Cluster(nodes=(A,))
    c.configure(1, A)
    c.propose(A, "x")
    c[A].start()
    c[A].r.configure(epoch=1, leader=A, replicas=(A,), sealing=False, now_ms=c.now)
    assert c[A].r.role is Role.LEADER and not c[A].r.fenced()
    c.propose(A, "y")
    c[A].flush()
    assert c[A].data() == [b"x", b"y"]
