"""`SimController`: the real controller deciding the replica cluster's leader changes (issue 19).

The metadata side of the replica cluster (`cluster.SimCluster`). It keeps no decision logic
of its own (the simulator's earlier failure detector and leader election are gone): it runs
the real decision code: `meta.controller_core.ControllerCore` over a `MetadataImage` that only
the real state machine (`meta.state_machine.apply`) changes, executed the way its async shell
(`meta/controller.py`) executes it:

- every node registers (`RegisterNode`) when it starts and again after each restart, and
  heartbeats the controller every `heartbeat_ms` while it is up and not cut off from it, with
  what the node's `DriverCore` reports (replicas rejoining after a lost disk, fenced
  leaderships), as `node.py` does;
- a pass probes the late nodes (a crashed node refuses connections; a partitioned one does
  not), runs `decide` when `needs_decision` says so, executes every action at once and reports
  each outcome (`on_outcome`), then sleeps `pass_interval_ms` (a tenth of it after acting);
- an `EpochChange` checks the `caught_up` replicas against the leader's status, sends
  Prepare(epoch + 1) through the simulated network to the replicas of both sets, takes the
  leader `choose_leader` picks as soon as it can pick one (or fails when every target answered
  without one, or at `replica_rpc_timeout_ms`), then proposes `SetShardLeader` with the
  compare-and-set on the epoch; fences and unfences propose `SetNodeState`;
- a proposal is applied after a short delay (the metadata quorum's commit), and a changed
  shard entry reaches each replica's node after its own delay (`SimCluster._publish`).

A fault (`new_term`) replaces the core as a metadata-leader change does: a new controller
with fresh sessions and no memory of its predecessor's prepares starts its passes at once,
while the old one's actions still in flight finish (their compare-and-set decides).

Replica sets change too: a node FENCED and silent for two sessions is absent, its replicas
are dropped and replaced on another node (with 5 nodes; `absent_node_replace_after_ms`), and
one replica balancing move runs at a time (`replica_moves_max = 1`). An `EpochChange` with
`caught_up` replicas goes ahead only when `statuses_caught_up` says so, from the statuses
the nodes answer. The image is checked after every command, and every decided
`EpochChange` before it runs: `ReplicasDistinct` (no two replicas of a shard on one node)
and `LeaderIsReplica`. This run found seed 12: a replica added before the set held its
leader's log, and seed 49 (at commit 98a185c): a dead replica removed right after an add,
before the set held its leader's log (`controller_core._holders_before_change`).

Reshards: the workload proposes the real `BeginReshard` (`begin_reshard`: a split, a merge or
an UpdateShardCount), which seals the parents in the image; the core's
`CompleteReshardAction` is executed as the shell's `_complete_reshard`: a seal request to each
parent's leader at its epoch (`Nodes.seal`, served by the node's real
`DriverCore.sealed_end`), then `CompleteReshard` with the ends once every parent answered
one (NOT_READY otherwise), which closes the parents and adds the children with their parents'
replica sets and leaders at epoch 1; every image is checked to cover each hash key once
(`HashKeysCoveredOnce`).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from broker import arns
from broker.meta import commands as cmd
from broker.meta import controller_core
from broker.meta.controller_core import (
    Action,
    CompleteReshardAction,
    ControllerCore,
    ControllerSettings,
    EpochChange,
    FenceNode,
    Outcome,
    RaiseMetadataFormat,
    RejoiningReplica,
    RemoveAbsentNode,
    ReplicaStatus,
    UnfenceNode,
)
from broker.meta.image import MetadataImage, NodeState, ShardMeta, ShardState, StreamMode
from broker.meta.metadata_format import METADATA_FORMAT_MAX
from broker.meta.state_machine import apply
from broker.replication.messages import Prepare, Promise, ReplicationMessage
from broker.sim.controller import (
    ControllerViolation,
    check_hash_keys,
    check_replica_set,
    reshard_command,
)
from broker.sim.world import World
from broker.types import NodeId, Offset, ShardIndex, ShardUid, StreamName

STREAM = StreamName("sim")
CONTROLLER = NodeId("controller")  # the controller's address on the simulated network
FIRST_SHARD_UID = 100  # shard uids from here, so a shard's index is its uid - 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardImage:
    """One shard's entry in the metadata image, as it reaches the nodes."""

    shard_uid: ShardUid
    replicas: tuple[NodeId, ...]
    leader: NodeId | None
    epoch: int
    sealing: bool = False  # SEALING or CLOSED: no new appends
    # The whole entry, as the node's image holds it (hash keys, state, parents, end offset).
    meta: ShardMeta
    # The metadata command that produced this entry, in commit order: a node applies the
    # entries of one shard in that order, as it applies the log.
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """What a node's heartbeat carries besides its incarnation (node.py)."""

    rejoining: Sequence[RejoiningReplica] = ()
    fenced: Sequence[tuple[ShardUid, int]] = ()


