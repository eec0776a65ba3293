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
