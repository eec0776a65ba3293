"""Helpers shared by the integration and process tests: ports, deadlines, node processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


LOOPBACK = "127.0.0.1"


# Ports handed to servers come from below the kernel's ephemeral range (32768-60999 on Linux):
# a port the OS picked from that range can be taken by any outgoing connection (a test's own
# gRPC client) before the server binds it. Each test process walks its own stride of the range;
# under pytest-xdist each worker walks only its own slice of it (gw0 the first, gw1 the next,
# ...), so two workers never hand out the same port between its check and the server's bind.


def _worker_port_range(low: int, high: int) -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index = int(worker[2:]) % count
    width = (high - low) // count
    return low + index * width, low + (index + 1) * width


_PORT_RANGE = _worker_port_range(20_000, 32_000)
_next_port = _PORT_RANGE[0] + (os.getpid() * 97) % (_PORT_RANGE[1] - _PORT_RANGE[0])


def framed_replication() -> bool:
    """Do the nodes of this test run replicate over their framed ports? Yes, as a node does
    by default; TEST_REPLICATION_TRANSPORT=grpc runs a suite with the port off (gRPC only)."""
    transport = os.environ.get("TEST_REPLICATION_TRANSPORT", "framed")
    if transport not in ("framed", "grpc"):
        raise ValueError(f"TEST_REPLICATION_TRANSPORT must be framed or grpc, got {transport!r}")
    return transport == "framed"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on `host`, outside the ephemeral range."""
    global _next_port
    span = _PORT_RANGE[1] - _PORT_RANGE[0]
    for _ in range(span):
        port = _next_port
        _next_port = _PORT_RANGE[0] + (_next_port - _PORT_RANGE[0] + 1) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free TCP port below the ephemeral range")


def wait_until(predicate: Callable[[], T], *, deadline_s: float, what: str) -> T:
    """Poll `predicate` until it returns a truthy value; fail after `deadline_s` seconds."""
    give_up = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.05)


