"""PutRecords' entries made in one loop (`records._entries`) are those of `_entry`, record by
record: the same hash keys, sizes and records, and the same first error."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.errors import ShoalError
from broker.meta.image import RecordDistribution, ShardMeta, ShardState, StreamMeta, StreamMode
from broker.service import records
from broker.types import ShardIndex, ShardUid, StreamName, StreamUid

SHARD = ShardMeta(
    index=ShardIndex(0),
    uid=ShardUid(1),
    hash_key_start=0,
    hash_key_end=2**128 - 1,
    parent_index=None,
    adjacent_parent_index=None,
    created_ms=1_700_000_000_000,
    state=ShardState.OPEN,
)
STREAM = StreamMeta(
    name=StreamName("s"),
    uid=StreamUid(1),
    arn="arn:aws:kinesis:us-east-1:000000000000:stream/s",
    created_ms=0,
    mode=StreamMode.PROVISIONED,
    retention_hours=24,
    shards=(SHARD,),
    next_shard_index=ShardIndex(1),
    max_record_size_kib=1,
)


def one_by_one(stream: StreamMeta, raws: list[dict[str, Any]]) -> list[records._Entry]:
    return [
        records._entry(stream, i, raw, records._put_records_path(i)) for i, raw in enumerate(raws)
    ]


def test_entries_match_record_by_record() -> None:
    raws: list[dict[str, Any]] = [
        {"Data": b"a", "PartitionKey": "k"},
        {"Data": b"", "PartitionKey": "ключ"},  # UTF-8 counts in the size
        {"Data": b"b", "PartitionKey": "k", "ExplicitHashKey": "12345"},
        {"Data": b"c" * 1000, "PartitionKey": "x" * 24},  # exactly 1 KiB
    ]
    assert records._entries(STREAM, raws) == one_by_one(STREAM, raws)


@pytest.mark.parametrize(
    "bad",
    [
        {"Data": b"c" * 1024, "PartitionKey": "k"},  # over the stream's 1 KiB record size
        {"Data": b"c"},  # no partition key on a stream routed by key
        {"Data": b"c", "PartitionKey": "k", "ExplicitHashKey": str(2**128)},
    ],
)
def test_the_first_error_is_record_by_records(bad: dict[str, Any]) -> None:
    raws = [{"Data": b"a", "PartitionKey": "k"}, bad, {"Data": b"c" * 2000, "PartitionKey": "k"}]
    with pytest.raises(ShoalError) as expected:
        one_by_one(STREAM, raws)
    with pytest.raises(ShoalError) as caught:
        records._entries(STREAM, raws)
    assert (caught.value.code, caught.value.message) == (
        expected.value.code,
        expected.value.message,
    )


def test_auto_distributed_streams_ignore_partition_keys() -> None:
    auto = dataclasses.replace(STREAM, record_distribution=RecordDistribution.AUTO)
    entries = records._entries(auto, [{"Data": b"a"}, {"Data": b"b", "PartitionKey": "k"}])
    assert [(e.record.partition_key, e.size_bytes) for e in entries] == [("", 1), ("k", 2)]
