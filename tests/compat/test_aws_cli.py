"""The AWS CLI v1, unmodified, against a `shoal serve` process.

Goal: the commands a user types from the README work against a real node process, with the
endpoint given both as `--endpoint-url` and as `AWS_ENDPOINT_URL_KINESIS`. CLI v1 base64-encodes
`--data` itself (CLI v2 needs `--cli-binary-format raw-in-base64-out` for the same command).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, NodeProcess, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]

AWS = REPO / ".venv" / "bin" / "aws"
_COMMAND_TIMEOUT_S = 60


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "node")
    node.start()
    try:
        wait_until(lambda: "AWS API on" in node.log_text(), deadline_s=30, what="the node to serve")
        yield node
    finally:
        node.terminate()


def aws(
    tmp_path: Path, *args: str, endpoint: str | None = None, env: dict[str, str] | None = None
) -> Any:
    """Run one `aws kinesis ...` command and return its JSON output (None when empty)."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # no ~/.aws of the machine running the tests
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        **(env or {}),
    }
    # CLI v1 has no pager (so no `--no-cli-pager`, which is a v2 flag).
    command = [str(AWS), "kinesis", *args, "--output", "json"]
    if endpoint is not None:
        command += ["--endpoint-url", endpoint]
    completed = subprocess.run(
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if completed.stdout.strip() else None


def test_aws_cli_v1_round_trip(node_process: NodeProcess, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{node_process.http_port}"
    aws(tmp_path, "create-stream", "--stream-name", "cli", "--shard-count", "1", endpoint=url)
    summary = aws(tmp_path, "describe-stream-summary", "--stream-name", "cli", endpoint=url)
    assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    put = aws(
        tmp_path,
        "put-record",
        "--stream-name",
        "cli",
        "--partition-key",
        "k",
        "--data",
        "hello from the cli",
        endpoint=url,
    )
    assert put["ShardId"] == "shardId-000000000000"
    # The same node through the environment variable instead of the flag.
    by_env = {"AWS_ENDPOINT_URL_KINESIS": url}
    iterator = aws(
        tmp_path,
        "get-shard-iterator",
        "--stream-name",
        "cli",
        "--shard-id",
        put["ShardId"],
        "--shard-iterator-type",
        "TRIM_HORIZON",
        env=by_env,
    )["ShardIterator"]
    records = aws(tmp_path, "get-records", "--shard-iterator", iterator, env=by_env)["Records"]
    assert [base64.b64decode(r["Data"]) for r in records] == [b"hello from the cli"]
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    assert aws(tmp_path, "list-streams", env=by_env)["StreamNames"] == ["cli"]
    aws(tmp_path, "delete-stream", "--stream-name", "cli", endpoint=url)
    assert aws(tmp_path, "list-streams", endpoint=url)["StreamNames"] == []
