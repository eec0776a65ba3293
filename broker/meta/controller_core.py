"""The controller's pure core: what to do about nodes and shard placement (0002, DESIGN §3-§4).

`ControllerCore` is fed node heartbeats `(node_id, incarnation, now_ms)`, the current image and
the outcome of its previous actions; `decide(image, now_ms)` returns what to do: fence or
unfence nodes, change shard epochs (leader changes, replica moves, rebalancing), complete
reshards. No I/O, no clock: `now_ms` is the observer's monotonic clock. The async shell that
executes the actions is `meta/controller.py` (the etcd-raft shape, STYLE B.1 #2); this module
also holds the values both sides share: the settings, the actions and outcomes, and a
replica's `Promise` and `ReplicaStatus` with the pure rules over them (`choose_leader`,
`is_caught_up`).

A pass probes late nodes every `pass_interval_ms`, but runs `decide` (a walk over every
shard) only when `ControllerCore.needs_decision` says its answer can have changed: a new
image, an input that matters (a new session, incarnation or shutdown, life after a silence, a
refused probe, an outcome), the last decision having acted, or a deadline (a session running
out, a backoff ending), and every `full_pass_interval_ms` regardless. On an idle cluster of
1,000 shards that is one walk every 2 s instead of ten a second (issue 6); a crash is still
acted on at the pass that learns of it.

Decisions, in the order `decide` makes them:
1. Fencing (KIP-631): an ACTIVE or DRAINING node not heard from for `node_session_timeout_ms`
   is FENCED; a FENCED node that heartbeats again with the image's incarnation is ACTIVE
   again. A node that is merely late (silent for `probe_after_ms`) is probed: if its API port
   refuses TCP connections (ECONNREFUSED: no process listens there; a crashed node) and it
   stays silent, it is fenced at once instead of at the end of its session. A paused or
   cut-off node accepts or drops connections rather than refusing them, so only a dead
   process gets this fast path; everything else waits for the session timeout. Heartbeat
   arrival is recorded at once (`on_heartbeat`), before any other work, so an
   overloaded controller does not fence live nodes (KAFKA-15019), and time the controller's
   own loop stalled is nobody's silence (`on_stall`). A newly elected controller heard
   nobody yet: every node gets a fresh session from the moment the core was created.
2. Leader changes: a shard whose leader is missing, FENCED, REMOVED, DRAINING or shutting
   down gets a new epoch led by the best replica (`choose_leader`).
3. Replica moves off leaving nodes: add a replacement (one more replica, epoch + 1), wait
   until the replacement has caught up, then drop the leaving node (epoch + 1). One node in
   or out per epoch, as the state machine requires. A node is leaving when it is DRAINING
   (an operator's decommission), or FENCED and silent for `absent_node_replace_after_ms`:
   gone for good as far as anyone can tell (a StatefulSet scaled down, a host lost), so its
   shards get their replication factor back on the others. A shard with more replicas than
   its factor and no leaving replica (a balancing move's second half, a merge child of a
   parent caught mid-move) drops the replica on the most loaded node.
4. Reshard completion: once every sealed parent has a live leader, ask each to seal and
   propose CompleteReshard with the final record counts.
5. Rebalancing: the preferred leader is the first replica; leadership moves back to it when
   it is ACTIVE and caught up. Then leaders are evened out across the nodes that can lead
   (within one, where the replica sets allow) by making another replica preferred.
6. Replica balancing: while one ACTIVE node holds at least two replicas (of open shards)
   fewer than another, a shard with a replica on the fuller node gets one on the emptier
   (the first half of a move; step 3's surplus rule is the second), at most
   `replica_moves_max` shards at a time. A node that joins (a StatefulSet scaled up) so
   takes its share of the existing shards, as Redpanda's default node_add balancing does.
7. Removal: a non-voting node FENCED for `absent_node_replace_after_ms` that holds no replica
   any more is REMOVED from the metadata (if it comes back it registers again, empty).
8. Metadata format (`metadata_format.py`): once every registered node (REMOVED ones aside)
   has told this controller, from its current incarnation, that it reads a higher format
   than the cluster's, the format is raised to the highest all of them read (at most
   `metadata_format_limit`). A node not heard yet, or a binary that does not say (before the
   negotiation), holds it: a rolling upgrade raises it when its last node restarts.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.meta.image import (
    FIRST_SHARD_EPOCH,
    MetadataImage,
    NodeMeta,
    NodeState,
    ShardMeta,
    ShardState,
    StreamMeta,
)
from broker.meta.metadata_format import FIRST_FORMAT, METADATA_FORMAT_MAX
from broker.meta.placement import NodeLoads, node_loads
from broker.types import NodeId, Offset, ShardIndex, ShardUid, StreamName, StreamUid

# --- Settings -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    """Timing and bounds. Built from `config.Knobs` by the node; tests shorten them."""

    # A node not heard from for this long is fenced. Several heartbeat intervals (the node
    # side sends every `node_heartbeat_interval_ms`, 1 s by default), and above the metadata
    # quorum's own election time, so a quorum leader change does not fence everyone.
    node_session_timeout_ms: int = 6_000
    pass_interval_ms: int = 500  # a pass every this often while nothing happens
    replica_rpc_timeout_ms: int = 2_000  # one Prepare, seal or status call
    propose_timeout_ms: int = 5_000  # one metadata command
    actions_per_pass_max: int = 256  # shard actions; node actions are few and always run
    concurrent_actions_max: int = 32  # shard actions executing at once
    rebalance_moves_per_pass_max: int = 16  # leadership moves made only to even out leaders
    retry_backoff_ms_min: int = 100
    retry_backoff_ms_max: int = 5_000
    stream_updating_ms: int = 200  # CompleteReshard's UPDATING time (Knobs.stream_updating_ms)
    # A node silent this long is probed (`ReplicaControl.refuses_connections`); 0: never.
    probe_after_ms: int = 500
    # A pass decides only when something it depends on may have changed (`needs_decision`),
    # and at least this often regardless: the safety net, and the bound on how late the
    # image's wall-clock views (a deleted stream gone, a closed shard expired) are noticed.
    full_pass_interval_ms: int = 2_000
    # A FENCED node silent this long is treated as gone: its replicas move to other nodes and,
    # unless it votes in the metadata quorum, it is then REMOVED. 0: never (only an operator's
    # decommission moves replicas). Counted from this controller's start at most.
    absent_node_replace_after_ms: int = 0
    # Replica balancing moves (one shard each: add a replica, catch it up, drop one) in flight
    # at once; each copies a shard's log to another node. 0: no replica balancing.
    replica_moves_max: int = 2
    # The highest metadata format the controller raises the cluster to; 0: the highest every
    # node reads. Held lower during an upgrade, a rollback to the older binary stays possible.
    metadata_format_limit: int = 0

    def validate(self) -> None:
        assert self.node_session_timeout_ms > 0
        assert self.pass_interval_ms > 0
        assert self.node_session_timeout_ms > self.pass_interval_ms
        assert self.replica_rpc_timeout_ms > 0
        assert self.propose_timeout_ms > 0
        assert self.actions_per_pass_max > 0
        assert self.concurrent_actions_max > 0
        assert self.rebalance_moves_per_pass_max >= 0
        assert 0 < self.retry_backoff_ms_min <= self.retry_backoff_ms_max
        assert 0 <= self.probe_after_ms < self.node_session_timeout_ms
        assert self.full_pass_interval_ms > 0  # below pass_interval_ms: every pass decides
        assert self.absent_node_replace_after_ms == 0 or (
            self.absent_node_replace_after_ms > self.node_session_timeout_ms
        ), "a node is replaced only after it was fenced"
        assert self.replica_moves_max >= 0
        assert self.metadata_format_limit == 0 or (
            FIRST_FORMAT <= self.metadata_format_limit <= METADATA_FORMAT_MAX
        ), f"metadata_format_limit: 0 or {FIRST_FORMAT}-{METADATA_FORMAT_MAX}"


# --- ReplicaControl: the seam to the shard replicas ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Promise:
    """A replica's answer to Prepare(epoch): `ok` if it promised (its promised epoch is now at
    least `epoch`, durably); otherwise `promised_epoch` is the higher one it had promised."""

    ok: bool
    last_epoch: int  # the epoch of its last record (0 for an empty log)
    log_end: Offset
    promised_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStatus:
    """A replica's log as it stands (no side effects)."""

    log_end: Offset
    hw: Offset  # the high watermark it knows
    last_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RejoiningReplica:
    """A replica its node lost with its disk and that has not rejoined yet, as the node's
    heartbeats report it (replica.py, "lost its disk")."""

    shard_uid: ShardUid
    epoch: int  # the shard epoch of the image the replica is configured with
    caught_up: bool  # False: still copying the log (it may not lead); True: waits for an epoch


