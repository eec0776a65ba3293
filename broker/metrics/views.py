"""What `/metrics` reads from a node's metadata image and certificate files, and its wiring.

`broker.metrics` declares families and knows nothing of the metadata types; this module turns
the image into `StreamView`s (open shards and capacity mode per stream, registered consumers
by status) and the SQL applications the node runs into `ApplicationView`s, and hands the
node's TLS files and autoscaler to their probes. `watch_node` is the
one call a node makes, once its metadata frontend and autoscaler exist.

Cost: `stream_views` walks every stream's shards once per scrape (every 15-30 s in production),
the same walk `kinesis_open_shards` already makes, and the consumer table once.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.analytics.runner import ApplicationRunner
from broker.meta.autoscaler import Autoscaler
from broker.meta.image import MetadataImage
from broker.metrics.analytics import ApplicationView
from broker.metrics.catalog import StreamView
from broker.metrics.node import NodeMetrics
from broker.metrics.tls import CertificateExpiry
from broker.tls import CertificateExpiryReader, TlsFiles
from broker.types import StreamUid


def stream_views(image: MetadataImage, *, now_ms: int) -> list[StreamView]:
    """Every stream that is not gone, with its open shards and its consumers by status (one
    pass over the consumer table, not one per stream)."""
    consumers: dict[StreamUid, dict[str, int]] = {}
    for consumer in image.consumers.consumers:
        if not consumer.is_gone(now_ms=now_ms):
            by_status = consumers.setdefault(consumer.stream_uid, {})
            status = consumer.status(now_ms=now_ms).value
            by_status[status] = by_status.get(status, 0) + 1
    return [
        StreamView(
            name=stream.name,
            mode=stream.mode.value,
            open_shards=len(stream.open_shards()),
            consumers_by_status=consumers.get(stream.uid, {}),
        )
        for stream in image.streams.values()
        if not stream.is_gone(now_ms=now_ms)
    ]


def certificate_expiry(reader: CertificateExpiryReader) -> list[CertificateExpiry]:
    return [
        CertificateExpiry(
            file=str(path), usage="ca" if usage == "ca" else "certificate", not_after_s=not_after
        )
        for path, usage, not_after in reader.read()
    ]


def analytics_views(runner: ApplicationRunner) -> list[ApplicationView]:
    """The SQL applications this node runs, as their metrics see them."""
    return [
        ApplicationView(
            application=key.rsplit("/", 1)[-1],
            records_in=statistics.records_in,
            records_out=statistics.records_out,
            errors=statistics.errors,
            late_rows=statistics.late_rows,
            millis_behind_latest=statistics.millis_behind_latest,
        )
        for key, statistics in runner.statistics().items()
    ]


def watch_node(
    metrics: NodeMetrics,
    *,
    image: Callable[[], MetadataImage],
    wall_ms: Callable[[], int],
    tls_files: TlsFiles | None,
    autoscaler: Autoscaler,
) -> None:
    """Wire the per-stream, autoscaler and certificate metrics of one node."""
    metrics.catalog.watch(lambda: stream_views(image(), now_ms=wall_ms()))
    autoscaler.report_to(metrics.autoscaler)
    if tls_files is not None:
        reader = CertificateExpiryReader(tls_files)
        metrics.tls.watch(lambda: certificate_expiry(reader))
