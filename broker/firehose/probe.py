"""What Data Firehose reports to the node's metrics (the probe protocol this layer owns;
`metrics.firehose.FirehoseProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from typing import Protocol


class FirehoseProbe(Protocol):
    """Records put, delivered and failed per delivery stream."""

    def records_put(self, delivery_stream: str, *, records: int, size: int, throttled: int) -> None:
        """One acknowledged put: `records` stored (`size` bytes), `throttled` refused."""
        ...

    def delivered(
        self, delivery_stream: str, destination: str, *, records: int, size: int, age_s: float
    ) -> None: ...

    def attempt_failed(self, delivery_stream: str, destination: str) -> None: ...

    def records_failed(self, delivery_stream: str, error_output_type: str, count: int) -> None: ...
