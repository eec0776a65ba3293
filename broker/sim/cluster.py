"""`SimCluster`: N nodes x M shards, each node running the real `DriverCore`, on the event heap.

Each simulated node runs the replication driver's synchronous core (`replication.driver_core`,
the same code the node's async shell runs): messages, ticks, proposals and Prepares go into it,
and a turn's Readys are executed as the shell does: the leaders' Appends sent at once
(`send_ahead`: a crash before the fsync leaves followers holding records their leader lost),
`persist_plan` applied to the node's `SimLogStore`, the simulated fsync (a random disk delay,
sometimes a slow one, and sometimes a crash just before it: BUGGIFY; high watermarks written
beside the appends land before it or, BUGGIFY `driver.hw_after_fsync`, after it), then
`finish` (producers answered, orphans kept or failed, Prepares answered) and its sends and
catch-up reads. Up to `turns_in_flight_max` turns are in flight per node (drawn per seed:
1, 2 or the shell's limit), as in the shell: while turns wait for their fsync, messages that
arrive start a pipelined turn (`DriverCore.take_pipelined_turn`: appends only) or, when the
pipeline is full, are stepped at once (a leader answers the producers an ack commits),
sometimes late (BUGGIFY `driver.step_late`); turns finish in the order taken. A crash drops
the node's unsynced writes and everything in flight for it (events carry the node's
incarnation); a restart builds a new core, which opens its replicas from what the store kept
durable and the current metadata image. The fault points of `broker.buggify` are enabled for
the run, drawn from the seed.

The nodes' metadata is the real image's entries as they reached each node (hash keys, state,
parents): children of a reshard are opened by the core from it, as on a real node, and the
controller's seal requests are answered by the core (`seal`).

A run (`run.run_seed`) has a fault phase of a given number of events, with the fault plans of
`faults.py` active, then a quiet phase: faults stop, the network heals, every node restarts,
and the cluster must converge (every reshard completed, every shard led, every replica caught
up) within a bounded virtual time. `invariants.py` checks after every event and at the end.
"""

from __future__ import annotations

import collections
import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from broker import arns, buggify, limits
from broker.errors import ShoalError
from broker.log.records import NewRecord, StoredRecord
from broker.meta.controller_core import ReplicaStatus
from broker.meta.image import MetadataImage, StreamMeta, StreamMode
from broker.replication.driver_core import (
    Appended,
    DriverCore,
    Local,
    StoreCall,
    Turn,
    TurnEffects,
    run_calls,
)
from broker.replication.messages import Prepare, Promise, ReplicationMessage
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.replication.replica import ReadRequest, ReplicationKnobs, Role, ShardReplica
from broker.sim.control import CONTROLLER, ControlTiming, Heartbeat, ShardImage, SimController
from broker.sim.disk import SimLogStore
from broker.sim.network import SimNetwork
from broker.sim.world import World
from broker.types import NodeId, Offset, ShardIndex, ShardUid, StreamName, StreamUid

