"""Destination configurations: which one a CreateDeliveryStream names, how UpdateDestination
merges into it, and the checks Firehose makes on them. Pure (AWS-shaped dicts in and out).

A delivery stream has exactly one destination. The deprecated S3 destination is kept as the
ExtendedS3 configuration it is a subset of (AWS describes it both ways). UpdateDestination
merges the given parameters into the current configuration when the destination type is the
same and replaces it when it changes (AWS's rule); nested `S3Update` / `S3BackupUpdate` become
`S3Configuration` / `S3BackupConfiguration`.

Shoal delivers to ExtendedS3/S3, HttpEndpoint, Redshift (staged to S3, then COPY into
PostgreSQL: `copy_command.py`), OpenSearch and Splunk (`indexers.py`, untested against the real
products), Iceberg (`iceberg_tables.py`, tables routed by `iceberg_routing.py`, inserts, upserts and
deletes on UniqueKeys); Snowflake is accepted and
validated, and its buffers go to the S3 backup.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from broker import arns
from broker.errors import ErrorCode, ShoalError
from broker.firehose import (
    copy_command,
    iceberg_routing,
    indexers,
    messages,
    object_keys,
    partition_keys,
    processing,
)

DELIVERED_KINDS = ("ExtendedS3", "HttpEndpoint", "Redshift", "Iceberg", *indexers.KINDS)
# The COPY that reads the staged objects cannot read these (AWS's rule for Redshift).
_REDSHIFT_REFUSED_COMPRESSION = ("ZIP", "Snappy", "HADOOP_SNAPPY")
_CONFIGURATION = "DestinationConfiguration"
_UPDATE = "DestinationUpdate"
_RENAMED_UPDATES = {"S3Update": "S3Configuration", "S3BackupUpdate": "S3BackupConfiguration"}


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, message)


def _kind_of(member: str, suffix: str) -> str:
    kind = member.removesuffix(suffix)
    return "ExtendedS3" if kind == "S3" else kind


def from_create(request: Mapping[str, Any]) -> dict[str, Any]:
    """The `{"<Kind>DestinationConfiguration": {...}}` document of a CreateDeliveryStream."""
    given = [key for key in request if key.endswith(_CONFIGURATION) and request[key] is not None]
    if len(given) != 1:
        raise _invalid(messages.exactly_one_destination(given=given, what="configuration"))
    (member,) = given
    kind = _kind_of(member, _CONFIGURATION)
    configuration = copy.deepcopy(dict(request[member]))
    check(kind, configuration)
    return {kind + _CONFIGURATION: configuration}


def merged_update(current: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """The destination document after UpdateDestination `request` on `current`."""
    given = [key for key in request if key.endswith(_UPDATE) and request[key] is not None]
    if len(given) != 1:
        raise _invalid(messages.exactly_one_destination(given=given, what="update"))
    (member,) = given
    kind = _kind_of(member, _UPDATE)
    update = _renamed(request[member])
    ((current_key, current_configuration),) = current.items()
    if _kind_of(current_key, _CONFIGURATION) == kind:
        configuration = _deep_merge(current_configuration, update)
    else:
        configuration = update
    check(kind, configuration)
    return {kind + _CONFIGURATION: configuration}


def _renamed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_RENAMED_UPDATES.get(key, key): _renamed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item) for item in value]
    return value


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check(kind: str, configuration: Mapping[str, Any]) -> None:
    """InvalidArgumentException for a configuration Firehose (or Shoal) would refuse."""
    if kind not in DELIVERED_KINDS:
        raise _invalid(messages.destination_not_delivered(kind=kind))
    unsupported = processing.check(configuration)
    if unsupported is not None:
        raise _invalid(unsupported)
    if kind == "HttpEndpoint":
        endpoint = configuration.get("EndpointConfiguration") or {}
        if not endpoint.get("Url"):
            raise _invalid(messages.HTTP_ENDPOINT_URL_REQUIRED)
        backup = configuration.get("S3Configuration")
        if not backup:
            raise _invalid(messages.HTTP_ENDPOINT_S3_REQUIRED)
        _check_s3("S3Configuration", backup)
        return
    if kind == "Redshift":
        _check_redshift(configuration)
        return
    if kind == "Iceberg":
        _check_iceberg(configuration)
        return
    if kind in indexers.KINDS:
        problem = indexers.check(kind, configuration)
        if problem is not None:
            raise _invalid(problem)
        backup = configuration.get("S3Configuration")
        if not backup:
            raise _invalid(messages.s3_configuration_required(kind=kind))
        _check_s3("S3Configuration", backup)
        return
    partitioning = configuration.get("DynamicPartitioningConfiguration") or {}
    dynamic = bool(partitioning.get("Enabled"))
    _check_s3(kind, configuration, dynamic_partitioning=dynamic)
    if dynamic:
        _check_partitioning(configuration)
    conversion = configuration.get("DataFormatConversionConfiguration") or {}
    if conversion and conversion.get("Enabled", True):
        _check_conversion(configuration, conversion)
    _check_backup(configuration)


def _check_backup(configuration: Mapping[str, Any]) -> None:
    """S3BackupMode Enabled needs the S3BackupConfiguration the source records go to."""
    if configuration.get("S3BackupMode", "Disabled") == "Enabled":
        backup = configuration.get("S3BackupConfiguration")
        if not backup:
            raise _invalid(messages.S3_BACKUP_REQUIRED)
        _check_s3("S3BackupConfiguration", backup)


def _check_iceberg(configuration: Mapping[str, Any]) -> None:
    """An Iceberg destination: its tables (`iceberg_routing.check`), a warehouse on S3, and the
    S3 configuration failed records go to."""
    refused = iceberg_routing.check(configuration)
    if refused is not None:
        raise _invalid(refused)
    warehouse = str((configuration.get("CatalogConfiguration") or {}).get("WarehouseLocation", ""))
    if not warehouse.startswith("s3://"):
        raise _invalid(messages.WAREHOUSE_NOT_S3)
    backup = configuration.get("S3Configuration")
    if not backup:
        raise _invalid(messages.ICEBERG_S3_REQUIRED)
    _check_s3("S3Configuration", backup)


def _check_redshift(configuration: Mapping[str, Any]) -> None:
    """A Redshift destination: where to connect and as whom, a COPY Shoal can run, and the
    S3 staging (and backup) configurations."""
    if (configuration.get("SecretsManagerConfiguration") or {}).get("Enabled"):
        raise _invalid(messages.SECRETS_MANAGER_NOT_READ)
    for required in ("RoleARN", "ClusterJDBCURL", "Username", "Password"):
        if not configuration.get(required):
            raise _invalid(messages.redshift_member_required(member=required))
    try:
        copy_command.target(str(configuration["ClusterJDBCURL"]))
        copy_command.plan(configuration.get("CopyCommand") or {})
    except copy_command.CopyCommandError as error:
        raise _invalid(str(error)) from error
    staging = configuration.get("S3Configuration")
    if not staging:
        raise _invalid(messages.REDSHIFT_S3_REQUIRED)
    _check_s3("S3Configuration", staging)
    if staging.get("CompressionFormat") in _REDSHIFT_REFUSED_COMPRESSION:
        raise _invalid(
            messages.redshift_compression_refused(compression=staging["CompressionFormat"])
        )
    _check_backup(configuration)


def _check_conversion(configuration: Mapping[str, Any], conversion: Mapping[str, Any]) -> None:
    """Firehose's rules for record format conversion."""
    schema = conversion.get("SchemaConfiguration") or {}
    if not schema.get("DatabaseName") or not schema.get("TableName"):
        raise _invalid(messages.SCHEMA_REQUIRED)
    deserializer = (conversion.get("InputFormatConfiguration") or {}).get("Deserializer") or {}
    if not deserializer:
        raise _invalid(messages.DESERIALIZER_REQUIRED)
    serializer = (conversion.get("OutputFormatConfiguration") or {}).get("Serializer") or {}
    if len(serializer) != 1:
        raise _invalid(messages.SERIALIZER_REQUIRED)
    if (configuration.get("CompressionFormat") or "UNCOMPRESSED") != "UNCOMPRESSED":
        raise _invalid(messages.CONVERSION_NEEDS_UNCOMPRESSED)


