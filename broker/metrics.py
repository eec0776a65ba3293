"""Every metric family a node exposes, and the probes components report through.

This module is the one place where metric families are declared (STYLE B.10). Names follow
Kinesis' CloudWatch metrics in Prometheus form (ECOSYSTEM §3.2): prefix `kinesis_`, base units
(`_seconds`, `_bytes`), counters end in `_total`. `FAMILIES` lists them all; `docs/operations.md`
has the same table with the CloudWatch name each one stands for.

Shape:
- `NodeMetrics` owns one `CollectorRegistry` per node (never prometheus_client's global one), so
  several nodes in one process (tests, the simulator) do not collide. It never emits `_created`
  series (see `_NodeRegistry`), without touching prometheus_client's process-wide switch.
- Components get a probe with intent-named methods instead of touching counters:
  `GatewayProbe` (requests), `StreamProbe` (records in and out, throttling, iterator age),
  `StorageProbe` (group commits, fsync, RocksDB), `QuorumProbe` (the metadata Raft),
  `ReplicationProbe` (shard replicas on this node), `ClusterProbe` (the metadata image's view),
  `CatalogProbe` (per-stream shards and consumers), `AutoscalerProbe` (on-demand scaling),
  `TlsProbe` (certificate expiry).
- Values that live elsewhere (Raft term, RocksDB sizes, replica counts) are read when Prometheus
  scrapes: `probe.watch(callback)` registers a function returning a small statistics object,
  so wiring a component is one line.
- Shard-labelled series (`kinesis_shard_*`) exist only for the metrics a stream's enhanced
  monitoring enables (as on AWS), which keeps cardinality opt-in per stream. Callers pass the
  stream's `StreamMeta.enhanced_metrics` (CloudWatch names, or `ALL`) with each event.

Thread safety: probes are called from the event loop and from the group-commit thread; a scrape
runs on whatever thread serves `/metrics`. Every mutable table is guarded by a lock.
"""

from __future__ import annotations

import logging
import platform
import shutil
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

log = logging.getLogger(__name__)

PREFIX = "kinesis"
T = TypeVar("T")

Kind = Literal["counter", "gauge", "histogram"]

# Request latency: Kinesis puts take a few milliseconds, GetRecords up to seconds under load,
# and a put waiting on a replica quorum sits in between. 14 buckets, 0.5 ms to 10 s.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# fsync: 100 µs on NVMe up to a second on a struggling network disk.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
# Records per group commit: 1 when idle, thousands when the writer thread batches hard.
GROUP_COMMIT_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as Prometheus shows it (`name` is what PromQL uses)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    cloudwatch: str = ""  # the Kinesis CloudWatch metric this stands for, if any
    buckets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        assert self.name.startswith(PREFIX + "_")
        assert (self.kind == "counter") == self.name.endswith("_total")
        assert (self.kind == "histogram") == bool(self.buckets)


FAMILIES: dict[str, Family] = {}  # every family, by name, in declaration order


def _family(
    name: str,
    kind: Kind,
    help_: str,
    labels: tuple[str, ...] = (),
    *,
    cloudwatch: str = "",
    buckets: tuple[float, ...] = (),
) -> Family:
    family = Family(name, kind, help_, labels, cloudwatch, buckets)
    assert name not in FAMILIES, name
    FAMILIES[name] = family
    return family


# --- Requests (every front door; `code` is "OK" or the Kinesis error name) -------------------
API_REQUESTS = _family(
    "kinesis_api_requests_total",
    "counter",
    "Kinesis API requests answered by this node, by operation and result code "
    '("OK" or the Kinesis error name).',
    ("operation", "code"),
    cloudwatch="<Operation>.Success",
)
API_REQUEST_DURATION = _family(
    "kinesis_api_request_duration_seconds",
    "histogram",
    "Time from a decoded request to its answer on this node, by operation.",
    ("operation",),
    cloudwatch="<Operation>.Latency",
    buckets=REQUEST_BUCKETS,
)

