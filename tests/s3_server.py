"""A real S3-compatible server on loopback for tests: moto's server, in this process.

    with running_s3_server() as s3:
        s3.create_bucket("backups")
        subprocess.run([...], env={**os.environ, **s3.client_env()})   # boto3 finds it
        s3.client().list_objects_v2(Bucket="backups")

Clients reach it as boto3 reaches AWS: `client_env()` sets `AWS_ENDPOINT_URL_S3` (the standard
per-service endpoint variable), dummy credentials and a region. One server per `with` block,
on a free port; its state lives in memory and goes with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tests.support import free_port


class S3Server:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url

    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
