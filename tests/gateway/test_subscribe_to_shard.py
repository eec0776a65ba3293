"""SubscribeToShard over gRPC (enhanced fan-out), against an in-process node on 127.0.0.1.

Goal: the AWS behaviour REFERENCE.md §1.9 lists, through the public API (the native client's
`subscribe_to_shard`), plus the node's own bound on a slow subscriber, read from
`KinesisService.subscriptions.statistics()`.

Method: a real node (real RocksDB, real gRPC) whose clock is a ManualClock, so heartbeats,
lifetimes and takeovers happen when the test moves the clock; every wait for an event or a
state has a deadline (the subscription re-checks its timers at least every
`limits.read_wait_ms_max`, so a moved clock shows within about a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker import limits
from broker.client.grpc_client import AsyncEventStream, AsyncShoalClient
from broker.clock import ManualClock
from broker.errors import ShoalError
from broker.node import Node
from broker.service.subscriptions import Subscriptions
from broker.timestamps import datetime_from_ms
from tests.conftest import connected_client, node_config, running_node

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"
EVENT_TIMEOUT_S = 5.0  # one event; the node answers within read_wait_ms_max when idle
# Short timers: the test moves the node's manual clock, and a jump past the cluster's session
# timeout (2 s) would fence the node itself.
HEARTBEAT_MS = 500
LIFETIME_MS = 1_800
TAKEOVER_MS = 500


@pytest.fixture
async def fanout_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(
        tmp_path / "node",
        settings={"subscription_bytes_per_second": 0},  # the rate has its own test
        consumer_creating_ms=0,
        consumer_deleting_ms=1_000,
        subscription_heartbeat_ms=HEARTBEAT_MS,
        subscription_lifetime_ms=LIFETIME_MS,
        subscription_takeover_ms=TAKEOVER_MS,
    )
    async with running_node(config, clock) as node:
        yield node


@pytest.fixture
async def kinesis(fanout_node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(fanout_node) as client:
        yield client


async def consumer_for(client: AsyncShoalClient, stream: str, *, shards: int = 1) -> str:
    """Creates `stream` and registers a consumer on it; returns the consumer ARN."""
    await client.call("CreateStream", {"StreamName": stream, "ShardCount": shards})
    summary = await client.call("DescribeStreamSummary", {"StreamName": stream})
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    registered = await client.call(
        "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": "fan"}
    )
    arn: str = registered["Consumer"]["ConsumerARN"]
    return arn


async def put(client: AsyncShoalClient, stream: str, data: bytes, key: str = "k") -> str:
    response = await client.call(
        "PutRecord", {"StreamName": stream, "PartitionKey": key, "Data": data}
    )
    number: str = response["SequenceNumber"]
    return number


def subscribe(
    client: AsyncShoalClient, arn: str, position: dict[str, Any], shard: str = SHARD
) -> AsyncEventStream:
    return client.subscribe_to_shard(
        {"ConsumerARN": arn, "ShardId": shard, "StartingPosition": position}
    )


async def next_event(events: AsyncEventStream) -> dict[str, Any] | None:
    """The next SubscribeToShardEvent's body, or None once the stream ended normally."""
    message = await events.next_event(timeout_s=EVENT_TIMEOUT_S)
    if message is None:
        return None
    body: dict[str, Any] = message["SubscribeToShardEvent"]
    return body


async def records_until(events: AsyncEventStream, count: int) -> list[dict[str, Any]]:
    """Records of successive events until `count` arrived (each event within its timeout)."""
    records: list[dict[str, Any]] = []
    for _ in range(count + 10):  # events without records are heartbeats: a few at most
        event = await next_event(events)
        assert event is not None, f"the stream ended after {len(records)} records"
        records.extend(event["Records"])
        if len(records) >= count:
            return records
    raise AssertionError(f"only {len(records)} of {count} records")


async def error_within(events: AsyncEventStream, *, events_max: int = 5) -> ShoalError:
    """The error that ends the stream within `events_max` events (heartbeats may come first)."""
    for _ in range(events_max):
        try:
            await next_event(events)
        except ShoalError as error:
            return error
    raise AssertionError(f"no error within {events_max} events")


