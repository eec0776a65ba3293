"""SubscribeToShard through the AWS door: boto3's `subscribe_to_shard`, and raw CBOR over h2c.

Goal: an unmodified boto3 reads enhanced fan-out events from Shoal (the event stream of
`application/vnd.amazon.eventstream` messages over HTTP/1.1 chunked, JSON payloads): records
pushed as they commit, errors before the stream as ordinary AWS errors, errors during it as
event-stream exceptions botocore raises, ChildShards at a shard's end. CBOR (the Java SDKs'
default) has no boto3 switch, so a raw HTTP/2 (h2c) request with httpx checks it, framing
decoded by botocore's own `EventStreamBuffer`.

Method: an in-process node on 127.0.0.1 with a ManualClock; boto3 runs in a worker thread
(`asyncio.to_thread`) because the node serves on the test's loop; every read is bounded by
botocore's read timeout or an explicit deadline.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import cbor2
import httpx
import pytest
from botocore.eventstream import EventStreamBuffer

from broker.clock import ManualClock
from broker.node import Node
from broker.service.subscriptions import Subscriptions
from tests.compat.conftest import boto_client
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"


@pytest.fixture
async def fanout_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(
        tmp_path / "node",
        settings={"subscription_bytes_per_second": 0},
        consumer_creating_ms=0,
        consumer_deleting_ms=1_000,
    )
    async with running_node(config, clock) as node:
        yield node


@pytest.fixture
def endpoint(fanout_node: Node) -> str:
    return f"http://127.0.0.1:{fanout_node.http_port}"


def subscriptions_of(node: Node) -> Subscriptions:
    """The node's open subscriptions (its statistics are what the bound is checked on)."""
    assert node.service is not None
    return node.service.subscriptions


def registered(kinesis: Any, stream: str, *, shards: int = 1) -> str:
    """Creates `stream`, registers a consumer; returns its ARN (blocking: run in a thread)."""
    kinesis.create_stream(StreamName=stream, ShardCount=shards)
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    consumer = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="fan")
    arn: str = consumer["Consumer"]["ConsumerARN"]
    return arn


def stream_error(events: Iterator[Any], *, events_max: int = 5) -> str:
    """The error code of the event-stream exception that ends `events` (heartbeats may come
    first); botocore raises it as EventStreamError."""
    for _ in range(events_max):
        try:
            next(events)
        except botocore.exceptions.EventStreamError as error:
            code: str = error.response["Error"]["Code"]
            return code
    raise AssertionError(f"no exception within {events_max} events")


async def test_boto3_receives_records_as_they_commit(endpoint: str) -> None:
    def scenario() -> list[dict[str, Any]]:
        kinesis = boto_client(endpoint)
        arn = registered(kinesis, "s")
        first = kinesis.put_record(StreamName="s", PartitionKey="a", Data=b"before")
        response = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD, StartingPosition={"Type": "TRIM_HORIZON"}
        )
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        events: list[dict[str, Any]] = []
        stream = response["EventStream"]
        records = 0
        for message in stream:
            event = message["SubscribeToShardEvent"]
            events.append(event)
            records += len(event["Records"])
            if records == 1:
                kinesis.put_record(StreamName="s", PartitionKey="b", Data=b"during")
            if records >= 2:
                break
        stream.close()
        assert events[0]["Records"][0]["SequenceNumber"] == first["SequenceNumber"]
        kinesis.close()
        return events

    events = await asyncio.to_thread(scenario)
    records = [r for event in events for r in event["Records"]]
    assert [r["Data"] for r in records] == [b"before", b"during"]
    assert [r["PartitionKey"] for r in records] == ["a", "b"]
    assert all(isinstance(r["ApproximateArrivalTimestamp"], datetime.datetime) for r in records)
    assert events[-1]["ContinuationSequenceNumber"] == records[-1]["SequenceNumber"]
    assert events[-1]["MillisBehindLatest"] == 0


