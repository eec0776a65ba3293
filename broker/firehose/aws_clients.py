"""The AWS services Firehose calls, through boto3 (the one module of Shoal importing it):
objects to S3 or any S3-compatible store (`S3Store`), Lambda Invoke for data
transformation (`LambdaInvoker`), Glue table columns (`GlueCatalog`), and SigV4 signatures of
the requests to OpenSearch (`RequestSigner`).

The standard configuration selects the service, as for any AWS SDK user:
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_LAMBDA` (or `AWS_ENDPOINT_URL`) for an S3-compatible
server or a local Lambda emulator, the usual credential chain (`AWS_ACCESS_KEY_ID`, profiles,
instance roles). With an explicit S3 endpoint, path-style addressing is used (what
S3-compatible servers on a plain host:port expect).

Calls block (boto3 is synchronous): the async callers run them in threads. The client is
created once, on first use, and shared (boto3 clients are thread-safe).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.exceptions


class StoreError(Exception):
    """A call to the store failed. `missing_bucket`: the bucket does not exist (no retry helps);
    otherwise the failure may pass (network, throttling, credentials being rotated)."""

    def __init__(self, message: str, missing_bucket: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.missing_bucket = missing_bucket


class S3Store:
    def __init__(self, *, region: str) -> None:
        self._region = region
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:  # boto3 builds its clients' classes at run time
        with self._lock:
            if self._client is None:
                explicit = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
                    "AWS_ENDPOINT_URL"
                )
                self._client = boto3.session.Session().client(
                    "s3",
                    region_name=self._region,
                    config=botocore.config.Config(
                        s3={"addressing_style": "path" if explicit else "auto"},
                        retries={"mode": "standard", "max_attempts": 2},
                        connect_timeout=5,
                        read_timeout=30,
                    ),
                )
            return self._client

    def put_object(self, *, bucket: str, key: str, body: bytes) -> None:
        try:
            self._s3().put_object(Bucket=bucket, Key=key, Body=body)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise StoreError(
                f"S3 PutObject {bucket}/{key}: {error}", code == "NoSuchBucket"
            ) from error
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise StoreError(f"S3 PutObject {bucket}/{key}: {error}") from error

    def get_object(self, *, bucket: str, key: str) -> bytes:
        """The object's bytes (a staged object read back for a warehouse COPY)."""
        try:
            body = self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as error:
            raise StoreError(f"S3 GetObject {bucket}/{key}: {error}") from error
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise StoreError(f"S3 GetObject {bucket}/{key}: {error}") from error
        assert isinstance(body, bytes)
        return body

    def check_bucket(self, bucket: str) -> None:
        """Returns when the bucket exists and is reachable; raises StoreError otherwise."""
        try:
            self._s3().head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            missing = code in ("404", "NoSuchBucket", "NotFound")
            raise StoreError(f"S3 HeadBucket {bucket}: {error}", missing) from error
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise StoreError(f"S3 HeadBucket {bucket}: {error}") from error


class LambdaError(Exception):
    """An invocation failed: no answer, or the function raised (FunctionError)."""


class LambdaInvoker:
    def __init__(self, *, region: str) -> None:
        self._region = region
        self._client: Any = None
        self._lock = threading.Lock()

    def _lambda(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = boto3.session.Session().client(
                    "lambda",
                    region_name=self._region,
                    config=botocore.config.Config(
                        retries={"mode": "standard", "max_attempts": 1},
                        connect_timeout=5,
                        read_timeout=300,  # a Lambda function may run for minutes
                    ),
                )
            return self._client

    def invoke(self, function: str, payload: bytes) -> bytes:
        """The function's response payload (RequestResponse); LambdaError otherwise."""
        try:
            answer = self._lambda().invoke(
                FunctionName=function, InvocationType="RequestResponse", Payload=payload
            )
            body = answer["Payload"].read()
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            OSError,
        ) as error:
            raise LambdaError(f"Lambda Invoke {function}: {error}") from error
        if answer.get("FunctionError"):
            raise LambdaError(f"Lambda function {function} failed: {body[:1000]!r}")
        assert isinstance(body, bytes)
        return body


class GlueCatalog:
    """Table schemas from the AWS Glue Data Catalog (record format conversion)."""

    def __init__(self, *, region: str) -> None:
        self._region = region
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _glue(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = boto3.session.Session().client(
                    "glue",
                    region_name=region,
                    config=botocore.config.Config(
                        retries={"mode": "standard", "max_attempts": 2},
                        connect_timeout=5,
                        read_timeout=30,
                    ),
                )
            return client

    def columns(
        self, *, database: str, table: str, catalog_id: str | None, region: str | None
    ) -> list[tuple[str, str]]:
        """The table's (column name, Hive type) pairs, partition keys excluded."""
        arguments: dict[str, str] = {"DatabaseName": database, "Name": table}
        if catalog_id:
            arguments["CatalogId"] = catalog_id
        try:
            answer = self._glue(region or self._region).get_table(**arguments)
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            OSError,
        ) as error:
            raise StoreError(f"Glue GetTable {database}.{table}: {error}") from error
        columns = answer["Table"]["StorageDescriptor"]["Columns"]
        return [(str(column["Name"]), str(column["Type"])) for column in columns]


class RequestSigner:
    """Signs HTTP requests with AWS Signature Version 4 (botocore's signer), with the node's
    credentials from the standard chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
    profiles, instance roles), as Firehose signs its requests to OpenSearch Service (`es`)
    and OpenSearch Serverless (`aoss`). Without credentials, requests go unsigned (a
    self-hosted OpenSearch without authentication)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._looked_up = False

    def _current(self) -> Any:
        with self._lock:
            if not self._looked_up:
                self._credentials = boto3.session.Session().get_credentials()
                self._looked_up = True
            return None if self._credentials is None else self._credentials.get_frozen_credentials()

    def sign(
        self,
        *,
        service: str,
        region: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, str]:
        """`headers` with X-Amz-Date, X-Amz-Content-SHA256, Authorization (and
        X-Amz-Security-Token for temporary credentials) added; as given without credentials."""
        credentials = self._current()
        if credentials is None:
            return dict(headers)
        request = botocore.awsrequest.AWSRequest(
            method=method,
            url=url,
            data=body,
            headers={**headers, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()},
        )
        botocore.auth.SigV4Auth(credentials, service, region).add_auth(request)
        return {str(name): str(value) for name, value in request.headers.items()}
