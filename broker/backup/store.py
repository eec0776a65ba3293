"""Where a backup's objects live: a directory, or an S3-compatible bucket through boto3.

`open_store("s3://bucket/prefix")` or `open_store("/path")`. S3 is reached with boto3's
standard configuration (credentials, region, and `AWS_ENDPOINT_URL_S3` for an S3-compatible
server such as SeaweedFS, MinIO or moto), so the same command works against AWS and on-premises
stores. Keys are `/`-separated; an object is written whole (a directory store writes a
temporary file, fsyncs and renames it), so a reader never sees half an object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol


class BackupStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The object, or None when there is none."""
        ...

    def describe(self) -> str: ...


class DirectoryStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    def put(self, key: str, data: bytes) -> None:
        path = self._root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def get(self, key: str) -> bytes | None:
        try:
            return (self._root / key).read_bytes()
        except FileNotFoundError:
            return None

    def describe(self) -> str:
        return str(self._root)


class S3Store:
    def __init__(self, bucket: str, prefix: str, *, client: Any | None = None) -> None:
        if client is None:
            import boto3  # only S3 backups need it

            client = boto3.client("s3")
        self._s3 = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def put(self, key: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes | None:
        try:
            answer = self._s3.get_object(Bucket=self._bucket, Key=self._key(key))
        except self._s3.exceptions.NoSuchKey:
            return None
        body: bytes = answer["Body"].read()
        return body

    def describe(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"


def open_store(location: str) -> BackupStore:
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{location!r}: an S3 location is s3://BUCKET[/PREFIX]")
        return S3Store(bucket, prefix)
    return DirectoryStore(Path(location))
