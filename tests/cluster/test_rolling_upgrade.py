"""A rolling upgrade and a rollback with two versions of Shoal in one cluster.

Goal (issue 16 item 6): nodes of the previous version and of this one share a cluster while
it rolls, in both directions, and no acknowledged record is lost or doubled in place. Method:
the previous version's code (`PREVIOUS`, the last commit before issue 16's work; no metadata
format changed since) exported from git into a temporary directory and run with the same
interpreter; three of its nodes take writes, each is stopped (SIGTERM, as a StatefulSet rolls)
and started again on this version, then one is rolled back.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import Producer, check_no_loss, wait_formed
from tests.support import REPO, ClusterProcesses, NodeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PREVIOUS = "1faf780"  # main before issue 16 (cli: one broker/cli/ package ...)


def export_previous(into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS, "broker"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    tar_path = into / "previous.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into


def run_from(node: NodeProcess, code: Path) -> None:
    """Starts `node` with the code in `code`."""
    node.code_dir = code
    node.start()


def test_roll_forward_and_back_under_load(tmp_path: Path) -> None:
    previous = export_previous(tmp_path / "previous")
    (tmp_path / "data").mkdir()
    cluster = ClusterProcesses(tmp_path / "data")
    producer: Producer | None = None
    try:
        for node in cluster.nodes:
            run_from(node, previous)
        wait_formed(cluster)
        with ShoalClient(cluster.endpoints[0]) as client:
            client.call("CreateStream", {"StreamName": "orders", "ShardCount": 3})
        producer = Producer(cluster.endpoints, "orders").start()
        producer.wait_acknowledged(200)
        # Upgrade, highest ordinal first, as a StatefulSet rolls.
        for node in reversed(cluster.nodes):
            node.terminate()
            run_from(node, REPO)
            wait_formed(cluster)
            producer.wait_acknowledged(len(producer.acknowledged) + 100)
        # Roll one back.
        cluster.nodes[2].terminate()
        run_from(cluster.nodes[2], previous)
        wait_formed(cluster)
        producer.wait_acknowledged(len(producer.acknowledged) + 100)
        producer.stop()
        assert not producer.lost
        for endpoint in cluster.endpoints:
            check_no_loss(endpoint, "orders", producer.acknowledged)
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if producer is not None and producer._thread is not None and producer._thread.is_alive():
            producer.stop()
        cluster.stop()
