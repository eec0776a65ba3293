"""`SimNetwork`: node-to-node delivery with delay, loss, duplication, reordering, partitions.

Reordering follows from independent random delays. A partition is a set of blocked
(sender, receiver) pairs, both directions, checked at send and again at delivery (a message in
flight when a partition starts is lost, as on a real network whose connection resets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from broker.replication.messages import ReplicationMessage
from broker.sim.world import World
from broker.types import NodeId

Deliver = Callable[[NodeId, NodeId, ReplicationMessage], None]


class SimNetwork:
    def __init__(self, world: World, deliver: Deliver) -> None:
        self._world = world
        self._rng = world.random("network")
        self._deliver = deliver
        self.delay_ms_min = 1
        self.delay_ms_max = 20
        self.drop_probability = 0.0
        self.duplicate_probability = 0.0
        self._blocked: set[tuple[NodeId, NodeId]] = set()
        self.sent = 0
        self.dropped = 0

    def send(self, sender: NodeId, receiver: NodeId, message: ReplicationMessage) -> None:
        self.sent += 1
        if self.is_blocked(sender, receiver) or self._rng.random() < self.drop_probability:
            self.dropped += 1
            return
        copies = 2 if self._rng.random() < self.duplicate_probability else 1
        for _ in range(copies):
            delay = self._rng.randint(self.delay_ms_min, self.delay_ms_max)
            self._world.schedule(
                delay,
                f"deliver {type(message).__name__} {sender}->{receiver}",
                lambda: self._arrive(sender, receiver, message),
            )

    def _arrive(self, sender: NodeId, receiver: NodeId, message: ReplicationMessage) -> None:
        if self.is_blocked(sender, receiver):
            self.dropped += 1
            return
        self._deliver(sender, receiver, message)

    def is_blocked(self, a: NodeId, b: NodeId) -> bool:
        return (a, b) in self._blocked

    def partition(self, side_a: Iterable[NodeId], side_b: Iterable[NodeId]) -> None:
        """Blocks every link between the two sides, both ways."""
        side_b = list(side_b)
        for a in side_a:
            for b in side_b:
                self._blocked.add((a, b))
                self._blocked.add((b, a))

    def heal(self) -> None:
        self._blocked.clear()

    def quiet(self) -> None:
        """No more loss or duplication (the end of a run, for the liveness check)."""
        self.drop_probability = 0.0
        self.duplicate_probability = 0.0
