"""`shoal serve` when it cannot start, or is stopped while starting: one line, no traceback.

Goal: every refused start names the setting at fault and the fix in one `error:` line, exits
non-zero and leaves no process behind; a node waiting for its metadata quorum stops at once on
SIGTERM or SIGINT; logs come as JSON lines when asked. Method: real `shoal serve` processes
against ports held by sockets or by a running node, data directories made unusable (a file, a
read-only tmpfs, another node's directory, a newer format), and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.startup import DATA_DIR_MARKER
from tests.support import REPO, NodeProcess, free_port, serving, wait_until

pytestmark = [pytest.mark.process]

_PORTS = ("grpc_port", "http_port", "raft_port", "metrics_port", "replication_port")


def serve_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a `shoal serve` on free ports; `settings` override (name=value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_DATA_DIR"] = str(data_dir)
    for name in _PORTS:
        env[f"SHOAL_{name.upper()}"] = str(free_port())
    env.update({f"SHOAL_{name.upper()}": value for name, value in settings.items()})
    return env


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused start, after checking there is nothing else to read."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@contextlib.contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        yield


@pytest.mark.parametrize("name", _PORTS)
def test_a_port_in_use_refuses_the_start_naming_the_setting(tmp_path: Path, name: str) -> None:
    env = serve_env(tmp_path / "data")
    port = int(env[f"SHOAL_{name.upper()}"])
    with listening(port):
        line = refused(serve(env))
    assert f"{name} {port} is already in use" in line
    assert f"SHOAL_{name.upper()}" in line


def test_a_second_node_on_a_taken_grpc_port_cannot_split_its_clients(tmp_path: Path) -> None:
    """Without SO_REUSEPORT the kernel cannot hand half the connections to an intruder: the
    second node is refused, and every call still reaches the first."""
    first = NodeProcess(tmp_path / "first")
    first.start()
    try:
        wait_until(lambda: serving(first.endpoint), deadline_s=60, what="first node")
        from broker.client.grpc_client import ShoalClient

        with ShoalClient(first.endpoint) as client:
            client.call("CreateStream", {"StreamName": "only-on-first", "ShardCount": 1})
        env = serve_env(tmp_path / "second", grpc_port=str(first.grpc_port))
        line = refused(serve(env))
        assert f"grpc_port {first.grpc_port} is already in use" in line
        for _ in range(20):  # fresh connections each time: any split would show
            with ShoalClient(first.endpoint) as client:
                names = client.call("ListStreams", {})["StreamNames"]
            assert names == ["only-on-first"]
        # The same for the data directory: the running node holds its RocksDB lock.
        line = refused(serve(serve_env(first.data_dir, node_id="shoal-0")))
        assert "in use by another running node" in line
    finally:
        first.terminate()


def test_unusable_data_directories_are_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert "is not a directory" in refused(serve(serve_env(a_file)))

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / DATA_DIR_MARKER).write_text(
        json.dumps({"v": 1, "node_id": "shoal-7", "metadata_format": 1, "written_by": "x"})
    )
    line = refused(serve(serve_env(theirs, node_id="shoal-1")))
    assert "belongs to node shoal-7, not shoal-1" in line

    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / DATA_DIR_MARKER).write_text(
        json.dumps({"v": 1, "node_id": "shoal-0", "metadata_format": 99, "written_by": "future"})
    )
    line = refused(serve(serve_env(newer)))
    assert "metadata format 99" in line and "run a newer Shoal" in line


def test_a_read_only_data_directory_is_refused(tmp_path: Path) -> None:
    """Root ignores file modes, so a read-only tmpfs stands in for a read-only volume."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        line = refused(serve(serve_env(mount_point)))
        assert "read-only file system" in line and "SHOAL_DATA_DIR" in line
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_quorum_that_never_answers_ends_the_start_with_one_line(tmp_path: Path) -> None:
    for _ in range(3):  # another process on this busy machine may take a port first
        env = serve_env(
            tmp_path / "data",
            peers=f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
            join_timeout_ms="1000",
        )
        started = time.monotonic()
        line = refused(serve(env))
        if "already in use" not in line:
            break
    assert "no metadata quorum leader registered this node within 1 s" in line
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_node_waiting_for_its_quorum_stops_at_once_on_a_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    log_path = tmp_path / "node.log"
    env = serve_env(tmp_path / "data", peers=f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve"], env=env, cwd=REPO, stdout=log, stderr=log
        )
    try:
        wait_until(
            lambda: "node_waiting_for_quorum" in log_path.read_text(),
            deadline_s=30,
            what="the node to wait for its quorum",
        )
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert code == 0, output
    assert took < 5, f"took {took:.1f} s to stop"
    assert "Traceback" not in output
    assert "stopped while waiting for the metadata quorum" in output
    # A node with peers and the development Raft password says so.
    assert "raft_password_default" in output