class Nodes(Protocol):
    """The simulated nodes as the controller reaches them (`SimCluster`)."""

    def heartbeat(self, node_id: NodeId) -> Heartbeat | None:
        """The node's heartbeat now, or None when it is down (sends none)."""
        ...

    def refuses_connections(self, node_id: NodeId) -> bool:
        """Its API port refuses connections: no process listens (crashed, not restarted)."""
        ...

    def replica_status(self, node_id: NodeId, shard_uid: ShardUid) -> ReplicaStatus | None:
        """The replica's status as the node answers it, or None (down, cut off, none)."""
        ...

    def disk_generation(self, node_id: NodeId) -> int: ...

    def seal(
        self,
        node_id: NodeId,
        shard_uid: ShardUid,
        epoch: int,
        answer: Callable[[Offset | None], None],
    ) -> None:
        """The shell's seal request to the parent's leader (`ReplicaControl.seal`): `answer`
        gets the final end, or None (not yet, not leading at `epoch`, or no answer in time)."""
        ...


Send = Callable[[NodeId, NodeId, ReplicationMessage], None]
# A line of the replay trace (`scripts/sim --trace-shard`): the shard it is about, or None
# for a node's crash, disk loss or restart, which concerns all of them.
Trace = Callable[[ShardUid | None, str], None]
Publish = Callable[[ShardImage], None]
Reachable = Callable[[NodeId], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlTiming:
    """The controller's and the nodes' timing for one run (drawn from the seed's config)."""

    heartbeat_ms: int
    settings: ControllerSettings
    propose_ms_max: int  # a metadata commit takes 0..this

    @staticmethod
    def for_run(*, failure_detect_ms: int, check_ms: int, round_timeout_ms: int) -> ControlTiming:
        session_ms = max(failure_detect_ms, 3 * check_ms)
        return ControlTiming(
            heartbeat_ms=max(5, session_ms // 4),
            settings=ControllerSettings(
                node_session_timeout_ms=session_ms,
                pass_interval_ms=check_ms,
                replica_rpc_timeout_ms=round_timeout_ms,
                retry_backoff_ms_min=check_ms,
                retry_backoff_ms_max=10 * check_ms,
                probe_after_ms=session_ms // 3,
                full_pass_interval_ms=10 * check_ms,
                stream_updating_ms=0,
                absent_node_replace_after_ms=2 * session_ms,
                replica_moves_max=1,
            ),
            propose_ms_max=10,
        )


@dataclass(slots=True, kw_only=True)
class _Round:
    """One EpochChange's Prepare round, from its Prepares to its outcome."""

    action: EpochChange
    epoch: int
    targets: tuple[NodeId, ...]
    disk_generations: dict[NodeId, int]
    report: Callable[[str], None]
    promises: dict[NodeId, Promise] = field(default_factory=dict)
    done: bool = False


class SimController:
    """The metadata side of a `SimCluster` run by the real controller; see the module
    docstring. Offers what the cluster, its fault plans and invariants read of the metadata
    (`shards`, `prepared_epoch`, `receive`, the election counts)."""

    def __init__(
        self,
        world: World,
        *,
        node_ids: Sequence[NodeId],
        shards: int,
        replication_factor: int,
        placed_replicas: int = 0,
        timing: ControlTiming,
        nodes: Nodes,
        send: Send,
        publish: Publish,
        reachable: Reachable,
    ) -> None:
        self._world = world
        self._rng: random.Random = world.random("controller")
        self._timing = timing
        self._nodes = nodes
        self._send = send
        self._publish = publish
        self._reachable = reachable
        self.image = dataclasses.replace(MetadataImage(), next_shard_uid=FIRST_SHARD_UID)
        self.shards: dict[ShardUid, ShardImage] = {}
        self._version = 0  # of the last shard entry changed (`ShardImage.version`)
        self._prepared: dict[ShardUid, int] = {}
        self._rounds: list[_Round] = []
        # The new sets of the epoch changes executing now (decided, not yet reported: the
        # Prepare round or the SetShardLeader proposal is still out), by action.
        self._changing: dict[int, tuple[NodeId, ...]] = {}
        self.elections_started = 0
        self.reshards_proposed = 0  # BeginReshard proposed (some refused: a shard limit, ...)
        self.reshards_begun = 0  # ... and accepted
        self.reshards_completed = 0
        self.elections_committed = 0
        self.terms = 1
        # What the controller decided, by kind ("FenceNode", ...) and leader-change reason
        # ("leader_unavailable", "preferred", ...): what a run exercised.
        self.decided: Counter[str] = Counter()
        self.commits: list[tuple[ShardUid, int, NodeId]] = []
        self.incarnations: dict[NodeId, int] = {}
        self.trace: Trace | None = None  # `scripts/sim --trace-shard`: the replay's story
        for node_id in node_ids:
            self.node_started(node_id)
        created = self._apply(
            cmd.CreateStream(
                now_ms=world.now_ms,
                name=STREAM,
                arn=arns.regional("kinesis", "us-east-1", "000000000000", f"stream/{STREAM}"),
                shard_count=shards,
                mode=StreamMode.PROVISIONED,
                retention_hours=24,
                max_record_size_kib=1024,
                tags=(),
                creating_ms=0,
                shard_count_per_account_max=256,
                on_demand_streams_max=10,
                replication_factor=placed_replicas or replication_factor,
                requested_replication_factor=replication_factor if placed_replicas else 0,
            )
        )
        assert created, "the simulated stream could not be created"
        self._core = ControllerCore(settings=timing.settings, now_ms=world.now_ms)
        self._pass_generation = 0
        self._schedule_pass(timing.settings.pass_interval_ms)
        world.schedule(timing.heartbeat_ms, "heartbeats", self._heartbeats)

    # --- What the cluster reads -----------------------------------------------------------

    def prepared_epoch(self, shard_uid: ShardUid) -> int:
        """The highest epoch any Prepare for the shard carried (or its image's)."""
        return max(self.shards[shard_uid].epoch, self._prepared.get(shard_uid, 0))

    def sets_changing_to(self) -> tuple[tuple[NodeId, ...], ...]:
        """The replica sets the epoch changes in flight would leave (an image may show one
        at any moment: the fault plans count a shrink in flight as done)."""
        return tuple(self._changing.values())

    def node_started(self, node_id: NodeId) -> None:
        """A node process starts: it registers, as node.py does, with a new incarnation."""
        self._apply(
            cmd.RegisterNode(
                now_ms=self._world.now_ms,
                node_id=node_id,
                api_address=f"{node_id}:1",
                http_address=f"{node_id}:2",
                raft_address="",
                voter=False,
            )
        )
        self.incarnations[node_id] = self.image.nodes[node_id].incarnation

    def say(self, shard_uid: ShardUid | None, line: str) -> None:
        """A line of the replay trace, stamped with the virtual time (when one is kept)."""
        if self.trace is not None:
            self.trace(shard_uid, f"t={self._world.now_ms}ms {line}")

    def new_term(self) -> None:
        """A metadata-leader change: a new controller (fresh sessions, no memory of the old
        one's prepares) starts passing now; the old one's actions in flight still finish."""
        self.terms += 1
        self._core = ControllerCore(settings=self._timing.settings, now_ms=self._world.now_ms)
        self._schedule_pass(0)

    # --- The metadata quorum ---------------------------------------------------------------

    def _apply(self, command: cmd.Command) -> bool:
        """Applies `command` with the real state machine; whether it was accepted."""
        applied = apply(self.image, command)
        self.image = applied.image
        self._check_image()
        self._refresh_shards()
        return applied.error is None

    def _propose(self, command: cmd.Command, done: Callable[[bool], None]) -> None:
        """A proposal to the metadata quorum, committed a moment later."""

        def commit() -> None:
            done(self._apply(command))

        delay = self._rng.randint(0, self._timing.propose_ms_max)
        self._world.schedule(delay, f"commit {type(command).__name__}", commit)

    def _check_image(self) -> None:
        for stream in self.image.streams.values():
            check_hash_keys(stream)
            for shard in stream.shards:
                check_replica_set(shard.shard_id, shard)

    def _refresh_shards(self) -> None:
        stream = self.image.streams.get(STREAM)
        if stream is None:
            return
        for shard in stream.shards:
            known = self.shards.get(shard.uid)
            entry = ShardImage(
                shard_uid=shard.uid,
                replicas=shard.replicas,
                leader=shard.leader,
                epoch=shard.epoch,
                sealing=shard.state is not ShardState.OPEN,
                meta=shard,
                version=0 if known is None else known.version,
            )
            if known != entry:
                self._version += 1
                entry = dataclasses.replace(entry, version=self._version)
                self.shards[shard.uid] = entry
                if shard.leader is not None:
                    self.commits.append((shard.uid, shard.epoch, shard.leader))
                self.say(
                    shard.uid,
                    f"image e{shard.epoch} leader={shard.leader} replicas={list(shard.replicas)}",
                )
                self._publish(entry)

    # --- Heartbeats --------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        for node_id in sorted(self.incarnations):
            beat = self._nodes.heartbeat(node_id)
            if beat is None or not self._reachable(node_id):
                continue
            incarnation = self.incarnations[node_id]
            delay = self._rng.randint(0, self._timing.propose_ms_max)
            self._world.schedule(
                delay,
                f"heartbeat {node_id}",
                functools.partial(self._heartbeat_arrives, node_id, incarnation, beat),
            )
        self._world.schedule(self._timing.heartbeat_ms, "heartbeats", self._heartbeats)

    def _heartbeat_arrives(self, node_id: NodeId, incarnation: int, beat: Heartbeat) -> None:
        if not self._reachable(node_id):
            return
        self._core.on_heartbeat(
            node_id=node_id,
            incarnation=incarnation,
            now_ms=self._world.now_ms,
            rejoining=beat.rejoining,
            fenced=beat.fenced,
            metadata_format_max=METADATA_FORMAT_MAX,
        )

    # --- The shell's passes ----------------------------------------------------------------

    def _schedule_pass(self, delay_ms: int) -> None:
        self._pass_generation += 1
        generation = self._pass_generation
        self._world.schedule(delay_ms, "controller pass", lambda: self._pass(generation))

    def _pass(self, generation: int) -> None:
        if generation != self._pass_generation:
            return  # a new term's passes replaced this loop
        core, now = self._core, self._world.now_ms
        settings = self._timing.settings
        for node_id in core.nodes_to_probe(self.image, now_ms=now):
            refused = self._nodes.refuses_connections(node_id)
            core.on_probe(self.image, node_id, refused=refused, now_ms=now)
        if not core.needs_decision(self.image, now_ms=now):
            self._schedule_pass(settings.pass_interval_ms)
            return
        actions = core.decide(self.image, now_ms=now, wall_ms=now)
        if not actions:
            self._schedule_pass(settings.pass_interval_ms)
            return
        self.decided.update(
            a.reason if isinstance(a, EpochChange) else type(a).__name__ for a in actions
        )
        pending = len(actions)

        def finished(action: Action, outcome: str) -> None:
            nonlocal pending
            if self._core is core:  # still the same term
                core.on_outcome(action, outcome, now_ms=self._world.now_ms)
            pending -= 1
            if pending == 0 and generation == self._pass_generation:
                self._schedule_pass(max(1, settings.pass_interval_ms // 10))

        for action in actions:
            self._execute(action, functools.partial(finished, action))

    def _execute(self, action: Action, report: Callable[[str], None]) -> None:
        def outcome(accepted: bool) -> None:
            report(Outcome.DONE if accepted else Outcome.FAILED)

        now = self._world.now_ms
        if isinstance(action, EpochChange):
            self._change_epoch(action, report)
        elif isinstance(action, FenceNode | UnfenceNode):
            state = NodeState.FENCED if isinstance(action, FenceNode) else NodeState.ACTIVE
            self._propose(
                cmd.SetNodeState(
                    now_ms=now,
                    node_id=action.node_id,
                    state=state,
                    expected_incarnation=action.incarnation,
                ),
                outcome,
            )
        elif isinstance(action, RemoveAbsentNode):
            self._propose(cmd.RemoveNode(now_ms=now, node_id=action.node_id), outcome)
        elif isinstance(action, RaiseMetadataFormat):
            self._propose(cmd.SetMetadataFormat(now_ms=now, level=action.level), outcome)
        else:
            assert isinstance(action, CompleteReshardAction)
            self._complete_reshard(action, report)

    # --- Reshards (the workload's BeginReshard, the shell's _complete_reshard) ---------------

    def begin_reshard(self, rng: random.Random, *, target_shard_count_max: int) -> None:
        """An operator's split, merge or UpdateShardCount of the stream, drawn from `rng`,
        proposed unless a reshard is already under way."""
        stream = self.image.streams[STREAM]
        if stream.reshard is not None:
            return
        command = reshard_command(
            stream, rng, now_ms=self._world.now_ms, target_shard_count_max=target_shard_count_max
        )
        if command is not None:
            self.reshards_proposed += 1
            self._propose(command, self._reshard_begun)

    def _reshard_begun(self, accepted: bool) -> None:
        self.reshards_begun += accepted

    def _complete_reshard(
        self, action: CompleteReshardAction, report: Callable[[str], None]
    ) -> None:
        """Every parent's leader seals it (through its driver); once each answered its final
        end, `CompleteReshard` with those ends; NOT_READY while any did not."""
        finals: dict[ShardIndex, Offset | None] = {}

        def sealed(index: ShardIndex, end: Offset | None) -> None:
            finals[index] = end
            if len(finals) < len(action.parents):
                return
            ends = tuple((i, e) for i, e in sorted(finals.items()) if e is not None)
            if len(ends) < len(action.parents):
                report(Outcome.NOT_READY)
                return

            def completed(accepted: bool) -> None:
                self.reshards_completed += accepted
                report(Outcome.DONE if accepted else Outcome.FAILED)

            self._propose(
                cmd.CompleteReshard(
                    now_ms=self._world.now_ms,
                    stream_uid=action.stream_uid,
                    end_offsets=ends,
                    updating_ms=self._timing.settings.stream_updating_ms,
                ),
                completed,
            )

        for parent in action.parents:
            self._nodes.seal(
                parent.leader,
                parent.shard_uid,
                parent.epoch,
                functools.partial(sealed, ShardIndex(parent.index)),
            )

    # --- Leader changes (the shell's _change_epoch and _prepare) -----------------------------

    def _change_epoch(self, action: EpochChange, report: Callable[[str], None]) -> None:
        if len(set(action.new_replicas)) != len(action.new_replicas):
            raise ControllerViolation(
                "ReplicasDistinct", f"{action.reason} of {action.shard}: {action.new_replicas}"
            )
        uid = action.shard.shard_uid
        self.say(
            uid,
            f"{action.reason} from e{action.epoch} leader={action.leader}"
            f" {list(action.replicas)} -> {list(action.new_replicas)}"
            f" eligible={list(action.eligible)} caught_up={list(action.caught_up)}",
        )
        if action.caught_up and not self._caught_up(action):
            self.say(uid, f"{action.reason} from e{action.epoch}: not ready")
            report(Outcome.NOT_READY)
            return
        change = id(action)
        self._changing[change] = action.new_replicas

        def reported(outcome: str) -> None:
            del self._changing[change]
            self.say(uid, f"{action.reason} from e{action.epoch}: {outcome}")
            report(outcome)

        epoch = action.epoch + 1
        self._prepared[uid] = max(self._prepared.get(uid, 0), epoch)
        targets = tuple(dict.fromkeys((*action.replicas, *action.new_replicas)))
        current = _Round(
            action=action,
            epoch=epoch,
            targets=targets,
            disk_generations={n: self._nodes.disk_generation(n) for n in targets},
            report=reported,
        )
        self._rounds.append(current)
        self.elections_started += 1
        self.say(uid, f"prepare e{epoch} to {list(targets)}")
        for node_id in targets:
            self._send(CONTROLLER, node_id, Prepare(shard_uid=uid, epoch=epoch))
        self._world.schedule(
            self._timing.settings.replica_rpc_timeout_ms,
            f"prepare timeout {uid} e{epoch}",
            lambda: self._end_round(current, self._choice_once_answered(current)),
        )

    @staticmethod
    def _choice_once_answered(current: _Round) -> NodeId | None:
        """The shell's second try once every target answered or failed (`Controller._prepare`):
        `choose_leader` with the current epoch and its leader (half of an even set, or a set of
        two's current leader alone, may then choose)."""
        return controller_core.choose_leader_once_answered(current.promises, current.action)

    def _caught_up(self, action: EpochChange) -> bool:
        if action.leader is None:
            return False
        uid = action.shard.shard_uid
        leader = self._nodes.replica_status(action.leader, uid)
        others = [self._nodes.replica_status(node_id, uid) for node_id in action.caught_up]
        return controller_core.statuses_caught_up(action, leader, others)

    def receive(self, message: ReplicationMessage) -> None:
        """A Promise arrived at the controller: every round waiting on it takes it."""
        assert isinstance(message, Promise), message
        for current in list(self._rounds):
            action = current.action
            if (
                current.done
                or action.shard.shard_uid != message.shard_uid
                or current.epoch != message.epoch
                or message.sender not in current.targets
            ):
                continue
            if current.disk_generations[message.sender] != self._nodes.disk_generation(
                message.sender
            ):
                continue  # the promiser lost its disk since: the log it described is gone
            self.say(
                message.shard_uid,
                f"promise e{message.epoch} from {message.sender} ok={message.ok}"
                f" last_epoch={message.last_epoch} log_end={message.log_end}"
                f" promised={message.promised_epoch}",
            )
            current.promises[message.sender] = message
            leader = controller_core.choose_leader(
                current.promises,
                replicas=action.replicas,
                new_replicas=action.new_replicas,
                eligible=action.eligible,
            )
            if leader is None and len(current.promises) == len(current.targets):
                leader = self._choice_once_answered(current)
            if leader is not None or len(current.promises) == len(current.targets):
                self._end_round(current, leader)

    def _end_round(self, current: _Round, leader: NodeId | None) -> None:
        if current.done:
            return
        current.done = True
        self._rounds.remove(current)
        self.say(
            current.action.shard.shard_uid,
            f"prepare e{current.epoch} ends: leader={leader}"
            f" promisers={sorted(n for n, p in current.promises.items() if p.ok)}"
            f" refusers={sorted(n for n, p in current.promises.items() if not p.ok)}",
        )
        if leader is None:
            current.report(Outcome.FAILED)
            return
        action = current.action

        def committed(accepted: bool) -> None:
            if accepted:
                self.elections_committed += 1
            current.report(Outcome.DONE if accepted else Outcome.FAILED)

        self._propose(
            cmd.SetShardLeader(
                now_ms=self._world.now_ms,
                stream_uid=action.shard.stream_uid,
                shard_index=action.shard.shard_index,
                leader=leader,
                epoch=current.epoch,
                expected_epoch=action.epoch,
                replicas=action.new_replicas,
            ),
            committed,
        )
