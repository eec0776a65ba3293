"""The metadata quorum (pysyncobj Raft) and the metadata image's view of the cluster."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram

from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare

# --- Metadata quorum (pysyncobj Raft) ---------------------------------------------------------
RAFT_IS_LEADER = declare(
    "kinesis_raft_is_leader", "gauge", "1 if this node leads the metadata quorum, else 0."
)
RAFT_HAS_LEADER = declare(
    "kinesis_raft_has_leader",
    "gauge",
    "1 if this node knows a metadata quorum leader (itself or a peer), else 0.",
)
RAFT_TERM = declare("kinesis_raft_term", "gauge", "Current Raft term of the metadata quorum.")
RAFT_COMMIT_INDEX = declare(
    "kinesis_raft_commit_index", "gauge", "Highest metadata log index known committed."
)
RAFT_APPLIED_INDEX = declare(
    "kinesis_raft_applied_index", "gauge", "Highest metadata log index applied to the image."
)
RAFT_LEADER_CHANGES = declare(
    "kinesis_raft_leader_changes_total",
    "counter",
    "Times this node saw the metadata quorum's leader change to a different node.",
)

# --- Metadata image: the cluster as every node sees it (use max() across nodes) --------------
CLUSTER_NODES = declare(
    "kinesis_cluster_nodes",
    "gauge",
    "Registered nodes by state (ACTIVE, DRAINING, FENCED, REMOVED), from this node's image.",
    ("state",),
)
STREAMS = declare("kinesis_streams", "gauge", "Streams in the metadata image, any status.")
OPEN_SHARDS = declare("kinesis_open_shards", "gauge", "Open shards in the metadata image.")
LEADERLESS_SHARDS = declare(
    "kinesis_leaderless_shards",
    "gauge",
    "Open shards with no leader in this node's image: writes to them fail until one is elected.",
)


class QuorumView(Protocol):
    """What `QuorumProbe` reads; `broker.meta.quorum.QuorumStatistics` has these attributes."""

    @property
    def role(self) -> str: ...  # "leader", "follower", "candidate", "stopped"
    @property
    def term(self) -> int: ...
    @property
    def commit_index(self) -> int: ...
    @property
    def last_applied(self) -> int: ...
    @property
    def quorum_leader(self) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    """The metadata image summarised; every node reports its own image's view."""

    nodes_by_state: Mapping[str, int] = field(default_factory=dict)
    streams: int = 0
    open_shards: int = 0
    leaderless_shards: int = 0


class QuorumProbe:
    """The metadata quorum. `watch(quorum.statistics)` once; `journal_synced` per fsync."""

    def __init__(self, registry: CollectorRegistry, fsync: Histogram) -> None:
        self._statistics: Watched[QuorumView] = Watched("quorum")
        self._fsync = fsync.labels("metadata")
        self._lock = threading.Lock()
        self._last_leader: str | None = None
        self._leader_changes = 0
        registry.register(
            CallbackCollector(
                (
                    RAFT_IS_LEADER,
                    RAFT_HAS_LEADER,
                    RAFT_TERM,
                    RAFT_COMMIT_INDEX,
                    RAFT_APPLIED_INDEX,
                    RAFT_LEADER_CHANGES,
                ),
                self._series,
            )
        )

    def watch(self, statistics: Callable[[], QuorumView]) -> None:
        """Read the quorum's statistics at each scrape (e.g. `MetadataQuorum.statistics`)."""
        self._statistics.set(statistics)

    def leader_observed(self, leader: str | None) -> None:
        """The leader this node knows now; a change to a different node counts once. Called at
        each scrape from `watch`, and may be called by the quorum when it learns a leader so
        that changes between scrapes are counted too."""
        with self._lock:
            if leader is not None and leader != self._last_leader:
                if self._last_leader is not None:
                    self._leader_changes += 1
                self._last_leader = leader

    def journal_synced(self, seconds: float) -> None:
        """The Raft journal was fsynced (one durable append or meta update)."""
        self._fsync.observe(seconds)

    def _series(self) -> Series:
        view = self._statistics.read()
        if view is not None:
            self.leader_observed(view.quorum_leader)
            yield RAFT_IS_LEADER, (), float(view.role == "leader")
            yield RAFT_HAS_LEADER, (), float(view.quorum_leader is not None)
            yield RAFT_TERM, (), float(view.term)
            yield RAFT_COMMIT_INDEX, (), float(view.commit_index)
            yield RAFT_APPLIED_INDEX, (), float(view.last_applied)
        with self._lock:
            yield RAFT_LEADER_CHANGES, (), float(self._leader_changes)


class ClusterProbe:
    """The metadata image's view of the cluster: `watch(lambda: cluster_view(...))` once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._view: Watched[ClusterView] = Watched("cluster")
        registry.register(
            CallbackCollector(
                (CLUSTER_NODES, STREAMS, OPEN_SHARDS, LEADERLESS_SHARDS), self._series
            )
        )

    def watch(self, view: Callable[[], ClusterView]) -> None:
        self._view.set(view)

    def _series(self) -> Series:
        view = self._view.read()
        if view is None:
            return
        for state, count in sorted(view.nodes_by_state.items()):
            yield CLUSTER_NODES, (state,), float(count)
        yield STREAMS, (), float(view.streams)
        yield OPEN_SHARDS, (), float(view.open_shards)
        yield LEADERLESS_SHARDS, (), float(view.leaderless_shards)
