"""Reference data from S3: the rows of an application's in-application reference tables.

DiscoverInputSchema's S3Configuration reads an object through `read_object` too.

A reference data source names an S3 object (`BucketARN`, `FileKey`) and its schema (the same
`RecordFormat` and `RecordColumns` as an input's). KDA reads the object when the application
starts and again on each UpdateApplication of a running application; so does the runner (it
rebuilds on both), through this module.

S3 is reached through boto3 with the standard configuration, as every AWS SDK user does:
`AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) for an S3-compatible server, path-style
addressing with an explicit endpoint, the usual credential chain. The read blocks: the runner
calls it in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from broker import arns
from broker.analytics import messages
from broker.analytics.records import RecordError, RecordParser, Row

# KDA's limit on a reference data object (Kinesis Data Analytics developer guide, "Limits").
REFERENCE_OBJECT_BYTES_MAX = 1024 * 1024 * 1024


class ReferenceDataError(Exception):
    """The object could not be read or does not match its schema (named in the message)."""


def bucket_of(bucket_arn: str) -> str:
    bucket = arns.s3_bucket(bucket_arn)
    if bucket is None:
        raise ReferenceDataError(messages.not_a_bucket_arn(bucket_arn=bucket_arn))
    return bucket


def s3_client(region: str) -> Any:
    explicit = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.session.Session().client(
        "s3",
        region_name=region,
        config=botocore.config.Config(
            s3={"addressing_style": "path" if explicit else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def parse_rows(data: bytes, schema: Mapping[str, Any]) -> list[Row]:
    """The table's rows: a CSV object's lines, or a JSON object's records (one a line)."""
    parser = RecordParser(schema)
    rows: list[Row] = []
    try:
        if parser.format == "JSON":
            for line in data.splitlines():
                if line.strip():
                    rows.extend(parser.rows(line))
        else:
            rows.extend(parser.rows(data))
    except RecordError as error:
        raise ReferenceDataError(messages.reference_object_schema_mismatch(error=error)) from error
    return rows


def load(described: Mapping[str, Any], *, region: str) -> list[Row]:
    """The rows of one ReferenceDataSourceDescription's object."""
    source = described["S3ReferenceDataSourceDescription"]
    data = read_object(str(source["BucketARN"]), str(source["FileKey"]), region=region)
    return parse_rows(data, described["ReferenceSchema"])


def read_object(bucket_arn: str, key: str, *, region: str) -> bytes:
    """One S3 object's bytes (reference data, or DiscoverInputSchema's S3Configuration)."""
    bucket = bucket_of(bucket_arn)
    client = s3_client(region)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        if int(response.get("ContentLength", 0)) > REFERENCE_OBJECT_BYTES_MAX:
            raise ReferenceDataError(messages.reference_object_too_large(bucket=bucket, key=key))
        data = response["Body"].read()
    except botocore.exceptions.BotoCoreError as error:
        raise ReferenceDataError(
            messages.reference_object_unreadable(bucket=bucket, key=key, error=error)
        ) from error
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise ReferenceDataError(
            messages.reference_object_unreadable(bucket=bucket, key=key, error=code or error)
        ) from error
    finally:
        client.close()
    assert isinstance(data, bytes)
    return data
