"""Fixtures for the Firehose tests: an in-process node whose S3 is moto's server on loopback,
and boto3 `firehose` clients for it (through both doors' real protocols)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.conftest import node_config, running_node
from tests.s3_server import S3Server, s3_server  # noqa: F401  (a fixture)

T = TypeVar("T")
REGION = "us-east-1"


@pytest.fixture
async def fh_node(
    tmp_path: Path,
    clock: ManualClock,
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Node]:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    config = node_config(
        tmp_path / "node",
        firehose_reconcile_interval_ms=50,
        firehose_write_bytes_per_second=0,
        firehose_write_records_per_second=0,
    )
    async with running_node(config, clock) as node:
        yield node


def firehose_client(endpoint_url: str, **config: Any) -> Any:
    return boto3.client(
        "firehose",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
            **config,
        ),
    )


@pytest.fixture
def firehose(fh_node: Node) -> Iterator[Any]:
    client = firehose_client(f"http://127.0.0.1:{fh_node.http_port}")
    try:
        yield client
    finally:
        client.close()


async def call(function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run one blocking boto3 call off the loop that serves it."""
    return await asyncio.to_thread(function, **kwargs)


async def wait_status(firehose: Any, name: str, status: str, *, deadline_s: float = 20) -> Any:
    """The description once the delivery stream shows `status` (bounded)."""
    async with asyncio.timeout(deadline_s):
        while True:
            described = await call(firehose.describe_delivery_stream, DeliveryStreamName=name)
            description = described["DeliveryStreamDescription"]
            if description["DeliveryStreamStatus"] == status:
                return description
            await asyncio.sleep(0.05)


async def wait_gone(firehose: Any, name: str, *, deadline_s: float = 20) -> None:
    """Returns once DescribeDeliveryStream answers ResourceNotFoundException (bounded)."""
    async with asyncio.timeout(deadline_s):
        while True:
            try:
                await call(firehose.describe_delivery_stream, DeliveryStreamName=name)
            except botocore.exceptions.ClientError as error:
                if error.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
                return
            await asyncio.sleep(0.05)


async def eventually(predicate: Callable[[], bool], *, deadline_s: float = 20) -> None:
    """Returns once `predicate()` holds (bounded)."""
    async with asyncio.timeout(deadline_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


def s3_destination(bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BucketARN": f"arn:aws:s3:::{bucket}",
        **extra,
    }
