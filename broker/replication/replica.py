"""`ShardReplica`: one replica of one shard, as a pure state machine (decisions/0002).

Raft's log replication with the election taken out (DESIGN §4): the controller picks leaders
through Prepare/Promise and the metadata image; this object does the rest. It is sync and pure:
no I/O, no clock reads (`now_ms` is passed in), no randomness. The driver (`driver.py`, or the
simulator's `sim/cluster.py`) runs this loop, one shard replica at a time:

    configure(...) on every new metadata image; step(message) on every message;
    tick(now_ms) on a timer (a tick before next_tick_ms() does nothing, so a driver may
    skip it); propose(records) for producers on the leader; then
    ready = replica.ready()        # what to persist, send and answer
    send the leader's Appends in ready.to_send (they may go before or while it persists)
    persist, in order: reset_to, truncate_from, promise, appends, high_watermark (durably)
    send the rest of ready.to_send (acknowledgements: only once durable); run ready.reads
    (store.read_batches) and hand them to read_done
    answer producers up to ready.committed_end; fail every waiting one if ready.abandoned
    replica.advance(ready)

Readys are advanced in the order they were taken. While Readys are being persisted, `step`,
`tick`, `propose` and `configure` may be called; what they decide goes into the next Ready.
Several Readys may be outstanding (pipelined, as etcd-raft's asynchronous storage writes: the
next batch goes to the writer while the last is being fsynced), but only ones that persist
appends and high watermarks: a Ready that resets, truncates or promises is handed out only
when none is outstanding, and none is handed out behind it until it is advanced
(`has_ready`). So a write in flight never lands after a truncation of its offsets (nothing is
truncated while one is in flight), and what a replica counts as durable, acknowledges or
counts towards its HW moves only as each Ready is advanced, in order (rule 3).

A `Promise` returned by `step(Prepare)` reports a log that may include writes still to be
persisted: the driver sends it only after the next Ready (taken after that step) is advanced.

Safety rules (numbers from 0002):
1. Appends and Prepares below the promised epoch are refused; a Prepare raises the promise.
2. A follower accepts an Append only where its log matches the leader's (`prev_epoch`), or at
   its own start, or inside its committed prefix (below its HW, which every leader holds); it
   then truncates from the first record whose epoch differs, never below its HW (asserted).
3. The leader's HW is the largest offset a majority (itself included) holds durably, counted
   only once it lies above the start of the leader's own epoch (the epoch-start control batch
   it writes first): Raft's commit rule, which keeps the "Figure 8" case safe. The leader
   counts its own log only up to its durable end (`advance`), and its HW never passes that
   end (its readers read below the HW): so its Appends may go out before its own write is
   durable and its fsync overlaps the followers' (Raft §10.2.1).
4. The HW never goes back (asserted); readers read below it.
5. A follower that cannot match at the leader's log start drops its log and restarts there.
6. A replica opened from its store (a restart, or a rebuild after a failed persist) never
   leads again in an epoch it promised before: it may have sent records as leader in it
   that it then lost (sent, not yet durable), which its followers may hold under the same
   epoch; leading on in that epoch would write other records at those offsets that the
   followers' epoch check takes for the same. It reports itself fenced instead
   (`fenced()`, in heartbeats), and leads again only in a newer epoch, whose marker makes
   the new leader's log win over any such tail (as a Raft leader that restarts must win a
   new term). A single-replica set is exempt: it sends nothing (a replica set changes only
   with a new epoch).

A replica that lost its disk rejoins as a new, empty replica (`ReplicaDurableState.
rejoin_floor`, decisions/0002 "Lost disk"). It forgot its log and its promises, so:
- it answers Prepare with ok=False (no vote) and never leads until it has caught up: it holds
  a leader's HW above that leader's epoch start (then its log holds every committed record);
- its acknowledgements carry `rejoining` and no leader counts them towards its HW while the
  leader's epoch is at or below the floor: the shard's epoch in a metadata image read after the
  loss. The controller prepares at most image epoch + 1, so every promise the replica may have
  forgotten is at most floor + 1; a leader of epoch > floor was elected after every such
  promise, and counting the replica for it cannot help commit what a forgotten promise fenced
  (so such a leader counts it even before it has caught up: `_rejoining_in`);
- it fences nobody: the current leader keeps leading (its majority is the others), and once
  the replica has caught up the controller moves the shard to a new epoch (same leader), from
  which on the replica counts again (`statistics().rejoin_floor`, reported in heartbeats).
"""

from __future__ import annotations

import bisect
import collections
import enum
import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker import limits
from broker.log.records import (
    BATCH_FORMAT_VERSION,
    WRITTEN_BATCH_FORMAT_VERSION,
    AppendBatch,
    NewRecord,
)
from broker.log.store import LogStore, cut_history, extend_history
from broker.meta.metadata_format import STORED_BATCHES_LEVEL
from broker.replication.messages import (
    Append,
    AppendAck,
    Envelope,
    Prepare,
    Promise,
    ReplicationMessage,
)
from broker.replication.refusals import RefusalReason
from broker.types import NodeId, Offset, ShardUid

History = tuple[tuple[int, Offset], ...]

EPOCH_MARKER_PARTITION_KEY = ""  # the epoch-start control record: empty key, the epoch as u64
_EPOCH_MARKER = struct.Struct(">Q")


