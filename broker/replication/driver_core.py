"""`DriverCore`: the synchronous heart of the replication driver (the etcd-raft Ready loop).

Everything the driver decides, without the I/O: the bounded inbox, applying metadata images
to the replicas, ticks on each replica's own timer, taking a turn's Readys, the order they
are persisted in (`persist_plan`), and what follows a durable turn (`finish`): producers
answered up to `committed_end`, the producers of a replica that abandoned its leadership kept
as orphans until it learns whether their records survived, the log cuts that fail them,
Prepares answered once their promise is durable. The caller executes what a turn returns:
the async shell (`driver.ReplicationDriver`, with RocksDB, the group commit and gRPC) and the
simulator (`broker/sim`, with a simulated disk and network under a seed) run this same code.

Completions are anything with `done`/`set_result`/`set_exception` (`Completion`): an asyncio
future in the shell, a plain recorder in the simulator.

Pure: no asyncio, no clock (times are passed in), no threads. Not thread-safe. A node view.
"""

from __future__ import annotations

import collections
import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from broker import error_messages, limits
from broker.buggify import buggify
from broker.errors import ErrorCode, ShoalError
from broker.log.disk_guard import DiskGuard
from broker.log.records import AppendBatch, NewRecord
from broker.log.store import LogStore
from broker.meta.controller_core import RejoiningReplica
from broker.meta.image import MetadataImage, ShardState
from broker.replication import replica as core
from broker.replication.messages import (
    Append,
    AppendAck,
    Envelope,
    Prepare,
    Promise,
    ReplicationMessage,
)
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.replication.replica import (
    ReplicaDurableState,
    ReplicaStatistics,
    ReplicationKnobs,
    ShardReplica,
)
from broker.types import NodeId, Offset, ShardUid

log = logging.getLogger(__name__)

T = TypeVar("T", contravariant=True)


