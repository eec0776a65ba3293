"""Epoch milliseconds ⇄ the timezone-aware datetimes that AWS-shaped dicts carry."""

from __future__ import annotations

from datetime import UTC, datetime


def datetime_from_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def ms_from_datetime(value: datetime) -> int:
    """Naive datetimes are taken as UTC, as botocore sends them."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)