# --- Records, per stream (always) and per shard (enhanced monitoring) ------------------------
INCOMING_BYTES = _family(
    "kinesis_incoming_bytes_total",
    "counter",
    "Bytes (data and partition keys) successfully written, counted by the shard's leader.",
    ("stream",),
    cloudwatch="IncomingBytes",
)
INCOMING_RECORDS = _family(
    "kinesis_incoming_records_total",
    "counter",
    "Records successfully written, counted by the shard's leader.",
    ("stream",),
    cloudwatch="IncomingRecords",
)
OUTGOING_BYTES = _family(
    "kinesis_outgoing_bytes_total",
    "counter",
    "Bytes returned to consumers by this node, by API (GetRecords, SubscribeToShard).",
    ("stream", "api"),
    cloudwatch="GetRecords.Bytes / OutgoingBytes",
)
OUTGOING_RECORDS = _family(
    "kinesis_outgoing_records_total",
    "counter",
    "Records returned to consumers by this node, by API (GetRecords, SubscribeToShard).",
    ("stream", "api"),
    cloudwatch="GetRecords.Records / OutgoingRecords",
)
PUT_RECORDS_RECORDS = _family(
    "kinesis_put_records_records_total",
    "counter",
    "Records in PutRecords requests by outcome: success, throttled, or failed (other errors).",
    ("stream", "result"),
    cloudwatch="PutRecords.SuccessfulRecords / ThrottledRecords / FailedRecords",
)
WRITE_THROUGHPUT_EXCEEDED = _family(
    "kinesis_write_throughput_exceeded_total",
    "counter",
    "Records refused because a shard's write throughput limit was exceeded.",
    ("stream",),
    cloudwatch="WriteProvisionedThroughputExceeded",
)
READ_THROUGHPUT_EXCEEDED = _family(
    "kinesis_read_throughput_exceeded_total",
    "counter",
    "GetRecords calls refused because a shard's read throughput limit was exceeded.",
    ("stream",),
    cloudwatch="ReadProvisionedThroughputExceeded",
)
ITERATOR_AGE = _family(
    "kinesis_iterator_age_seconds",
    "gauge",
    "Largest iterator age last seen by this node's GetRecords among the stream's shards: how "
    "far the slowest consumer is behind the tip.",
    ("stream",),
    cloudwatch="GetRecords.IteratorAgeMilliseconds",
)
SUBSCRIPTION_BEHIND_LATEST = _family(
    "kinesis_subscription_behind_latest_seconds",
    "gauge",
    "Largest MillisBehindLatest (in seconds) of the last SubscribeToShard event sent by this "
    "node among the stream's shards: how far the slowest enhanced fan-out consumer is behind.",
    ("stream",),
    cloudwatch="SubscribeToShardEvent.MillisBehindLatest",
)
SHARD_INCOMING_BYTES = _family(
    "kinesis_shard_incoming_bytes_total",
    "counter",
    "Per shard, with enhanced monitoring: bytes successfully written.",
    ("stream", "shard"),
    cloudwatch="IncomingBytes (shard level)",
)
SHARD_INCOMING_RECORDS = _family(
    "kinesis_shard_incoming_records_total",
    "counter",
    "Per shard, with enhanced monitoring: records successfully written.",
    ("stream", "shard"),
    cloudwatch="IncomingRecords (shard level)",
)
SHARD_OUTGOING_BYTES = _family(
    "kinesis_shard_outgoing_bytes_total",
    "counter",
    "Per shard, with enhanced monitoring: bytes returned to consumers.",
    ("stream", "shard", "api"),
    cloudwatch="OutgoingBytes (shard level)",
)
SHARD_OUTGOING_RECORDS = _family(
    "kinesis_shard_outgoing_records_total",
    "counter",
    "Per shard, with enhanced monitoring: records returned to consumers.",
    ("stream", "shard", "api"),
    cloudwatch="OutgoingRecords (shard level)",
)
SHARD_WRITE_THROUGHPUT_EXCEEDED = _family(
    "kinesis_shard_write_throughput_exceeded_total",
    "counter",
    "Per shard, with enhanced monitoring: records refused by the write throughput limit.",
    ("stream", "shard"),
    cloudwatch="WriteProvisionedThroughputExceeded (shard level)",
)
SHARD_READ_THROUGHPUT_EXCEEDED = _family(
    "kinesis_shard_read_throughput_exceeded_total",
    "counter",
    "Per shard, with enhanced monitoring: GetRecords calls refused by the read limit.",
    ("stream", "shard"),
    cloudwatch="ReadProvisionedThroughputExceeded (shard level)",
)
SHARD_ITERATOR_AGE = _family(
    "kinesis_shard_iterator_age_seconds",
    "gauge",
    "Per shard, with enhanced monitoring: iterator age of the last GetRecords on this node.",
    ("stream", "shard"),
    cloudwatch="IteratorAgeMilliseconds (shard level)",
)

# --- Enhanced fan-out (SubscribeToShard), beside the records and bytes counted above ----------
SUBSCRIPTIONS = _family(
    "kinesis_subscriptions",
    "gauge",
    "Open SubscribeToShard subscriptions served by this node (sum across nodes).",
    ("stream",),
)
SUBSCRIPTION_EVENTS = _family(
    "kinesis_subscription_events_total",
    "counter",
    "SubscribeToShard events sent by this node, with records or empty (heartbeats).",
    ("stream",),
    cloudwatch="SubscribeToShardEvent.Success",
)
SUBSCRIBE_RATE_EXCEEDED = _family(
    "kinesis_subscribe_to_shard_rate_exceeded_total",
    "counter",
    "SubscribeToShard calls refused because the consumer already holds a subscription to the "
    "shard (ResourceInUseException) or the node holds its limit of subscriptions.",
    ("stream",),
    cloudwatch="SubscribeToShard.RateExceeded",
)

# --- Metadata quorum (pysyncobj Raft) ---------------------------------------------------------
RAFT_IS_LEADER = _family(
    "kinesis_raft_is_leader", "gauge", "1 if this node leads the metadata quorum, else 0."
)
RAFT_HAS_LEADER = _family(
    "kinesis_raft_has_leader",
    "gauge",
    "1 if this node knows a metadata quorum leader (itself or a peer), else 0.",
)
RAFT_TERM = _family("kinesis_raft_term", "gauge", "Current Raft term of the metadata quorum.")
RAFT_COMMIT_INDEX = _family(
    "kinesis_raft_commit_index", "gauge", "Highest metadata log index known committed."
)
RAFT_APPLIED_INDEX = _family(
    "kinesis_raft_applied_index", "gauge", "Highest metadata log index applied to the image."
)
RAFT_LEADER_CHANGES = _family(
    "kinesis_raft_leader_changes_total",
    "counter",
    "Times this node saw the metadata quorum's leader change to a different node.",
)

