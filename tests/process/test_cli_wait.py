"""The CLI's `--wait`, `--version`, readable delete, and `read --follow` across reshards.

Method: a real node with visible CREATING/UPDATING/DELETING states (hundreds of ms), driven by
the `shoal` command as a person would; `read --follow` runs as a process reading stdout while
a split and a merge happen under it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.process.test_cli import shoal
from tests.support import REPO, NodeProcess, serving, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]
FOLLOW = ("read", "s", "--follow")


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert result.stdout.strip() == "shoal 0.1.0"


def test_wait_follow_and_delete(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "node",
        extra_env={
            "SHOAL_STREAM_CREATING_MS": "400",
            "SHOAL_STREAM_UPDATING_MS": "1500",
            "SHOAL_STREAM_DELETING_MS": "400",
        },
    )
    node.start()
    follower: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=120, what="node to serve")
        created = shoal(node.endpoint, "create-stream", "s", "--shard-count", "1", "--wait")
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip() == "created stream s (ACTIVE)"
        assert "ACTIVE" in shoal(node.endpoint, "describe-stream", "s").stdout

        follower = subprocess.Popen(
            [sys.executable, "-m", "broker", "--endpoint", node.endpoint, *FOLLOW],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        lines: list[str] = []
        threading.Thread(
            target=lambda: lines.extend(iter(follower.stdout.readline, "")),  # type: ignore[union-attr]
            daemon=True,
        ).start()

        def put(value: str) -> None:
            result = shoal(node.endpoint, "put", "s", value, "-k", "key")
            assert result.returncode == 0, result.stderr

        put("before-split")
        # A split that cannot finish within its timeout says so and exits 1.
        late = shoal(
            node.endpoint, "split", "s", "shardId-000000000000", "--wait", "--timeout", "0.2"
        )
        assert late.returncode == 1
        assert "error: splitting shardId-000000000000: still UPDATING" in late.stderr
        wait_until(
            lambda: "ACTIVE" in shoal(node.endpoint, "describe-stream", "s").stdout,
            deadline_s=30,
            what="the split to finish",
        )
        put("after-split")
        merged = shoal(
            node.endpoint,
            "merge",
            "s",
            "shardId-000000000001",
            "shardId-000000000002",
            "--wait",
        )
        assert merged.returncode == 0, merged.stderr
        assert "merged shardId-000000000001 and shardId-000000000002" in merged.stdout
        put("after-merge")
        scaled = shoal(node.endpoint, "update-shard-count", "s", "2", "--wait")
        assert scaled.returncode == 0, scaled.stderr
        assert scaled.stdout.strip() == "resharded s: 2 open shards"
        put("after-scaling")

        wanted = ["before-split", "after-split", "after-merge", "after-scaling"]
        wait_until(
            lambda: [line.split()[-1] for line in list(lines)] == wanted,
            deadline_s=30,
            what=f"the follower to print {wanted} in order (printed {lines})",
        )
        assert follower.poll() is None, "read --follow must not stop at a closed shard"

        deleting = shoal(node.endpoint, "delete-stream", "s")
        assert deleting.returncode == 0
        assert deleting.stdout.strip().startswith("deleting stream s (DELETING")
        shoal(node.endpoint, "create-stream", "t", "--wait")
        deleted = shoal(node.endpoint, "delete-stream", "t", "--wait")
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout.strip() == "deleted stream t"
        missing = shoal(node.endpoint, "describe-stream", "t")
        assert "ResourceNotFoundException" in missing.stderr
    finally:
        if follower is not None:
            follower.kill()
            follower.wait()
            assert follower.stdout is not None
            follower.stdout.close()
        node.terminate()
