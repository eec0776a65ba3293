"""`SimCluster`: N nodes x M shards of real `ShardReplica`s, driven by the event heap.

Each simulated node plays the driver's part (decisions/0002): it feeds its replicas messages,
ticks and proposals, and executes their Readys in the driver's order: apply the Ready to its
`SimLogStore`, wait for the simulated fsync (a random disk delay), `sync()`, then send, read,
answer producers and `advance`. A crash drops the node's unsynced writes and everything in
flight for it (events carry the node's incarnation); a restart rebuilds the replicas from what
the store kept durable and the current metadata image.

A run (`run_seed`) has a fault phase of a given number of events, with the fault plans of
`faults.py` active, then a quiet phase: faults stop, the network heals, every node restarts,
and the cluster must converge (every shard led, every replica caught up) within a bounded
virtual time. `invariants.py` checks after every event and at the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from broker.log.records import NewRecord
from broker.replication.messages import Promise, ReplicationMessage
from broker.replication.replica import (
    Proposal,
    Ready,
    ReplicaDurableState,
    ReplicationKnobs,
    Role,
    ShardReplica,
)
from broker.sim.disk import SimLogStore
from broker.sim.network import SimNetwork
from broker.sim.quorum import CONTROLLER, ShardImage, SimMetadataQuorum
from broker.sim.world import World
from broker.types import NodeId, Offset, ShardUid


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
        )


@dataclass(slots=True, kw_only=True)
class PendingWrite:
    """A proposal a node's producer waits on."""

    shard_uid: ShardUid
    epoch: int
    first_offset: Offset
    end_offset: Offset
    records: tuple[NewRecord, ...]


@dataclass(slots=True, kw_only=True)
class _HeldPromise:
    promise: Promise
    after_ready_no: int  # send once a Ready with a number >= this one is advanced


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
    replicas: dict[ShardUid, ShardReplica] = field(default_factory=dict)
    outstanding: dict[ShardUid, tuple[int, Ready]] = field(default_factory=dict)
    ready_no: dict[ShardUid, int] = field(default_factory=dict)
    held: dict[ShardUid, list[_HeldPromise]] = field(default_factory=dict)
    pending: dict[ShardUid, list[PendingWrite]] = field(default_factory=dict)
    image: dict[ShardUid, ShardImage] = field(default_factory=dict)


