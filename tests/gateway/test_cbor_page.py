"""cbor_page writes a page of records byte for byte as cbor2 does (with aws_codec's
millisecond timestamps), and declines any record of another shape."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest

from broker.gateway import cbor_page
from broker.gateway.aws_codec import WireFormat, encode_body
from broker.log.records import StoredRecord
from broker.log.rocks_store import RocksLogStore
from broker.meta.image import ShardMeta, ShardState
from broker.service.records import ShardPage, records_shape, shaped_answer
from broker.timestamps import ms_from_datetime
from broker.types import Offset, ShardIndex, ShardUid
from tests.gateway.test_grpc_page import SHARD as GRPC_SHARD
from tests.gateway.test_grpc_page import UID, answer, batches
from tests.log.test_encrypted_store import Keys

SHARD = ShardMeta(
    index=ShardIndex(3),
    uid=ShardUid(9),
    hash_key_start=0,
    hash_key_end=2**128 - 1,
    parent_index=None,
    adjacent_parent_index=None,
    created_ms=1_700_000_000_000,
    state=ShardState.OPEN,
)


def by_cbor2(document: Any) -> bytes:
    def timestamp(encoder: cbor2.CBOREncoder, value: datetime) -> None:
        encoder.encode(cbor2.CBORTag(1, ms_from_datetime(value)))

    return cbor2.dumps(document, encoders={datetime: timestamp})


def page() -> list[dict[str, Any]]:
    records = [
        StoredRecord(Offset(0), 1_700_000_000_001, "k", b""),
        StoredRecord(Offset(1), 1_700_000_000_001, "ключ-" * 40, b"x" * 23),
        StoredRecord(Offset(2), 1_700_000_000_001, "k", b"y" * 24, encrypted=True),
        StoredRecord(Offset(4), 1_700_000_999_999, "k" * 256, b"z" * 1024),
        StoredRecord(Offset(5), 1_700_000_999_999, "k", b"w" * 70_000),
        StoredRecord(Offset(6), 0, "k", b"\x00" * 255, encrypted=True),
    ]
    return records_shape(SHARD, records)


def test_a_page_is_written_as_cbor2_writes_it() -> None:
    document: dict[str, Any] = {
        "Records": page(),
        "MillisBehindLatest": 7,
        "NextShardIterator": "it",
    }
    assert cbor_page.records_array(document["Records"]) == by_cbor2(document["Records"])
    assert encode_body(document, WireFormat.CBOR) == by_cbor2(document)
    event = {"ContinuationSequenceNumber": "5", "Records": page(), "ChildShards": []}
    assert encode_body(event, WireFormat.CBOR) == by_cbor2(event)


@pytest.mark.parametrize(
    "change",
    [
        {"Data": "not bytes"},
        {"PartitionKey": b"bytes"},
        {"SequenceNumber": 5},
        {"ApproximateArrivalTimestamp": 1.5},
        {"EncryptionType": 1},
        {"Extra": "x"},
    ],
)
def test_other_shapes_are_declined_and_encoded_by_cbor2(change: dict[str, Any]) -> None:
    records = page()
    records[1] = {**records[1], **change}
    assert cbor_page.records_array(records) is None
    document = {"Records": records, "At": datetime(2026, 1, 1, tzinfo=UTC)}
    assert encode_body(document, WireFormat.CBOR) == by_cbor2(document)


def test_heads_are_the_shortest_form() -> None:
    """A head is what cbor2 writes for an unsigned integer (major type 0) of that value."""
    for length in (0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1):
        assert cbor_page.item_head(0, length) == cbor2.dumps(length)
    assert cbor_page.item_head(2, 300) == cbor2.dumps(b"\x00" * 300)[:-300]


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
def test_pages_from_batch_bytes_are_cbor2s(tmp_path: Path, sealed: bool) -> None:
    """GetRecords' ShardPage written from its runs: the bytes cbor2 writes for the same
    answer shaped into record dicts, in both number layouts, with ChildShards, and when the
    page is empty or holds records of many keys and sizes (tests.gateway.test_grpc_page)."""
    written = batches(random.Random(9))
    end = written[-1].end_offset
    rocks = RocksLogStore(tmp_path / "log", keys=Keys() if sealed else None)
    rocks.append(written)
    try:
        for start, records_max in [(0, 10_000), (2, 7), (44, 10_000), (end, 10)]:
            page = rocks.read_page(
                UID,
                start_offset=Offset(start),
                end_offset=end,
                records_max=records_max,
                bytes_max=10 * 2**20,
            )
            assert page.runs is not None
            for aws_layout in (False, True):
                shard = dataclasses.replace(GRPC_SHARD, aws_sequence_numbers=aws_layout)
                response: dict[str, Any] = answer(ShardPage(shard, page))
                response["ChildShards"] = [
                    {"ShardId": "shardId-000000000001", "ParentShards": ["shardId-000000000000"]}
                ]
                assert encode_body(response, WireFormat.CBOR) == by_cbor2(shaped_answer(response))
    finally:
        rocks.close()
