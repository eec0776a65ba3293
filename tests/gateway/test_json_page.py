"""The AWS door writes a GetRecords page in JSON from the stored batch bytes (`json_page`)
byte for byte as orjson writes the same answer shaped into record dicts."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from broker.gateway import json_page
from broker.gateway.aws_codec import WireFormat, _json, encode_body
from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, NewRecord, RecordPage
from broker.log.rocks_store import RocksLogStore
from broker.service.records import ShardPage, shaped_answer
from broker.types import Offset
from tests.gateway.test_grpc_page import SHARD, UID, answer, batches
from tests.log.test_encrypted_store import Keys

# Keys JSON must escape (quote, backslash, control characters) or writes as UTF-8.
ODD_KEYS = ('a"b', "back\\slash", "tab\tkey", "\x01\x1f", "é", "鍵", "\u2028", "/", "~")


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
def test_json_pages_are_orjsons_bytes(tmp_path: Path, sealed: bool) -> None:
    rng = random.Random(8)
    written = batches(rng)
    end = written[-1].end_offset
    written.append(
        AppendBatch(
            shard_uid=UID,
            first_offset=end,
            arrival_ms=1_800_000_000_001,
            records=[NewRecord(key, rng.randbytes(rng.randint(0, 300))) for key in ODD_KEYS],
        )
    )
    rocks = RocksLogStore(tmp_path / "log", keys=Keys() if sealed else None)
    rocks.append(written)
    try:
        for start, records_max in [(0, 10_000), (2, 7), (end, 10_000)]:
            page = rocks.read_page(
                UID,
                start_offset=Offset(start),
                end_offset=written[-1].end_offset,
                records_max=records_max,
                bytes_max=10 * 2**20,
            )
            for aws_layout in (False, True):
                shard = dataclasses.replace(SHARD, aws_sequence_numbers=aws_layout)
                response = answer(ShardPage(shard, page))
                written_json = encode_body(response, WireFormat.JSON)
                assert written_json == _json(shaped_answer(response))
                assert json_page.get_records_json(response, _json) == written_json
                with_children: dict[str, Any] = {
                    **response,
                    "ChildShards": [{"ShardId": "shardId-000000000001", "ParentShards": []}],
                }
                assert encode_body(with_children, WireFormat.JSON) == _json(
                    shaped_answer(with_children)
                )
    finally:
        rocks.close()


def test_other_documents_take_orjson() -> None:
    memory = MemoryLogStore()
    memory.append(batches(random.Random(9)))
    page = memory.read_page(
        UID, start_offset=Offset(0), end_offset=Offset(100), records_max=100, bytes_max=2**24
    )
    runless = answer(ShardPage(SHARD, page))
    assert json_page.get_records_json(runless, _json) is None
    assert encode_body(runless, WireFormat.JSON) == _json(shaped_answer(runless))
    reordered = {"MillisBehindLatest": 0, "Records": ShardPage(SHARD, RecordPage())}
    assert json_page.get_records_json(reordered, _json) is None
    assert json_page.get_records_json({"Records": []}, _json) is None
