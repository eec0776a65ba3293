"""The application's in-node input (`broker/analytics/shard_reader.py`) against GetRecords.

Goal: reading a shard's log inside the node hands the runner exactly what a GetRecords
consumer (the KCL's de-aggregation included) would get: the same user records in the same
order with the same sequence numbers, sub-sequence numbers and arrival times; KPL aggregates
de-aggregated; a closed shard ended with the same children; a checkpoint resumed after.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.analytics.shard_reader import ShardReader, StoredPage
from broker.client.kpl import UserRecord, aggregate, deaggregate_batch
from broker.client.retrieval import RecordBatch, child_shard
from broker.client.worker_config import WorkerConfig
from broker.consumers.leases import Checkpoint
from broker.node import Node
from broker.timestamps import ms_from_datetime
from tests.analytics.conftest import MODULE_LOOP
from tests.compat.conftest import call

pytestmark = [pytest.mark.integration, MODULE_LOOP]


async def _create(kinesis: Any, name: str, shards: int) -> dict[str, Any]:
    await call(kinesis.create_stream, StreamName=name, ShardCount=shards)
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout
            described = await call(kinesis.describe_stream, StreamName=name)
            if described["StreamDescription"]["StreamStatus"] == "ACTIVE":
                return dict(described["StreamDescription"]["Shards"][0])
            await asyncio.sleep(0.02)


def _reader(node: Node, stream: str, shard: dict[str, Any], *, limit: int) -> ShardReader:
    info = child_shard({**shard, "ParentShards": ()})
    assert node.service is not None
    return ShardReader(
        node.service.ctx,
        stream_key=stream,
        shard=info,
        caller=None,
        config=WorkerConfig(get_records_limit=limit),
    )


async def _read_to_end(reader: ShardReader) -> tuple[list[UserRecord], RecordBatch]:
    users: list[UserRecord] = []
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout
            batch = await reader.next_batch()
            assert not batch.records and isinstance(batch.users, StoredPage)
            users += list(batch.users)
            if batch.child_shards is not None or batch.empty:
                return users, batch


async def _get_records(kinesis: Any, stream: str, shard_id: str) -> tuple[list[UserRecord], Any]:
    iterator = (
        await call(
            kinesis.get_shard_iterator,
            StreamName=stream,
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout
            answer = await call(kinesis.get_records, ShardIterator=iterator, Limit=3)
            records += answer["Records"]
            if not answer["Records"] or "NextShardIterator" not in answer:
                return deaggregate_batch(records), answer.get("ChildShards")
            iterator = answer["NextShardIterator"]


def _fields(users: list[UserRecord]) -> list[tuple[Any, ...]]:
    return [
        (
            u.partition_key,
            u.data,
            u.sequence_number,
            u.sub_sequence_number,
            u.aggregated,
            ms_from_datetime(u.approximate_arrival_timestamp)
            if u.approximate_arrival_timestamp is not None
            else None,
        )
        for u in users
    ]


async def test_the_reader_hands_over_what_get_records_and_deaggregation_give(
    node: Node, kinesis: Any
) -> None:
    stream = "reader-equivalence"
    shard = await _create(kinesis, stream, 1)
    plain = [{"Data": f"plain-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(5)]
    blob = aggregate(
        [UserRecord(partition_key=f"a{i}", data=f"agg-{i}".encode()) for i in range(4)]
    )
    await call(kinesis.put_records, StreamName=stream, Records=plain[:3])
    await call(
        kinesis.put_record, StreamName=stream, Data=blob.data, PartitionKey=blob.partition_key
    )
    await call(kinesis.put_records, StreamName=stream, Records=plain[3:])

    reader = _reader(node, stream, shard, limit=3)  # pages of 3: an aggregate inside one
    await reader.start(Checkpoint("TRIM_HORIZON"))
    read, _ = await _read_to_end(reader)
    expected, _ = await _get_records(kinesis, stream, shard["ShardId"])
    assert len(expected) == 9 and sum(u.aggregated for u in expected) == 4
    assert _fields(read) == _fields(expected)

    # A checkpoint inside the aggregate: read from its record again (the worker drops what is
    # at or below the checkpoint); a plain record's checkpoint: from that record.
    resumed = _reader(node, stream, shard, limit=100)
    await resumed.start(Checkpoint(str(expected[5].sequence_number), 2))
    again, _ = await _read_to_end(resumed)
    assert _fields(again) == _fields(expected[3:])


async def test_a_closed_shard_ends_with_its_children_as_get_records_does(
    node: Node, kinesis: Any
) -> None:
    stream = "reader-split"
    shard = await _create(kinesis, stream, 1)
    await call(
        kinesis.put_records,
        StreamName=stream,
        Records=[{"Data": b"before", "PartitionKey": "p"}],
    )
    middle = str((int(shard["HashKeyRange"]["EndingHashKey"]) + 1) // 2)
    await call(
        kinesis.split_shard,
        StreamName=stream,
        ShardToSplit=shard["ShardId"],
        NewStartingHashKey=middle,
    )
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout: the split commits through the quorum
            described = await call(kinesis.describe_stream, StreamName=stream)
            closed = described["StreamDescription"]["Shards"][0]["SequenceNumberRange"]
            if "EndingSequenceNumber" in closed:
                break
            await asyncio.sleep(0.02)
    reader = _reader(node, stream, shard, limit=100)
    await reader.start(Checkpoint("TRIM_HORIZON"))
    read, last = await _read_to_end(reader)
    assert last.child_shards is not None
    expected, children = await _get_records(kinesis, stream, shard["ShardId"])
    assert [u.data for u in read] == [u.data for u in expected] == [b"before"]
    assert last.child_shards == tuple(child_shard(c) for c in children)
    assert all(c.parent_shard_ids == (shard["ShardId"],) for c in last.child_shards)