async def test_boto3_errors_before_and_during_the_stream(endpoint: str) -> None:
    def scenario() -> None:
        kinesis = boto_client(endpoint)
        arn = registered(kinesis, "s")
        with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
            kinesis.subscribe_to_shard(
                ConsumerARN=arn, ShardId="shardId-000000000007", StartingPosition={"Type": "LATEST"}
            )
        response = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD, StartingPosition={"Type": "LATEST"}
        )
        with pytest.raises(kinesis.exceptions.ResourceInUseException):
            kinesis.subscribe_to_shard(
                ConsumerARN=arn, ShardId=SHARD, StartingPosition={"Type": "LATEST"}
            )
        stream = response["EventStream"]
        events = iter(stream)
        assert "SubscribeToShardEvent" in next(events)
        kinesis.deregister_stream_consumer(ConsumerARN=arn)
        assert stream_error(events) == "ResourceNotFoundException"
        stream.close()
        kinesis.close()

    await asyncio.to_thread(scenario)


async def test_boto3_sees_child_shards_and_the_end_of_a_closed_shard(endpoint: str) -> None:
    def scenario() -> list[dict[str, Any]]:
        kinesis = boto_client(endpoint)
        arn = registered(kinesis, "s")
        for i in range(3):
            kinesis.put_record(StreamName="s", PartitionKey=f"k{i}", Data=b"p")
        kinesis.split_shard(StreamName="s", ShardToSplit=SHARD, NewStartingHashKey=str(2**127))
        response = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD, StartingPosition={"Type": "TRIM_HORIZON"}
        )
        events = [message["SubscribeToShardEvent"] for message in response["EventStream"]]
        kinesis.close()
        return events  # the loop above ends only because the stream ends

    events = await asyncio.to_thread(scenario)
    assert sum(len(e["Records"]) for e in events) == 3
    last = events[-1]
    assert "ContinuationSequenceNumber" not in last
    assert sorted(c["ShardId"] for c in last["ChildShards"]) == [
        "shardId-000000000001",
        "shardId-000000000002",
    ]


async def test_cbor_event_stream_over_h2c(endpoint: str) -> None:
    """The Java SDKs' CBOR, on HTTP/2 with prior knowledge: every message decodes with
    botocore's EventStreamBuffer (prelude and message CRCs checked), payloads are CBOR with
    blobs as byte strings and timestamps as tag 1 in epoch milliseconds."""
    arn = await asyncio.to_thread(lambda: registered(boto_client(endpoint), "s"))
    await asyncio.to_thread(
        lambda: boto_client(endpoint).put_record(StreamName="s", PartitionKey="a", Data=b"\x00cb")
    )
    headers = {
        "content-type": "application/x-amz-cbor-1.1",
        "x-amz-target": "Kinesis_20131202.SubscribeToShard",
    }
    body = cbor2.dumps(
        {"ConsumerARN": arn, "ShardId": SHARD, "StartingPosition": {"Type": "TRIM_HORIZON"}}
    )
    messages: list[Any] = []
    async with (
        httpx.AsyncClient(http1=False, http2=True, timeout=10) as http,
        http.stream("POST", endpoint, content=body, headers=headers) as response,
    ):
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
        buffer = EventStreamBuffer()
        async with asyncio.timeout(10):
            async for chunk in response.aiter_bytes():
                buffer.add_data(chunk)
                messages.extend(buffer)
                if len(messages) >= 2:
                    break
    initial, event = messages[:2]
    assert initial.headers[":event-type"] == "initial-response"
    assert initial.headers[":message-type"] == "event"
    assert event.headers[":event-type"] == "SubscribeToShardEvent"
    assert event.headers[":content-type"] == "application/x-amz-cbor-1.1"
    tagged: list[int] = []

    def epoch_tag(raw: Any, _immutable: bool) -> Any:
        tagged.append(raw)
        return raw

    payload = cbor2.loads(event.payload, semantic_decoders={1: epoch_tag})
    (record,) = payload["Records"]
    assert record["Data"] == b"\x00cb"
    assert record["PartitionKey"] == "a"
    assert record["ApproximateArrivalTimestamp"] > 10**12  # milliseconds, not seconds
    assert tagged == [record["ApproximateArrivalTimestamp"]]
    assert payload["ContinuationSequenceNumber"] == record["SequenceNumber"]


