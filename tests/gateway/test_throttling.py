"""Per-shard throughput limits through the public gRPC API, on the node's manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.caller import Caller
from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from tests.conftest import connected_client, node_config, running_node
from tests.gateway.test_grpc_api import expect_error, iterator, put

pytestmark = pytest.mark.integration


@pytest.fixture
async def limited(tmp_path: Path, clock: ManualClock) -> AsyncIterator[AsyncShoalClient]:
    config = node_config(
        tmp_path / "node",
        settings={
            "shard_write_records_per_second": 10,
            "shard_write_bytes_per_second": 1024 * 1024,
            "shard_read_calls_per_second": 5,
            "shard_read_bytes_per_second": 2 * 1024 * 1024,
        },
    )
    async with running_node(config, clock) as node, connected_client(node) as client:
        await client.call("CreateStream", {"StreamName": "s", "ShardCount": 2})
        yield client


async def test_put_records_fails_throttled_records_one_by_one(
    limited: AsyncShoalClient, clock: ManualClock
) -> None:
    low = {"ExplicitHashKey": "1"}
    entries = [{"PartitionKey": "k", "Data": b"x", **low} for _ in range(15)]
    response = await limited.call("PutRecords", {"StreamName": "s", "Records": entries})
    assert response["FailedRecordCount"] == 5
    failed = [r for r in response["Records"] if "ErrorCode" in r]
    assert all(r["ErrorCode"] == "ProvisionedThroughputExceededException" for r in failed)
    assert failed[0]["ErrorMessage"] == (
        "Rate exceeded for shard shardId-000000000000 in stream s under account 000000000000."
    )
    # The other shard has its own budget.
    high = await limited.call(
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": b"x", "ExplicitHashKey": str(2**127)},
    )
    assert high["ShardId"] == "shardId-000000000001"
    await expect_error(
        "ProvisionedThroughputExceededException",
        limited.call("PutRecord", {"StreamName": "s", "PartitionKey": "k", "Data": b"x", **low}),
    )
    clock.advance(ms=1_000)
    again = await limited.call("PutRecords", {"StreamName": "s", "Records": entries[:10]})
    assert again["FailedRecordCount"] == 0


async def test_get_records_calls_are_limited(limited: AsyncShoalClient, clock: ManualClock) -> None:
    await put(limited, "s", "k", b"x")
    token = await iterator(limited, "s", "shardId-000000000000")
    for _ in range(5):
        token = (await limited.call("GetRecords", {"ShardIterator": token}))["NextShardIterator"]
    refused = await expect_error(
        "ProvisionedThroughputExceededException",
        limited.call("GetRecords", {"ShardIterator": token}),
    )
    # AWS words GetRecords' refusal its own way (service/throughput.py).
    assert refused.message == "Rate exceeded for Shard - 000000000000/s/shardId-000000000000"
    clock.advance(ms=200)
    await limited.call("GetRecords", {"ShardIterator": token})
    for _ in range(5):
        await iterator(limited, "s", "shardId-000000000001")
    refused = await expect_error(
        "ProvisionedThroughputExceededException", iterator(limited, "s", "shardId-000000000001")
    )
    assert refused.message == (
        "Rate exceeded for shard shardId-000000000001 in stream s under account 000000000000."
    )


async def test_a_throttled_record_names_its_callers_account(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The answer of a put is made while its records are written, on a callback of the log
    writer (service/records.py `_Answer`): a throttled record's refusal still names the
    caller's account, not the node's (the caller is a context variable of the request)."""
    config = node_config(tmp_path / "node", settings={"shard_write_records_per_second": 10})
    caller = Caller(region="us-east-1", account_id="111111111111", door="grpc")
    async with running_node(config, clock) as node:
        service = node.service
        assert service is not None
        await service.call("CreateStream", {"StreamName": "s", "ShardCount": 1}, caller)
        entries = [{"PartitionKey": "k", "Data": b"x"} for _ in range(15)]
        response = await service.call("PutRecords", {"StreamName": "s", "Records": entries}, caller)
    assert response["FailedRecordCount"] == 5
    failed = [r for r in response["Records"] if "ErrorCode" in r]
    assert {r["ErrorMessage"] for r in failed} == {
        "Rate exceeded for shard shardId-000000000000 in stream s under account 111111111111."
    }
