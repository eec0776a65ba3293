"""Delivery to S3 (moto's server on loopback): buffering by size and by interval, AWS's object
key layout, every compression format, retries until the store takes the object."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.firehose import compression
from broker.node import Node
from tests.firehose.conftest import (
    advance_until,
    call,
    records_read,
    s3_destination,
    wait_read,
    wait_status,
)
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


async def _objects(
    s3_server: S3Server, bucket: str, *, count: int, deadline_s: float = 20
) -> dict[str, bytes]:
    """The bucket's objects once there are at least `count` (bounded)."""
    async with asyncio.timeout(deadline_s):
        while True:
            found = await asyncio.to_thread(s3_server.objects, bucket)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)


async def _delivered_lines(
    s3_server: S3Server, bucket: str, compression_format: str = "UNCOMPRESSED"
) -> list[bytes]:
    """The records delivered to `bucket` so far (objects decompressed, split at newlines),
    sorted."""
    objects = await asyncio.to_thread(s3_server.objects, bucket)
    return sorted(
        line
        for body in objects.values()
        for line in compression.decompress(body, compression_format).splitlines(True)
    )


async def _lines(
    s3_server: S3Server, bucket: str, *, count: int, compression_format: str = "UNCOMPRESSED"
) -> list[bytes]:
    """The records delivered to `bucket`, sorted, once there are at least `count` (bounded)."""
    async with asyncio.timeout(20):
        while True:
            lines = await _delivered_lines(s3_server, bucket, compression_format)
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.1)


async def _lines_past_intervals(
    s3_server: S3Server,
    clock: ManualClock,
    bucket: str,
    *,
    count: int,
    compression_format: str = "UNCOMPRESSED",
) -> list[bytes]:
    """The records delivered to `bucket`, sorted, once there are at least `count`, moving the
    clock past the 60 s buffering interval until then (bounded)."""
    lines: list[bytes] = []

    async def delivered() -> bool:
        nonlocal lines
        lines = await _delivered_lines(s3_server, bucket, compression_format)
        return len(lines) >= count

    await advance_until(clock, delivered, interval_ms=60_000)
    return lines


async def _create(firehose: Any, name: str, bucket: str, **destination: Any) -> None:
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(bucket, **destination),
    )
    await wait_status(firehose, name, "ACTIVE")


async def test_a_full_buffer_is_delivered_at_once_in_order(
    firehose: Any, s3_server: S3Server, fh_node: Node
) -> None:
    s3_server.client().create_bucket(Bucket="by-size")
    await _create(
        firehose,
        "by-size",
        "by-size",
        BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 900},
        CompressionFormat="GZIP",
    )
    # 2.4 MiB over the internal stream's two shards: each passes 1 MiB.
    lines = [f'{{"n": {i}, "pad": "{"x" * 1000}"}}\n'.encode() for i in range(2400)]
    for start in range(0, len(lines), 400):
        batch = await call(
            firehose.put_record_batch,
            DeliveryStreamName="by-size",
            Records=[{"Data": line} for line in lines[start : start + 400]],
        )
        assert batch["FailedPutCount"] == 0
    objects = await _objects(s3_server, "by-size", count=1)
    delivered = b"".join(compression.decompress(body, "GZIP") for body in objects.values())
    received = delivered.splitlines(keepends=True)
    assert len(received) >= 1000  # a shard passed 1 MiB: no interval was needed
    assert set(received) <= set(lines)
    for key in objects:
        assert key.endswith(".gz")
        assert re.fullmatch(
            r"\d{4}/\d{2}/\d{2}/\d{2}/by-size-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9a-f-]{36}\.gz",
            key,
        ), key
    assert fh_node.firehose is not None
    assert fh_node.firehose.deliverers.statistics.objects >= 1


async def test_the_interval_delivers_a_partial_buffer_under_the_default_layout(
    firehose: Any, s3_server: S3Server, clock: ManualClock, fh_node: Node
) -> None:
    s3_server.client().create_bucket(Bucket="by-time")
    await _create(
        firehose,
        "by-time",
        "by-time",
        Prefix="events/",
        BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
    )
    put_at = datetime.fromtimestamp(clock.wall_ms() / 1000, tz=UTC)
    records = [f"r{i}\n".encode() for i in range(50)]
    read_before = records_read(fh_node)
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="by-time",
        Records=[{"Data": data} for data in records],
    )
    await wait_read(fh_node, read_before + len(records))  # the deliverer reads them
    # The interval has not passed: the buffers' timers look at every record and deliver nothing.
    assert fh_node.firehose is not None
    held = fh_node.firehose.deliverers.statistics.held_at_timer_look
    async with asyncio.timeout(20):
        while sum(n for key, n in held.items() if key.startswith("by-time/")) < len(records):  # noqa: ASYNC110  # a counter; no event exists
            await asyncio.sleep(0.02)
    assert await asyncio.to_thread(s3_server.objects, "by-time") == {}
    clock.advance(ms=61_000)
    assert await _lines(s3_server, "by-time", count=len(records)) == sorted(records)
    objects = await asyncio.to_thread(s3_server.objects, "by-time")
    hour = put_at.strftime("%Y/%m/%d/%H/")
    for key in objects:
        assert key.startswith(f"events/{hour}by-time-1-{put_at:%Y-%m-%d-%H}-"), key


