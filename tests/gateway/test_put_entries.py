"""The C reader of PutRecords' common entries (broker/wire/put_entries.py): the columns it reads
from a request's bytes are what upb reads from the same bytes, and it answers None (the caller
reads the message through upb) for every entry or request that is not the common one; the
columns read as the list of dicts they stand for."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broker.api.kinesis.v1 import kinesis_pb2
from broker.wire import put_entries
from broker.wire.put_entries import PutEntries, read_put_entries

pytestmark = pytest.mark.skipif(
    not put_entries.compiled_reader(),
    reason="the C entry reader was not built (no C compiler when scripts/install ran)",
)

_BOUNDS = {"key_min": 1, "key_max": 256, "data_max": 1024 * 1024, "count_min": 1, "count_max": 500}


def _read(raw: bytes, **bounds: int) -> PutEntries | None:
    return read_put_entries(raw, **{**_BOUNDS, **bounds})


def _raw(entries: list[dict[str, Any]], **top: Any) -> bytes:
    message = kinesis_pb2.PutRecordsInput(
        records=[kinesis_pb2.PutRecordsRequestEntry(**fields) for fields in entries], **top
    )
    return message.SerializeToString()


def _upb_columns(raw: bytes) -> tuple[list[str], list[bytes], list[bytes], list[int]]:
    records = kinesis_pb2.PutRecordsInput.FromString(raw).records
    keys = [entry.partition_key for entry in records]
    datas = [entry.data for entry in records]
    utf8 = [key.encode() for key in keys]
    return keys, utf8, datas, [len(k) + len(d) for k, d in zip(utf8, datas, strict=True)]


def test_columns_are_what_upb_reads() -> None:
    rng = random.Random(30)
    keys = ["k", "x" * 256, "é" * 3, "鍵" * 256, "a\u0000b", "🙂" * 10]
    for _ in range(200):
        entries = [
            {"data": rng.randbytes(rng.choice([1, 2, 127, 128, 1024, 70_000])), "partition_key": k}
            for k in rng.choices(keys, k=rng.randint(1, 30))
        ]
        top: dict[str, Any] = rng.choice(
            [{}, {"stream_name": "s"}, {"stream_arn": "a", "dry_run": True}]
        )
        raw = _raw(entries, **top)
        read = _read(raw)
        assert read is not None
        columns = (read.partition_keys, read.partition_keys_utf8, read.datas, read.sizes)
        assert columns == _upb_columns(raw)


def test_any_member_order_and_the_other_fields_anywhere() -> None:
    # Hand-made bytes: partition key before data, and top-level fields before, between and
    # after the records (upb reads them all the same).
    entry = b"\x1a\x01k" + b"\x0a\x02xy"
    raw = b"\x12\x01s" + b"\x0a" + bytes([len(entry)]) + entry + b"\x28\x01" + b"\x0a"
    raw += bytes([len(entry)]) + entry + b"\x22\x00"
    assert kinesis_pb2.PutRecordsInput.FromString(raw).stream_name == "s"
    read = _read(raw)
    assert read is not None
    assert list(read) == [{"Data": b"xy", "PartitionKey": "k"}] * 2


@pytest.mark.parametrize(
    "odd",
    [
        {"data": b"x"},  # no partition key
        {"partition_key": "k"},  # no data
        {"data": b"", "partition_key": "k"},  # empty data
        {"data": b"x", "partition_key": ""},  # empty key
        {"data": b"x", "partition_key": "k" * 257},  # key over the bound, in characters
        {"data": b"x" * (1024 * 1024 + 1), "partition_key": "k"},  # data over the bound
        {"data": b"x", "partition_key": "k", "explicit_hash_key": "1"},
        {"data": b"x", "partition_key": "k", "explicit_hash_key": ""},  # present though empty
    ],
)
def test_an_odd_entry_anywhere_gives_none(odd: dict[str, Any]) -> None:
    common = {"data": b"d", "partition_key": "k"}
    for position in (0, 2):
        entries = [common] * 3
        entries[position] = odd
        assert _read(_raw(entries)) is None
    assert _read(_raw([common] * 3)) is not None


@pytest.mark.parametrize(
    "entry",
    [
        b"\x0a\x01x\x1a\x01k\x0a\x01y",  # data twice (upb keeps the last)
        b"\x0a\x01x\x1a\x01k\x1a\x01j",  # key twice
        b"\x0a\x01x\x1a\x01k\x20\x01",  # an unknown field
        b"\x0a\x01x\x18\x01",  # field 3 with another wire type
        b"\x0a\x01x\x1a\x05k",  # a length past the entry
        b"\x0a\x01x\x1a\x01\xff",  # a key that is not UTF-8
    ],
)
def test_an_entry_upb_would_read_otherwise_gives_none(entry: bytes) -> None:
    raw = b"\x0a" + bytes([len(entry)]) + entry
    assert _read(raw) is None


def test_the_count_bounds() -> None:
    common = {"data": b"d", "partition_key": "k"}
    assert _read(_raw([])) is None
    assert _read(_raw([common] * 3), count_max=2) is None
    assert _read(_raw([common] * 3), count_min=4) is None
    read = _read(_raw([common] * 3), count_min=3, count_max=3)
    assert read is not None and len(read) == 3


def test_records_field_of_another_wire_type_gives_none() -> None:
    assert _read(b"\x08\x01") is None  # field 1 as a varint
    assert _read(b"\x0a\x05\x0a") is None  # a record's length past the message


def test_the_sequence_reads_as_the_dicts() -> None:
    read = _read(_raw([{"data": bytes([i]), "partition_key": f"k{i}"} for i in range(5)]))
    assert read is not None
    dicts = [{"Data": bytes([i]), "PartitionKey": f"k{i}"} for i in range(5)]
    assert len(read) == 5
    assert read[1] == dicts[1]
    assert read[-1] == dicts[-1]
    assert read[:2] == dicts[:2]
    assert list(read) == dicts
    assert read == dicts
    assert read != dicts[:4]
    assert dicts == read


def _read_json(records: list[Any], **bounds: int) -> Any:
    limits = {"key_min": 1, "key_max": 256, "count_min": 1, "count_max": 500, **bounds}
    return put_entries.read_json_entries(records, **limits)


def test_json_records_read_as_columns() -> None:
    records = [{"Data": "eA==", "PartitionKey": "k"}, {"PartitionKey": "鍵", "Data": ""}]
    assert _read_json(records) == (["k", "鍵"], [b"k", "鍵".encode()], ["eA==", ""])


@pytest.mark.parametrize(
    "odd",
    [
        {"Data": "eA=="},
        {"PartitionKey": "k"},
        {"Data": "eA==", "PartitionKey": "k", "ExplicitHashKey": "1"},
        {"Data": "eA==", "Key": "k"},
        {"Data": b"x", "PartitionKey": "k"},
        {"Data": "eA==", "PartitionKey": 5},
        {"Data": None, "PartitionKey": "k"},
        {"Data": "eA==", "PartitionKey": ""},
        {"Data": "eA==", "PartitionKey": "k" * 257},
        {"Data": "eA==", "PartitionKey": "\ud800"},  # a lone surrogate has no UTF-8
        ["Data", "PartitionKey"],
        "entry",
        None,
    ],
)
def test_an_odd_json_record_gives_none(odd: Any) -> None:
    common = {"Data": "eA==", "PartitionKey": "k"}
    assert _read_json([common, odd, common]) is None
    assert _read_json([common] * 3) is not None


def test_json_count_bounds() -> None:
    common = {"Data": "eA==", "PartitionKey": "k"}
    assert _read_json([]) is None
    assert _read_json([common] * 3, count_max=2) is None
    assert _read_json([common] * 3, count_min=4) is None
