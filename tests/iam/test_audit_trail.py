"""The audit trail with access control off (the default `scripts/serve` runs): control-plane
calls and their failures are recorded with the access key the client signed with, its address,
the action, the resource and the outcome, read back with `shoal audit`; the trail's stream
keeps the configured retention and counts against no account limit. (With access control on:
tests/iam/test_access_control.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit.trail import STREAM_NAME
from broker.clock import ManualClock
from broker.node import Node
from broker.types import StreamName
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

KEY_ID = "AKIAAUDITEXAMPLE0001"


@pytest.fixture
async def node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(tmp_path / "node", settings={"audit_retention_hours": 48})
    async with running_node(config, clock) as started:
        yield started


async def test_calls_are_audited_with_access_control_off(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main

    assert not node.config.access_control
    kinesis: Any = boto_client(f"http://127.0.0.1:{node.http_port}", access_key=KEY_ID)
    await call(kinesis.create_stream, StreamName="ledger", ShardCount=2)
    await call(kinesis.put_record, StreamName="ledger", PartitionKey="k", Data=b"x")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        await call(kinesis.delete_stream, StreamName="missing")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        await call(kinesis.get_shard_iterator, StreamName="missing", ShardId="shardId-0",
                   ShardIteratorType="LATEST")  # fmt: skip

    def shoal(*argv: str) -> str:
        assert main(["--endpoint", f"127.0.0.1:{node.grpc_port}", *argv]) == 0, argv
        return capsys.readouterr().out

    lines = await asyncio.to_thread(shoal, "audit")
    events = {(e["eventName"], e.get("errorCode")): e for e in map(json.loads, lines.splitlines())}
    created = events[("CreateStream", None)]
    assert created["userIdentity"] == {
        "type": "Unknown",
        "accountId": node.config.account_id,
        "accessKeyId": KEY_ID,
    }
    assert created["sourceIPAddress"] == "127.0.0.1"
    assert created["eventSource"] == "kinesis.amazonaws.com"
    assert created["requestParameters"] == {"StreamName": "ledger", "ShardCount": 2}
    assert created["resources"][0]["ARN"].endswith(":stream/ledger")
    failed = events[("DeleteStream", "ResourceNotFoundException")]
    assert failed["resources"][0]["ARN"].endswith(":stream/missing")
    # Data-plane calls, successful or failed, are not events unless audit_data_plane is on.
    assert not [name for name, _ in events if name in ("PutRecord", "GetShardIterator")]
    table = await asyncio.to_thread(shoal, "audit", "--errors", "--table")
    assert "kinesis:DeleteStream" in table and "ResourceNotFoundException" in table
    assert "CreateStream" not in table

    # The trail's stream keeps the configured retention and is nobody's: the account sees
    # only its own stream, in listings and in its limits.
    assert node.service is not None
    trail = node.service.ctx.image().streams[StreamName(STREAM_NAME)]
    assert trail.retention_hours == 48
    assert (await call(kinesis.list_streams))["StreamNames"] == ["ledger"]
    assert (await call(kinesis.describe_limits))["OpenShardCount"] == 2
    kinesis.close()