class Role(enum.Enum):
    FOLLOWER = "follower"
    LEADER = "leader"


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """Accepted: the records got offsets [first_offset, end_offset) in `epoch`."""

    first_offset: Offset
    end_offset: Offset
    arrival_ms: int
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Not accepted (`refusals.RefusalReason`): NOT_SHARD_LEADER (another node leads, named in
    `leader`, or none is known), STALE_EPOCH (this node was named leader, but a newer epoch was
    promised), SHARD_SEALED (the shard is sealing: no new appends), UNAVAILABLE (overloaded: too
    much proposed is not committed yet; nothing was written, retry later)."""

    reason: RefusalReason
    leader: NodeId | None  # the leader in this replica's image, if another node


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    """The driver reads `store.read_batches(shard_uid, start_offset, end_offset, bytes_max)`
    (after persisting the Ready that asked) and hands the result to `read_done`."""

    shard_uid: ShardUid
    peer: NodeId
    start_offset: Offset
    end_offset: Offset
    bytes_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """What the driver must do, in order: persist (durably), then send, read, answer.

    Persist in this order: `reset_to` (store.reset_log), `truncate_from`
    (store.truncate_suffix), `promise` (store.promise), `appends` (store.append, in order),
    `high_watermark` (store.set_high_watermark). The `Append`s in `to_send` (a leader's) may
    be sent before or while persisting (rule 3); the rest of `to_send` (`AppendAck`s: "durable
    here") only after. Then send the rest of `to_send`, run `reads`, answer
    producers whose records end at or below `committed_end` (leader only; None otherwise), and
    if `abandoned`, fail every producer still waiting (retryable: this replica stopped leading
    and cannot tell whether their records will survive). Then `advance(ready)`.
    """

    reset_to: Offset | None
    truncate_from: Offset | None
    promise: int | None
    appends: tuple[AppendBatch, ...]
    high_watermark: Offset | None
    to_send: tuple[Envelope, ...]
    reads: tuple[ReadRequest, ...]
    committed_end: Offset | None
    abandoned: bool

    def needs_persist(self) -> bool:
        return (
            self.reset_to is not None
            or self.truncate_from is not None
            or self.promise is not None
            or bool(self.appends)
            or self.high_watermark is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaDurableState:
    """What a replica starts from: its log and replica state as the store holds them."""

    log_start: Offset
    log_end: Offset
    last_arrival_ms: int
    epoch_history: History
    promised_epoch: int
    high_watermark: Offset
    # The node lost its disk (module docstring): the shard's epoch in a metadata image read
    # after the loss; None for a replica that kept its log. Set by the driver.
    rejoin_floor: int | None = None

    def __post_init__(self) -> None:
        assert 0 <= self.log_start <= self.log_end
        assert self.promised_epoch >= 0
        if self.rejoin_floor is not None:
            assert self.rejoin_floor >= 0
        for epoch, start in self.epoch_history:
            assert epoch >= 1
            assert start <= self.log_end, (start, self)

    @staticmethod
    def from_store(
        store: LogStore, shard_uid: ShardUid, *, rejoin_floor: int | None = None
    ) -> ReplicaDurableState:
        """Point reads only; cheap enough for the loop at recovery."""
        log_end = store.log_end(shard_uid)
        return ReplicaDurableState(
            log_start=store.log_start(shard_uid),
            log_end=log_end,
            last_arrival_ms=store.last_arrival_ms(shard_uid),
            epoch_history=store.epoch_history(shard_uid),
            promised_epoch=store.promised_epoch(shard_uid),
            # A HW above the durable log (lazily written, then records lost) is not trusted.
            high_watermark=Offset(min(store.high_watermark(shard_uid), log_end)),
            rejoin_floor=rejoin_floor,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationKnobs:
    """Timing and size bounds; production values from limits.py, randomized by the sim."""

    heartbeat_ms: int = limits.replication_heartbeat_ms
    resend_ms: int = limits.replication_resend_ms
    # A follower known to hold the whole log, the HW and the log start gets a heartbeat only
    # this often (issue 6: idle shards must cost little; 1,000 shards at `heartbeat_ms` are
    # thousands of messages a second per node).
    idle_heartbeat_ms: int = limits.replication_idle_heartbeat_ms
    append_bytes_max: int = limits.replication_append_bytes_max
    inflight_appends_max: int = limits.replication_inflight_appends_max
    uncommitted_bytes_max: int = limits.replication_uncommitted_bytes_max
    tail_cache_bytes_max: int = limits.replication_tail_cache_bytes_max
    read_bytes_max: int = limits.replication_read_bytes_max

    def __post_init__(self) -> None:
        assert self.heartbeat_ms >= 1
        assert self.resend_ms > self.heartbeat_ms
        assert self.idle_heartbeat_ms >= self.heartbeat_ms
        assert self.append_bytes_max >= 1
        assert self.inflight_appends_max >= 1
        assert self.uncommitted_bytes_max >= 1
        assert self.tail_cache_bytes_max >= 0
        assert self.read_bytes_max >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowerStatistics:
    node_id: NodeId
    match_end: Offset
    next_offset: Offset
    inflight_appends: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStatistics:
    """An immutable snapshot, for metrics, the simulator's invariants and tests."""

    shard_uid: ShardUid
    node_id: NodeId
    role: Role
    epoch: int  # the image's epoch
    leader: NodeId | None
    promised_epoch: int
    log_start: Offset
    log_end: Offset  # including writes not yet persisted
    durable_end: Offset  # persisted (advanced)
    last_epoch: int  # of the last record, persisted or not
    durable_last_epoch: int  # of the last persisted record (below durable_end); 0 if none
    high_watermark: Offset
    sealing: bool
    recovering: bool  # lost its disk and not caught up yet: no vote, cannot lead
    rejoin_floor: int | None  # lost its disk: its acks count only in epochs above this
    fenced: bool  # named leader in the image, but a newer epoch was promised
    followers: tuple[FollowerStatistics, ...]


@dataclass(slots=True, kw_only=True)
class _Progress:
    """The leader's view of one follower."""

    next_offset: Offset  # the next offset to send
    match_end: Offset  # acknowledged: the follower holds our log below this
    inflight: collections.deque[tuple[Offset, int]] = field(
        default_factory=collections.deque
    )  # (end offset, sent_ms) of Appends not yet acknowledged
    last_sent_ms: int = -(2**62)
    sent_hw_and_start: tuple[int, int] = (-1, -1)  # in the last Append sent
    read: ReadRequest | None = None
    read_ms: int = 0
    # False while the follower's acks say it is rejoining (lost its disk): it still gets the
    # log, but the high watermark does not count it (module docstring).
    counts: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class _Snapshot:
    """The log as it will be once an outstanding Ready is persisted."""

    log_start: Offset
    log_end: Offset
    history: History
    promised_epoch: int
    high_watermark: Offset


@dataclass(slots=True, kw_only=True)
class _Outstanding:
    """A Ready handed out and not advanced yet, the log as it will be once it is persisted,
    and the lowest cut of the log decided since it was handed out (the records past it are
    going away, so they never count as durable: `advance`)."""

    ready: Ready
    snapshot: _Snapshot
    cut: Offset | None = None

    def ordered(self) -> bool:
        """Whether it resets, truncates or promises: nothing may be persisted beside it."""
        ready = self.ready
        return (
            ready.reset_to is not None
            or ready.truncate_from is not None
            or ready.promise is not None
        )


def epoch_at(history: Sequence[tuple[int, Offset]], offset: int) -> int:
    """The epoch of the record at `offset` by the history; 0 if before every entry."""
    if offset < 0:
        return 0
    index = bisect.bisect_right(history, offset, key=lambda entry: entry[1]) - 1
    return history[index][0] if index >= 0 else 0


def end_for_epoch(history: Sequence[tuple[int, Offset]], epoch: int, log_end: Offset) -> Offset:
    """KIP-101's OffsetsForLeaderEpoch: the end of the last epoch <= `epoch` in this log."""
    for entry_epoch, start in history:
        if entry_epoch > epoch:
            return start
    return log_end


def batch_format_for(metadata_format: int) -> int:
    """The stored batch format a leader writes in a cluster at `metadata_format` (format 3,
    replicated as its bytes, once every node reads it: broker/meta/metadata_format.py)."""
    if metadata_format >= STORED_BATCHES_LEVEL:
        return BATCH_FORMAT_VERSION
    return WRITTEN_BATCH_FORMAT_VERSION


def epoch_marker(
    shard_uid: ShardUid,
    *,
    epoch: int,
    offset: Offset,
    arrival_ms: int,
    version: int = WRITTEN_BATCH_FORMAT_VERSION,
) -> AppendBatch:
    """The control batch a new leader writes first (rule 3)."""
    return AppendBatch(
        shard_uid=shard_uid,
        first_offset=offset,
        arrival_ms=arrival_ms,
        records=(NewRecord(EPOCH_MARKER_PARTITION_KEY, _EPOCH_MARKER.pack(epoch)),),
        control=True,
        epoch=epoch,
        version=version,
    )


class ShardReplica:
    """One replica of one shard on one node. Pure; see the module docstring for the loop."""

    def __init__(
        self,
        shard_uid: ShardUid,
        node_id: NodeId,
        durable: ReplicaDurableState,
        *,
        knobs: ReplicationKnobs | None = None,
    ) -> None:
        self.shard_uid = shard_uid
        self.node_id = node_id
        self._knobs = knobs or ReplicationKnobs()
        # From the metadata image.
        self._epoch = 0
        self._leader: NodeId | None = None
        self._replicas: tuple[NodeId, ...] = ()
        self._sealing = False
        self._batch_format = WRITTEN_BATCH_FORMAT_VERSION  # until configure() says more
        self._configured = False
        self._role = Role.FOLLOWER
        self._rejoin_floor = durable.rejoin_floor
        self._recovering = durable.rejoin_floor is not None
        # Rule 6: epochs up to this one were promised before this replica was opened, so it
        # may have led in them and lost a tail its followers hold; it never leads in them.
        self._opened_promise = durable.promised_epoch
        # The log as it will be once everything decided is persisted.
        self._log_start = durable.log_start
        self._log_end = durable.log_end
        self._history: list[tuple[int, Offset]] = list(durable.epoch_history)
        self._promised_epoch = durable.promised_epoch
        self._last_arrival_ms = durable.last_arrival_ms
        self._hw = durable.high_watermark
        assert self._hw <= self._log_end
        # The log as persisted (advanced), and as it will be after the outstanding Ready.
        self._durable = _Snapshot(
            log_start=durable.log_start,
            log_end=durable.log_end,
            history=durable.epoch_history,
            promised_epoch=durable.promised_epoch,
            high_watermark=durable.high_watermark,
        )
        self._submitted = self._durable
        # The end of the persisted log that still equals this log: a truncation decided but
        # not persisted yet lowers it at once, since the records past it are going away.
        self._stable_end = durable.log_end
        self._outstanding: collections.deque[_Outstanding] = collections.deque()
        # Decided, not yet handed out in a Ready.
        self._reset_to: Offset | None = None
        self._truncate_from: Offset | None = None
        self._appends: list[AppendBatch] = []
        self._to_send: list[Envelope] = []
        self._reads: list[ReadRequest] = []
        self._abandoned = False
        # Follower state: the prefix known to equal the current leader's log.
        self._follow_epoch = 0
        self._match_end = Offset(0)
        self._leader_hw = Offset(0)
        # Leader state.
        self._progress: dict[NodeId, _Progress] = {}
        self._tail: collections.deque[AppendBatch] = collections.deque()
        self._tail_bytes = 0
        self._uncommitted: collections.deque[tuple[Offset, int]] = collections.deque()
        self._uncommitted_bytes = 0
        self._lead_start_end = Offset(0)  # the log end when it took the lead (marker included)

    # --- Inputs ---------------------------------------------------------------------------

    def configure(
        self,
        *,
        epoch: int,
        leader: NodeId | None,
        replicas: Sequence[NodeId],
        sealing: bool,
        now_ms: int,
        batch_format: int = WRITTEN_BATCH_FORMAT_VERSION,
    ) -> None:
        """Applies this shard's entry of a (new) metadata image. Older epochs are ignored.
        `batch_format` is the stored batch format this replica writes when it leads (the
        cluster's metadata format decides it: broker/log/records.py); it only ever rises."""
        assert epoch >= 0
        assert self.node_id in replicas, (self.node_id, replicas)
        self._batch_format = max(self._batch_format, batch_format)
        if epoch < self._epoch:
            return
        first = not self._configured
        self._configured = True
        self._replicas = tuple(replicas)
        self._sealing = sealing
        del first
        if epoch > self._promised_epoch:
            self._raise_promise(epoch)
        new_epoch = epoch != self._epoch
        self._epoch = epoch
        self._leader = leader
        self._end_rejoin_if_done()
        if self._role is Role.LEADER and (new_epoch or leader != self.node_id):
            self._step_down()
        if (
            self._role is Role.FOLLOWER
            and leader == self.node_id
            and epoch >= 1
            and epoch == self._promised_epoch
            and not self._recovering
            and self._may_lead(epoch)
        ):
            self._become_leader(now_ms)
        if self._role is Role.LEADER:
            for node in self._replicas:
                if node != self.node_id and node not in self._progress:
                    self._progress[node] = _Progress(next_offset=self._log_end, match_end=Offset(0))
            for node in list(self._progress):
                if node not in self._replicas:
                    del self._progress[node]
            self._advance_hw()
            self._send_appends(now_ms)

    def propose(self, records: Sequence[NewRecord], now_ms: int) -> Proposal | Refusal:
        """Assigns the records the next offsets (dense, in call order) if this replica leads."""
        assert records, "a proposal of no records"
        assert now_ms >= 0
        if self._role is not Role.LEADER:
            if self._leader == self.node_id:
                return Refusal(reason=RefusalReason.STALE_EPOCH, leader=None)
            return Refusal(reason=RefusalReason.NOT_SHARD_LEADER, leader=self._leader)
        if self._sealing:
            return Refusal(reason=RefusalReason.SHARD_SEALED, leader=self.node_id)
        if self._uncommitted_bytes >= self._knobs.uncommitted_bytes_max:
            return Refusal(reason=RefusalReason.UNAVAILABLE, leader=self.node_id)
        batch = AppendBatch(
            shard_uid=self.shard_uid,
            first_offset=self._log_end,
            arrival_ms=max(now_ms, self._last_arrival_ms),
            records=records,
            epoch=self._epoch,
            version=self._batch_format,
        )
        size = batch.size_bytes
        assert size <= self._knobs.append_bytes_max, (size, self._knobs.append_bytes_max)
        self._write(batch)
        self._uncommitted.append((batch.end_offset, size))
        self._uncommitted_bytes += size
        self._send_appends(now_ms)
        return Proposal(
            first_offset=batch.first_offset,
            end_offset=batch.end_offset,
            arrival_ms=batch.arrival_ms,
            epoch=self._epoch,
        )

    def step(self, message: ReplicationMessage, now_ms: int) -> Promise | None:
        """Handles a message for this shard. For a Prepare, returns the Promise to send back
        once the next Ready is advanced (module docstring); otherwise None."""
        assert message.shard_uid == self.shard_uid, (message.shard_uid, self.shard_uid)
        match message:
            case Append():
                self._on_append(message, now_ms)
                return None
            case AppendAck():
                self._on_ack(message, now_ms)
                return None
            case Prepare():
                return self._on_prepare(message)
            case Promise():
                raise AssertionError("a Promise goes to the controller, not to a replica")

    def tick(self, now_ms: int) -> None:
        """Resends what was not acknowledged in time, and heartbeats the HW (leader only)."""
        if self._role is not Role.LEADER:
            return
        for progress in self._progress.values():
            if progress.inflight and now_ms - progress.inflight[0][1] >= self._knobs.resend_ms:
                # Lost or refused silently: go back to what is known to match.
                progress.inflight.clear()
                progress.next_offset = Offset(max(progress.match_end, self._log_start))
            if progress.read is not None and now_ms - progress.read_ms >= self._knobs.resend_ms:
                progress.read = None  # the driver dropped it (it must not, but never hang)
        self._send_appends(now_ms)

    def next_tick_ms(self) -> int | None:
        """The earliest `now_ms` at which `tick` can do anything (resend, give up a read,
        heartbeat, send what is pending), or None when it cannot until another input arrives
        (a follower: its ticks do nothing). Holds until the next input (`step`, `propose`,
        `configure`, `read_done`, `trimmed`, `tick`, `advance`): a driver with many idle
        replicas ticks each one only when this comes due (issue 6) instead of all of them on
        every timer."""
        if self._role is not Role.LEADER:
            return None
        due: int | None = None
        inflight_max = self._knobs.inflight_appends_max
        for progress in self._progress.values():
            times: list[int] = []
            if progress.inflight:
                times.append(progress.inflight[0][1] + self._knobs.resend_ms)
            if progress.read is not None:
                times.append(progress.read_ms + self._knobs.resend_ms)
            elif len(progress.inflight) < inflight_max:
                if max(progress.next_offset, self._log_start) < self._log_end:
                    return -(2**62)  # something to send already: any tick sends it
                idle = (
                    progress.match_end >= self._log_end
                    and progress.sent_hw_and_start == (self._hw, self._log_start)
                    and not progress.inflight
                )
                interval_ms = self._knobs.idle_heartbeat_ms if idle else self._knobs.heartbeat_ms
                times.append(progress.last_sent_ms + interval_ms)
            for at_ms in times:
                due = at_ms if due is None else min(due, at_ms)
        return due

    def read_done(self, request: ReadRequest, batches: Sequence[AppendBatch], now_ms: int) -> None:
        """The result of a `Ready.reads` entry: `store.read_batches(...)` of the request."""
        progress = self._progress.get(request.peer)
        if self._role is not Role.LEADER or progress is None or progress.read != request:
            return  # stale: leadership or the follower's position changed meanwhile
        progress.read = None
        if not batches or batches[0].first_offset != request.start_offset:
            # Retention trimmed the range meanwhile: the log now starts later.
            trimmed_to = batches[0].first_offset if batches else request.end_offset
            self._log_start = Offset(max(self._log_start, trimmed_to))
            self._send_appends(now_ms)
            return
        offset = request.start_offset
        for batch in batches:
            assert batch.first_offset == offset, (batch.first_offset, offset)
            assert batch.epoch == epoch_at(self._history, batch.first_offset), batch
            offset = batch.end_offset
        assert offset <= self._log_end, (offset, self._log_end)
        self._send_append(request.peer, progress, tuple(batches), now_ms)
        self._send_appends(now_ms)

    def trimmed(self, log_start: Offset) -> None:
        """Retention moved the log start (store.trim); it must stay at or below the HW."""
        assert log_start <= self._log_end, (log_start, self._log_end)
        self._log_start = Offset(max(self._log_start, log_start))

    # --- Outputs --------------------------------------------------------------------------

    def needs_order(self) -> bool:
        """Whether the next Ready resets, truncates or promises: it is handed out only once
        every outstanding Ready is advanced (module docstring)."""
        return (
            self._reset_to is not None
            or self._truncate_from is not None
            or self._promised_epoch != self._submitted.promised_epoch
        )

    def has_appends(self) -> bool:
        """Whether records wait to be handed out in a Ready (what pipelining is for)."""
        return bool(self._appends)

    def outstanding(self) -> int:
        """How many Readys are handed out and not advanced yet."""
        return len(self._outstanding)

    def has_ready(self) -> bool:
        """Whether `ready()` has anything to do and may be called now: with Readys
        outstanding, only if neither they nor the next one reset, truncate or promise."""
        if self._outstanding and (self.needs_order() or self._outstanding[-1].ordered()):
            return False
        return (
            self._reset_to is not None
            or self._truncate_from is not None
            or self._promised_epoch != self._submitted.promised_epoch
            or bool(self._appends)
            or self._hw != self._submitted.high_watermark
            or bool(self._to_send)
            or bool(self._reads)
            or self._abandoned
        )

    def ready(self) -> Ready:
        """Hands out everything decided since the last Ready; call `advance` when done."""
        assert not self._outstanding or not (
            self.needs_order() or self._outstanding[-1].ordered()
        ), "advance() the outstanding Ready first: this one or the last one is ordered"
        submitted = self._submitted
        ready = Ready(
            reset_to=self._reset_to,
            truncate_from=self._truncate_from,
            promise=(
                self._promised_epoch if self._promised_epoch != submitted.promised_epoch else None
            ),
            appends=tuple(self._appends),
            high_watermark=self._hw if self._hw != submitted.high_watermark else None,
            to_send=tuple(self._to_send),
            reads=tuple(self._reads),
            committed_end=self._hw if self._role is Role.LEADER else None,
            abandoned=self._abandoned,
        )
        snapshot = _Snapshot(
            log_start=self._log_start,
            log_end=self._log_end,
            history=tuple(self._history),
            promised_epoch=self._promised_epoch,
            high_watermark=self._hw,
        )
        self._reset_to = None
        self._truncate_from = None
        self._appends = []
        self._to_send = []
        self._reads = []
        self._abandoned = False
        self._outstanding.append(_Outstanding(ready=ready, snapshot=snapshot))
        self._submitted = snapshot
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver persisted `ready` durably (and sent what it asked). It must be the
        oldest outstanding Ready: Readys are advanced in the order they were handed out."""
        assert self._outstanding, "advance() without an outstanding Ready"
        assert ready is self._outstanding[0].ready, "advance() takes the oldest outstanding Ready"
        entry = self._outstanding.popleft()
        snapshot = entry.snapshot
        self._durable = snapshot
        self._stable_end = snapshot.log_end
        if entry.cut is not None:
            self._stable_end = Offset(min(self._stable_end, entry.cut))
        if self._role is Role.LEADER:
            self._advance_hw()
        else:
            self._advance_follower_hw()

    def sealed_end(self) -> Offset | None:
        """The final end of a sealing shard once everything is committed; leader only."""
        if self._role is not Role.LEADER or not self._sealing:
            return None
        if self._hw != self._log_end or self._stable_end != self._log_end:
            return None
        return self._log_end

    @property
    def high_watermark(self) -> Offset:
        """Readers on this node may read offsets below this (all durable here)."""
        return self._hw

    def knows_committed_end(self) -> bool:
        """Whether the high watermark is the shard's committed end, so a read that reaches it
        is at the tip: only on a leader that has committed a record of its own epoch (its
        marker). A follower learns the leader's HW one Append later, and a new leader starts
        from the HW it had as a follower (Raft §8: a leader knows what is committed only once
        an entry of its term is): either may be behind records already acknowledged. The test
        is the HW covering the whole log the replica held when it took the lead (its new
        epoch's marker included), which also holds for a leader resuming its own epoch after a
        restart with a lazily written HW."""
        return self._role is Role.LEADER and self._hw >= self._lead_start_end

    def fenced(self) -> bool:
        """Named leader by the image, but it cannot lead in the image's epoch: a newer epoch
        was promised (a leader change that has not committed, or never will), or the replica
        was opened from its store after promising this one (rule 6). The controller then
        runs a leader change. Cheap, for every heartbeat."""
        return (
            self._leader == self.node_id
            and self._role is Role.FOLLOWER
            and (self._promised_epoch > self._epoch or not self._may_lead(self._epoch))
        )

    def _may_lead(self, epoch: int) -> bool:
        """Rule 6: not in an epoch promised before this replica was opened, unless it has
        no follower to have sent anything to."""
        return epoch > self._opened_promise or self._replicas == (self.node_id,)

    @property
    def role(self) -> Role:
        return self._role

    @property
    def replica_set(self) -> tuple[NodeId, ...]:
        """The replica set of the last image applied: the set a leader counts acks from."""
        return self._replicas

    @property
    def epoch(self) -> int:
        """The epoch of the last metadata image applied."""
        return self._epoch

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            shard_uid=self.shard_uid,
            node_id=self.node_id,
            role=self._role,
            epoch=self._epoch,
            leader=self._leader,
            promised_epoch=self._promised_epoch,
            log_start=self._log_start,
            log_end=self._log_end,
            durable_end=self._stable_end,
            last_epoch=self._last_epoch(),
            durable_last_epoch=epoch_at(self._history, self._stable_end - 1),
            high_watermark=self._hw,
            sealing=self._sealing,
            recovering=self._recovering,
            rejoin_floor=self._rejoin_floor,
            fenced=self.fenced(),
            followers=tuple(
                FollowerStatistics(
                    node_id=node,
                    match_end=progress.match_end,
                    next_offset=progress.next_offset,
                    inflight_appends=len(progress.inflight),
                )
                for node, progress in sorted(self._progress.items())
            ),
        )

    # --- Messages -------------------------------------------------------------------------

    def _on_prepare(self, prepare: Prepare) -> Promise:
        if prepare.epoch < self._promised_epoch:
            return self._promise_answer(prepare.epoch, ok=False)
        self._raise_promise(prepare.epoch)
        if self._role is Role.LEADER and prepare.epoch > self._epoch:
            self._step_down()
        # A replica that lost its disk is fenced by the promise but must not vote.
        return self._promise_answer(prepare.epoch, ok=not self._recovering)

    def _promise_answer(self, epoch: int, *, ok: bool) -> Promise:
        return Promise(
            shard_uid=self.shard_uid,
            epoch=epoch,
            sender=self.node_id,
            ok=ok,
            last_epoch=self._last_epoch(),
            log_end=self._log_end,
            promised_epoch=self._promised_epoch,
        )

    def _on_append(self, append: Append, now_ms: int) -> None:
        if append.epoch < self._promised_epoch:
            self._ack(append, ok=False, log_end=self._log_end)
            return
        if append.epoch > self._promised_epoch:
            self._raise_promise(append.epoch)
        if self._role is Role.LEADER:
            # One leader per epoch: an Append of our own epoch can only come from us.
            assert append.epoch > self._epoch, (append, self._epoch)
            self._step_down()
        if append.epoch != self._follow_epoch:
            # A new leader: only the committed prefix is known to equal its log.
            self._follow_epoch = append.epoch
            self._match_end = Offset(min(self._hw, self._log_end))
            self._leader_hw = Offset(0)
        self._leader_hw = Offset(max(self._leader_hw, append.leader_hw))
        batches, first = self._drop_below_log_start(append)
        if not self._matches(append, first):
            if first == append.leader_log_start and first > self._hw:
                self._reset(first)  # rule 5: our log cannot be matched below the leader's start
            else:
                self._ack(append, ok=False, log_end=self._refusal_hint(append, first))
                return
        self._merge(batches, first)
        self._match_end = Offset(max(self._match_end, append.end_offset, first))
        assert self._match_end <= self._log_end, (self._match_end, self._log_end)
        self._advance_follower_hw()
        if (
            not append.batches
            and self._match_end == append.first_offset
            and append.first_offset > append.leader_log_start
        ):
            # A heartbeat checks at the leader's `match_end` for us, unless that is below its
            # log start (`_send_append`); above it, we hold exactly that much, so our answer
            # would change nothing on the leader. Not sending it halves an idle shard's
            # messages (issue 6); to the leader it is an ack lost, which it must survive anyway.
            return
        self._ack(append, ok=True, log_end=self._match_end)

    def _refusal_hint(self, append: Append, first: Offset) -> Offset:
        """Where the leader should try next: below the refused point, and below every record
        of ours in an epoch above the leader's `prev_epoch` there (KIP-279: those cannot be
        in the leader's log at those offsets), so one round trip skips a whole epoch."""
        if first > self._log_end:
            return self._log_end
        ours = epoch_at(self._history, first - 1)
        if ours > append.prev_epoch:
            return Offset(
                min(first - 1, end_for_epoch(self._history, append.prev_epoch, self._log_end))
            )
        return Offset(first - 1)

    def _drop_below_log_start(self, append: Append) -> tuple[list[AppendBatch], Offset]:
        """The Append's batches from our log start on (below it everything is committed)."""
        first = append.first_offset
        if first >= self._log_start:
            return list(append.batches), first
        kept = [
            batch.slice(self._log_start, batch.end_offset)
            for batch in append.batches
            if batch.end_offset > self._log_start
        ]
        return kept, self._log_start

    def _matches(self, append: Append, first: Offset) -> bool:
        if first > self._log_end:
            return False
        if first == self._log_start or first <= self._hw:
            return True  # nothing retained before it, or a committed prefix (rule 2)
        return epoch_at(self._history, first - 1) == append.prev_epoch

    def _merge(self, batches: list[AppendBatch], first: Offset) -> None:
        """Writes the leader's batches at `first`, truncating from the first difference."""
        for batch in batches:
            if batch.end_offset <= self._log_end:
                differs = self._first_difference(batch)
                if differs is None:
                    continue
                self._truncate(differs)
                self._write(batch.slice(differs, batch.end_offset))
            elif batch.first_offset < self._log_end:
                differs = self._first_difference(batch.slice(batch.first_offset, self._log_end))
                if differs is None:
                    self._write(batch.slice(self._log_end, batch.end_offset))
                else:
                    self._truncate(differs)
                    self._write(batch.slice(differs, batch.end_offset))
            else:
                assert batch.first_offset == self._log_end, (batch.first_offset, self._log_end)
                self._write(batch)
        del first

    def _first_difference(self, batch: AppendBatch) -> Offset | None:
        """The first offset of `batch` (within our log) whose epoch differs from ours."""
        start, end = batch.first_offset, batch.end_offset
        assert end <= self._log_end
        if epoch_at(self._history, start) != batch.epoch:
            return start
        if epoch_at(self._history, end - 1) == batch.epoch:
            return None  # epochs are monotone along a log: equal at both ends, equal between
        for _, entry_start in self._history:
            if start < entry_start < end:
                return entry_start
        raise AssertionError((batch, self._history))

    def _on_ack(self, ack: AppendAck, now_ms: int) -> None:
        if self._role is not Role.LEADER:
            return
        if ack.promised_epoch > self._epoch:
            # A newer epoch was promised: we are fenced. Promising it too (Raft's term update)
            # shows it in statistics(), which the controller's failure detector reads.
            self._raise_promise(ack.promised_epoch)
            self._step_down()
            return
        progress = self._progress.get(ack.sender)
        if ack.epoch != self._epoch or progress is None:
            return
        progress.counts = not ack.rejoining
        if ack.rejoining and ack.log_end < progress.match_end:
            # It lost its disk since it acknowledged more: start again from what it holds (it
            # does not count towards the HW, which therefore never goes back).
            progress.match_end = ack.log_end
            progress.next_offset = Offset(max(ack.log_end, self._log_start))
            progress.inflight.clear()
            progress.read = None
        if ack.ok:
            assert ack.log_end <= self._log_end, (ack, self._log_end)
            progress.match_end = Offset(max(progress.match_end, ack.log_end))
            progress.next_offset = Offset(max(progress.next_offset, progress.match_end))
            while progress.inflight and progress.inflight[0][0] <= progress.match_end:
                progress.inflight.popleft()
            self._advance_hw()
        else:
            # The logs differ before the refused Append (KIP-101): go back by epoch.
            back = min(
                end_for_epoch(self._history, ack.last_epoch, self._log_end),
                ack.log_end,
                self._log_end,
            )
            # Only ever back: refusals of pipelined Appends arrive late and out of order.
            progress.next_offset = Offset(max(min(progress.next_offset, back), progress.match_end))
            progress.inflight.clear()
            progress.read = None
        self._send_appends(now_ms)

    # --- Leader ---------------------------------------------------------------------------

    def _become_leader(self, now_ms: int) -> None:
        assert self._promised_epoch == self._epoch
        self._role = Role.LEADER
        # Optimistically at our end before the marker, so the marker is the first thing sent.
        self._progress = {
            node: _Progress(next_offset=self._log_end, match_end=Offset(0))
            for node in self._replicas
            if node != self.node_id
        }
        self._tail.clear()
        self._tail_bytes = 0
        self._uncommitted.clear()
        self._uncommitted_bytes = 0
        if self._last_epoch() < self._epoch:
            marker = epoch_marker(
                self.shard_uid,
                epoch=self._epoch,
                version=self._batch_format,
                offset=self._log_end,
                arrival_ms=max(now_ms, self._last_arrival_ms),
            )
            self._write(marker)
        self._lead_start_end = self._log_end

    def _step_down(self) -> None:
        if self._role is Role.LEADER:
            self._abandoned = True
        self._role = Role.FOLLOWER
        self._progress = {}
        self._tail.clear()
        self._tail_bytes = 0
        self._uncommitted.clear()
        self._uncommitted_bytes = 0

    def _advance_hw(self) -> None:
        """Rule 3: the majority-held durable end, once above our epoch's start."""
        assert self._role is Role.LEADER
        ends = sorted(
            [self._stable_end]
            + [
                self._progress[node].match_end
                for node in self._replicas
                if node in self._progress and self._progress[node].counts
            ],
            reverse=True,
        )
        majority = len(self._replicas) // 2 + 1
        if len(ends) < majority:
            return
        # Within our own durable log (rule 3): our Appends go out before our write is
        # durable, so the followers' durable ends may pass ours.
        candidate = min(ends[majority - 1], self._stable_end)
        if candidate <= self._epoch_start():
            return  # only a record of our own epoch commits (the Figure 8 rule)
        self._set_hw(candidate)
        while self._uncommitted and self._uncommitted[0][0] <= self._hw:
            self._uncommitted_bytes -= self._uncommitted.popleft()[1]
        self._drop_acknowledged_tail()

    def _epoch_start(self) -> Offset:
        for epoch, start in reversed(self._history):
            if epoch == self._epoch:
                return start
        raise AssertionError((self._epoch, self._history))

    def _send_appends(self, now_ms: int) -> None:
        if self._role is not Role.LEADER:
            return
        for node, progress in self._progress.items():
            idle = (
                not progress.inflight
                and progress.match_end >= self._log_end
                and progress.sent_hw_and_start == (self._hw, self._log_start)
            )
            interval_ms = self._knobs.idle_heartbeat_ms if idle else self._knobs.heartbeat_ms
            heartbeat_due = now_ms - progress.last_sent_ms >= interval_ms
            # Below our log start only trimmed (committed) records: the follower matches at our
            # start, or drops its log and restarts there (rule 5).
            progress.next_offset = Offset(max(progress.next_offset, self._log_start))
            inflight_max = self._knobs.inflight_appends_max
            while progress.read is None and len(progress.inflight) < inflight_max:
                if progress.next_offset >= self._log_end:
                    if heartbeat_due:
                        self._send_append(node, progress, (), now_ms)
                    break
                batches = self._batches_from_tail(progress.next_offset)
                if batches is None:
                    self._request_read(node, progress, now_ms)
                    break
                self._send_append(node, progress, batches, now_ms)
                heartbeat_due = False

    def _send_append(
        self,
        node: NodeId,
        progress: _Progress,
        batches: tuple[AppendBatch, ...],
        now_ms: int,
    ) -> None:
        first = batches[0].first_offset if batches else progress.next_offset
        if not batches:
            # A heartbeat checks at what the follower is known to hold, so it never opens a gap.
            first = Offset(max(min(progress.match_end, self._log_end), self._log_start))
        append = Append(
            shard_uid=self.shard_uid,
            epoch=self._epoch,
            leader=self.node_id,
            first_offset=first,
            prev_epoch=epoch_at(self._history, first - 1),
            batches=batches,
            leader_hw=self._hw,
            leader_log_start=self._log_start,
        )
        self._to_send.append(Envelope(to=node, message=append))
        progress.last_sent_ms = now_ms
        progress.sent_hw_and_start = (self._hw, self._log_start)
        if batches:
            progress.inflight.append((append.end_offset, now_ms))
            progress.next_offset = append.end_offset

    def _batches_from_tail(self, start: Offset) -> tuple[AppendBatch, ...] | None:
        """Batches from `start` within the Append byte bound, or None if not cached."""
        if not self._tail or self._tail[0].first_offset > start:
            return None
        index = bisect.bisect_right(self._tail, start, key=lambda b: b.first_offset) - 1
        taken: list[AppendBatch] = []
        size = 0
        for batch in itertools.islice(self._tail, index, None):
            piece = batch.slice(start, batch.end_offset) if not taken else batch
            piece_bytes = piece.size_bytes
            if taken and size + piece_bytes > self._knobs.append_bytes_max:
                break
            taken.append(piece)
            size += piece_bytes
        return tuple(taken)

    def _request_read(self, node: NodeId, progress: _Progress, now_ms: int) -> None:
        start = progress.next_offset
        end = self._tail[0].first_offset if self._tail else self._log_end
        assert self._log_start <= start < end, (start, self._log_start, end)
        request = ReadRequest(
            shard_uid=self.shard_uid,
            peer=node,
            start_offset=start,
            end_offset=end,
            bytes_max=min(self._knobs.read_bytes_max, self._knobs.append_bytes_max),
        )
        progress.read = request
        progress.read_ms = now_ms
        self._reads.append(request)

    def _drop_acknowledged_tail(self) -> None:
        """Keeps in the tail cache only what some follower still needs (and within bounds)."""
        needed = min(
            (progress.match_end for progress in self._progress.values()), default=self._log_end
        )
        while self._tail and (
            self._tail[0].end_offset <= needed
            or self._tail_bytes > self._knobs.tail_cache_bytes_max
        ):
            self._tail_bytes -= self._tail.popleft().size_bytes

    # --- The log --------------------------------------------------------------------------

    def _write(self, batch: AppendBatch) -> None:
        assert batch.first_offset == self._log_end, (batch.first_offset, self._log_end)
        extend_history(self._history, batch)
        self._appends.append(batch)
        self._log_end = batch.end_offset
        self._last_arrival_ms = max(self._last_arrival_ms, batch.arrival_ms)
        if self._role is Role.LEADER:
            self._tail.append(batch)
            self._tail_bytes += batch.size_bytes
            if self._tail_bytes > self._knobs.tail_cache_bytes_max:
                self._drop_acknowledged_tail()

    def _truncate(self, offset: Offset) -> None:
        """Drops our log from `offset`; never committed records (rule 2)."""
        assert self._role is Role.FOLLOWER
        assert offset >= self._hw, ("truncating committed records", offset, self._hw)
        assert self._log_start <= offset < self._log_end, (offset, self._log_start, self._log_end)
        if self._reset_to is not None:
            base_end = self._reset_to
        elif self._truncate_from is not None:
            base_end = self._truncate_from
        else:
            base_end = self._submitted.log_end
        if offset < base_end:
            assert self._reset_to is None
            self._truncate_from = (
                offset if self._truncate_from is None else min(self._truncate_from, offset)
            )
            self._appends = []
        else:
            self._appends = [
                batch.slice(batch.first_offset, offset) if batch.end_offset > offset else batch
                for batch in self._appends
                if batch.first_offset < offset
            ]
        self._history = cut_history(self._history, offset)
        self._log_end = offset
        self._match_end = Offset(min(self._match_end, offset))
        self._note_cut(offset)

    def _reset(self, offset: Offset) -> None:
        assert self._role is Role.FOLLOWER
        assert offset >= self._log_start
        assert offset > self._hw, (offset, self._hw)
        self._reset_to = offset
        self._truncate_from = None
        self._appends = []
        self._history = []
        self._log_start = offset
        self._log_end = offset
        self._match_end = offset
        self._note_cut(offset)

    def _note_cut(self, offset: Offset) -> None:
        self._stable_end = Offset(min(self._stable_end, offset))
        for entry in self._outstanding:
            if entry.cut is None or offset < entry.cut:
                entry.cut = offset

    def _raise_promise(self, epoch: int) -> None:
        assert epoch >= self._promised_epoch
        self._promised_epoch = epoch

    def _last_epoch(self) -> int:
        return self._history[-1][0] if self._history else 0

    def _set_hw(self, hw: Offset) -> None:
        if hw <= self._hw:
            return
        assert hw <= self._stable_end, (hw, self._stable_end)
        self._hw = hw

    def _advance_follower_hw(self) -> None:
        if self._follow_epoch == 0:
            return
        # Known to equal the leader's log, committed there, and durable here.
        candidate = min(self._leader_hw, self._match_end, self._stable_end)
        self._set_hw(Offset(candidate))
        if (
            self._recovering
            and self._hw == self._leader_hw
            and self._hw > 0
            and epoch_at(self._history, self._hw - 1) == self._follow_epoch
        ):
            # Our log now holds the leader's whole committed prefix, so every record ever
            # committed (the leader's HW lies above its epoch start: Raft's commit rule).
            self._recovering = False
            self._end_rejoin_if_done()

    def _end_rejoin_if_done(self) -> None:
        """A rejoining replica that caught up counts again from the first epoch above its
        floor (module docstring)."""
        floor = self._rejoin_floor
        if floor is not None and not self._recovering and self._epoch > floor:
            self._rejoin_floor = None

    def _rejoining_in(self, epoch: int) -> bool:
        """Whether our acknowledgement must not count for a leader of `epoch`: one of an epoch
        at or below the floor (module docstring). A leader of a later epoch counts it even
        while we still copy the log: what we acknowledge is its log, durably, and we promise
        nothing until caught up, so the acknowledgement can only help commit. Counting it only
        once caught up deadlocked a set of two whose leader lost its disk: the survivor, chosen
        by the controller's current-epoch rule, could not commit its epoch's marker without
        us, and we stop copying only once a record of its epoch is committed."""
        return self._rejoin_floor is not None and epoch <= self._rejoin_floor

    def _ack(self, append: Append, *, ok: bool, log_end: Offset) -> None:
        ack = AppendAck(
            shard_uid=self.shard_uid,
            epoch=append.epoch,
            sender=self.node_id,
            ok=ok,
            log_end=log_end,
            last_epoch=epoch_at(self._history, log_end - 1),
            promised_epoch=self._promised_epoch,
            rejoining=self._rejoining_in(append.epoch),
        )
        self._to_send.append(Envelope(to=append.leader, message=ack))