# --- Metadata image: the cluster as every node sees it (use max() across nodes) --------------
CLUSTER_NODES = _family(
    "kinesis_cluster_nodes",
    "gauge",
    "Registered nodes by state (ACTIVE, DRAINING, FENCED, REMOVED), from this node's image.",
    ("state",),
)
STREAMS = _family("kinesis_streams", "gauge", "Streams in the metadata image, any status.")
OPEN_SHARDS = _family("kinesis_open_shards", "gauge", "Open shards in the metadata image.")
LEADERLESS_SHARDS = _family(
    "kinesis_leaderless_shards",
    "gauge",
    "Open shards with no leader in this node's image: writes to them fail until one is elected.",
)

# --- Shard replication: replicas hosted on this node (sum across nodes) ----------------------
REPLICAS = _family(
    "kinesis_replicas",
    "gauge",
    'Shard replicas hosted on this node by role; role="leader" is shard leaders per node.',
    ("role",),
)
UNDER_REPLICATED_SHARDS = _family(
    "kinesis_under_replicated_shards",
    "gauge",
    "Shards led by this node with fewer replicas caught up than their replica set holds.",
)
REPLICATION_LAG = _family(
    "kinesis_replication_lag_records",
    "gauge",
    "Largest number of records a follower is behind this node's log end, over the shards this "
    "node leads, by follower node.",
    ("follower",),
)
HIGH_WATERMARK_LAG = _family(
    "kinesis_high_watermark_lag_records",
    "gauge",
    "Largest (log end - high watermark) over the replicas on this node: records written here "
    "but not yet committed (readable).",
)
REPLICATED_RECORDS = _family(
    "kinesis_replication_acknowledged_records_total",
    "counter",
    "Records acknowledged by followers of shards this node leads.",
)
REPLICATED_BYTES = _family(
    "kinesis_replication_acknowledged_bytes_total",
    "counter",
    "Bytes acknowledged by followers of shards this node leads.",
)
SHARD_LEADERSHIP_CHANGES = _family(
    "kinesis_replica_leadership_changes_total",
    "counter",
    'Shard leaderships this node took ("gained") or gave up ("lost").',
    ("change",),
)

# --- Storage ----------------------------------------------------------------------------------
FSYNC_DURATION = _family(
    "kinesis_fsync_duration_seconds",
    "histogram",
    'Durable syncs by log: "shards" (RocksDB WAL, one per group commit) or "metadata" (the '
    "Raft journal).",
    ("log",),
    buckets=FSYNC_BUCKETS,
)
GROUP_COMMIT_RECORDS = _family(
    "kinesis_group_commit_records",
    "histogram",
    "Records made durable per group commit (one RocksDB WriteBatch and one fsync).",
    buckets=GROUP_COMMIT_BUCKETS,
)
LOG_WRITTEN_BYTES = _family(
    "kinesis_log_written_bytes_total",
    "counter",
    "Record bytes written to the shard log on this node (leader and follower replicas).",
)
DISK_FREE = _family(
    "kinesis_storage_disk_free_bytes",
    "gauge",
    "Bytes available to the node on the file system holding its data directory.",
)
DISK_CAPACITY = _family(
    "kinesis_storage_disk_capacity_bytes",
    "gauge",
    "Size of the file system holding the data directory.",
)
ROCKSDB_SST_BYTES = _family(
    "kinesis_rocksdb_sst_files_bytes", "gauge", "Size of all RocksDB SST files (every version)."
)
ROCKSDB_LIVE_BYTES = _family(
    "kinesis_rocksdb_live_data_bytes", "gauge", "RocksDB's estimate of its live data size."
)
ROCKSDB_PENDING_COMPACTION = _family(
    "kinesis_rocksdb_pending_compaction_bytes",
    "gauge",
    "Bytes RocksDB estimates compaction must rewrite; writes stall when this grows too large.",
)
ROCKSDB_MEMTABLE_BYTES = _family(
    "kinesis_rocksdb_memtable_bytes", "gauge", "Size of RocksDB's memtables."
)
ROCKSDB_RUNNING_COMPACTIONS = _family(
    "kinesis_rocksdb_running_compactions", "gauge", "Compactions running now."
)
ROCKSDB_WRITE_STOPPED = _family(
    "kinesis_rocksdb_write_stopped", "gauge", "1 while RocksDB stops writes (compaction debt)."
)

