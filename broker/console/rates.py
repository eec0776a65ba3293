"""Recent write rates per stream for the streams list's sparklines: a bounded history sampled
from the metadata image's load reports. Pure (the caller passes the clock reading); loop only."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

SAMPLE_INTERVAL_MS = 5_000
SAMPLES_KEPT = 60  # five minutes at one sample every five seconds


@dataclass(frozen=True, slots=True)
class Sample:
    time_ms: int
    records_per_second: float
    bytes_per_second: float


class RateHistory:
    """The last `SAMPLES_KEPT` samples of each stream's incoming records and bytes per second.
    A stream without traffic keeps zero samples; a deleted one is dropped at the next sample."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[Sample]] = {}
        self._last_ms: int | None = None

    def due(self, now_ms: int) -> bool:
        return self._last_ms is None or now_ms - self._last_ms >= SAMPLE_INTERVAL_MS

    def sample(self, now_ms: int, rates: Mapping[str, tuple[float, float]]) -> None:
        """Record one sample; `rates` is (records/s, bytes/s) for every stream that exists."""
        self._last_ms = now_ms
        for name in list(self._samples):
            if name not in rates:
                del self._samples[name]
        for name, (records, size) in rates.items():
            history = self._samples.setdefault(name, deque(maxlen=SAMPLES_KEPT))
            history.append(Sample(now_ms, records, size))

    def series(self, name: str) -> tuple[Sample, ...]:
        return tuple(self._samples.get(name, ()))


class CounterRates:
    """Per-second rates of a node's cumulative counters, from two successive readings: e.g.
    the records and bytes each stream's consumers read from this node. Keys are whatever the
    caller samples (a stream name, "stream/shard"); a key seen for the first time shows its
    rate from the next sample."""

    def __init__(self) -> None:
        self._last: tuple[int, dict[str, tuple[float, ...]]] | None = None
        self._rates: dict[str, tuple[float, ...]] = {}

    def sample(self, now_ms: int, totals: Mapping[str, tuple[float, ...]]) -> None:
        """`totals`: each key's counters since the node started (same width every time)."""
        if self._last is not None and now_ms > self._last[0]:
            seconds = (now_ms - self._last[0]) / 1000
            before = self._last[1]
            self._rates = {
                key: tuple(
                    max(0.0, (now - then) / seconds)
                    for now, then in zip(values, before[key], strict=True)
                )
                for key, values in totals.items()
                if key in before
            }
        self._last = (now_ms, dict(totals))

    def rates(self) -> dict[str, tuple[float, ...]]:
        return dict(self._rates)
