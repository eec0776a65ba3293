"""Shard replication: the replicas hosted on one node, their lag and leadership changes."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare
from broker.replication.probe import ReplicationView

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


LOG_CORRUPTIONS = declare(
    "kinesis_log_corruptions_total",
    "counter",
    "Damaged ranges found in this node's shard logs (a batch failing its CRC, a RocksDB block "
    "checksum, missing offsets) by reads, catch-up reads or the scrubber.",
)
LOG_REPAIRS = declare(
    "kinesis_log_repairs_total",
    "counter",
    "Damaged ranges of this node's shard logs repaired (copied back from a healthy replica, "
    "or a time index rebuilt).",
)
DAMAGED_REPLICAS = declare(
    "kinesis_damaged_replicas",
    "gauge",
    "Shard replicas on this node with a damaged range not repaired yet (readers use another "
    "replica for it).",
)
SCRUBBED_BYTES = declare(
    "kinesis_scrub_bytes_total",
    "counter",
    "Stored bytes of shard logs the scrubber verified on this node.",
)
SCRUB_PASSES = declare(
    "kinesis_scrub_passes_total",
    "counter",
    "Complete passes of the scrubber over every replica on this node.",
)


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
        self._corruptions = Counter(LOG_CORRUPTIONS.name, LOG_CORRUPTIONS.help, registry=registry)
        self._repairs = Counter(LOG_REPAIRS.name, LOG_REPAIRS.help, registry=registry)
        self._scrubbed = Counter(SCRUBBED_BYTES.name, SCRUBBED_BYTES.help, registry=registry)
        self._scrub_passes = Counter(SCRUB_PASSES.name, SCRUB_PASSES.help, registry=registry)
        registry.register(
            CallbackCollector(
                (
                    REPLICAS,
                    UNDER_REPLICATED_SHARDS,
                    REPLICATION_LAG,
                    HIGH_WATERMARK_LAG,
                    DAMAGED_REPLICAS,
                ),
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

    def corruption_detected(self) -> None:
        """A damaged range of a local shard log was found."""
        self._corruptions.inc()

    def range_repaired(self) -> None:
        """A damaged range was copied back from a healthy replica (or an index rebuilt)."""
        self._repairs.inc()

    def scrubbed(self, bytes_: int) -> None:
        """The scrubber verified `bytes_` stored bytes."""
        assert bytes_ >= 0
        self._scrubbed.inc(bytes_)

    def scrub_pass_done(self) -> None:
        self._scrub_passes.inc()

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
        yield DAMAGED_REPLICAS, (), float(view.damaged_replicas)
