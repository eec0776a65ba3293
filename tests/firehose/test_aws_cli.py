"""`aws firehose` (the AWS CLI v1, unmodified, in its own process) against the package's node
delivering to moto's S3 server: the README's commands, with the endpoint from
AWS_ENDPOINT_URL_FIREHOSE."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.s3_server import S3Server
from tests.support import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AWS = REPO / ".venv" / "bin" / "aws"


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


async def test_aws_cli_creates_puts_and_deletes(
    fh_node: Node, s3_server: S3Server, clock: ManualClock, tmp_path: Path
) -> None:
    s3_server.client().create_bucket(Bucket="cli")
    url = f"http://127.0.0.1:{fh_node.http_port}"
    destination = {
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BucketARN": "arn:aws:s3:::cli",
        "Prefix": "cli/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
    }

    async def aws(*args: str) -> Any:
        return await asyncio.to_thread(_aws, tmp_path, url, *args)

    created = await aws(
        "create-delivery-stream",
        "--delivery-stream-name",
        "aws-cli-stream",
        "--extended-s3-destination-configuration",
        json.dumps(destination),
    )
    assert created["DeliveryStreamARN"].endswith(":deliverystream/aws-cli-stream")
    async with asyncio.timeout(30):
        while True:
            described = await aws(
                "describe-delivery-stream", "--delivery-stream-name", "aws-cli-stream"
            )
            if described["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.1)
    put = await aws(
        "put-record", "--delivery-stream-name", "aws-cli-stream", "--record", "Data=hello"
    )
    assert put["RecordId"]
    listed = await aws("list-delivery-streams")
    assert "aws-cli-stream" in listed["DeliveryStreamNames"]
    async with asyncio.timeout(30):
        while not (objects := await asyncio.to_thread(s3_server.objects, "cli", "cli/")):
            clock.advance(ms=1_000)  # the node's clock: the 1 s interval passes
            await asyncio.sleep(0.1)
    assert list(objects.values()) == [b"hello"]  # CLI v1 base64-encodes the blob itself
    await aws("delete-delivery-stream", "--delivery-stream-name", "aws-cli-stream")