_SWEEP_INTERVAL_MS = 2_000  # the driver shell's backstop tick of every replica
_UNKNOWN = RefusalReason.OUTCOME_UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """A run's shape and knobs; `randomized` draws them from the seed (STYLE B.5)."""

    nodes: int = 3
    shards: int = 2
    replication_factor: int = 3
    knobs: ReplicationKnobs = field(default_factory=ReplicationKnobs)
    tick_ms: int = 20
    disk_ms_max: int = 5
    controller_check_ms: int = 50
    failure_detect_ms: int = 150
    election_timeout_ms: int = 300
    produce_interval_ms_max: int = 15
    pending_writes_max: int = 32
    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    network_delay_ms_max: int = 20
    attrition: bool = True
    partitions: bool = True
    leader_kills: bool = True
    leader_changes: bool = True
    disk_loss: bool = True
    # Replicas each shard is created on, below the factor (0: the factor): the stream asks for
    # `replication_factor` and is placed on fewer (format 7's requested_replication_factor),
    # as when only that many nodes were ACTIVE; the controller grows the sets.
    placed_replicas: int = 0
    # The first shard's leader crashes before its first batch reaches anyone (the liveness
    # gap of a two-replica creation whose leader died at once), and restarts later.
    first_leader_kill: bool = False
    reshards: bool = False  # splits, merges and shard-count updates (workloads.Workload)
    # Turns a node persists at once (the shell's `turns_in_flight_max`); None: drawn from the
    # seed's own stream (`SimCluster`), so the other draws stay what they were.
    turns_in_flight_max: int | None = None

    @staticmethod
    def randomized(rng: random.Random) -> SimConfig:
        nodes = rng.choice([3, 3, 3, 5])
        heartbeat_ms = rng.randint(10, 100)
        return SimConfig(
            nodes=nodes,
            shards=rng.randint(1, 3),
            replication_factor=rng.choice([3, 3, nodes]) if nodes == 5 else 3,
            knobs=ReplicationKnobs(
                heartbeat_ms=heartbeat_ms,
                resend_ms=heartbeat_ms + rng.randint(50, 500),
                append_bytes_max=rng.choice([64, 256, 4096, 1 << 20]),
                inflight_appends_max=rng.randint(1, 8),
                uncommitted_bytes_max=rng.choice([512, 4096, 1 << 20]),
                tail_cache_bytes_max=rng.choice([0, 128, 2048, 1 << 20]),
                read_bytes_max=rng.choice([64, 1024, 1 << 20]),
            ),
            tick_ms=rng.randint(5, 50),
            disk_ms_max=rng.randint(0, 10),
            failure_detect_ms=rng.randint(50, 400),
            election_timeout_ms=rng.randint(100, 600),
            produce_interval_ms_max=rng.randint(2, 30),
            drop_probability=rng.choice([0.0, 0.0, 0.01, 0.05, 0.2]),
            duplicate_probability=rng.choice([0.0, 0.01, 0.05]),
            network_delay_ms_max=rng.randint(1, 40),
            attrition=rng.random() < 0.7,
            partitions=rng.random() < 0.6,
            leader_kills=rng.random() < 0.6,
            leader_changes=rng.random() < 0.6,
            disk_loss=rng.random() < 0.4,
            placed_replicas=(placed := rng.choice([0, 0, 0, 2])),
            first_leader_kill=placed != 0 and rng.random() < 0.5,
            reshards=rng.random() < 0.6,
        )


@dataclass(slots=True, kw_only=True)
class PendingWrite:
    """A producer's write, as acknowledged (or not)."""

    shard_uid: ShardUid
    first_offset: Offset
    end_offset: Offset
    records: tuple[NewRecord, ...]
    # The set the acknowledging leader counts from when it answers (its current epoch's: the
    # image may already show the next epoch's set, e.g. one replica more, while a leader of
    # the previous epoch, not yet told, acknowledges on a majority of its own set; and a
    # write proposed under one set may be answered under the next, the same leader's).
    replica_set: tuple[NodeId, ...]
    # No disk was lost between the proposal and the acknowledgement: a majority of
    # `replica_set` must then hold the records durably (`AcknowledgedDurableOnMajority`).
    disks_kept: bool = True


@dataclass(slots=True, kw_only=True)
class _SimFlight:
    """A turn waiting for its fsync (`synced` once it came)."""

    turn: Turn
    synced: bool = False