class SimCluster:
    """The simulated cluster; see the module docstring."""

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        # Imported here: workloads, invariants and faults take the cluster as an argument.
        from broker.sim.faults import FaultPlans
        from broker.sim.invariants import Invariants
        from broker.sim.workloads import Workload

        self.world = World(seed)
        self.config = config or SimConfig.randomized(self.world.random("config"))
        self._disk_rng = self.world.random("disk")
        self._placement_rng = self.world.random("placement")
        self.network = SimNetwork(self.world, self._deliver)
        self.network.drop_probability = self.config.drop_probability
        self.network.duplicate_probability = self.config.duplicate_probability
        self.network.delay_ms_max = self.config.network_delay_ms_max
        self.nodes: dict[NodeId, SimNode] = {
            NodeId(f"n{i}"): SimNode(node_id=NodeId(f"n{i}")) for i in range(self.config.nodes)
        }
        self.quorum = SimMetadataQuorum(
            self.world,
            send=self.network.send,
            publish=self._publish,
            disk_generation=lambda node: self.nodes[node].disk_generation,
            round_timeout_ms=self.config.election_timeout_ms,
        )
        self.workload = Workload(self)
        self.invariants = Invariants(self)
        self.faults = FaultPlans(self)
        self.faults_active = True
        self._suspect_since: dict[ShardUid, int] = {}
        node_ids = sorted(self.nodes)
        for index in range(self.config.shards):
            shard_uid = ShardUid(100 + index)
            replicas = tuple(self._placement_rng.sample(node_ids, self.config.replication_factor))
            for node_id in replicas:
                self._start_replica(self.nodes[node_id], shard_uid)
            self.quorum.create_shard(shard_uid, replicas)
        for node in self.nodes.values():
            self._schedule_tick(node)
        self.world.schedule(self.config.controller_check_ms, "controller", self._controller_check)
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
        self.network.heal()
        self.network.quiet()
        for node in self.nodes.values():
            if not node.alive:
                self.restart(node)

    def converged(self) -> bool:
        """Every shard has its image's leader leading, with every replica caught up."""
        for shard_uid, image in self.quorum.shards.items():
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
                if node.pending.get(shard_uid) or shard_uid in node.outstanding:
                    return False
        return True

    def summary(self) -> str:
        """A one-line status (STYLE B.5: node, role, epoch per shard)."""
        parts = [
            f"t={self.world.now_ms}ms steps={self.world.steps}",
            f"acked={self.workload.acknowledged_count} unknown={self.workload.unknown_count}",
            f"elections={self.quorum.elections_committed}/{self.quorum.elections_started}",
            f"sent={self.network.sent} dropped={self.network.dropped}",
        ]
        for shard_uid, image in sorted(self.quorum.shards.items()):
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
            parts.append(f"[{shard_uid} e{image.epoch} L={image.leader}: {'; '.join(states)}]")
        return " ".join(parts)

    # --- Nodes ------------------------------------------------------------------------------

    def _start_replica(self, node: SimNode, shard_uid: ShardUid) -> None:
        durable = ReplicaDurableState.from_store(
            node.store, shard_uid, rejoin_floor=node.rejoin_floors.get(shard_uid)
        )
        node.replicas[shard_uid] = ShardReplica(
            shard_uid, node.node_id, durable, knobs=self.config.knobs
        )
        node.pending[shard_uid] = []
        node.held[shard_uid] = []
        node.ready_no.setdefault(shard_uid, 0)
        self.invariants.replica_started(node, shard_uid)

    def crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        node.alive = False
        node.incarnation += 1
        node.store.crash()
        for writes in node.pending.values():
            for write in writes:
                self.workload.unknown(write)
        node.replicas.clear()
        node.outstanding.clear()
        node.held.clear()
        node.pending.clear()
        node.image.clear()

    def lose_disk(self, node: SimNode) -> None:
        self.crash(node)
        node.store.lose_disk()
        node.disk_generation += 1
        # The real controller prepares image epoch + 1, so the node's floor is the image's
        # epoch (node.py); this one prepares above every epoch it prepared before, so the
        # floor is just below the highest epoch any Prepare carried so far.
        node.rejoin_floors = {
            shard_uid: self.quorum.prepared_epoch(shard_uid) - 1
            for shard_uid, image in self.quorum.shards.items()
            if node.node_id in image.replicas
        }

    def restart(self, node: SimNode) -> None:
        assert not node.alive
        node.alive = True
        for shard_uid, image in sorted(self.quorum.shards.items()):
            if node.node_id in image.replicas:
                self._start_replica(node, shard_uid)
                self._configure(node, image)  # a restarting node reads the current image
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
        if known is not None and (known.epoch, known.sealing) >= (image.epoch, image.sealing):
            return
        self._configure(node, image)

    def _configure(self, node: SimNode, image: ShardImage) -> None:
        node.image[image.shard_uid] = image
        replica = node.replicas[image.shard_uid]
        replica.configure(
            epoch=image.epoch,
            leader=image.leader,
            replicas=image.replicas,
            sealing=image.sealing,
            now_ms=self.world.now_ms,
        )
        self.pump(node, image.shard_uid)

    def _schedule_tick(self, node: SimNode) -> None:
        incarnation = node.incarnation
        self.world.schedule(
            self.config.tick_ms, f"tick {node.node_id}", lambda: self._tick(node, incarnation)
        )

    def _tick(self, node: SimNode, incarnation: int) -> None:
        if not node.alive or node.incarnation != incarnation:
            return
        for shard_uid, replica in sorted(node.replicas.items()):
            replica.tick(self.world.now_ms)
            self.pump(node, shard_uid)
        self._schedule_tick(node)

    # --- The driver's loop ------------------------------------------------------------------

    def _deliver(self, sender: NodeId, receiver: NodeId, message: ReplicationMessage) -> None:
        del sender
        if receiver == CONTROLLER:
            self.quorum.receive(message)
            return
        node = self.nodes[receiver]
        if not node.alive:
            return
        replica = node.replicas.get(message.shard_uid)
        if replica is None:
            return
        promise = replica.step(message, self.world.now_ms)
        if promise is not None:
            after = node.ready_no[message.shard_uid] + 1
            node.held[message.shard_uid].append(_HeldPromise(promise=promise, after_ready_no=after))
        self.pump(node, message.shard_uid)

    def propose(self, node: SimNode, shard_uid: ShardUid, records: tuple[NewRecord, ...]) -> bool:
        """A producer's write at `node`; whether the node's replica accepted it."""
        replica = node.replicas.get(shard_uid)
        if not node.alive or replica is None:
            return False
        if len(node.pending[shard_uid]) >= self.config.pending_writes_max:
            return False
        result = replica.propose(records, self.world.now_ms)
        if not isinstance(result, Proposal):
            return False
        node.pending[shard_uid].append(
            PendingWrite(
                shard_uid=shard_uid,
                epoch=result.epoch,
                first_offset=result.first_offset,
                end_offset=result.end_offset,
                records=records,
            )
        )
        self.pump(node, shard_uid)
        return True

    def pump(self, node: SimNode, shard_uid: ShardUid) -> None:
        """Takes the replica's next Ready, persists it, and completes it after the fsync."""
        replica = node.replicas.get(shard_uid)
        if not node.alive or replica is None or shard_uid in node.outstanding:
            return
        if not replica.has_ready() and not node.held[shard_uid]:
            return
        ready = replica.ready()
        node.ready_no[shard_uid] += 1
        number = node.ready_no[shard_uid]
        node.outstanding[shard_uid] = (number, ready)
        store = node.store
        if ready.reset_to is not None:
            store.reset_log(shard_uid, log_start=ready.reset_to)
        if ready.truncate_from is not None:
            store.truncate_suffix(shard_uid, from_offset=ready.truncate_from)
        if ready.promise is not None:
            store.promise(shard_uid, ready.promise)
        if ready.appends:
            store.append(ready.appends)
        if ready.high_watermark is not None:
            store.set_high_watermark(shard_uid, ready.high_watermark)
        incarnation = node.incarnation
        delay = self._disk_rng.randint(0, self.config.disk_ms_max) if ready.needs_persist() else 0
        self.world.schedule(
            delay,
            f"fsync {node.node_id} {shard_uid}",
            lambda: self._persisted(node, incarnation, shard_uid, number, ready),
        )

    def _persisted(
        self, node: SimNode, incarnation: int, shard_uid: ShardUid, number: int, ready: Ready
    ) -> None:
        if not node.alive or node.incarnation != incarnation:
            return
        node.store.sync()
        replica = node.replicas[shard_uid]
        for envelope in ready.to_send:
            self.network.send(node.node_id, envelope.to, envelope.message)
        held = node.held[shard_uid]
        for entry in [entry for entry in held if entry.after_ready_no <= number]:
            held.remove(entry)
            self.network.send(node.node_id, CONTROLLER, entry.promise)
        for request in ready.reads:
            batches = node.store.read_batches(
                shard_uid,
                start_offset=request.start_offset,
                end_offset=request.end_offset,
                bytes_max=request.bytes_max,
            )
            replica.read_done(request, batches, self.world.now_ms)
        self._answer_producers(node, shard_uid, ready)
        del node.outstanding[shard_uid]
        replica.advance(ready)
        if shard_uid in node.rejoin_floors and replica.statistics().rejoin_floor is None:
            del node.rejoin_floors[shard_uid]
        self.pump(node, shard_uid)

    def _answer_producers(self, node: SimNode, shard_uid: ShardUid, ready: Ready) -> None:
        pending = node.pending[shard_uid]
        if ready.abandoned:
            for write in pending:
                self.workload.unknown(write)
            pending.clear()
        if ready.committed_end is None:
            return
        done = [write for write in pending if write.end_offset <= ready.committed_end]
        for write in done:
            pending.remove(write)
            self.workload.acknowledged(write)

    # --- The controller's failure detector --------------------------------------------------

    def _controller_check(self) -> None:
        now = self.world.now_ms
        for shard_uid, image in sorted(self.quorum.shards.items()):
            if self._rejoined(image) and not self.quorum.electing(shard_uid):
                self.quorum.start_election(shard_uid)  # the real controller's "rejoined"
                continue
            if self._leader_healthy(image):
                self._suspect_since.pop(shard_uid, None)
                continue
            since = self._suspect_since.setdefault(shard_uid, now)
            if now - since >= self.config.failure_detect_ms and not self.quorum.electing(shard_uid):
                self.quorum.start_election(shard_uid)
                self._suspect_since.pop(shard_uid, None)
        self.world.schedule(self.config.controller_check_ms, "controller", self._controller_check)

    def _rejoined(self, image: ShardImage) -> bool:
        """A replica lost with its disk caught up and waits for a new epoch to count again
        (what its heartbeats tell the real controller)."""
        for node_id in image.replicas:
            node = self.nodes[node_id]
            replica = node.replicas.get(image.shard_uid)
            if not node.alive or replica is None:
                continue
            stats = replica.statistics()
            if stats.rejoin_floor is not None and not stats.recovering:
                return stats.epoch == image.epoch
        return False

    def _leader_healthy(self, image: ShardImage) -> bool:
        """What the real controller learns from heartbeats: the leader is up, reachable, and
        not fenced (it reports a promised epoch above the image's)."""
        if image.leader is None:
            return False
        node = self.nodes[image.leader]
        if not node.alive or self.network.is_blocked(CONTROLLER, node.node_id):
            return False
        replica = node.replicas.get(image.shard_uid)
        if replica is None:
            return False
        stats = replica.statistics()
        return not (stats.promised_epoch > image.epoch or stats.recovering)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    seed: int
    steps: int
    virtual_ms: int
    violation: str | None
    summary: str

    @property
    def ok(self) -> bool:
        return self.violation is None


