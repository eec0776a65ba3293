"""Losing a majority of the voters for good, and forcing a new quorum from the survivor.

Goal (issue 16 item 5): with two of three nodes' disks gone, `shoal recover-quorum` on the
survivor's stopped data directory makes it the only voter; started with no peers it serves
reads and writes again with every record it held (here every acknowledged record: the
followers had caught up before the loss), and a new node joining restores redundancy.
Method: real processes; kill -9 of all three; the command as an operator runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import (
    Producer,
    check_no_loss,
    cluster_status,
    replica_status,
    wait_formed,
)
from tests.support import REPO, ClusterProcesses, NodeProcess, serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_a_survivor_forms_a_new_quorum_and_keeps_its_records(tmp_path: Path) -> None:
    cluster = ClusterProcesses(tmp_path)
    cluster.start()
    joiner: NodeProcess | None = None
    try:
        wait_formed(cluster)
        survivor = cluster.nodes[0]
        with ShoalClient(survivor.endpoint) as client:
            client.call("CreateStream", {"StreamName": "orders", "ShardCount": 2})
        producer = Producer(cluster.endpoints, "orders").start()
        producer.wait_acknowledged(300)
        producer.stop()

        def survivor_caught_up() -> bool:
            ends: dict[int, set[int]] = {}
            for endpoint in cluster.endpoints:
                for replica in replica_status(endpoint).replicas:
                    ends.setdefault(replica.shard_uid, set()).add(replica.log_end)
            return all(len(values) == 1 for values in ends.values())

        wait_until(survivor_caught_up, deadline_s=30, what="every replica caught up")
        for node in cluster.nodes:
            node.kill()

        result = subprocess.run(
            [sys.executable, "-m", "broker", "recover-quorum", "--yes", "--survivors", "node-1"],
            env={
                **os.environ,
                "SHOAL_DATA_DIR": str(survivor.data_dir),
                "SHOAL_NODE_ID": "node-1",
                "SHOAL_RAFT_PORT": str(survivor.raft_port),
            },
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "node-1 is now the only voter" in result.stdout
        assert "nodes fenced: node-2, node-3" in result.stdout
        assert "(their records are lost): (none)" in result.stdout

        survivor.extra_env = {**survivor.extra_env, "SHOAL_PEERS": ""}
        survivor.start()
        wait_until(lambda: serving(survivor.endpoint), deadline_s=60, what="the survivor")

        def led_by_survivor() -> bool:
            shards = [s for s in cluster_status(survivor.endpoint).shards if s.state != "CLOSED"]
            return bool(shards) and all(s.leader == "node-1" for s in shards)

        wait_until(led_by_survivor, deadline_s=60, what="shard leaders on the survivor")

        def nothing_lost() -> bool:
            # A new leader serves reads up to its high watermark, which moves once its first
            # record of the new epoch commits: until then a read may end early.
            try:
                check_no_loss(survivor.endpoint, "orders", producer.acknowledged)
            except AssertionError:
                return False
            return True

        wait_until(nothing_lost, deadline_s=30, what="every acknowledged record on the survivor")
        with ShoalClient(survivor.endpoint) as client:
            client.call("PutRecord", {"StreamName": "orders", "PartitionKey": "k", "Data": b"new"})

        # A new node (a replaced disk gets a new id here) joins as a non-voting member and
        # takes replicas: the shards are redundant again.
        joiner = NodeProcess(tmp_path / "node-4")
        joiner.extra_env = {
            "SHOAL_NODE_ID": "node-4",
            "SHOAL_JOIN": survivor.raft_address,
            "SHOAL_HEARTBEAT_INTERVAL_MS": "100",
            "SHOAL_SESSION_TIMEOUT_MS": "1000",
        }
        joiner.start()
        wait_until(
            lambda: all(
                "node-4" in s.replicas
                for s in cluster_status(survivor.endpoint).shards
                if s.state != "CLOSED" and s.stream_name == "orders"
            ),
            deadline_s=90,
            what="replicas on the new node",
        )
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if joiner is not None:
            joiner.terminate()
        cluster.stop()
