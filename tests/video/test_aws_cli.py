"""The AWS CLI v1, unmodified, on the Kinesis Video Streams APIs of an in-process node: the
control plane (`aws kinesisvideo`) and the archive (`aws kinesis-video-archived-media`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from broker.node import Node
from tests.support import REPO
from tests.video.media import h264_mkv
from tests.video.test_media_end_to_end import _upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AWS = REPO / ".venv" / "bin" / "aws"


async def aws(tmp_path: Path, endpoint: str, *args: str) -> Any:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    process = await asyncio.create_subprocess_exec(
        str(AWS),
        *args,
        "--endpoint-url",
        endpoint,
        "--output",
        "json",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return json.loads(out) if out.strip() else None


async def test_aws_cli_kinesisvideo(node: Node, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{node.http_port}"
    created = await aws(
        tmp_path,
        url,
        "kinesisvideo",
        "create-stream",
        "--stream-name",
        "cli-cam",
        "--data-retention-in-hours",
        "24",
        "--tags",
        "site=porch",
    )
    assert created["StreamARN"].startswith("arn:aws:kinesisvideo:us-east-1:")
    listed = await aws(tmp_path, url, "kinesisvideo", "list-streams")
    assert [s["StreamName"] for s in listed["StreamInfoList"]] == ["cli-cam"]
    endpoint = await aws(
        tmp_path,
        url,
        "kinesisvideo",
        "get-data-endpoint",
        "--stream-name",
        "cli-cam",
        "--api-name",
        "LIST_FRAGMENTS",
    )
    assert endpoint["DataEndpoint"] == url
    await _upload(node, "cli-cam", h264_mkv(frames=50))
    fragments = await aws(
        tmp_path,
        url,
        "kinesis-video-archived-media",
        "list-fragments",
        "--stream-name",
        "cli-cam",
    )
    assert len(fragments["Fragments"]) == 2
    channel = await aws(
        tmp_path, url, "kinesisvideo", "create-signaling-channel", "--channel-name", "cli-door"
    )
    endpoints = await aws(
        tmp_path,
        url,
        "kinesisvideo",
        "get-signaling-channel-endpoint",
        "--channel-arn",
        channel["ChannelARN"],
        "--single-master-channel-endpoint-configuration",
        "Protocols=WSS,HTTPS,Role=VIEWER",
    )
    assert {e["Protocol"] for e in endpoints["ResourceEndpointList"]} == {"WSS", "HTTPS"}
