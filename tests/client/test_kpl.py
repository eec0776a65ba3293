"""KPL aggregation and KCL de-aggregation (broker/client/kpl.py).

Goal: our aggregates are byte-for-byte what the KPL writes, and `deaggregate` reads what the KPL
writes the way the KCL does. Method: golden aggregates are built here from the documented format
(awslabs/amazon-kinesis-producer: aggregation-format.md) with a hand-written protobuf encoder, so
these tests do not echo the code under test; Hypothesis round-trips arbitrary records.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.client.kpl import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    AggregateBuilder,
    ExtendedSequenceNumber,
    UserRecord,
    aggregate,
    deaggregate,
    is_aggregated,
)
from tests.fast_tier import examples

MAGIC = bytes([0xF3, 0x89, 0x9A, 0xC2])
SEQUENCE = "49590338271490256608559692538361571095921575989136588898"
HASH_MAX = 2**128 - 1


# --- an independent encoder of the documented format ------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def golden_body(
    partition_keys: list[str],
    explicit_hash_keys: list[str],
    records: list[tuple[int, int | None, bytes]],
) -> bytes:
    """AggregatedRecord{partition_key_table=1, explicit_hash_key_table=2, records=3}, each Record
    {partition_key_index=1, explicit_hash_key_index=2 (optional), data=3}, in field order as
    protobuf serializers write them."""
    body = b"".join(field_bytes(1, key.encode()) for key in partition_keys)
    body += b"".join(field_bytes(2, key.encode()) for key in explicit_hash_keys)
    for partition_key_index, ehk_index, data in records:
        record = field_varint(1, partition_key_index)
        if ehk_index is not None:
            record += field_varint(2, ehk_index)
        record += field_bytes(3, data)
        body += field_bytes(3, record)
    return body


def frame(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()


def kinesis_record(data: bytes, *, partition_key: str = "a", **extra: Any) -> dict[str, Any]:
    return {"SequenceNumber": SEQUENCE, "PartitionKey": partition_key, "Data": data, **extra}


def md5_hash(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


GOLDEN_RECORDS = [
    UserRecord(partition_key="alpha", data=b"one"),
    UserRecord(partition_key="beta", data=b"two", explicit_hash_key="123"),
    UserRecord(partition_key="alpha", data=b""),
    UserRecord(partition_key="gamma", data=b"x" * 300, explicit_hash_key="123"),
]
GOLDEN = frame(
    golden_body(
        ["alpha", "beta", "gamma"],
        ["123"],
        [(0, None, b"one"), (1, 0, b"two"), (0, None, b""), (2, 0, b"x" * 300)],
    )
)


# --- byte-level compatibility ---------------------------------------------------------------


def test_smallest_aggregate_matches_hand_assembled_bytes() -> None:
    body = bytes.fromhex("0a01611a0508001a0178")  # table ["a"], one record {0, "x"}
    blob = aggregate(
        [UserRecord(partition_key="a", data=b"x"), UserRecord(partition_key="a", data=b"y")]
    )
    assert blob.data[:4] == MAGIC
    two = bytes.fromhex("0a01611a0508001a01781a0508001a0179")
    assert blob.data == MAGIC + two + hashlib.md5(two).digest()
    assert aggregate([UserRecord(partition_key="a", data=b"x")]).data == frame(body)


def test_aggregate_writes_the_documented_format_byte_for_byte() -> None:
    blob = aggregate(GOLDEN_RECORDS)
    assert blob.data == GOLDEN
    assert blob.record_count == 4
    # Routed like the KPL: the first user record's hash key, explicitly.
    assert blob.explicit_hash_key == str(md5_hash("alpha"))
    assert blob.partition_key == "alpha"
    assert blob.size_bytes == len(GOLDEN) + len("alpha")


def test_deaggregate_reads_a_kpl_aggregate() -> None:
    arrival = datetime(2026, 1, 2, tzinfo=UTC)
    records = deaggregate(kinesis_record(GOLDEN, ApproximateArrivalTimestamp=arrival))
    assert [(r.partition_key, r.explicit_hash_key, r.data) for r in records] == [
        ("alpha", None, b"one"),
        ("beta", "123", b"two"),
        ("alpha", None, b""),
        ("gamma", "123", b"x" * 300),
    ]
    assert [r.sub_sequence_number for r in records] == [0, 1, 2, 3]
    assert all(r.sequence_number == SEQUENCE for r in records)
    assert all(r.aggregated for r in records)
    assert all(r.approximate_arrival_timestamp == arrival for r in records)
    assert records[2].extended_sequence_number == ExtendedSequenceNumber(SEQUENCE, 2)


def test_tables_may_repeat_keys_and_indices_may_be_large() -> None:
    """Key tables are optional sharing: a KPL-compatible writer may store every key again."""
    keys = [f"k{i}" for i in range(200)]  # indices past 127 take two varint bytes
    body = golden_body(keys, [], [(i, None, b"%d" % i) for i in range(200)])
    records = deaggregate(kinesis_record(frame(body)))
    assert [r.partition_key for r in records] == keys
    assert records[150].data == b"150"
    assert records[150].sub_sequence_number == 150


# --- plain and corrupt records pass through ----------------------------------------------------


def assert_passed_through(data: bytes) -> None:
    records = deaggregate(kinesis_record(data, partition_key="outer"))
    assert len(records) == 1
    (record,) = records
    assert record.data == data
    assert record.partition_key == "outer"
    assert record.sub_sequence_number == 0
    assert not record.aggregated
    assert record.sequence_number == SEQUENCE


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain",
        MAGIC,
        MAGIC + b"\x00" * 16,  # a digest and nothing to digest: the KCL needs more than 16 bytes
        GOLDEN[:-1] + bytes([GOLDEN[-1] ^ 1]),  # bad MD5
        GOLDEN[:10] + bytes([GOLDEN[10] ^ 1]) + GOLDEN[11:],  # payload changed under the MD5
    ],
    ids=["empty", "plain", "magic-only", "digest-only", "bad-md5", "tampered"],
)
def test_plain_and_corrupt_records_pass_through(data: bytes) -> None:
    assert_passed_through(data)
    assert not is_aggregated(data)


@pytest.mark.parametrize(
    "body",
    [
        b"\x1a\x05\x08\x00\x1a",  # truncated protobuf
        b"\x0a\x01a\x1a\x03\x1a\x01x",  # record without its required partition_key_index
        b"\x0a\x01a\x1a\x02\x08\x00",  # record without its required data
        golden_body(["a"], [], [(1, None, b"x")]),  # partition key index out of the table
        golden_body(["a"], ["5"], [(0, 1, b"x")]),  # explicit hash key index out of the table
        golden_body(["a"], ["five"], [(0, 0, b"x")]),  # explicit hash key is not a number
    ],
    ids=["truncated", "no-pk-index", "no-data", "bad-pk-index", "bad-ehk-index", "bad-ehk"],
)
def test_aggregates_that_cannot_be_read_pass_through(body: bytes) -> None:
    data = frame(body)
    assert is_aggregated(data)  # magic and digest are right; the contents are not
    assert_passed_through(data)


def test_invalid_utf8_keys_read_as_java_reads_them() -> None:
    body = field_bytes(1, b"k\xff") + field_bytes(3, field_varint(1, 0) + field_bytes(3, b"x"))
    (record,) = deaggregate(kinesis_record(frame(body)))
    assert record.partition_key == "k\ufffd"
    assert record.aggregated


# --- shard hash ranges (after a reshard) ------------------------------------------------------


def test_aggregates_inside_the_shard_range_are_kept() -> None:
    assert len(deaggregate(kinesis_record(GOLDEN), shard_hash_range=(0, HASH_MAX))) == 4
    hashes = [md5_hash("alpha"), 123, md5_hash("alpha"), 123]
    tight = (min(hashes), max(hashes))
    assert len(deaggregate(kinesis_record(GOLDEN), shard_hash_range=tight)) == 4


def test_an_aggregate_with_a_record_outside_the_shard_range_is_dropped_whole() -> None:
    """The KCL discards the whole aggregate (AggregatorUtil removes the records it already
    emitted): it is the copy the KPL put into a wrong shard, whose records it sent again."""
    alpha = md5_hash("alpha")
    # 123 (beta, gamma) is below alpha's hash: a range starting at alpha excludes them.
    assert deaggregate(kinesis_record(GOLDEN), shard_hash_range=(alpha, HASH_MAX)) == []
    assert deaggregate(kinesis_record(GOLDEN), shard_hash_range=(0, 122)) == []


def test_the_shard_range_does_not_apply_to_plain_records() -> None:
    (record,) = deaggregate(kinesis_record(b"plain"), shard_hash_range=(0, 0))
    assert record.data == b"plain"


# --- aggregation bounds -------------------------------------------------------------------------


def test_aggregate_refuses_what_does_not_fit() -> None:
    records = [UserRecord(partition_key="k", data=b"x" * 100) for _ in range(10)]
    size = aggregate(records).size_bytes
    assert aggregate(records, aggregation_bytes_max=size).size_bytes == size
    with pytest.raises(ValueError, match="do not fit"):
        aggregate(records, aggregation_bytes_max=size - 1)
    with pytest.raises(ValueError, match="do not fit"):
        aggregate(records, aggregation_records_max=9)
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])


@pytest.mark.parametrize(
    "record",
    [
        UserRecord(partition_key="", data=b""),
        UserRecord(partition_key="k" * 257, data=b""),
        UserRecord(partition_key="k", data=b"", explicit_hash_key=str(2**128)),
        UserRecord(partition_key="k", data=b"", explicit_hash_key="007"),
        UserRecord(partition_key="k", data=b"", explicit_hash_key="-1"),
    ],
)
def test_aggregate_refuses_keys_kinesis_would_refuse(record: UserRecord) -> None:
    with pytest.raises(ValueError, match="key"):
        aggregate([record])


def test_the_default_bound_is_one_kinesis_record() -> None:
    # 34 bytes around the data: magic 4, MD5 16, table entry "k" 3, record field 1 + 3 (length),
    # inside it the index 2 and the data's tag and length 1 + 3, and the outer partition key 1.
    data_max = 1024 * 1024 - 34
    assert aggregate([UserRecord(partition_key="k", data=b"x" * data_max)]).size_bytes == (
        1024 * 1024
    )
    with pytest.raises(ValueError, match="do not fit"):
        aggregate([UserRecord(partition_key="k", data=b"x" * (data_max + 1))])


# --- round trips --------------------------------------------------------------------------------

partition_keys = st.text(min_size=1, max_size=20) | st.sampled_from(["a", "b", "é", "日本"])
explicit_hash_keys = st.none() | st.integers(0, HASH_MAX).map(str)
user_records = st.builds(
    lambda key, data, ehk: UserRecord(partition_key=key, data=data, explicit_hash_key=ehk),
    partition_keys,
    st.binary(max_size=300),
    explicit_hash_keys,
)


@settings(max_examples=examples(200))
@given(st.lists(user_records, min_size=1, max_size=40))
def test_round_trip(records: list[UserRecord]) -> None:
    blob = aggregate(records)
    assert is_aggregated(blob.data)
    assert blob.explicit_hash_key == str(records[0].hash_key)
    back = deaggregate(kinesis_record(blob.data))
    assert [(r.partition_key, r.explicit_hash_key, r.data) for r in back] == [
        (r.partition_key, r.explicit_hash_key, r.data) for r in records
    ]
    assert [r.sub_sequence_number for r in back] == list(range(len(records)))
    # Kept whole by a range holding every hash key, dropped whole by one missing any.
    hashes = [r.hash_key for r in records]
    assert deaggregate(kinesis_record(blob.data), shard_hash_range=(min(hashes), max(hashes)))
    if min(hashes) < max(hashes):
        assert not deaggregate(
            kinesis_record(blob.data), shard_hash_range=(min(hashes) + 1, HASH_MAX)
        )


@settings(max_examples=examples(100))
@given(st.lists(user_records, min_size=1, max_size=60), st.integers(64, 4_000))
def test_builder_packs_exactly_up_to_the_bound(records: list[UserRecord], bytes_max: int) -> None:
    """Filling aggregates greedily never exceeds the bound, and a record is refused only when
    adding it really would."""
    builder = AggregateBuilder(aggregation_bytes_max=bytes_max)
    for record in records:
        if builder.fits(record):
            builder.add(record)
            continue
        if builder.record_count:
            blob = builder.build()
            assert blob.size_bytes <= bytes_max
            with pytest.raises(ValueError, match="do not fit"):
                aggregate([*deaggregate_users(blob.data), record], aggregation_bytes_max=bytes_max)
        builder = AggregateBuilder(aggregation_bytes_max=bytes_max)
        if builder.fits(record):
            builder.add(record)
    if builder.record_count:
        assert builder.build().size_bytes <= bytes_max


def deaggregate_users(data: bytes) -> list[UserRecord]:
    return [
        UserRecord(
            partition_key=r.partition_key, data=r.data, explicit_hash_key=r.explicit_hash_key
        )
        for r in deaggregate(kinesis_record(data))
    ]


# --- extended sequence numbers -------------------------------------------------------------------


def test_extended_sequence_numbers_order_as_the_kcl() -> None:
    ordered = [
        AT_TIMESTAMP,
        TRIM_HORIZON,
        LATEST,
        ExtendedSequenceNumber("9"),
        ExtendedSequenceNumber("9", 1),
        ExtendedSequenceNumber("10"),  # numeric, not lexicographic
        ExtendedSequenceNumber(SEQUENCE, 0),
        ExtendedSequenceNumber(SEQUENCE, 5),
        SHARD_END,
    ]
    shuffled = [ordered[i] for i in (5, 8, 0, 3, 7, 1, 6, 2, 4)]
    assert sorted(shuffled) == ordered
    assert ExtendedSequenceNumber("10", 3) == ExtendedSequenceNumber("10", 3)
    assert ExtendedSequenceNumber("10", 3) != ExtendedSequenceNumber("10", 4)
    other_end = ExtendedSequenceNumber("SHARD_END", 7)
    assert other_end >= SHARD_END  # SHARD_END ties with itself, whatever the sub-number
    assert other_end <= SHARD_END


@pytest.mark.parametrize("bad", ["", "12a", "-5", "LATEST ", "١٢"])
def test_extended_sequence_numbers_refuse_other_strings(bad: str) -> None:
    with pytest.raises(ValueError, match="sequence number"):
        ExtendedSequenceNumber(bad)
    with pytest.raises(ValueError, match="negative"):
        ExtendedSequenceNumber("5", -1)


@given(st.integers(0, 2**128), st.integers(0, 2**40), st.integers(0, 2**128), st.integers(0, 2**40))
def test_extended_sequence_numbers_compare_by_value_then_sub_number(
    a: int, a_sub: int, b: int, b_sub: int
) -> None:
    left, right = ExtendedSequenceNumber(str(a), a_sub), ExtendedSequenceNumber(str(b), b_sub)
    assert (left < right) == ((a, a_sub) < (b, b_sub))
    assert (left == right) == ((a, a_sub) == (b, b_sub))
    assert TRIM_HORIZON < left < SHARD_END