@dataclass(slots=True, kw_only=True)
class SimNode:
    node_id: NodeId
    store: SimLogStore = field(default_factory=SimLogStore)
    alive: bool = True
    incarnation: int = 0  # raised by every crash; events of older incarnations are void
    disk_generation: int = 0  # raised by every disk loss
    # Shards whose replica this node lost with its disk and that has not rejoined yet, with
    # the floor it rejoins above (replica.py, "lost its disk").
    rejoin_floors: dict[ShardUid, int] = field(default_factory=dict)
    core: DriverCore | None = None  # None while down
    image: dict[ShardUid, ShardImage] = field(default_factory=dict)  # what reached this node
    metadata: MetadataImage = field(default_factory=MetadataImage)  # `image` as the core reads it
    turn_scheduled: bool = False
    # Turns waiting for their fsync, oldest first (finished in this order, as in the shell).
    flights: collections.deque[_SimFlight] = field(default_factory=collections.deque)
    dirty: bool = False  # an input arrived while a turn was in flight
    stepping_scheduled: bool = False  # messages that arrived in flight are about to be stepped
    next_sweep_ms: int = _SWEEP_INTERVAL_MS

    @property
    def in_flight(self) -> bool:
        """A turn waits for its fsync."""
        return bool(self.flights)

    @property
    def replicas(self) -> dict[ShardUid, ShardReplica]:
        core = self.core
        if core is None or not self.alive:
            return {}
        return {uid: local.replica for uid, local in core.locals.items()}

    def waiting(self, shard_uid: ShardUid) -> bool:
        """Producers still wait on this node's replica of the shard."""
        local = self.core.locals.get(shard_uid) if self.core is not None else None
        return local is not None and bool(local.waiters or local.orphans)


class _ProducerAnswer:
    """The completion of a producer's append (`driver_core.Completion`)."""

    def __init__(
        self,
        cluster: SimCluster,
        shard_uid: ShardUid,
        records: tuple[NewRecord, ...],
        node: SimNode,
    ) -> None:
        self._cluster = cluster
        self._shard_uid = shard_uid
        self._records = records
        self._node = node
        self._done = False
        self._disk_losses = cluster.disk_losses()

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Appended, /) -> None:
        assert not self._done
        self._done = True
        first = result[0]
        core = self._node.core
        assert core is not None, "an acknowledgement from a node without a driver core"
        self._cluster.workload.acknowledged(
            PendingWrite(
                shard_uid=self._shard_uid,
                first_offset=first,
                end_offset=Offset(first + len(self._records)),
                records=self._records,
                replica_set=core.locals[self._shard_uid].replica.replica_set,
                disks_kept=self._disk_losses == self._cluster.disk_losses(),
            )
        )

    def set_exception(self, exception: BaseException, /) -> None:
        assert not self._done
        self._done = True
        del exception
        self._cluster.workload.unknown()


class _PromiseAnswer:
    """The completion of a Prepare: the durable promise goes back to the controller."""

    def __init__(self, cluster: SimCluster, node: SimNode) -> None:
        self._cluster = cluster
        self._node = node
        self._incarnation = node.incarnation
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Promise, /) -> None:
        self._done = True
        node = self._node
        if node.alive and node.incarnation == self._incarnation:
            self._cluster.network.send(node.node_id, CONTROLLER, result)

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        del exception  # no answer: the controller's round times out


class Load(Protocol):
    """The workload as the cluster drives it (`workloads.Workload`)."""

    stopped_at_ms: int
    acknowledged_count: int
    unknown_count: int

    def start(self) -> None: ...

    def stop_at(self, now_ms: int) -> None: ...

    def acknowledged(self, write: PendingWrite) -> None: ...

    def unknown(self) -> None: ...


class Checks(Protocol):
    """The invariants as the cluster reports to them (`invariants.Invariants`)."""

    def after_step(self, label: str) -> None: ...

    def replica_started(self, node: SimNode, shard_uid: ShardUid) -> None: ...

    def check_leaders(self, node: SimNode) -> None: ...

    def observed_read(
        self,
        node_id: NodeId,
        shard_uid: ShardUid,
        start: Offset,
        hw: Offset,
        records: Sequence[StoredRecord],
    ) -> None: ...

    def final_check(self) -> None: ...


class Faults(Protocol):
    """The fault plans as the cluster starts them (`faults.FaultPlans`)."""

    fired: dict[str, int]

    def start(self) -> None: ...

    def crash_and_restart(self, node: SimNode) -> None: ...


