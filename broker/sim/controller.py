"""The real controller over the real state machine, under a seed (issue 19).

`run_controller_seed(seed)` runs `meta.controller_core.ControllerCore` the way its async shell
(`meta/controller.py`) does, on virtual time, against a metadata image that only the real
`meta.state_machine.apply` changes: nodes register, heartbeat, fall silent, come back,
drain and join; streams are created with replication factors 1-3 and resharded (split,
merge, uniform scaling). Every pass, the controller's actions are executed as the shell would:
an `EpochChange` by Prepares answered by the live replicas and `choose_leader` over their
promises, then `SetShardLeader`; a fence or unfence by `SetNodeState`; a reshard completion
by `CompleteReshard`; a removal by `RemoveNode`. The fault point
`controller.change_during_seal` starts a leader change of a sealing parent right before the
reshard completes.

Invariants, checked after every command applied and every decision:
- `ReplicasDistinct`: the controller never places two replicas of a shard on one node (no
  `EpochChange` names a node twice, no image holds such a shard).
- `HashKeysCoveredOnce`: the shards of every stream that are not closed cover every hash
  key exactly once (a reshard never loses or doubles a key).
- `LeaderIsReplica`: every shard's leader is one of its replicas.

Pure and deterministic: one seed, one run.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from broker import arns, buggify
from broker.meta import commands as cmd
from broker.meta.controller_core import (
    CompleteReshardAction,
    ControllerCore,
    ControllerSettings,
    EpochChange,
    FenceNode,
    Outcome,
    Promise,
    RaiseMetadataFormat,
    RemoveAbsentNode,
    UnfenceNode,
    choose_leader,
)
from broker.meta.image import (
    MetadataImage,
    NodeState,
    ReshardKind,
    ShardMeta,
    ShardState,
    StreamMeta,
    StreamMode,
)
from broker.meta.state_machine import apply
from broker.streams.hash_keys import tiles_hash_space
from broker.types import NodeId, Offset, ShardIndex, StreamName

_PASS_MS = 100
_SETTINGS = ControllerSettings(
    node_session_timeout_ms=1_000,
    pass_interval_ms=_PASS_MS,
    probe_after_ms=0,
    full_pass_interval_ms=500,
    absent_node_replace_after_ms=3_000,
    retry_backoff_ms_min=100,
    retry_backoff_ms_max=1_000,
    stream_updating_ms=0,
)


class ControllerViolation(Exception):
    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        super().__init__(f"{name}: {detail}")


def check_replica_set(where: str, shard: ShardMeta) -> None:
    """The placement invariants of one shard: its replicas on distinct nodes (ReplicasDistinct)
    and its leader one of them (LeaderIsReplica)."""
    if len(set(shard.replicas)) != len(shard.replicas):
        raise ControllerViolation("ReplicasDistinct", f"{where}: {shard.replicas}")
    if shard.leader is not None and shard.leader not in shard.replicas:
        raise ControllerViolation("LeaderIsReplica", f"{where}: {shard.leader} of {shard.replicas}")


def check_hash_keys(stream: StreamMeta) -> None:
    """HashKeysCoveredOnce: the shards of `stream` that are not closed cover every hash key
    exactly once (a reshard never loses or doubles a key)."""
    live = [
        (shard.hash_key_start, shard.hash_key_end)
        for shard in stream.shards
        if shard.state is not ShardState.CLOSED
    ]
    if not tiles_hash_space(live):
        raise ControllerViolation(
            "HashKeysCoveredOnce", f"stream {stream.name}: live ranges {sorted(live)}"
        )


def reshard_command(
    stream: StreamMeta, rng: random.Random, *, now_ms: int, target_shard_count_max: int
) -> cmd.BeginReshard | None:
    """A reshard of `stream` drawn from `rng`: a split of an open shard at a random key, a
    merge of an open shard with its open upper neighbour, or an UpdateShardCount to 1..
    `target_shard_count_max` shards (also when a one-key shard is drawn for a split); None
    when the draw names a merge with no open neighbour."""
    open_shards = [s for s in stream.shards if s.state is ShardState.OPEN]
    if not open_shards:
        return None
    shard = rng.choice(open_shards)
    choice = rng.randrange(3)
    if choice == 0 and shard.hash_key_end > shard.hash_key_start:
        return cmd.BeginReshard(
            now_ms=now_ms,
            name=stream.name,
            kind=ReshardKind.SPLIT,
            shard_index=ShardIndex(shard.index),
            new_starting_hash_key=rng.randint(shard.hash_key_start + 1, shard.hash_key_end),
            shard_count_per_account_max=256,
        )
    if choice == 1:
        neighbours = [s for s in open_shards if s.hash_key_start == shard.hash_key_end + 1]
        if not neighbours:
            return None
        return cmd.BeginReshard(
            now_ms=now_ms,
            name=stream.name,
            kind=ReshardKind.MERGE,
            shard_index=ShardIndex(shard.index),
            adjacent_shard_index=ShardIndex(neighbours[0].index),
            shard_count_per_account_max=256,
        )
    return cmd.BeginReshard(
        now_ms=now_ms,
        name=stream.name,
        kind=ReshardKind.UNIFORM_SCALING,
        target_shard_count=rng.randint(1, target_shard_count_max),
        shard_count_per_account_max=256,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSimResult:
    seed: int
    passes: int
    epoch_changes: int
    reshards_completed: int
    violation: str | None

    @property
    def ok(self) -> bool:
        return self.violation is None


class _Run:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}/controller-sim")
        self.now_ms = 1_000
        self.image = MetadataImage()
        self.alive: dict[NodeId, bool] = {}
        self.incarnations: dict[NodeId, int] = {}
        self.core = ControllerCore(settings=_SETTINGS, now_ms=self.now_ms)
        self.epoch_changes = 0
        self.reshards_completed = 0

    # --- The state machine, checked after every command ---------------------------------

    def propose(self, command: cmd.Command) -> bool:
        applied = apply(self.image, command)
        self.image = applied.image
        self.check_image()
        return applied.error is None

    def check_image(self) -> None:
        for stream in self.image.streams.values():
            check_hash_keys(stream)
            for shard in stream.shards:
                check_replica_set(f"{stream.name} {shard.shard_id}", shard)

    # --- The world ------------------------------------------------------------------------

    def register(self, node_id: NodeId) -> None:
        self.incarnations[node_id] = self.incarnations.get(node_id, 0) + 1
        self.alive[node_id] = True
        self.propose(
            cmd.RegisterNode(
                now_ms=self.now_ms,
                node_id=node_id,
                api_address=f"{node_id}:1",
                http_address=f"{node_id}:2",
                raft_address="",
                voter=False,
            )
        )

    def event(self) -> None:
        """One thing happening in the cluster, drawn from the seed."""
        rng = self.rng
        kind = rng.randrange(12)
        nodes = sorted(self.alive)
        name = StreamName(rng.choice(("a", "b", "c")))
        stream = self.image.streams.get(name)
        if kind == 0 and len(nodes) < 7:
            self.register(NodeId(f"n{len(nodes)}"))
        elif kind in (1, 2):
            node_id = rng.choice(nodes)
            if self.alive[node_id]:
                self.alive[node_id] = False  # a crash: silent from now on
            else:
                self.register(node_id)  # a restart: registers again, a new incarnation
        elif kind == 3:
            node = self.image.nodes.get(rng.choice(nodes))
            if node is not None and node.state is NodeState.ACTIVE:
                self.propose(
                    cmd.SetNodeState(
                        now_ms=self.now_ms,
                        node_id=node.node_id,
                        state=NodeState.DRAINING,
                        expected_incarnation=node.incarnation,
                    )
                )
        elif kind in (4, 5) and stream is None:
            self.propose(
                cmd.CreateStream(
                    now_ms=self.now_ms,
                    name=name,
                    arn=arns.regional("kinesis", "us-east-1", "000000000000", f"stream/{name}"),
                    shard_count=rng.randint(1, 4),
                    mode=StreamMode.PROVISIONED,
                    retention_hours=24,
                    max_record_size_kib=1024,
                    tags=(),
                    creating_ms=0,
                    shard_count_per_account_max=256,
                    on_demand_streams_max=10,
                    replication_factor=rng.randint(1, 3),
                )
            )
        elif kind in (6, 7, 8) and stream is not None and stream.reshard is None:
            self.begin_reshard(name)

    def begin_reshard(self, name: StreamName) -> None:
        command = reshard_command(
            self.image.streams[name], self.rng, now_ms=self.now_ms, target_shard_count_max=6
        )
        if command is not None:
            self.propose(command)

    # --- The controller, as its shell runs it ---------------------------------------------

    def controller_pass(self) -> None:
        for node_id, alive in sorted(self.alive.items()):
            if alive:
                self.core.on_heartbeat(
                    node_id=node_id, incarnation=self.incarnations[node_id], now_ms=self.now_ms
                )
        if not self.core.needs_decision(self.image, now_ms=self.now_ms):
            return
        actions = self.core.decide(self.image, now_ms=self.now_ms, wall_ms=self.now_ms)
        for action in actions:
            if isinstance(action, EpochChange):
                if len(set(action.new_replicas)) != len(action.new_replicas):
                    raise ControllerViolation(
                        "ReplicasDistinct",
                        f"{action.reason} of {action.shard}: {action.new_replicas}",
                    )
                outcome = self.epoch_change(action)
            elif isinstance(action, CompleteReshardAction):
                outcome = self.complete_reshard(action)
            else:
                outcome = self.node_action(action)
            self.core.on_outcome(action, outcome, now_ms=self.now_ms)

    def epoch_change(self, action: EpochChange) -> str:
        """Prepare(epoch + 1) to the live replicas of both sets, then the leader
        `choose_leader` picks from their promises, then the compare-and-set."""
        targets = dict.fromkeys((*action.replicas, *action.new_replicas))
        promises = {
            node_id: Promise(ok=True, last_epoch=action.epoch, log_end=Offset(0), promised_epoch=0)
            for node_id in targets
            if self.alive.get(node_id)
        }
        leader = choose_leader(
            promises,
            replicas=action.replicas,
            new_replicas=action.new_replicas,
            eligible=action.eligible,
        )
        if leader is None:
            return Outcome.FAILED
        done = self.propose(
            cmd.SetShardLeader(
                now_ms=self.now_ms,
                stream_uid=action.shard.stream_uid,
                shard_index=action.shard.shard_index,
                leader=leader,
                epoch=action.epoch + 1,
                expected_epoch=action.epoch,
                replicas=action.new_replicas,
            )
        )
        self.epoch_changes += done
        return Outcome.DONE if done else Outcome.FAILED

    def complete_reshard(self, action: CompleteReshardAction) -> str:
        if buggify.buggify("controller.change_during_seal"):
            # A leader change of a sealing parent lands first: the seal answers from the
            # old epoch no longer count, and the completion must wait for the new leader.
            parent = self.rng.choice(action.parents)
            sealing = next(s for s in self.image.streams.values() if s.uid == action.stream_uid)
            shard = sealing.shards[parent.index]
            others = [n for n in shard.replicas if self.alive.get(n)]
            if others:
                self.propose(
                    cmd.SetShardLeader(
                        now_ms=self.now_ms,
                        stream_uid=sealing.uid,
                        shard_index=parent.index,
                        leader=self.rng.choice(others),
                        epoch=shard.epoch + 1,
                        expected_epoch=shard.epoch,
                        replicas=shard.replicas,
                    )
                )
        stream = next((s for s in self.image.streams.values() if s.uid == action.stream_uid), None)
        if stream is None:
            return Outcome.FAILED
        for parent in action.parents:
            shard = stream.shards[parent.index]
            if shard.epoch != parent.epoch or not self.alive.get(parent.leader):
                return Outcome.NOT_READY  # the seal answer came from a stale epoch
        done = self.propose(
            cmd.CompleteReshard(
                now_ms=self.now_ms,
                stream_uid=action.stream_uid,
                end_offsets=tuple((p.index, Offset(0)) for p in action.parents),
                updating_ms=0,
            )
        )
        self.reshards_completed += done
        return Outcome.DONE if done else Outcome.FAILED

    def node_action(
        self, action: FenceNode | UnfenceNode | RemoveAbsentNode | RaiseMetadataFormat
    ) -> str:
        if isinstance(action, FenceNode):
            command: cmd.Command = cmd.SetNodeState(
                now_ms=self.now_ms,
                node_id=action.node_id,
                state=NodeState.FENCED,
                expected_incarnation=action.incarnation,
            )
        elif isinstance(action, UnfenceNode):
            command = cmd.SetNodeState(
                now_ms=self.now_ms,
                node_id=action.node_id,
                state=NodeState.ACTIVE,
                expected_incarnation=action.incarnation,
            )
        elif isinstance(action, RemoveAbsentNode):
            command = cmd.RemoveNode(now_ms=self.now_ms, node_id=action.node_id)
        else:
            command = cmd.SetMetadataFormat(now_ms=self.now_ms, level=action.level)
        return Outcome.DONE if self.propose(command) else Outcome.FAILED


def run_controller_seed(seed: int, *, passes: int = 300) -> ControllerSimResult:
    """One run: `passes` controller passes, with cluster events between them."""
    run = _Run(seed)
    buggify.enable(random.Random(f"{seed}/buggify"))
    try:
        for index in range(3):
            run.register(NodeId(f"n{index}"))
        for _ in range(passes):
            for _ in range(run.rng.randint(0, 2)):
                run.event()
            run.now_ms += _PASS_MS
            run.controller_pass()
    except ControllerViolation as violation:
        return _result(seed, passes, run, str(violation))
    except AssertionError as error:
        return _result(seed, passes, run, f"AssertionError (a core assertion): {error!r}")
    finally:
        buggify.disable()
    return _result(seed, passes, run, None)


def _result(seed: int, passes: int, run: _Run, violation: str | None) -> ControllerSimResult:
    return ControllerSimResult(
        seed=seed,
        passes=passes,
        epoch_changes=run.epoch_changes,
        reshards_completed=run.reshards_completed,
        violation=violation,
    )


def replica_counts(image: MetadataImage) -> Counter[NodeId]:
    """Replicas per node (for summaries)."""
    counts: Counter[NodeId] = Counter()
    for stream in image.streams.values():
        for shard in stream.shards:
            counts.update(shard.replicas)
    return counts
