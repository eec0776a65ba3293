"""Listen on every interface, advertise one address: a pod's setup, on loopback.

Goal (issue 16 item 2): with `listen_host = 0.0.0.0` and `host` set to the address peers dial
(a pod's DNS name), the cluster forms over the advertised addresses while a client on
127.0.0.1 (what `kubectl port-forward` and `kubectl exec ... shoal ...` use) reaches every
node, and writes through any of them are forwarded to the shard leaders.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import cluster_status
from tests.process.test_cli import shoal
from tests.support import NodeProcess, free_port, node_host, serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_advertised_addresses_and_localhost_clients(tmp_path: Path) -> None:
    nodes = [NodeProcess(tmp_path / f"node-{i}") for i in range(3)]
    for node in nodes:  # ports free on every interface, since each listens on 0.0.0.0
        node.grpc_port, node.http_port, node.raft_port = free_port(), free_port(), free_port()
    for i, node in enumerate(nodes):
        node.extra_env = {
            "SHOAL_NODE_ID": f"node-{i}",
            "SHOAL_HOST": node_host(i),
            "SHOAL_LISTEN_HOST": "0.0.0.0",
            "SHOAL_PEERS": ",".join(
                f"{node_host(j)}:{other.raft_port}" for j, other in enumerate(nodes) if j != i
            ),
            "SHOAL_HEARTBEAT_INTERVAL_MS": "100",
            "SHOAL_SESSION_TIMEOUT_MS": "1000",
        }
        node.start()
    local = [f"127.0.0.1:{node.grpc_port}" for node in nodes]
    try:
        wait_until(lambda: all(serving(e) for e in local), deadline_s=90, what="three nodes")
        wait_until(
            lambda: len(cluster_status(local[0]).nodes) == 3, deadline_s=60, what="registered"
        )
        seen = {n.node_id: n.api_address for n in cluster_status(local[0]).nodes}
        assert seen == {
            f"node-{i}": f"{node_host(i)}:{node.grpc_port}" for i, node in enumerate(nodes)
        }
        assert serving(seen["node-2"])  # the advertised address answers too
        created = shoal(local[1], "create-stream", "s", "--shard-count", "3", "--wait")
        assert created.returncode == 0, created.stderr
        with ShoalClient(local[1]) as client:  # leaders on all three: most puts forwarded
            for key in range(30):
                client.call(
                    "PutRecord", {"StreamName": "s", "PartitionKey": str(key), "Data": b"x"}
                )
        read = shoal(local[2], "read", "s")
        assert read.returncode == 0, read.stderr
        assert len(read.stdout.splitlines()) == 30
    finally:
        for node in nodes:
            node.terminate()
