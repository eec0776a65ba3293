"""Per-stream limits and runtime account limits through the public LimitsService, checked by
their effect on the Kinesis API (gRPC); records up to 10 MiB after UpdateMaxRecordSize, on both
doors. One in-process node on a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.client.limits import LimitsClient
from broker.clock import ManualClock
from broker.errors import ShoalError
from broker.node import Node
from broker.streams.throttling import RATE_NAMES
from tests.compat.conftest import boto_client, call
from tests.conftest import connected_client, node_config, running_node
from tests.gateway.test_grpc_api import expect_error, iterator, put

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
LOW = {"ExplicitHashKey": "1"}  # always shard 0


@pytest.fixture
async def node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    """Cluster defaults unlimited (the test config), so every limit here is a stream's own."""
    async with running_node(node_config(tmp_path / "node"), clock) as started:
        yield started


@pytest.fixture
async def client(node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(node) as connected:
        yield connected


@pytest.fixture
def limits_client(node: Node) -> Any:
    with LimitsClient(f"127.0.0.1:{node.grpc_port}") as client:
        yield client


async def blocking(function: Any, *args: Any, **kwargs: Any) -> Any:
    """The limits client is blocking; the node runs on this loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


def records(count: int) -> list[dict[str, Any]]:
    return [{"PartitionKey": "k", "Data": b"x", **LOW} for _ in range(count)]


async def test_a_streams_write_limit_applies_to_it_alone(
    client: AsyncShoalClient, limits_client: Any, clock: ManualClock
) -> None:
    for name in ("limited", "free"):
        await client.call("CreateStream", {"StreamName": name, "ShardCount": 1})
    answer = await blocking(limits_client.update_stream, "limited", {"write_records_per_second": 3})
    assert answer["overrides"] == {"write_records_per_second": 3}
    assert answer["effective"] == dict.fromkeys(RATE_NAMES, 0) | {"write_records_per_second": 3}
    limited = await client.call("PutRecords", {"StreamName": "limited", "Records": records(5)})
    assert limited["FailedRecordCount"] == 2
    assert limited["Records"][4]["ErrorCode"] == "ProvisionedThroughputExceededException"
    assert limited["Records"][4]["ErrorMessage"] == (
        "Rate exceeded for shard shardId-000000000000 in stream limited under account 000000000000."
    )
    free = await client.call("PutRecords", {"StreamName": "free", "Records": records(50)})
    assert free["FailedRecordCount"] == 0
    clock.advance(ms=1_000)
    again = await client.call("PutRecords", {"StreamName": "limited", "Records": records(3)})
    assert again["FailedRecordCount"] == 0
    # Back to the cluster default (unlimited here).
    reset = await blocking(
        limits_client.update_stream, "limited", {}, reset=["write_records_per_second"]
    )
    assert reset["overrides"] == {}
    lifted = await client.call("PutRecords", {"StreamName": "limited", "Records": records(50)})
    assert lifted["FailedRecordCount"] == 0
    assert (await blocking(limits_client.describe_stream, "limited")) == reset


async def test_a_streams_read_limit(client: AsyncShoalClient, limits_client: Any) -> None:
    await client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    await put(client, "s", "k", b"x")
    await blocking(limits_client.update_stream, "s", {"read_calls_per_second": 1})
    token = await iterator(client, "s", "shardId-000000000000")
    token = (await client.call("GetRecords", {"ShardIterator": token}))["NextShardIterator"]
    await expect_error(
        "ProvisionedThroughputExceededException",
        client.call("GetRecords", {"ShardIterator": token}),
    )


async def test_bad_requests_get_kinesis_errors(
    client: AsyncShoalClient, limits_client: Any
) -> None:
    await client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    cases: list[tuple[str, Any]] = [
        ("ResourceNotFoundException", lambda: limits_client.describe_stream("missing")),
        (
            "ResourceNotFoundException",
            lambda: limits_client.update_stream("missing", {"read_calls_per_second": 1}),
        ),
        ("InvalidArgumentException", lambda: limits_client.update_stream("s", {}, reset=["x"])),
        (
            "InvalidArgumentException",
            lambda: limits_client.update_stream(
                "s", {"read_calls_per_second": 1}, reset=["read_calls_per_second"]
            ),
        ),
        (
            "InvalidArgumentException",
            lambda: limits_client.update_stream("s", {"write_bytes_per_second": -1}),
        ),
        ("InvalidArgumentException", lambda: limits_client.update_account(shard_limit=-5)),
    ]
    for name, request in cases:
        with pytest.raises(ShoalError) as caught:
            await blocking(request)
        assert caught.value.code.kinesis_name == name, caught.value


async def test_account_limits_change_at_runtime(
    client: AsyncShoalClient, limits_client: Any
) -> None:
    await client.call("CreateStream", {"StreamName": "one", "ShardCount": 2})
    answer = await blocking(limits_client.update_account, shard_limit=3, on_demand_stream_limit=0)
    assert answer["shard_limit"] == 3
    assert answer["shard_limit_override"] == 3
    assert answer["open_shard_count"] == 2
    limits = await client.call("DescribeLimits", {})
    assert limits["ShardLimit"] == 3
    assert limits["OnDemandStreamCountLimit"] == 0
    error = await expect_error(
        "LimitExceededException",
        client.call("CreateStream", {"StreamName": "two", "ShardCount": 2}),
    )
    assert "Limit: 3." in error.message
    await expect_error(
        "LimitExceededException",
        client.call(
            "CreateStream",
            {"StreamName": "od", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}},
        ),
    )
    await expect_error(
        "LimitExceededException",
        client.call(
            "UpdateShardCount",
            {"StreamName": "one", "TargetShardCount": 4, "ScalingType": "UNIFORM_SCALING"},
        ),
    )
    back = await blocking(limits_client.update_account, reset=["shard_limit"])
    assert back["shard_limit_override"] is None
    assert back["on_demand_stream_limit"] == 0
    await client.call("CreateStream", {"StreamName": "two", "ShardCount": 2})


async def test_records_up_to_10_mib_on_both_doors(
    node: Node, client: AsyncShoalClient, clock: ManualClock
) -> None:
    """UpdateMaxRecordSize to 10 MiB: a record of exactly 10 MiB (key included) goes in and
    comes back over gRPC and over HTTP (JSON, base64: about 13.3 MiB on the wire); one byte
    more is refused, as is a PutRecords over 10 MiB in total."""
    await client.call("CreateStream", {"StreamName": "big", "ShardCount": 1})
    arn = (await client.call("DescribeStreamSummary", {"StreamName": "big"}))[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    too_big = b"z" * (MiB + 1)
    await expect_error(
        "ValidationException",
        client.call("PutRecord", {"StreamName": "big", "PartitionKey": "k", "Data": too_big}),
    )
    await client.call("UpdateMaxRecordSize", {"StreamARN": arn, "MaxRecordSizeInKiB": 10240})
    data = bytes(range(256)) * (10 * MiB // 256 - 1) + b"q" * 255  # 10 MiB - 1 byte
    assert len(data) + 1 == 10 * MiB
    await client.call("PutRecord", {"StreamName": "big", "PartitionKey": "k", "Data": data})
    await expect_error(
        "ValidationException",
        client.call("PutRecord", {"StreamName": "big", "PartitionKey": "k", "Data": data + b"!"}),
    )
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "PutRecords",
            {
                "StreamName": "big",
                "Records": [
                    {"PartitionKey": "k", "Data": data},
                    {"PartitionKey": "k", "Data": b"more"},
                ],
            },
        ),
    )
    kinesis = boto_client(f"http://127.0.0.1:{node.http_port}")
    try:
        written = await call(kinesis.put_record, StreamName="big", PartitionKey="h", Data=data)
        assert written["ShardId"] == "shardId-000000000000"
        batch = await call(
            kinesis.put_records, StreamName="big", Records=[{"PartitionKey": "h", "Data": data}]
        )
        assert batch["FailedRecordCount"] == 0
        token = await iterator(client, "big", "shardId-000000000000")
        seen: list[bytes] = []
        http_token = token
        for _ in range(3):
            answer = await call(kinesis.get_records, ShardIterator=http_token)
            seen += [record["Data"] for record in answer["Records"]]
            http_token = answer["NextShardIterator"]
        over_grpc = await client.call("GetRecords", {"ShardIterator": token, "Limit": 1})
        assert over_grpc["Records"][0]["Data"] == data
    finally:
        kinesis.close()
    assert seen == [data, data, data]
