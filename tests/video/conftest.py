"""One in-process node per test module, for the modules that opt in (starting a node is most
of a short test's cost). Such a module says:

    pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

    @pytest.fixture
    def node(shared_node: Node) -> Node:
        return shared_node

    @pytest.fixture
    def clock(shared_clock: ManualClock) -> ManualClock:
        return shared_clock

and its tests use stream names of their own (the node, its streams and its clock are shared
by every test of the module, in file order)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from broker.clock import ManualClock
from broker.node import Node
from tests.conftest import node_config, running_node
from tests.s3_server import S3Server


@pytest.fixture(scope="module")
def shared_clock() -> ManualClock:
    return ManualClock(wall_ms=1_790_000_000_000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_node(
    tmp_path_factory: pytest.TempPathFactory, shared_clock: ManualClock
) -> AsyncIterator[Node]:
    # Tests advance the shared clock (an HLS URL's 300 s expiry, arrival times a minute
    # apart): a session timeout longer than any advance keeps the controller from fencing
    # the node in between, which would leave the next test's shard without a leader.
    config = node_config(
        tmp_path_factory.mktemp("node"),
        session_timeout_ms=3_600_000,
        absent_node_replace_after_ms=0,
    )
    async with running_node(config, shared_clock) as node:
        yield node


@pytest.fixture(scope="package")
def aws_server() -> Iterator[S3Server]:
    """moto's server for the package (it speaks S3, SNS and SQS on one port): image delivery
    and notifications share it, with bucket, topic and queue names of their own."""
    server = S3Server.start()
    try:
        yield server
    finally:
        server.stop()
