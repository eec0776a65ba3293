"""Records in and out of streams and shards, throttling, iterator age and enhanced fan-out.

Stream-labelled series always exist; shard-labelled ones (`kinesis_shard_*`) only for the
metrics a stream's enhanced monitoring enables (`SHARD_LEVEL`), as on AWS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping

from prometheus_client import CollectorRegistry

from broker.metrics.collectors import CallbackCollector, SeriesTable, Watched
from broker.metrics.families import Family, declare

# --- Records, per stream (always) and per shard (enhanced monitoring) ------------------------
INCOMING_BYTES = declare(
    "kinesis_incoming_bytes_total",
    "counter",
    "Bytes (data and partition keys) successfully written, counted by the shard's leader.",
    ("stream",),
    cloudwatch="IncomingBytes",
)
INCOMING_RECORDS = declare(
    "kinesis_incoming_records_total",
    "counter",
    "Records successfully written, counted by the shard's leader.",
    ("stream",),
    cloudwatch="IncomingRecords",
)
OUTGOING_BYTES = declare(
    "kinesis_outgoing_bytes_total",
    "counter",
    "Bytes returned to consumers by this node, by API (GetRecords, SubscribeToShard).",
    ("stream", "api"),
    cloudwatch="GetRecords.Bytes / OutgoingBytes",
)
OUTGOING_RECORDS = declare(
    "kinesis_outgoing_records_total",
    "counter",
    "Records returned to consumers by this node, by API (GetRecords, SubscribeToShard).",
    ("stream", "api"),
    cloudwatch="GetRecords.Records / OutgoingRecords",
)
PUT_RECORDS_RECORDS = declare(
    "kinesis_put_records_records_total",
    "counter",
    "Records in PutRecords requests by outcome: success, throttled, or failed (other errors).",
    ("stream", "result"),
    cloudwatch="PutRecords.SuccessfulRecords / ThrottledRecords / FailedRecords",
)
WRITE_THROUGHPUT_EXCEEDED = declare(
    "kinesis_write_throughput_exceeded_total",
    "counter",
    "Records refused because a shard's write throughput limit was exceeded.",
    ("stream",),
    cloudwatch="WriteProvisionedThroughputExceeded",
)
READ_THROUGHPUT_EXCEEDED = declare(
    "kinesis_read_throughput_exceeded_total",
    "counter",
    "GetRecords calls refused because a shard's read throughput limit was exceeded.",
    ("stream",),
    cloudwatch="ReadProvisionedThroughputExceeded",
)
ITERATOR_AGE = declare(
    "kinesis_iterator_age_seconds",
    "gauge",
    "Largest iterator age last seen by this node's GetRecords among the stream's shards: how "
    "far the slowest consumer is behind the tip.",
    ("stream",),
    cloudwatch="GetRecords.IteratorAgeMilliseconds",
)
SUBSCRIPTION_BEHIND_LATEST = declare(
    "kinesis_subscription_behind_latest_seconds",
    "gauge",
    "Largest MillisBehindLatest (in seconds) of the last SubscribeToShard event sent by this "
    "node among the stream's shards: how far the slowest enhanced fan-out consumer is behind.",
    ("stream",),
    cloudwatch="SubscribeToShardEvent.MillisBehindLatest",
)
SHARD_INCOMING_BYTES = declare(
    "kinesis_shard_incoming_bytes_total",
    "counter",
    "Per shard, with enhanced monitoring: bytes successfully written.",
    ("stream", "shard"),
    cloudwatch="IncomingBytes (shard level)",
)
SHARD_INCOMING_RECORDS = declare(
    "kinesis_shard_incoming_records_total",
    "counter",
    "Per shard, with enhanced monitoring: records successfully written.",
    ("stream", "shard"),
    cloudwatch="IncomingRecords (shard level)",
)
SHARD_OUTGOING_BYTES = declare(
    "kinesis_shard_outgoing_bytes_total",
    "counter",
    "Per shard, with enhanced monitoring: bytes returned to consumers.",
    ("stream", "shard", "api"),
    cloudwatch="OutgoingBytes (shard level)",
)
SHARD_OUTGOING_RECORDS = declare(
    "kinesis_shard_outgoing_records_total",
    "counter",
    "Per shard, with enhanced monitoring: records returned to consumers.",
    ("stream", "shard", "api"),
    cloudwatch="OutgoingRecords (shard level)",
)
SHARD_WRITE_THROUGHPUT_EXCEEDED = declare(
    "kinesis_shard_write_throughput_exceeded_total",
    "counter",
    "Per shard, with enhanced monitoring: records refused by the write throughput limit.",
    ("stream", "shard"),
    cloudwatch="WriteProvisionedThroughputExceeded (shard level)",
)
SHARD_READ_THROUGHPUT_EXCEEDED = declare(
    "kinesis_shard_read_throughput_exceeded_total",
    "counter",
    "Per shard, with enhanced monitoring: GetRecords calls refused by the read limit.",
    ("stream", "shard"),
    cloudwatch="ReadProvisionedThroughputExceeded (shard level)",
)
SHARD_ITERATOR_AGE = declare(
    "kinesis_shard_iterator_age_seconds",
    "gauge",
    "Per shard, with enhanced monitoring: iterator age of the last GetRecords on this node.",
    ("stream", "shard"),
    cloudwatch="IteratorAgeMilliseconds (shard level)",
)

# --- Enhanced fan-out (SubscribeToShard), beside the records and bytes counted above ----------
SUBSCRIPTIONS = declare(
    "kinesis_subscriptions",
    "gauge",
    "Open SubscribeToShard subscriptions served by this node (sum across nodes).",
    ("stream",),
)
SUBSCRIPTION_EVENTS = declare(
    "kinesis_subscription_events_total",
    "counter",
    "SubscribeToShard events sent by this node, with records or empty (heartbeats).",
    ("stream",),
    cloudwatch="SubscribeToShardEvent.Success",
)
SUBSCRIBE_RATE_EXCEEDED = declare(
    "kinesis_subscribe_to_shard_rate_exceeded_total",
    "counter",
    "SubscribeToShard calls refused because the consumer already holds a subscription to the "
    "shard (ResourceInUseException) or the node holds its limit of subscriptions.",
    ("stream",),
    cloudwatch="SubscribeToShard.RateExceeded",
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
        self._table = SeriesTable(
            (*self._STREAM_FAMILIES, *(f for f in SHARD_LEVEL.values() if f.kind == "counter"))
        )
        registry.register(self._table)
        # Iterator age: the last value per shard; the stream gauge is their maximum.
        self._ages_lock = threading.Lock()
        self._ages: dict[tuple[str, str], tuple[float, bool]] = {}  # -> (seconds, shard-level)
        registry.register(CallbackCollector((ITERATOR_AGE, SHARD_ITERATOR_AGE), self._age_series))
        # SubscribeToShard's MillisBehindLatest: the last value per shard, max per stream.
        self._behind: dict[tuple[str, str], float] = {}  # guarded by _ages_lock
        registry.register(CallbackCollector((SUBSCRIPTION_BEHIND_LATEST,), self._behind_series))
        # Open subscriptions per stream, read from the node's subscriptions at each scrape.
        self._subscriptions: Watched[Mapping[str, int]] = Watched("subscriptions")
        registry.register(CallbackCollector((SUBSCRIPTIONS,), self._subscription_series))

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