def test_json_logs_and_unknown_variables(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "node",
        extra_env={"SHOAL_LOG_FORMAT": "json", "SHOAL_RAFT_PASWORD": "typo"},
    )
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=120, what="node to serve")
    finally:
        node.terminate()
    lines = node.log_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "event", "node_id"} <= set(e) for e in events)
    by_event = {event["event"]: event for event in events}
    started = by_event["node_started"]
    assert started["level"] == "info" and started["grpc_port"] == node.grpc_port
    typo = by_event["unknown_setting_variable"]
    assert typo["level"] == "warning"
    assert "did you mean SHOAL_RAFT_PASSWORD?" in typo["detail"]


def test_a_node_whose_master_key_cannot_open_the_data_keys_is_refused(tmp_path: Path) -> None:
    """A node started with another key file than the one that wraps the cluster's data keys
    (each node given its own `shoal encryption rotate-master-key` output, say) would be a
    replica that can neither store nor serve encrypted streams: it refuses to start, naming
    the setting and the fix. The stream is encrypted by an in-process node on the same data
    directory (cheaper than a first process); the refused start is a real `shoal serve`."""
    from broker.clock import ManualClock
    from broker.crypto.master_keys import create_key_file
    from tests.conftest import connected_client, node_config, running_node

    right, wrong = tmp_path / "right" / "keys.json", tmp_path / "wrong" / "keys.json"
    create_key_file(right)
    create_key_file(wrong)
    config = node_config(
        tmp_path / "node",
        settings={"encryption_master_key": "file", "encryption_key_file": right},
    )

    async def wait_for(what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 15  # the file is looked at every second
        while not condition():
            assert time.monotonic() < deadline, f"waited 15 s for {what}"
            await asyncio.sleep(0.05)

    async def encrypt_a_stream() -> None:
        clock = ManualClock(wall_ms=int(time.time() * 1000))
        async with running_node(config, clock) as node, connected_client(node) as client:
            await client.call("CreateStream", {"StreamName": "vault", "ShardCount": 1})
            await client.call(
                "StartStreamEncryption",
                {"StreamName": "vault", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
            )
            # The check keeps running: a key file replaced under the running node is found
            # (readiness and the metric), and putting the cluster's file back heals it.
            assert node.readiness_problem() is None
            original = right.read_bytes()
            right.write_bytes(wrong.read_bytes())
            await wait_for("the wrong key found", lambda: node.master_key_problem is not None)
            problem = node.readiness_problem() or ""
            assert "cannot unwrap the data keys of encrypted stream 'vault'" in problem
            assert "encryption_key_file" in problem
            usable = "kinesis_encryption_master_key_usable 0.0"
            assert usable in node.metrics.exposition()[0].decode()
            right.write_bytes(original)
            await wait_for("the key put back", lambda: node.master_key_problem is None)
            assert "kinesis_encryption_master_key_usable 1.0" in (
                node.metrics.exposition()[0].decode()
            )
            await wait_for("ready again", lambda: node.readiness_problem() is None)

    asyncio.run(encrypt_a_stream())
    env = serve_env(
        config.data_dir,
        node_id=config.node_id,
        grpc_port=str(config.grpc_port),
        raft_port=str(config.raft_port),
        http_port=str(config.http_port),
        encryption_master_key="file",
        encryption_key_file=str(wrong),
    )
    line = refused(serve(env))
    assert "cannot unwrap the data keys of encrypted stream 'vault'" in line
    assert f"encryption_key_file ({str(wrong)!r}) must be the same key file on every node" in line
    assert "local:" in line  # which master key wraps them, never the key itself
