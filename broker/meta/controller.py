"""The controller: leader-only decisions about nodes and shard placement (0002, DESIGN §3-§4).

It runs on every node but acts only on the node whose metadata-quorum replica is the Raft
leader (`ControllerQuorum.is_quorum_leader`), like KRaft's active controller. Everything it
decides becomes a metadata command, validated again by `state_machine.apply` (compare-and-set
on node incarnations and shard epochs), so a stale or deposed controller can waste work but
never corrupt placement.

Two parts, in the etcd-raft shape (STYLE B.1 #2):
- `ControllerCore` (`meta/controller_core.py`, with the settings, the actions and the pure
  rules), pure: fed node heartbeats `(node_id, incarnation, now_ms)`, the current image and
  the outcome of its previous actions; `decide(image, now_ms)` returns what to do: fence or
  unfence nodes, change shard epochs (leader changes, replica moves, rebalancing), complete
  reshards. No I/O, no clock: `now_ms` is the observer's monotonic clock.
- `Controller`, the async shell: a bounded loop that asks the core, executes its actions
  through `ReplicaControl` (Prepare, seal, status; gRPC in production, in memory in tests) and
  the quorum, and reports back. Every wait is bounded; a failing shard backs off.

When a pass decides, and the decisions in the order `decide` makes them: `controller_core`.

The leader-change procedure (0002): Prepare(epoch + 1) to every replica of the old and new
set, wait (bounded) for promises from a majority of both (of an even old set, half suffices
when the best log holds a record of the current epoch, and of a set of two its current leader
alone: `choose_leader`), pick the promiser with the highest (last_epoch, log_end) (ties:
preference order), propose SetShardLeader(expected_epoch=epoch).
The round ends as soon as the promises in hand allow a choice: a paused replica's Prepare is
cancelled rather than waited for (`Controller._prepare` says why that is safe).
Once a Prepare went out the old leader is fenced, so a failed attempt is retried (with
backoff), never abandoned: the shard is unwritable until some epoch change commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeVar

from broker.clock import Clock
from broker.errors import ShoalError
from broker.meta import commands
from broker.meta.commands import Command
from broker.meta.controller_core import (
    Action,
    CompleteReshardAction,
    ControllerCore,
    ControllerSettings,
    EpochChange,
    FenceNode,
    Outcome,
    Promise,
    RaiseMetadataFormat,
    RejoiningReplica,
    RemoveAbsentNode,
    ReplicaStatus,
    UnfenceNode,
    choose_leader,
    choose_leader_once_answered,
    statuses_caught_up,
)
from broker.meta.image import MetadataImage, NodeState
from broker.meta.metadata_format import FIRST_FORMAT, REQUESTED_FACTOR_LEVEL
from broker.meta.quorum import QuorumStatistics
from broker.types import NodeId, Offset, ShardUid

log = logging.getLogger(__name__)
_T = TypeVar("_T")


# --- ReplicaControl and the quorum: the shell's seams ---------------------------------------------


class ReplicaControl(Protocol):
    """What the controller asks of one replica of one shard, on any node.

    Implemented over the internal gRPC API by the integration, in memory by tests. Every call
    may raise ShoalError (UNAVAILABLE: the node cannot be reached), OSError or TimeoutError;
    the controller bounds each call with its own deadline as well."""

    async def prepare(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Promise:
        """Prepare(epoch) to the replica on `node_id`; answered after the promise is durable."""
        ...

    async def seal(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Offset | None:
        """Ask the leader (at `epoch`) of a SEALING shard to seal: refuse new appends and
        report its final log end once everything it appended is committed; None while not
        yet (the controller asks again)."""
        ...

    async def replica_status(self, node_id: NodeId, shard_uid: ShardUid) -> ReplicaStatus: ...

    async def refuses_connections(self, node_id: NodeId) -> bool:
        """True only on proof that nothing listens on the node's API port (a TCP connect
        refused, within a short deadline); False when it connects, times out or is unknown."""
        ...


class ControllerQuorum(Protocol):
    """The part of MetadataQuorum the controller uses (PysyncobjQuorum and LocalQuorum)."""

    async def propose(self, command: Command) -> object: ...

    def image(self) -> MetadataImage: ...

    def is_quorum_leader(self) -> bool: ...

    def statistics(self) -> QuorumStatistics: ...


# --- The async shell ---------------------------------------------------------------------------

_REPLICA_ERRORS = (ShoalError, OSError, TimeoutError)


class Controller:
    """Runs `ControllerCore` while this node is the metadata-quorum leader.

    Lifecycle: construct once per node; `await run()` in the node's TaskGroup (infinite on
    purpose: it ends when cancelled at node stop); `on_heartbeat` from the RPC handler that
    receives node heartbeats (every node sends them to the quorum leader's node, which
    includes this node itself). Loop-bound: call from the event loop that runs `run`.
    A node view that acts on the cluster only while leading."""

    def __init__(
        self,
        *,
        quorum: ControllerQuorum,
        replicas: ReplicaControl,
        clock: Clock,
        settings: ControllerSettings,
        node_id: NodeId,
    ) -> None:
        settings.validate()
        self._quorum = quorum
        self._replicas = replicas
        self._clock = clock
        self._settings = settings
        self._node_id = node_id
        self._core: ControllerCore | None = None
        self._term: int | None = None
        self._passes = 0
        # When this node's event loop was last seen running (a pass, a heartbeat, the stall
        # watch): a gap much longer than a pass interval means the loop stalled (`_awake`).
        self._awake_ms: int | None = None

    def is_active(self) -> bool:
        """This node is the controller (as of the last pass or heartbeat)."""
        return self._core is not None

    def on_heartbeat(
        self,
        *,
        node_id: NodeId,
        incarnation: int,
        shutting_down: bool = False,
        rejoining: Sequence[RejoiningReplica] = (),
        disk_full: bool = False,
        fenced: Sequence[tuple[ShardUid, int]] = (),
        metadata_format_max: int = FIRST_FORMAT,
    ) -> bool:
        """Records a node heartbeat at its arrival time; False when this node is not the
        controller (the sender should look up the quorum leader again)."""
        core = self._current_core()
        if core is None:
            return False
        self._awake(core)
        core.on_heartbeat(
            node_id=node_id,
            incarnation=incarnation,
            now_ms=self._clock.monotonic_ms(),
            shutting_down=shutting_down,
            rejoining=rejoining,
            disk_full=disk_full,
            fenced=fenced,
            metadata_format_max=metadata_format_max,
        )
        return True

    def _current_core(self) -> ControllerCore | None:
        """The core for the current leadership term: a new one (with a fresh grace period for
        every node) whenever this node became leader, None while it is not the leader."""
        if not self._quorum.is_quorum_leader():
            if self._core is not None:
                log.info("controller_stopped", extra={"node_id": self._node_id})
            self._core, self._term = None, None
            return None
        term = self._quorum.statistics().term
        if self._core is None or self._term != term:
            self._core = ControllerCore(settings=self._settings, now_ms=self._clock.monotonic_ms())
            self._term = term
            self._awake_ms = None  # a new core starts every session afresh anyway
            log.info("controller_started", extra={"node_id": self._node_id, "term": term})
        return self._core

    async def run(self) -> None:
        """Passes forever: infinite on purpose, ends when cancelled (node stop)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_stalls())
            interval_ms = self._settings.pass_interval_ms
            while True:
                acted = await self.run_pass()
                # Right after acting, look again soon: the next step (e.g. a leader change
                # after a fence) should not wait a whole interval.
                await self._clock.sleep(interval_ms / 10 if acted else interval_ms)

    async def _watch_stalls(self) -> None:
        """Looks at the loop every pass interval, so that a stall is seen even while a pass
        waits on replicas (infinite on purpose, like `run`)."""
        while True:
            await self._clock.sleep(self._settings.pass_interval_ms)
            core = self._current_core()
            if core is not None:
                self._awake(core)

    def _awake(self, core: ControllerCore) -> None:
        """The loop runs now. If it was last seen running longer ago than a pass interval
        plus a quarter of a node session, it stalled (CPU starvation, a blocked loop): the
        core discounts that time from every node's silence (`ControllerCore.on_stall`), so
        heartbeats still queued behind the stall do not get every node fenced."""
        now_ms = self._clock.monotonic_ms()
        last_ms, self._awake_ms = self._awake_ms, now_ms
        if last_ms is None:
            return
        stalled_ms = now_ms - last_ms - self._settings.pass_interval_ms
        if stalled_ms > self._settings.node_session_timeout_ms // 4:
            log.warning("controller_stalled", extra={"stalled_ms": stalled_ms})
            core.on_stall(stalled_ms=stalled_ms, now_ms=now_ms)

    async def run_pass(self) -> int:
        """One bounded pass: decide, execute, report. Returns the number of actions taken."""
        core = self._current_core()
        if core is None:
            return 0
        self._awake(core)
        self._passes += 1
        await self._probe_late_nodes(core)
        image, now_ms = self._quorum.image(), self._clock.monotonic_ms()
        if not core.needs_decision(image, now_ms=now_ms):
            return 0
        actions = core.decide(image, now_ms=now_ms, wall_ms=self._clock.wall_ms())
        if not actions:
            return 0
        limiter = asyncio.Semaphore(self._settings.concurrent_actions_max)

        async def execute(action: Action) -> None:
            async with limiter:
                outcome = await self._execute(action)
            if self._core is core:  # still the same term
                core.on_outcome(action, outcome, now_ms=self._clock.monotonic_ms())

        async with asyncio.TaskGroup() as group:
            for action in actions:
                group.create_task(execute(action))
        return len(actions)

    async def _probe_late_nodes(self, core: ControllerCore) -> None:
        """Probes the nodes the core finds late, concurrently; each probe is bounded by the
        replica RPC timeout (the implementation's own connect deadline is shorter)."""
        image = self._quorum.image()
        suspects = core.nodes_to_probe(image, now_ms=self._clock.monotonic_ms())
        if not suspects:
            return
        outcomes = await asyncio.gather(
            *(self._call(self._replicas.refuses_connections(node_id)) for node_id in suspects)
        )
        now_ms = self._clock.monotonic_ms()
        for node_id, refused in zip(suspects, outcomes, strict=True):
            if refused:
                log.warning("controller_node_refuses_connections", extra={"node": node_id})
            if self._core is core:
                core.on_probe(image, node_id, refused=bool(refused), now_ms=now_ms)

    async def _execute(self, action: Action) -> str:
        match action:
            case FenceNode():
                log.warning(
                    "controller_node_fenced",
                    extra={"node": action.node_id, "silent_ms": action.silent_ms},
                )
                return await self._set_node_state(
                    action.node_id, NodeState.FENCED, action.incarnation
                )
            case UnfenceNode():
                log.info("controller_node_unfenced", extra={"node": action.node_id})
                return await self._set_node_state(
                    action.node_id, NodeState.ACTIVE, action.incarnation
                )
            case RaiseMetadataFormat():
                log.warning("controller_metadata_format_raised", extra={"level": action.level})
                return await self._propose(
                    commands.SetMetadataFormat(now_ms=self._clock.wall_ms(), level=action.level)
                )
            case RemoveAbsentNode():
                log.warning(
                    "controller_absent_node_removed",
                    extra={"node": action.node_id, "silent_ms": action.silent_ms},
                )
                # Marked absent where the format carries it: were it alive after all (a slow
                # start whose port refused the probes), the node registers again.
                absent = self._quorum.image().metadata_format >= REQUESTED_FACTOR_LEVEL
                return await self._propose(
                    commands.RemoveNode(
                        now_ms=self._clock.wall_ms(), node_id=action.node_id, absent=absent
                    )
                )
            case EpochChange():
                return await self._change_epoch(action)
            case CompleteReshardAction():
                return await self._complete_reshard(action)

    async def _propose(self, command: Command) -> str:
        try:
            async with asyncio.timeout(self._settings.propose_timeout_ms / 1000):
                await self._quorum.propose(command)
        except ShoalError as error:
            # A refusal (compare-and-set lost, state changed) or UNAVAILABLE: the next pass
            # decides again from the image it then sees.
            log.info(
                "controller_command_refused",
                extra={"command": type(command).__name__, "error": error.message},
            )
            return Outcome.FAILED
        except TimeoutError:
            log.warning("controller_command_timed_out", extra={"command": type(command).__name__})
            return Outcome.FAILED
        return Outcome.DONE

    async def _set_node_state(self, node_id: NodeId, state: NodeState, incarnation: int) -> str:
        return await self._propose(
            commands.SetNodeState(
                now_ms=self._clock.wall_ms(),
                node_id=node_id,
                state=state,
                expected_incarnation=incarnation,
            )
        )

    async def _call(self, call: Awaitable[_T]) -> _T | None:
        """One bounded replica call; None when it failed or timed out."""
        try:
            async with asyncio.timeout(self._settings.replica_rpc_timeout_ms / 1000):
                return await call
        except _REPLICA_ERRORS:
            return None

    async def _statuses_caught_up(self, action: EpochChange) -> bool:
        if not action.caught_up:
            return True
        if action.leader is None:
            return False
        uid = action.shard.shard_uid
        nodes = (action.leader, *action.caught_up)
        statuses = await asyncio.gather(
            *(self._call(self._replicas.replica_status(n, uid)) for n in nodes)
        )
        leader_status, *others = statuses
        return statuses_caught_up(action, leader_status, others)

    async def _change_epoch(self, action: EpochChange) -> str:
        """The leader-change procedure of 0002; see the module docstring."""
        if not await self._statuses_caught_up(action):
            return Outcome.NOT_READY
        uid, epoch = action.shard.shard_uid, action.epoch + 1
        promises, leader = await self._prepare(action, uid, epoch)
        fields = {
            "stream": action.shard.stream_name,
            "shard_index": action.shard.shard_index,
            "epoch": epoch,
            "reason": action.reason,
        }
        if leader is None:
            log.warning(
                "controller_leader_not_chosen",
                extra={**fields, "promised": sorted(n for n, p in promises.items() if p.ok)},
            )
            return Outcome.FAILED
        outcome = await self._propose(
            commands.SetShardLeader(
                now_ms=self._clock.wall_ms(),
                stream_uid=action.shard.stream_uid,
                shard_index=action.shard.shard_index,
                leader=leader,
                epoch=epoch,
                expected_epoch=action.epoch,
                replicas=action.new_replicas,
            )
        )
        if outcome == Outcome.DONE:
            log.info(
                "controller_shard_epoch_changed",
                extra={**fields, "leader": leader, "replicas": list(action.new_replicas)},
            )
        return outcome

    async def _prepare(
        self, action: EpochChange, uid: ShardUid, epoch: int
    ) -> tuple[dict[NodeId, Promise], NodeId | None]:
        """Prepare(epoch) to every replica of the old and new set, in parallel; returns the
        promises in hand and the leader chosen from them as soon as `choose_leader` can choose
        one (`choose_leader`'s quorums promised and an eligible promiser holds the highest log
        among them), without waiting for the stragglers: a paused or partitioned replica would
        otherwise hold every failover for the whole `replica_rpc_timeout_ms`.

        Cancelling the stragglers is safe: the majorities in hand already hold every record
        acknowledged in the old epoch and fence the old leader (it can no longer gather a
        majority of acks at its epoch); a straggler that promises later only promised an epoch
        the new leader's appends will carry anyway, and a straggler that refused (a higher
        promised epoch: a concurrent controller) makes the SetShardLeader compare-and-set on the
        epoch fail, as it would have without the early return. When no leader can be chosen
        the round waits for every answer (each bounded by its own deadline), and then asks
        `choose_leader` again with the current epoch and its leader (its rules for an even set
        missing a member that will not answer: `choose_leader_once_answered`)."""
        targets = tuple(dict.fromkeys((*action.replicas, *action.new_replicas)))
        tasks = {
            asyncio.create_task(self._call(self._replicas.prepare(n, uid, epoch))): n
            for n in targets
        }
        promises: dict[NodeId, Promise] = {}
        leader: NodeId | None = None
        pending: set[asyncio.Task[Promise | None]] = set(tasks)
        try:
            while pending and leader is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    promise = task.result()
                    if promise is not None:
                        promises[tasks[task]] = promise
                leader = choose_leader(
                    promises,
                    replicas=action.replicas,
                    new_replicas=action.new_replicas,
                    eligible=action.eligible,
                )
            if leader is None:
                # Every replica answered or failed: the current-epoch rule may choose from
                # fewer than a majority. Only now, so that a replica merely slower than the
                # others still has its longer log (a leaving leader's records awaiting commit)
                # counted, as it would in a healthy set.
                leader = choose_leader_once_answered(promises, action)
                if leader is not None:
                    log.warning(
                        "controller_leader_chosen_without_majority",
                        extra={
                            "stream": action.shard.stream_name,
                            "shard_index": action.shard.shard_index,
                            "epoch": epoch,
                            "leader": leader,
                            "promised": sorted(n for n, p in promises.items() if p.ok),
                        },
                    )
        finally:
            for task in pending:
                task.cancel()
            if pending:
                # Reap the cancelled calls (each ends at once or at its own deadline).
                await asyncio.wait(pending)
        if pending:
            log.info(
                "controller_prepare_stragglers_cancelled",
                extra={
                    "stream": action.shard.stream_name,
                    "shard_index": action.shard.shard_index,
                    "epoch": epoch,
                    "stragglers": sorted(tasks[t] for t in pending),
                },
            )
        return promises, leader

    async def _complete_reshard(self, action: CompleteReshardAction) -> str:
        finals = await asyncio.gather(
            *(
                self._call(self._replicas.seal(p.leader, p.shard_uid, p.epoch))
                for p in action.parents
            )
        )
        if any(final is None for final in finals):
            return Outcome.NOT_READY
        end_offsets = tuple(
            (p.index, Offset(final))
            for p, final in zip(action.parents, finals, strict=True)
            if final is not None
        )
        outcome = await self._propose(
            commands.CompleteReshard(
                now_ms=self._clock.wall_ms(),
                stream_uid=action.stream_uid,
                end_offsets=end_offsets,
                updating_ms=self._settings.stream_updating_ms,
            )
        )
        if outcome == Outcome.DONE:
            log.info(
                "controller_reshard_completed",
                extra={"stream": action.stream_name, "end_offsets": list(end_offsets)},
            )
        return outcome