QUIET_PRODUCE_MS = 1_000  # producers keep writing this long into the quiet phase


def run_seed(seed: int, *, steps: int = 3_000, quiet_ms_max: int = 30_000) -> SimResult:
    """One simulated run: `steps` events with faults, then the quiet phase and final checks."""
    from broker.sim.invariants import InvariantViolation

    cluster = SimCluster(seed)
    try:
        while cluster.world.steps < steps and cluster.step():
            pass
        cluster.heal()
        cluster.workload.stop_at(cluster.world.now_ms + QUIET_PRODUCE_MS)
        deadline = cluster.world.now_ms + quiet_ms_max
        while cluster.world.now_ms < deadline:
            if not cluster.step():
                break
            if cluster.world.now_ms > cluster.workload.stopped_at_ms and cluster.converged():
                break
        cluster.invariants.final_check()
    except InvariantViolation as violation:
        return SimResult(
            seed=seed,
            steps=cluster.world.steps,
            virtual_ms=cluster.world.now_ms,
            violation=str(violation),
            summary=cluster.summary(),
        )
    except AssertionError as error:
        return SimResult(
            seed=seed,
            steps=cluster.world.steps,
            virtual_ms=cluster.world.now_ms,
            violation=f"AssertionError (a core assertion): {error!r}",
            summary=cluster.summary(),
        )
    return SimResult(
        seed=seed,
        steps=cluster.world.steps,
        virtual_ms=cluster.world.now_ms,
        violation=None,
        summary=cluster.summary(),
    )
