"""The gRPC door writes a GetRecords page from the stored batch bytes (`grpc_page`) byte for
byte as upb serializes the same answer shaped into record dicts; the page a RocksDB read
returns holds the records (and sizes) the memory store returns for the same batches and caps."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest

from broker.api.kinesis.v1 import kinesis_pb2
from broker.gateway import grpc_page
from broker.log import records
from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, NewRecord, RecordPage, records_size_bytes
from broker.log.rocks_store import RocksLogStore
from broker.meta.image import ShardMeta, ShardState
from broker.service.records import ShardPage, shaped_answer
from broker.timestamps import ms_from_datetime
from broker.types import Offset, ShardIndex, ShardUid
from broker.wire.codec import dict_to_message
from broker.wire.record_fields import records_ahead
from tests.gateway.test_record_fields import WRITERS, Writer
from tests.log.test_encrypted_store import Keys

UID = ShardUid(7)
SHARD = ShardMeta(
    index=ShardIndex(3),
    uid=UID,
    hash_key_start=0,
    hash_key_end=2**128 - 1,
    parent_index=None,
    adjacent_parent_index=None,
    created_ms=1_700_000_000_000,
    state=ShardState.OPEN,
)
# Lengths on each side of the varint steps (1 and 2 bytes), and keys past ASCII.
DATA_LENGTHS = (0, 1, 100, 127, 128, 1024, 16_383, 16_384, 70_000)
KEYS = ("k", "key-é", "鍵" * 85, "x" * 256, "p" * 127, "q" * 128)


def batches(rng: random.Random) -> list[AppendBatch]:
    made, offset, arrival_ms = [], 0, 1_700_000_100_000
    for count in (1, 5, 40, 3, 12):
        records = [
            NewRecord(rng.choice(KEYS), rng.randbytes(rng.choice(DATA_LENGTHS)))
            for _ in range(count)
        ]
        made.append(
            AppendBatch(
                shard_uid=UID, first_offset=Offset(offset), arrival_ms=arrival_ms, records=records
            )
        )
        offset += count
        arrival_ms += rng.choice((0, 1, 999, 1000, 86_400_000))
    # A control batch (an epoch marker) between two batches: taken offsets, never read.
    made.append(
        AppendBatch(
            shard_uid=UID,
            first_offset=Offset(offset),
            arrival_ms=arrival_ms,
            records=[NewRecord("", b"")],
            control=True,
        )
    )
    made.append(
        AppendBatch(
            shard_uid=UID,
            first_offset=Offset(offset + 1),
            arrival_ms=arrival_ms,
            records=[NewRecord("z", b"tail")],
        )
    )
    return made


def by_cbor2(document: Any) -> bytes:
    """cbor2's bytes, timestamps as the AWS door writes them (tag 1, epoch milliseconds)."""

    def timestamp(encoder: cbor2.CBOREncoder, value: datetime) -> None:
        encoder.encode(cbor2.CBORTag(1, ms_from_datetime(value)))

    return cbor2.dumps(document, encoders={datetime: timestamp})


def answer(page: Any) -> dict[str, Any]:
    return {"Records": page, "NextShardIterator": "AAAA" * 30, "MillisBehindLatest": 42}


def by_upb(response: dict[str, Any]) -> bytes:
    shaped = shaped_answer(response)
    return dict_to_message(shaped, kinesis_pb2.GetRecordsOutput).SerializeToString()


