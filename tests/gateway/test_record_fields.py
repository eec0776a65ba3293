"""The gRPC page's record writers (broker/wire/record_fields.py): the C writer and the
Python one write upb's bytes, each record numbered as the general encoder numbers it, at the
limbs' carries, across batch boundaries and at the largest positions."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from broker.api.kinesis.v1 import kinesis_pb2
from broker.gateway import grpc_page
from broker.log.records import AppendBatch, NewRecord
from broker.log.rocks_store import RocksLogStore
from broker.meta.image import ShardMeta, ShardState
from broker.service.records import ShardPage
from broker.streams.sequence_numbers import OFFSET_MAX, sequence_number_for
from broker.timestamps import datetime_from_ms
from broker.types import Offset, ShardIndex, ShardUid
from broker.wire import record_fields
from broker.wire.record_fields import RunFields
from broker.wire.record_page import arrival_field

Writer = Callable[[Sequence[RunFields], bytes], bytes]
NOT_BUILT = "the C page writer was not built (no C compiler when scripts/install ran)"
WRITERS = [
    pytest.param(record_fields.write_page_python, id="python"),
    pytest.param(
        record_fields.write_page_c,
        id="c",
        marks=pytest.mark.skipif(not record_fields.COMPILED, reason=NOT_BUILT),
    ),
]
TAIL = b"\x12\x04AAAA\x18\x2a"  # NextShardIterator "AAAA", MillisBehindLatest 42
ARRIVAL_MS = 1_700_000_123_456
KMS = b"\x2a\x03KMS"


def stored(records: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, int, int]:
    """`records` (key, data) in the stored layout, between bytes a run must not touch."""
    body = b"".join(struct.pack(">HI", len(k), len(d)) + k + d for k, d in records)
    return b"HEADER" + body + b"TRAILER", 6, 6 + len(body)


def run_of(
    records: Sequence[tuple[bytes, bytes]], first: int, step: int, encryption: bytes = b""
) -> RunFields:
    value, start, end = stored(records)
    arrival = arrival_field(datetime_from_ms(ARRIVAL_MS))
    return RunFields(value, start, end, len(records), first, step, arrival, encryption)


def by_upb(runs: Sequence[RunFields], records: Sequence[Sequence[tuple[bytes, bytes]]]) -> bytes:
    page = kinesis_pb2.GetRecordsOutput()
    for run, run_records in zip(runs, records, strict=True):
        for k, (key, data) in enumerate(run_records):
            record = page.records.add(
                sequence_number=str(run.first_number + k * run.step),
                data=data,
                partition_key=key.decode(),
            )
            record.approximate_arrival_timestamp.FromDatetime(datetime_from_ms(ARRIVAL_MS))
            if run.encryption:
                record.encryption_type = "KMS"
    return page.SerializeToString() + TAIL


# (first number, step, count): carries out of one, two and three base-10^18 limbs; the
# layouts' magnitudes and largest numbers; numbers whose length changes inside the run (the C
# writer hands those to Python); the widest numbers the C writer takes (72 digits).
NUMBERS = [
    (10**18 - 2, 1, 5),
    (10**36 - 3, 1, 6),
    (10**54 - 2, 1, 4),
    (10**55 - 10**40, 7 * 10**39, 3),
    (2**185 + 12_345 * 2**136, 2**136, 40),
    (2**185 + 99 * 2**60 + 3, 2**60, 40),
    (3 * 2**184 - 1 - 2 * 2**60, 2**60, 3),
    (10**71 + 5, 10**70 + 7, 5),
    (7, 1, 5),
    (10**72 - 2, 1, 3),
    (0, 1, 2),
]
DATA = [b"", b"x", b"y" * 127, b"z" * 128, bytes(range(256)) * 64, b"w" * 16_384]
KEYS = [b"k", "key-é".encode(), "鍵".encode() * 85, b"p" * 128, b"q" * 256]


@pytest.mark.parametrize("write", WRITERS)
def test_writers_write_upbs_bytes_at_every_carry(write: Writer) -> None:
    for first, step, count in NUMBERS:
        records = [(KEYS[i % len(KEYS)], DATA[i % len(DATA)]) for i in range(count)]
        for encryption in (b"", KMS):
            runs = [run_of(records, first, step, encryption)]
            assert write(runs, TAIL) == by_upb(runs, [records]), (first, step, count)
    # Several runs on one page, one of them empty.
    pieces = [[(b"a", b"1")], [], [(b"b", b"22"), (b"c", b"")]]
    runs = [run_of(pieces[0], 2**185, 2**60), run_of(pieces[1], 2**185, 2**60)]
    runs.append(run_of(pieces[2], 2**185 + 5 * 2**136, 2**136, KMS))
    assert write(runs, TAIL) == by_upb(runs, pieces)
    assert write([], TAIL) == TAIL


@pytest.mark.parametrize("write", WRITERS)
def test_writers_write_upbs_bytes_for_numbers_of_every_length(write: Writer) -> None:
    """The C writer keeps each number's digits and writes again only the limbs that changed:
    numbers of each length from 1 to 72 digits (the top limb odd and even wide), steps within
    one limb and across limbs, carries into every limb."""
    rng = random.Random(29)
    records = [(b"k", b"d")] * 30
    for digits in range(1, 73):
        low, high = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
        for step in (1, rng.randrange(1, 10**18), rng.randrange(10**18, 10**40), 2**60):
            if high - low < step * len(records):
                continue
            for first in (low, high - step * len(records), rng.randrange(low, high - step * 30)):
                runs = [run_of(records, first, step)]
                assert write(runs, TAIL) == by_upb(runs, [records]), (first, step)


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("aws_layout", [False, True], ids=["shoal", "aws"])
def test_numbers_are_the_encoders_up_to_the_largest_offset(
    tmp_path: Path, write: Writer, aws_layout: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the store and the door: batches with their own arrival seconds, the last one
    ending at the largest offset a shard holds."""
    monkeypatch.setattr(grpc_page, "write_page", write)
    uid = ShardUid(9)
    shard = ShardMeta(
        index=ShardIndex(17),
        uid=uid,
        hash_key_start=0,
        hash_key_end=2**128 - 1,
        parent_index=None,
        adjacent_parent_index=None,
        created_ms=1_699_999_999_999,
        state=ShardState.OPEN,
        aws_sequence_numbers=aws_layout,
    )
    first = OFFSET_MAX - 40
    arrivals = (1_700_000_000_000, 1_700_000_000_999, 1_700_000_001_000, 1_786_400_000_000)
    batches, offset = [], first
    for count, arrival_ms in zip((1, 13, 26, 1), arrivals, strict=True):
        records = [NewRecord(f"k{offset + i}", b"d" * i) for i in range(count)]
        batches.append(
            AppendBatch(
                shard_uid=uid, first_offset=Offset(offset), arrival_ms=arrival_ms, records=records
            )
        )
        offset += count
    assert offset == OFFSET_MAX + 1
    store = RocksLogStore(tmp_path / "log")
    try:
        store.reset_log(uid, log_start=Offset(first))  # as a follower's catch-up does
        store.append(batches)
        for start in (first, first + 5):
            page = store.read_page(
                uid,
                start_offset=Offset(start),
                end_offset=Offset(offset),
                records_max=10_000,
                bytes_max=2**20,
            )
            answer = {"Records": ShardPage(shard, page), "NextShardIterator": "AAAA"}
            written = kinesis_pb2.GetRecordsOutput.FromString(grpc_page.get_records_output(answer))
            expected = [
                sequence_number_for(shard, record_offset, arrival_ms=batch.arrival_ms)
                for batch in batches
                for record_offset in range(batch.first_offset, batch.end_offset)
                if record_offset >= start
            ]
            assert [record.sequence_number for record in written.records] == expected
            assert written.records[-1].partition_key == f"k{OFFSET_MAX}"
    finally:
        store.close()


