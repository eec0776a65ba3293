"""`ReplicationDriver`: the one async loop around every shard replica on this node.

The replicas (`replica.ShardReplica`) are pure; this driver is the only code that does their
I/O (STYLE B.3, etcd-raft's Ready loop). One per node. Each turn of its loop:

1. waits for work (a proposal, an inbound message, a Prepare, a new metadata image) or the
   tick timer (`Knobs.replication_tick_ms`; replicas resend and heartbeat on ticks, and only
   the replicas whose `next_tick_ms` has come are ticked, so idle shards cost nothing between
   their heartbeats);
2. applies the newest metadata image (creates a replica for every shard this node is in the
   replica set of, configures each with its epoch, leader, replicas and sealing; drops the
   replicas of shards it no longer holds), drains the bounded inbox into `step`, ticks;
3. takes a `Ready` from every replica that has one, and executes them together, in the order
   the replica requires: log resets, truncations, promises and high watermarks synchronously
   (one worker-thread call), then every replica's appends through the node's
   `GroupCommitWriter`, so all shards share one WriteBatch and one fsync per group; then sends
   `to_send` through the `Transport`; starts the log reads followers need to catch up (owned
   tasks, their results fed back with `read_done`); answers producers up to `committed_end`
   (a replica that `abandoned` its leadership keeps them until it learns whether their
   records survived, `_Local`); `advance`s;
   and finally answers the Prepares whose promises that turn made durable.

Producers call `append` (the service's `LocalReplicas.append`) on the loop: the replica assigns
offsets synchronously in `propose`, so call order is log order, and the caller waits, bounded
by `limits.replication_commit_timeout_ms`, until a majority holds the records.

Everything is bounded: the inbox (`limits.replication_inbox_messages_max`, dropped beyond: the
replicas resend), producers per replica (the replica refuses OVERLOADED past
`replication_uncommitted_bytes_max`), reads (one per follower per shard, by the replica).

Lifecycle: construct, `await run()` in the node's TaskGroup (infinite on purpose, cancelled at
node stop), before the GroupCommitWriter stops. Loop-bound; not thread-safe. A node view.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from broker import limits
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.log.disk_guard import DiskGuard
from broker.log.group_commit import GroupCommitWriter
from broker.log.records import AppendBatch, LogCorruptionError, NewRecord
from broker.log.store import LogStore, LogStoreError
from broker.meta.controller_core import RejoiningReplica
from broker.meta.image import MetadataImage, ShardState
from broker.metrics import ReplicationProbe, ReplicationView
from broker.replication import replica as core
from broker.replication.messages import Append, Prepare, Promise, ReplicationMessage
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.replication.replica import (
    ReplicaDurableState,
    ReplicaStatistics,
    ReplicationKnobs,
    ShardReplica,
)
from broker.replication.transport import FetchRefused, SealAnswer, Transport
from broker.types import NodeId, Offset, ShardUid

log = logging.getLogger(__name__)

# What a failed persist raises: the group commit's failure (its cause is the store's error), a
# store error from a truncation or promise, or corruption found while truncating.
_PERSIST_ERRORS = (ShoalError, LogStoreError, LogCorruptionError)

# Replicas are ticked when their own timer comes due (`_tick_due`); every this often all of
# them are ticked anyway, a cheap backstop for a schedule some code path forgot to update.
_SWEEP_INTERVAL_S = 2.0


@dataclass(slots=True, kw_only=True)
class _Waiter:
    end_offset: Offset
    first_offset: Offset
    arrival_ms: int
    future: asyncio.Future[tuple[Offset, int]]


@dataclass(slots=True, kw_only=True)
class _Local:
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
    waiters: collections.deque[_Waiter] = field(default_factory=collections.deque)
    orphans: list[_Waiter] = field(default_factory=list)
    persisted_end: Offset  # the log end as of the last persisted Ready

    def fail_waiters(self, reason: RefusalReason, leader: NodeId | None = None) -> None:
        for waiter in [*self.waiters, *self.orphans]:
            self._fail(waiter, reason, leader)
        self.waiters.clear()
        self.orphans.clear()

    def _fail(self, waiter: _Waiter, reason: RefusalReason, leader: NodeId | None) -> None:
        if not waiter.future.done():
            waiter.future.set_exception(
                ShardRefusedError(
                    reason, shard_uid=self.replica.shard_uid, leader=leader, epoch=self.epoch
                )
            )

    def answer(self, committed_end: Offset) -> None:
        while self.waiters and self.waiters[0].end_offset <= committed_end:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result((waiter.first_offset, waiter.arrival_ms))

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
                if not waiter.future.done():
                    waiter.future.set_result((waiter.first_offset, waiter.arrival_ms))
            elif not waiter.future.done():
                kept.append(waiter)
        self.orphans = kept


@dataclass(slots=True, kw_only=True)
class _Damage:
    """A range of a local replica's log that does not read back, until it is repaired."""

    start: Offset  # batch-aligned (store.damaged_range), moved up as pieces are repaired
    end: Offset
    attempts: int = 0
    retry_at: float = 0.0  # the loop's clock


