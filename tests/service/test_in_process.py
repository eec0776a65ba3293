"""Internal streams and the node's own clients (broker/streams/internal_names.py,
broker/service/in_process.py), against an in-process node.

Goal: a service of the node (a deliverer, a SQL application) can keep data in an internal
stream that no outside caller sees or touches, and consume it with the KCL-style worker whose
leases go through the metadata quorum without a network hop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import boto3
import botocore.exceptions
import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.client.worker import (
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
    Worker,
    WorkerConfig,
)
from broker.consumers.leases import LeaseError, RenewLease
from broker.errors import ErrorCode, ShoalError
from broker.node import Node
from broker.service.in_process import LocalKinesis, LocalLeaseClient
from broker.streams.internal_names import internal_stream_name

pytestmark = pytest.mark.integration

INTERNAL = internal_stream_name("firehose", "orders-to-s3")


async def _wait_for(predicate: Callable[[], bool], *, deadline_s: float, what: str) -> None:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def _boto3(node: Node) -> object:
    return boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="dummy",
        aws_secret_access_key="dummy",
    )


async def test_outside_callers_neither_see_nor_touch_internal_streams(
    node: Node, client: AsyncShoalClient
) -> None:
    assert node.service is not None
    local = LocalKinesis(node.service)
    await local.call("CreateStream", {"StreamName": INTERNAL, "ShardCount": 1})
    await local.call("CreateStream", {"StreamName": "public", "ShardCount": 1})

    listed = await client.call("ListStreams", {})
    assert listed["StreamNames"] == ["public"]
    for request in (
        {"StreamName": INTERNAL},
        {"StreamARN": f"arn:aws:kinesis:us-east-1:000000000000:stream/{INTERNAL}"},
    ):
        with pytest.raises(ShoalError) as refused:
            await client.call("DescribeStreamSummary", request)
        assert refused.value.code is ErrorCode.RESOURCE_NOT_FOUND
        assert INTERNAL in refused.value.message
    with pytest.raises(ShoalError) as refused:
        await client.call("PutRecord", {"StreamName": INTERNAL, "PartitionKey": "k", "Data": b"x"})
    assert refused.value.code is ErrorCode.RESOURCE_NOT_FOUND
    with pytest.raises(ShoalError) as refused:
        await client.call("CreateStream", {"StreamName": "__shoal.mine", "ShardCount": 1})
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT

    kinesis = _boto3(node)
    boto_listed = await asyncio.to_thread(kinesis.list_streams)  # type: ignore[attr-defined]
    assert boto_listed["StreamNames"] == ["public"]
    with pytest.raises(botocore.exceptions.ClientError) as http_refused:
        await asyncio.to_thread(
            kinesis.describe_stream_summary,  # type: ignore[attr-defined]
            StreamName=INTERNAL,
        )
    assert http_refused.value.response["Error"]["Code"] == "ResourceNotFoundException"


class _Collector:
    """Records every user record's data; checkpoints each batch and the shard's end."""

    def __init__(self, seen: list[bytes]) -> None:
        self._seen = seen

    async def initialize(self, initialization_input: InitializationInput) -> None:
        return None

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        self._seen.extend(record.data for record in process_records_input.records)
        await process_records_input.checkpointer.checkpoint()

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        return None

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        await shutdown_requested_input.checkpointer.checkpoint()


async def test_a_worker_inside_the_node_consumes_an_internal_stream(node: Node) -> None:
    assert node.service is not None
    local = LocalKinesis(node.service)
    await local.call("CreateStream", {"StreamName": INTERNAL, "ShardCount": 2})
    sent = [f"record-{i}".encode() for i in range(50)]
    await local.call(
        "PutRecords",
        {
            "StreamName": INTERNAL,
            "Records": [{"PartitionKey": str(i), "Data": data} for i, data in enumerate(sent)],
        },
    )
    leases = LocalLeaseClient(node.service.ctx.metadata, node.clock)
    seen: list[bytes] = []
    worker = Worker(
        application="deliverer",
        stream_name=INTERNAL,
        processor_factory=lambda: _Collector(seen),
        lease_client=leases,
        kinesis=local,
        config=WorkerConfig(
            worker_id="node-worker",
            failover_ms=2_000,
            lease_take_interval_ms=100,
            polling_idle_interval_ms=20,
            shard_sync_interval_ms=200,
        ),
    )
    run = asyncio.create_task(worker.run())
    try:
        await _wait_for(lambda: len(seen) >= len(sent), deadline_s=15, what="every record")
        assert sorted(seen) == sorted(sent)
        listed = await leases.list_leases(application="deliverer", stream_name=INTERNAL)
        assert len(listed) == 2
        assert {lease.lease_owner for lease in listed} == {"node-worker"}
        assert await leases.list_applications() == ("deliverer",)
    finally:
        async with asyncio.timeout(15):
            await worker.shutdown()
            await run

    stale = await leases.renew(
        RenewLease(
            application="deliverer",
            stream_name=INTERNAL,
            lease_key=listed[0].lease_key,
            owner="node-worker",
            expected_counter=listed[0].lease_counter - 1,
        )
    )
    assert isinstance(stale, LeaseError)
