"""ListShards' ShardFilter over a stream with a history of reshards."""

from __future__ import annotations

import dataclasses

import pytest

from broker.errors import ErrorCode, ShoalError
from broker.meta.image import HOUR_MS, ShardMeta, ShardState, StreamMeta
from broker.streams.shard_listing import list_shards_filtered
from broker.types import Offset, ShardIndex, ShardUid
from tests.streams.support import CREATED_MS, make_stream

HALF = 2**127
SPLIT_MS = CREATED_MS + 10 * HOUR_MS


def _history() -> StreamMeta:
    """Shard 0 (root) split at SPLIT_MS into 1 and 2; shard 2 split 30 h later into 3 and 4."""
    root = make_stream(1).shards[0]
    later_ms = SPLIT_MS + 30 * HOUR_MS

    def child(index: int, start: int, end: int, parent: int, created_ms: int) -> ShardMeta:
        return ShardMeta(
            index=ShardIndex(index),
            uid=ShardUid(index + 1),
            hash_key_start=start,
            hash_key_end=end,
            parent_index=ShardIndex(parent),
            adjacent_parent_index=None,
            created_ms=created_ms,
            state=ShardState.OPEN,
        )

    def closed(shard: ShardMeta, at_ms: int) -> ShardMeta:
        return dataclasses.replace(
            shard, state=ShardState.CLOSED, closed_ms=at_ms, end_offset=Offset(3)
        )

    shards = (
        closed(root, SPLIT_MS),
        child(1, 0, HALF - 1, 0, SPLIT_MS),
        closed(child(2, HALF, 2**128 - 1, 0, SPLIT_MS), later_ms),
        child(3, HALF, 3 * 2**126 - 1, 2, later_ms),
        child(4, 3 * 2**126, 2**128 - 1, 2, later_ms),
    )
    return dataclasses.replace(
        make_stream(1), shards=shards, next_shard_index=ShardIndex(5), retention_hours=24
    )


def _ids(
    stream: StreamMeta,
    filter_type: str | None,
    *,
    now_ms: int,
    shard_id: str | None = None,
    timestamp_ms: int | None = None,
) -> list[int]:
    shards = list_shards_filtered(
        stream,
        filter_type=filter_type,
        shard_id=shard_id,
        timestamp_ms=timestamp_ms,
        now_ms=now_ms,
    )
    return [s.index for s in shards]


def test_default_and_from_trim_horizon_list_unexpired_shards() -> None:
    stream = _history()
    early = SPLIT_MS + HOUR_MS
    assert _ids(stream, None, now_ms=early) == [0, 1, 2, 3, 4]
    assert _ids(stream, "FROM_TRIM_HORIZON", now_ms=early) == [0, 1, 2, 3, 4]
    # 24 h after the first split, shard 0 has expired.
    expired = SPLIT_MS + 24 * HOUR_MS
    assert _ids(stream, None, now_ms=expired) == [1, 2, 3, 4]
    assert _ids(stream, None, now_ms=expired - 1) == [0, 1, 2, 3, 4]


def test_at_latest_lists_open_and_sealing_shards() -> None:
    stream = _history()
    sealing = dataclasses.replace(stream.shards[4], state=ShardState.SEALING)
    stream = dataclasses.replace(stream, shards=(*stream.shards[:4], sealing))
    assert _ids(stream, "AT_LATEST", now_ms=SPLIT_MS) == [1, 3, 4]


def test_at_trim_horizon_lists_the_shards_open_then() -> None:
    stream = _history()
    # Trim horizon before the stream existed: the shards it started with.
    assert _ids(stream, "AT_TRIM_HORIZON", now_ms=CREATED_MS + HOUR_MS) == [0]
    # Trim horizon between the two splits.
    assert _ids(stream, "AT_TRIM_HORIZON", now_ms=SPLIT_MS + 25 * HOUR_MS) == [1, 2]


def test_at_timestamp() -> None:
    stream = _history()
    now_ms = SPLIT_MS + 20 * HOUR_MS
    assert _ids(stream, "AT_TIMESTAMP", now_ms=now_ms, timestamp_ms=SPLIT_MS + HOUR_MS) == [1, 2]
    # Both ends inclusive: at the split instant, parent and children qualify.
    assert _ids(stream, "AT_TIMESTAMP", now_ms=now_ms, timestamp_ms=SPLIT_MS) == [0, 1, 2]
    # Older than the trim horizon (4 h before the split): corrected to it.
    assert _ids(stream, "AT_TIMESTAMP", now_ms=now_ms, timestamp_ms=0) == [0]
    later = SPLIT_MS + 25 * HOUR_MS
    assert _ids(stream, "AT_TIMESTAMP", now_ms=later, timestamp_ms=0) == [1, 2]


def test_from_timestamp() -> None:
    stream = _history()
    now_ms = SPLIT_MS + 20 * HOUR_MS
    assert _ids(stream, "FROM_TIMESTAMP", now_ms=now_ms, timestamp_ms=0) == [0, 1, 2, 3, 4]
    after_split = SPLIT_MS + 1
    assert _ids(stream, "FROM_TIMESTAMP", now_ms=now_ms, timestamp_ms=after_split) == [
        1,
        2,
        3,
        4,
    ]


def test_after_shard_id() -> None:
    stream = _history()
    now_ms = SPLIT_MS
    assert _ids(stream, "AFTER_SHARD_ID", now_ms=now_ms, shard_id="shardId-000000000002") == [
        3,
        4,
    ]
    assert _ids(stream, "AFTER_SHARD_ID", now_ms=now_ms, shard_id="shardId-000000000099") == []
    assert _ids(stream, "AFTER_SHARD_ID", now_ms=now_ms, shard_id="a") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("filter_type", "code"),
    [
        ("AFTER_SHARD_ID", ErrorCode.INVALID_ARGUMENT),
        ("AT_TIMESTAMP", ErrorCode.INVALID_ARGUMENT),
        ("FROM_TIMESTAMP", ErrorCode.INVALID_ARGUMENT),
        ("SOMETHING_ELSE", ErrorCode.VALIDATION),
    ],
)
def test_missing_or_unknown_filter_parameters(filter_type: str, code: ErrorCode) -> None:
    with pytest.raises(ShoalError) as caught:
        _ids(_history(), filter_type, now_ms=SPLIT_MS)
    assert caught.value.code is code