# --- Actions (the core's output) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardRef:
    stream_name: StreamName
    stream_uid: StreamUid
    shard_index: ShardIndex
    shard_uid: ShardUid


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceNode:
    node_id: NodeId
    incarnation: int
    silent_ms: int  # how long the node had not been heard from


@dataclass(frozen=True, slots=True, kw_only=True)
class UnfenceNode:
    node_id: NodeId
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveAbsentNode:
    """RemoveNode for a non-voting node gone for `absent_node_replace_after_ms` whose
    replicas have all moved elsewhere."""

    node_id: NodeId
    silent_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochChange:
    """Leader change and/or replica-set change of one shard, through Prepare.

    `eligible`: who may lead, in preference order (the state machine accepts ACTIVE and
    DRAINING leaders; the controller lists DRAINING ones last, for safety only: a leaving
    node holding the only complete log must lead until the others caught up).
    `caught_up`: replicas that must have caught up with the current leader before anything
    is sent (a replica move's last step, a rebalance); if they have not, nothing happens."""

    shard: ShardRef
    epoch: int  # the shard's current epoch: Prepare(epoch + 1), expected_epoch=epoch
    leader: NodeId | None  # the current leader
    replicas: tuple[NodeId, ...]
    new_replicas: tuple[NodeId, ...]
    eligible: tuple[NodeId, ...]
    caught_up: tuple[NodeId, ...]
    # leader_unavailable, leader_leaving, add_replica, remove_replica, preferred, balance,
    # balance_replicas (the first half of a replica balancing move), remove_surplus
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedParent:
    index: ShardIndex
    shard_uid: ShardUid
    leader: NodeId
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteReshardAction:
    stream_name: StreamName
    stream_uid: StreamUid
    parents: tuple[SealedParent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RaiseMetadataFormat:
    """SetMetadataFormat(level): every registered node said it reads `level`."""

    level: int


NodeAction = FenceNode | UnfenceNode | RemoveAbsentNode | RaiseMetadataFormat
ShardAction = EpochChange | CompleteReshardAction
Action = NodeAction | ShardAction


class Outcome:
    """How an action ended, as the shell reports it to the core."""

    DONE = "done"  # applied: the next image shows it
    NOT_READY = "not_ready"  # waiting on a replica (catch-up, seal): ask again later
    FAILED = "failed"  # an error: back off


# --- Pure decisions ----------------------------------------------------------------------------


def choose_leader(
    promises: Mapping[NodeId, Promise],
    *,
    replicas: Sequence[NodeId],
    new_replicas: Sequence[NodeId],
    eligible: Sequence[NodeId],
    epoch: int | None = None,
    leader: NodeId | None = None,
) -> NodeId | None:
    """The new leader given the promises gathered, or None when it cannot be chosen safely.

    Safe means: every record acknowledged so far is held by the chosen replica, and the old
    leader can acknowledge no more. The chosen replica holds the highest (last_epoch,
    log_end) among the promisers (Raft's election restriction); when only ineligible replicas
    hold it, nobody is chosen: waiting is safe, a shorter log is not. The promisers must be:

    - a majority of the old set `replicas` (it intersects every earlier epoch's commit
      quorum, as sets change one member at a time and each change starts only once, with
      the leader, half the new set holds the leader's log: `_holders_before_change`; one
      member at a time alone is not enough, see there), or, when `epoch` (the shard's current
      epoch, whose set is `replicas`) is given, `_current_epoch_quorum`: half of an even set
      whose best log holds a record of `epoch`, or any half while `epoch` is the shard's first
      (a two-replica set left by a dropped replica whose other member then stopped for good,
      or created on two nodes whose leader died at once, otherwise waited for it forever);
      or, when `epoch` and `leader` (the image's leader of `epoch`) are given,
      `_pair_leader_alone`: in a set of two, that leader alone (a set of two whose other
      member is rejoining after a lost disk, and can catch up only from a leader, otherwise
      had none again once that leader promised an epoch whose change then failed);
    - and, unless the change only adds a replica, a majority of the new set. Adding one (the
      new set contains the old) needs only the old set, as DESIGN §4 says: that fences the
      old leader and holds every acknowledged record, and the newcomer (which hosts nothing
      to promise about yet) counts only for later commits."""
    assert replicas
    assert new_replicas
    promised = {node_id: p for node_id, p in promises.items() if p.ok}
    if not promised:
        return None
    best = max((p.last_epoch, p.log_end) for p in promised.values())
    if not (
        _majority(promised, replicas)
        or _current_epoch_quorum(promised, replicas, epoch=epoch, best_epoch=best[0])
        or _pair_leader_alone(promised, replicas, epoch=epoch, leader=leader)
    ):
        return None
    if not set(new_replicas) >= set(replicas) and not _majority(promised, new_replicas):
        return None
    for node_id in eligible:
        promise = promised.get(node_id)
        if promise is None or node_id not in new_replicas:
            continue
        if (promise.last_epoch, promise.log_end) == best:
            return node_id
    return None


def choose_leader_once_answered(
    promises: Mapping[NodeId, Promise], action: EpochChange
) -> NodeId | None:
    """`choose_leader` for `action` once every replica it prepared answered or failed (the
    shell's second try, `Controller._prepare`): with the current epoch and its leader, so the
    rules for fewer than a majority (`_current_epoch_quorum`, `_pair_leader_alone`) apply."""
    return choose_leader(
        promises,
        replicas=action.replicas,
        new_replicas=action.new_replicas,
        eligible=action.eligible,
        epoch=action.epoch,
        leader=action.leader,
    )


def _majority(promised: Mapping[NodeId, Promise], group: Sequence[NodeId]) -> bool:
    return sum(1 for node_id in group if node_id in promised) > len(group) // 2


def _current_epoch_quorum(
    promised: Mapping[NodeId, Promise],
    replicas: Sequence[NodeId],
    *,
    epoch: int | None,
    best_epoch: int,
) -> bool:
    """Promisers that hold everything committed although they are no majority: at least
    half of the set (`len - len // 2`), whose best log holds a record of the current epoch,
    or of no epoch at all while the current one is the shard's first (FIRST_SHARD_EPOCH).

    Why no acknowledged record is lost (Flexible Paxos: the quorum that elects must meet
    every quorum that commits, not every other electing one):
    - A record of the current epoch was acknowledged once a majority of `replicas` held it
      (the leader counts acknowledgements only from this set, only above its epoch-start
      batch). Every majority meets any half of the set (a majority is more than half), so
      a promiser holds it; logs of one epoch are prefixes of its leader's log, so the
      longest promiser log of the current epoch holds every such record.
    - A record acknowledged in an earlier epoch is in the current leader's log before its
      epoch-start batch (that leader was chosen by this same rule, inductively). A replica
      holding a record of the current epoch took the leader's log up to it, so it holds
      every earlier acknowledged record too. Hence the best log must be of the current
      epoch; if no promiser has one, nothing proves what the others held, and the choice
      waits for a majority.
    - In the shard's first epoch there is no earlier epoch: the set is the one the shard was
      created with (every set change raises the epoch), its logs started empty (a new shard
      uid: a new stream's shard or a reshard's child), so every acknowledged record is of
      this epoch, and by the first point a promiser holds it. A promiser with no record of
      the epoch then proves that nothing was acknowledged: a set of two created while only
      two nodes were ACTIVE, whose leader died before its first batch reached the other,
      otherwise had no leader until the dead node returned. A replica that forgot its log
      (a lost disk) does not promise until it caught up (replica.py, "lost its disk"; its
      node marks every shard of an image read after it registered, which holds every shard
      it could have acknowledged for), so an empty promiser is one that never acknowledged.
    - The old leader is fenced: every majority it could still count meets the promisers,
      which refuse its epoch now.
    - Two leaders for one epoch: the leader is only set by SetShardLeader's compare-and-set
      on the epoch, so one choice of all those made at an epoch wins.
    For an odd set, half rounded up is already a majority: this only helps even sets, the
    ones a replica change passes through (one short of a factor of 3, or one over it)."""
    if epoch is None or (best_epoch != epoch and epoch != FIRST_SHARD_EPOCH):
        return False
    return (
        sum(1 for node_id in replicas if node_id in promised) >= len(replicas) - len(replicas) // 2
    )


def _pair_leader_alone(
    promised: Mapping[NodeId, Promise],
    replicas: Sequence[NodeId],
    *,
    epoch: int | None,
    leader: NodeId | None,
) -> bool:
    """In a set of two, the promise of the current epoch's leader alone: it holds every
    acknowledged record, whatever its log's last epoch (the current-epoch rule wants a record
    of `epoch`, which a leader that has not written its epoch's marker yet lacks).

    Why no acknowledged record is lost (`leader` is the leader the image names for `epoch`,
    `replicas` the set it counts acknowledgements from; the choice only takes effect if
    SetShardLeader's compare-and-set finds the shard still at `epoch`, so both were the
    shard's when it is applied):
    - A record acknowledged in `epoch` was acknowledged by `leader`, the only replica that
      leads in it (the image names one leader per epoch). Its HW counts its own log only up
      to its durable end (replica.py rule 3) and needs a majority of two: both members, so
      the record was durable in `leader`'s log. Nothing has removed it since: as leader it only
      appends; once it promised a later epoch it takes Appends only from a leader of a later
      epoch, and none exists while the shard is at `epoch`; a crash loses only writes not yet
      durable; and after a lost disk it promises nothing until it has caught up from a
      leader, which gives it every committed record again (replica.py, "lost its disk"). Had
      it lost its disk while leading `epoch`, that leader would have to be of `epoch` or
      later (its floor: the image it read after the loss named it leader of `epoch`), and
      there is none but itself, which does not lead while recovering: it never promises.
    - A record acknowledged in an earlier epoch was in `leader`'s log when it was chosen for
      `epoch` (by these same rules, inductively; a promise is sent only once the log it
      describes is durable), and nothing has removed it since, as above. No earlier leader
      acknowledges more: the quorum that chose `leader` fenced it.
    - The old leader is fenced: it is `leader` itself, and it promised the new epoch.
    - One leader for the new epoch: SetShardLeader's compare-and-set on the epoch.
    The new set's majority then needs no exception: `leader` must be in the new set, which,
    one member in or out, is `leader` alone, the same two, or three (an add, whose new set
    is not needed).

    Only for a set of two, where one member down or rejoining already leaves no majority.
    (Rule 3 makes every commit need its leader's durable log in a set of any size, so the
    records' argument would hold in a larger set too; but a set of three without a majority
    of promises has two members down or rejoining, two failures, more than it tolerates.)
    Only once every replica answered or failed (`Controller._prepare`), as the current-epoch
    rule: the other member, if it answers, has its log counted by the majority rule."""
    if epoch is None or leader is None or len(replicas) != 2:
        return False
    return leader in replicas and leader in promised


def stranded_by_leaving(image: MetadataImage, node_id: NodeId, *, wall_ms: int) -> tuple[str, ...]:
    """The shards ("stream/shard id") whose other ACTIVE replicas would not be a majority of
    the replica set once `node_id` stops, while the controller is still repairing that set
    (below its replication factor, or holding a replica on a node that is not ACTIVE).

    A leader change needs promises from a majority of the set (`choose_leader`), so such a
    shard could not get a leader again until `node_id` came back: a two-replica set left by
    the removal of a fenced replica, whose other member then stops for good (a StatefulSet
    scaled down), waited for it forever (`controller_leader_not_chosen ... re_prepare`). A
    node stopping on SIGTERM therefore waits, bounded, until the controller has added the
    replacement (`Node.drain_for_shutdown`). A set the controller is not changing (a stream
    of replication factor 1 or 2 on healthy nodes), or cannot change (no ACTIVE node outside
    the set to take a replica), is not waited for: nothing would change."""
    stranded = []
    active_nodes = {n.node_id for n in image.nodes.values() if n.state is NodeState.ACTIVE}
    for stream in image.streams.values():
        if stream.is_gone(now_ms=wall_ms):
            continue
        for shard in stream.shards:
            replicas = shard.replicas
            if node_id not in replicas or len(replicas) < 2 or shard.state is ShardState.CLOSED:
                continue
            active = [
                n for n in replicas if n in image.nodes and image.nodes[n].state is NodeState.ACTIVE
            ]
            repairing = len(replicas) < stream.replication_factor or len(active) < len(replicas)
            spare = bool(active_nodes - set(replicas))  # a node the replacement could go to
            others = sum(1 for n in active if n != node_id)
            if repairing and spare and others <= len(replicas) // 2:
                stranded.append(f"{stream.name}/{shard.shard_id}")
    return tuple(stranded)


def is_caught_up(leader: ReplicaStatus, replica: ReplicaStatus) -> bool:
    """The replica holds everything the leader has committed, in the leader's epoch."""
    return replica.last_epoch == leader.last_epoch and replica.log_end >= leader.hw


def statuses_caught_up(
    action: EpochChange, leader: ReplicaStatus | None, others: Sequence[ReplicaStatus | None]
) -> bool:
    """Whether `action` may go ahead: its `caught_up` replicas (`others`, in that order)
    answered and each holds the leader's log (`is_caught_up`), and the leader has begun the
    shard's current epoch (its last record, the epoch's marker, is of that epoch). Before
    its marker a leader's HW may trail what earlier epochs committed, and a replica whose
    last epoch is the same older one could lack records committed beyond that HW; a replica
    holding the marker holds the leader's whole log before it (log matching)."""
    if not action.caught_up:
        return True
    if leader is None or leader.last_epoch != action.epoch:
        return False
    return all(status is not None and is_caught_up(leader, status) for status in others)


@dataclass(slots=True)
class _Session:
    incarnation: int
    heard_ms: int
    shutting_down: bool
    rejoining: Mapping[ShardUid, RejoiningReplica]
    disk_full: bool = False
    fenced: Mapping[ShardUid, int] = dataclasses.field(default_factory=dict)  # uid -> epoch
    metadata_format_max: int = FIRST_FORMAT  # the highest its binary reads


@dataclass(frozen=True, slots=True)
class _Refusal:
    incarnation: int
    at_ms: int


@dataclass(slots=True)
class _Backoff:
    not_before_ms: int
    delay_ms: int


class ControllerCore:
    """The controller's decisions; pure. One instance per controller term: create a new one
    when this node becomes the quorum leader (its creation time starts every node's grace).

    Not thread-safe; the shell calls it from one task."""

    def __init__(self, *, settings: ControllerSettings, now_ms: int) -> None:
        settings.validate()
        self.settings = settings
        self.started_ms = now_ms
        self._sessions: dict[NodeId, _Session] = {}
        self._backoff: dict[ShardUid | StreamUid | NodeId, _Backoff] = {}
        # (Integration, issue 4.) Shards whose epoch change failed after its Prepare went out:
        # their replicas promised an epoch the image never reached, so the image's leader is
        # fenced even if its node is healthy again. They need an epoch change until the image
        # passes that epoch, whatever triggered the first attempt.
        self._prepared: dict[ShardUid, int] = {}
        # Nodes whose API port refused connections, by the incarnation probed and when (the
        # proof counts only while no heartbeat of that incarnation arrived after it).
        self._refused: dict[NodeId, _Refusal] = {}
        self._probed_ms: dict[NodeId, int] = {}
        # When `decide` must run again (`needs_decision`): the image it last decided on, an
        # input that may change a decision since (`_changed`), and the earliest time a
        # decision can change by itself (a session deadline, a backoff's end, the full pass).
        self._decided_image: MetadataImage | None = None
        self._changed = True
        self._next_decision_ms = now_ms
        # When this controller first saw each node's current incarnation in an image, for
        # registrations after its first decision: a node that registers now is silent since
        # then, not since the controller started (it would be fenced, even taken for gone,
        # before its first heartbeat could arrive).
        self._incarnations: dict[NodeId, int] | None = None
        self._registered_ms: dict[NodeId, tuple[int, int]] = {}  # node -> (incarnation, ms)

    # Inputs.

    def on_heartbeat(
        self,
        *,
        node_id: NodeId,
        incarnation: int,
        now_ms: int,
        shutting_down: bool = False,
        rejoining: Sequence[RejoiningReplica] = (),
        disk_full: bool = False,
        fenced: Sequence[tuple[ShardUid, int]] = (),
        metadata_format_max: int = FIRST_FORMAT,
    ) -> None:
        """A node said it is alive, which of its replicas are still rejoining after it lost
        its disk, whether it is short of disk space (it then takes no new records, so it
        should lead nothing), and the highest metadata format it reads. An older incarnation
        than the one already heard is a stale process (or a delayed message) and is ignored."""
        session = self._sessions.get(node_id)
        if session is not None and incarnation < session.incarnation:
            return
        if session is not None:
            assert now_ms >= session.heard_ms or incarnation > session.incarnation
        # A routine heartbeat only moves the session's deadline (`_next_decision_at` reads
        # it); one that can change a decision is a new session or incarnation, a shutdown
        # announced or withdrawn, a voided refusal, or life after a silence long enough to
        # have been fenced for (an unfence).
        reported = {replica.shard_uid: replica for replica in rejoining}
        fenced_now = dict(fenced)
        if (
            session is None
            or session.incarnation != incarnation
            or session.shutting_down != shutting_down
            or now_ms - session.heard_ms > self.settings.node_session_timeout_ms
            or node_id in self._refused
            or session.rejoining != reported
            or session.disk_full != disk_full
            or session.fenced != fenced_now
            or session.metadata_format_max != metadata_format_max
        ):
            self._changed = True
        self._sessions[node_id] = _Session(
            incarnation=incarnation,
            heard_ms=now_ms,
            shutting_down=shutting_down,
            rejoining=reported,
            disk_full=disk_full,
            fenced=fenced_now,
            metadata_format_max=metadata_format_max,
        )
        self._refused.pop(node_id, None)

    def on_stall(self, *, stalled_ms: int, now_ms: int) -> None:
        """The shell's event loop ran `stalled_ms` late (its process starved of CPU, or
        blocked), ending at `now_ms`: that time is nobody's silence. Heartbeats sent meanwhile
        are still queued, and the first pass after a stall would otherwise fence every node
        at once (seen at load 40: four nodes fenced within 0.3 s, each "silent" 2.7 s, while
        the controller's own node, heard in-process, was not). Every session, and the grace
        of this controller's start and of new registrations, moves on by the stall (never
        past `now_ms`). A node that is really gone is still fenced once it has been silent
        for a session of the controller's own running time, and at once if its port refuses
        connections (a probe)."""
        assert stalled_ms >= 0
        self.started_ms = min(self.started_ms + stalled_ms, now_ms)
        for session in self._sessions.values():
            session.heard_ms = min(session.heard_ms + stalled_ms, now_ms)
        self._registered_ms = {
            node_id: (incarnation, min(at_ms + stalled_ms, now_ms))
            for node_id, (incarnation, at_ms) in self._registered_ms.items()
        }
        self._changed = True

    def nodes_to_probe(self, image: MetadataImage, *, now_ms: int) -> tuple[NodeId, ...]:
        """ACTIVE or DRAINING nodes silent for `probe_after_ms` (or not heard by this
        controller at all yet) with no refusal on record, each probed at most once per
        `probe_after_ms`. A new controller so finds a crashed node (often the old quorum
        leader) at once instead of after a whole session."""
        after_ms = self.settings.probe_after_ms
        if after_ms == 0:
            return ()
        due = []
        for node_id in sorted(image.nodes):
            node = image.nodes[node_id]
            if node.state not in (NodeState.ACTIVE, NodeState.DRAINING):
                continue
            if node_id in self._refused:
                continue
            if self._heard(node) and self.silent_ms(node, now_ms=now_ms) <= after_ms:
                continue  # heard lately (a new controller has heard nobody: probe them all)
            if now_ms - self._probed_ms.get(node_id, now_ms - after_ms) < after_ms:
                continue
            due.append(node_id)
        return tuple(due)

    def on_probe(
        self, image: MetadataImage, node_id: NodeId, *, refused: bool, now_ms: int
    ) -> None:
        """The outcome of probing `node_id` (as `nodes_to_probe` named it) at `now_ms`."""
        self._probed_ms[node_id] = now_ms
        node = image.nodes.get(node_id)
        if refused and node is not None:
            self._refused[node_id] = _Refusal(incarnation=node.incarnation, at_ms=now_ms)
            self._changed = True

    def on_outcome(self, action: Action, outcome: str, *, now_ms: int) -> None:
        """The shell's report on an action `decide` returned."""
        self._changed = True
        key = _action_key(action)
        if isinstance(action, EpochChange) and outcome == Outcome.FAILED:
            # FAILED comes only after the Prepares were sent (see Controller._change_epoch).
            uid = action.shard.shard_uid
            self._prepared[uid] = max(self._prepared.get(uid, 0), action.epoch + 1)
        if outcome == Outcome.DONE:
            self._backoff.pop(key, None)
            return
        previous = self._backoff.get(key)
        delay_ms = (
            self.settings.retry_backoff_ms_min
            if previous is None
            else min(previous.delay_ms * 2, self.settings.retry_backoff_ms_max)
        )
        self._backoff[key] = _Backoff(not_before_ms=now_ms + delay_ms, delay_ms=delay_ms)

    # Views.

    def silent_ms(self, node: NodeMeta, *, now_ms: int) -> int:
        """How long `node` (this incarnation or a newer one) has not been heard from, counting
        from this controller's start at most (the grace a new controller gives)."""
        session = self._sessions.get(node.node_id)
        heard_ms = self.started_ms
        if session is not None and session.incarnation >= node.incarnation:
            heard_ms = max(heard_ms, session.heard_ms)
        registered = self._registered_ms.get(node.node_id)
        if registered is not None and registered[0] == node.incarnation:
            heard_ms = max(heard_ms, registered[1])
        return max(0, now_ms - heard_ms)

    def _note_registrations(self, image: MetadataImage, *, now_ms: int) -> None:
        current = {node_id: node.incarnation for node_id, node in image.nodes.items()}
        if self._incarnations is not None:
            for node_id, incarnation in current.items():
                if self._incarnations.get(node_id) != incarnation:
                    self._registered_ms[node_id] = (incarnation, now_ms)
        self._incarnations = current

    def can_lead(self, image: MetadataImage, node_id: NodeId) -> bool:
        """ACTIVE, not announcing a shutdown and not short of disk space: may take
        leaderships. (A node short of space still leads when no replica can: it keeps
        serving reads, and refuses new records with a retryable error.)"""
        node = image.nodes.get(node_id)
        if node is None or node.state is not NodeState.ACTIVE:
            return False
        session = self._sessions.get(node_id)
        return not (
            session is not None
            and session.incarnation == node.incarnation
            and (session.shutting_down or session.disk_full)
        )

    def recovering(self, image: MetadataImage, node_id: NodeId, shard_uid: ShardUid) -> bool:
        """The node lost its disk and its replica of the shard is still copying the log: it
        cannot lead the shard (it would answer Prepare with ok=False anyway)."""
        rejoin = self._rejoin(image, node_id, shard_uid)
        return rejoin is not None and not rejoin.caught_up

    def _rejoin(
        self, image: MetadataImage, node_id: NodeId, shard_uid: ShardUid
    ) -> RejoiningReplica | None:
        """What the node's current incarnation last reported of its replica of the shard."""
        node = image.nodes.get(node_id)
        session = self._sessions.get(node_id)
        if node is None or session is None or session.incarnation != node.incarnation:
            return None
        return session.rejoining.get(shard_uid)

    # Decisions.

    def needs_decision(self, image: MetadataImage, *, now_ms: int) -> bool:
        """Whether `decide` can return anything it did not return last time (issue 6: on an
        idle cluster the pass over every shard was the controller's node's largest cost).

        True when `image` is not the one last decided on, an input arrived that may change a
        decision (`on_heartbeat` says which do, `on_probe` with a refusal, `on_outcome`), the
        last decision acted (the next step, or shards past the per-pass budget, come next),
        or `now_ms` reached the next time a decision changes by itself: an ACTIVE or DRAINING
        node's session running out, a backoff ending, or `full_pass_interval_ms` passing."""
        return self._changed or image is not self._decided_image or now_ms >= self._next_decision_ms

    def decide(self, image: MetadataImage, *, now_ms: int, wall_ms: int) -> tuple[Action, ...]:
        """Everything to do now, node actions first; shard actions bounded per pass.

        `now_ms` is the monotonic clock (sessions, backoff); `wall_ms` the wall clock, only
        for the image's own time-dependent views (a deleted stream, an expired shard)."""
        assert now_ms >= self.started_ms
        self._note_registrations(image, now_ms=now_ms)
        actions: list[Action] = list(self._node_actions(image, now_ms=now_ms))
        raise_format = self._format_action(image)
        if raise_format is not None and not self._waiting(_FORMAT_KEY, now_ms=now_ms):
            actions.append(raise_format)
        shard_actions: list[ShardAction] = []
        acted: set[ShardUid] = set()
        budget = self.settings.actions_per_pass_max
        loads = node_loads(image, now_ms=wall_ms)  # replica targets planned in this pass add up
        for stream, shard in _placed_shards(image, wall_ms=wall_ms):
            if len(shard_actions) >= budget:
                break
            if self._waiting(shard.uid, now_ms=now_ms):
                acted.add(shard.uid)
                continue
            action = self._shard_action(image, stream, shard, loads=loads, now_ms=now_ms)
            if action is not None:
                shard_actions.append(action)
                acted.add(shard.uid)
        for reshard in self._reshard_actions(image, acted, now_ms=now_ms, wall_ms=wall_ms):
            if len(shard_actions) < budget:
                shard_actions.append(reshard)
        room = min(budget - len(shard_actions), self.settings.rebalance_moves_per_pass_max)
        if room > 0:
            moves = self._rebalance(image, acted, now_ms=now_ms, wall_ms=wall_ms, moves_max=room)
            shard_actions.extend(moves)
            acted.update(move.shard.shard_uid for move in moves)
        if len(shard_actions) < budget:
            shard_actions.extend(
                self._balance_replicas(image, acted, now_ms=now_ms, wall_ms=wall_ms)
            )
        decided = (*actions, *shard_actions)
        self._decided_image = image
        self._changed = bool(decided)
        self._next_decision_ms = self._next_decision_at(image, now_ms=now_ms)
        return decided

    def _next_decision_at(self, image: MetadataImage, *, now_ms: int) -> int:
        """The earliest time after `now_ms` at which `decide` on the same image and inputs can
        decide differently: a session ends (`silent_ms` exceeds the timeout one ms after
        `heard + timeout`), a backoff ends, or the full pass is due. Deadlines already past
        were acted on or are backing off, so they do not count."""
        due = now_ms + self.settings.full_pass_interval_ms
        timeout_ms = self.settings.node_session_timeout_ms
        for node in image.nodes.values():
            if node.state in (NodeState.ACTIVE, NodeState.DRAINING):
                ends_ms = now_ms - self.silent_ms(node, now_ms=now_ms) + timeout_ms + 1
                if ends_ms > now_ms:
                    due = min(due, ends_ms)
        for backoff in self._backoff.values():
            if backoff.not_before_ms > now_ms:
                due = min(due, backoff.not_before_ms)
        return due

    def _waiting(self, key: ShardUid | StreamUid | NodeId, *, now_ms: int) -> bool:
        backoff = self._backoff.get(key)
        return backoff is not None and now_ms < backoff.not_before_ms

    def _node_actions(self, image: MetadataImage, *, now_ms: int) -> Iterable[NodeAction]:
        timeout_ms = self.settings.node_session_timeout_ms
        for node_id in sorted(image.nodes):
            node = image.nodes[node_id]
            if self._waiting(node_id, now_ms=now_ms):
                continue
            silent_ms = self.silent_ms(node, now_ms=now_ms)
            if node.state in (NodeState.ACTIVE, NodeState.DRAINING) and (
                silent_ms > timeout_ms or self._proven_down(node)
            ):
                yield FenceNode(node_id=node_id, incarnation=node.incarnation, silent_ms=silent_ms)
            elif node.state is NodeState.FENCED:
                session = self._sessions.get(node_id)
                # Only a heartbeat this controller received, from this very incarnation: the
                # grace period is no evidence of life.
                # A refusal on record means no heartbeat came since the probe failed.
                if (
                    session is not None
                    and session.incarnation == node.incarnation
                    and now_ms - session.heard_ms <= timeout_ms
                    and not self._proven_down(node)
                ):
                    yield UnfenceNode(node_id=node_id, incarnation=node.incarnation)
                elif (
                    not node.voter
                    and self._absent(node, now_ms=now_ms)
                    and node_id not in _replica_holders(image)
                ):
                    yield RemoveAbsentNode(node_id=node_id, silent_ms=silent_ms)

    def _format_action(self, image: MetadataImage) -> RaiseMetadataFormat | None:
        """The highest format every registered node's current incarnation said it reads, if
        above the cluster's (and within the limit). Silence keeps a node's word: a FENCED
        node that said so before its pause is the same binary when it comes back; a restart
        is a new incarnation, which must say it again."""
        readable = min(
            self.settings.metadata_format_limit or METADATA_FORMAT_MAX, METADATA_FORMAT_MAX
        )
        for node in image.nodes.values():
            if node.state is NodeState.REMOVED:
                continue
            session = self._sessions.get(node.node_id)
            if session is None or session.incarnation != node.incarnation:
                return None
            readable = min(readable, session.metadata_format_max)
        if readable <= image.metadata_format:
            return None
        return RaiseMetadataFormat(level=readable)

    def _alive(self, image: MetadataImage, node_id: NodeId, now_ms: int) -> bool:
        """May take a new replica: can lead, and this controller heard this incarnation
        within half a session (a node never heard, or falling silent, gets none)."""
        node = image.nodes.get(node_id)
        if node is None or not self.can_lead(image, node_id) or not self._heard(node):
            return False
        return self.silent_ms(node, now_ms=now_ms) <= self.settings.node_session_timeout_ms // 2

    def _absent(self, node: NodeMeta, *, now_ms: int) -> bool:
        """FENCED and silent for `absent_node_replace_after_ms`: treated as gone for good."""
        after_ms = self.settings.absent_node_replace_after_ms
        return (
            after_ms > 0
            and node.state is NodeState.FENCED
            and self.silent_ms(node, now_ms=now_ms) > after_ms
        )

    def _leaving(self, image: MetadataImage, node_id: NodeId, *, now_ms: int) -> bool:
        """Its replicas must move elsewhere: DRAINING, or absent (`_absent`)."""
        node = image.nodes.get(node_id)
        if node is None:
            return False
        return node.state is NodeState.DRAINING or self._absent(node, now_ms=now_ms)

    def _heard(self, node: NodeMeta) -> bool:
        session = self._sessions.get(node.node_id)
        return session is not None and session.incarnation >= node.incarnation

    def _proven_down(self, node: NodeMeta) -> bool:
        """Its port refused connections, and no heartbeat came since (`on_heartbeat` drops
        the refusal); a refusal of an earlier incarnation proves nothing about this one."""
        refusal = self._refused.get(node.node_id)
        return refusal is not None and refusal.incarnation == node.incarnation

    def _eligible(
        self, image: MetadataImage, replicas: Sequence[NodeId], shard_uid: ShardUid
    ) -> tuple[NodeId, ...]:
        """Replicas that may lead in preference order: those that can lead, then the DRAINING
        or shutting-down ones (see EpochChange); never FENCED or REMOVED ones, nor replicas
        still recovering a lost disk."""
        usable = [n for n in replicas if not self.recovering(image, n, shard_uid)]
        first = [n for n in usable if self.can_lead(image, n)]
        last = [
            n
            for n in usable
            if n not in first
            and n in image.nodes
            and image.nodes[n].state in (NodeState.ACTIVE, NodeState.DRAINING)
        ]
        return (*first, *last)

    def _shard_action(
        self,
        image: MetadataImage,
        stream: StreamMeta,
        shard: ShardMeta,
        *,
        loads: NodeLoads,
        now_ms: int,
    ) -> EpochChange | None:
        """A leader change if the leader cannot stay, else the next step of a replica move."""
        ref = _ref(stream, shard)
        leader = shard.leader
        leader_unavailable = (
            leader is None
            or not self.can_lead(image, leader)
            or self.recovering(image, leader, shard.uid)
        )
        if self._prepared.get(shard.uid, 0) > shard.epoch or self._leader_fenced(image, shard):
            eligible = self._eligible(image, shard.replicas, shard.uid)
            if eligible:
                grown = (
                    self._grown_at_failover(image, stream, shard, loads, now_ms)
                    if leader_unavailable
                    else shard.replicas
                )
                if grown is None:
                    return None
                return self._epoch_change(
                    ref, shard, grown, eligible=eligible, caught_up=(), reason="re_prepare"
                )
        else:
            self._prepared.pop(shard.uid, None)
        if leader_unavailable:
            eligible = self._eligible(image, shard.replicas, shard.uid)
            leader_operating = leader is not None and leader in eligible
            better = [n for n in eligible if self.can_lead(image, n)]
            if not eligible or (leader_operating and not better):
                return None  # nobody better: a leaving leader keeps leading meanwhile
            grown = (
                shard.replicas
                if leader_operating
                else self._grown_at_failover(image, stream, shard, loads, now_ms)
            )
            if grown is None:
                return None
            reason = "leader_leaving" if leader_operating else "leader_unavailable"
            # Among equally good logs, the node leading the fewest shards (failovers in one
            # pass spread out instead of piling onto each shard's second replica).
            eligible = _by_fewest_leaderships(eligible, better, loads)
            if leader is not None and leader in loads.leaders:
                loads.leaders[leader] -= 1
            loads.leaders[eligible[0]] = loads.leaders.get(eligible[0], 0) + 1
            return self._epoch_change(
                ref, shard, grown, eligible=eligible, caught_up=(), reason=reason
            )
        if self._rejoined(image, shard):
            assert leader is not None
            # A replica lost with its disk caught up: the next epoch counts it again (a planned
            # change that keeps the leader, so producers see no failure).
            return self._epoch_change(
                ref,
                shard,
                shard.replicas,
                eligible=(
                    leader,
                    *(n for n in self._eligible(image, shard.replicas, shard.uid) if n != leader),
                ),
                caught_up=(),
                reason="rejoined",
            )
        leaving = [n for n in shard.replicas if self._leaving(image, n, now_ms=now_ms)]
        if not leaving:
            if len(shard.replicas) > stream.replication_factor:
                return self._drop_surplus(image, ref, shard, loads=loads)
            if len(shard.replicas) < stream.replication_factor:
                return self._add_replacement(image, ref, shard, loads=loads, now_ms=now_ms)
            return None
        dead = [n for n in leaving if image.nodes[n].state is NodeState.FENCED]
        if dead and len(shard.replicas) > 1:
            # A replica that cannot promise goes first: adding one beside it would need the
            # newcomer's promise for the new set's majority, and the newcomer holds nothing
            # to promise about yet. The shard is one short until the replacement (the
            # under-replicated rule above) is added in the next epoch.
            new_replicas = tuple(n for n in shard.replicas if n != dead[0])
            return self._epoch_change(
                ref,
                shard,
                new_replicas,
                eligible=self._eligible(image, new_replicas, shard.uid),
                caught_up=_holders_before_change(image, shard, new_replicas),
                reason="remove_replica",
            )
        if len(shard.replicas) <= stream.replication_factor:
            target = _replacement(loads, shard)
            if target is None:
                return None
            loads.replicas[target] += 1
            return self._epoch_change(
                ref,
                shard,
                (*shard.replicas, target),
                eligible=self._eligible(image, shard.replicas, shard.uid),
                caught_up=_holders_before_change(image, shard, (*shard.replicas, target)),
                reason="add_replica",
            )
        new_replicas = tuple(n for n in shard.replicas if n != leaving[0])
        return self._epoch_change(
            ref,
            shard,
            new_replicas,
            eligible=self._eligible(image, new_replicas, shard.uid),
            caught_up=_holders_before_change(image, shard, new_replicas),
            reason="remove_replica",
        )

    def _leader_fenced(self, image: MetadataImage, shard: ShardMeta) -> bool:
        """The shard's leader says it cannot lead at the image's epoch: a newer one was
        promised (a leader change whose commit failed, perhaps under an earlier controller,
        which this one knows nothing of)."""
        leader = shard.leader
        if leader is None:
            return False
        node = image.nodes.get(leader)
        session = self._sessions.get(leader)
        if node is None or session is None or session.incarnation != node.incarnation:
            return False
        return session.fenced.get(shard.uid) == shard.epoch

    def _rejoined(self, image: MetadataImage, shard: ShardMeta) -> bool:
        """Some replica of the shard lost its disk, caught up, and waits for a new epoch."""
        for node_id in shard.replicas:
            rejoin = self._rejoin(image, node_id, shard.uid)
            if rejoin is not None and rejoin.caught_up and rejoin.epoch == shard.epoch:
                return True
        return False

    def _grown_at_failover(
        self,
        image: MetadataImage,
        stream: StreamMeta,
        shard: ShardMeta,
        loads: NodeLoads,
        now_ms: int,
    ) -> tuple[NodeId, ...] | None:
        """The new set of a failover: the same, or, in the shard's first epoch below its
        replication factor, one replica more (on the live node holding the fewest); None:
        wait, as no node is live to take it yet and the old leader, FENCED, has been silent
        for less than a session (a node starting beside it registers before its port listens
        and is fenced meanwhile: its probe is refused), after which the set stays as it is.
        A leader that is heard (recovering a lost disk) is not waited for: its replica counts
        for the next epoch's commits (replica.py `_rejoining_in`).

        A set of two created while only two nodes were ACTIVE (format 7's
        requested_replication_factor) whose leader died at once gets its survivor as leader
        by the first-epoch rule (`_current_epoch_quorum`), but an epoch led by one of two
        commits nothing until the other returns, and the later growth waits for the dead
        replica to catch up (`_holders_before_change`). Adding the replica in the failover's
        own epoch is safe only in the first epoch: an add is a single-server change (every
        majority of the new set meets every majority of the old one, the set every record
        was committed by, as no epoch before it exists), and the leader is chosen by the
        old set's quorum alone, which holds every acknowledged record. In a later epoch the
        old set may hold records an earlier set committed that some of its members miss
        (the reason `_holders_before_change` waits for the leader's log first)."""
        if shard.epoch != FIRST_SHARD_EPOCH or len(shard.replicas) >= stream.replication_factor:
            return shard.replicas
        target = self._replacement_target(image, shard, loads, now_ms)
        if target is not None:
            return (*shard.replicas, target)
        old_leader = image.nodes.get(shard.leader) if shard.leader is not None else None
        if (
            old_leader is not None
            and old_leader.state is NodeState.FENCED
            and self.silent_ms(old_leader, now_ms=now_ms) < self.settings.node_session_timeout_ms
        ):
            return None
        return shard.replicas

    def _replacement_target(
        self, image: MetadataImage, shard: ShardMeta, loads: NodeLoads, now_ms: int
    ) -> NodeId | None:
        """The live node outside the set holding the fewest replicas (counted as taken)."""
        options = [
            n for n in loads.replicas if n not in shard.replicas and self._alive(image, n, now_ms)
        ]
        if not options:
            return None
        target = min(options, key=lambda n: (loads.replicas[n], n))
        loads.replicas[target] += 1
        return target

    def _add_replacement(
        self,
        image: MetadataImage,
        ref: ShardRef,
        shard: ShardMeta,
        *,
        loads: NodeLoads,
        now_ms: int,
    ) -> EpochChange | None:
        """A shard below its replication factor (a dead replica was dropped) gets one on the
        ACTIVE node holding the fewest replicas."""
        target = self._replacement_target(image, shard, loads, now_ms)
        if target is None:
            return None
        return self._epoch_change(
            ref,
            shard,
            (*shard.replicas, target),
            eligible=self._eligible(image, shard.replicas, shard.uid),
            caught_up=_holders_before_change(image, shard, (*shard.replicas, target)),
            reason="add_replica",
        )

    def _drop_surplus(
        self, image: MetadataImage, ref: ShardRef, shard: ShardMeta, *, loads: NodeLoads
    ) -> EpochChange:
        """The second half of a replica balancing move: drop the replica on the node that
        holds the most (a node that is not ACTIVE first), the leader's last among equals,
        once the others have caught up."""

        def weight(node_id: NodeId) -> tuple[int, int, bool, str]:
            active = node_id in loads.replicas
            count = loads.replicas.get(node_id, 0)
            return (0 if active else 1, count, node_id != shard.leader, node_id)

        drop = max(shard.replicas, key=weight)
        new_replicas = tuple(n for n in shard.replicas if n != drop)
        if drop in loads.replicas:
            loads.replicas[drop] -= 1
        return self._epoch_change(
            ref,
            shard,
            new_replicas,
            eligible=self._eligible(image, new_replicas, shard.uid),
            caught_up=_holders_before_change(image, shard, new_replicas),
            reason="remove_surplus",
        )

    def _balance_replicas(
        self, image: MetadataImage, acted: set[ShardUid], *, now_ms: int, wall_ms: int
    ) -> list[EpochChange]:
        """Step 6 of the module docstring: replicas added on the emptiest nodes."""
        moves_max = self.settings.replica_moves_max
        if moves_max == 0:
            return []
        shards = [
            (stream, shard)
            for stream, shard in _placed_shards(image, wall_ms=wall_ms)
            if shard.state is not ShardState.CLOSED
        ]
        in_flight = sum(
            1 for stream, shard in shards if len(shard.replicas) > stream.replication_factor
        )
        if in_flight >= moves_max:
            return []
        loads = node_loads(image, now_ms=wall_ms)
        # Only nodes heard from lately: a replica added on a node that cannot catch up (not
        # reachable, refused) would leave the shard a member short of its majority.
        counts = {n: c for n, c in loads.replicas.items() if self._alive(image, n, now_ms)}
        moves: list[EpochChange] = []
        while in_flight + len(moves) < moves_max:
            move = _replica_move(
                counts,
                shards,
                movable=lambda stream, shard: (
                    shard.state is ShardState.OPEN
                    and shard.uid not in acted
                    and not self._waiting(shard.uid, now_ms=now_ms)
                    and len(shard.replicas) == stream.replication_factor
                    and shard.leader is not None
                    and all(self._alive(image, n, now_ms) for n in shard.replicas)
                ),
            )
            if move is None:
                break
            stream, shard, source, target = move
            counts[source] -= 1
            counts[target] += 1
            acted.add(shard.uid)
            moves.append(
                self._epoch_change(
                    _ref(stream, shard),
                    shard,
                    (*shard.replicas, target),
                    eligible=self._eligible(image, shard.replicas, shard.uid),
                    caught_up=_holders_before_change(image, shard, (*shard.replicas, target)),
                    reason="balance_replicas",
                )
            )
        return moves

    @staticmethod
    def _epoch_change(
        ref: ShardRef,
        shard: ShardMeta,
        new_replicas: tuple[NodeId, ...],
        *,
        eligible: tuple[NodeId, ...],
        caught_up: tuple[NodeId, ...],
        reason: str,
    ) -> EpochChange:
        assert len(set(new_replicas) ^ set(shard.replicas)) <= 1
        return EpochChange(
            shard=ref,
            epoch=shard.epoch,
            leader=shard.leader,
            replicas=shard.replicas,
            new_replicas=new_replicas,
            eligible=eligible,
            caught_up=caught_up,
            reason=reason,
        )

    def _reshard_actions(
        self, image: MetadataImage, acted: set[ShardUid], *, now_ms: int, wall_ms: int
    ) -> Iterable[CompleteReshardAction]:
        for name in sorted(image.streams):
            stream = image.streams[name]
            if stream.reshard is None or stream.is_gone(now_ms=wall_ms):
                continue
            if self._waiting(stream.uid, now_ms=now_ms):
                continue
            parents: list[SealedParent] = []
            for index in stream.reshard.sealed:
                shard = stream.shards[index]
                assert shard.state is ShardState.SEALING
                if shard.uid in acted or shard.leader is None:
                    break  # a leader change comes first (0002, "Sealing for reshards")
                if image.nodes[shard.leader].state not in (NodeState.ACTIVE, NodeState.DRAINING):
                    break
                parents.append(
                    SealedParent(
                        index=shard.index,
                        shard_uid=shard.uid,
                        leader=shard.leader,
                        epoch=shard.epoch,
                    )
                )
            else:
                yield CompleteReshardAction(
                    stream_name=stream.name, stream_uid=stream.uid, parents=tuple(parents)
                )

    def _rebalance(
        self,
        image: MetadataImage,
        acted: set[ShardUid],
        *,
        now_ms: int,
        wall_ms: int,
        moves_max: int,
    ) -> list[EpochChange]:
        """Preferred leaders back first, then even leader counts; at most `moves_max`."""
        # Every open shard with a healthy leader counts; those acted on or backing off in this
        # pass count at their planned leader but are not moved now.
        candidates: list[tuple[StreamMeta, ShardMeta]] = []
        target: dict[ShardUid, NodeId] = {}  # the leader once preferred leaders are restored
        for stream, shard in _placed_shards(image, wall_ms=wall_ms):
            leader = shard.leader
            if shard.state is not ShardState.OPEN or leader is None:
                continue
            if not self.can_lead(image, leader):
                continue
            candidates.append((stream, shard))
            preferred = shard.replicas[0]
            usable = self.can_lead(image, preferred) and not self.recovering(
                image, preferred, shard.uid
            )
            target[shard.uid] = preferred if usable else leader

        def movable(shard: ShardMeta) -> bool:
            return shard.uid not in acted and not self._waiting(shard.uid, now_ms=now_ms)

        moves: list[EpochChange] = []
        for stream, shard in candidates:
            if len(moves) >= moves_max:
                return moves
            if target[shard.uid] != shard.leader and movable(shard):
                moves.append(
                    self._epoch_change(
                        _ref(stream, shard),
                        shard,
                        shard.replicas,
                        eligible=self._eligible(image, shard.replicas, shard.uid),
                        caught_up=(shard.replicas[0],),
                        reason="preferred",
                    )
                )
        counts: Counter[NodeId] = Counter(target.values())
        for _, shard in candidates:
            for node_id in shard.replicas:
                if self.can_lead(image, node_id):
                    counts[node_id] += 0
        while len(moves) < moves_max:
            move = _balance_move(
                counts,
                target,
                candidates,
                can_lead=lambda n, s: (
                    self.can_lead(image, n) and not self.recovering(image, n, s.uid)
                ),
            )
            if move is None:
                break
            stream, shard, to = move
            counts[target[shard.uid]] -= 1
            counts[to] += 1
            target[shard.uid] = to
            if not movable(shard) or any(m.shard.shard_uid == shard.uid for m in moves):
                continue  # counted as planned; acted on in a later pass
            reordered = (to, *(n for n in shard.replicas if n != to))
            moves.append(
                self._epoch_change(
                    _ref(stream, shard),
                    shard,
                    reordered,
                    eligible=(
                        to,
                        *(n for n in self._eligible(image, shard.replicas, shard.uid) if n != to),
                    ),
                    caught_up=(to,),
                    reason="balance",
                )
            )
        return moves


def _balance_move(
    counts: Counter[NodeId],
    target: dict[ShardUid, NodeId],
    shards: Sequence[tuple[StreamMeta, ShardMeta]],
    *,
    can_lead: Callable[[NodeId, ShardMeta], bool],
) -> tuple[StreamMeta, ShardMeta, NodeId] | None:
    """One leadership move from a most-loaded to a least-loaded node that shares a replica
    set, if their counts differ by more than one; deterministic (sorted, ids break ties)."""
    high_first = sorted(counts, key=lambda n: (-counts[n], n))
    low_first = sorted(counts, key=lambda n: (counts[n], n))
    for high in high_first:
        for low in low_first:
            if counts[high] - counts[low] <= 1:
                break
            for stream, shard in shards:  # (stream name, index) order
                if target[shard.uid] == high and low in shard.replicas and can_lead(low, shard):
                    return stream, shard, low
    return None


def _replica_move(
    counts: dict[NodeId, int],
    shards: Sequence[tuple[StreamMeta, ShardMeta]],
    *,
    movable: Callable[[StreamMeta, ShardMeta], bool],
) -> tuple[StreamMeta, ShardMeta, NodeId, NodeId] | None:
    """One replica from a fuller to an emptier node whose counts differ by two or more, on a
    movable shard that has a replica on the first and none on the second; deterministic."""
    high_first = sorted(counts, key=lambda n: (-counts[n], n))
    low_first = sorted(counts, key=lambda n: (counts[n], n))
    for high in high_first:
        for low in low_first:
            if counts[high] - counts[low] <= 1:
                break
            for stream, shard in shards:
                if high in shard.replicas and low not in shard.replicas and movable(stream, shard):
                    return stream, shard, high, low
    return None


def _replica_holders(image: MetadataImage) -> set[NodeId]:
    """Nodes holding a replica of any shard of a stream not yet forgotten."""
    return {
        node_id
        for stream in image.streams.values()
        for shard in stream.shards
        for node_id in shard.replicas
    }


def _by_fewest_leaderships(
    eligible: tuple[NodeId, ...], better: Sequence[NodeId], loads: NodeLoads
) -> tuple[NodeId, ...]:
    """`better` (nodes that can lead) by fewest leaderships, ties by preference; then the rest."""
    rank = {node_id: position for position, node_id in enumerate(eligible)}
    first = sorted(better, key=lambda n: (loads.leaders.get(n, 0), rank[n]))
    return (*first, *(n for n in eligible if n not in first))


_FORMAT_KEY = NodeId("")  # the backoff of RaiseMetadataFormat (no node has an empty id)


def _action_key(action: Action) -> ShardUid | StreamUid | NodeId:
    match action:
        case FenceNode() | UnfenceNode() | RemoveAbsentNode():
            return action.node_id
        case RaiseMetadataFormat():
            return _FORMAT_KEY
        case EpochChange():
            return action.shard.shard_uid
        case CompleteReshardAction():
            return action.stream_uid


def _holders_before_change(
    image: MetadataImage, shard: ShardMeta, new_replicas: Sequence[NodeId]
) -> tuple[NodeId, ...]:
    """The replicas that must hold the leader's log (`statuses_caught_up`: a record of the
    current epoch, the leader's marker, and everything up to the leader's HW) before the
    replica set changes to `new_replicas` (one member added or removed): with the leader, at
    least half of the new set, so every majority of the new set holds every record committed
    so far (a leader that leaves the set does not count). The live (not FENCED) members of
    both sets besides the leader when they are enough (the newcomer of an add holds nothing;
    the removed member does not count), else all of them (the change waits until they
    answer).

    Why: one-member changes keep every majority of the new set meeting every commit quorum
    of the old set, but not of the set before it. Two changes in a row with nothing
    committed under the set between them (Raft's single-server membership change bug,
    Ongaro 2015; Raft's fix: a leader commits an entry of its own term before it changes
    the configuration) let a majority of the newest set miss a record that only an older
    set's quorum held. Found by the simulator twice: seed 12 of `run_seed` (an add from a
    set whose leader had not committed), and seed 49 at commit 98a185c (the add of n4 to
    {n1, n2, n3}, whose epoch-5 marker was committed by {n2, n3}; then the removal of dead
    n2 at once, before the epoch-7 leader n3's marker reached n1 or n4; then n3 crashed and
    {n1, n4}, a majority of {n1, n3, n4}, chose n1, which never held the record). Waiting
    for the leader's marker on at least half of the new set is the condition the new set's
    elections need (the chosen leader, which holds every committed record, and replicas
    holding its marker, which hold its whole log before it by log matching, meet every
    majority of the new set); it does not wait for a commit of the current epoch itself, so
    a set with a dead member still changes while the leader and enough live members run.
    Records the current epoch commits after the check are held by a majority of the old
    set, which one member in or out keeps meeting every majority of the new set.

    A holder counts by its durable log only: a replica reports its durable end and the last
    epoch of the records below it (rpc/transport `replica_state`, the simulator's
    `replica_status`), so a marker still being written does not count (a holder that crashed
    before the write lands would lose it again; a Raft commit counts durable acks only)."""
    others = [n for n in shard.replicas if n in new_replicas and n != shard.leader]
    half = len(new_replicas) - len(new_replicas) // 2
    needed = half - 1 if shard.leader in new_replicas else half  # the leader counts if it stays
    live = [n for n in others if n in image.nodes and image.nodes[n].state is not NodeState.FENCED]
    return tuple(live if len(live) >= needed else others)


def _ref(stream: StreamMeta, shard: ShardMeta) -> ShardRef:
    return ShardRef(
        stream_name=stream.name, stream_uid=stream.uid, shard_index=shard.index, shard_uid=shard.uid
    )


def _placed_shards(image: MetadataImage, *, wall_ms: int) -> Iterable[tuple[StreamMeta, ShardMeta]]:
    """Every shard of a live stream with a replica set, closed ones until they expire (their
    data is still read), in (stream name, index) order."""
    for name in sorted(image.streams):
        stream = image.streams[name]
        if stream.is_gone(now_ms=wall_ms):
            continue
        for shard in stream.shards:
            if not shard.replicas:
                continue
            if shard.is_expired(now_ms=wall_ms, retention_hours=stream.retention_hours):
                continue
            yield stream, shard


def _replacement(loads: NodeLoads, shard: ShardMeta) -> NodeId | None:
    """The ACTIVE non-replica with the fewest replicas (ties by id), for a replica move."""
    options = [n for n in loads.replicas if n not in shard.replicas]
    if not options:
        return None
    return min(options, key=lambda n: (loads.replicas[n], n))