async def wait_for(predicate: Any, *, what: str, deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while not predicate():
        assert loop.time() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def closed(node: Node, events: AsyncEventStream) -> None:
    """Close a subscription and wait until the node freed its (consumer, shard) slot."""
    await events.aclose()
    await wait_for(lambda: subscriptions_of(node).count == 0, what="the slot to be freed")


def subscriptions_of(node: Node) -> Subscriptions:
    """The node's open subscriptions (its statistics are what the bound is checked on)."""
    assert node.service is not None
    return node.service.subscriptions


# --- Starting positions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("TRIM_HORIZON", [b"r0", b"r1", b"r2", b"r3"]),
        ("AT_SEQUENCE_NUMBER", [b"r1", b"r2", b"r3"]),
        ("AFTER_SEQUENCE_NUMBER", [b"r2", b"r3"]),
        ("AT_TIMESTAMP", [b"r2", b"r3"]),
        ("LATEST", [b"r3"]),
    ],
)
async def test_starting_positions(
    kinesis: AsyncShoalClient, clock: ManualClock, kind: str, expected: list[bytes]
) -> None:
    arn = await consumer_for(kinesis, "s")
    numbers = [await put(kinesis, "s", b"r0"), await put(kinesis, "s", b"r1")]
    clock.advance(ms=1_000)
    timestamp_ms = clock.wall_ms()
    numbers.append(await put(kinesis, "s", b"r2"))
    position: dict[str, Any] = {"Type": kind}
    if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        position["SequenceNumber"] = numbers[1]
    if kind == "AT_TIMESTAMP":
        position["Timestamp"] = datetime_from_ms(timestamp_ms)
    events = subscribe(kinesis, arn, position)
    first = await next_event(events)  # sent at once, with what was there
    assert first is not None
    records = list(first["Records"])
    await put(kinesis, "s", b"r3")  # pushed as it commits
    records += await records_until(events, len(expected) - len(records))
    assert [r["Data"] for r in records] == expected
    assert all(r["PartitionKey"] == "k" for r in records)
    await events.aclose()


async def test_bad_requests_are_refused_before_the_stream(
    kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    arn = await consumer_for(kinesis, "s")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("ResourceNotFoundException", {"ConsumerARN": arn + "0", "ShardId": SHARD}),
        ("ResourceNotFoundException", {"ConsumerARN": arn, "ShardId": "shardId-000000000009"}),
        ("InvalidArgumentException", {"StartingPosition": {"Type": "AT_SEQUENCE_NUMBER"}}),
        (
            "InvalidArgumentException",
            {"StartingPosition": {"Type": "LATEST", "SequenceNumber": "1"}},
        ),
        ("InvalidArgumentException", {"StartingPosition": {"Type": "AT_TIMESTAMP"}}),
        ("ValidationException", {"StartingPosition": {"Type": "SOMEWHERE"}}),
    ]
    for name, overrides in cases:
        request = {
            "ConsumerARN": arn,
            "ShardId": SHARD,
            "StartingPosition": {"Type": "LATEST"},
            **overrides,
        }
        events = kinesis.subscribe_to_shard(request)
        with pytest.raises(ShoalError) as caught:
            await events.next_event(timeout_s=EVENT_TIMEOUT_S)
        assert caught.value.code.kinesis_name == name, (overrides, caught.value)


async def test_a_consumer_still_creating_is_in_use(tmp_path: Path, clock: ManualClock) -> None:
    config = node_config(tmp_path / "node", consumer_creating_ms=1_500)
    async with running_node(config, clock) as node, connected_client(node) as client:
        arn = await consumer_for(client, "s")
        events = subscribe(client, arn, {"Type": "LATEST"})
        with pytest.raises(ShoalError) as caught:
            await events.next_event(timeout_s=EVENT_TIMEOUT_S)
        assert caught.value.code.kinesis_name == "ResourceInUseException"
        clock.advance(ms=1_500)
        events = subscribe(client, arn, {"Type": "LATEST"})
        assert await next_event(events) is not None
        await events.aclose()


