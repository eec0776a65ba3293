"""An S3-compatible server on loopback for the tests: moto's server (`moto[server]`, a dev
dependency) in its own process, on a free port.

    server = S3Server.start()
    server.endpoint_url                 # http://127.0.0.1:<port>
    server.environment()                # AWS_ENDPOINT_URL_S3 + credentials + region, for a node
    server.client().create_bucket(Bucket="b")
    server.stop()

Or the `s3_server` fixture below (one server per test module), or `with
running_s3_server()`. Buckets are not cleaned up
between tests of a module: use distinct bucket names.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.conftest import node_config, running_node
from tests.support import LOOPBACK, free_port

ACCESS_KEY = "shoal-test"
SECRET_KEY = "shoal-test-secret"
REGION = "us-east-1"
_START_DEADLINE_S = 60.0  # moto took over 30 s to listen at load 30-40 (parallel run)


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @classmethod
    def start(cls) -> S3Server:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(process=process, port=port)
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto's server exited with {process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
                return server
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto's server did not listen within {_START_DEADLINE_S} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def environment(self) -> dict[str, str]:
        """What a process (or an in-process node) needs to reach this store via boto3."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client_env(self) -> dict[str, str]:
        return self.environment()

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30
            ),
        )

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix` in `bucket`, key -> body."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found[item["Key"]] = body
        return found


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """One server for a `with` block (the backup tests)."""
    server = S3Server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running_s3_node(
    data_dir: Path,
    clock: ManualClock,
    s3_server: S3Server,
    *,
    environment: dict[str, str] | None = None,
    **knobs: int,
) -> AsyncIterator[Node]:
    """An in-process node whose S3 is `s3_server` (its environment set for the block, with
    `environment`'s extra variables), Firehose reconciling every 50 ms, Firehose throughput
    unlimited unless `knobs` say otherwise."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**s3_server.environment(), **(environment or {})}.items():
            patch.setenv(name, value)
        unlimited = {
            "firehose_reconcile_interval_ms": 50,
            "firehose_write_bytes_per_second": 0,
            "firehose_write_records_per_second": 0,
        }
        config = node_config(data_dir, settings=None, **{**unlimited, **knobs})
        async with running_node(config, clock) as node:
            yield node
