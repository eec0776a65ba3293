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
3. takes a `Ready` from every replica that has one, sends the leaders' Appends at once
   (`DriverCore.send_ahead`: the followers' writes overlap ours), and executes the Readys
   together, in the order the replica requires: log resets, truncations, promises and high
   watermarks synchronously (one worker-thread call; high watermarks alone go beside the
   appends instead, `PersistPlan.beside`), then every replica's appends through
   the node's `GroupCommitWriter`, so all shards share one WriteBatch and one fsync per
   group. Meanwhile it steps the messages that arrive and takes the next turns (pipelined:
   up to `limits.replication_turns_in_flight_max` in flight, appends only,
   `DriverCore.take_pipelined_turn`), whose appends the writer takes with its next fsync.
   Each turn finishes in the order taken, once its own writes are durable: it sends
   the rest of `to_send` (acknowledgements) through the `Transport`;
   starts the log reads followers need to catch up (owned tasks, their results fed back
   with `read_done`); answers producers up to `committed_end` (a replica that `abandoned`
   its leadership keeps them until it learns whether their records survived,
   `driver_core.Local`); `advance`s; and finally answers the Prepares whose promises that
   turn made durable. Producers answered in a step (by a finished turn, or by the
   acknowledgements drained in step 2) resume before the next turn when it hands out no
   records, so their replies do not wait behind its bookkeeping; a turn with records goes
   first, so the followers write them while the replies are made.

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
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from broker import limits
from broker.clock import Clock
from broker.errors import ShoalError
from broker.log.disk_guard import DiskGuard
from broker.log.group_commit import GroupCommitWriter
from broker.log.records import AppendBatch, LogCorruptionError, NewRecord
from broker.log.store import LogStore, LogStoreError, clear_frames
from broker.meta.controller_core import RejoiningReplica
from broker.meta.image import MetadataImage
from broker.replication import replica as core
from broker.replication.driver_core import (
    Appended,
    DriverCore,
    DriverStatistics,
    Local,
    PersistPlan,
    Turn,
    run_calls,
)
from broker.replication.messages import Promise, ReplicationMessage
from broker.replication.network import FetchRefused, SealAnswer, Transport
from broker.replication.probe import ReplicationProbe, ReplicationView
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.replication.replica import ReplicaStatistics, ReplicationKnobs
from broker.types import NodeId, Offset, ShardUid

log = logging.getLogger(__name__)

# What a failed persist raises: the group commit's failure (its cause is the store's error), a
# store error from a truncation or promise, or corruption found while truncating.
_PERSIST_ERRORS = (ShoalError, LogStoreError, LogCorruptionError)

# Replicas are ticked when their own timer comes due (`_tick_due`); every this often all of
# them are ticked anyway, a cheap backstop for a schedule some code path forgot to update.
_SWEEP_INTERVAL_MS = 2_000.0


@dataclass(slots=True, kw_only=True)
class _Damage:
    """A range of a local replica's log that does not read back, until it is repaired."""

    start: Offset  # batch-aligned (store.damaged_range), moved up as pieces are repaired
    end: Offset
    attempts: int = 0
    retry_at: float = 0.0  # the clock's timer time (ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class DamagedRange:
    """What readers on this node must not read locally (`ReplicationDriver.damaged`)."""

    start: Offset
    end: Offset


class ReplicationDriver:
    """Runs every shard replica of this node (module docstring): the async shell around
    `driver_core.DriverCore`."""

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
        turns_in_flight_max: int | None = None,
    ) -> None:
        assert tick_ms >= 1
        if turns_in_flight_max is None:
            turns_in_flight_max = limits.replication_turns_in_flight_max
        assert turns_in_flight_max >= 1
        self._turns_in_flight_max = turns_in_flight_max
        self._node_id = node_id
        self._probe = probe
        self._store = store
        self._writer = writer
        self._transport = transport
        self._clock = clock
        self._image = image
        self._tick_ms = tick_ms
        self._disk = disk
        self._core = DriverCore(
            node_id=node_id,
            store=store,
            knobs=knobs,
            rejoin_floors=rejoin_floors,
            disk=disk,
            inbox_max=inbox_max,
            probe=probe,
        )
        self._locals = self._core.locals  # the same dict: the repair code reads it
        self._wake = _Wake()
        self._turned = asyncio.Event()  # set and replaced after every turn
        self._readers_released = False  # stopping: reads wait for nothing more
        self._reads: asyncio.TaskGroup | None = None
        # Corruption (decisions/0002, "Corruption"): offsets where a read failed, not located
        # yet (None: the shard's time index), and the located damaged ranges being repaired.
        self._suspects: dict[ShardUid, Offset | None] = {}
        self._damage: dict[ShardUid, _Damage] = {}
        self._repair_wake = asyncio.Event()
        self._persist_failures = 0  # in a row; each backs off longer (`_recover`)
        self._answered = 0  # producers answered since the last turn (`run` lets them reply)

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def disk_dropped(self) -> int:
        return self._core.disk_dropped

    @property
    def _applied(self) -> MetadataImage | None:
        return self._core.applied

    # --- Inputs (any task on the loop) ---------------------------------------------------------

    def deliver(self, message: ReplicationMessage) -> None:
        """An inbound Append/AppendAck from the transport; dropped when the inbox is full, and
        an Append carrying records while the disk is short of space."""
        if self._core.deliver(message):
            self._wake.set()

    def readable_end(self, shard_uid: ShardUid) -> Offset | None:
        local = self._local(shard_uid)
        return None if local is None else local.replica.high_watermark

    def knows_committed_end(self, shard_uid: ShardUid) -> bool:
        """Whether the local replica's HW is the shard's committed end (it leads and has
        committed in its epoch: `ShardReplica.knows_committed_end`)."""
        local = self._local(shard_uid)
        return local is not None and local.replica.knows_committed_end()

    async def wait_committed_end(self, shard_uid: ShardUid, *, timeout_s: float) -> bool:
        """While the local replica leads but has not committed in its epoch yet (a new leader,
        its marker on the way to a majority), waits up to `timeout_s` for it; returns whether
        the replica's HW is now the shard's committed end. A follower: False at once."""
        assert timeout_s >= 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self._readers_released:  # bounded by the timeout
                    local = self._local(shard_uid)
                    if local is None or local.replica.role is not core.Role.LEADER:
                        return False
                    if local.replica.knows_committed_end():
                        return True
                    await self._turned.wait()
        return self.knows_committed_end(shard_uid)

    async def wait_readable(self, shard_uid: ShardUid, beyond: Offset, *, timeout_s: float) -> None:
        """Returns once the local replica's high watermark passes `beyond`, it holds none, or
        `timeout_s` passed (enhanced fan-out's push: SubscribeToShard waits here rather than
        polling). The HW only moves inside a turn, so waking after each turn misses nothing."""
        assert timeout_s >= 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self._readers_released:  # bounded by the timeout
                    end = self.readable_end(shard_uid)
                    if end is None or end > beyond:
                        return
                    await self._turned.wait()

    async def append(
        self,
        shard_uid: ShardUid,
        *,
        epoch: int,
        records: Sequence[NewRecord],
        now_ms: int,
        placed: Callable[[Offset, int], object] | None = None,
    ) -> tuple[Offset, int]:
        """Proposes `records` on the local leader replica; returns (first offset, arrival_ms)
        once a majority holds them. Raises ShardRefusedError (the caller routes again).
        `placed(first offset, arrival_ms)` runs on the loop while the log writer writes them
        (`GroupCommitWriter.when_writing`): the caller prepares its answer there, to use once
        they are committed."""
        self.apply_image()  # cheap when unchanged; a stale epoch must be refused as such
        self._local(shard_uid, epoch=epoch)
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        first_offset, arrival_ms = self._core.propose(
            shard_uid, epoch=epoch, records=records, now_ms=now_ms, completion=future
        )
        self._wake.set()
        if placed is not None:
            self._writer.when_writing(functools.partial(placed, first_offset, arrival_ms))
        try:
            async with asyncio.timeout(limits.replication_commit_timeout_ms / 1000):
                return await future
        except TimeoutError as exc:
            raise ShardRefusedError(
                RefusalReason.OUTCOME_UNKNOWN, shard_uid=shard_uid, detail="commit timed out"
            ) from exc

    async def prepare(self, shard_uid: ShardUid, epoch: int) -> Promise | None:
        """The controller's Prepare: answered once the promise is durable (0002 rule 1)."""
        self._local(shard_uid)
        future: asyncio.Future[Promise] = asyncio.get_running_loop().create_future()
        if not self._core.prepare(shard_uid, epoch, now_ms=self._now(), completion=future):
            return None
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
                while (end := self._core.sealed_end(shard_uid, epoch)) is None:
                    self._wake.set()
                    await self._turned.wait()
                return SealAnswer(end_offset=end)
        except TimeoutError:
            return SealAnswer(end_offset=None)

    def replica_statistics(self, shard_uids: frozenset[ShardUid]) -> list[ReplicaStatistics]:
        return self._core.replica_statistics(shard_uids)

    def statistics(self) -> DriverStatistics:
        return self._core.statistics()

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

    def caught_up(self) -> bool:
        """No replica on this node is still recovering its log: the replication half of the
        readiness probe (`DriverCore.caught_up`)."""
        return self._core.caught_up()

    def fenced_leaderships(self) -> list[tuple[ShardUid, int]]:
        return self._core.fenced_leaderships()

    def rejoining(self) -> list[RejoiningReplica]:
        return self._core.rejoining()

    def leader_count(self) -> int:
        return self._core.leader_count()

    def release_waiting_readers(self) -> None:
        """Before the node stops: reads waiting for records (a subscription's push, a
        forwarded long poll) or for a new leader's first commit answer now with what there
        is (an empty page that says its end may lag), and later ones do not wait."""
        self._readers_released = True
        self._turned.set()

    async def wait_producers_answered(self, *, timeout_s: float) -> int:
        """Before the node stops: waits, at most `timeout_s`, until every producer waiting on
        a replica here now has its answer (a leader's commit; after a drain, the orphans of a
        moved leadership learn from the new leader's Appends whether their records survived),
        while replication still flows. Returns how many are still waiting."""
        waiting = [
            waiter.completion
            for local in self._locals.values()
            for waiter in (*local.waiters, *local.orphans)
            if isinstance(waiter.completion, asyncio.Future) and not waiter.completion.done()
        ]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s)
        return sum(not completion.done() for completion in waiting)

    # --- Configuration from the metadata image -------------------------------------------------

    def _local(self, shard_uid: ShardUid, *, epoch: int = 0) -> Local | None:
        """The local replica, after applying a newer image if this one is not applied yet
        (or does not know the shard or the epoch the caller saw)."""
        local = self._locals.get(shard_uid)
        if local is None or local.epoch < epoch:
            self.apply_image()
            local = self._locals.get(shard_uid)
        return local

    def apply_image(self) -> None:
        """Configures the replicas from the newest image (idempotent per image)."""
        wall_ms = self._clock.wall_ms()
        if self._core.apply_image(self._image(), now_ms=wall_ms, wall_ms=wall_ms):
            self._wake.set()

    # --- The loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Turns until cancelled: infinite on purpose (node stop cancels it)."""
        clock = self._clock
        in_flight: collections.deque[_InFlight] = collections.deque()
        try:
            async with asyncio.TaskGroup() as reads:
                self._reads = reads
                reads.create_task(self._run_repairs(), name="replica-repairs")
                next_tick = clock.timer_ms()  # the timer's clock; replicas get wall ms
                next_sweep = next_tick + _SWEEP_INTERVAL_MS
                while True:
                    remaining_ms = next_tick - clock.timer_ms()
                    if not self._wake.is_set() and remaining_ms > 0:
                        # Our own wake-up (set also when a turn's writes end) or the tick
                        # timer: no deadline needed.
                        await clock.wait(self._wake.event, remaining_ms)
                    self._wake.clear()
                    if not await self._finish_written(in_flight):
                        continue  # a persist failed: the replicas are reopened first
                    now_ms = self._now()
                    self.apply_image()
                    self._answered += self._core.drain_inbox(now_ms, self._image())
                    if self._answered and not self._core.appends_waiting():
                        # The producers just answered (by acknowledgements, or by the turns
                        # finished above) resume first when this turn sends no records:
                        # their replies leave before its bookkeeping, not after it (~0.1 ms
                        # of a commit's round trip). A turn with records goes first, so the
                        # followers write them while the replies are made.
                        await asyncio.sleep(0)
                    self._answered = 0
                    if clock.timer_ms() >= next_tick:
                        self._core.tick_due(now_ms)
                        next_tick = clock.timer_ms() + self._tick_ms
                    if clock.timer_ms() >= next_sweep:
                        self._core.tick_all(now_ms)
                        next_sweep = clock.timer_ms() + _SWEEP_INTERVAL_MS
                    await self._turn(in_flight)
        finally:
            for flight in in_flight:
                flight.cancel()  # the node stops: the driver task was cancelled

    async def _turn(self, in_flight: collections.deque[_InFlight]) -> None:
        """Takes a turn and starts persisting it: with turns in flight, a pipelined one
        (`DriverCore.take_pipelined_turn`: appends and high watermarks only), up to
        `turns_in_flight_max`. Its appends go to the writer at once, so the group commit takes
        them while the turn before is fsynced; `_finish_written` finishes the turns in order,
        each once its own writes are durable."""
        if not in_flight:
            turn: Turn | None = self._core.take_turn()
        elif len(in_flight) < self._turns_in_flight_max and in_flight[-1].queued:
            # Behind a turn whose appends are all queued: the writer keeps log order.
            turn = self._core.take_pipelined_turn()
        else:
            turn = None
        if turn is None:
            return  # taken once the turns in flight are queued or end (each sets the wake)
        if not turn.work:
            # Nothing to send or answer (a pipelined turn holds no Prepare): finishing it
            # now, before the turns in flight, only reschedules its replicas' ticks.
            self._finish(turn)
            return
        plan = self._core.persist_plan(turn, wall_ms=self._clock.wall_ms())
        ahead = self._core.send_ahead(turn)
        self._transport.send_all(ahead)  # now: the followers write while we do
        waits: list[asyncio.Future[None]] = []
        flight = _InFlight(turn=turn, waits=waits)
        in_flight.append(flight)
        try:
            if plan.before or not self._writer.has_room(len(plan.appends)):
                # In order, or waiting for the writer's room: in a task, the loop steps on.
                waits.append(asyncio.ensure_future(self._persist(plan, flight)))
            else:
                # The appends go to the writer thread at once (submit does not wait while
                # there is room), not one task step later: a leader's too, once its Appends
                # are sent (encoded, and a large one written to the socket, by `send`).
                # Queued behind the requests in the loop's ready queue, a leader's own write
                # started 3 ms after its followers' at 3 producers (issue 18), and the commit
                # waits for it (replica.py rule 3).
                for batch in plan.appends:  # one by one: a failed submit keeps the queued
                    waits.append(await self._submit(batch))  # noqa: PERF401
                if plan.beside:  # high watermarks, in no order with the appends (PersistPlan)
                    waits.append(
                        asyncio.ensure_future(
                            asyncio.to_thread(run_calls, self._store, plan.beside)
                        )
                    )
                flight.queued = True
        except _PERSIST_ERRORS as error:
            flight.error = error  # finished (failed) in order, with what it queued
        flight.notify(self._wake)

    async def _finish_written(self, in_flight: collections.deque[_InFlight]) -> bool:
        """Finishes, in the order they were taken, the turns whose writes have all ended;
        False if one failed (every turn in flight is then failed: `_recover`)."""
        while in_flight and in_flight[0].ended():
            flight = in_flight[0]
            error = flight.failure()
            if error is not None:
                # Later turns' writes may depend on this one's (the same shards): every
                # turn in flight ends first, then all of them are failed together.
                await asyncio.gather(
                    *(wait for f in in_flight for wait in f.waits), return_exceptions=True
                )
                turns = [f.turn for f in in_flight]
                in_flight.clear()
                await self._recover(turns, error)
                return False
            in_flight.popleft()
            self._persist_failures = 0
            self._finish(flight.turn)
        return True

    def _finish(self, turn: Turn) -> None:
        effects = self._core.finish(turn)
        self._answered += effects.answered
        self._transport.send_all(effects.sends)  # now, not at the end of the loop turn
        for local, request in effects.reads:
            assert self._reads is not None
            self._reads.create_task(self._read(local, request))
        self._turned.set()
        self._turned = asyncio.Event()
        if effects.again:
            self._wake.set()

    async def _recover(self, turns: Sequence[Turn], error: Exception) -> None:
        """A persist failed (a full disk, a broken store): the replicas involved cannot know
        what is durable, so they are rebuilt from the store at the next turn, as after a
        restart (the failed Ready's Appends may have gone out: a rebuilt replica never leads
        again in an epoch it promised before, replica.py rule 6). Their producers
        get an unknown outcome (retryable) and their Prepares no answer (the controller asks
        again). RocksDB keeps refusing every write after a failed WAL write until it is
        reopened, so it is, once the disk has room again. Backs off while failures repeat;
        the node keeps serving reads meanwhile."""
        self._persist_failures += 1
        log.error(
            "replica_persist_failed",
            extra={
                "error": repr(error),
                "replicas": sum(len(turn.work) for turn in turns),
                "failures": self._persist_failures,
            },
        )
        for turn in turns:
            self._core.fail(turn)
        delay_ms = min(
            limits.replication_persist_backoff_ms_min * 2 ** min(self._persist_failures - 1, 10),
            limits.replication_persist_backoff_ms_max,
        )
        # The failed write's frames hold the store's old handles; RocksDB cannot be reopened
        # while they live.
        clear_frames(error)
        del error
        await self._clock.sleep(delay_ms)  # a backoff while the disk refuses, not a sync
        await self._reopen_store()
        self._core.forget_image()  # the next turn opens the dropped replicas from the store
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
                await self._clock.sleep(limits.replication_persist_backoff_ms_max)
                continue
            try:
                await asyncio.to_thread(self._store.reopen)
                return
            except LogStoreError as error:
                attempt += 1
                log.error("log_store_reopen_failed", extra={"error": repr(error), "try": attempt})
                await self._clock.sleep(limits.replication_persist_backoff_ms_max)

    def _room_to_reopen(self) -> bool:
        """Room for RocksDB to flush its memtables on close: not short by the guard's
        minimum, and at least `limits.store_reopen_free_bytes_min` free whatever it is."""
        disk = self._disk
        if disk is None or disk.last is None:
            return True  # nothing measures the disk here (tests): try
        return not disk.full and disk.last.free_bytes >= limits.store_reopen_free_bytes_min

    async def _persist(self, plan: PersistPlan, flight: _InFlight) -> None:
        """Makes a turn durable in the order the replica requires (module docstring): one that
        resets, truncates or promises (nothing else is then in flight for its replicas), or
        one whose appends wait for room in the writer's queue."""
        if plan.before:
            await asyncio.to_thread(run_calls, self._store, plan.before)
        waits = [await self._submit(batch) for batch in plan.appends]
        flight.queued = True
        self._wake.set()  # a pipelined turn may go behind it now
        if plan.beside:
            waits.append(
                asyncio.ensure_future(asyncio.to_thread(run_calls, self._store, plan.beside))
            )
        if waits:
            # Every write ends before the turn does, even when one fails (the store may be
            # reopened next). A failed group commit leaves the replicas unable to know what is
            # durable: the error propagates (`_recover`).
            outcomes = await asyncio.gather(*waits, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _submit(self, batch: AppendBatch) -> asyncio.Future[None]:
        return await self._writer.submit(functools.partial(_same, batch))

    async def _read(self, local: Local, request: core.ReadRequest) -> None:
        """A follower's catch-up read of our log, fed back to the replica. A damaged range
        cannot be sent: it is reported (and repaired); the replica asks again after its resend
        timeout, as when the store is being reopened."""
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
        except LogStoreError as error:
            # Being reopened (a failed write, corrupt files dropped): the replica asks again.
            log.info("replica_read_store_unavailable", extra={"error": str(error)})
            return
        if self._core.read_done(local, request, batches, self._now()):
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
        clock = self._clock
        while True:
            wait_ms = min(
                (max(0.0, d.retry_at - clock.timer_ms()) for d in self._damage.values()),
                default=None,
            )
            await clock.wait(self._repair_wake, wait_ms)  # None: our own wake-up only, on purpose
            self._repair_wake.clear()
            suspects, self._suspects = self._suspects, {}
            for uid, offset in suspects.items():
                await self._locate(uid, offset)
            for uid in [u for u, d in self._damage.items() if d.retry_at <= clock.timer_ms()]:
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
        try:
            start, end = await asyncio.to_thread(self._store.damaged_range, shard_uid, offset)
        except LogStoreError as error:  # being reopened: the next read or scrub reports it again
            log.warning("log_repair_store_unavailable", extra={"error": str(error)})
            return
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
                damage.retry_at = self._clock.timer_ms() + delay_ms
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
            try:
                if await asyncio.to_thread(self._store.repair, shard_uid, batches):
                    damage.start = batches[-1].end_offset
                    return True
                # Not our records there (the log moved on meanwhile): look again.
                known_end = await asyncio.to_thread(self._store.log_end, shard_uid)
            except LogStoreError as error:  # being reopened: the next attempt, after a backoff
                log.warning("log_repair_store_unavailable", extra={"error": str(error)})
                return False
            if damage.start >= known_end:
                damage.start = damage.end  # truncated away: nothing left to repair
                return True
        return False

    def _now(self) -> int:
        # The wall clock, for the replicas' timers too: `propose(records, now_ms)` stamps
        # arrival times from the same `now_ms` that drives its heartbeat and resend timers, so
        # every input must use one clock. A wall-clock jump only delays or hastens a resend.
        return self._clock.wall_ms()


class _Wake:
    """The run loop's wake-up: an inbound message, a proposal, a Prepare, a new image, or
    the end of a turn's writes."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        self.event.set()

    def clear(self) -> None:
        self.event.clear()

    def is_set(self) -> bool:
        return self.event.is_set()


@dataclass(slots=True, kw_only=True)
class _InFlight:
    """A turn being persisted: its writes (the group commit's futures, a worker thread's
    calls), or the error that stopped them from being queued."""

    turn: Turn
    waits: list[asyncio.Future[None]]
    error: Exception | None = None
    queued: bool = False  # all its appends are in the writer's queue: the next may follow

    def notify(self, wake: _Wake) -> None:
        """Sets `wake` once every write has ended (at once if none is left)."""
        pending = [wait for wait in self.waits if not wait.done()]
        if not pending:
            wake.set()
            return
        left = len(pending)

        def ended(_: asyncio.Future[None]) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                wake.set()

        for wait in pending:
            wait.add_done_callback(ended)

    def ended(self) -> bool:
        return all(wait.done() for wait in self.waits)

    def failure(self) -> Exception | None:
        """The first error among its writes (a failed group commit, a store call); one that
        is not a persist failure is a bug, raised out of the driver as before."""
        if self.error is not None:
            return self.error
        for wait in self.waits:
            error = None if wait.cancelled() else wait.exception()
            if error is None:
                continue
            if not isinstance(error, _PERSIST_ERRORS):
                raise error
            return error
        return None

    def cancel(self) -> None:
        for wait in self.waits:
            if not wait.done():
                wait.cancel()


def _same(batch: AppendBatch) -> AppendBatch:
    return batch
