"""Data Firehose delivery streams: `FirehoseProbe`, named after Firehose's CloudWatch metrics
(namespace AWS/Firehose). Counters grow on the node that took the put or delivered the
object: sum() them across nodes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from broker.metrics.families import Family, declare

# Data freshness: seconds from a record's arrival to its object being written. Buffering
# intervals run from 0 to 900 s; retries can add hours.
FRESHNESS_BUCKETS = (1, 5, 15, 30, 60, 90, 120, 180, 300, 450, 600, 900, 1800, 3600)

FIREHOSE_INCOMING_RECORDS = declare(
    "kinesis_firehose_incoming_records_total",
    "counter",
    "Records put into each delivery stream (PutRecord, PutRecordBatch) and acknowledged.",
    ("delivery_stream",),
    cloudwatch="IncomingRecords (AWS/Firehose)",
)
FIREHOSE_INCOMING_BYTES = declare(
    "kinesis_firehose_incoming_bytes_total",
    "counter",
    "Bytes of the records put into each delivery stream and acknowledged.",
    ("delivery_stream",),
    cloudwatch="IncomingBytes (AWS/Firehose)",
)
FIREHOSE_THROTTLED_RECORDS = declare(
    "kinesis_firehose_throttled_records_total",
    "counter",
    "Records refused because the delivery stream was over its write limits.",
    ("delivery_stream",),
    cloudwatch="ThrottledRecords (AWS/Firehose)",
)
FIREHOSE_DELIVERY_RECORDS = declare(
    "kinesis_firehose_delivery_records_total",
    "counter",
    'Records delivered, by delivery stream and destination ("s3", "http_endpoint").',
    ("delivery_stream", "destination"),
    cloudwatch="DeliveryToS3.Records, DeliveryToHttpEndpoint.Records (AWS/Firehose)",
)
FIREHOSE_DELIVERY_BYTES = declare(
    "kinesis_firehose_delivery_bytes_total",
    "counter",
    "Bytes delivered (before compression or conversion), by delivery stream and destination.",
    ("delivery_stream", "destination"),
    cloudwatch="DeliveryToS3.Bytes, DeliveryToHttpEndpoint.Bytes (AWS/Firehose)",
)
FIREHOSE_DELIVERY_ATTEMPTS = declare(
    "kinesis_firehose_delivery_attempts_total",
    "counter",
    'Delivery attempts by result ("success", "failure"); the success ratio is DeliveryTo*.Success.',
    ("delivery_stream", "destination", "result"),
    cloudwatch="DeliveryToS3.Success, DeliveryToHttpEndpoint.Success (AWS/Firehose)",
)
FIREHOSE_DATA_FRESHNESS = declare(
    "kinesis_firehose_data_freshness_seconds",
    "histogram",
    "Age of the oldest record of each delivered object or request when it was delivered.",
    ("delivery_stream", "destination"),
    cloudwatch="DeliveryToS3.DataFreshness, DeliveryToHttpEndpoint.DataFreshness",
    buckets=FRESHNESS_BUCKETS,
)
FIREHOSE_FAILED_RECORDS = declare(
    "kinesis_firehose_failed_records_total",
    "counter",
    "Records written to the error output, by error output type (processing-failed, "
    "http-endpoint-failed, format-conversion-failed, partitioning-failed), or dropped after "
    '24 hours of failed deliveries ("abandoned").',
    ("delivery_stream", "error_output_type"),
    cloudwatch="ExecuteProcessing.Success, DeliveryToS3.Success (failures) (AWS/Firehose)",
)


class FirehoseProbe:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(family: Family) -> Counter:
            return Counter(family.name, family.help, family.labels, registry=registry)

        self._incoming_records = counter(FIREHOSE_INCOMING_RECORDS)
        self._incoming_bytes = counter(FIREHOSE_INCOMING_BYTES)
        self._throttled = counter(FIREHOSE_THROTTLED_RECORDS)
        self._delivered_records = counter(FIREHOSE_DELIVERY_RECORDS)
        self._delivered_bytes = counter(FIREHOSE_DELIVERY_BYTES)
        self._attempts = counter(FIREHOSE_DELIVERY_ATTEMPTS)
        self._failed = counter(FIREHOSE_FAILED_RECORDS)
        self._freshness = Histogram(
            FIREHOSE_DATA_FRESHNESS.name,
            FIREHOSE_DATA_FRESHNESS.help,
            FIREHOSE_DATA_FRESHNESS.labels,
            registry=registry,
            buckets=FIREHOSE_DATA_FRESHNESS.buckets,
        )

    def records_put(self, delivery_stream: str, *, records: int, size: int, throttled: int) -> None:
        """One acknowledged put: `records` stored (`size` bytes), `throttled` refused."""
        self._incoming_records.labels(delivery_stream).inc(records)
        self._incoming_bytes.labels(delivery_stream).inc(size)
        if throttled:
            self._throttled.labels(delivery_stream).inc(throttled)

    def delivered(
        self, delivery_stream: str, destination: str, *, records: int, size: int, age_s: float
    ) -> None:
        self._delivered_records.labels(delivery_stream, destination).inc(records)
        self._delivered_bytes.labels(delivery_stream, destination).inc(size)
        self._attempts.labels(delivery_stream, destination, "success").inc()
        self._freshness.labels(delivery_stream, destination).observe(max(age_s, 0.0))

    def attempt_failed(self, delivery_stream: str, destination: str) -> None:
        self._attempts.labels(delivery_stream, destination, "failure").inc()

    def records_failed(self, delivery_stream: str, error_output_type: str, count: int) -> None:
        self._failed.labels(delivery_stream, error_output_type).inc(count)