@dataclass(frozen=True, slots=True, kw_only=True)
class DamagedRange:
    """What readers on this node must not read locally (`ReplicationDriver.damaged`)."""

    start: Offset
    end: Offset


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverStatistics:
    replicas: int
    leaders: int
    turns: int
    inbox_dropped: int


_REFUSALS = {
    core.RefusalReason.NOT_LEADER: RefusalReason.NOT_SHARD_LEADER,
    core.RefusalReason.STALE_EPOCH: RefusalReason.STALE_EPOCH,
    core.RefusalReason.SEALED: RefusalReason.SHARD_SEALED,
    core.RefusalReason.OVERLOADED: RefusalReason.UNAVAILABLE,
}


class ReplicationDriver:
    """Runs every shard replica of this node (module docstring)."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        store: LogStore,
        writer: GroupCommitWriter,
        transport: Transport,
        clock: Clock,
        image: Callable[[], MetadataImage],
        tick_ms: int,
        knobs: ReplicationKnobs | None = None,
        rejoin_floors: Mapping[ShardUid, int] | None = None,
        disk: DiskGuard | None = None,
        inbox_max: int = limits.replication_inbox_messages_max,
        probe: ReplicationProbe | None = None,
    ) -> None:
        assert tick_ms >= 1
        assert inbox_max >= 1
        self._node_id = node_id
        self._probe = probe
        self._led: set[ShardUid] = set()  # shards led at the last tick (for the probe)
        self._store = store
        self._writer = writer
        self._transport = transport
        self._clock = clock
        self._image = image
        self._tick_ms = tick_ms
        self._knobs = knobs or ReplicationKnobs()
        # A node that lost its disk: each replica it held, with the shard's epoch in the image
        # read after the loss (replica.py, "lost its disk"). Replicas of other shards are new.
        self._rejoin_floors = dict(rejoin_floors or {})
        # Below its free-space minimum the node takes no new records (log/disk_guard.py):
        # producers are refused here, and record batches from leaders are dropped (the leader
        # keeps resending; its other followers commit). Control batches still go through.
        self._disk = disk
        self.disk_dropped = 0
        self._inbox: collections.deque[ReplicationMessage] = collections.deque()
        self._inbox_max = inbox_max
        self._locals: dict[ShardUid, _Local] = {}
        self._applied: MetadataImage | None = None
        self._wake = asyncio.Event()
        self._turned = asyncio.Event()  # set and replaced after every turn
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
        self._promises: list[tuple[Promise, asyncio.Future[Promise]]] = []
        self._reads: asyncio.TaskGroup | None = None
        self._turns = 0
        self._inbox_dropped = 0
        self._pending_hws: dict[ShardUid, Offset] = {}
        self._hws_written_ms = 0
        # Corruption (decisions/0002, "Corruption"): offsets where a read failed, not located
        # yet (None: the shard's time index), and the located damaged ranges being repaired.
        self._suspects: dict[ShardUid, Offset | None] = {}
        self._damage: dict[ShardUid, _Damage] = {}
        self._repair_wake = asyncio.Event()
        self._persist_failures = 0  # in a row; each backs off longer (`_recover`)

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    # --- Inputs (any task on the loop) ---------------------------------------------------------

    def deliver(self, message: ReplicationMessage) -> None:
        """An inbound Append/AppendAck from the transport; dropped when the inbox is full, and
        an Append carrying records while the disk is short of space."""
        if len(self._inbox) >= self._inbox_max:
            self._inbox_dropped += 1
            return
        if (
            self._disk is not None
            and self._disk.full
            and isinstance(message, Append)
            and any(not batch.control for batch in message.batches)
        ):
            self.disk_dropped += 1
            return
        self._inbox.append(message)
        self._wake.set()

    def readable_end(self, shard_uid: ShardUid) -> Offset | None:
        local = self._local(shard_uid)
        return None if local is None else local.replica.high_watermark

    async def wait_readable(self, shard_uid: ShardUid, beyond: Offset, *, timeout_s: float) -> None:
        """Returns once the local replica's high watermark passes `beyond`, it holds none, or
        `timeout_s` passed (enhanced fan-out's push: SubscribeToShard waits here rather than
        polling). The HW only moves inside a turn, so waking after each turn misses nothing."""
        assert timeout_s >= 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:  # bounded by the timeout
                    end = self.readable_end(shard_uid)
                    if end is None or end > beyond:
                        return
                    await self._turned.wait()

    async def append(
        self, shard_uid: ShardUid, *, epoch: int, records: Sequence[NewRecord], now_ms: int
    ) -> tuple[Offset, int]:
        """Proposes `records` on the local leader replica; returns (first offset, arrival_ms)
        once a majority holds them. Raises ShardRefusedError (the caller routes again)."""
        self.apply_image()  # cheap when unchanged; a stale epoch must be refused as such
        local = self._local(shard_uid, epoch=epoch)
        if local is None or local.epoch < epoch:
            raise ShardRefusedError(RefusalReason.NOT_SHARD_LEADER, shard_uid=shard_uid)
        if local.epoch > epoch:
            raise ShardRefusedError(
                RefusalReason.STALE_EPOCH, shard_uid=shard_uid, epoch=local.epoch
            )
        if self._disk is not None and self._disk.full:
            raise ShoalError(
                ErrorCode.INTERNAL_FAILURE,
                self._disk.refusal(self._node_id, self._shard_name(shard_uid)),
            )
        outcome = local.replica.propose(records, now_ms)
        self._touched.add(shard_uid)
        if isinstance(outcome, core.Refusal):
            raise ShardRefusedError(
                _REFUSALS[outcome.reason], shard_uid=shard_uid, leader=outcome.leader, epoch=epoch
            )
        future: asyncio.Future[tuple[Offset, int]] = asyncio.get_running_loop().create_future()
        local.waiters.append(
            _Waiter(
                end_offset=outcome.end_offset,
                first_offset=outcome.first_offset,
                arrival_ms=outcome.arrival_ms,
                future=future,
            )
        )
        self._wake.set()
        try:
            async with asyncio.timeout(limits.replication_commit_timeout_ms / 1000):
                return await future
        except TimeoutError as exc:
            raise ShardRefusedError(
                RefusalReason.OUTCOME_UNKNOWN, shard_uid=shard_uid, detail="commit timed out"
            ) from exc

    async def prepare(self, shard_uid: ShardUid, epoch: int) -> Promise | None:
        """The controller's Prepare: answered once the promise is durable (0002 rule 1)."""
        local = self._local(shard_uid)
        if local is None:
            return None
        promise = local.replica.step(Prepare(shard_uid=shard_uid, epoch=epoch), self._now())
        assert promise is not None
        self._touched.add(shard_uid)
        future: asyncio.Future[Promise] = asyncio.get_running_loop().create_future()
        self._promises.append((promise, future))
        self._wake.set()
        async with asyncio.timeout(limits.replication_prepare_timeout_ms / 1000):
            return await future

    async def seal(self, shard_uid: ShardUid, epoch: int, *, wait_ms: int) -> SealAnswer:
        """The final end of a sealing shard led here at `epoch`, once all of it is committed;
        waits up to `wait_ms` for that, else answers "not yet"."""
        assert wait_ms >= 0
        local = self._local(shard_uid, epoch=epoch)
        if local is None or local.epoch != epoch:
            return SealAnswer(end_offset=None)
        try:
            async with asyncio.timeout(wait_ms / 1000):
                while (end := local.replica.sealed_end()) is None:
                    self._touched.add(shard_uid)
                    self._wake.set()
                    await self._turned.wait()
                return SealAnswer(end_offset=end)
        except TimeoutError:
            return SealAnswer(end_offset=None)

    def replica_statistics(self, shard_uids: frozenset[ShardUid]) -> list[ReplicaStatistics]:
        return [
            local.replica.statistics()
            for uid, local in sorted(self._locals.items())
            if not shard_uids or uid in shard_uids
        ]

    def statistics(self) -> DriverStatistics:
        return DriverStatistics(
            replicas=len(self._locals),
            leaders=sum(1 for x in self._locals.values() if x.replica.role is core.Role.LEADER),
            turns=self._turns,
            inbox_dropped=self._inbox_dropped,
        )

    def metrics_view(self) -> ReplicationView:
        """The replicas on this node summarised for `/metrics` (read at scrape time, from the
        metrics thread: it only reads snapshots, and a race with the loop costs one scrape).
        A shard this node leads is under-replicated when a follower of its replica set has
        not acknowledged everything up to the high watermark."""
        leaders = followers = under = hw_lag = 0
        lag: dict[str, int] = {}
        for local in list(self._locals.values()):
            stats = local.replica.statistics()
            hw_lag = max(hw_lag, stats.log_end - stats.high_watermark)
            if stats.role is not core.Role.LEADER:
                followers += 1
                continue
            leaders += 1
            if any(f.match_end < stats.high_watermark for f in stats.followers):
                under += 1
            for follower in stats.followers:
                behind = max(0, stats.log_end - follower.match_end)
                lag[follower.node_id] = max(lag.get(follower.node_id, 0), behind)
        return ReplicationView(
            leaders=leaders,
            followers=followers,
            under_replicated=under,
            follower_lag_records=lag,
            high_watermark_lag_records=hw_lag,
            damaged_replicas=len(self._damage),
        )

    def _report_leadership(self, candidates: Sequence[_Local], *, every: bool) -> None:
        """After a turn: leaderships gained and lost, to the probe. A replica changes role only
        on an input that touches it (a new image touches all), so the turn's candidates are
        the only ones to look at, unless `every` (a new image may also have dropped some)."""
        if self._probe is None:
            return
        if every:
            led = {uid for uid, x in self._locals.items() if x.replica.role is core.Role.LEADER}
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

    def caught_up(self) -> bool:
        """No replica on this node is still recovering its log (a node that lost its disk
        copies it back from the leaders before its replicas count again): the replication
        half of the readiness probe."""
        if not self._rejoin_floors:
            return True  # replicas recover only on a node that lost its disk (_open)
        return not any(local.replica.statistics().recovering for local in self._locals.values())

    def fenced_leaderships(self) -> list[tuple[ShardUid, int]]:
        """(shard, image epoch) of the shards this node leads in the image but cannot: a
        newer epoch was promised by a leader change that did not commit. The heartbeats say
        so, and the controller runs a leader change again (a new controller knows nothing of
        its predecessor's failed attempts)."""
        return [
            (uid, local.replica.epoch)
            for uid, local in self._locals.items()
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
            local = self._locals.get(uid)
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

    def leader_count(self) -> int:
        return sum(1 for x in self._locals.values() if x.replica.role is core.Role.LEADER)

    # --- Configuration from the metadata image -------------------------------------------------

    def _local(self, shard_uid: ShardUid, *, epoch: int = 0) -> _Local | None:
        """The local replica, after applying a newer image if this one is not applied yet
        (or does not know the shard or the epoch the caller saw)."""
        local = self._locals.get(shard_uid)
        if local is None or local.epoch < epoch:
            self.apply_image()
            local = self._locals.get(shard_uid)
        return local

    def apply_image(self) -> None:
        """Configures the replicas from the newest image (idempotent per image)."""
        image = self._image()
        if image is self._applied:
            return
        self._applied = image
        now_ms = self._now()
        wall_ms = self._clock.wall_ms()
        held: set[ShardUid] = set()
        batch_format = core.batch_format_for(image.metadata_format)
        for stream in image.streams.values():
            if stream.is_gone(now_ms=wall_ms):
                continue
            for shard in stream.shards:
                if self._node_id not in shard.replicas or shard.epoch < 1:
                    continue
                held.add(shard.uid)
                local = self._locals.get(shard.uid)
                if local is None:
                    local = self._locals[shard.uid] = self._open(shard.uid)
                local.replica.configure(
                    epoch=shard.epoch,
                    leader=shard.leader,
                    replicas=shard.replicas,
                    sealing=shard.state is not ShardState.OPEN,
                    now_ms=now_ms,
                    batch_format=batch_format,
                )
                local.epoch = max(local.epoch, shard.epoch)
        for uid in [uid for uid in self._locals if uid not in held]:
            self._locals.pop(uid).fail_waiters(RefusalReason.OUTCOME_UNKNOWN)
            self._due_ms.pop(uid, None)
        self._touch_all = True
        self._wake.set()

    def _open(self, shard_uid: ShardUid) -> _Local:
        # Point reads on the loop, once per replica per process lifetime (as ShardWriters did).
        durable = ReplicaDurableState.from_store(
            self._store, shard_uid, rejoin_floor=self._rejoin_floors.get(shard_uid)
        )
        replica = ShardReplica(shard_uid, self._node_id, durable, knobs=self._knobs)
        log.info(
            "replica_opened",
            extra={
                "shard_uid": shard_uid,
                "log_end": durable.log_end,
                "hw": durable.high_watermark,
            },
        )
        return _Local(replica=replica, persisted_end=durable.log_end)

    # --- The loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Turns until cancelled: infinite on purpose (node stop cancels it)."""
        loop = asyncio.get_running_loop()
        tick_s = self._tick_ms / 1000
        async with asyncio.TaskGroup() as reads:
            self._reads = reads
            reads.create_task(self._run_repairs(), name="replica-repairs")
            next_tick = loop.time()  # the timer runs on the loop's clock; replicas get wall ms
            next_sweep = next_tick + _SWEEP_INTERVAL_S
            while True:
                remaining_s = next_tick - loop.time()
                if not self._wake.is_set() and remaining_s > 0:
                    # Waiting on our own wake-up or the tick timer: no deadline needed.
                    try:
                        async with asyncio.timeout(remaining_s):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                self._wake.clear()
                now_ms = self._now()
                self.apply_image()
                self._drain_inbox(now_ms)
                if loop.time() >= next_tick:
                    self._tick_due(now_ms)
                    next_tick = loop.time() + tick_s
                if loop.time() >= next_sweep:
                    self._tick_all(now_ms)
                    next_sweep = loop.time() + _SWEEP_INTERVAL_S
                await self._turn()

    def _tick_due(self, now_ms: int) -> None:
        """Ticks the replicas whose `next_tick_ms` has come (the others would do nothing)."""
        timers = self._timers
        while timers and timers[0][0] <= now_ms:
            due_ms, uid = heapq.heappop(timers)
            if self._due_ms.get(uid) != due_ms:
                continue  # superseded by a later schedule, or the replica is gone
            del self._due_ms[uid]
            local = self._locals.get(uid)
            if local is not None:
                local.replica.tick(now_ms)
                self._touched.add(uid)

    def _tick_all(self, now_ms: int) -> None:
        """The backstop: ticks every replica, due or not. A tick before its due time changes
        nothing (tests/replication/test_idle_schedule.py), so this only matters if some path
        changed a replica without marking it touched: its timer is then rebuilt here, within
        `_SWEEP_INTERVAL_S`, instead of waiting for the next metadata image."""
        for uid, local in self._locals.items():
            local.replica.tick(now_ms)
            self._touched.add(uid)

    def _schedule(self, candidates: Sequence[_Local]) -> None:
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

    def _drain_inbox(self, now_ms: int) -> None:
        inbox = self._inbox
        stepped: set[ShardUid] = set()
        while inbox:
            message = inbox.popleft()
            local = self._locals.get(message.shard_uid)
            if local is None:
                self.apply_image()  # a new shard this node has not configured yet
                local = self._locals.get(message.shard_uid)
                if local is None:
                    continue  # not ours (yet): the sender resends
            local.replica.step(message, now_ms)
            stepped.add(message.shard_uid)
        self._touched |= stepped
        for shard_uid in stepped:
            local = self._locals.get(shard_uid)
            if local is not None and local.replica.role is core.Role.LEADER:
                local.answer(local.replica.high_watermark)  # acks raised it (see _turn)

    async def _turn(self) -> None:
        promises, self._promises = self._promises, []
        every = self._touch_all
        if every:
            candidates = list(self._locals.values())
        else:
            candidates = [self._locals[u] for u in self._touched if u in self._locals]
        self._touch_all = False
        self._touched = set()
        work = [(local, local.replica.ready()) for local in candidates if local.replica.has_ready()]
        if work:
            try:
                await self._persist(work)
            except _PERSIST_ERRORS as error:
                await self._recover(work, promises, error)
                return
            self._persist_failures = 0
            now_ms = self._now()
            for local, ready in work:
                for envelope in ready.to_send:
                    self._transport.send(envelope)
                for request in ready.reads:
                    assert self._reads is not None
                    self._reads.create_task(self._read(local, request))
                persisted_before = local.persisted_end
                local.persisted(ready)
                local.log_cut(ready)
                if ready.committed_end is not None:
                    local.answer(ready.committed_end)
                if ready.abandoned:
                    local.abandon(persisted_before)
                local.replica.advance(ready)
                local.answer_orphans()
                if local.replica.role is core.Role.LEADER:
                    # advance() may have raised the HW (this node's own write was the last one
                    # a majority needed): answer now rather than one turn later. Safe only for
                    # a leader, whose log below the HW is never cut.
                    local.answer(local.replica.high_watermark)
            del now_ms
        for promise, future in promises:
            if not future.done():
                future.set_result(promise)
        self._schedule(candidates)
        self._report_leadership(candidates, every=every)
        self._turns += 1
        self._turned.set()
        self._turned = asyncio.Event()
        # Only what this turn advanced can have more to do now; the others were touched (and
        # the loop woken) by whatever changed them meanwhile.
        again = {local.replica.shard_uid for local, _ in work if local.replica.has_ready()}
        if again:
            self._touched |= again
            self._wake.set()

    async def _recover(
        self,
        work: Sequence[tuple[_Local, core.Ready]],
        promises: Sequence[tuple[Promise, asyncio.Future[Promise]]],
        error: Exception,
    ) -> None:
        """A persist failed (a full disk, a broken store): the replicas involved cannot know
        what is durable, so they are rebuilt from the store at the next turn, as after a
        restart (nothing of the failed Ready was sent: sends follow persists). Their producers
        get an unknown outcome (retryable) and their Prepares no answer (the controller asks
        again). RocksDB keeps refusing every write after a failed WAL write until it is
        reopened, so it is, once the disk has room again. Backs off while failures repeat;
        the node keeps serving reads meanwhile."""
        self._persist_failures += 1
        log.error(
            "replica_persist_failed",
            extra={"error": repr(error), "replicas": len(work), "failures": self._persist_failures},
        )
        for local, _ in work:
            uid = local.replica.shard_uid
            local.fail_waiters(RefusalReason.OUTCOME_UNKNOWN)
            if self._locals.get(uid) is local:
                del self._locals[uid]
            self._due_ms.pop(uid, None)
        for _, future in promises:
            if not future.done():
                future.set_exception(
                    ShoalError(ErrorCode.UNAVAILABLE, "the replica could not persist its promise")
                )
        delay_ms = min(
            limits.replication_persist_backoff_ms_min * 2 ** min(self._persist_failures - 1, 10),
            limits.replication_persist_backoff_ms_max,
        )
        # The failed write's frames hold the store's old handles; RocksDB cannot be reopened
        # while they live.
        _clear_frames(error)
        del error
        await asyncio.sleep(delay_ms / 1000)  # a backoff while the disk refuses, not a sync
        await self._reopen_store()
        self._applied = None  # the next turn opens the dropped replicas from the store again
        self._turns += 1
        self._turned.set()
        self._turned = asyncio.Event()
        self._wake.set()

    async def _reopen_store(self) -> None:
        """Reopens the store (after a failed persist) once the disk has room, until it works:
        the replicas cannot be opened again before. Bounded per attempt; the loop is infinite
        on purpose, like the driver's (a node whose store never opens again serves reads of
        nothing and stays unready until an operator acts)."""
        attempt = 0
        while True:
            if not self._room_to_reopen():
                # Closing flushes the memtables, which blocks while the disk is still full.
                await asyncio.sleep(limits.replication_persist_backoff_ms_max / 1000)
                continue
            try:
                await asyncio.to_thread(self._store.reopen)
                return
            except LogStoreError as error:
                attempt += 1
                log.error("log_store_reopen_failed", extra={"error": repr(error), "try": attempt})
                await asyncio.sleep(limits.replication_persist_backoff_ms_max / 1000)

    def _room_to_reopen(self) -> bool:
        """Room for RocksDB to flush its memtables on close: not short by the guard's
        minimum, and at least `limits.store_reopen_free_bytes_min` free whatever it is."""
        disk = self._disk
        if disk is None or disk.last is None:
            return True  # nothing measures the disk here (tests): try
        return not disk.full and disk.last.free_bytes >= limits.store_reopen_free_bytes_min

    async def _persist(self, work: Sequence[tuple[_Local, core.Ready]]) -> None:
        """Makes every Ready durable in the order the replica requires (module docstring)."""
        store = self._store
        before: list[Callable[[], None]] = []
        for local, ready in work:
            shard_uid = local.replica.shard_uid
            if ready.reset_to is not None:
                before.append(
                    functools.partial(store.reset_log, shard_uid, log_start=ready.reset_to)
                )
            if ready.truncate_from is not None:
                before.append(
                    functools.partial(
                        store.truncate_suffix, shard_uid, from_offset=ready.truncate_from
                    )
                )
            if ready.promise is not None:
                before.append(functools.partial(store.promise, shard_uid, ready.promise))
            if ready.reset_to is not None or ready.truncate_from is not None:
                self._pending_hws.pop(shard_uid, None)
            if ready.high_watermark is not None and ready.reset_to is None:
                self._pending_hws[shard_uid] = ready.high_watermark
        hws_due = self._pending_hws and (
            before or self._clock.wall_ms() - self._hws_written_ms >= limits.replication_hw_flush_ms
        )
        if hws_due:
            # The HW is persisted lazily (store.py): a lower one after a crash only delays
            # reads until the leader's next heartbeat. It never exceeds what was durable before
            # this Ready (nor a truncation point), so it may go first.
            hws, self._pending_hws = self._pending_hws, {}
            self._hws_written_ms = self._clock.wall_ms()
            before[:0] = [
                functools.partial(store.set_high_watermark, uid, hw) for uid, hw in hws.items()
            ]
        if before:
            await asyncio.to_thread(_run_all, before)
        futures = [
            await self._writer.submit(functools.partial(_same, batch))
            for _, ready in work
            for batch in ready.appends
        ]
        if futures:
            # A failed group commit leaves the replicas unable to know what is durable: the
            # error propagates and stops the node (STYLE B.1 #4); a restart recovers.
            await asyncio.gather(*futures)

    async def _read(self, local: _Local, request: core.ReadRequest) -> None:
        """A follower's catch-up read of our log, fed back to the replica. A damaged range
        cannot be sent: it is reported (and repaired); the replica asks again after its resend
        timeout."""
        try:
            batches = await asyncio.to_thread(
                self._store.read_batches,
                request.shard_uid,
                start_offset=request.start_offset,
                end_offset=request.end_offset,
                bytes_max=request.bytes_max,
            )
        except LogCorruptionError as error:
            self.report_corruption(error)
            return
        if self._locals.get(request.shard_uid) is local:
            local.replica.read_done(request, batches, self._now())
            self._touched.add(request.shard_uid)
            self._wake.set()

    # --- Corruption: damaged ranges and their repair (decisions/0002, "Corruption") ----------

    def report_corruption(self, error: LogCorruptionError) -> None:
        """A read of this node's log failed a check (a reader, a catch-up read, the
        scrubber): the repair task locates the damaged range and copies it back from a
        healthy replica. Loop only."""
        if error.shard_uid is None:
            log.error("log_corruption_detected", extra={"error": str(error), "located": False})
            if self._probe is not None:
                self._probe.corruption_detected()
            return
        uid = error.shard_uid
        known = self._damage.get(uid)
        offset = error.offset
        if known is not None and offset is not None and known.start <= offset < known.end:
            return  # being repaired
        if offset is None:
            self._suspects.setdefault(uid, None)
        else:
            previous = self._suspects.get(uid)
            self._suspects[uid] = offset if previous is None else Offset(min(previous, offset))
        self._repair_wake.set()

    def damaged(self, shard_uid: ShardUid) -> DamagedRange | None:
        """The damaged range of the local replica, if any: readers go to another replica for
        it (`service/shards.py`), and repairs fill it."""
        damage = self._damage.get(shard_uid)
        return None if damage is None else DamagedRange(start=damage.start, end=damage.end)

    def repair_pending(self, shard_uid: ShardUid) -> bool:
        """Corruption reported in the local replica and not repaired yet (located or not)."""
        return shard_uid in self._damage or shard_uid in self._suspects

    async def serve_fetch(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> list[AppendBatch]:
        """Another replica repairs a damaged range from our committed batches (FetchBatches).
        Only below our high watermark: those records are the same on every replica."""
        local = self._locals.get(shard_uid)
        if local is None:
            raise FetchRefused("no replica of this shard here")
        end = Offset(min(end_offset, local.replica.high_watermark))
        damage = self._damage.get(shard_uid)
        if damage is not None and damage.start <= start_offset < damage.end:
            raise FetchRefused("this replica is damaged there too")
        if damage is not None and start_offset < damage.start:
            end = Offset(min(end, damage.start))
        if end <= start_offset:
            raise FetchRefused(f"not committed here (high watermark {end})")
        try:
            batches = await asyncio.to_thread(
                self._store.read_batches,
                shard_uid,
                start_offset=start_offset,
                end_offset=end,
                bytes_max=bytes_max,
            )
        except LogCorruptionError as error:
            self.report_corruption(error)
            raise FetchRefused("this replica is damaged there too") from error
        if not batches or batches[0].first_offset != start_offset:
            raise FetchRefused("trimmed here")
        return batches

    async def _run_repairs(self) -> None:
        """Locates reported corruption and repairs damaged ranges, one shard at a time.
        Infinite on purpose: cancelled with the driver."""
        loop = asyncio.get_running_loop()
        while True:
            wait_s = min(
                (max(0.0, d.retry_at - loop.time()) for d in self._damage.values()),
                default=None,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):  # None: our own wake-up only, on purpose
                    await self._repair_wake.wait()
            self._repair_wake.clear()
            suspects, self._suspects = self._suspects, {}
            for uid, offset in suspects.items():
                await self._locate(uid, offset)
            for uid in [u for u, d in self._damage.items() if d.retry_at <= loop.time()]:
                await self._repair(uid)

    async def _locate(self, shard_uid: ShardUid, offset: Offset | None) -> None:
        if shard_uid not in self._locals:
            return  # no longer ours: its data goes with the replica
        if offset is None:  # the time index: derived data, rebuilt from the batches
            try:
                await asyncio.to_thread(self._store.rebuild_time_index, shard_uid)
            except LogCorruptionError as error:
                if error.offset is not None:
                    self.report_corruption(error)
                return
            log.warning("log_time_index_rebuilt", extra={"shard_uid": shard_uid})
            if self._probe is not None:
                self._probe.corruption_detected()
                self._probe.range_repaired()
            return
        start, end = await asyncio.to_thread(self._store.damaged_range, shard_uid, offset)
        if end <= start:
            return
        known = self._damage.get(shard_uid)
        if known is not None:
            start, end = Offset(min(start, known.start)), Offset(max(end, known.end))
        self._damage[shard_uid] = _Damage(start=start, end=end)
        log.error(
            "log_corruption_detected",
            extra={"shard_uid": shard_uid, "start_offset": start, "end_offset": end},
        )
        if self._probe is not None:
            self._probe.corruption_detected()

    async def _repair(self, shard_uid: ShardUid) -> None:
        """Copies the damaged range back from the other replicas, in pieces; backs off when
        none can give the next piece (a copy must be committed there, and healthy)."""
        damage = self._damage[shard_uid]
        local = self._locals.get(shard_uid)
        image = self._applied
        if local is None or image is None:
            del self._damage[shard_uid]  # no longer ours
            return
        peers = self._repair_sources(image, shard_uid)
        for _ in range(limits.replication_repair_pieces_max):  # bounded: see the limit
            if damage.start >= damage.end:
                break
            if not await self._repair_piece(shard_uid, damage, peers):
                damage.attempts += 1
                delay_ms = min(
                    limits.replication_repair_backoff_ms_min * 2 ** min(damage.attempts, 10),
                    limits.replication_repair_backoff_ms_max,
                )
                damage.retry_at = asyncio.get_running_loop().time() + delay_ms / 1000
                log.warning(
                    "log_repair_waiting",
                    extra={
                        "shard_uid": shard_uid,
                        "start_offset": damage.start,
                        "end_offset": damage.end,
                        "attempts": damage.attempts,
                        "peers": ",".join(peers),
                    },
                )
                return
        if damage.start < damage.end:
            return  # more pieces than one pass takes: the next pass continues at once
        del self._damage[shard_uid]
        log.warning("log_range_repaired", extra={"shard_uid": shard_uid})
        if self._probe is not None:
            self._probe.range_repaired()

    def _shard_name(self, shard_uid: ShardUid) -> str:
        image = self._applied
        for stream in image.streams.values() if image is not None else ():
            for shard in stream.shards:
                if shard.uid == shard_uid:
                    return f"{shard.shard_id} of stream {stream.name}"
        return f"shard uid {shard_uid}"

    def _repair_sources(self, image: MetadataImage, shard_uid: ShardUid) -> list[NodeId]:
        """The other replicas of the shard, its leader first (it holds every committed
        record)."""
        for stream in image.streams.values():
            for shard in stream.shards:
                if shard.uid == shard_uid:
                    others = [n for n in shard.replicas if n != self._node_id]
                    return sorted(others, key=lambda n: n != shard.leader)
        return []

    async def _repair_piece(
        self, shard_uid: ShardUid, damage: _Damage, peers: Sequence[NodeId]
    ) -> bool:
        for peer in peers:
            try:
                batches = await self._transport.fetch_batches(
                    peer,
                    shard_uid,
                    start_offset=damage.start,
                    end_offset=damage.end,
                    bytes_max=limits.replication_repair_fetch_bytes_max,
                )
            except FetchRefused as refused:
                log.info("log_repair_source_refused", extra={"peer": peer, "why": str(refused)})
                continue
            if not batches or batches[0].first_offset != damage.start:
                continue
            if await asyncio.to_thread(self._store.repair, shard_uid, batches):
                damage.start = batches[-1].end_offset
                return True
            # Not our records there (the log moved on meanwhile): look again.
            known_end = await asyncio.to_thread(self._store.log_end, shard_uid)
            if damage.start >= known_end:
                damage.start = damage.end  # truncated away: nothing left to repair
                return True
        return False

    def _now(self) -> int:
        # The wall clock, for the replicas' timers too: `propose(records, now_ms)` stamps
        # arrival times from the same `now_ms` that drives its heartbeat and resend timers, so
        # every input must use one clock. A wall-clock jump only delays or hastens a resend.
        return self._clock.wall_ms()


def _clear_frames(error: BaseException) -> None:
    """Drops the locals of every finished frame in the error's traceback chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def _run_all(calls: Sequence[Callable[[], None]]) -> None:
    for call in calls:
        call()


def _same(batch: AppendBatch) -> AppendBatch:
    return batch