class Completion(Protocol[T]):
    """Where a producer's or a Prepare's answer goes (an asyncio.Future fits)."""

    def done(self) -> bool: ...

    def set_result(self, result: T, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class LeadershipProbe(Protocol):
    """What the core reports about leaderships (`probe.ReplicationProbe` fits)."""

    def leadership_gained(self) -> None: ...

    def leadership_lost(self) -> None: ...


Appended = tuple[Offset, int]  # (first offset, arrival_ms) of an acknowledged append


@dataclass(slots=True, kw_only=True)
class Waiter:
    end_offset: Offset
    first_offset: Offset
    arrival_ms: int
    completion: Completion[Appended]


@dataclass(slots=True, kw_only=True)
class Local:
    """One local replica and the producers waiting on it.

    `waiters` wait for the leader's commit. When the replica abandons its leadership, their
    records may still commit under the next leader (if a majority received them) or be cut
    off: they become `orphans`, answered with success once this replica, now a follower, has
    a high watermark past them and never truncated or reset its log below their end (then the
    records at those offsets are still the ones proposed, so their sequence numbers stand), or
    failed as an unknown outcome (OUTCOME_UNKNOWN: the client decides whether to retry) as soon
    as it did. A planned leadership move (rebalance, drain) therefore fails no producer.
    """

    replica: ShardReplica
    epoch: int = 0  # the epoch of the image entry it was last configured with
    waiters: collections.deque[Waiter] = field(default_factory=collections.deque)
    orphans: list[Waiter] = field(default_factory=list)
    persisted_end: Offset  # the log end as of the last persisted Ready

    def fail_waiters(self, reason: RefusalReason, leader: NodeId | None = None) -> None:
        for waiter in [*self.waiters, *self.orphans]:
            self._fail(waiter, reason, leader)
        self.waiters.clear()
        self.orphans.clear()

    def _fail(self, waiter: Waiter, reason: RefusalReason, leader: NodeId | None) -> None:
        if not waiter.completion.done():
            waiter.completion.set_exception(
                ShardRefusedError(
                    reason, shard_uid=self.replica.shard_uid, leader=leader, epoch=self.epoch
                )
            )

    def answer(self, committed_end: Offset) -> int:
        """Answers the producers whose records end at or below `committed_end`; how many."""
        answered = 0
        while self.waiters and self.waiters[0].end_offset <= committed_end:
            waiter = self.waiters.popleft()
            if not waiter.completion.done():
                waiter.completion.set_result((waiter.first_offset, waiter.arrival_ms))
                answered += 1
        return answered

    def log_cut(self, ready: core.Ready) -> None:
        """Fails the producers whose records this Ready's reset or truncation removes."""
        if ready.reset_to is not None:
            cut: Offset | None = Offset(0)
        else:
            cut = ready.truncate_from
        if cut is None:
            return
        kept = []
        for waiter in self.orphans:
            if waiter.end_offset > cut:
                # Cut here, yet a replica elected later may still hold them: unknown.
                self._fail(waiter, RefusalReason.OUTCOME_UNKNOWN, None)
            else:
                kept.append(waiter)
        self.orphans = kept
        while self.waiters and self.waiters[-1].end_offset > cut:
            self._fail(self.waiters.pop(), RefusalReason.OUTCOME_UNKNOWN, None)

    def abandon(self, persisted_end: Offset) -> None:
        """Only records persisted before this Ready can become orphans: a later removal of
        them is then a truncation the next Readies show. Unpersisted ones may have been cut
        in memory already, so their producers fail now (retryable, unknown outcome)."""
        for waiter in self.waiters:
            if waiter.end_offset <= persisted_end:
                self.orphans.append(waiter)
            else:
                # Not sent as leader, but on this disk: a later epoch led here could commit
                # them. Unknown.
                self._fail(waiter, RefusalReason.OUTCOME_UNKNOWN, None)
        self.waiters.clear()

    def persisted(self, ready: core.Ready) -> None:
        if ready.reset_to is not None:
            self.persisted_end = ready.reset_to
        if ready.truncate_from is not None:
            self.persisted_end = ready.truncate_from
        if ready.appends:
            self.persisted_end = ready.appends[-1].end_offset

    def answer_orphans(self) -> None:
        if not self.orphans:
            return
        hw = self.replica.high_watermark
        kept = []
        for waiter in self.orphans:
            if waiter.end_offset <= hw:
                if not waiter.completion.done():
                    waiter.completion.set_result((waiter.first_offset, waiter.arrival_ms))
            elif not waiter.completion.done():
                kept.append(waiter)
        self.orphans = kept


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverStatistics:
    replicas: int
    leaders: int
    turns: int
    inbox_dropped: int


StoreCall = Callable[[LogStore], object]


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistPlan:
    """What makes a turn durable, in order: `before` (resets, truncations, promises, high
    watermarks: each a call on the store), then `appends` (the group commit), then an fsync.

    `beside`: high watermarks written alongside the appends, in no order with them (on another
    thread, maybe after their fsync), when nothing of the turn must precede the appends. They
    are lazily durable (store.py) and never exceed what was durable before the turn, so their
    order does not matter; putting them first would delay the turn's appends by a write."""

    before: tuple[StoreCall, ...]
    appends: tuple[AppendBatch, ...]
    beside: tuple[StoreCall, ...] = ()


@dataclass(slots=True, kw_only=True)
class Turn:
    """The Readys one turn took, and the Prepares it will answer once they are durable."""

    work: list[tuple[Local, core.Ready]]
    promises: list[tuple[Promise, Completion[Promise]]]
    candidates: list[Local]
    every: bool
    # The replicas whose Appends `send_ahead` handed out: `finish` leaves those out.
    sent_ahead: set[ShardUid] = field(default_factory=set)


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnEffects:
    """What the caller does after `finish`: send, start the catch-up reads (feeding their
    results back with `read_done`), and turn again at once if `again`. `answered`: how many
    producers the turn answered (their replies may leave before the next turn)."""

    sends: tuple[Envelope, ...]
    reads: tuple[tuple[Local, core.ReadRequest], ...]
    again: bool
    answered: int


class DriverCore:
    """Every shard replica of one node and the producers waiting on them (module docstring)."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        store: LogStore,
        knobs: ReplicationKnobs | None = None,
        rejoin_floors: Mapping[ShardUid, int] | None = None,
        disk: DiskGuard | None = None,
        inbox_max: int = limits.replication_inbox_messages_max,
        probe: LeadershipProbe | None = None,
    ) -> None:
        assert inbox_max >= 1
        self.node_id = node_id
        self._store = store
        self._knobs = knobs or ReplicationKnobs()
        # A node that lost its disk: each replica it held, with the shard's epoch in the image
        # read after the loss (replica.py, "lost its disk"). Replicas of other shards are new.
        self._rejoin_floors = dict(rejoin_floors or {})
        # Below its free-space minimum the node takes no new records (log/disk_guard.py):
        # producers are refused here, and record batches from leaders are dropped (the leader
        # keeps resending; its other followers commit). Control batches still go through.
        self._disk = disk
        self._probe = probe
        self._led: set[ShardUid] = set()  # shards led at the last turn (for the probe)
        self.disk_dropped = 0
        self._inbox: collections.deque[ReplicationMessage] = collections.deque()
        self._inbox_max = inbox_max
        self.locals: dict[ShardUid, Local] = {}
        self.applied: MetadataImage | None = None
        # Which replicas a turn asks for a Ready (issue 6: with 1,000 replicas, asking every
        # one on every wake-up was most of an idle node's CPU). Whatever changes a replica
        # (an input, a tick) adds it, and a new image asks them all: a replica changed without
        # being touched here would neither hand out its Ready nor be rescheduled (`_schedule`).
        self._touched: set[ShardUid] = set()
        self._touch_all = True
        # When each replica's tick can next do anything (`ShardReplica.next_tick_ms`, wall ms),
        # recomputed after every turn that touched it: the timer ticks only those due (issue 6:
        # ticking 1,000 idle replicas 20 times a second was most of an idle node's CPU). The
        # heap holds (due, uid) entries; one not matching `_due_ms` is stale and skipped.
        self._due_ms: dict[ShardUid, int] = {}
        self._timers: list[tuple[int, ShardUid]] = []
        self._promises: list[tuple[Promise, Completion[Promise]]] = []
        self.turns = 0
        self.inbox_dropped = 0
        self._pending_hws: dict[ShardUid, Offset] = {}
        self._hws_written_ms = 0

    # --- Inputs --------------------------------------------------------------------------------

    def deliver(self, message: ReplicationMessage) -> bool:
        """An inbound Append/AppendAck; False when dropped (the inbox is full, or an Append
        carrying records while the disk is short of space)."""
        if len(self._inbox) >= self._inbox_max:
            self.inbox_dropped += 1
            return False
        if (
            self._disk is not None
            and self._disk.full
            and isinstance(message, Append)
            and any(not batch.control for batch in message.batches)
        ):
            self.disk_dropped += 1
            return False
        self._inbox.append(message)
        return True

    def inbox_waiting(self) -> bool:
        """Messages were delivered and not stepped yet."""
        return bool(self._inbox)

    def touch(self, shard_uid: ShardUid) -> None:
        """Asks the next turn for this replica's Ready (something outside changed it)."""
        self._touched.add(shard_uid)

    def sealed_end(self, shard_uid: ShardUid, epoch: int) -> Offset | None:
        """The controller's seal request answered now: the final end of a sealing shard this
        node leads at `epoch`, once everything it appended is committed. None while not yet
        (the next turn is asked to move the replica on: the caller asks again after it) or
        when the replica here is not at `epoch` (a leader change came first)."""
        local = self.locals.get(shard_uid)
        if local is None or local.epoch != epoch:
            return None
        end = local.replica.sealed_end()
        if end is None:
            self.touch(shard_uid)
        return end

    def propose(
        self,
        shard_uid: ShardUid,
        *,
        epoch: int,
        records: Sequence[NewRecord],
        now_ms: int,
        completion: Completion[Appended],
    ) -> Appended:
        """Proposes `records` on the local leader replica at `epoch`; returns where they go
        (first offset, arrival_ms); `completion` is answered with the same once a majority
        holds them (or failed). Raises ShardRefusedError at once
        when this replica cannot take them (the caller routes again), ShoalError when the disk
        is full. The caller applies the newest image first."""
        local = self.locals.get(shard_uid)
        if local is None or local.epoch < epoch:
            raise ShardRefusedError(RefusalReason.NOT_SHARD_LEADER, shard_uid=shard_uid)
        if local.epoch > epoch:
            raise ShardRefusedError(
                RefusalReason.STALE_EPOCH, shard_uid=shard_uid, epoch=local.epoch
            )
        if self._disk is not None and self._disk.full:
            raise ShoalError(
                ErrorCode.INTERNAL_FAILURE,
                self._disk.refusal(self.node_id, self.shard_name(shard_uid)),
            )
        outcome = local.replica.propose(records, now_ms)
        self._touched.add(shard_uid)
        if isinstance(outcome, core.Refusal):
            raise ShardRefusedError(
                outcome.reason, shard_uid=shard_uid, leader=outcome.leader, epoch=epoch
            )
        local.waiters.append(
            Waiter(
                end_offset=outcome.end_offset,
                first_offset=outcome.first_offset,
                arrival_ms=outcome.arrival_ms,
                completion=completion,
            )
        )
        return outcome.first_offset, outcome.arrival_ms

    def prepare(
        self, shard_uid: ShardUid, epoch: int, *, now_ms: int, completion: Completion[Promise]
    ) -> bool:
        """The controller's Prepare: `completion` gets the promise once it is durable (0002
        rule 1). False when this node holds no replica of the shard."""
        local = self.locals.get(shard_uid)
        if local is None:
            return False
        promise = local.replica.step(Prepare(shard_uid=shard_uid, epoch=epoch), now_ms)
        assert promise is not None
        self._touched.add(shard_uid)
        self._promises.append((promise, completion))
        return True

    def read_done(
        self,
        local: Local,
        request: core.ReadRequest,
        batches: Sequence[AppendBatch],
        now_ms: int,
    ) -> bool:
        """A catch-up read finished; False if the replica is gone meanwhile."""
        if self.locals.get(request.shard_uid) is not local:
            return False
        local.replica.read_done(request, batches, now_ms)
        self._touched.add(request.shard_uid)
        return True

    # --- Configuration from the metadata image -------------------------------------------------

    def apply_image(self, image: MetadataImage, *, now_ms: int, wall_ms: int) -> bool:
        """Configures the replicas from `image` (idempotent per image); True if it was new."""
        if image is self.applied:
            return False
        if self.applied is not None and buggify("driver.stale_image"):
            return False  # as if the image arrived a turn later
        self.applied = image
        held: set[ShardUid] = set()
        batch_format = core.batch_format_for(image.metadata_format)
        for stream in image.streams.values():
            if stream.is_gone(now_ms=wall_ms):
                continue
            for shard in stream.shards:
                if self.node_id not in shard.replicas or shard.epoch < 1:
                    continue
                held.add(shard.uid)
                local = self.locals.get(shard.uid)
                if local is None:
                    local = self.locals[shard.uid] = self._open(shard.uid)
                local.replica.configure(
                    epoch=shard.epoch,
                    leader=shard.leader,
                    replicas=shard.replicas,
                    sealing=shard.state is not ShardState.OPEN,
                    now_ms=now_ms,
                    batch_format=batch_format,
                )
                local.epoch = max(local.epoch, shard.epoch)
        for uid in [uid for uid in self.locals if uid not in held]:
            self.locals.pop(uid).fail_waiters(RefusalReason.OUTCOME_UNKNOWN)
            self._due_ms.pop(uid, None)
        self._touch_all = True
        return True

    def forget_image(self) -> None:
        """The next `apply_image` reconfigures (and reopens dropped replicas) even for the
        same image (after a failed persist)."""
        self.applied = None

    def _open(self, shard_uid: ShardUid) -> Local:
        # Point reads of the store, once per replica per process lifetime.
        durable = ReplicaDurableState.from_store(
            self._store, shard_uid, rejoin_floor=self._rejoin_floors.get(shard_uid)
        )
        replica = ShardReplica(shard_uid, self.node_id, durable, knobs=self._knobs)
        log.info(
            "replica_opened",
            extra={
                "shard_uid": shard_uid,
                "log_end": durable.log_end,
                "hw": durable.high_watermark,
            },
        )
        return Local(replica=replica, persisted_end=durable.log_end)

    def shard_name(self, shard_uid: ShardUid) -> str:
        image = self.applied
        for stream in image.streams.values() if image is not None else ():
            for shard in stream.shards:
                if shard.uid == shard_uid:
                    return f"{shard.shard_id} of stream {stream.name}"
        return f"shard uid {shard_uid}"

    # --- Ticks ---------------------------------------------------------------------------------

    def tick_due(self, now_ms: int) -> None:
        """Ticks the replicas whose `next_tick_ms` has come (the others would do nothing)."""
        timers = self._timers
        while timers and timers[0][0] <= now_ms:
            due_ms, uid = heapq.heappop(timers)
            if self._due_ms.get(uid) != due_ms:
                continue  # superseded by a later schedule, or the replica is gone
            del self._due_ms[uid]
            local = self.locals.get(uid)
            if local is not None:
                local.replica.tick(now_ms)
                self._touched.add(uid)

    def tick_all(self, now_ms: int) -> None:
        """The backstop: ticks every replica, due or not. A tick before its due time changes
        nothing (tests/replication/test_idle_schedule.py), so this only matters if some path
        changed a replica without marking it touched: its timer is then rebuilt here."""
        for uid, local in self.locals.items():
            local.replica.tick(now_ms)
            self._touched.add(uid)

    def next_due_ms(self) -> int | None:
        """When the earliest replica timer comes due (None: none is scheduled)."""
        return self._timers[0][0] if self._timers else None

    def _schedule(self, candidates: Sequence[Local]) -> None:
        """Records when each candidate's tick next comes due (after its turn)."""
        for local in candidates:
            uid = local.replica.shard_uid
            due_ms = local.replica.next_tick_ms()
            if due_ms is None:
                self._due_ms.pop(uid, None)
            elif self._due_ms.get(uid) != due_ms:
                self._due_ms[uid] = due_ms
                heapq.heappush(self._timers, (due_ms, uid))
        if len(self._timers) > 4 * len(self._due_ms) + 64:
            # Busy replicas reschedule every turn: drop the stale entries now and then.
            self._timers = [(due_ms, uid) for uid, due_ms in self._due_ms.items()]
            heapq.heapify(self._timers)

    # --- A turn --------------------------------------------------------------------------------

    def drain_inbox(self, now_ms: int, image: MetadataImage) -> int:
        """Steps every queued message into its replica (applying `image` for a shard not
        configured yet: a new shard); returns how many producers the acknowledgements among
        them answered (a leader's HW raised)."""
        inbox = self._inbox
        stepped: set[ShardUid] = set()
        while inbox:
            message = inbox.popleft()
            local = self.locals.get(message.shard_uid)
            if local is None:
                self.apply_image(image, now_ms=now_ms, wall_ms=now_ms)
                local = self.locals.get(message.shard_uid)
                if local is None:
                    continue  # not ours (yet): the sender resends
            local.replica.step(message, now_ms)
            stepped.add(message.shard_uid)
        self._touched |= stepped
        answered = 0
        for shard_uid in stepped:
            local = self.locals.get(shard_uid)
            if local is not None and local.replica.role is core.Role.LEADER:
                answered += local.answer(local.replica.high_watermark)  # acks raised it (finish)
        return answered

    def appends_waiting(self) -> bool:
        """Whether a replica the next turn takes has records to hand out (to write, and as
        a leader to send)."""
        return any(local.replica.has_appends() for local in self._candidates())

    def take_turn(self) -> Turn:
        """The Readys of every replica touched since the last turn (all after a new image)."""
        return self._take(self._candidates())

    def take_pipelined_turn(self) -> Turn | None:
        """`take_turn` while earlier turns are still being persisted. It may then hold only
        appends and high watermarks (replica.py: a reset, truncation or promise waits until
        no Ready of the replica is in flight); if a replica it would take needs such a step,
        or a Prepare waits for its answer, None: nothing is taken, and the caller takes the
        turn once every turn in flight has finished (so the pipeline drains for them instead
        of starving them). None too when no replica has records to hand out: a turn of
        acknowledgements, high watermarks or heartbeats alone waits for the turns in flight,
        as before pipelining (one per ack cost CPU and gained nothing). The caller finishes
        turns in the order they were taken."""
        candidates = self._candidates()
        if self._promises or any(local.replica.needs_order() for local in candidates):
            return None
        if not any(local.replica.has_appends() for local in candidates):
            return None
        return self._take(candidates)

    def _candidates(self) -> list[Local]:
        if self._touch_all:
            return list(self.locals.values())
        return [self.locals[u] for u in self._touched if u in self.locals]

    def _take(self, candidates: list[Local]) -> Turn:
        promises, self._promises = self._promises, []
        every = self._touch_all
        self._touch_all = False
        self._touched = set()
        work = [(local, local.replica.ready()) for local in candidates if local.replica.has_ready()]
        return Turn(work=work, promises=promises, candidates=candidates, every=every)

    def send_ahead(self, turn: Turn) -> tuple[Envelope, ...]:
        """The turn's Appends (a leader's), to send before or while the turn is made
        durable: the leader's fsync then overlaps its followers' instead of preceding it.
        Safe by the replica's rules 3 and 6 (replica.py): its HW counts its own log only up
        to its durable end, and a replica reopened after losing such a tail never leads in
        that epoch again. Acknowledgements ("durable here") still wait for `finish`, which
        leaves out what this returned.

        Not the Appends of a Ready that also persists the replica's promise: rule 6 knows the
        epochs a reopened replica may have led in from its durable promise. A leader that
        raised its promise itself (configured for an epoch it was not prepared for: a new
        shard's first epoch) and crashed before this fsync would reopen without it and lead
        in that epoch again, writing other records at offsets its followers hold under it."""
        ahead: list[Envelope] = []
        for local, ready in turn.work:
            if ready.promise is not None:
                continue  # sent by `finish`, once the promise is durable
            turn.sent_ahead.add(local.replica.shard_uid)
            ahead.extend(e for e in ready.to_send if isinstance(e.message, Append))
        return tuple(ahead)

    def persist_plan(self, turn: Turn, *, wall_ms: int) -> PersistPlan:
        """The store calls that make `turn` durable, in the order the replica requires."""
        before: list[StoreCall] = []
        for local, ready in turn.work:
            before.extend(_before_calls(local.replica.shard_uid, ready))
            shard_uid = local.replica.shard_uid
            if ready.reset_to is not None or ready.truncate_from is not None:
                self._pending_hws.pop(shard_uid, None)
            if ready.high_watermark is not None and ready.reset_to is None:
                self._pending_hws[shard_uid] = ready.high_watermark
        if self._pending_hws and (
            before or wall_ms - self._hws_written_ms >= limits.replication_hw_flush_ms
        ):
            # The HW is persisted lazily (store.py): a lower one after a crash only delays
            # reads until the leader's next heartbeat. It never exceeds what was durable before
            # this Ready (nor a truncation point), so it may go first.
            hws, self._pending_hws = self._pending_hws, {}
            self._hws_written_ms = wall_ms
            writes = [_set_hw(uid, hw) for uid, hw in hws.items()]
            appends = tuple(batch for _, ready in turn.work for batch in ready.appends)
            if not before:  # nothing must precede the appends: the HWs go beside them
                return PersistPlan(before=(), appends=appends, beside=tuple(writes))
            before[:0] = writes
        appends = tuple(batch for _, ready in turn.work for batch in ready.appends)
        return PersistPlan(before=tuple(before), appends=appends)

    def finish(self, turn: Turn) -> TurnEffects:
        """After `turn` is durable: answers producers and Prepares, advances the replicas,
        and returns what to send and read."""
        sends: list[Envelope] = []
        reads: list[tuple[Local, core.ReadRequest]] = []
        answered = 0
        for local, ready in turn.work:
            for envelope in ready.to_send:
                if isinstance(envelope.message, AppendAck) and buggify("driver.drop_ack"):
                    continue
                if local.replica.shard_uid in turn.sent_ahead and isinstance(
                    envelope.message, Append
                ):
                    continue
                sends.append(envelope)
            reads.extend((local, request) for request in ready.reads)
            persisted_before = local.persisted_end
            local.persisted(ready)
            local.log_cut(ready)
            if ready.committed_end is not None:
                answered += local.answer(ready.committed_end)
            if ready.abandoned:
                local.abandon(persisted_before)
            local.replica.advance(ready)
            local.answer_orphans()
            if local.replica.role is core.Role.LEADER:
                # advance() may have raised the HW (this node's own write was the last one
                # a majority needed): answer now rather than one turn later. Safe only for
                # a leader, whose log below the HW is never cut.
                answered += local.answer(local.replica.high_watermark)
        for promise, completion in turn.promises:
            if not completion.done():
                completion.set_result(promise)
        self._end_turn(turn)
        # Only what this turn advanced can have more to do now; the others were touched by
        # whatever changed them meanwhile.
        again = {local.replica.shard_uid for local, _ in turn.work if local.replica.has_ready()}
        self._touched |= again
        return TurnEffects(
            sends=tuple(sends), reads=tuple(reads), again=bool(again), answered=answered
        )

    def fail(self, turn: Turn) -> None:
        """The turn could not be made durable: its replicas cannot know what is durable, so
        they are dropped (the caller reopens them from the store with `forget_image` once the
        store works again: not before, or they would be read from a broken store), their
        producers get an unknown outcome (retryable), their Prepares an error (the controller
        asks again)."""
        for local, _ in turn.work:
            uid = local.replica.shard_uid
            local.fail_waiters(RefusalReason.OUTCOME_UNKNOWN)
            if self.locals.get(uid) is local:
                del self.locals[uid]
            self._due_ms.pop(uid, None)
        for _, completion in turn.promises:
            if not completion.done():
                completion.set_exception(
                    ShoalError(ErrorCode.UNAVAILABLE, error_messages.REPLICA_PROMISE_NOT_PERSISTED)
                )
        self.turns += 1

    def _end_turn(self, turn: Turn) -> None:
        self._schedule(turn.candidates)
        self._report_leadership(turn.candidates, every=turn.every)
        self.turns += 1

    def _report_leadership(self, candidates: Sequence[Local], *, every: bool) -> None:
        """After a turn: leaderships gained and lost, to the probe. A replica changes role only
        on an input that touches it (a new image touches all), so the turn's candidates are
        the only ones to look at, unless `every` (a new image may also have dropped some)."""
        if self._probe is None:
            return
        if every:
            led = {uid for uid, x in self.locals.items() if x.replica.role is core.Role.LEADER}
            gained, lost = led - self._led, self._led - led
            self._led = led
        else:
            gained, lost = set(), set()
            for local in candidates:
                uid = local.replica.shard_uid
                leads = local.replica.role is core.Role.LEADER
                if leads and uid not in self._led:
                    gained.add(uid)
                    self._led.add(uid)
                elif not leads and uid in self._led:
                    lost.add(uid)
                    self._led.discard(uid)
        for _ in gained:
            self._probe.leadership_gained()
        for _ in lost:
            self._probe.leadership_lost()

    # --- Views ---------------------------------------------------------------------------------

    def replica_statistics(self, shard_uids: frozenset[ShardUid]) -> list[ReplicaStatistics]:
        return [
            local.replica.statistics()
            for uid, local in sorted(self.locals.items())
            if not shard_uids or uid in shard_uids
        ]

    def statistics(self) -> DriverStatistics:
        return DriverStatistics(
            replicas=len(self.locals),
            leaders=self.leader_count(),
            turns=self.turns,
            inbox_dropped=self.inbox_dropped,
        )

    def leader_count(self) -> int:
        return sum(1 for x in self.locals.values() if x.replica.role is core.Role.LEADER)

    def caught_up(self) -> bool:
        """No replica on this node is still recovering its log (a node that lost its disk
        copies it back from the leaders before its replicas count again)."""
        if not self._rejoin_floors:
            return True  # replicas recover only on a node that lost its disk (_open)
        return not any(local.replica.statistics().recovering for local in self.locals.values())

    def fenced_leaderships(self) -> list[tuple[ShardUid, int]]:
        """(shard, image epoch) of the shards this node leads in the image but cannot: a
        newer epoch was promised by a leader change that did not commit. The heartbeats say
        so, and the controller runs a leader change again."""
        return [
            (uid, local.replica.epoch)
            for uid, local in self.locals.items()
            if local.replica.fenced()
        ]

    def rejoining(self) -> list[RejoiningReplica]:
        """The replicas lost with the disk that have not rejoined yet, for the heartbeats
        (the controller moves their leaderships away, and gives a caught-up one a new
        epoch). Empty, and cheap, once every one of them rejoined."""
        if not self._rejoin_floors:
            return []
        report = []
        for uid in list(self._rejoin_floors):
            local = self.locals.get(uid)
            if local is None:
                continue  # not configured yet (or no longer ours)
            stats = local.replica.statistics()
            if stats.rejoin_floor is None:
                del self._rejoin_floors[uid]  # rejoined: counts like any replica now
                continue
            report.append(
                RejoiningReplica(shard_uid=uid, epoch=stats.epoch, caught_up=not stats.recovering)
            )
        return report


def _before_calls(shard_uid: ShardUid, ready: core.Ready) -> list[StoreCall]:
    calls: list[StoreCall] = []
    reset_to, truncate_from, promise = ready.reset_to, ready.truncate_from, ready.promise
    if reset_to is not None:
        calls.append(lambda store: store.reset_log(shard_uid, log_start=reset_to))
    if truncate_from is not None:
        calls.append(lambda store: store.truncate_suffix(shard_uid, from_offset=truncate_from))
    if promise is not None:
        calls.append(lambda store: store.promise(shard_uid, promise))
    return calls


def _set_hw(shard_uid: ShardUid, hw: Offset) -> StoreCall:
    return lambda store: store.set_high_watermark(shard_uid, hw)


def run_calls(store: LogStore, calls: Sequence[StoreCall]) -> None:
    """Runs a plan's `before` calls on `store`, in order (on a worker thread, in the shell)."""
    for call in calls:
        call(store)
