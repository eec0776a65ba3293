"""Every metric family a node exposes, and the probes components report through.

This package is the one place where metric families are declared (STYLE B.10). Names follow
Kinesis' CloudWatch metrics in Prometheus form (ECOSYSTEM §3.2): prefix `kinesis_`, base units
(`_seconds`, `_bytes`), counters end in `_total`. `FAMILIES` lists them all; `docs/operations.md`
has the same table with the CloudWatch name each one stands for.

Layout (one module per family group; each declares its families and the probe that feeds them):
`families` (`Family`, `FAMILIES`), `collectors` (scrape-time readers and series tables), `api`
(requests), `streams` (records, shards, throttling, fan-out), `cluster` (metadata quorum and
image), `replication`, `storage`, `catalog` (streams, consumers, autoscaler), `tls`,
`encryption` (the master key),
`analytics` (the SQL applications a node runs), `node`
(`NodeMetrics`, `MetricsServer`, identity) and `views` (the node's wiring from its metadata
image; imported by the node, not here, as it depends on `broker.meta`). The names other code
uses are re-exported here.

Shape:
- `NodeMetrics` owns one `CollectorRegistry` per node (never prometheus_client's global one), so
  several nodes in one process (tests, the simulator) do not collide. It never emits `_created`
  series (see `_NodeRegistry`), without touching prometheus_client's process-wide switch.
- Components get a probe with intent-named methods instead of touching counters:
  `GatewayProbe` (requests), `StreamProbe` (records in and out, throttling, iterator age),
  `StorageProbe` (group commits, fsync, RocksDB), `QuorumProbe` (the metadata Raft),
  `ReplicationProbe` (shard replicas on this node), `ClusterProbe` (the metadata image's view),
  `CatalogProbe` (per-stream shards and consumers), `AutoscalerProbe` (on-demand scaling),
  `TlsProbe` (certificate expiry), `EncryptionProbe` (the master key), `VideoProbe` (media
  streams: PutMedia and GetMedia),
  `FirehoseProbe` (delivery streams), `AnalyticsProbe` (SQL applications).
- The layers below the node own the protocols they report through (`log.probe`,
  `replication.probe`, `meta.probe`, `service.probe`, `gateway.probe`, `video.probe`,
  `firehose.probe`, with the values they hand over: `StorageView`, `ReplicationView`); the
  classes here implement them, and node.py connects the two. So this package sits above every
  layer it observes and none of them imports it (the layer contract in pyproject.toml).
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

from broker.log.probe import StorageView
from broker.meta.probe import AutoscalerAction
from broker.metrics.analytics import AnalyticsProbe, ApplicationView
from broker.metrics.api import API_REQUEST_DURATION, API_REQUESTS, GatewayProbe
from broker.metrics.catalog import AutoscalerProbe, CatalogProbe, StreamView
from broker.metrics.cluster import ClusterProbe, ClusterView, QuorumProbe, QuorumView
from broker.metrics.encryption import EncryptionProbe
from broker.metrics.families import FAMILIES, PREFIX, Family
from broker.metrics.firehose import FirehoseProbe
from broker.metrics.node import MetricsServer, NodeMetrics, shoal_version
from broker.metrics.replication import ReplicationProbe
from broker.metrics.storage import StorageProbe
from broker.metrics.streams import SHARD_LEVEL, StreamProbe
from broker.metrics.tls import CertificateExpiry, TlsProbe
from broker.metrics.video import VideoProbe
from broker.replication.probe import ReplicationView

__all__ = [
    "API_REQUESTS",
    "API_REQUEST_DURATION",
    "FAMILIES",
    "PREFIX",
    "SHARD_LEVEL",
    "AnalyticsProbe",
    "ApplicationView",
    "AutoscalerAction",
    "AutoscalerProbe",
    "CatalogProbe",
    "CertificateExpiry",
    "ClusterProbe",
    "ClusterView",
    "EncryptionProbe",
    "Family",
    "FirehoseProbe",
    "GatewayProbe",
    "MetricsServer",
    "NodeMetrics",
    "QuorumProbe",
    "QuorumView",
    "ReplicationProbe",
    "ReplicationView",
    "StorageProbe",
    "StorageView",
    "StreamProbe",
    "StreamView",
    "TlsProbe",
    "VideoProbe",
    "shoal_version",
]