def _check_partitioning(configuration: Mapping[str, Any]) -> None:
    """Dynamic partitioning: an ErrorOutputPrefix, and every partition key the prefix uses
    produced by a configured MetadataExtraction query or Lambda."""
    if not configuration.get("ErrorOutputPrefix"):
        raise _invalid(messages.PARTITIONING_NEEDS_ERROR_PREFIX)
    names = object_keys.partition_key_names(str(configuration.get("Prefix") or ""))
    if not any(names.values()):
        raise _invalid(messages.PARTITIONING_NEEDS_KEY)
    query = processing.metadata_query(configuration)
    if names["partitionKeyFromQuery"] and query is None:
        raise _invalid(messages.QUERY_KEY_NEEDS_EXTRACTION)
    if query is not None:
        problem = partition_keys.check_query(query)
        if problem is not None:
            raise _invalid(problem)
    if names["partitionKeyFromLambda"] and processing.lambda_processor(configuration) is None:
        raise _invalid(messages.LAMBDA_KEY_NEEDS_LAMBDA)


def _check_s3(
    what: str, configuration: Mapping[str, Any], *, dynamic_partitioning: bool = False
) -> None:
    for required in ("RoleARN", "BucketARN"):
        if not configuration.get(required):
            raise _invalid(messages.member_required(member=required, what=what))
    if arns.s3_bucket(str(configuration["BucketARN"])) is None:
        raise _invalid(messages.not_a_bucket_arn(arn=configuration["BucketARN"]))
    hints = configuration.get("BufferingHints")
    if hints is not None and (("SizeInMBs" in hints) != ("IntervalInSeconds" in hints)):
        raise _invalid(messages.BUFFERING_HINTS_PAIR)
    for member in ("Prefix", "ErrorOutputPrefix"):
        try:
            object_keys.check_prefix(
                str(configuration.get(member) or ""), dynamic_partitioning=dynamic_partitioning
            )
        except object_keys.PrefixError as error:
            raise _invalid(str(error)) from error
    prefix = str(configuration.get("Prefix") or "")
    error_prefix = configuration.get("ErrorOutputPrefix")
    if object_keys.EXPRESSION.search(prefix) and not error_prefix:
        raise _invalid(messages.EXPRESSIONS_NEED_ERROR_PREFIX)


def storage_bucket(kind: str, configuration: Mapping[str, Any]) -> str:
    """The S3 bucket a destination writes to: its own, or its S3 backup's."""
    if kind == "ExtendedS3":
        return bucket_name(configuration)
    return bucket_name(configuration["S3Configuration"])


def bucket_name(configuration: Mapping[str, Any]) -> str:
    arn = str(configuration["BucketARN"])
    bucket = arns.s3_bucket(arn)
    return arn if bucket is None else bucket
