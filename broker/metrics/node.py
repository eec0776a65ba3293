"""One node's metrics: `NodeMetrics` (its own registry, one probe per component, identity
series) and `MetricsServer` (the threaded HTTP server for `/metrics`)."""

from __future__ import annotations

import base64
import hmac
import platform
import threading
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    ThreadingWSGIServer,
    make_wsgi_app,
)
from prometheus_client.metrics_core import Metric

from broker.metrics.analytics import AnalyticsProbe
from broker.metrics.api import GatewayProbe
from broker.metrics.catalog import AutoscalerProbe, CatalogProbe
from broker.metrics.cluster import ClusterProbe, QuorumProbe
from broker.metrics.collectors import CallbackCollector
from broker.metrics.encryption import EncryptionProbe
from broker.metrics.families import declare
from broker.metrics.firehose import FirehoseProbe
from broker.metrics.replication import ReplicationProbe
from broker.metrics.storage import FSYNC_DURATION, StorageProbe
from broker.metrics.streams import StreamProbe
from broker.metrics.tls import TlsProbe
from broker.metrics.video import VideoProbe

# --- Identity ---------------------------------------------------------------------------------
BUILD_INFO = declare(
    "kinesis_build_info",
    "gauge",
    "Always 1; the labels say which Shoal build and Python run this node.",
    ("version", "revision", "python_version"),
)
NODE_INFO = declare(
    "kinesis_node_info",
    "gauge",
    "Always 1; node_id joins a scrape target to the node's id in the cluster.",
    ("node_id",),
)


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
        self.encryption = EncryptionProbe(self.registry)
        self.video = VideoProbe(self.registry)
        self.analytics = AnalyticsProbe(self.registry)
        self.firehose = FirehoseProbe(self.registry)
        identity = (
            (BUILD_INFO, (version or shoal_version(), revision, platform.python_version())),
            (NODE_INFO, (node_id,)),
        )
        self.registry.register(
            CallbackCollector(
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

    def serve(
        self, host: str, port: int, *, basic_auth: Mapping[str, str] | None = None
    ) -> MetricsServer:
        """Serve `/metrics` (any path, in fact) from a daemon thread; port 0 picks one.

        With `basic_auth` (access key id -> secret: the node's configured keys, when access
        control is on) a scrape must send HTTP basic authentication with one of them
        (Prometheus' `basic_auth`): the labels name every account's streams, so the endpoint
        is the operator's, not any principal's."""
        if not basic_auth:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
            return MetricsServer(server, thread)
        app = _basic_auth(make_wsgi_app(self.registry), dict(basic_auth))
        httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        return MetricsServer(httpd, thread)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per scrape is noise; the node logs what matters


def _basic_auth(app: Any, secrets: dict[str, str]) -> Any:
    """`app` behind HTTP basic authentication (401 with a challenge otherwise)."""

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            expected = secrets.get(user)
            if expected is not None and hmac.compare_digest(password.encode(), expected.encode()):
                return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", 'Basic realm="shoal metrics"'), ("Content-Length", "0")],
        )
        return [b""]

    return guarded


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
