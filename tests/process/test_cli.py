"""The `shoal` command for people: serve, then create, put, read, describe, list, and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, NodeProcess, serving, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]


def shoal(
    endpoint: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "--endpoint", endpoint, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_cli_round_trip(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node")
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=120, what="node to serve")
        created = shoal(node.endpoint, "create-stream", "clicks", "--shard-count", "2")
        assert created.returncode == 0, created.stderr
        assert "created stream clicks" in created.stdout
        put = shoal(node.endpoint, "put", "clicks", "hello world", "--partition-key", "user-1")
        assert put.returncode == 0, put.stderr
        assert put.stdout.startswith("shardId-")
        piped = shoal(node.endpoint, "put", "clicks", "-k", "user-2", stdin=b"from stdin")
        assert piped.returncode == 0, piped.stderr
        read = shoal(node.endpoint, "read", "clicks")
        assert read.returncode == 0, read.stderr
        assert "hello world" in read.stdout and "from stdin" in read.stdout
        described = shoal(node.endpoint, "describe-stream", "clicks")
        assert described.returncode == 0
        assert "shardId-000000000001" in described.stdout and "ACTIVE" in described.stdout
        listed = shoal(node.endpoint, "list-streams")
        assert listed.stdout.split() == ["clicks"]
        missing = shoal(node.endpoint, "describe-stream", "nope")
        assert missing.returncode == 1
        assert "ResourceNotFoundException" in missing.stderr
        bad = shoal(node.endpoint, "create-stream", "bad name")
        assert bad.returncode == 1 and "ValidationException" in bad.stderr
    finally:
        node.terminate()
    unreachable = shoal(node.endpoint, "list-streams")
    assert unreachable.returncode == 2
    assert "cannot reach Shoal" in unreachable.stderr
