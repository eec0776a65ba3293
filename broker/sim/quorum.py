"""`SimMetadataQuorum`: the metadata image and the controller's leader change, for the sim.

A deterministic stand-in for the metadata quorum (pysyncobj) plus the controller's procedure
of decisions/0002 "Leader change": Prepare(epoch) to the replica set through the simulated
network, a majority of ok Promises (bounded wait), the promiser with the highest
(last_epoch, log_end) (ties: replica order) as leader (the real `controller_core.choose_leader`,
as soon as it can choose), then a compare-and-set commit of
(leader, epoch). Committed images reach each node after a random delay, so nodes act on stale
images for a while, as real ones do.

Every Prepare round uses a fresh epoch (above every epoch prepared before for the shard), like
a Paxos ballot. A node that lost its disk since the round began has its Promise discarded: the
log it described is gone (the real controller does this through the node's incarnation).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from broker.meta.controller_core import Promise as ControllerPromise
from broker.meta.controller_core import choose_leader
from broker.replication.messages import Prepare, Promise, ReplicationMessage
from broker.sim.world import World
from broker.types import NodeId, ShardUid

CONTROLLER = NodeId("controller")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardImage:
    """One shard's entry in the metadata image."""

    shard_uid: ShardUid
    replicas: tuple[NodeId, ...]
    leader: NodeId | None
    epoch: int
    sealing: bool = False
    # The metadata command that produced this entry, in commit order (control.SimController;
    # 0 here): a node applies the entries of one shard in that order, as it applies the log.
    version: int = 0


@dataclass(slots=True, kw_only=True)
class _Round:
    epoch: int
    expected_epoch: int
    started_ms: int
    disk_generations: dict[NodeId, int]
    promises: dict[NodeId, ControllerPromise] = field(default_factory=dict)


Send = Callable[[NodeId, NodeId, ReplicationMessage], None]
Publish = Callable[[ShardImage], None]


class SimMetadataQuorum:
    def __init__(
        self,
        world: World,
        *,
        send: Send,
        publish: Publish,
        disk_generation: Callable[[NodeId], int],
        round_timeout_ms: int,
    ) -> None:
        self._world = world
        self._rng: random.Random = world.random("controller")
        self._send = send
        self._publish = publish
        self._disk_generation = disk_generation
        self._round_timeout_ms = round_timeout_ms
        self.shards: dict[ShardUid, ShardImage] = {}
        self._prepared: dict[ShardUid, int] = {}
        self._rounds: dict[ShardUid, _Round] = {}
        self.elections_started = 0
        self.elections_committed = 0
        self.commits: list[tuple[ShardUid, int, NodeId]] = []

    def create_shard(self, shard_uid: ShardUid, replicas: tuple[NodeId, ...]) -> ShardImage:
        """Placement as the state machine does it: epoch 1, the first replica leads."""
        image = ShardImage(shard_uid=shard_uid, replicas=replicas, leader=replicas[0], epoch=1)
        self.shards[shard_uid] = image
        self._prepared[shard_uid] = 1
        self.commits.append((shard_uid, 1, replicas[0]))
        self._publish(image)
        return image

    def prepared_epoch(self, shard_uid: ShardUid) -> int:
        """The highest epoch any Prepare for the shard has carried (or its image's)."""
        return max(self.shards[shard_uid].epoch, self._prepared[shard_uid])

    def electing(self, shard_uid: ShardUid) -> bool:
        return shard_uid in self._rounds

    def start_election(self, shard_uid: ShardUid) -> None:
        """Prepare(epoch) to every replica; a no-op while a round for the shard is running."""
        if shard_uid in self._rounds:
            return
        image = self.shards[shard_uid]
        epoch = max(image.epoch, self._prepared[shard_uid]) + 1
        self._prepared[shard_uid] = epoch
        self._rounds[shard_uid] = _Round(
            epoch=epoch,
            expected_epoch=image.epoch,
            started_ms=self._world.now_ms,
            disk_generations={node: self._disk_generation(node) for node in image.replicas},
        )
        self.elections_started += 1
        for node in image.replicas:
            self._send(CONTROLLER, node, Prepare(shard_uid=shard_uid, epoch=epoch))
        self._world.schedule(
            self._round_timeout_ms,
            f"election timeout {shard_uid} e{epoch}",
            lambda: self._time_out(shard_uid, epoch),
        )

    def receive(self, message: ReplicationMessage) -> None:
        """A Promise arrived at the controller."""
        assert isinstance(message, Promise), message
        current = self._rounds.get(message.shard_uid)
        if current is None or message.epoch != current.epoch or not message.ok:
            return
        generation = current.disk_generations.get(message.sender)
        if generation != self._disk_generation(message.sender):
            return  # the promiser lost its disk since the round began
        current.promises[message.sender] = message
        image = self.shards[message.shard_uid]
        # The real controller's rule, as soon as it can choose (meta/controller.py _prepare).
        leader = choose_leader(
            current.promises,
            replicas=image.replicas,
            new_replicas=image.replicas,
            eligible=image.replicas,
        )
        if leader is not None:
            self._commit(message.shard_uid, current, leader)

    def _commit(self, shard_uid: ShardUid, current: _Round, leader: NodeId) -> None:
        del self._rounds[shard_uid]
        image = self.shards[shard_uid]
        if image.epoch != current.expected_epoch:
            return  # compare-and-set failed: someone else changed the shard
        new_image = replace(image, leader=leader, epoch=current.epoch)
        self.shards[shard_uid] = new_image
        self.elections_committed += 1
        self.commits.append((shard_uid, current.epoch, leader))
        self._publish(new_image)

    def _time_out(self, shard_uid: ShardUid, epoch: int) -> None:
        current = self._rounds.get(shard_uid)
        if current is not None and current.epoch == epoch:
            del self._rounds[shard_uid]
