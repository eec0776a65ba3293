"""Hash keys: MD5 routing, parsing, uniform ranges and shard lookup."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import ShardState
from broker.streams.hash_keys import (
    ShardRouter,
    find_shard,
    parse_hash_key,
    partition_key_hash,
    tiles_hash_space,
    uniform_ranges,
)
from broker.types import Offset, ShardIndex, ShardUid
from tests.fast_tier import examples
from tests.streams.support import make_stream

hash_keys = st.integers(min_value=0, max_value=limits.hash_key_max)


def test_partition_key_hash_matches_known_md5() -> None:
    # MD5("a") = 0cc175b9c0f1b6a831c399e269772661, read big-endian.
    assert partition_key_hash("a") == 0x0CC175B9C0F1B6A831C399E269772661


@given(st.text(min_size=1, max_size=256))
def test_partition_key_hash_is_md5_of_utf8(key: str) -> None:
    expected = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")
    assert partition_key_hash(key) == expected
    assert 0 <= partition_key_hash(key) <= limits.hash_key_max


@given(hash_keys)
def test_parse_hash_key_round_trips(value: int) -> None:
    assert parse_hash_key(str(value), field="ExplicitHashKey") == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "01",
        "1.0",
        " 1",
        "abc",
        "١٢٣",  # Arabic-Indic digits: int() would take them
        str(2**128),
        "9" * 39,
        "9" * 5000,
    ],
)
def test_parse_hash_key_rejects_with_invalid_argument(text: str) -> None:
    with pytest.raises(ShoalError) as caught:
        parse_hash_key(text, field="ExplicitHashKey")
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith(
        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]."
    )


def test_parse_hash_key_accepts_the_bounds() -> None:
    assert parse_hash_key("0", field="F") == 0
    assert parse_hash_key(str(2**128 - 1), field="F") == 2**128 - 1


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(min_value=1, max_value=10_000))
def test_uniform_ranges_tile_the_space(count: int) -> None:
    ranges = uniform_ranges(count)
    assert len(ranges) == count
    assert tiles_hash_space(ranges)
    for i, (start, _end) in enumerate(ranges):
        assert start == (i * 2**128) // count


def test_uniform_ranges_small_cases() -> None:
    assert uniform_ranges(1) == [(0, 2**128 - 1)]
    assert uniform_ranges(2) == [(0, 2**127 - 1), (2**127, 2**128 - 1)]


def test_tiles_hash_space_detects_gaps_and_overlaps() -> None:
    assert not tiles_hash_space([])
    assert not tiles_hash_space([(0, 10), (12, 2**128 - 1)])
    assert not tiles_hash_space([(0, 10), (10, 2**128 - 1)])
    assert not tiles_hash_space([(0, 2**128)])
    assert tiles_hash_space([(11, 2**128 - 1), (0, 10)])


@settings(max_examples=examples(50), deadline=None)
@given(st.integers(min_value=1, max_value=64), st.lists(hash_keys, min_size=1, max_size=20))
def test_router_and_find_shard_agree_with_linear_scan(count: int, keys: list[int]) -> None:
    stream = make_stream(count)
    router = ShardRouter.for_stream(stream)
    for key in keys:
        expected = next(s for s in stream.shards if s.hash_key_start <= key <= s.hash_key_end)
        assert router.find(key) == expected
        assert find_shard(stream.shards, key) == expected


def test_router_skips_closed_shards() -> None:
    stream = make_stream(1)
    (parent,) = stream.shards
    closed = dataclasses.replace(parent, state=ShardState.CLOSED, closed_ms=1, end_offset=Offset(0))
    lower = dataclasses.replace(
        parent,
        index=ShardIndex(1),
        uid=ShardUid(2),
        hash_key_end=2**127 - 1,
        parent_index=ShardIndex(0),
    )
    upper = dataclasses.replace(
        parent,
        index=ShardIndex(2),
        uid=ShardUid(3),
        hash_key_start=2**127,
        parent_index=ShardIndex(0),
        state=ShardState.SEALING,
    )
    shards = (closed, lower, upper)
    assert find_shard(shards, 0) == lower
    assert find_shard(shards, 2**127 - 1) == lower
    assert find_shard(shards, 2**127) == upper
    assert find_shard(shards, 2**128 - 1) == upper


def test_router_refuses_shards_that_do_not_tile() -> None:
    stream = make_stream(2)
    with pytest.raises(AssertionError):
        ShardRouter.for_shards(stream.shards[:1])