# --- Events ----------------------------------------------------------------------------------


async def test_continuation_resumes_exactly_where_the_last_event_ended(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    arn = await consumer_for(kinesis, "s")
    for i in range(5):
        await put(kinesis, "s", b"a%d" % i)
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    records = await records_until(events, 5)
    await closed(fanout_node, events)
    continuation = records[-1]["SequenceNumber"]
    for i in range(3):
        await put(kinesis, "s", b"b%d" % i)
    events = subscribe(
        kinesis, arn, {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": continuation}
    )
    rest = await records_until(events, 3)
    assert [r["Data"] for r in rest] == [b"b0", b"b1", b"b2"]
    await events.aclose()


async def test_idle_subscription_gets_empty_heartbeats(
    kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    arn = await consumer_for(kinesis, "s")
    number = await put(kinesis, "s", b"only")
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    first = await next_event(events)
    assert first is not None
    assert [r["SequenceNumber"] for r in first["Records"]] == [number]
    assert first["ContinuationSequenceNumber"] == number
    assert first["MillisBehindLatest"] == 0
    for _ in range(2):
        clock.advance(ms=HEARTBEAT_MS)
        heartbeat = await next_event(events)
        assert heartbeat is not None
        assert heartbeat["Records"] == []
        assert heartbeat["ContinuationSequenceNumber"] == number  # nothing new: same place
        assert heartbeat["MillisBehindLatest"] == 0
        assert "ChildShards" not in heartbeat or heartbeat["ChildShards"] == []
    await events.aclose()


async def test_millis_behind_latest_while_catching_up(
    fanout_node: Node, kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    arn = await consumer_for(kinesis, "s")
    big = b"x" * 200_000
    for _ in range(10):  # 2 MB: more than one event holds (subscription_event_bytes_max)
        await put(kinesis, "s", big)
    clock.advance(ms=1_500)
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    first = await next_event(events)
    assert first is not None
    assert 0 < len(first["Records"]) < 10
    assert first["MillisBehindLatest"] == 1_500
    rest = await records_until(events, 10 - len(first["Records"]))
    assert len(rest) == 10 - len(first["Records"])
    await events.aclose()


async def test_child_shards_end_the_parent_after_its_records(
    kinesis: AsyncShoalClient,
) -> None:
    arn = await consumer_for(kinesis, "s")
    before = [await put(kinesis, "s", b"p%d" % i, key=f"k{i}") for i in range(6)]
    await kinesis.call(
        "SplitShard",
        {"StreamName": "s", "ShardToSplit": SHARD, "NewStartingHashKey": str(2**127)},
    )
    after = await kinesis.call(
        "PutRecord", {"StreamName": "s", "PartitionKey": "k0", "Data": b"child"}
    )
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    records: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    for _ in range(10):
        event = await next_event(events)
        assert event is not None, "the stream ended without ChildShards"
        records.extend(event["Records"])
        if event.get("ChildShards"):
            last = event
            break
    assert last is not None
    assert [r["SequenceNumber"] for r in records] == before  # every parent record first
    assert "ContinuationSequenceNumber" not in last  # shard end, as the KCL expects it
    children = sorted(c["ShardId"] for c in last["ChildShards"])
    assert children == ["shardId-000000000001", "shardId-000000000002"]
    assert all(c["ParentShards"] == [SHARD] for c in last["ChildShards"])
    assert await next_event(events) is None  # and the stream ends
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"}, shard=after["ShardId"])
    assert [r["Data"] for r in await records_until(events, 1)] == [b"child"]
    await events.aclose()


async def test_lifetime_ends_the_stream_normally(
    kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    arn = await consumer_for(kinesis, "s")
    events = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(events) is not None
    clock.advance(ms=LIFETIME_MS)
    for _ in range(3):  # at most a heartbeat or two before the end
        if await next_event(events) is None:
            break
    else:
        raise AssertionError("the subscription outlived its lifetime")


# --- One subscription per consumer and shard --------------------------------------------------


async def test_second_subscription_is_refused_then_takes_over(
    kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    arn = await consumer_for(kinesis, "s")
    first = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(first) is not None
    second = subscribe(kinesis, arn, {"Type": "LATEST"})
    with pytest.raises(ShoalError) as caught:
        await second.next_event(timeout_s=EVENT_TIMEOUT_S)
    assert caught.value.code.kinesis_name == "ResourceInUseException"
    clock.advance(ms=TAKEOVER_MS)
    third = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(third) is not None
    error = await error_within(first)  # a heartbeat may be queued before it learns it lost
    assert error.code.kinesis_name == "ResourceInUseException"
    await third.aclose()


async def test_other_shards_and_consumers_subscribe_independently(
    kinesis: AsyncShoalClient,
) -> None:
    arn = await consumer_for(kinesis, "s", shards=2)
    summary = await kinesis.call("DescribeStreamSummary", {"StreamName": "s"})
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    other = await kinesis.call(
        "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": "other"}
    )
    streams = [
        subscribe(kinesis, arn, {"Type": "LATEST"}),
        subscribe(kinesis, arn, {"Type": "LATEST"}, shard="shardId-000000000001"),
        subscribe(kinesis, other["Consumer"]["ConsumerARN"], {"Type": "LATEST"}),
    ]
    for events in streams:
        assert await next_event(events) is not None
        await events.aclose()


async def test_deregistering_the_consumer_ends_the_subscription(
    kinesis: AsyncShoalClient,
) -> None:
    arn = await consumer_for(kinesis, "s")
    events = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(events) is not None
    await kinesis.call("DeregisterStreamConsumer", {"ConsumerARN": arn})
    error = await error_within(events)
    assert error.code.kinesis_name == "ResourceNotFoundException"


# --- A slow subscriber ------------------------------------------------------------------------


async def test_a_subscriber_that_does_not_read_holds_a_bounded_queue(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    """10,000 records (about 10 MB) appended while the subscriber reads nothing: the node reads
    ahead at most `subscription_queue_events_max` events, then waits; every record still
    arrives, in order, once the subscriber reads."""
    arn = await consumer_for(kinesis, "s")
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    subscriptions = subscriptions_of(fanout_node)
    await wait_for(lambda: subscriptions.count == 1, what="the subscription")
    payload = b"y" * 1_000
    for batch in range(20):
        await kinesis.call(
            "PutRecords",
            {
                "StreamName": "s",
                "Records": [{"PartitionKey": f"{batch}-{i}", "Data": payload} for i in range(500)],
            },
        )
    # The reader fills its queue, then blocks on it (a reader that ignored the bound never
    # parks): the peak never passes the bound.
    await wait_for(
        lambda: subscriptions.statistics()[0].reader_parked,
        what=f"the reader parked on a full queue ({subscriptions.statistics()})",
    )
    (stats,) = subscriptions.statistics()
    assert stats.queued_events == limits.subscription_queue_events_max
    assert stats.queued_events_peak <= limits.subscription_queue_events_max
    assert stats.queued_bytes <= limits.subscription_queue_events_max * (
        limits.subscription_event_bytes_max
    )
    assert stats.records_sent < 10_000  # it stopped reading ahead
    records = await records_until(events, 10_000)
    assert len(records) == 10_000
    numbers = [int(r["SequenceNumber"]) for r in records]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 10_000
    assert subscriptions.statistics()[0].queued_events_peak <= (
        limits.subscription_queue_events_max
    )
    await events.aclose()


async def test_client_going_away_frees_the_slot(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    arn = await consumer_for(kinesis, "s")
    events = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(events) is not None
    await closed(fanout_node, events)
    again = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(again) is not None  # no ResourceInUseException: the slot was freed
    await again.aclose()


async def test_each_subscription_gets_its_own_byte_rate(tmp_path: Path, clock: ManualClock) -> None:
    """2 MiB/s per consumer and shard (AWS's fan-out budget), on the node's clock: 3 MiB in
    the shard arrive as 2 MiB at once, the rest only once a second has passed. The shard's
    GetRecords limits (set very low here) do not apply to fan-out."""
    config = node_config(
        tmp_path / "node",
        settings={
            "subscription_bytes_per_second": 2 * 1024 * 1024,
            "shard_read_calls_per_second": 1,
        },
        consumer_creating_ms=0,
    )
    async with running_node(config, clock) as node, connected_client(node) as client:
        arn = await consumer_for(client, "s")
        chunk = b"z" * (512 * 1024)
        for _ in range(6):  # 3 MiB
            await put(client, "s", chunk)
        events = subscribe(client, arn, {"Type": "TRIM_HORIZON"})
        received = await records_until(events, 4)  # the first 2 MiB
        assert len(received) == 4
        # The reader waits for the refill twice (real time passes, the node's clock does not:
        # a bucket on real time would have released the next record after the first wait).
        await wait_for(
            lambda: subscriptions_of(node).statistics()[0].byte_rate_waits >= 2,
            what=f"two waits for the byte rate ({subscriptions_of(node).statistics()})",
        )
        assert subscriptions_of(node).statistics()[0].records_sent == 4
        clock.advance(ms=1_000)
        rest = await records_until(events, 2)
        assert len(rest) == 2
        await events.aclose()


# --- Review fixes (issue 5): continuation from an empty shard, prompt takeover, shutdown, leaks


async def test_continuation_from_an_empty_shard_does_not_skip_its_first_record(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    """An idle subscription of an empty shard hands out a continuation number; resubscribing
    AFTER it (what the KCL does) must still deliver the shard's first record, written in
    between. The number names offset 0, which is safe only because offset 0 is always the
    first leader's epoch marker (`subscriptions.continuation_number`): this pins that."""
    arn = await consumer_for(kinesis, "s")
    events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    first = await next_event(events)
    assert first is not None
    assert first["Records"] == []
    continuation = first["ContinuationSequenceNumber"]
    await closed(fanout_node, events)
    number = await put(kinesis, "s", b"first")
    assert int(continuation) < int(number)  # ordered before every record of the shard
    events = subscribe(
        kinesis, arn, {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": continuation}
    )
    assert [r["Data"] for r in await records_until(events, 1)] == [b"first"]
    await closed(fanout_node, events)
    events = subscribe(kinesis, arn, {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": continuation})
    assert [r["Data"] for r in await records_until(events, 1)] == [b"first"]
    await events.aclose()


async def test_a_sequence_number_of_another_shard_is_invalid_before_the_stream(
    kinesis: AsyncShoalClient,
) -> None:
    arn = await consumer_for(kinesis, "s", shards=2)
    other = await kinesis.call(
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": b"x", "ExplicitHashKey": str(2**127)},
    )
    assert other["ShardId"] == "shardId-000000000001"
    for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        events = subscribe(kinesis, arn, {"Type": kind, "SequenceNumber": other["SequenceNumber"]})
        with pytest.raises(ShoalError) as caught:
            await events.next_event(timeout_s=EVENT_TIMEOUT_S)
        assert caught.value.code.kinesis_name == "InvalidArgumentException"


def reader_tasks() -> list[asyncio.Task[Any]]:
    """The node's subscription reader tasks (named `subscription-<shard>`)."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("subscription-")]


async def test_a_takeover_ends_a_subscriber_that_does_not_read_at_once(
    fanout_node: Node, kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    """The old subscription's reader is parked on its full queue (its subscriber reads
    nothing): a takeover still stops it and drops what it read ahead, instead of leaving it
    until the old subscriber reads again."""
    arn = await consumer_for(kinesis, "s")
    old = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
    subscriptions = subscriptions_of(fanout_node)
    await wait_for(lambda: subscriptions.count == 1, what="the subscription")
    big = b"q" * 600_000  # one record per event: gRPC's windows hold some, then the queue fills
    for _ in range(20):
        await put(kinesis, "s", big)
    await wait_for(
        lambda: subscriptions.statistics()[0].queued_events == limits.subscription_queue_events_max,
        what="a full queue",
    )
    clock.advance(ms=TAKEOVER_MS)
    new = subscribe(kinesis, arn, {"Type": "LATEST"})
    assert await next_event(new) is not None
    await wait_for(lambda: len(reader_tasks()) == 1, what="the old reader to stop")
    (stats,) = subscriptions.statistics()
    assert stats.queued_bytes < len(big)  # only the new subscription's (empty) events
    error = await error_within(old, events_max=10)  # what gRPC had buffered, then the error
    assert error.code.kinesis_name == "ResourceInUseException"
    await new.aclose()


async def test_many_short_subscriptions_leave_no_task_behind(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    """300 subscriptions opened, read once and dropped by the client: each frees its slot and
    its reader task at once (no growth in the loop's tasks)."""
    arn = await consumer_for(kinesis, "s")
    await put(kinesis, "s", b"r")
    baseline = len(asyncio.all_tasks())
    for _ in range(300):
        events = subscribe(kinesis, arn, {"Type": "TRIM_HORIZON"})
        assert await next_event(events) is not None
        await closed(fanout_node, events)
    await wait_for(lambda: not reader_tasks(), what="every reader task to end")
    await wait_for(
        lambda: len(asyncio.all_tasks()) <= baseline + 2,
        what=f"the task count back near {baseline} (now {len(asyncio.all_tasks())})",
    )


async def test_stopping_the_node_ends_open_subscriptions_promptly(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A node with subscriptions open on both doors stops well within the doors' 5 s grace:
    the streams end normally (the subscriber resubscribes elsewhere), and a subscribe that
    arrives meanwhile is a retryable InternalFailure."""
    config = node_config(tmp_path / "node", consumer_creating_ms=0)
    node = Node(config, clock=clock)
    await node.start()
    stopped = False
    try:
        async with connected_client(node) as client:
            arn = await consumer_for(client, "s")
            events = subscribe(client, arn, {"Type": "LATEST"})
            assert await next_event(events) is not None
            http = await asyncio.open_connection("127.0.0.1", node.http_port)
            body = (
                b'{"ConsumerARN": "%s", "ShardId": "%s", "StartingPosition": {"Type": '
                b'"LATEST"}}' % (arn.encode(), b"shardId-000000000000")
            )
            reader, writer = http
            # A second consumer would be needed for the same shard; the HTTP subscriber takes
            # the shard's other slot through a second consumer instead.
            summary = await client.call("DescribeStreamSummary", {"StreamName": "s"})
            stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
            second = await client.call(
                "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": "http"}
            )
            body = body.replace(arn.encode(), second["Consumer"]["ConsumerARN"].encode())
            writer.write(
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.1\r\n"
                b"x-amz-target: Kinesis_20131202.SubscribeToShard\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                assert b"200" in await reader.readline()
            await wait_for(lambda: subscriptions_of(node).count == 2, what="both subscriptions")
            loop = asyncio.get_running_loop()
            started = loop.time()
            stopping = asyncio.create_task(node.stop())
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                while (await next_event(events)) is not None:  # heartbeats, then the end
                    pass
            await asyncio.wait_for(stopping, timeout=10)
            stopped = True
            elapsed_s = loop.time() - started
            assert elapsed_s < 3.0, f"stop took {elapsed_s:.1f} s with open subscriptions"
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                rest = await reader.read()  # the chunked body ended (0-length chunk), then EOF
            assert rest.endswith(b"0\r\n\r\n"), rest[-40:]
            writer.close()
    finally:
        if not stopped:
            await node.stop()


async def test_subscribe_while_the_node_stops_is_a_retryable_internal_failure(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    arn = await consumer_for(kinesis, "s")
    assert subscriptions_of(fanout_node).end_all() == 0
    events = subscribe(kinesis, arn, {"Type": "LATEST"})
    with pytest.raises(ShoalError) as caught:
        await events.next_event(timeout_s=EVENT_TIMEOUT_S)
    assert caught.value.code.kinesis_name == "InternalFailure"
    assert caught.value.code.spec.retryable
