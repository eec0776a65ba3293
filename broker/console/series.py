"""A stream's series in this node's Prometheus registry, for the stream page's "on this node"
table: what the node counted for it since it started (writes it led, reads it served, requests
it throttled) and the consumer lag it last saw. Other nodes count their own; Prometheus and the
Grafana dashboard sum them over the cluster."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

STREAM_LABEL = "stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesRow:
    name: str
    labels: str  # the labels other than the stream, as `key=value` pairs
    value: float
    help: str


def stream_series(registry: CollectorRegistry, stream_name: str) -> tuple[SeriesRow, ...]:
    """Every sample of a `kinesis_*` family labelled with this stream, by name and labels."""
    rows: list[SeriesRow] = []
    for family in registry.collect():
        if not family.name.startswith("kinesis_"):
            continue
        for sample in family.samples:
            if sample.labels.get(STREAM_LABEL) != stream_name or sample.name.endswith("_created"):
                continue
            labels = ", ".join(
                f"{key}={value}"
                for key, value in sorted(sample.labels.items())
                if key != STREAM_LABEL
            )
            rows.append(
                SeriesRow(
                    name=sample.name, labels=labels, value=sample.value, help=family.documentation
                )
            )
    rows.sort(key=lambda row: (row.name, row.labels))
    return tuple(rows)