async def test_a_client_that_disconnects_frees_the_subscription(
    endpoint: str, fanout_node: Node
) -> None:
    arn = await asyncio.to_thread(lambda: registered(boto_client(endpoint), "s"))
    opened = threading.Event()

    def subscribe_and_drop() -> None:
        kinesis = boto_client(endpoint)
        response = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD, StartingPosition={"Type": "LATEST"}
        )
        next(iter(response["EventStream"]))
        opened.set()
        response["EventStream"].close()  # closes the connection under the stream
        kinesis.close()

    await asyncio.to_thread(subscribe_and_drop)
    assert opened.is_set()
    subscriptions = subscriptions_of(fanout_node)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 5
    while subscriptions.count:
        assert loop.time() < give_up, "the subscription outlived its client"
        await asyncio.sleep(0.02)


def subscribe_events(buffer: EventStreamBuffer) -> list[dict[str, Any]]:
    """The JSON SubscribeToShardEvent payloads complete in `buffer` (consumed from it)."""
    messages: list[Any] = list(buffer)
    return [
        json.loads(m.payload)
        for m in messages
        if m.headers[":event-type"] == "SubscribeToShardEvent"
    ]


async def test_a_subscriber_that_stops_reading_over_http2_is_held_back(
    endpoint: str, fanout_node: Node
) -> None:
    """Backpressure through the AWS door: an h2c subscriber that stops reading while 5,000
    records (5 MB) are appended makes the node stop reading ahead (its queue stays at the
    bound, HTTP/2 flow control holds the rest), and gets every record once it reads again."""
    arn = await asyncio.to_thread(lambda: registered(boto_client(endpoint), "s"))
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": "Kinesis_20131202.SubscribeToShard",
    }
    body = json.dumps(
        {"ConsumerARN": arn, "ShardId": SHARD, "StartingPosition": {"Type": "TRIM_HORIZON"}}
    )
    subscriptions = subscriptions_of(fanout_node)

    def put_all() -> None:
        kinesis = boto_client(endpoint)
        for batch in range(10):
            kinesis.put_records(
                StreamName="s",
                Records=[
                    {"PartitionKey": f"{batch}-{i}", "Data": b"h" * 1_000} for i in range(500)
                ],
            )
        kinesis.close()

    records = 0
    async with (
        httpx.AsyncClient(http1=False, http2=True, timeout=30) as http,
        http.stream("POST", endpoint, content=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_bytes()
        buffer = EventStreamBuffer()
        async with asyncio.timeout(10):  # the first event (empty: nothing stored yet)
            events: list[dict[str, Any]] = []
            while not events:
                buffer.add_data(await anext(chunks))
                events = subscribe_events(buffer)
        await asyncio.to_thread(put_all)  # nobody reads meanwhile
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10
        # The reader parks on its full queue (a reader that ignored the bound never does).
        while not subscriptions.statistics()[0].reader_parked:
            assert loop.time() < give_up, f"the reader never parked: {subscriptions.statistics()}"
            await asyncio.sleep(0.05)
        (stats,) = subscriptions.statistics()
        assert stats.queued_events == 2
        assert stats.queued_events_peak <= 2
        assert stats.records_sent < 5_000  # held back, not buffered
        async with asyncio.timeout(30):
            async for chunk in chunks:
                buffer.add_data(chunk)
                records += sum(len(event["Records"]) for event in subscribe_events(buffer))
                if records >= 5_000:
                    break
    assert records == 5_000
