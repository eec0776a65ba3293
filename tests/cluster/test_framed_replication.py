"""Replication over the framed port (broker/rpc/framed.py) in a real 3-node cluster, with one
node that has the port off, as during a rolling upgrade or while an operator turns it on.

Goal: the two nodes with `replication_port` send each other their Append/AppendAck over it,
and reach the third (which advertises none) over the gRPC stream, which it also uses towards
them; a kill -9 of a shard leader loses no acknowledged record, and the restarted node
reconnects and catches up. Method: `ClusterProcesses` with SHOAL_REPLICATION_PORT on two
nodes and "off" on the third, a producer thread through the survivors, every shard read back
through every node. The other process suites run with the port on every node (the default),
or off on every node with TEST_REPLICATION_TRANSPORT=grpc (tests/support.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from broker.meta.metadata_format import REPLICATION_ADDRESS_LEVEL
from tests.cluster.helpers import (
    Producer,
    check_no_loss,
    cluster_status,
    formed,
    replica_status,
    wait_formed,
    wait_shards_led,
)
from tests.support import ClusterProcesses, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CONNECTED = "replication_frames_connected"


def _agree(cluster: ClusterProcesses) -> bool:
    views: dict[int, set[tuple[int, int]]] = {}
    for node in cluster.nodes:
        try:
            replicas = replica_status(node.endpoint).replicas
        except Exception:  # a restarted node's API not listening yet
            return False
        for state in replicas:
            views.setdefault(state.shard_uid, set()).add((state.log_end, state.high_watermark))
    return bool(views) and all(len(v) == 1 for v in views.values())


def test_framed_and_grpc_peers_replicate_and_survive_a_kill_9(tmp_path: Path) -> None:
    cluster = ClusterProcesses(tmp_path)
    framed, plain = cluster.nodes[:2], cluster.nodes[2]
    for node in cluster.nodes:
        node.framed = node is not plain  # whatever the test run's mode
    producer: Producer | None = None
    before_kill: Producer | None = None
    cluster.start()
    try:
        wait_formed(cluster)
        assert cluster_status(cluster.endpoints[0]).metadata_format >= REPLICATION_ADDRESS_LEVEL
        with ShoalClient(cluster.endpoints[0]) as client:
            client.call("CreateStream", {"StreamName": "frames", "ShardCount": 3})
        leaders = wait_shards_led(cluster.endpoints[0], "frames")
        producer = Producer(cluster.endpoints, "frames").start()
        producer.wait_acknowledged(100)
        # Each node with the port dials the other's; nobody dials the node without one.
        for node in framed:
            other = next(n for n in framed if n is not node)
            assert f"{other.host}:{other.replication_port}" in node.log_text(), node.log_text()
        assert CONNECTED not in plain.log_text()
        # kill -9 a framed node leading a shard; the writes go on through the others.
        victim = next(cluster.node_named(name) for name in leaders.values() if name != "node-3")
        survivors = [n.endpoint for n in cluster.nodes if n is not victim]
        producer.stop()
        before_kill = producer
        producer = Producer(survivors, "frames", name="after-kill").start()
        victim.kill()
        producer.wait_acknowledged(100)
        victim.start()
        wait_until(lambda: formed(survivors[0], 3), deadline_s=60, what="restarted node ACTIVE")
        producer.wait_acknowledged(len(producer.acknowledged) + 100)
        producer.stop()
        wait_until(lambda: _agree(cluster), deadline_s=60, what="every replica caught up")
        assert not producer.lost and not before_kill.lost
        acknowledged = {**before_kill.acknowledged, **producer.acknowledged}
        for endpoint in cluster.endpoints:
            check_no_loss(endpoint, "frames", acknowledged)
        assert victim.log_text().count(CONNECTED) >= 2  # before the kill, and after
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if producer is not None:
            producer.stop()
        cluster.stop()
