"""The retry schedule of a delivery: exponential backoff with jitter, bounded in total time.

Pure (the clock and the random draw are passed in). S3 deliveries are retried until AWS's
24-hour bound for undeliverable data; destinations with RetryOptions use its
DurationInSeconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

S3_RETRY_DURATION_MS = 24 * 3_600_000
HTTP_RETRY_DURATION_MS = 300_000  # HttpEndpoint RetryOptions.DurationInSeconds' default
REDSHIFT_RETRY_DURATION_MS = 3_600_000  # Redshift RetryOptions.DurationInSeconds' default


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySchedule:
    first_backoff_ms: int = 200
    max_backoff_ms: int = 10_000
    duration_ms: int = S3_RETRY_DURATION_MS

    def __post_init__(self) -> None:
        assert 0 < self.first_backoff_ms <= self.max_backoff_ms
        assert self.duration_ms >= 0

    def backoff_ms(self, attempt: int, *, jitter: float) -> int:
        """The pause after failed attempt number `attempt` (1 for the first), full jitter in
        the upper half: `jitter` is a draw in [0, 1)."""
        assert attempt >= 1
        assert 0.0 <= jitter < 1.0
        ceiling = min(self.max_backoff_ms, self.first_backoff_ms * 2 ** min(attempt - 1, 30))
        return max(1, int(ceiling / 2 + ceiling / 2 * jitter))

    def gives_up(self, *, first_failure_ms: int, now_ms: int) -> bool:
        """True once retrying has lasted the configured duration."""
        return now_ms - first_failure_ms >= self.duration_ms


def schedule_for(retry_options: Mapping[str, Any] | None, *, default_ms: int) -> RetrySchedule:
    """A destination's schedule from its RetryOptions (DurationInSeconds) or the default."""
    if retry_options and "DurationInSeconds" in retry_options:
        return RetrySchedule(duration_ms=int(retry_options["DurationInSeconds"]) * 1000)
    return RetrySchedule(duration_ms=default_ms)