# --- Streams, consumers and on-demand scaling (the metadata image; use max() across nodes) ----
STREAM_OPEN_SHARDS = _family(
    "kinesis_stream_open_shards",
    "gauge",
    "Open shards of each stream in this node's image, with its capacity mode.",
    ("stream", "mode"),
    cloudwatch="OpenShardCount (DescribeStreamSummary)",
)
STREAM_CONSUMERS = _family(
    "kinesis_stream_consumers",
    "gauge",
    "Registered enhanced fan-out consumers of each stream by status, in this node's image.",
    ("stream", "status"),
    cloudwatch="ConsumerCount (DescribeStreamSummary)",
)
ON_DEMAND_MAX_OPEN_SHARDS = _family(
    "kinesis_on_demand_max_open_shards",
    "gauge",
    "The autoscaler's ceiling of open shards per ON_DEMAND stream (on_demand_max_shards).",
)
AUTOSCALER_ACTIONS = _family(
    "kinesis_autoscaler_actions_total",
    "counter",
    "On-demand autoscaler decisions proposed by this node while it led the quorum: split and "
    "merge (applied), hot_key (a notice), refused (a split or merge the metadata refused).",
    ("stream", "action"),
)

# --- Transport security -----------------------------------------------------------------------
TLS_CERTIFICATE_EXPIRY = _family(
    "kinesis_tls_certificate_expiry_timestamp_seconds",
    "gauge",
    "When the first certificate to expire in a configured PEM file expires (its notAfter, in "
    'Unix seconds): usage="certificate" is the node\'s own chain, usage="ca" the CA bundle.',
    ("file", "usage"),
)

# --- Identity ---------------------------------------------------------------------------------
BUILD_INFO = _family(
    "kinesis_build_info",
    "gauge",
    "Always 1; the labels say which Shoal build and Python run this node.",
    ("version", "revision", "python_version"),
)
NODE_INFO = _family(
    "kinesis_node_info",
    "gauge",
    "Always 1; node_id joins a scrape target to the node's id in the cluster.",
    ("node_id",),
)

# CloudWatch's shard-level metric names (EnhancedMetrics) as StreamMeta.enhanced_metrics holds
# them; "ALL" enables every one.
SHARD_LEVEL = {
    "IncomingBytes": SHARD_INCOMING_BYTES,
    "IncomingRecords": SHARD_INCOMING_RECORDS,
    "OutgoingBytes": SHARD_OUTGOING_BYTES,
    "OutgoingRecords": SHARD_OUTGOING_RECORDS,
    "WriteProvisionedThroughputExceeded": SHARD_WRITE_THROUGHPUT_EXCEEDED,
    "ReadProvisionedThroughputExceeded": SHARD_READ_THROUGHPUT_EXCEEDED,
    "IteratorAgeMilliseconds": SHARD_ITERATOR_AGE,
}


def _enabled(shard_metrics: Collection[str], cloudwatch_name: str) -> bool:
    return cloudwatch_name in shard_metrics or "ALL" in shard_metrics


# --- Statistics read at scrape time -----------------------------------------------------------


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationView:
    """The shard replicas on one node summarised (the replication driver builds it)."""

    leaders: int = 0
    followers: int = 0
    under_replicated: int = 0  # among the shards this node leads
    follower_lag_records: Mapping[str, int] = field(default_factory=dict)  # max per follower
    high_watermark_lag_records: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageView:
    """RocksDB properties of the node's store (`rocksdb.total-sst-files-size` etc.)."""

    sst_files_bytes: int = 0
    live_data_bytes: int = 0
    pending_compaction_bytes: int = 0
    memtable_bytes: int = 0
    running_compactions: int = 0
    write_stopped: bool = False


class _Watched(Generic[T]):
    """A scrape-time reader: calls the component's statistics function, or skips on error."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._read: Callable[[], T] | None = None
        self._failing = False

    def set(self, read: Callable[[], T]) -> None:
        with self._lock:
            self._read = read

    def read(self) -> T | None:
        with self._lock:
            read = self._read
        if read is None:
            return None
        try:
            value = read()
        except Exception:  # a scrape must not fail because one component is stopping
            if not self._failing:
                log.warning("metrics_statistics_failed", extra={"what": self._what}, exc_info=True)
            self._failing = True
            return None
        self._failing = False
        return value


def _gauge(family: Family) -> GaugeMetricFamily:
    return GaugeMetricFamily(family.name, family.help, labels=family.labels)


def _counter(family: Family) -> CounterMetricFamily:
    return CounterMetricFamily(family.name, family.help, labels=family.labels)


def _empty(family: Family) -> Metric:
    return _counter(family) if family.kind == "counter" else _gauge(family)


# --- Probes -------------------------------------------------------------------------------------


class GatewayProbe:
    """Requests through either front door (gRPC or the AWS HTTP protocol)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            API_REQUESTS.name,
            API_REQUESTS.help,
            API_REQUESTS.labels,
            registry=registry,
        )
        self._duration = Histogram(
            API_REQUEST_DURATION.name,
            API_REQUEST_DURATION.help,
            API_REQUEST_DURATION.labels,
            registry=registry,
            buckets=API_REQUEST_DURATION.buckets,
        )

    def request_finished(self, operation: str, code: str, seconds: float) -> None:
        """One answered request. `operation` must be one the service serves (a bounded set:
        pass "Unknown" for UnknownOperationException); `code` is "OK" or the error name."""
        assert seconds >= 0
        self._requests.labels(operation, code).inc()
        self._duration.labels(operation).observe(seconds)