@pytest.mark.parametrize("compression_format", ["UNCOMPRESSED", "ZIP", "Snappy", "HADOOP_SNAPPY"])
async def test_each_compression_format_reads_back(
    firehose: Any, s3_server: S3Server, clock: ManualClock, compression_format: str
) -> None:
    bucket = f"fmt-{compression_format.lower().replace('_', '-')}"
    s3_server.client().create_bucket(Bucket=bucket)
    await _create(
        firehose,
        bucket,  # a delivery stream of that name
        bucket,
        CompressionFormat=compression_format,
        BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
    )
    records = [f"{compression_format}-{i}\n".encode() for i in range(20)]
    for data in records:
        await call(firehose.put_record, DeliveryStreamName=bucket, Record={"Data": data})
    delivered = await _lines_past_intervals(
        s3_server, clock, bucket, count=len(records), compression_format=compression_format
    )
    assert delivered == sorted(records)


async def test_delivery_retries_until_the_bucket_takes_it(
    firehose: Any, s3_server: S3Server, clock: ManualClock, fh_node: Node
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="flaky")
    await _create(
        firehose, "flaky", "flaky", BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60}
    )
    s3.delete_bucket(Bucket="flaky")  # the store refuses every write from now on
    await call(firehose.put_record, DeliveryStreamName="flaky", Record={"Data": b"kept\n"})
    assert fh_node.firehose is not None
    statistics = fh_node.firehose.deliverers.statistics
    failed_before = statistics.failed_attempts  # the package's other delivery streams' too

    async def failed_twice() -> bool:
        return statistics.failed_attempts >= failed_before + 2

    await advance_until(clock, failed_twice, interval_ms=60_000)
    s3.create_bucket(Bucket="flaky")
    objects = await _objects(s3_server, "flaky", count=1)
    assert list(objects.values()) == [b"kept\n"]


async def test_a_kinesis_stream_as_source_is_read_by_a_consumer_application(
    firehose: Any, s3_server: S3Server, fh_node: Node, clock: ManualClock
) -> None:
    assert fh_node.service is not None
    kinesis = fh_node.service
    await kinesis.call("CreateStream", {"StreamName": "clicks", "ShardCount": 2})
    s3_server.client().create_bucket(Bucket="from-stream")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="clicks-to-s3",
        DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={
            "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/clicks",
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        },
        ExtendedS3DestinationConfiguration=s3_destination(
            "from-stream", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}
        ),
    )
    description = await wait_status(firehose, "clicks-to-s3", "ACTIVE")
    assert description["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"].endswith(
        ":stream/clicks"
    )
    with pytest.raises(Exception, match="not permitted on KinesisStreamAsSource"):
        await call(firehose.put_record, DeliveryStreamName="clicks-to-s3", Record={"Data": b"x"})

    # Firehose starts at LATEST: put a marker until it is delivered, then the records.
    async def marker_delivered() -> bool:
        await kinesis.call(
            "PutRecord", {"StreamName": "clicks", "Data": b"marker\n", "PartitionKey": "m"}
        )
        clock.advance(ms=1_000)
        await asyncio.sleep(0.3)
        objects = await asyncio.to_thread(s3_server.objects, "from-stream")
        return any(b"marker\n" in body for body in objects.values())

    async with asyncio.timeout(30):
        while not await marker_delivered():
            pass
    records = [f"click-{i}\n".encode() for i in range(40)]
    await kinesis.call(
        "PutRecords",
        {
            "StreamName": "clicks",
            "Records": [{"Data": data, "PartitionKey": str(i)} for i, data in enumerate(records)],
        },
    )
    clock.advance(ms=1_000)
    delivered = await _lines(s3_server, "from-stream", count=len(records) + 1)
    assert set(records) <= set(delivered)

    # Across a reshard: a key's records put before a split are all delivered before any put
    # after it (the parent shard is read to its end and checkpointed before its children).
    async def put_ordered(texts: list[bytes]) -> None:
        for data in texts:
            await kinesis.call(
                "PutRecord",
                {"StreamName": "clicks", "Data": data, "PartitionKey": "k", "ExplicitHashKey": "1"},
            )

    before = [f"ordered-{i:02d}\n".encode() for i in range(15)]
    after = [f"ordered-{i:02d}\n".encode() for i in range(15, 30)]
    await put_ordered(before)
    await kinesis.call(
        "SplitShard",
        {
            "StreamName": "clicks",
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": str(2**126),
        },
    )
    await put_ordered(after)
    first_seen: dict[bytes, int] = {}
    async with asyncio.timeout(30):
        poll = 0
        while not set(before + after) <= first_seen.keys():
            poll += 1
            objects = await asyncio.to_thread(s3_server.objects, "from-stream")
            for body in objects.values():
                for line in body.splitlines(keepends=True):
                    first_seen.setdefault(line, poll)
            clock.advance(ms=1_000)
            await asyncio.sleep(0.1)
    assert max(first_seen[line] for line in before) <= min(first_seen[line] for line in after)
    lines = [
        line
        for body in (await asyncio.to_thread(s3_server.objects, "from-stream")).values()
        for line in body.splitlines(keepends=True)
        if line.startswith(b"ordered-")
    ]
    assert sorted(lines) == sorted(before + after)  # none lost, none twice