@pytest.mark.skipif(not record_fields.COMPILED, reason=NOT_BUILT)
def test_the_c_writer_refuses_broken_runs() -> None:
    from broker.wire import _record_fields

    good = run_of([(b"k", b"data"), (b"", b"")], 2**185, 2**60)
    c_run = record_fields._c_run(good)
    assert c_run is not None
    assert _record_fields.write_page([c_run], b"") == record_fields.write_page_python([good], b"")
    value, start, end = good.value, good.start, good.end
    broken = [
        good._replace(end=end - 1),  # the last record runs past the end
        good._replace(end=end + 1),  # the records end before the end
        good._replace(record_count=3),  # more records than the bytes hold
        good._replace(value=value[: end - 2]),  # the end lies past the value
        good._replace(start=end + 1),
    ]
    for run in broken:
        c_run = (run.value, run.start, run.end, run.record_count, *c_run[4:])
        with pytest.raises(ValueError, match="run"):
            _record_fields.write_page([c_run], b"")
    limbs = (10**18, 0, 0, 0)
    for bad in ((value, start, end, 2, 56, limbs, (1, 0, 0, 0), b"", b""), (*c_run[:4], 73)):
        with pytest.raises((ValueError, TypeError)):
            _record_fields.write_page([bad], b"")
    with pytest.raises(TypeError):
        _record_fields.write_page([("not", "a", "run")], b"")


def test_the_writer_reads_the_stored_record_layout() -> None:
    """The wire layer restates the stored layout's record head (it sits below the log)."""
    from broker.log import records

    assert record_fields.RECORD_HEADER_BYTES == records.RECORD_HEADER_BYTES
