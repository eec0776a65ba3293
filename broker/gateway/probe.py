"""What the front doors report to the node's metrics (the probe protocol this layer owns;
`metrics.api.GatewayProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from typing import Protocol


class GatewayProbe(Protocol):
    """Every request a door answered."""

    def request_finished(self, operation: str, code: str, seconds: float) -> None:
        """One answered request. `operation` must be one the service serves (a bounded set:
        pass "Unknown" for UnknownOperationException); `code` is "OK" or the error name."""
        ...
