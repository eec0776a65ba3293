"""What the Kinesis service reports to the node's metrics (the probe protocol this layer owns;
`metrics.streams.StreamProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Protocol


class StreamProbe(Protocol):
    """Per-stream and per-shard events of the Kinesis operations."""

    def records_written(
        self, stream: str, shard: str, records: int, bytes_: int, shard_metrics: Collection[str]
    ) -> None:
        """Records made durable (committed) on a shard this node leads."""
        ...

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
        ...

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
        ...

    def watch_subscriptions(self, open_per_stream: Callable[[], Mapping[str, int]]) -> None:
        """Read the open subscriptions per stream at each scrape (`Subscriptions.per_stream`)."""
        ...

    def subscription_closed(self, stream: str, shard: str) -> None:
        """An open subscription ended. Its shard's MillisBehindLatest is forgotten, so a
        consumer that went away does not hold the lag gauge (and its alert) at the last value
        it saw; another subscriber of the shard sets it again with its next event."""
        ...

    def subscribe_refused(self, stream: str) -> None:
        """A SubscribeToShard call refused for the rate rules (SubscribeToShard.RateExceeded)."""
        ...

    def put_records_finished(
        self, stream: str, succeeded: int, throttled: int, failed: int
    ) -> None:
        """The per-record outcome of one PutRecords request."""
        ...

    def write_throttled(
        self, stream: str, shard: str, records: int, shard_metrics: Collection[str]
    ) -> None:
        """Records refused with ProvisionedThroughputExceededException by a shard's write limit."""
        ...

    def read_throttled(self, stream: str, shard: str, shard_metrics: Collection[str]) -> None:
        """One GetRecords call refused by a shard's read limit."""
        ...

    def enhanced_monitoring_changed(self, stream: str, shard_metrics: Collection[str]) -> None:
        """Drop the shard-level series a stream no longer enables (Disable...Monitoring)."""
        ...

    def stream_deleted(self, stream: str) -> None:
        """Forget every series of a deleted stream (its name may be reused)."""
        ...
