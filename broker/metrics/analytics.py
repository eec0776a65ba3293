"""Kinesis Data Analytics: each SQL application this node runs (records in and out, errors,
how far its input reader is behind). Labelled by application name; the series live on the
node that runs the application and move with it (counters restart there, as rate() expects)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare

ANALYTICS_INPUT_RECORDS = declare(
    "kinesis_analytics_input_records_total",
    "counter",
    "Records a running SQL application read from its input stream on this node.",
    ("application",),
    cloudwatch="Records",
)
ANALYTICS_OUTPUT_RECORDS = declare(
    "kinesis_analytics_output_records_total",
    "counter",
    "Records a running SQL application wrote to its output streams from this node.",
    ("application",),
    cloudwatch="Success",
)
ANALYTICS_INPUT_ERRORS = declare(
    "kinesis_analytics_input_errors_total",
    "counter",
    "Input records that did not match the input schema (KDA's error_stream).",
    ("application",),
)
ANALYTICS_LATE_ROWS = declare(
    "kinesis_analytics_late_rows_total",
    "counter",
    "Rows that arrived for a window that had already closed (dropped).",
    ("application",),
)
ANALYTICS_BEHIND_LATEST = declare(
    "kinesis_analytics_input_behind_latest_seconds",
    "gauge",
    "How far the application's slowest input shard reader is behind the stream's tip.",
    ("application",),
    cloudwatch="MillisBehindLatest",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationView:
    application: str
    records_in: int
    records_out: int
    errors: int
    late_rows: int
    millis_behind_latest: int


class AnalyticsProbe:
    """The applications this node runs, read at each scrape: `watch(read)` once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._read: Watched[Iterable[ApplicationView]] = Watched("analytics")
        families = (
            ANALYTICS_INPUT_RECORDS,
            ANALYTICS_OUTPUT_RECORDS,
            ANALYTICS_INPUT_ERRORS,
            ANALYTICS_LATE_ROWS,
            ANALYTICS_BEHIND_LATEST,
        )
        registry.register(CallbackCollector(families, self._series))

    def watch(self, read: Callable[[], Iterable[ApplicationView]]) -> None:
        self._read.set(read)

    def _series(self) -> Series:
        for view in self._read.read() or ():
            labels = (view.application,)
            yield ANALYTICS_INPUT_RECORDS, labels, float(view.records_in)
            yield ANALYTICS_OUTPUT_RECORDS, labels, float(view.records_out)
            yield ANALYTICS_INPUT_ERRORS, labels, float(view.errors)
            yield ANALYTICS_LATE_ROWS, labels, float(view.late_rows)
            yield ANALYTICS_BEHIND_LATEST, labels, view.millis_behind_latest / 1000
