"""`aws firehose` (the AWS CLI v1, unmodified) against a `shoal serve` process delivering to
moto's S3 server: the README's commands, with the endpoint from AWS_ENDPOINT_URL_FIREHOSE."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import S3Server, s3_server  # noqa: F401  (a fixture)
from tests.support import REPO, NodeProcess, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]

AWS = REPO / ".venv" / "bin" / "aws"


@pytest.fixture
def node_process(tmp_path: Path, s3_server: S3Server) -> Iterator[NodeProcess]:  # noqa: F811
    node = NodeProcess(tmp_path / "node", extra_env=s3_server.environment())
    node.start()
    try:
        wait_until(lambda: "AWS API on" in node.log_text(), deadline_s=30, what="the node to serve")
        yield node
    finally:
        node.terminate()


def _aws(tmp_path: Path, endpoint: str, *args: str) -> Any:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ENDPOINT_URL_FIREHOSE": endpoint,
    }
    completed = subprocess.run(
        [str(AWS), "firehose", *args, "--output", "json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if completed.stdout.strip() else None


def test_aws_cli_creates_puts_and_deletes(
    node_process: NodeProcess,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    s3_server.client().create_bucket(Bucket="cli")
    url = f"http://127.0.0.1:{node_process.http_port}"
    destination = {
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BucketARN": "arn:aws:s3:::cli",
        "Prefix": "cli/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
    }
    created = _aws(
        tmp_path,
        url,
        "create-delivery-stream",
        "--delivery-stream-name",
        "cli-stream",
        "--extended-s3-destination-configuration",
        json.dumps(destination),
    )
    assert created["DeliveryStreamARN"].endswith(":deliverystream/cli-stream")
    wait_until(
        lambda: (
            _aws(tmp_path, url, "describe-delivery-stream", "--delivery-stream-name", "cli-stream")[
                "DeliveryStreamDescription"
            ]["DeliveryStreamStatus"]
            == "ACTIVE"
        ),
        deadline_s=30,
        what="ACTIVE",
    )
    put = _aws(
        tmp_path,
        url,
        "put-record",
        "--delivery-stream-name",
        "cli-stream",
        "--record",
        "Data=hello",
    )
    assert put["RecordId"]
    listed = _aws(tmp_path, url, "list-delivery-streams")
    assert listed["DeliveryStreamNames"] == ["cli-stream"]
    objects = wait_until(
        lambda: s3_server.objects("cli", "cli/"), deadline_s=30, what="the object in S3"
    )
    assert list(objects.values()) == [b"hello"]  # CLI v1 base64-encodes the blob itself
    _aws(tmp_path, url, "delete-delivery-stream", "--delivery-stream-name", "cli-stream")
