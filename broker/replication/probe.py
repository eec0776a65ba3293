"""What replication reports to the node's metrics (the probe protocol this layer owns;
`metrics.replication.ReplicationProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class ReplicationProbe(Protocol):
    """Events of the driver and the scrubber (and the core's leaderships)."""

    def leadership_gained(self) -> None:
        """This node became a shard's leader (it saw itself leader at a new epoch)."""
        ...

    def leadership_lost(self) -> None:
        """This node stopped leading a shard (fenced, drained, or moved)."""
        ...

    def corruption_detected(self) -> None:
        """A damaged range of a local shard log was found."""
        ...

    def range_repaired(self) -> None:
        """A damaged range was copied back from a healthy replica (or an index rebuilt)."""
        ...

    def scrubbed(self, bytes_: int) -> None:
        """The scrubber verified `bytes_` stored bytes."""
        ...

    def scrub_pass_done(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationView:
    """The shard replicas on one node summarised (the replication driver builds it)."""

    leaders: int = 0
    followers: int = 0
    under_replicated: int = 0  # among the shards this node leads
    follower_lag_records: Mapping[str, int] = field(default_factory=dict)  # max per follower
    high_watermark_lag_records: int = 0
    damaged_replicas: int = 0