def export_code(revision: str, into: Path) -> Path:
    """The `broker` package as it was at `revision` (`git archive`), under `into`: an older
    release's code for upgrade and format tests. Skips the test when the clone lacks the commit."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "broker"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {revision} is not in this clone: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


# Lines of a node log worth showing when a test fails.
_ALARMING = re.compile(r"ERROR|CRITICAL|Traceback|Error:|assert|exited")


class NodeProcess:
    """A `shoal serve` child process on `host` (127.0.0.1 unless told; any 127.x.y.z address
    is on the loopback interface on Linux) with its own data dir and ports.

    `cgroup_procs`, when set, is a cgroup v2 `cgroup.procs` file the process joins before it
    execs the broker (so every socket it opens belongs to that cgroup: the chaos nemesis cuts
    one node's traffic by cgroup, see tests/chaos/network.py). Set it before `start()`."""

    def __init__(
        self, data_dir: Path, *, extra_env: dict[str, str] | None = None, host: str = LOOPBACK
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.grpc_port = free_port(host)
        self.raft_port = free_port(host)
        self.http_port = free_port(host)
        # The framed replication port (broker/rpc/framed.py): on unless the tests run with
        # TEST_REPLICATION_TRANSPORT=grpc or a test sets `framed` itself.
        self.replication_port = free_port(host)
        self.framed = framed_replication()
        self.extra_env = extra_env or {}
        self.cgroup_procs: Path | None = None
        # The working directory `python -m broker` runs from, so the `broker` package there is
        # the one that runs (another version's code, for upgrade tests).
        self.code_dir = REPO
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "SHOAL_DATA_DIR": str(self.data_dir),
            "SHOAL_GRPC_PORT": str(self.grpc_port),
            "SHOAL_RAFT_PORT": str(self.raft_port),
            "SHOAL_HTTP_PORT": str(self.http_port),
            "SHOAL_METRICS_PORT": "0",  # a free port each: nodes on one machine never collide
            "SHOAL_SHARD_WRITE_BYTES_PER_SECOND": "0",
            "SHOAL_SHARD_WRITE_RECORDS_PER_SECOND": "0",
            "SHOAL_SHARD_READ_CALLS_PER_SECOND": "0",
            "SHOAL_SHARD_READ_BYTES_PER_SECOND": "0",
            "SHOAL_STREAM_CREATING_MS": "0",
            "SHOAL_STREAM_UPDATING_MS": "0",
            "SHOAL_STREAM_DELETING_MS": "0",
            **({} if self.host == LOOPBACK else {"SHOAL_HOST": self.host}),
            **self._replication_port_env(),
            **self.extra_env,
        }
        command = [sys.executable, "-m", "broker", "serve"]
        if self.cgroup_procs is not None:
            # Join the cgroup, then exec (same pid): no preexec_fn, which is unsafe in a
            # process with threads (the nemesis restarts nodes from its own thread).
            command = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup_procs)]
            command += [sys.executable, "-m", "broker", "serve"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.code_dir,
        )
        log.close()

    def _replication_port_env(self) -> dict[str, str]:
        """SHOAL_REPLICATION_PORT: this node's free port, or "off" (never the default port,
        which every node on this machine would share). Another version's code (upgrade tests)
        gets nothing: the releases they run predate the port's default (and "off")."""
        if self.code_dir != REPO:
            return {}
        return {"SHOAL_REPLICATION_PORT": str(self.replication_port) if self.framed else "off"}

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def terminate(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def node_host(index: int) -> str:
    """The loopback address of node `index` (0-based) of a `distinct_hosts` cluster."""
    return f"127.0.0.{index + 2}"


class ClusterProcesses:
    """N `shoal serve` processes forming one cluster: every node a voter of the metadata
    quorum (each lists the others' Raft addresses as peers), shards replicated on min(3, N) of
    them. Timing knobs are shortened so failover tests run in seconds.

    All on 127.0.0.1 by default; with `distinct_hosts`, node i listens and advertises itself
    on 127.0.0.(i + 2) (`SHOAL_HOST`), so its traffic can be told apart by address."""

    def __init__(
        self,
        base_dir: Path,
        *,
        size: int = 3,
        extra_env: dict[str, str] | None = None,
        distinct_hosts: bool = False,
    ) -> None:
        assert size >= 1
        assert not distinct_hosts or size <= 250
        self.distinct_hosts = distinct_hosts
        self.nodes = [
            NodeProcess(
                base_dir / f"node-{i + 1}", host=node_host(i) if distinct_hosts else LOOPBACK
            )
            for i in range(size)
        ]
        for i, node in enumerate(self.nodes):
            peers = [other.raft_address for other in self.nodes if other is not node]
            node.extra_env = {
                "SHOAL_NODE_ID": f"node-{i + 1}",
                "SHOAL_PEERS": ",".join(peers),
                "SHOAL_HEARTBEAT_INTERVAL_MS": "100",
                "SHOAL_SESSION_TIMEOUT_MS": "1000",
                "SHOAL_CONTROLLER_PASS_INTERVAL_MS": "50",
                **(extra_env or {}),
            }

    @property
    def endpoints(self) -> list[str]:
        return [node.endpoint for node in self.nodes]

    def node_named(self, node_id: str) -> NodeProcess:
        return self.nodes[int(node_id.rsplit("-", 1)[1]) - 1]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.send_signal(signal.SIGKILL)
        for node in self.nodes:
            if node.process is not None:
                node.process.wait(timeout=30)
                node.process = None

    def logs(self) -> str:
        return "\n".join(f"--- {n.data_dir.name}\n{n.log_text()[-4000:]}" for n in self.nodes)

    def failure_digest(self, *, lines_max: int = 40) -> str:
        """What a failed test's report shows of each node: whether its process is alive, its
        last errors and tracebacks, and the end of its log (CI keeps no temporary files)."""
        parts = []
        for node in self.nodes:
            lines = node.log_text().splitlines()
            code = None if node.process is None else node.process.poll()
            state = "stopped by the test" if node.process is None else f"exited with {code}"
            if code is None and node.process is not None:
                state = "running"
            errors = [i for i, line in enumerate(lines) if _ALARMING.search(line)]
            shown = sorted({*errors[-lines_max:], *range(max(len(lines) - 10, 0), len(lines))})
            body = "\n".join(lines[i][:400] for i in shown)
            parts.append(f"--- {node.data_dir.name} ({node.endpoint}, {state})\n{body}")
        return "\n".join(parts)


def serving(endpoint: str) -> bool:
    """Whether a node answers the public gRPC API at `endpoint` right now."""
    from broker.client.grpc_client import ShoalClient
    from broker.errors import ShoalError

    try:
        with ShoalClient(endpoint, timeout_s=2) as client:
            client.call("ListStreams", {})
        return True
    except ShoalError:
        return False


def read_shard(client: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    """Every record of one shard from TRIM_HORIZON, through a blocking ShoalClient."""
    token = client.call(
        "GetShardIterator",
        {"StreamName": stream, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"},
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    for _ in range(10_000):
        response = client.call("GetRecords", {"ShardIterator": token})
        records += response["Records"]
        token = response.get("NextShardIterator")
        if token is None or (not response["Records"] and response["MillisBehindLatest"] == 0):
            return records
    raise AssertionError("shard did not end")
