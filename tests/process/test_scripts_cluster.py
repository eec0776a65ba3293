"""`scripts/cluster`, as the README tells a person to use it: kill one node, watch writes move.

Goal: the survivors keep running (and serving writes) when one node dies, the script says which
node died and how to start it again, and SIGTERM (or Ctrl-C) stops every node and the script.
Method: the real script in a temporary directory on free ports; kill -9 of one node process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from functools import partial
from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from broker.errors import ShoalError
from tests.cluster.helpers import formed
from tests.support import REPO, serving, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]


def port_bases(kinds: int, nodes: int) -> list[int]:
    """Base ports whose next `nodes` ports are free on 127.0.0.1, one base per kind."""
    bases: list[int] = []
    candidate = 24_000 + (os.getpid() * 37) % 6_000
    while len(bases) < kinds:
        candidate += 10
        try:
            for port in range(candidate + 1, candidate + nodes + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        bases.append(candidate)
    return bases


def cluster_pids(data_dir: Path) -> dict[str, int]:
    """node id -> pid of the `shoal serve` processes using `data_dir`."""
    found = subprocess.run(
        ["pgrep", "-a", "-f", "--", f"--data-dir {data_dir}/"], capture_output=True, text=True
    )
    pids = {}
    for line in found.stdout.splitlines():
        pid, *argv = line.split()
        if "serve" in argv and "--node-id" in argv:
            pids[argv[argv.index("--node-id") + 1]] = int(pid)
    return pids


def test_one_node_dying_leaves_the_others_serving(tmp_path: Path) -> None:
    grpc, http, raft, metrics, replication = port_bases(5, 3)
    data_dir = tmp_path / "cluster"
    output = tmp_path / "script.out"
    endpoints = [f"127.0.0.1:{grpc + n}" for n in (1, 2, 3)]
    with output.open("wb") as out:
        script = subprocess.Popen(
            [
                "scripts/cluster",
                "--dir",
                str(data_dir),
                "--ports",
                f"{grpc},{http},{raft},{metrics},{replication}",
                "--heartbeat-interval-ms",
                "100",
                "--session-timeout-ms",
                "1000",
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the cleanup below reaches every node
        )
    try:
        wait_until(
            lambda: all(serving(e) for e in endpoints), deadline_s=180, what="three nodes serving"
        )
        # Serving is not yet registered ACTIVE: a stream created while a node is not ACTIVE
        # starts on fewer replicas (tests/cluster/test_first_epoch_failover.py covers losing
        # the leader of such a set at once); this test is about a three-replica stream losing
        # one of them.
        wait_until(partial(formed, endpoints[0], 3), deadline_s=120, what="three nodes ACTIVE")
        with ShoalClient(endpoints[0]) as client:
            client.call("CreateStream", {"StreamName": "s", "ShardCount": 2})
        os.kill(cluster_pids(data_dir)["node-2"], signal.SIGKILL)
        wait_until(
            lambda: "node-2 exited" in output.read_text(),
            deadline_s=30,
            what="the script to notice",
        )
        text = output.read_text()
        assert "2 still running" in text and "start it again with:" in text
        assert script.poll() is None, "the script must keep the survivors"
        assert set(cluster_pids(data_dir)) == {"node-1", "node-3"}

        def put_through_survivors() -> bool:
            try:
                for endpoint in (endpoints[0], endpoints[2]):
                    with ShoalClient(endpoint, timeout_s=5) as client:
                        for key in ("a", "b", "c", "d"):  # both shards
                            client.call(
                                "PutRecord", {"StreamName": "s", "PartitionKey": key, "Data": b"x"}
                            )
                return True
            except ShoalError:
                return False

        try:  # failover takes about a second; a loaded machine may need much longer
            wait_until(put_through_survivors, deadline_s=90, what="writes through the survivors")
        except AssertionError:
            for n in (1, 3):
                print(f"--- node-{n}", (data_dir / f"node-{n}.log").read_text()[-3000:])
            raise
        script.send_signal(signal.SIGTERM)
        try:  # each node's stop is bounded (limits.node_stop_timeout_ms: 30 s)
            assert script.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            for n in (1, 3):
                print(f"--- node-{n}", (data_dir / f"node-{n}.log").read_text()[-3000:])
            raise
        assert "stopping the cluster" in output.read_text()
        assert cluster_pids(data_dir) == {}
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        for pid in cluster_pids(data_dir).values():
            os.kill(pid, signal.SIGKILL)
