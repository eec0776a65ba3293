"""The S3 side of enhanced snapshots: what a savepoint prefix holds, and its export's copy.

ImportSnapshot reads the listing of the source prefix (a Flink savepoint is a `_metadata`
file and the state files beside it); ExportSnapshot copies those objects, server side, to
the destination prefix, once the source still lists the same objects (the same digest of
keys, sizes and ETags). S3 is reached as for reference data (`reference_data.s3_client`: the
standard `AWS_ENDPOINT_URL_S3`, path-style with an explicit endpoint). Blocking: the service
calls these in a thread. Errors are answered as the `error` member the operation records as
FAILED, never raised: an unreadable source is a failed operation, as on AWS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from broker.analytics import reference_data

SAVEPOINT_MARKER = "_metadata"  # every Flink savepoint's metadata file


def _listing(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", ()))
    return objects


def _digest(objects: list[dict[str, Any]]) -> str:
    lines = sorted(f"{item['Key']}\t{item['Size']}\t{item.get('ETag', '')}" for item in objects)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _error(location: str, error: Exception) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        return f"{location}: {code or error}"
    return f"{location}: {error}"


def inspect(prefix_location: Mapping[str, Any], *, region: str) -> dict[str, Any]:
    """What the savepoint under `prefix_location` (BucketARN, KeyPrefix) holds: `objects`,
    `size_bytes` and `digest`, or `error`."""
    prefix = str(prefix_location["KeyPrefix"])
    try:
        bucket = reference_data.bucket_of(str(prefix_location["BucketARN"]))
    except reference_data.ReferenceDataError as error:
        return {"error": str(error)}
    location = f"s3://{bucket}/{prefix}"
    client = reference_data.s3_client(region)
    try:
        objects = _listing(client, bucket, prefix)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        return {"error": _error(location, error)}
    finally:
        client.close()
    if not any(item["Key"].rsplit("/", 1)[-1] == SAVEPOINT_MARKER for item in objects):
        return {"error": f"{location} holds no Flink savepoint (no {SAVEPOINT_MARKER} file)."}
    return {
        "objects": len(objects),
        "size_bytes": sum(int(item["Size"]) for item in objects),
        "digest": _digest(objects),
    }


def export(
    source: Mapping[str, Any], destination: Mapping[str, Any], digest: str, *, region: str
) -> dict[str, Any]:
    """Copies the savepoint under `source` to `destination` (both S3PrefixLocation): each
    object's key below the source prefix, under the destination prefix. `copied` objects, or
    `error` (the source changed since the import, or S3 refused)."""
    try:
        source_bucket = reference_data.bucket_of(str(source["BucketARN"]))
        target_bucket = reference_data.bucket_of(str(destination["BucketARN"]))
    except reference_data.ReferenceDataError as error:
        return {"error": str(error)}
    source_prefix = str(source["KeyPrefix"])
    target_prefix = str(destination["KeyPrefix"]).rstrip("/")
    client = reference_data.s3_client(region)
    try:
        objects = _listing(client, source_bucket, source_prefix)
        if _digest(objects) != digest:
            return {
                "error": f"s3://{source_bucket}/{source_prefix} no longer holds the imported "
                "savepoint (its objects changed)."
            }
        for item in objects:
            relative = item["Key"][len(source_prefix) :].lstrip("/")
            client.copy_object(
                Bucket=target_bucket,
                Key=f"{target_prefix}/{relative}",
                CopySource={"Bucket": source_bucket, "Key": item["Key"]},
            )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        return {"error": _error(f"s3://{target_bucket}/{target_prefix}", error)}
    finally:
        client.close()
    return {"copied": len(objects)}
