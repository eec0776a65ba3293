"""One in-process `node` per test module (its `clock` a ManualClock shared by the module's
tests, which use distinct application and stream names and run on the module's event loop:
`MODULE_LOOP` in their `pytestmark`), and boto3 clients (kinesis, kinesisanalytics,
kinesisanalyticsv2) for it; retries off, so an error reaches the test as the node sent it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import botocore.config
import pytest
import pytest_asyncio

from broker.clock import ManualClock
from broker.node import Node
from tests.compat.conftest import REGION, boto_client
from tests.conftest import node_config, running_node

# The mark of a module whose tests share its node (they run on the module's event loop).
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(wall_ms=1_790_000_000_000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory, clock: ManualClock) -> AsyncIterator[Node]:
    async with running_node(node_config(tmp_path_factory.mktemp("node")), clock) as started:
        yield started


def analytics_client(
    node: Node, *, parameter_validation: bool = True, service: str = "kinesisanalytics"
) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            parameter_validation=parameter_validation,
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


@pytest.fixture
def analytics(node: Node) -> Iterator[Any]:
    client = analytics_client(node)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def analytics_v2(node: Node) -> Iterator[Any]:
    client = analytics_client(node, service="kinesisanalyticsv2")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kinesis(node: Node) -> Iterator[Any]:
    client = boto_client(f"http://127.0.0.1:{node.http_port}")
    try:
        yield client
    finally:
        client.close()
