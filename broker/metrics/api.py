"""Requests through either front door (gRPC or the AWS HTTP protocol): `GatewayProbe`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from broker.metrics.families import declare

# Request latency: Kinesis puts take a few milliseconds, GetRecords up to seconds under load,
# and a put waiting on a replica quorum sits in between. 14 buckets, 0.5 ms to 10 s.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# --- Requests (every front door; `code` is "OK" or the Kinesis error name) -------------------
API_REQUESTS = declare(
    "kinesis_api_requests_total",
    "counter",
    "Kinesis API requests answered by this node, by operation and result code "
    '("OK" or the Kinesis error name).',
    ("operation", "code"),
    cloudwatch="<Operation>.Success",
)
API_REQUEST_DURATION = declare(
    "kinesis_api_request_duration_seconds",
    "histogram",
    "Time from a decoded request to its answer on this node, by operation.",
    ("operation",),
    cloudwatch="<Operation>.Latency",
    buckets=REQUEST_BUCKETS,
)


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
