"""Fixtures for the Firehose tests: one in-process node for the whole package (started once,
on the package's event loop), whose S3 and Glue are moto's server on loopback and whose Lambda is
`tests.lambda_server`, and boto3 `firehose` clients for it (through both doors' real protocols).

Tests share the node, its manual clock, the S3 server and the Lambda server: each uses delivery
stream, bucket and function names of its own (prefixed by its module), and moves the clock only
forward."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import pytest
import pytest_asyncio

from broker.clock import ManualClock
from broker.node import Node
from tests.lambda_server import LambdaServer
from tests.s3_server import S3Server, running_s3_node, running_s3_server

T = TypeVar("T")
REGION = "us-east-1"
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every coroutine test of this package runs on the package's event loop (the shared
    node's)."""
    package_loop = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if pytest_asyncio.is_async_test(item) and _HERE in Path(str(item.path)).parents:
            item.add_marker(package_loop, append=False)


@pytest.fixture(scope="package")
def clock() -> ManualClock:
    return ManualClock(wall_ms=1_790_000_000_000)


@pytest.fixture(scope="package")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(scope="package")
def lambda_server() -> Iterator[LambdaServer]:
    server = LambdaServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fh_node(
    tmp_path_factory: pytest.TempPathFactory,
    clock: ManualClock,
    s3_server: S3Server,
    lambda_server: LambdaServer,
) -> AsyncIterator[Node]:
    environment = {
        **lambda_server.environment(),
        "AWS_ENDPOINT_URL_GLUE": s3_server.endpoint_url,  # moto serves Glue there too
    }
    data_dir = tmp_path_factory.mktemp("firehose") / "node"
    # The tests move the manual clock up to ten times faster than real time (1 s per 0.1 s
    # poll): on a loaded machine one slow lease renewal can outlast the default 10 s failover
    # in clock time, and a deliverer that loses its lease delivers again from its checkpoint
    # (correct at-least-once, but the tests check exactly-once delivery without failures; the
    # suspected cause of 8 records delivered twice in one full run at load 12).
    async with running_s3_node(
        data_dir, clock, s3_server, environment=environment, firehose_failover_ms=60_000
    ) as node:
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


@pytest.fixture(scope="package")
def firehose(fh_node: Node) -> Iterator[Any]:
    client = firehose_client(f"http://127.0.0.1:{fh_node.http_port}")
    try:
        yield client
    finally:
        client.close()


async def call(function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run one blocking boto3 call off the loop that serves it."""
    return await asyncio.to_thread(function, **kwargs)


def records_read(node: Node) -> int:
    """How many records the node's deliverers have taken into their buffers so far."""
    assert node.firehose is not None
    return node.firehose.deliverers.statistics.records_read


async def wait_read(node: Node, count: int, *, deadline_s: float = 20) -> None:
    """Until the node's deliverers have taken `count` records into their buffers (bounded)."""
    async with asyncio.timeout(deadline_s):
        while records_read(node) < count:  # noqa: ASYNC110  # a counter; no event exists
            await asyncio.sleep(0.02)


async def wait_status(firehose: Any, name: str, status: str, *, deadline_s: float = 20) -> Any:
    """The description once the delivery stream shows `status` (bounded)."""
    async with asyncio.timeout(deadline_s):
        while True:
            described = await call(firehose.describe_delivery_stream, DeliveryStreamName=name)
            description = described["DeliveryStreamDescription"]
            if description["DeliveryStreamStatus"] == status:
                return description
            await asyncio.sleep(0.05)


async def wait_encryption(firehose: Any, name: str, status: str, *, deadline_s: float = 20) -> Any:
    """The description once its DeliveryStreamEncryptionConfiguration shows `status`
    (bounded): Start/StopDeliveryStreamEncryption settle asynchronously, as on AWS."""
    async with asyncio.timeout(deadline_s):
        while True:
            described = await call(firehose.describe_delivery_stream, DeliveryStreamName=name)
            description = described["DeliveryStreamDescription"]
            if description["DeliveryStreamEncryptionConfiguration"]["Status"] == status:
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


async def advance_until(
    clock: ManualClock,
    predicate: Callable[[], Awaitable[bool]],
    *,
    interval_ms: int,
    deadline_s: float = 30,
) -> None:
    """Moves the clock past a buffering interval until `predicate()` holds (bounded). Moving it
    again each round, rather than once, covers a deliverer that had not yet read the records
    (its buffer opens when it reads them) when the clock first moved. Each move is followed by
    real time before the check: a jump longer than the node's session timeout lets the
    controller fence the node until its next heartbeat, so the caller's next request should not
    follow a jump at once."""
    async with asyncio.timeout(deadline_s):
        while True:
            clock.advance(ms=interval_ms + 1_000)
            await asyncio.sleep(0.3)
            if await predicate():
                return


def s3_destination(bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BucketARN": f"arn:aws:s3:::{bucket}",
        **extra,
    }
