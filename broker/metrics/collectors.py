"""The collector machinery the probes share: scrape-time readers and series tables.

`Watched` reads a component's statistics when Prometheus scrapes (a failing read skips its
series, logged once); `SeriesTable` keeps labelled counters and gauges a stream's series can be
dropped from together; `CallbackCollector` yields the series a function computes at scrape time.
Thread safety: each guards its mutable state with a lock (probes run on the event loop and the
group-commit thread, scrapes on the HTTP server's thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from broker.metrics.families import Family

log = logging.getLogger(__name__)
T = TypeVar("T")


class Watched(Generic[T]):
    """A scrape-time reader: calls the component's statistics function, or skips on error."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._read: Callable[[], T] | None = None
        self._failing = False

    def set(self, read: Callable[[], T]) -> None:
        with self._lock:
            self._read = read

    def read(self) -> T | None:
        with self._lock:
            read = self._read
        if read is None:
            return None
        try:
            value = read()
        except Exception:  # a scrape must not fail because one component is stopping
            if not self._failing:
                log.warning("metrics_statistics_failed", extra={"what": self._what}, exc_info=True)
            self._failing = True
            return None
        self._failing = False
        return value


def _gauge(family: Family) -> GaugeMetricFamily:
    return GaugeMetricFamily(family.name, family.help, labels=family.labels)


def _counter(family: Family) -> CounterMetricFamily:
    return CounterMetricFamily(family.name, family.help, labels=family.labels)


def _empty(family: Family) -> Metric:
    return _counter(family) if family.kind == "counter" else _gauge(family)


class SeriesTable:
    """Labelled counters and gauges kept in dicts, so a stream's series can be dropped together
    (deleted stream, enhanced monitoring turned off). Collected as a prometheus_client
    collector."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._lock = threading.Lock()
        self._series: dict[Family, dict[tuple[str, ...], float]] = {f: {} for f in families}

    def add(self, family: Family, labels: tuple[str, ...], amount: float) -> None:
        assert len(labels) == len(family.labels)
        assert family.kind == "counter"
        assert amount >= 0
        with self._lock:
            table = self._series[family]
            table[labels] = table.get(labels, 0.0) + amount

    def set(self, family: Family, labels: tuple[str, ...], value: float) -> None:
        assert family.kind == "gauge"
        assert len(labels) == len(family.labels)
        with self._lock:
            self._series[family][labels] = value

    def drop(self, families: Iterable[Family], stream: str) -> None:
        """Remove every series of `families` whose first label (stream) is `stream`."""
        with self._lock:
            for family in families:
                table = self._series[family]
                for labels in [labels for labels in table if labels[0] == stream]:
                    del table[labels]

    def describe(self) -> Iterator[Metric]:
        for family in self._series:
            yield _empty(family)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = {family: dict(table) for family, table in self._series.items()}
        for family, table in snapshot.items():
            metric = _empty(family)
            for labels, value in sorted(table.items()):
                metric.add_metric(labels, value)  # type: ignore[attr-defined]
            yield metric


Series = Iterator[tuple[Family, tuple[str, ...], float]]


class CallbackCollector:
    """Families whose series a function yields at scrape time."""

    def __init__(self, families: tuple[Family, ...], series: Callable[[], Series]) -> None:
        self._families = families
        self._series = series

    def describe(self) -> Iterator[Metric]:
        for family in self._families:
            yield _empty(family)

    def collect(self) -> Iterator[Metric]:
        metrics = {family: _empty(family) for family in self._families}
        for family, labels, value in self._series():
            metrics[family].add_metric(labels, value)  # type: ignore[attr-defined]
        yield from metrics.values()
