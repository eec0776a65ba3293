"""DeliveryStreamDescription in AWS's shape, built by walking botocore's firehose model.

A destination's description mirrors its configuration member by member, under the model's
Description shapes: members the description has are copied (nested configurations become
nested descriptions: `S3Configuration` -> `S3DestinationDescription`, `S3BackupConfiguration`
-> `S3BackupDescription`), members it lacks (secrets such as an access key) are left out, and
the required members a configuration may omit get AWS's defaults (BufferingHints 5 MiB / 300 s,
UNCOMPRESSED, NoEncryption). The one module of this package that reads botocore's model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.loaders
import botocore.model

from broker.firehose import buffering
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus

_DEFAULTS: dict[str, Any] = {
    "BufferingHints": {
        "SizeInMBs": buffering.DEFAULT_SIZE_MIB,
        "IntervalInSeconds": buffering.DEFAULT_INTERVAL_S,
    },
    "CompressionFormat": "UNCOMPRESSED",
    "EncryptionConfiguration": {"NoEncryptionConfig": "NoEncryption"},
    "CloudWatchLoggingOptions": {"Enabled": False},
}
_EXTENDED_S3_DEFAULTS = {"S3BackupMode": "Disabled"}
_BACKUP_MODE_DEFAULTS = {
    "Redshift": "Disabled",
    "Elasticsearch": "FailedDocumentsOnly",
    "Amazonopensearchservice": "FailedDocumentsOnly",
    "AmazonOpenSearchServerless": "FailedDocumentsOnly",
    "Splunk": "FailedEventsOnly",
    "Snowflake": "FailedDataOnly",
    "Iceberg": "FailedDataOnly",
}


@cache
def _model() -> botocore.model.ServiceModel:
    return botocore.model.ServiceModel(
        botocore.loaders.Loader().load_service_model("firehose", "service-2"), "firehose"
    )


def _shape(name: str) -> botocore.model.Shape:
    return _model().shape_for(name)


def _source_key(member: str, configuration: Mapping[str, Any]) -> str | None:
    for candidate in (
        member,
        member.replace("Description", "Configuration"),
        member.replace("DestinationDescription", "Configuration"),
    ):
        if candidate in configuration:
            return candidate
    return None


def _describe(value: Any, shape: botocore.model.Shape) -> Any:
    if isinstance(shape, botocore.model.StructureShape):
        if not isinstance(value, Mapping):
            return value
        described: dict[str, Any] = {}
        for member, member_shape in shape.members.items():
            key = _source_key(member, value)
            if key is not None and value[key] is not None:
                described[member] = _describe(value[key], member_shape)
            elif member in _DEFAULTS and (
                member in shape.required_members or member == "CloudWatchLoggingOptions"
            ):
                described[member] = copy.deepcopy(_DEFAULTS[member])
        hints = described.get("BufferingHints")
        if isinstance(hints, dict) and "BufferingHints" in shape.members:
            described["BufferingHints"] = {**_DEFAULTS["BufferingHints"], **hints}
        return described
    if isinstance(shape, botocore.model.ListShape):
        return [_describe(item, shape.member) for item in value]
    return value


def destination_description(kind: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    """One DestinationDescription's members for a `kind` destination (no DestinationId)."""
    described: dict[str, Any] = {
        f"{kind}DestinationDescription": _describe(
            configuration, _shape(f"{kind}DestinationDescription")
        )
    }
    backup_default = _BACKUP_MODE_DEFAULTS.get(kind)
    if backup_default is not None:
        described[f"{kind}DestinationDescription"].setdefault("S3BackupMode", backup_default)
    if kind == "ExtendedS3":
        extended = described["ExtendedS3DestinationDescription"]
        for member, default in _EXTENDED_S3_DEFAULTS.items():
            extended.setdefault(member, default)
        described["S3DestinationDescription"] = _describe(
            configuration, _shape("S3DestinationDescription")
        )
    return described


def _timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def delivery_stream_description(meta: DeliveryStreamMeta) -> dict[str, Any]:
    """DescribeDeliveryStream's DeliveryStreamDescription for `meta`."""
    kind, configuration = meta.destination()
    encryption: dict[str, Any] = {"Status": meta.encryption_status.value}
    if meta.encryption_key_type:
        encryption["KeyType"] = meta.encryption_key_type
    if meta.encryption_key_arn:
        encryption["KeyARN"] = meta.encryption_key_arn
    if meta.encryption_failure_type:  # ENABLING_FAILED or DISABLING_FAILED
        encryption["FailureDescription"] = {
            "Type": meta.encryption_failure_type,
            "Details": meta.encryption_failure_details,
        }
    description: dict[str, Any] = {
        "DeliveryStreamName": meta.name,
        "DeliveryStreamARN": meta.arn,
        "DeliveryStreamStatus": meta.status.value,
        "DeliveryStreamEncryptionConfiguration": encryption,
        "DeliveryStreamType": meta.delivery_stream_type,
        "VersionId": str(meta.version_id),
        "CreateTimestamp": _timestamp(meta.created_ms),
        "Destinations": [
            {"DestinationId": meta.destination_id, **destination_description(kind, configuration)}
        ],
        "HasMoreDestinations": False,
    }
    if meta.status is DeliveryStreamStatus.CREATING_FAILED:
        description["FailureDescription"] = {
            "Type": meta.failure_type,
            "Details": meta.failure_details,
        }
    if meta.version_id > 1:
        description["LastUpdateTimestamp"] = _timestamp(meta.updated_ms)
    source = meta.source()
    if source is not None:
        description["Source"] = {
            "KinesisStreamSourceDescription": {
                "KinesisStreamARN": source["KinesisStreamARN"],
                "RoleARN": source["RoleARN"],
                "DeliveryStartTimestamp": _timestamp(meta.created_ms),
            }
        }
    return description
