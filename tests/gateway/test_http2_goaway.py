"""The AWS door's HTTP/2 GOAWAY handling (gateway/http_server.py), with a raw h2 client.

Goal: pin the behaviour `_GracefulGoAwayH2Protocol` patches into hypercorn, so an upgrade of
hypercorn or h2 that breaks it fails here rather than only in the JavaScript SDK test (which
needs node). The JS SDK v3 sends GOAWAY(NO_ERROR) right after an event stream's response
headers and keeps reading: the stream must go on (RFC 9113 §6.8) and the connection close after
its last stream. A GOAWAY with an error code still closes the connection at once.

Method: an in-process node; the h2 library (hypercorn's own dependency) drives one cleartext
HTTP/2 connection by hand; every read has a deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from botocore.eventstream import EventStreamBuffer
from hyperframe.frame import GoAwayFrame

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.gateway import http_server
from broker.node import Node
from tests.conftest import connected_client, node_config, running_node

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"
READ_TIMEOUT_S = 5.0


@pytest.fixture
async def fanout_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(tmp_path / "node", consumer_creating_ms=0)
    async with running_node(config, clock) as node:
        yield node


class H2Client:
    """One cleartext HTTP/2 connection (prior knowledge), driven by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.buffer = EventStreamBuffer()
        self.ended = False  # the response stream ended
        self.terminated = False  # the server closed the connection (GOAWAY or EOF)

    async def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())
        await self.writer.drain()

    async def go_away(self, error_code: h2.errors.ErrorCodes) -> None:
        """Sends GOAWAY as raw bytes: the h2 library would also stop *receiving* after its own
        `close_connection`, which is not what the JS SDK (Node's http2) does."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = 0
        frame.error_code = error_code
        self.writer.write(frame.serialize())
        await self.writer.drain()

    async def subscribe(self, arn: str) -> int:
        body = json.dumps(
            {"ConsumerARN": arn, "ShardId": SHARD, "StartingPosition": {"Type": "LATEST"}}
        ).encode()
        stream_id: int = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":path", "/"),
                (":scheme", "http"),
                (":authority", "localhost"),
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", "Kinesis_20131202.SubscribeToShard"),
                ("content-length", str(len(body))),
            ],
        )
        self.h2.send_data(stream_id, body, end_stream=True)
        await self.flush()
        return stream_id

    async def pump(self) -> list[h2.events.Event]:
        """One read's worth of events (flow-control credit returned at once)."""
        async with asyncio.timeout(READ_TIMEOUT_S):
            data = await self.reader.read(65_536)
        if not data:
            self.terminated = True
            return []
        events = self.h2.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.buffer.add_data(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = True
        await self.flush()
        return events

    async def events_until(self, predicate: Any) -> list[dict[str, Any]]:
        """SubscribeToShardEvent payloads read until `predicate(payloads)` holds."""
        payloads: list[dict[str, Any]] = []
        while not predicate(payloads):
            assert not self.terminated, "the server closed the connection"
            await self.pump()
            messages: list[Any] = list(self.buffer)
            payloads.extend(
                json.loads(message.payload)
                for message in messages
                if message.headers.get(":event-type") == "SubscribeToShardEvent"
            )
        return payloads


async def registered(client: AsyncShoalClient) -> str:
    await client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    summary = await client.call("DescribeStreamSummary", {"StreamName": "s"})
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    consumer = await client.call(
        "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": "h2"}
    )
    arn: str = consumer["Consumer"]["ConsumerARN"]
    return arn


async def test_a_graceful_goaway_lets_the_event_stream_go_on(fanout_node: Node) -> None:
    async with connected_client(fanout_node) as kinesis:
        arn = await registered(kinesis)
        client = H2Client(*await asyncio.open_connection("127.0.0.1", fanout_node.http_port))
        await client.subscribe(arn)
        await client.events_until(lambda payloads: len(payloads) >= 1)
        await client.go_away(h2.errors.ErrorCodes.NO_ERROR)  # as the JS SDK does
        await kinesis.call("PutRecord", {"StreamName": "s", "PartitionKey": "k", "Data": b"x"})
        payloads = await client.events_until(lambda payloads: any(p["Records"] for p in payloads))
        assert [r["Data"] for p in payloads for r in p["Records"]] == ["eA=="]  # b"x", base64
        assert not client.terminated
        client.writer.close()


async def test_an_error_goaway_still_closes_the_connection(fanout_node: Node) -> None:
    async with connected_client(fanout_node) as kinesis:
        arn = await registered(kinesis)
        client = H2Client(*await asyncio.open_connection("127.0.0.1", fanout_node.http_port))
        await client.subscribe(arn)
        await client.events_until(lambda payloads: len(payloads) >= 1)
        await client.go_away(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + READ_TIMEOUT_S
        while not client.terminated:
            assert loop.time() < give_up, "the connection outlived an error GOAWAY"
            try:
                await client.pump()
            except (ConnectionError, h2.exceptions.ProtocolError):
                break
        subscriptions = fanout_node.service.subscriptions if fanout_node.service else None
        assert subscriptions is not None
        while subscriptions.count:
            assert loop.time() < give_up, "the subscription outlived its connection"
            await asyncio.sleep(0.02)
        client.writer.close()


def test_the_patch_is_installed_on_hypercorn() -> None:
    """Start-up check: hypercorn builds the patched protocol for HTTP/2 connections."""
    import hypercorn.protocol

    http_server._install_graceful_goaway()
    assert vars(hypercorn.protocol)["H2Protocol"] is http_server._GracefulGoAwayH2Protocol


async def test_a_reset_stream_frees_the_subscription_at_once(fanout_node: Node) -> None:
    """An h2 subscriber that cancels its stream (RST_STREAM) but keeps the connection: the
    node ends the subscription, freeing its slot and reader task, without waiting for a send
    to fail."""
    async with connected_client(fanout_node) as kinesis:
        arn = await registered(kinesis)
        client = H2Client(*await asyncio.open_connection("127.0.0.1", fanout_node.http_port))
        stream_id = await client.subscribe(arn)
        await client.events_until(lambda payloads: len(payloads) >= 1)
        assert fanout_node.service is not None
        subscriptions = fanout_node.service.subscriptions
        assert subscriptions.count == 1
        client.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        await client.flush()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + READ_TIMEOUT_S
        while subscriptions.count or any(
            t.get_name().startswith("subscription-") for t in asyncio.all_tasks()
        ):
            assert loop.time() < give_up, "the subscription outlived its reset stream"
            await asyncio.sleep(0.02)
        client.writer.close()
