"""Streams, consumers and on-demand scaling as the metadata image shows them (use max() across
nodes): per-stream open shards and registered consumers, and the autoscaler's actions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from broker.meta.probe import AutoscalerAction
from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare

# --- Streams, consumers and on-demand scaling (the metadata image; use max() across nodes) ----
STREAM_OPEN_SHARDS = declare(
    "kinesis_stream_open_shards",
    "gauge",
    "Open shards of each stream in this node's image, with its capacity mode.",
    ("stream", "mode"),
    cloudwatch="OpenShardCount (DescribeStreamSummary)",
)
STREAM_CONSUMERS = declare(
    "kinesis_stream_consumers",
    "gauge",
    "Registered enhanced fan-out consumers of each stream by status, in this node's image.",
    ("stream", "status"),
    cloudwatch="ConsumerCount (DescribeStreamSummary)",
)
ON_DEMAND_MAX_OPEN_SHARDS = declare(
    "kinesis_on_demand_max_open_shards",
    "gauge",
    "The autoscaler's ceiling of open shards per ON_DEMAND stream (on_demand_max_shards).",
)
AUTOSCALER_ACTIONS = declare(
    "kinesis_autoscaler_actions_total",
    "counter",
    "On-demand autoscaler decisions proposed by this node while it led the quorum: split and "
    "merge (applied), hot_key (a notice), refused (a split or merge the metadata refused).",
    ("stream", "action"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamView:
    """One stream as the metadata image shows it, for the per-stream gauges."""

    name: str
    mode: str  # StreamModeDetails.StreamMode: "PROVISIONED" or "ON_DEMAND"
    open_shards: int
    consumers_by_status: Mapping[str, int] = field(default_factory=dict)  # gone ones excluded


class CatalogProbe:
    """Per-stream facts from the metadata image (open shards and mode, registered consumers):
    `watch(lambda: views(image()))` once. Every node reports its own image: use max()."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._views: Watched[Iterable[StreamView]] = Watched("catalog")
        registry.register(CallbackCollector((STREAM_OPEN_SHARDS, STREAM_CONSUMERS), self._series))

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
            CallbackCollector((ON_DEMAND_MAX_OPEN_SHARDS, AUTOSCALER_ACTIONS), self._series)
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
