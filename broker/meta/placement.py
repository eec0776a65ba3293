"""Deterministic shard placement: which nodes hold a shard's replicas, and which one leads.

Pure functions over a MetadataImage. `state_machine.apply` calls them (CreateStream), so they
must compute the same answer on every replica of the metadata quorum: no clock, no randomness,
no dict-order dependence (every choice is a sort with the node id as the last key). The
controller uses the same load counts to pick replica-move targets and to rebalance leaders.

Load is counted over the shards that take writes (OPEN and SEALING) of live streams: a closed
shard still holds data but costs its nodes nothing per record.

Rules (docs/decisions/0002, "Interfaces"):
- replicas go to the ACTIVE nodes holding the fewest replicas, ties by fewest leaderships,
  then by node id;
- the leader is the chosen node leading the fewest shards (ties: fewest replicas, node id),
  and it is listed first, so it is also the preferred leader;
- shards are placed one after the other, each seeing the load the previous ones added, so one
  CreateStream spreads its own shards too.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.meta.image import MetadataImage, ShardMeta, ShardState
from broker.types import NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """One shard's replica set (preference order; the leader first) and its leader."""

    replicas: tuple[NodeId, ...]
    leader: NodeId


@dataclass(slots=True, kw_only=True)
class NodeLoads:
    """Replica and leader counts per ACTIVE node; mutable while one placement runs."""

    replicas: dict[NodeId, int]
    leaders: dict[NodeId, int]

    def add(self, placement: Placement) -> None:
        for node_id in placement.replicas:
            if node_id in self.replicas:
                self.replicas[node_id] += 1
        if placement.leader in self.leaders:
            self.leaders[placement.leader] += 1


def live_shards(image: MetadataImage, *, now_ms: int) -> list[ShardMeta]:
    """Every shard of every live stream that takes writes (OPEN or SEALING), in name order."""
    shards: list[ShardMeta] = []
    for name in sorted(image.streams):
        stream = image.streams[name]
        if stream.is_gone(now_ms=now_ms):
            continue
        shards.extend(s for s in stream.shards if s.state is not ShardState.CLOSED)
    return shards


def node_loads(image: MetadataImage, *, now_ms: int) -> NodeLoads:
    """Current load of every ACTIVE node (0 for a node holding nothing)."""
    active = image.active_node_ids()
    replicas = dict.fromkeys(active, 0)
    leaders = dict.fromkeys(active, 0)
    for shard in live_shards(image, now_ms=now_ms):
        for node_id in shard.replicas:
            if node_id in replicas:
                replicas[node_id] += 1
        if shard.leader is not None and shard.leader in leaders:
            leaders[shard.leader] += 1
    return NodeLoads(replicas=replicas, leaders=leaders)


def place_shard(loads: NodeLoads, *, replication_factor: int) -> Placement:
    """One shard's placement given `loads`; the caller adds it to `loads` afterwards."""
    assert replication_factor >= 1
    assert len(loads.replicas) >= replication_factor, "caller checks the ACTIVE node count"
    by_replicas = sorted(
        loads.replicas,
        key=lambda node_id: (loads.replicas[node_id], loads.leaders[node_id], node_id),
    )
    chosen = by_replicas[:replication_factor]
    leader = min(
        chosen, key=lambda node_id: (loads.leaders[node_id], loads.replicas[node_id], node_id)
    )
    replicas = (leader, *(node_id for node_id in chosen if node_id != leader))
    assert len(set(replicas)) == replication_factor
    return Placement(replicas=replicas, leader=leader)


def place_shards(
    image: MetadataImage, *, shard_count: int, replication_factor: int, now_ms: int
) -> tuple[Placement, ...]:
    """Placements for `shard_count` new shards, in shard order."""
    assert shard_count >= 1
    loads = node_loads(image, now_ms=now_ms)
    placements: list[Placement] = []
    for _ in range(shard_count):
        placement = place_shard(loads, replication_factor=replication_factor)
        loads.add(placement)
        placements.append(placement)
    return tuple(placements)
