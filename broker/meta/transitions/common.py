"""Helpers every transition shares: finding a live stream, storing a changed one, and the
errors that name the stream's account.

Messages follow AWS's texts as reproduced by kinesalite (`actions/*.js`).
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import MetadataImage, StreamMeta, StreamStatus
from broker.streams.namespaces import is_stream_key, name_of

DAY_MS = 86_400_000

# Used in messages about a stream that does not exist, when no ARN names the account (an image
# whose default namespace has no stream yet).
ACCOUNT_ID_FALLBACK = "000000000000"
REGION_FALLBACK = "us-east-1"


def _arn_part(arn: str, index: int) -> str | None:
    """arn:aws:kinesis:<region>:<account>:stream/<name>; index 3 is the region, 4 the account."""
    parts = arn.split(":")
    if len(parts) >= 6 and parts[index]:
        return parts[index]
    return None


def account_id(image: MetadataImage) -> str:
    """The default namespace's account: the one its streams' ARNs name (the first by name, for
    determinism; namespaced keys are other accounts' or regions', `streams/namespaces.py`)."""
    for name in sorted(image.streams):
        if is_stream_key(name):
            continue
        account = _arn_part(image.streams[name].arn, 4)
        if account is not None:
            return account
    return ACCOUNT_ID_FALLBACK


def region(image: MetadataImage) -> str:
    """The default namespace's region (as `account_id`)."""
    for name in sorted(image.streams):
        if is_stream_key(name):
            continue
        found = _arn_part(image.streams[name].arn, 3)
        if found is not None:
            return found
    return REGION_FALLBACK


def account_of(image: MetadataImage, key: str) -> str:
    """The account of the stream keyed `key` (its namespace's, or the default one's)."""
    if is_stream_key(key):
        return key.split("/", 1)[0]
    return account_id(image)


def not_found(image: MetadataImage, name: str) -> ShoalError:
    return ShoalError(
        ErrorCode.RESOURCE_NOT_FOUND,
        error_messages.stream_not_found(name=name_of(name), account_id=account_of(image, name)),
    )


def live_stream(image: MetadataImage, name: str, *, now_ms: int) -> StreamMeta:
    meta = image.stream(name, now_ms=now_ms)
    if meta is None:
        raise not_found(image, name)
    return meta


def require_active(image: MetadataImage, meta: StreamMeta, *, now_ms: int) -> None:
    status = meta.status(now_ms=now_ms)
    if status is not StreamStatus.ACTIVE:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.stream_not_active(
                name=name_of(meta.name),
                account_id=account_of(image, meta.name),
                status=status.value,
            ),
        )


def with_stream(image: MetadataImage, meta: StreamMeta) -> MetadataImage:
    """A new image with `meta` stored under its name; the input's dict is copied, not changed."""
    streams = dict(image.streams)
    streams[meta.name] = meta
    return dataclasses.replace(image, streams=streams)


def within_last_day(times_ms: tuple[int, ...], *, now_ms: int) -> tuple[int, ...]:
    """The timestamps within the rolling 24 hours before `now_ms`."""
    return tuple(t for t in times_ms if t > now_ms - DAY_MS)
