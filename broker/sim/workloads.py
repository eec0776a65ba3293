"""Producers and readers for the simulator, remembering what was acknowledged (STYLE B.5).

Producers write uniquely identifiable records (the data names the shard and a sequence number;
producers never retry, so every record is written at most once) to a random shard that is not
closed (refused while it seals; once a reshard closed a parent, sometimes to any shard, closed
ones too: stale routing), at the node they believe leads it, usually the committed image's
leader, sometimes a random node. (A shard, not a hash key, is drawn: without reshards a seed
replays as it did before them.)

Reshards (`SimConfig.reshards`): now and then an operator splits a shard, merges two or
updates the shard count (`SimController.begin_reshard`, the real BeginReshard), while the
producers go on; the real controller seals the parents and completes it.
A write is acknowledged when its node's Ready reports it committed; it is "unknown" if the
node crashed or stopped leading first (it may or may not survive: both are correct).

Readers read a random range below a random replica's HW through `LogStore.read` (the path
GetRecords takes), and `invariants.py` compares what they saw with the committed log.
"""

from __future__ import annotations

from broker.log.records import NewRecord
from broker.meta.image import ShardState
from broker.sim.cluster import PendingWrite, SimCluster
from broker.types import NodeId, Offset, ShardUid

_CLOSED = ShardState.CLOSED
# Reshards per run, and the open shards a reshard may lead to: each shard, closed ones too,
# is a replica on every node of its set for the rest of the run (the simulator's speed).
_RESHARDS_MAX = 3
_OPEN_SHARDS_MAX = 4
_RESHARD_EVERY_MS = (30, 300)


class Workload:
    def __init__(self, cluster: SimCluster) -> None:
        self._cluster = cluster
        self._rng = cluster.world.random("workload")
        self._reshard_rng = cluster.world.random("reshards")
        self._next_id = 0
        self.stopped_at_ms = 2**62
        # shard -> offset -> (partition key, data) of every acknowledged record
        self.acknowledged_records: dict[ShardUid, dict[Offset, tuple[str, bytes]]] = {}
        self.acknowledged_count = 0
        self.unknown_count = 0
        # (shard, offset, partition key, data, whether no disk was lost while it was pending)
        # (shard, offset, key, data, the acknowledging leader's set, no disk lost meanwhile)
        self.newly_acknowledged: list[
            tuple[ShardUid, Offset, str, bytes, tuple[NodeId, ...], bool]
        ] = []

    def start(self) -> None:
        world = self._cluster.world
        world.schedule(1, "produce", self._produce)
        world.schedule(5, "read", self._read)
        if self._cluster.config.reshards:
            world.schedule(self._reshard_rng.randint(*_RESHARD_EVERY_MS), "reshard", self._reshard)

    def stop_at(self, now_ms: int) -> None:
        self.stopped_at_ms = now_ms

    # --- Producers --------------------------------------------------------------------------

    def _produce(self) -> None:
        cluster = self._cluster
        if cluster.world.now_ms >= self.stopped_at_ms:
            return
        shards = cluster.controller.shards
        live = sorted(uid for uid, image in shards.items() if image.meta.state is not _CLOSED)
        if len(live) < len(shards) and self._rng.random() < 0.05:
            live = sorted(shards)  # stale routing, to a closed parent too
        shard_uid = self._rng.choice(live)
        image = shards[shard_uid]
        if image.leader is not None and self._rng.random() < 0.9:
            node_id = image.leader
        else:
            node_id = self._rng.choice(image.replicas)
        records = tuple(self._record(shard_uid) for _ in range(self._rng.randint(1, 3)))
        cluster.propose(cluster.nodes[node_id], shard_uid, records)
        cluster.world.schedule(
            self._rng.randint(1, cluster.config.produce_interval_ms_max), "produce", self._produce
        )

    def _reshard(self) -> None:
        cluster = self._cluster
        if cluster.world.now_ms >= self.stopped_at_ms:
            return
        controller = cluster.controller
        open_shards = sum(not image.sealing for image in controller.shards.values())
        if controller.reshards_proposed < _RESHARDS_MAX and open_shards < _OPEN_SHARDS_MAX:
            controller.begin_reshard(self._reshard_rng, target_shard_count_max=_OPEN_SHARDS_MAX)
        cluster.world.schedule(
            self._reshard_rng.randint(*_RESHARD_EVERY_MS), "reshard", self._reshard
        )

    def _record(self, shard_uid: ShardUid) -> NewRecord:
        self._next_id += 1
        return NewRecord(
            partition_key=f"k{self._next_id % 7}",
            data=f"{shard_uid}:{self._next_id}".encode(),
        )

    def acknowledged(self, write: PendingWrite) -> None:
        records = self.acknowledged_records.setdefault(write.shard_uid, {})
        for index, record in enumerate(write.records):
            offset = Offset(write.first_offset + index)
            assert offset not in records, ("two acknowledged records at one offset", offset)
            records[offset] = (record.partition_key, record.data)
            self.newly_acknowledged.append(
                (
                    write.shard_uid,
                    offset,
                    record.partition_key,
                    record.data,
                    write.replica_set,
                    write.disks_kept,
                )
            )
        self.acknowledged_count += 1

    def unknown(self) -> None:
        """A write whose outcome its producer never learns (it may or may not survive)."""
        self.unknown_count += 1

    # --- Readers ----------------------------------------------------------------------------

    def _read(self) -> None:
        cluster = self._cluster
        node = cluster.nodes[self._rng.choice(sorted(cluster.nodes))]
        if node.alive and node.replicas:
            shard_uid = self._rng.choice(sorted(node.replicas))
            hw = node.replicas[shard_uid].high_watermark
            start = Offset(self._rng.randint(0, hw)) if hw > 0 else Offset(0)
            records = node.store.read(
                shard_uid,
                start_offset=start,
                end_offset=hw,
                records_max=self._rng.randint(1, 50),
                bytes_max=self._rng.randint(1, 400),
            )
            cluster.invariants.observed_read(node.node_id, shard_uid, start, hw, records)
        cluster.world.schedule(self._rng.randint(1, 20), "read", self._read)