class _SeriesTable:
    """Labelled counters and gauges kept in dicts, so a stream's series can be dropped together
    (deleted stream, enhanced monitoring turned off). Collected as a prometheus_client
    collector."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._lock = threading.Lock()
        self._series: dict[Family, dict[tuple[str, ...], float]] = {f: {} for f in families}

    def add(self, family: Family, labels: tuple[str, ...], amount: float) -> None:
        assert len(labels) == len(family.labels)
        assert family.kind == "counter"
        assert amount >= 0
        with self._lock:
            table = self._series[family]
            table[labels] = table.get(labels, 0.0) + amount

    def set(self, family: Family, labels: tuple[str, ...], value: float) -> None:
        assert family.kind == "gauge"
        assert len(labels) == len(family.labels)
        with self._lock:
            self._series[family][labels] = value

    def drop(self, families: Iterable[Family], stream: str) -> None:
        """Remove every series of `families` whose first label (stream) is `stream`."""
        with self._lock:
            for family in families:
                table = self._series[family]
                for labels in [labels for labels in table if labels[0] == stream]:
                    del table[labels]

    def describe(self) -> Iterator[Metric]:
        for family in self._series:
            yield _empty(family)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = {family: dict(table) for family, table in self._series.items()}
        for family, table in snapshot.items():
            metric = _empty(family)
            for labels, value in sorted(table.items()):
                metric.add_metric(labels, value)  # type: ignore[attr-defined]
            yield metric


class StreamProbe:
    """Records in and out of streams. Every method takes the stream's enhanced-monitoring
    setting (`StreamMeta.enhanced_metrics`: CloudWatch shard-level names or "ALL"); shard-
    labelled series are emitted only for the metrics it names."""

    _STREAM_FAMILIES = (
        INCOMING_BYTES,
        INCOMING_RECORDS,
        OUTGOING_BYTES,
        OUTGOING_RECORDS,
        PUT_RECORDS_RECORDS,
        WRITE_THROUGHPUT_EXCEEDED,
        READ_THROUGHPUT_EXCEEDED,
        SUBSCRIPTION_EVENTS,
        SUBSCRIBE_RATE_EXCEEDED,
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self._table = _SeriesTable(
            (*self._STREAM_FAMILIES, *(f for f in SHARD_LEVEL.values() if f.kind == "counter"))
        )
        registry.register(self._table)
        # Iterator age: the last value per shard; the stream gauge is their maximum.
        self._ages_lock = threading.Lock()
        self._ages: dict[tuple[str, str], tuple[float, bool]] = {}  # -> (seconds, shard-level)
        registry.register(_CallbackCollector((ITERATOR_AGE, SHARD_ITERATOR_AGE), self._age_series))
        # SubscribeToShard's MillisBehindLatest: the last value per shard, max per stream.
        self._behind: dict[tuple[str, str], float] = {}  # guarded by _ages_lock
        registry.register(_CallbackCollector((SUBSCRIPTION_BEHIND_LATEST,), self._behind_series))
        # Open subscriptions per stream, read from the node's subscriptions at each scrape.
        self._subscriptions: _Watched[Mapping[str, int]] = _Watched("subscriptions")
        registry.register(_CallbackCollector((SUBSCRIPTIONS,), self._subscription_series))

    def records_written(
        self, stream: str, shard: str, records: int, bytes_: int, shard_metrics: Collection[str]
    ) -> None:
        """Records made durable (committed) on a shard this node leads."""
        assert records >= 0
        assert bytes_ >= 0
        self._table.add(INCOMING_RECORDS, (stream,), records)
        self._table.add(INCOMING_BYTES, (stream,), bytes_)
        if _enabled(shard_metrics, "IncomingRecords"):
            self._table.add(SHARD_INCOMING_RECORDS, (stream, shard), records)
        if _enabled(shard_metrics, "IncomingBytes"):
            self._table.add(SHARD_INCOMING_BYTES, (stream, shard), bytes_)

    def records_read(
        self,
        stream: str,
        shard: str,
        records: int,
        bytes_: int,
        iterator_age_ms: int,
        shard_metrics: Collection[str],
        *,
        api: str = "GetRecords",
    ) -> None:
        """A successful read: records returned and how far behind the tip the reader is
        (GetRecords' MillisBehindLatest; 0 when caught up)."""
        assert records >= 0
        assert bytes_ >= 0
        assert iterator_age_ms >= 0
        self._table.add(OUTGOING_RECORDS, (stream, api), records)
        self._table.add(OUTGOING_BYTES, (stream, api), bytes_)
        if _enabled(shard_metrics, "OutgoingRecords"):
            self._table.add(SHARD_OUTGOING_RECORDS, (stream, shard, api), records)
        if _enabled(shard_metrics, "OutgoingBytes"):
            self._table.add(SHARD_OUTGOING_BYTES, (stream, shard, api), bytes_)
        shard_level = _enabled(shard_metrics, "IteratorAgeMilliseconds")
        with self._ages_lock:
            self._ages[stream, shard] = (iterator_age_ms / 1000.0, shard_level)

    def subscription_event(
        self,
        stream: str,
        shard: str,
        records: int,
        bytes_: int,
        behind_ms: int,
        shard_metrics: Collection[str],
    ) -> None:
        """One SubscribeToShard event sent (SubscribeToShardEvent.Records / Bytes, counted as
        outgoing with api="SubscribeToShard", and its MillisBehindLatest)."""
        assert behind_ms >= 0
        self._table.add(OUTGOING_RECORDS, (stream, "SubscribeToShard"), records)
        self._table.add(OUTGOING_BYTES, (stream, "SubscribeToShard"), bytes_)
        if _enabled(shard_metrics, "OutgoingRecords"):
            self._table.add(SHARD_OUTGOING_RECORDS, (stream, shard, "SubscribeToShard"), records)
        if _enabled(shard_metrics, "OutgoingBytes"):
            self._table.add(SHARD_OUTGOING_BYTES, (stream, shard, "SubscribeToShard"), bytes_)
        self._table.add(SUBSCRIPTION_EVENTS, (stream,), 1)
        with self._ages_lock:
            self._behind[stream, shard] = behind_ms / 1000.0

    def watch_subscriptions(self, open_per_stream: Callable[[], Mapping[str, int]]) -> None:
        """Read the open subscriptions per stream at each scrape (`Subscriptions.per_stream`)."""
        self._subscriptions.set(open_per_stream)

    def subscription_closed(self, stream: str, shard: str) -> None:
        """An open subscription ended. Its shard's MillisBehindLatest is forgotten, so a
        consumer that went away does not hold the lag gauge (and its alert) at the last value
        it saw; another subscriber of the shard sets it again with its next event."""
        with self._ages_lock:
            self._behind.pop((stream, shard), None)

    def subscribe_refused(self, stream: str) -> None:
        """A SubscribeToShard call refused for the rate rules (SubscribeToShard.RateExceeded)."""
        self._table.add(SUBSCRIBE_RATE_EXCEEDED, (stream,), 1)

    def put_records_finished(
        self, stream: str, succeeded: int, throttled: int, failed: int
    ) -> None:
        """The per-record outcome of one PutRecords request."""
        for result, count in (("success", succeeded), ("throttled", throttled), ("failed", failed)):
            self._table.add(PUT_RECORDS_RECORDS, (stream, result), count)

    def write_throttled(
        self, stream: str, shard: str, records: int, shard_metrics: Collection[str]
    ) -> None:
        """Records refused with ProvisionedThroughputExceededException by a shard's write limit."""
        self._table.add(WRITE_THROUGHPUT_EXCEEDED, (stream,), records)
        if _enabled(shard_metrics, "WriteProvisionedThroughputExceeded"):
            self._table.add(SHARD_WRITE_THROUGHPUT_EXCEEDED, (stream, shard), records)

    def read_throttled(self, stream: str, shard: str, shard_metrics: Collection[str]) -> None:
        """One GetRecords call refused by a shard's read limit."""
        self._table.add(READ_THROUGHPUT_EXCEEDED, (stream,), 1)
        if _enabled(shard_metrics, "ReadProvisionedThroughputExceeded"):
            self._table.add(SHARD_READ_THROUGHPUT_EXCEEDED, (stream, shard), 1)

    def enhanced_monitoring_changed(self, stream: str, shard_metrics: Collection[str]) -> None:
        """Drop the shard-level series a stream no longer enables (Disable...Monitoring)."""
        disabled = [f for name, f in SHARD_LEVEL.items() if not _enabled(shard_metrics, name)]
        self._table.drop([f for f in disabled if f.kind == "counter"], stream)
        if SHARD_ITERATOR_AGE in disabled:
            with self._ages_lock:
                for key, (age, _) in list(self._ages.items()):
                    if key[0] == stream:
                        self._ages[key] = (age, False)

    def stream_deleted(self, stream: str) -> None:
        """Forget every series of a deleted stream (its name may be reused)."""
        self._table.drop(self._table_families(), stream)
        with self._ages_lock:
            for key in [key for key in self._ages if key[0] == stream]:
                del self._ages[key]
            for key in [key for key in self._behind if key[0] == stream]:
                del self._behind[key]

    def _table_families(self) -> list[Family]:
        return [*self._STREAM_FAMILIES, *(f for f in SHARD_LEVEL.values() if f.kind == "counter")]

    def _subscription_series(self) -> Iterator[tuple[Family, tuple[str, ...], float]]:
        for stream, count in sorted((self._subscriptions.read() or {}).items()):
            yield SUBSCRIPTIONS, (stream,), float(count)

    def _behind_series(self) -> Iterator[tuple[Family, tuple[str, ...], float]]:
        with self._ages_lock:
            behind = dict(self._behind)
        per_stream: dict[str, float] = {}
        for (stream, _), seconds in behind.items():
            per_stream[stream] = max(seconds, per_stream.get(stream, 0.0))
        for stream, seconds in sorted(per_stream.items()):
            yield SUBSCRIPTION_BEHIND_LATEST, (stream,), seconds

    def _age_series(self) -> Iterator[tuple[Family, tuple[str, ...], float]]:
        with self._ages_lock:
            ages = dict(self._ages)
        per_stream: dict[str, float] = {}
        for (stream, shard), (age, shard_level) in sorted(ages.items()):
            per_stream[stream] = max(age, per_stream.get(stream, 0.0))
            if shard_level:
                yield SHARD_ITERATOR_AGE, (stream, shard), age
        for stream, age in sorted(per_stream.items()):
            yield ITERATOR_AGE, (stream,), age


Series = Iterator[tuple[Family, tuple[str, ...], float]]


class _CallbackCollector:
    """Families whose series a function yields at scrape time."""

    def __init__(self, families: tuple[Family, ...], series: Callable[[], Series]) -> None:
        self._families = families
        self._series = series

    def describe(self) -> Iterator[Metric]:
        for family in self._families:
            yield _empty(family)

    def collect(self) -> Iterator[Metric]:
        metrics = {family: _empty(family) for family in self._families}
        for family, labels, value in self._series():
            metrics[family].add_metric(labels, value)  # type: ignore[attr-defined]
        yield from metrics.values()


class QuorumProbe:
    """The metadata quorum. `watch(quorum.statistics)` once; `journal_synced` per fsync."""

    def __init__(self, registry: CollectorRegistry, fsync: Histogram) -> None:
        self._statistics: _Watched[QuorumView] = _Watched("quorum")
        self._fsync = fsync.labels("metadata")
        self._lock = threading.Lock()
        self._last_leader: str | None = None
        self._leader_changes = 0
        registry.register(
            _CallbackCollector(
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
        self._view: _Watched[ClusterView] = _Watched("cluster")
        registry.register(
            _CallbackCollector(
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


class ReplicationProbe:
    """Shard replicas on this node: `watch(driver.metrics_view)` once, events as they happen."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._view: _Watched[ReplicationView] = _Watched("replication")
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
            _CallbackCollector(
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


class StorageProbe:
    """The shard log's store: `watch(store.metrics_view)` and `watch_disk(data_dir)` once,
    `group_committed` per group commit (from the writer thread)."""

    def __init__(self, registry: CollectorRegistry, fsync: Histogram) -> None:
        self._view: _Watched[StorageView] = _Watched("storage")
        self._disk_path: Path | None = None
        self._fsync = fsync.labels("shards")
        self._group_records = Histogram(
            GROUP_COMMIT_RECORDS.name,
            GROUP_COMMIT_RECORDS.help,
            registry=registry,
            buckets=GROUP_COMMIT_RECORDS.buckets,
        )
        self._written = Counter(LOG_WRITTEN_BYTES.name, LOG_WRITTEN_BYTES.help, registry=registry)
        registry.register(
            _CallbackCollector(
                (
                    DISK_FREE,
                    DISK_CAPACITY,
                    ROCKSDB_SST_BYTES,
                    ROCKSDB_LIVE_BYTES,
                    ROCKSDB_PENDING_COMPACTION,
                    ROCKSDB_MEMTABLE_BYTES,
                    ROCKSDB_RUNNING_COMPACTIONS,
                    ROCKSDB_WRITE_STOPPED,
                ),
                self._series,
            )
        )

    def watch(self, view: Callable[[], StorageView]) -> None:
        self._view.set(view)

    def watch_disk(self, data_dir: Path) -> None:
        """Report free and total space of the file system holding `data_dir`."""
        self._disk_path = data_dir

    def group_committed(self, records: int, bytes_: int, fsync_seconds: float) -> None:
        """One WriteBatch plus one WAL fsync made `records` durable."""
        assert records >= 0
        assert bytes_ >= 0
        assert fsync_seconds >= 0
        self._group_records.observe(records)
        self._written.inc(bytes_)
        self._fsync.observe(fsync_seconds)

    def _series(self) -> Series:
        if self._disk_path is not None:
            try:
                usage = shutil.disk_usage(self._disk_path)
            except OSError:
                pass  # data dir not created yet, or being removed
            else:
                yield DISK_FREE, (), float(usage.free)
                yield DISK_CAPACITY, (), float(usage.total)
        view = self._view.read()
        if view is None:
            return
        yield ROCKSDB_SST_BYTES, (), float(view.sst_files_bytes)
        yield ROCKSDB_LIVE_BYTES, (), float(view.live_data_bytes)
        yield ROCKSDB_PENDING_COMPACTION, (), float(view.pending_compaction_bytes)
        yield ROCKSDB_MEMTABLE_BYTES, (), float(view.memtable_bytes)
        yield ROCKSDB_RUNNING_COMPACTIONS, (), float(view.running_compactions)
        yield ROCKSDB_WRITE_STOPPED, (), float(view.write_stopped)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamView:
    """One stream as the metadata image shows it, for the per-stream gauges."""

    name: str
    mode: str  # StreamModeDetails.StreamMode: "PROVISIONED" or "ON_DEMAND"
    open_shards: int
    consumers_by_status: Mapping[str, int] = field(default_factory=dict)  # gone ones excluded


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateExpiry:
    """When the certificate of one configured PEM file that expires first expires."""

    file: str
    usage: Literal["certificate", "ca"]
    not_after_s: float  # Unix seconds


AutoscalerAction = Literal["split", "merge", "hot_key", "refused"]


class CatalogProbe:
    """Per-stream facts from the metadata image (open shards and mode, registered consumers):
    `watch(lambda: views(image()))` once. Every node reports its own image: use max()."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._views: _Watched[Iterable[StreamView]] = _Watched("catalog")
        registry.register(_CallbackCollector((STREAM_OPEN_SHARDS, STREAM_CONSUMERS), self._series))

    def watch(self, views: Callable[[], Iterable[StreamView]]) -> None:
        self._views.set(views)

    def _series(self) -> Series:
        views = self._views.read()
        for view in sorted(views or (), key=lambda v: v.name):
            yield STREAM_OPEN_SHARDS, (view.name, view.mode), float(view.open_shards)
            for status, count in sorted(view.consumers_by_status.items()):
                yield STREAM_CONSUMERS, (view.name, status), float(count)


class AutoscalerProbe:
    """The on-demand autoscaler: `ceiling(...)` once, `acted(...)` per decision it proposed.
    Only the quorum leader acts, so the counters grow on whichever node led: sum() them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._ceiling: int | None = None
        self._actions: dict[tuple[str, str], int] = {}
        registry.register(
            _CallbackCollector((ON_DEMAND_MAX_OPEN_SHARDS, AUTOSCALER_ACTIONS), self._series)
        )

    def ceiling(self, max_open_shards: int) -> None:
        """The configured most open shards an ON_DEMAND stream is scaled to."""
        assert max_open_shards >= 1
        with self._lock:
            self._ceiling = max_open_shards

    def acted(self, stream: str, action: AutoscalerAction) -> None:
        """One decision proposed: a split or merge the metadata applied, a hot-key notice,
        or a split or merge it refused."""
        with self._lock:
            key = (stream, action)
            self._actions[key] = self._actions.get(key, 0) + 1

    def _series(self) -> Series:
        with self._lock:
            ceiling, actions = self._ceiling, sorted(self._actions.items())
        if ceiling is not None:
            yield ON_DEMAND_MAX_OPEN_SHARDS, (), float(ceiling)
        for labels, count in actions:
            yield AUTOSCALER_ACTIONS, labels, float(count)


class TlsProbe:
    """Certificate expiry of the node's TLS files: `watch(reader)` once when TLS is on; the
    reader is called at each scrape (`tls.CertificateExpiryReader` re-parses only changed
    files), so a renewed certificate shows its new date at the next scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._read: _Watched[Iterable[CertificateExpiry]] = _Watched("tls")
        registry.register(_CallbackCollector((TLS_CERTIFICATE_EXPIRY,), self._series))

    def watch(self, read: Callable[[], Iterable[CertificateExpiry]]) -> None:
        self._read.set(read)

    def _series(self) -> Series:
        for expiry in self._read.read() or ():
            yield TLS_CERTIFICATE_EXPIRY, (expiry.file, expiry.usage), expiry.not_after_s


class _NodeRegistry(CollectorRegistry):
    """A registry that never exposes `_created` series. prometheus_client adds one per counter
    and histogram child unless `disable_created_metrics()` flips a process-wide switch; dropping
    them here keeps the choice local to Shoal's registries."""

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            if metric.type in ("counter", "histogram", "summary"):
                metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


def shoal_version() -> str:
    try:
        return metadata.version("shoal")
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


class NodeMetrics:
    """Every metric of one node, in its own registry, with one probe per component.

    `node.metrics.gateway.request_finished(...)`, `node.metrics.streams.records_written(...)`;
    `exposition()` renders `/metrics` (Prometheus text format 0.0.4).
    """

    def __init__(
        self,
        *,
        node_id: str,
        version: str | None = None,
        revision: str = "unknown",
        process_metrics: bool = True,
    ) -> None:
        self.node_id = node_id
        self.registry: CollectorRegistry = _NodeRegistry()
        fsync = Histogram(
            FSYNC_DURATION.name,
            FSYNC_DURATION.help,
            FSYNC_DURATION.labels,
            registry=self.registry,
            buckets=FSYNC_DURATION.buckets,
        )
        self.gateway = GatewayProbe(self.registry)
        self.streams = StreamProbe(self.registry)
        self.quorum = QuorumProbe(self.registry, fsync)
        self.cluster = ClusterProbe(self.registry)
        self.replication = ReplicationProbe(self.registry)
        self.storage = StorageProbe(self.registry, fsync)
        self.catalog = CatalogProbe(self.registry)
        self.autoscaler = AutoscalerProbe(self.registry)
        self.tls = TlsProbe(self.registry)
        identity = (
            (BUILD_INFO, (version or shoal_version(), revision, platform.python_version())),
            (NODE_INFO, (node_id,)),
        )
        self.registry.register(
            _CallbackCollector(
                (BUILD_INFO, NODE_INFO), lambda: ((f, labels, 1.0) for f, labels in identity)
            )
        )
        if process_metrics:
            # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds...:
            # the process, shared by every node in it (one per process in production).
            ProcessCollector(registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """The body and Content-Type of a `/metrics` answer."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve `/metrics` (any path, in fact) from a daemon thread; port 0 picks one."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(server, thread)


class MetricsServer:
    """prometheus_client's threaded HTTP server for one registry; `close()` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
