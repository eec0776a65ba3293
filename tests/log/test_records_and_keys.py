"""The value codec (round trip, every corruption detected) and key ordering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.log.keys import record_key, shard_prefix_end, time_key
from broker.log.records import LogCorruptionError, decode_value, encode_value
from broker.types import Offset, ShardUid


@given(
    arrival_ms=st.integers(0, 2**64 - 1),
    partition_key=st.text(max_size=256),
    data=st.binary(max_size=2_000),
)
def test_value_round_trips(arrival_ms: int, partition_key: str, data: bytes) -> None:
    decoded = decode_value(
        encode_value(arrival_ms=arrival_ms, epoch=0, partition_key=partition_key, data=data)
    )
    assert (decoded.arrival_ms, decoded.partition_key, decoded.data) == (
        arrival_ms,
        partition_key,
        data,
    )


@given(position=st.integers(0, 30), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(position: int, bit: int) -> None:
    value = bytearray(encode_value(arrival_ms=123, epoch=0, partition_key="pk", data=b"x" * 10))
    value[position % len(value)] ^= 1 << bit
    with pytest.raises(LogCorruptionError):
        decode_value(bytes(value))


def test_truncated_values_are_detected() -> None:
    value = encode_value(arrival_ms=1, epoch=0, partition_key="key", data=b"data")
    for length in range(len(value)):
        with pytest.raises(LogCorruptionError):
            decode_value(value[:length])


def test_keys_sort_numerically_and_stay_inside_their_shard() -> None:
    uid = ShardUid(5)
    assert record_key(uid, Offset(255)) < record_key(uid, Offset(256))
    assert record_key(uid, Offset(2**64 - 1)) < shard_prefix_end(uid)
    assert shard_prefix_end(uid) == record_key(ShardUid(6), Offset(0))[:8]
    assert time_key(uid, 999, Offset(9)) < time_key(uid, 1_000, Offset(0))
    top = ShardUid(2**64 - 1)
    assert time_key(top, 2**64 - 1, Offset(2**64 - 1)) < shard_prefix_end(top)
