"""ListShards' ShardFilter: which shards of a stream a listing shows.

The semantics follow the AWS model's ShardFilter documentation (botocore, Kinesis 2013-12-02):
* FROM_TRIM_HORIZON (the default): every shard within retention.
* AT_TRIM_HORIZON: the shards that were open at the trim horizon (now - retention).
* AT_LATEST: the shards open now (OPEN or SEALING: a sealing shard has no ending number yet).
* AT_TIMESTAMP: the shards open at the timestamp: created at or before it, and closed at or
  after it or still open.
* FROM_TIMESTAMP: every open shard, plus the closed ones that closed at or after the timestamp.
* AFTER_SHARD_ID: every shard whose id sorts after the given one (ids are zero-padded, so the
  string order is the index order; the id need not exist, as with ExclusiveStartShardId).

Expired shards (closed, and past retention) are never listed, whatever the filter; that also
"corrects a timestamp to TRIM_HORIZON" as the model says, since a timestamp older than the trim
horizon is clamped to it. Root shards (no parent) count as open since the beginning of time, so
a timestamp older than the stream itself lists the shards it started with. Pagination
(MaxResults, NextToken) is the caller's. Pure code: time arrives as `now_ms`.
"""

from __future__ import annotations

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import HOUR_MS, ShardMeta, ShardState, StreamMeta

FILTER_TYPES = (
    "AFTER_SHARD_ID",
    "AT_TRIM_HORIZON",
    "FROM_TRIM_HORIZON",
    "AT_LATEST",
    "AT_TIMESTAMP",
    "FROM_TIMESTAMP",
)


def list_shards_filtered(
    stream: StreamMeta,
    *,
    filter_type: str | None,
    shard_id: str | None,
    timestamp_ms: int | None,
    now_ms: int,
) -> list[ShardMeta]:
    """The shards `ShardFilter` selects, in index order; no filter means FROM_TRIM_HORIZON."""
    retained = [
        s
        for s in stream.shards
        if not s.is_expired(now_ms=now_ms, retention_hours=stream.retention_hours)
    ]
    trim_horizon_ms = now_ms - stream.retention_hours * HOUR_MS
    match filter_type:
        case None | "FROM_TRIM_HORIZON":
            return retained
        case "AT_LATEST":
            return [s for s in retained if s.state is not ShardState.CLOSED]
        case "AT_TRIM_HORIZON":
            return [s for s in retained if _open_at(s, trim_horizon_ms)]
        case "AT_TIMESTAMP":
            at_ms = max(_required_timestamp(timestamp_ms), trim_horizon_ms)
            return [s for s in retained if _open_at(s, at_ms)]
        case "FROM_TIMESTAMP":
            from_ms = _required_timestamp(timestamp_ms)
            return [s for s in retained if s.closed_ms is None or s.closed_ms >= from_ms]
        case "AFTER_SHARD_ID":
            if shard_id is None:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    error_messages.SHARD_FILTER_SHARD_ID_REQUIRED,
                )
            return [s for s in retained if s.shard_id > shard_id]
        case _:
            raise ShoalError(
                ErrorCode.VALIDATION,
                error_messages.shard_filter_type_not_in_enum(
                    filter_type=filter_type, filter_types=", ".join(FILTER_TYPES)
                ),
            )


def _required_timestamp(timestamp_ms: int | None) -> int:
    if timestamp_ms is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.SHARD_FILTER_TIMESTAMP_REQUIRED,
        )
    return timestamp_ms


def _open_at(shard: ShardMeta, at_ms: int) -> bool:
    """Whether the shard was open at `at_ms`, both ends inclusive (the model's wording)."""
    created_by_then = shard.parent_index is None or shard.created_ms <= at_ms
    if shard.state is not ShardState.CLOSED:
        return created_by_then
    assert shard.closed_ms is not None
    return created_by_then and shard.closed_ms >= at_ms
