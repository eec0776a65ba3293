"""A stream's (or a delivery stream's) series in this node's Prometheus registry, for the
pages' "on this node" tables: what the node counted for it since it started (writes it led,
reads it served, requests it throttled, objects it delivered) and the consumer lag it last saw.
Other nodes count their own; Prometheus and the Grafana dashboard sum them over the cluster."""

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
    return labelled_series(registry, prefix="kinesis_", label=STREAM_LABEL, value=stream_name)


def labelled_series(
    registry: CollectorRegistry, *, prefix: str, label: str, value: str
) -> tuple[SeriesRow, ...]:
    """Every sample of a family named `prefix...` whose `label` is `value`, by name and labels
    (the other labels as `key=value` pairs)."""
    rows: list[SeriesRow] = []
    for family in registry.collect():
        if not family.name.startswith(prefix):
            continue
        for sample in family.samples:
            if sample.labels.get(label) != value or sample.name.endswith("_created"):
                continue
            labels = ", ".join(
                f"{key}={text}" for key, text in sorted(sample.labels.items()) if key != label
            )
            rows.append(
                SeriesRow(
                    name=sample.name, labels=labels, value=sample.value, help=family.documentation
                )
            )
    rows.sort(key=lambda row: (row.name, row.labels))
    return tuple(rows)