@pytest.mark.parametrize("walk", ["c", "python"])
@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
def test_pages_are_upbs_bytes_and_the_memory_stores_records(
    tmp_path: Path, sealed: bool, write: Writer, walk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RocksDB store's pages (walked in C where built, and in Python) hold the memory
    store's records, and both writers write them as upb does."""
    monkeypatch.setattr(grpc_page, "write_page", write)
    if walk == "python":
        monkeypatch.setattr(records, "_skip", records._skip_in_python)
        monkeypatch.setattr(records, "_take", records._take_in_python)
    rng = random.Random(5)
    written = batches(rng)
    rocks = RocksLogStore(tmp_path / "log", keys=Keys() if sealed else None)
    memory = MemoryLogStore()
    rocks.append(written)
    memory.append(written)
    end = written[-1].end_offset
    try:
        for start, records_max, bytes_max in [
            (0, 10_000, 10 * 2**20),
            (0, 1, 1),  # the first record always comes, whatever its size
            (2, 7, 10 * 2**20),  # mid-batch start, records cap mid-batch
            (3, 10_000, 150_000),  # bytes cap
            (44, 10_000, 10 * 2**20),  # across the control batch
            (59, 10, 10),  # past the last record
        ]:
            page = rocks.read_page(
                UID,
                start_offset=Offset(start),
                end_offset=end,
                records_max=records_max,
                bytes_max=bytes_max,
            )
            expected = memory.read(
                UID,
                start_offset=Offset(start),
                end_offset=end,
                records_max=records_max,
                bytes_max=bytes_max,
            )
            expected = [r._replace(encrypted=sealed) for r in expected]
            assert page.runs is not None
            assert page.records() == expected
            assert len(page) == len(expected)
            assert page.size_bytes == sum(r.size_bytes for r in expected)
            if expected:
                assert page.next_offset() == expected[-1].offset + 1
                assert page.first_arrival_ms() == expected[0].arrival_ms
                assert page.last_arrival_ms() == expected[-1].arrival_ms
                middle = expected[len(expected) // 2].offset
                assert page.from_offset(middle).records() == [
                    r for r in expected if r.offset >= middle
                ]
                assert records_size_bytes(page.from_offset(middle)) == records_size_bytes(
                    [r for r in expected if r.offset >= middle]
                )
            for aws_layout in (False, True):
                shard = dataclasses.replace(SHARD, aws_sequence_numbers=aws_layout)
                response = answer(ShardPage(shard, page))
                assert grpc_page.get_records_output(response) == by_upb(response)
                # Its records written while it was read ahead: the same answer.
                ahead_bytes = records_ahead(page.runs, ShardPage(shard, page).number_base)
                ahead = answer(ShardPage(shard, page, ahead_bytes))
                assert grpc_page.get_records_output(ahead) == by_upb(response)
    finally:
        rocks.close()


def test_pages_without_runs_and_dict_answers_take_the_generic_writer() -> None:
    memory = MemoryLogStore()
    memory.append(batches(random.Random(6)))
    page = memory.read_page(
        UID, start_offset=Offset(0), end_offset=Offset(100), records_max=100, bytes_max=2**24
    )
    assert page.runs is None
    response = answer(ShardPage(SHARD, page))
    assert grpc_page.get_records_output(response) == by_upb(response)
    shaped = shaped_answer(response)
    assert isinstance(shaped["Records"], list)
    assert grpc_page.get_records_output(shaped) == by_upb(response)
    empty = answer(ShardPage(SHARD, RecordPage()))
    assert grpc_page.get_records_output(empty) == by_upb(empty)


def test_a_page_with_its_records_written_ahead_answers_those_bytes(tmp_path: Path) -> None:
    """The door answers `records_written` and the tail as they are, without writing the
    records again (a page read ahead for a gRPC reader: service/records.py)."""
    rocks = RocksLogStore(tmp_path / "log")
    try:
        rocks.append(batches(random.Random(8)))
        page = rocks.read_page(
            UID, start_offset=Offset(0), end_offset=Offset(100), records_max=100, bytes_max=2**24
        )
    finally:
        rocks.close()
    assert page.runs is not None
    written = b"\x0a\x00"  # one empty Record: not what the page's records would write
    response = answer(ShardPage(SHARD, page, written))
    tail = by_upb(answer(ShardPage(SHARD, RecordPage())))
    assert grpc_page.get_records_output(response) == written + tail
