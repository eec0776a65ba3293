"""Shard replication: the replicas hosted on one node, their lag and leadership changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare

# --- Shard replication: replicas hosted on this node (sum across nodes) ----------------------
REPLICAS = declare(
    "kinesis_replicas",
    "gauge",
    'Shard replicas hosted on this node by role; role="leader" is shard leaders per node.',
    ("role",),
)
UNDER_REPLICATED_SHARDS = declare(
    "kinesis_under_replicated_shards",
    "gauge",
    "Shards led by this node with fewer replicas caught up than their replica set holds.",
)
REPLICATION_LAG = declare(
    "kinesis_replication_lag_records",
    "gauge",
    "Largest number of records a follower is behind this node's log end, over the shards this "
    "node leads, by follower node.",
    ("follower",),
)
HIGH_WATERMARK_LAG = declare(
    "kinesis_high_watermark_lag_records",
    "gauge",
    "Largest (log end - high watermark) over the replicas on this node: records written here "
    "but not yet committed (readable).",
)
REPLICATED_RECORDS = declare(
    "kinesis_replication_acknowledged_records_total",
    "counter",
    "Records acknowledged by followers of shards this node leads.",
)
REPLICATED_BYTES = declare(
    "kinesis_replication_acknowledged_bytes_total",
    "counter",
    "Bytes acknowledged by followers of shards this node leads.",
)
SHARD_LEADERSHIP_CHANGES = declare(
    "kinesis_replica_leadership_changes_total",
    "counter",
    'Shard leaderships this node took ("gained") or gave up ("lost").',
    ("change",),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationView:
    """The shard replicas on one node summarised (the replication driver builds it)."""

    leaders: int = 0
    followers: int = 0
    under_replicated: int = 0  # among the shards this node leads
    follower_lag_records: Mapping[str, int] = field(default_factory=dict)  # max per follower
    high_watermark_lag_records: int = 0


class ReplicationProbe:
    """Shard replicas on this node: `watch(driver.metrics_view)` once, events as they happen."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._view: Watched[ReplicationView] = Watched("replication")
        self._acked_records = Counter(
            REPLICATED_RECORDS.name, REPLICATED_RECORDS.help, registry=registry
        )
        self._acked_bytes = Counter(REPLICATED_BYTES.name, REPLICATED_BYTES.help, registry=registry)
        self._leadership = Counter(
            SHARD_LEADERSHIP_CHANGES.name,
            SHARD_LEADERSHIP_CHANGES.help,
            SHARD_LEADERSHIP_CHANGES.labels,
            registry=registry,
        )
        registry.register(
            CallbackCollector(
                (REPLICAS, UNDER_REPLICATED_SHARDS, REPLICATION_LAG, HIGH_WATERMARK_LAG),
                self._series,
            )
        )

    def watch(self, view: Callable[[], ReplicationView]) -> None:
        self._view.set(view)

    def batch_acknowledged(self, records: int, bytes_: int) -> None:
        """A follower acknowledged (durably holds) records of a shard this node leads."""
        self._acked_records.inc(records)
        self._acked_bytes.inc(bytes_)

    def leadership_gained(self) -> None:
        """This node became a shard's leader (it saw itself leader at a new epoch)."""
        self._leadership.labels("gained").inc()

    def leadership_lost(self) -> None:
        """This node stopped leading a shard (fenced, drained, or moved)."""
        self._leadership.labels("lost").inc()

    def _series(self) -> Series:
        view = self._view.read()
        if view is None:
            return
        yield REPLICAS, ("leader",), float(view.leaders)
        yield REPLICAS, ("follower",), float(view.followers)
        yield UNDER_REPLICATED_SHARDS, (), float(view.under_replicated)
        for follower, lag in sorted(view.follower_lag_records.items()):
            yield REPLICATION_LAG, (follower,), float(lag)
        yield HIGH_WATERMARK_LAG, (), float(view.high_watermark_lag_records)
