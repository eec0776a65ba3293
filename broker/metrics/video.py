"""Media streams (Kinesis Video Streams): what PutMedia took in and GetMedia gave out, and how
long a fragment took from RECEIVED to PERSISTED. Named after KVS's CloudWatch metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.metrics.families import Family, declare

# From a fragment's last byte to its PERSISTED: a replicated append, a few milliseconds on a
# quiet cluster, up to seconds through a failover. AWS's goal for the benchmark: p99 < 500 ms.
PERSIST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

VIDEO_INCOMING_BYTES = declare(
    "kinesis_video_put_media_incoming_bytes_total",
    "counter",
    "MKV bytes PutMedia received, by video stream.",
    ("stream",),
    cloudwatch="PutMedia.IncomingBytes",
)
VIDEO_INCOMING_FRAGMENTS = declare(
    "kinesis_video_put_media_incoming_fragments_total",
    "counter",
    "Complete fragments PutMedia received (RECEIVED acknowledgements), by video stream.",
    ("stream",),
    cloudwatch="PutMedia.IncomingFragments",
)
VIDEO_PERSIST_LATENCY = declare(
    "kinesis_video_put_media_fragment_persist_latency_seconds",
    "histogram",
    "Time from a fragment's RECEIVED to its PERSISTED (durable on a majority of replicas).",
    (),
    cloudwatch="PutMedia.FragmentPersist.Latency",
    buckets=PERSIST_BUCKETS,
)
VIDEO_ERROR_ACKS = declare(
    "kinesis_video_put_media_error_acks_total",
    "counter",
    "ERROR acknowledgements PutMedia sent, by video stream and AWS error id name.",
    ("stream", "error"),
    cloudwatch="PutMedia.ErrorAckCount",
)
VIDEO_CONNECTIONS = declare(
    "kinesis_video_put_media_connections",
    "gauge",
    "PutMedia sessions open on this node.",
    (),
    cloudwatch="PutMedia.ActiveConnections",
)
VIDEO_OUTGOING_BYTES = declare(
    "kinesis_video_get_media_outgoing_bytes_total",
    "counter",
    "MKV bytes GetMedia and GetMediaForFragmentList sent, by video stream.",
    ("stream",),
    cloudwatch="GetMedia.OutgoingBytes",
)
VIDEO_OUTGOING_FRAGMENTS = declare(
    "kinesis_video_get_media_outgoing_fragments_total",
    "counter",
    "Fragments GetMedia and GetMediaForFragmentList sent, by video stream.",
    ("stream",),
    cloudwatch="GetMedia.OutgoingFragments",
)


class VideoProbe:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(family: Family) -> Counter:
            return Counter(family.name, family.help, family.labels, registry=registry)

        self._in_bytes = counter(VIDEO_INCOMING_BYTES)
        self._in_fragments = counter(VIDEO_INCOMING_FRAGMENTS)
        self._errors = counter(VIDEO_ERROR_ACKS)
        self._out_bytes = counter(VIDEO_OUTGOING_BYTES)
        self._out_fragments = counter(VIDEO_OUTGOING_FRAGMENTS)
        self._persist = Histogram(
            VIDEO_PERSIST_LATENCY.name,
            VIDEO_PERSIST_LATENCY.help,
            VIDEO_PERSIST_LATENCY.labels,
            registry=registry,
            buckets=VIDEO_PERSIST_LATENCY.buckets,
        )
        self._connections = Gauge(VIDEO_CONNECTIONS.name, VIDEO_CONNECTIONS.help, registry=registry)

    def received_bytes(self, stream: str, count: int) -> None:
        self._in_bytes.labels(stream).inc(count)

    def received_fragment(self, stream: str) -> None:
        self._in_fragments.labels(stream).inc()

    def persisted(self, seconds: float) -> None:
        assert seconds >= 0
        self._persist.observe(seconds)

    def error_ack(self, stream: str, error: str) -> None:
        self._errors.labels(stream, error).inc()

    def session_opened(self) -> None:
        self._connections.inc()

    def session_closed(self) -> None:
        self._connections.dec()

    def sent(self, stream: str, *, fragments: int, count: int) -> None:
        self._out_fragments.labels(stream).inc(fragments)
        self._out_bytes.labels(stream).inc(count)