class SimCluster:
    """The simulated cluster; see the module docstring. `observers` builds its workload,
    invariants and fault plans for it (`run.new_cluster`): they read the cluster, so the cluster
    knows them only by these protocols."""

    def __init__(
        self,
        seed: int,
        config: SimConfig | None = None,
        *,
        observers: Callable[[SimCluster], tuple[Load, Checks, Faults]],
    ) -> None:
        self.world = World(seed)
        self.config = config or SimConfig.randomized(self.world.random("config"))
        self._disk_rng = self.world.random("disk")
        # Turns of a node persisted at once (the shell's `turns_in_flight_max`): one at a
        # time in some runs, pipelined in most; its own stream, so the other draws stay put.
        self.turns_in_flight_max = self.config.turns_in_flight_max or self.world.random(
            "turns"
        ).choice([1, 2, limits.replication_turns_in_flight_max])
        buggify.enable(self.world.random("buggify"))
        self.network = SimNetwork(self.world, self._deliver)
        self.network.drop_probability = self.config.drop_probability
        self.network.duplicate_probability = self.config.duplicate_probability
        self.network.delay_ms_max = self.config.network_delay_ms_max
        self.nodes: dict[NodeId, SimNode] = {
            NodeId(f"n{i}"): SimNode(node_id=NodeId(f"n{i}")) for i in range(self.config.nodes)
        }
        # The metadata side: the real controller decides every leader change and replica move
        # over the real state machine (control.SimController).
        self.controller = SimController(
            self.world,
            node_ids=sorted(self.nodes),
            shards=self.config.shards,
            replication_factor=self.config.replication_factor,
            placed_replicas=self.config.placed_replicas,
            timing=ControlTiming.for_run(
                failure_detect_ms=self.config.failure_detect_ms,
                check_ms=self.config.controller_check_ms,
                round_timeout_ms=self.config.election_timeout_ms,
            ),
            nodes=self,
            send=self.network.send,
            publish=self._publish,
            reachable=lambda node_id: not self.network.is_blocked(node_id, CONTROLLER),
        )
        self.workload, self.invariants, self.faults = observers(self)
        self.faults_active = True
        for node in self.nodes.values():
            node.core = self._new_core(node)
        for node in self.nodes.values():
            self._schedule_tick(node)
        self.workload.start()
        self.faults.start()

    # --- Running ----------------------------------------------------------------------------

    def step(self) -> bool:
        label = self.world.step()
        if label is None:
            return False
        self.invariants.after_step(label)
        return True

    def heal(self) -> None:
        """The quiet phase: no more faults, a healed network, every node up."""
        self.faults_active = False
        self.controller.say(None, "quiet phase: no more faults, the network healed, all up")
        buggify.disable()
        self.network.heal()
        self.network.quiet()
        for node in self.nodes.values():
            if not node.alive:
                self.restart(node)

    def converged(self) -> bool:
        """No reshard under way, and every shard has its image's leader leading, with every
        replica caught up."""
        if any(stream.reshard is not None for stream in self.controller.image.streams.values()):
            return False
        for shard_uid, image in self.controller.shards.items():
            if image.leader is None:
                return False
            leader_node = self.nodes[image.leader]
            leader = leader_node.replicas.get(shard_uid)
            if not leader_node.alive or leader is None or leader.role is not Role.LEADER:
                return False
            stats = leader.statistics()
            if stats.epoch != image.epoch or stats.high_watermark != stats.log_end:
                return False
            for node_id in image.replicas:
                node = self.nodes[node_id]
                replica = node.replicas.get(shard_uid)
                if replica is None or not node.alive:
                    return False
                other = replica.statistics()
                if other.durable_end != stats.log_end or other.high_watermark != stats.log_end:
                    return False
                if node.waiting(shard_uid) or node.in_flight:
                    return False
        return True

    def summary(self) -> str:
        """A one-line status (STYLE B.5: node, role, epoch per shard)."""
        fired = buggify.fired()
        parts = [
            f"t={self.world.now_ms}ms steps={self.world.steps}",
            f"acked={self.workload.acknowledged_count} unknown={self.workload.unknown_count}",
            f"elections={self.controller.elections_committed}/{self.controller.elections_started}",
            f"reshards={self.controller.reshards_completed}/{self.controller.reshards_begun}",
            f"sent={self.network.sent} dropped={self.network.dropped}",
            f"buggify={','.join(f'{k}:{v}' for k, v in sorted(fired.items())) or '-'}",
        ]
        for shard_uid, image in sorted(self.controller.shards.items()):
            states = []
            for node_id in image.replicas:
                node = self.nodes[node_id]
                replica = node.replicas.get(shard_uid)
                if not node.alive or replica is None:
                    states.append(f"{node_id} down")
                    continue
                stats = replica.statistics()
                role = "L" if stats.role is Role.LEADER else "F"
                states.append(
                    f"{node_id} {role} e{stats.epoch}/p{stats.promised_epoch}"
                    f" end={stats.log_end} hw={stats.high_watermark}"
                )
            state = image.meta.state.name[0]  # Open, Sealing, Closed
            parts.append(
                f"[{shard_uid} {state} e{image.epoch} L={image.leader}: {'; '.join(states)}]"
            )
        return " ".join(parts)

    # --- Nodes ------------------------------------------------------------------------------

    def _new_core(self, node: SimNode) -> DriverCore:
        return DriverCore(
            node_id=node.node_id,
            store=node.store,
            knobs=self.config.knobs,
            rejoin_floors=node.rejoin_floors,
        )

    def crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        node.alive = False
        node.incarnation += 1
        self.controller.say(None, f"{node.node_id} crashes")
        node.store.crash()
        core = node.core
        node.core = None
        if core is not None:
            for local in core.locals.values():
                local.fail_waiters(_UNKNOWN)  # their producers learn nothing more
        node.image.clear()
        node.metadata = MetadataImage()
        node.turn_scheduled = node.dirty = node.stepping_scheduled = False
        node.flights.clear()

    # --- The nodes as the real controller reaches them (control.Nodes) ---------------------

    def heartbeat(self, node_id: NodeId) -> Heartbeat | None:
        node = self.nodes[node_id]
        core = node.core
        if not node.alive or core is None:
            return None
        return Heartbeat(rejoining=core.rejoining(), fenced=core.fenced_leaderships())

    def refuses_connections(self, node_id: NodeId) -> bool:
        return not self.nodes[node_id].alive

    def replica_status(self, node_id: NodeId, shard_uid: ShardUid) -> ReplicaStatus | None:
        node = self.nodes[node_id]
        replica = node.replicas.get(shard_uid)
        if replica is None or self.network.is_blocked(CONTROLLER, node_id):
            return None
        stats = replica.statistics()
        return ReplicaStatus(
            log_end=stats.durable_end,
            hw=stats.high_watermark,
            last_epoch=stats.durable_last_epoch,
        )

    def disk_generation(self, node_id: NodeId) -> int:
        return self.nodes[node_id].disk_generation

    def seal(
        self,
        node_id: NodeId,
        shard_uid: ShardUid,
        epoch: int,
        answer: Callable[[Offset | None], None],
    ) -> None:
        """The controller's seal request, served as the driver shell's `seal` serves it: the
        node applies its newest image, then asks `DriverCore.sealed_end` after its turns until
        it answers or the request's wait runs out. The request and its answer cross the
        network (a partition or a crash leaves the controller without one until its timeout).
        BUGGIFY `controller.change_during_seal`: the leader crashes just after answering, so a
        leader change of the parent runs while the controller completes the reshard."""
        rng = self.world.random("seals")
        timeout_ms = self.config.election_timeout_ms
        deadline = self.world.now_ms + timeout_ms
        node = self.nodes[node_id]
        incarnation = node.incarnation

        def lost() -> None:
            answer(None)

        def reply(end: Offset | None) -> None:
            if self.network.is_blocked(node_id, CONTROLLER):
                self.world.schedule(max(0, deadline - self.world.now_ms), "seal lost", lost)
                return
            delay = rng.randint(0, self.config.network_delay_ms_max)
            self.world.schedule(delay, f"seal answer {shard_uid}", lambda: answer(end))

        def ask() -> None:
            if not node.alive or node.incarnation != incarnation or node.core is None:
                self.world.schedule(max(0, deadline - self.world.now_ms), "seal lost", lost)
                return
            self._apply(node)
            end = node.core.sealed_end(shard_uid, epoch)
            if end is None and self.world.now_ms < deadline:
                self._kick(node)
                self.world.schedule(max(1, self.config.disk_ms_max), f"seal {shard_uid}", ask)
                return
            reply(end)
            if (
                end is not None
                and self.faults_active
                and buggify.buggify("controller.change_during_seal", rate=0.5)
            ):
                self.faults.crash_and_restart(node)

        if not node.alive or self.network.is_blocked(CONTROLLER, node_id):
            self.world.schedule(timeout_ms, "seal lost", lost)
            return
        self.world.schedule(rng.randint(0, self.config.network_delay_ms_max), "seal", ask)

    def disk_losses(self) -> int:
        return sum(node.disk_generation for node in self.nodes.values())

    def lose_disk(self, node: SimNode) -> None:
        self.crash(node)
        node.store.lose_disk()
        node.disk_generation += 1
        # The controller prepares image epoch + 1, so the node's floor is the image's epoch
        # (node.py), or just below the epoch of a Prepare already in flight. Never below the
        # image's epoch: its leader may have counted the node's lost log (its view of the node
        # goes back only for acks flagged rejoining, replica.py).
        node.rejoin_floors = {
            shard_uid: max(image.epoch, self.controller.prepared_epoch(shard_uid) - 1)
            for shard_uid, image in self.controller.shards.items()
            if node.node_id in image.replicas
        }
        self.controller.say(
            None, f"{node.node_id} lost its disk: rejoin floors {node.rejoin_floors}"
        )

    def restart(self, node: SimNode) -> None:
        assert not node.alive
        self.controller.say(None, f"{node.node_id} restarts")
        node.alive = True
        self.controller.node_started(node.node_id)  # registers: a new incarnation
        node.core = self._new_core(node)
        for shard_uid, image in sorted(self.controller.shards.items()):
            if node.node_id in image.replicas:
                node.image[shard_uid] = image  # a restarting node reads the current image
        self._configure(node)
        self._schedule_tick(node)

    def _publish(self, image: ShardImage) -> None:
        rng = self.world.random("images")
        for node in self.nodes.values():
            if node.node_id not in image.replicas:
                continue
            self._schedule_image(node, image, rng.randint(0, 30))

    def _schedule_image(self, node: SimNode, image: ShardImage, delay_ms: int) -> None:
        incarnation = node.incarnation
        self.world.schedule(
            delay_ms,
            f"image {image.shard_uid} e{image.epoch} -> {node.node_id}",
            lambda: self._image_arrives(node, incarnation, image),
        )

    def _image_arrives(self, node: SimNode, incarnation: int, image: ShardImage) -> None:
        if not node.alive or node.incarnation != incarnation:
            return
        known = node.image.get(image.shard_uid)
        if known is not None and (known.version, known.epoch, known.sealing) >= (
            image.version,
            image.epoch,
            image.sealing,
        ):
            return
        node.image[image.shard_uid] = image
        self._configure(node)

    def _configure(self, node: SimNode) -> None:
        """The node's view of the metadata as the real image: one stream holding the shards
        whose entries reached it (children appear there once CompleteReshard's entries
        arrive, and the core opens them as the node's driver does: `DriverCore.apply_image`)."""
        shards = tuple(image.meta for _, image in sorted(node.image.items()))
        stream = StreamMeta(
            name=StreamName("sim"),
            uid=StreamUid(1),
            arn=arns.regional("kinesis", "us-east-1", "000000000000", "stream/sim"),
            created_ms=0,
            mode=StreamMode.PROVISIONED,
            retention_hours=24,
            shards=shards,
            next_shard_index=ShardIndex(len(shards)),
            transient_status=None,
        )
        node.metadata = MetadataImage(streams={stream.name: stream})
        self._kick(node)

    def _schedule_tick(self, node: SimNode) -> None:
        incarnation = node.incarnation
        self.world.schedule(
            self.config.tick_ms, f"tick {node.node_id}", lambda: self._tick(node, incarnation)
        )

    def _tick(self, node: SimNode, incarnation: int) -> None:
        if not node.alive or node.incarnation != incarnation or node.core is None:
            return
        now = self.world.now_ms
        node.core.tick_due(now)
        if now >= node.next_sweep_ms:
            node.core.tick_all(now)
            node.next_sweep_ms = now + _SWEEP_INTERVAL_MS
        self._kick(node)
        self._schedule_tick(node)

    # --- Inputs -----------------------------------------------------------------------------

    def _deliver(self, sender: NodeId, receiver: NodeId, message: ReplicationMessage) -> None:
        del sender
        if receiver == CONTROLLER:
            self.controller.receive(message)
            return
        node = self.nodes[receiver]
        if not node.alive or node.core is None:
            return
        if isinstance(message, Prepare):
            self._apply(node)  # as the shell's prepare() looks the replica up
            node.core.prepare(
                message.shard_uid,
                message.epoch,
                now_ms=self.world.now_ms,
                completion=_PromiseAnswer(self, node),
            )
        else:
            node.core.deliver(message)
        self._kick(node)

    def propose(self, node: SimNode, shard_uid: ShardUid, records: tuple[NewRecord, ...]) -> bool:
        """A producer's write at `node`, as the shell's `append` makes it; whether the node's
        replica accepted it."""
        core = node.core
        if not node.alive or core is None:
            return False
        self._apply(node)
        local = core.locals.get(shard_uid)
        if local is None or len(local.waiters) >= self.config.pending_writes_max:
            return False
        try:
            core.propose(
                shard_uid,
                epoch=local.epoch,
                records=records,
                now_ms=self.world.now_ms,
                completion=_ProducerAnswer(self, shard_uid, records, node),
            )
        except (ShardRefusedError, ShoalError):
            return False
        self._kick(node)
        return True

    # --- The driver shell's loop ------------------------------------------------------------

    def _apply(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        before = set(core.locals)
        now = self.world.now_ms
        core.apply_image(node.metadata, now_ms=now, wall_ms=now)
        for shard_uid in sorted(set(core.locals) - before):
            self.invariants.replica_started(node, shard_uid)

    def _kick(self, node: SimNode) -> None:
        """A turn soon (at once, as the shell's wake-up), unless one is already coming; with
        turns in flight, a pipelined one while there is room (the shell's
        `turns_in_flight_max`), else the messages are stepped meanwhile."""
        if len(node.flights) >= self.turns_in_flight_max:
            node.dirty = True
            self._schedule_stepping(node)
            return
        if node.turn_scheduled:
            return
        node.turn_scheduled = True
        incarnation = node.incarnation
        self.world.schedule(0, f"turn {node.node_id}", lambda: self._turn(node, incarnation))

    def _schedule_stepping(self, node: SimNode) -> None:
        """As the shell with a full pipeline: messages that arrive while turns wait for their
        fsync are stepped at once (a leader answers the producers a follower's ack commits),
        or, BUGGIFY `driver.step_late`, a little later, sometimes only by the next turn."""
        core = node.core
        if node.stepping_scheduled or core is None or not core.inbox_waiting():
            return
        node.stepping_scheduled = True
        delay = 0
        if buggify.buggify("driver.step_late"):
            delay = self._disk_rng.randint(1, max(1, self.config.disk_ms_max))
        incarnation = node.incarnation
        self.world.schedule(
            delay, f"step {node.node_id}", lambda: self._step_in_flight(node, incarnation)
        )

    def _step_in_flight(self, node: SimNode, incarnation: int) -> None:
        if not node.alive or node.incarnation != incarnation or node.core is None:
            return
        node.stepping_scheduled = False
        if not node.in_flight:
            return  # the turn ended first: the next one steps them
        self._apply(node)
        self.invariants.check_leaders(node)
        node.core.drain_inbox(self.world.now_ms, node.metadata)

    def _turn(self, node: SimNode, incarnation: int) -> None:
        if not node.alive or node.incarnation != incarnation or node.core is None:
            return
        node.turn_scheduled = False
        core = node.core
        now = self.world.now_ms
        self._apply(node)
        # Before any message meets the new configuration: a second leader shows here first.
        self.invariants.check_leaders(node)
        core.drain_inbox(now, node.metadata)
        flights = node.flights
        if not flights:
            turn: Turn | None = core.take_turn()
        elif len(flights) < self.turns_in_flight_max:
            turn = core.take_pipelined_turn()
        else:
            turn = None
        if turn is None:
            node.dirty = True  # taken once the turns in flight end
            return
        if not turn.work:
            # As the shell: nothing to send or answer (a pipelined turn holds no Prepare).
            self._after(node, core.finish(turn))
            return
        ahead = core.send_ahead(turn)
        for envelope in ahead:  # as the shell: before the fsync
            self.network.send(node.node_id, envelope.to, envelope.message)
        plan = core.persist_plan(turn, wall_ms=now)
        run_calls(node.store, plan.before)
        if plan.appends:
            node.store.append(plan.appends)
        # High watermarks beside the appends: the shell writes them on another thread, so
        # they land before the fsync or, BUGGIFY, after it (then only the next one carries them).
        late: tuple[StoreCall, ...] = ()
        if plan.beside and buggify.buggify("driver.hw_after_fsync"):
            late = plan.beside
        else:
            run_calls(node.store, plan.beside)
        if (
            ahead
            and plan.appends
            and self.faults_active
            and buggify.buggify("node.crash_before_fsync")
        ):
            # Next, before the fsync below can come (its event is void after a crash): the
            # writes were sent and are lost here. A separate event, so the invariants first
            # see what this turn's acknowledgements committed.
            self.world.schedule(
                0, f"crash before fsync {node.node_id}", lambda: self._crash_in(node, incarnation)
            )
        delay = self._disk_rng.randint(0, self.config.disk_ms_max)
        if buggify.buggify("disk.slow_fsync"):
            delay += self._disk_rng.randint(50, 800)
        flight = _SimFlight(turn=turn)
        flights.append(flight)

        def persisted() -> None:
            if not node.alive or node.incarnation != incarnation or node.core is not core:
                return
            node.store.sync()
            run_calls(node.store, late)
            flight.synced = True
            self._finish_synced(node, core)

        self.world.schedule(delay, f"fsync {node.node_id}", persisted)

    def _finish_synced(self, node: SimNode, core: DriverCore) -> None:
        """Finishes the turns whose fsync came, in the order they were taken: a later
        turn's fsync may come first (random disk delays), its finish waits."""
        while node.flights and node.flights[0].synced:
            self._after(node, core.finish(node.flights.popleft().turn))

    def _crash_in(self, node: SimNode, incarnation: int) -> None:
        if node.alive and node.incarnation == incarnation:
            self.faults.crash_and_restart(node)

    def _read(self, node: SimNode, core: DriverCore, local: Local, request: ReadRequest) -> None:
        """A follower's catch-up read of this node's log, fed back to the core."""
        if not node.alive or node.core is not core:
            return
        batches = node.store.read_batches(
            request.shard_uid,
            start_offset=request.start_offset,
            end_offset=request.end_offset,
            bytes_max=request.bytes_max,
        )
        if core.read_done(local, request, batches, self.world.now_ms):
            self._kick(node)

    def _after(self, node: SimNode, effects: TurnEffects) -> None:
        core = node.core
        assert core is not None
        for envelope in effects.sends:
            self.network.send(node.node_id, envelope.to, envelope.message)
        for local, request in effects.reads:
            self.world.schedule(
                self._disk_rng.randint(0, self.config.disk_ms_max),
                f"read {node.node_id}",
                functools.partial(self._read, node, core, local, request),
            )
        if node.rejoin_floors:
            core.rejoining()  # the heartbeat's report: forgets the replicas that rejoined
            node.rejoin_floors = {
                uid: floor
                for uid, floor in node.rejoin_floors.items()
                if uid not in core.locals
                or core.locals[uid].replica.statistics().rejoin_floor is not None
            }
        if effects.again or node.dirty:
            node.dirty = False
            self._kick(node)
