"""Issue 7, point 3: a real Prometheus scraping a running 3-node cluster under a small load, and
every panel of deploy/grafana/shoal-dashboard.json returning data.

The nodes are `shoal serve` processes (tests/support.py's ClusterProcesses), each with its own
`SHOAL_METRICS_PORT`. Per-shard limits are set low so the throttling panels see throttling;
enhanced monitoring is on for the stream so the shard-level panels have series.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from broker.client.grpc_client import AsyncShoalClient
from tests.deploy.prometheus_harness import PrometheusServer, dashboard_queries, substitute
from tests.deploy.test_dashboard import DASHBOARD_PATH, RULES
from tests.deploy.tools import tool
from tests.support import ClusterProcesses, free_port, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STREAM = "dashboard"

# Panels that cannot have data in this setup, with the reason. None so far: throttling is
# provoked by the low limits below, and errors come with it.
EXPECTED_EMPTY: dict[str, str] = {}


class Load:
    """Puts (bursts larger than the shard's write limit) and GetRecords (faster than its read
    call limit) from a thread with its own event loop, until stopped."""

    def __init__(self, endpoints: list[str]) -> None:
        self._endpoints = endpoints
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.puts = 0

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        clients = [AsyncShoalClient(endpoint) for endpoint in self._endpoints]
        try:
            await self._setup(clients[0])
            iterators: dict[str, str] = {}
            turn = 0
            while not self._stop.is_set():
                client = clients[turn % len(clients)]
                turn += 1
                try:
                    records = [
                        {"Data": b"d" * 200, "PartitionKey": f"key-{turn}-{i}"} for i in range(300)
                    ]
                    await client.call("PutRecords", {"StreamName": STREAM, "Records": records})
                    self.puts += 1
                    await self._read(client, iterators)
                except Exception:  # throttled or a node busy: the load goes on
                    pass
                await asyncio.sleep(0.1)
        finally:
            for client in clients:
                await client.close()

    async def _setup(self, client: AsyncShoalClient) -> None:
        for _ in range(300):  # until the cluster has formed and takes the stream
            try:
                await client.call("CreateStream", {"StreamName": STREAM, "ShardCount": 2})
                break
            except Exception:
                await asyncio.sleep(0.2)
        for _ in range(300):
            try:
                await client.call(
                    "EnableEnhancedMonitoring",
                    {"StreamName": STREAM, "ShardLevelMetrics": ["ALL"]},
                )
                return
            except Exception:
                await asyncio.sleep(0.2)

    async def _read(self, client: AsyncShoalClient, iterators: dict[str, str]) -> None:
        for shard_id in ("shardId-000000000000", "shardId-000000000001"):
            iterator = iterators.get(shard_id)
            if iterator is None:
                answer = await client.call(
                    "GetShardIterator",
                    {
                        "StreamName": STREAM,
                        "ShardId": shard_id,
                        "ShardIteratorType": "TRIM_HORIZON",
                    },
                )
                iterator = answer["ShardIterator"]
            for _ in range(3):  # three calls in a row: over the read call limit of 2/s
                try:
                    got = await client.call("GetRecords", {"ShardIterator": iterator, "Limit": 50})
                except Exception:
                    continue
                iterator = got.get("NextShardIterator", iterator)
            iterators[shard_id] = iterator


def test_every_panel_returns_data_from_a_live_cluster(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    cluster = ClusterProcesses(tmp_path)
    metrics_ports = []
    for node in cluster.nodes:
        port = free_port()
        metrics_ports.append(port)
        node.extra_env = {
            **node.extra_env,
            "SHOAL_METRICS_PORT": str(port),
            "SHOAL_SHARD_WRITE_RECORDS_PER_SECOND": "1000",
            "SHOAL_SHARD_READ_CALLS_PER_SECOND": "2",
        }
    queries = dashboard_queries(json.loads(DASHBOARD_PATH.read_text()))
    cluster.start()
    try:
        targets = [f"127.0.0.1:{port}" for port in metrics_ports]
        with (
            Load(cluster.endpoints) as load,
            PrometheusServer(prometheus, tmp_path, targets, rule_files=[RULES]) as prom,
        ):
            prom.wait_for_targets_up(deadline_s=60)
            wait_until(lambda: load.puts > 0, deadline_s=90, what="the first PutRecords")
            missing: list[str] = []

            def all_have_data() -> bool:
                missing[:] = [
                    query.name
                    for query in queries
                    if query.name not in EXPECTED_EMPTY
                    and not prom.query_range(
                        substitute(query.expr, rate_interval="10s"), seconds=30
                    )
                ]
                return not missing

            try:
                wait_until(all_have_data, deadline_s=60, what="every panel query to return data")
            except AssertionError as error:
                raise AssertionError(f"panels without data: {missing}") from error
            broken = {name: h for name, h in prom.rule_health().items() if h[0] == "err"}
            assert not broken, broken
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
