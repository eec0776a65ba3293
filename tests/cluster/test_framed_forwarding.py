"""Forwarded appends over the framed replication connection (broker/rpc/framed.py) in a real
cluster where one node runs the release before them, as during a rolling upgrade.

Goal: the two nodes of this version forward each other's parts over their framed connection
and the older node's over gRPC (its ACCEPT has no flag, so it is never sent an APPEND frame,
which it would refuse by closing the replication connection), and it forwards to them over
gRPC as it always did; every record of a 4-shard stream put through every node is
acknowledged once and readable through every node. Method: `ClusterProcesses` with the
previous commit's code (`PREVIOUS`, exported from git) on node-1, a producer thread through
each node (most parts of each call are forwarded), then each node's log checked for a refused
framed connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import Producer, check_no_loss, wait_formed, wait_shards_led
from tests.support import ClusterProcesses, export_code

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PREVIOUS = "5956f27"  # main before forwarded appends rode the framed connection
REFUSED = "replication_frames_refused"


def test_a_mixed_version_cluster_forwards_every_part(tmp_path: Path) -> None:
    previous = export_code(PREVIOUS, tmp_path / "previous")
    (tmp_path / "data").mkdir()
    cluster = ClusterProcesses(tmp_path / "data")
    if not cluster.nodes[0].framed:
        pytest.skip("the framed replication port is off in this run (TEST_REPLICATION_TRANSPORT)")
    cluster.nodes[0].code_dir = previous
    producers: list[Producer] = []
    try:
        cluster.start()
        wait_formed(cluster)
        with ShoalClient(cluster.endpoints[0]) as client:
            client.call("CreateStream", {"StreamName": "orders", "ShardCount": 4})
        leaders = wait_shards_led(cluster.endpoints[0], "orders")
        assert len(set(leaders.values())) >= 2  # parts go between nodes
        producers = [
            Producer([endpoint], "orders", name=f"p{i}", batch_size=50).start()
            for i, endpoint in enumerate(cluster.endpoints)
        ]
        for producer in producers:
            producer.wait_acknowledged(500)
        acknowledged: dict[bytes, tuple[str, str]] = {}
        for producer in producers:
            producer.stop()
            assert not producer.lost
            acknowledged.update(producer.acknowledged)
        for endpoint in cluster.endpoints:
            check_no_loss(endpoint, "orders", acknowledged)
        for node in cluster.nodes:
            assert REFUSED not in node.log_text(), node.log_text()[-3000:]
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        for producer in producers:
            producer.stop()
        cluster.stop()
