"""Fixtures: an in-process node on 127.0.0.1 with a manual clock, and clients for it."""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import settings

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.config import Config, Knobs
from broker.node import Node
from tests import fast_tier, process_leaks
from tests.support import ClusterProcesses, framed_replication, free_port

process_leaks.mark_session()  # before any test or fixture starts a process
fast_tier.install()  # a test starting a node process must be marked (tests/fast_tier.py)

# Property tests assert behaviour, never speed: Hypothesis' 200 ms per-example deadline fails
# examples on a loaded shared machine (test_namespaces at load ~34), so it is off everywhere.
# The fast tier tries fewer examples (`fast_tier.examples`; `pytest_configure` loads
# "shoal-fast" there).
settings.register_profile("shoal", deadline=None)
settings.load_profile("shoal")

# Files whose tests share fixtures of package scope: each package runs whole on one worker.
_PACKAGES_RUN_WHOLE = ("firehose", "video")
# A single-voter test node's Raft heartbeat (`node_config`).
_ALONE_RAFT_HEARTBEAT_MS = 10
# After its summary, the run has this long to exit before every thread's stack is printed.
_EXIT_DEADLINE_S = 60


def pytest_configure(config: pytest.Config) -> None:
    """In the fast tier, property tests without their own count try fewer examples too."""
    fast_tier.configure(config)
    if fast_tier.selected():
        settings.register_profile(
            "shoal-fast",
            parent=settings.get_profile("shoal"),
            max_examples=fast_tier.examples(fast_tier.DEFAULT_EXAMPLES),
        )
        settings.load_profile("shoal-fast")


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Any:
    """Set up first, torn down last: fails the session (an error at the last test's teardown,
    also under pytest-xdist) when a process a test or fixture started is still running after
    every fixture stopped what it started, and kills it, so that it cannot keep holding
    pytest's output pipe (a CI step then never ends), its ports or its directories."""
    yield
    left = process_leaks.wait_gone(deadline_s=10)
    if left:
        process_leaks.kill(left)
        lines = "\n".join(f"  pid {p.pid}: {p.command}" for p in left)
        raise AssertionError(
            f"{len(left)} processes started by the tests outlived the session (killed now):\n"
            f"{lines}"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (`scripts/test`'s default): every
    file that starts node processes (`process` or `cluster` markers) runs on one worker, in
    order, so at most one multi-node cluster runs at a time, while the other worker runs the
    in-process tests. A file (a package, for those in `_PACKAGES_RUN_WHOLE`) is never split,
    so module and package fixtures start once. Without pytest-xdist nothing changes."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    tests_dir = Path(__file__).parent
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(Path(str(item.path)), []).append(item)
    for path, file_items in by_file.items():
        relative = path.relative_to(tests_dir) if path.is_relative_to(tests_dir) else path
        if any(
            item.get_closest_marker(m)
            for item in file_items
            for m in fast_tier.NODE_PROCESS_MARKERS
        ):
            group = "node-processes"
        elif relative.parts[0] in _PACKAGES_RUN_WHOLE:
            group = relative.parts[0]
        else:
            group = relative.as_posix()
        for item in file_items:
            item.add_marker(pytest.mark.xdist_group(group))


def node_config(data_dir: Path, *, settings: dict[str, Any] | None = None, **knobs: int) -> Config:
    """A test node: free ports, state timers 0, per-shard throughput unlimited unless a test
    sets `settings` (Config fields) or knobs. A single voter's Raft heartbeat is 10 ms: it
    elects itself after 40-140 ms instead of pysyncobj's 0.4-1.4 s (every test node start
    waited for that, with no one to hear from)."""
    defaults: dict[str, Any] = {
        "shard_write_bytes_per_second": 0,
        "shard_write_records_per_second": 0,
        "shard_read_calls_per_second": 0,
        "shard_read_bytes_per_second": 0,
    }
    return Config(
        node_id="test-0",
        data_dir=data_dir,
        grpc_port=free_port(),
        raft_port=free_port(),
        http_port=free_port(),
        metrics_port=0,
        # Never the default port, which nodes of parallel tests would share.
        replication_port=free_port() if framed_replication() else None,
        **{**defaults, **(settings or {})},
        knobs=dataclasses.replace(
            Knobs(
                stream_creating_ms=0,
                stream_updating_ms=0,
                stream_deleting_ms=0,
                raft_heartbeat_ms=_heartbeat_ms(settings or {}),
            ),
            **knobs,
        ),
    )


def _heartbeat_ms(settings: dict[str, Any]) -> int:
    """10 ms for a node alone (no one to miss its heartbeats); the default with other voters."""
    alone = not settings.get("peers") and not settings.get("join")
    return _ALONE_RAFT_HEARTBEAT_MS if alone else Knobs().raft_heartbeat_ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_ms=1_790_000_000_000)


@contextlib.asynccontextmanager
async def running_node(config: Config, clock: ManualClock) -> AsyncIterator[Node]:
    """An in-process node for the block, stopped on the way out."""
    node = Node(config, clock=clock)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@contextlib.asynccontextmanager
async def connected_client(node: Node) -> AsyncIterator[AsyncShoalClient]:
    """A native gRPC client of `node` for the block."""
    client = AsyncShoalClient(f"127.0.0.1:{node.grpc_port}")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    async with running_node(node_config(tmp_path / "node"), clock) as started:
        yield started


@pytest.fixture
async def client(node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(node) as connected:
        yield connected


def shared_node_fixtures() -> tuple[Any, Any, Any]:
    """`clock`, `node` and `client` fixtures of module scope: one in-process node for a test
    module whose tests use distinct names, on the module's event loop. The module assigns them
    (`clock, node, client = shared_node_fixtures()`) and runs its tests on that loop:
    `pytestmark = [..., pytest.mark.asyncio(loop_scope="module")]`."""

    @pytest.fixture(scope="module", name="clock")
    def shared_clock() -> ManualClock:
        return ManualClock(wall_ms=1_790_000_000_000)

    @pytest_asyncio.fixture(scope="module", loop_scope="module", name="node")
    async def shared_node(
        tmp_path_factory: pytest.TempPathFactory, clock: ManualClock
    ) -> AsyncIterator[Node]:
        config = node_config(tmp_path_factory.mktemp("shared") / "node")
        async with running_node(config, clock) as started:
            yield started

    @pytest_asyncio.fixture(loop_scope="module", name="client")
    async def shared_client(node: Node) -> AsyncIterator[AsyncShoalClient]:
        async with connected_client(node) as connected:
            yield connected

    return shared_clock, shared_node, shared_client


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The run never hangs after its summary: if the interpreter has not exited
    `_EXIT_DEADLINE_S` after pytest is done (a thread or an exit handler that a failed test
    left waiting for something that will never come), every thread's stack goes to stderr
    and the process exits with status 1 instead of holding CI until its own time limit."""
    faulthandler.dump_traceback_later(_EXIT_DEADLINE_S, exit=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Tells the fast tier's guard which test runs (its setup, call and teardown)."""
    fast_tier.running(item)
    try:
        return (yield)
    finally:
        fast_tier.running(None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran node processes shows each node's state and last errors."""
    report = yield
    if report.failed:
        clusters = [
            value
            for value in getattr(item, "funcargs", {}).values()
            if isinstance(value, ClusterProcesses)
        ]
        for cluster in clusters:
            report.sections.append((f"node logs ({call.when})", cluster.failure_digest()))
    return report
