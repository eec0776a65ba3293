"""Stream states that AWS clients watch: CREATING, UPDATING and DELETING last as long as the
node's knobs say (here 1 s of virtual time), and operations behave in each state as on AWS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.node import Node
from broker.streams.internal_names import is_internal
from broker.types import ShardUid
from tests.conftest import connected_client, node_config, running_node
from tests.gateway.test_grpc_api import expect_error, iterator, put, read_all

pytestmark = pytest.mark.integration

STATE_MS = 1_000


@pytest.fixture
async def slow_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(
        tmp_path / "node",
        stream_creating_ms=STATE_MS,
        stream_updating_ms=STATE_MS,
        stream_deleting_ms=STATE_MS,
    )
    async with running_node(config, clock) as node:
        yield node


@pytest.fixture
async def slow_client(slow_node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(slow_node) as client:
        yield client


async def status(client: AsyncShoalClient, name: str) -> str:
    summary = await client.call("DescribeStreamSummary", {"StreamName": name})
    value: str = summary["StreamDescriptionSummary"]["StreamStatus"]
    return value


async def test_creating_updating_deleting(
    slow_client: AsyncShoalClient, clock: ManualClock
) -> None:
    client = slow_client
    await client.call("CreateStream", {"StreamName": "s", "ShardCount": 2})
    assert await status(client, "s") == "CREATING"
    await expect_error("ResourceNotFoundException", put(client, "s", "k", b"x"))
    await expect_error(
        "ResourceInUseException",
        client.call(
            "IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 48}
        ),
    )
    clock.advance(ms=STATE_MS)
    assert await status(client, "s") == "ACTIVE"
    await put(client, "s", "k", b"x")

    await client.call(
        "SplitShard",
        {
            "StreamName": "s",
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": str(2**125),
        },
    )
    assert await status(client, "s") == "UPDATING"
    # Reads and writes keep working while UPDATING; a second reshard does not.
    await put(client, "s", "k", b"y")
    await expect_error(
        "ResourceInUseException",
        client.call(
            "MergeShards",
            {
                "StreamName": "s",
                "ShardToMerge": "shardId-000000000002",
                "AdjacentShardToMerge": "shardId-000000000003",
            },
        ),
    )
    await expect_error(
        "ResourceInUseException",
        client.call(
            "UpdateShardCount",
            {"StreamName": "s", "TargetShardCount": 4, "ScalingType": "UNIFORM_SCALING"},
        ),
    )
    clock.advance(ms=STATE_MS)
    assert await status(client, "s") == "ACTIVE"
    await client.call(
        "MergeShards",
        {
            "StreamName": "s",
            "ShardToMerge": "shardId-000000000002",
            "AdjacentShardToMerge": "shardId-000000000003",
        },
    )
    clock.advance(ms=STATE_MS)

    await client.call("DeleteStream", {"StreamName": "s"})
    assert await status(client, "s") == "DELETING"
    await expect_error(
        "ResourceInUseException", client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    )
    clock.advance(ms=STATE_MS)
    await expect_error(
        "ResourceNotFoundException", client.call("DescribeStreamSummary", {"StreamName": "s"})
    )


async def test_recreated_stream_starts_empty_and_old_data_is_reclaimed(
    client: AsyncShoalClient, node: Node
) -> None:
    await client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    await put(client, "s", "k", b"first life")
    await client.call("DeleteStream", {"StreamName": "s"})
    await client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    records, _ = await read_all(client, await iterator(client, "s", "shardId-000000000000"))
    assert records == []
    await put(client, "s", "k", b"second life")
    assert node.service is not None
    ctx = node.service.ctx
    store = ctx.store

    async def stream_shard_uids() -> set[ShardUid]:
        # The node's audit writer creates its internal stream once its first flush comes (200
        # ms of real time after the first call; a loaded machine gets there): not counted.
        internal = {
            shard.uid
            for stream in ctx.image().streams.values()
            if is_internal(stream.name)
            for shard in stream.shards
        }
        return set(await asyncio.to_thread(store.shard_uids)) - internal

    assert len(await stream_shard_uids()) == 2
    await node.housekeeping_pass(ctx)
    assert len(await stream_shard_uids()) == 1
    records, _ = await read_all(client, await iterator(client, "s", "shardId-000000000000"))
    assert [r["Data"] for r in records] == [b"second life"]
