"""The batch codec (round trip, slices, every corruption detected) and key ordering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.log.keys import parse_meta_key, record_key, shard_prefix_end, time_key
from broker.log.records import (
    BATCH_HEADER_BYTES,
    AppendBatch,
    BatchHeader,
    LogCorruptionError,
    NewRecord,
    NewRecords,
    StoredRecord,
    decode_records,
    encode_batch,
    record_size_bytes,
    records_size_bytes,
    truncate_batch,
)
from broker.types import Offset, ShardUid

FIRST = Offset(1_000)


def encode(records: list[NewRecord], *, arrival_ms: int = 5, control: bool = False) -> bytes:
    return encode_batch(arrival_ms=arrival_ms, epoch=3, control=control, records=records)


def decode(
    value: bytes,
    *,
    start: int = FIRST,
    end: int = 2**63,
    records_max: int = 10**6,
    bytes_max: int = 2**40,
    taken: list[StoredRecord] | None = None,
) -> tuple[list[StoredRecord], bool]:
    header = BatchHeader.parse(value)
    out = [] if taken is None else taken
    _, capped = decode_records(
        value,
        header,
        first_offset=FIRST,
        start_offset=Offset(start),
        end_offset=Offset(end),
        records_max=records_max,
        bytes_max=bytes_max,
        taken=out,
        taken_bytes=sum(r.size_bytes for r in out),
    )
    return out, capped


def numbered(count: int, *, size: int = 4) -> list[NewRecord]:
    return [NewRecord(partition_key=f"k{i}", data=bytes([i]) * size) for i in range(count)]


records_strategy = st.lists(
    st.builds(NewRecord, partition_key=st.text(max_size=64), data=st.binary(max_size=300)),
    min_size=1,
    max_size=20,
)


@given(arrival_ms=st.integers(0, 2**64 - 1), records=records_strategy, control=st.booleans())
def test_batch_round_trips(arrival_ms: int, records: list[NewRecord], control: bool) -> None:
    value = encode(records, arrival_ms=arrival_ms, control=control)
    header = BatchHeader.parse(value)
    assert (header.arrival_ms, header.epoch, header.count, header.control) == (
        arrival_ms,
        3,
        len(records),
        control,
    )
    decoded, capped = decode(value)
    assert not capped
    assert decoded == [
        StoredRecord(Offset(FIRST + i), arrival_ms, r.partition_key, r.data)
        for i, r in enumerate(records)
    ]


@given(records=records_strategy, data=st.data())
def test_any_slice_decodes_like_the_whole(records: list[NewRecord], data: st.DataObject) -> None:
    whole, _ = decode(encode(records))
    start = data.draw(st.integers(FIRST, FIRST + len(records) - 1))
    end = data.draw(st.integers(start + 1, FIRST + len(records) + 2))
    records_max = data.draw(st.integers(1, 25))
    bytes_max = data.draw(st.integers(1, 2_000))
    got, capped = decode(
        encode(records), start=start, end=end, records_max=records_max, bytes_max=bytes_max
    )
    expected: list[StoredRecord] = []
    for record in whole[start - FIRST : end - FIRST]:
        total = sum(r.size_bytes for r in expected)
        if len(expected) == records_max or (expected and total + record.size_bytes > bytes_max):
            break
        expected.append(record)
    assert got == expected
    assert got  # the first record in range always comes back
    if not capped:
        assert len(got) == min(end, FIRST + len(records)) - start


def test_caps_count_records_taken_from_earlier_batches() -> None:
    earlier = [StoredRecord(Offset(0), 1, "pk", b"x" * 10)]  # 12 bytes
    got, capped = decode(encode(numbered(3)), taken=list(earlier), bytes_max=12 + 6 * 2)
    assert [r.offset for r in got] == [0, FIRST, FIRST + 1]  # "k0" + 4 bytes = 6 each
    assert capped
    got, capped = decode(encode(numbered(3)), taken=list(earlier), records_max=2)
    assert [r.offset for r in got] == [0, FIRST]
    assert capped


def test_truncate_keeps_a_prefix_with_a_new_checksum() -> None:
    records = numbered(5)
    value = encode(records, control=True)
    kept = truncate_batch(value, BatchHeader.parse(value), keep=2)
    header = BatchHeader.parse(kept)
    assert (header.count, header.control, header.arrival_ms, header.epoch) == (2, True, 5, 3)
    assert decode(kept)[0] == decode(value)[0][:2]


@given(position=st.integers(0, 200), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(position: int, bit: int) -> None:
    value = bytearray(encode(numbered(3, size=10)))
    value[position % len(value)] ^= 1 << bit
    with pytest.raises(LogCorruptionError):
        decode(bytes(value))


def test_truncated_values_are_detected() -> None:
    value = encode(numbered(2))
    for length in range(len(value)):
        with pytest.raises(LogCorruptionError):
            decode(value[:length])


def test_layout_errors_behind_a_valid_checksum_are_detected() -> None:
    """A CRC only proves the bytes are what the encoder made; a bug there must still show."""
    value = encode(numbered(2))
    short = encode(numbered(2))[:BATCH_HEADER_BYTES] + value[BATCH_HEADER_BYTES:-1]
    header = BatchHeader.parse(value)
    with pytest.raises(LogCorruptionError):  # the last record runs past the value
        decode_records(
            short,
            header,
            first_offset=FIRST,
            start_offset=FIRST,
            end_offset=Offset(2**63),
            records_max=10,
            bytes_max=10**6,
            taken=[],
            taken_bytes=0,
        )
    with pytest.raises(LogCorruptionError):  # bytes left after the last record
        decode_records(
            value + b"\x00",
            header,
            first_offset=FIRST,
            start_offset=FIRST,
            end_offset=Offset(2**63),
            records_max=10,
            bytes_max=10**6,
            taken=[],
            taken_bytes=0,
        )


def test_stored_record_keeps_its_attributes() -> None:
    record = StoredRecord(offset=Offset(4), arrival_ms=9, partition_key="ключ", data=b"ab")
    assert (record.offset, record.arrival_ms, record.partition_key, record.data) == (
        4,
        9,
        "ключ",
        b"ab",
    )
    assert record.size_bytes == len("ключ".encode()) + 2


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.binary(max_size=8)), min_size=1, max_size=9
    )
)
def test_a_batch_counts_its_size_as_its_records_do(pairs: list[tuple[str, bytes]]) -> None:
    """The column-wise sum (keys joined, encoded once) is the sum of each record's size, for
    keys of any script; a key that cannot be encoded (a lone surrogate) fails as it does
    alone."""
    records = [NewRecord(key, data) for key, data in pairs]
    each = [record_size_bytes(partition_key=key, data=data) for key, data in pairs]
    assert NewRecords.of(records).size_bytes == sum(each)
    batch = AppendBatch(shard_uid=ShardUid(1), first_offset=FIRST, arrival_ms=5, records=records)
    assert batch.size_bytes == sum(each)


def test_a_key_that_cannot_be_encoded_fails_the_size_as_alone() -> None:
    records = [NewRecord("a", b"x"), NewRecord("\ud800", b"y")]
    with pytest.raises(UnicodeEncodeError):
        record_size_bytes(partition_key="\ud800", data=b"y")
    with pytest.raises(UnicodeEncodeError):
        NewRecords.of(records)


def test_keys_sort_numerically_and_stay_inside_their_shard() -> None:
    uid = ShardUid(5)
    assert record_key(uid, Offset(255)) < record_key(uid, Offset(256))
    assert record_key(uid, Offset(2**64 - 1)) < shard_prefix_end(uid)
    assert shard_prefix_end(uid) == record_key(ShardUid(6), Offset(0))[:8]
    assert time_key(uid, 999, Offset(9)) < time_key(uid, 1_000, Offset(0))
    top = ShardUid(2**64 - 1)
    assert time_key(top, 2**64 - 1, Offset(2**64 - 1)) < shard_prefix_end(top)
    # Replica-state keys (later) extend the meta key and still name their shard.
    assert parse_meta_key(record_key(uid, Offset(1))[:8] + b"\x01epoch") == uid


def test_records_size_bytes_is_the_sum_of_each_records_size() -> None:
    records = [
        StoredRecord(Offset(0), 1, "k", b"abc"),
        StoredRecord(Offset(1), 1, "ключ-🔑", b""),  # UTF-8 bytes, not characters
        StoredRecord(Offset(2), 1, "", b"x" * 1_000),
    ]
    assert records_size_bytes(records) == sum(r.size_bytes for r in records) == 1_017
    assert records_size_bytes([]) == 0
