"""The Firehose family's error texts, written down once (issue 14: every text a door sends is
in a catalogue; `broker/error_messages.py` holds the Kinesis ones). Pure: strings in, strings
out. Where AWS's words are known they are AWS's; the rest are Shoal's own, for the
configurations Shoal checks or refuses."""

from __future__ import annotations

# --- firehose/service.py ------------------------------------------------------------------

KEY_ARN_REQUIRED = "KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK."
KEY_ARN_NOT_ALLOWED = "KeyARN must not be given when KeyType is AWS_OWNED_CMK."
ENCRYPTION_ONLY_FOR_DIRECT_PUT = (
    "Server-side encryption is only for DirectPut delivery streams; a "
    "KinesisStreamAsSource one is encrypted by its source stream."
)
SOURCE_CONFIGURATION_REQUIRED = (
    "KinesisStreamSourceConfiguration is required for a KinesisStreamAsSource delivery stream."
)
SOURCE_CONFIGURATION_NOT_ALLOWED = (
    "KinesisStreamSourceConfiguration is only allowed for a KinesisStreamAsSource delivery stream."
)
VERSION_ID_NOT_A_NUMBER = "CurrentDeliveryStreamVersionId must be a number."


def encryption_needs_direct_put(*, name: object) -> str:
    return (
        f"Firehose {name} is not a DirectPut delivery stream; server-side "
        "encryption applies to DirectPut delivery streams only."
    )


def not_permitted_on_type(*, stream_type: object) -> str:
    return f"This operation is not permitted on {stream_type} delivery stream type."


def not_active(*, name: object, account_id: object, status: object) -> str:
    return f"Firehose {name} under account {account_id} is not ACTIVE (it is {status})."


def batch_too_large(*, total: object, bytes_max: object) -> str:
    return f"Records size {total} bytes exceeds the PutRecordBatch limit of {bytes_max} bytes."


def source_not_supported(*, source: object) -> str:
    return f"Shoal does not support {source} sources yet."


def stream_type_not_supported(*, stream_type: object) -> str:
    return f"Shoal does not support {stream_type} delivery streams yet."


def not_stored_durably(*, problem: object) -> str:
    return f"The records could not be stored durably; retry. ({problem})"


# --- firehose/destinations.py -------------------------------------------------------------

HTTP_ENDPOINT_URL_REQUIRED = (
    "EndpointConfiguration.Url is required for an HttpEndpoint destination."
)
HTTP_ENDPOINT_S3_REQUIRED = "S3Configuration is required for an HttpEndpoint destination."
S3_BACKUP_REQUIRED = "S3BackupConfiguration is required when S3BackupMode is Enabled."
WAREHOUSE_NOT_S3 = "CatalogConfiguration.WarehouseLocation must be an s3:// location."
ICEBERG_S3_REQUIRED = "S3Configuration is required for an Iceberg destination."
SECRETS_MANAGER_NOT_READ = (
    "Shoal does not read credentials from Secrets Manager; set Username and Password."
)
REDSHIFT_S3_REQUIRED = "S3Configuration is required for a Redshift destination."
SCHEMA_REQUIRED = (
    "SchemaConfiguration with DatabaseName and TableName is required for record format conversion."
)
DESERIALIZER_REQUIRED = (
    "InputFormatConfiguration needs a Deserializer (OpenXJsonSerDe or HiveJsonSerDe)."
)
SERIALIZER_REQUIRED = "OutputFormatConfiguration needs one Serializer (ParquetSerDe or OrcSerDe)."
CONVERSION_NEEDS_UNCOMPRESSED = (
    "CompressionFormat must be UNCOMPRESSED with record format conversion (the serializer "
    "compresses)."
)
PARTITIONING_NEEDS_ERROR_PREFIX = "ErrorOutputPrefix is required with dynamic partitioning."
PARTITIONING_NEEDS_KEY = "The Prefix must use a partition key with dynamic partitioning."
QUERY_KEY_NEEDS_EXTRACTION = "!{partitionKeyFromQuery:...} needs a MetadataExtraction processor."
LAMBDA_KEY_NEEDS_LAMBDA = "!{partitionKeyFromLambda:...} needs a Lambda processor."
BUFFERING_HINTS_PAIR = "BufferingHints must set both SizeInMBs and IntervalInSeconds, or neither."
EXPRESSIONS_NEED_ERROR_PREFIX = (
    "ErrorOutputPrefix is required when the Prefix contains expressions."
)


def exactly_one_destination(*, given: list[str] | tuple[str, ...] | set[str], what: str) -> str:
    """`what`: "configuration" (create) or "update"."""
    named = ", ".join(sorted(given)) or "none"
    return f"Exactly one destination {what} is required; {len(given)} were given ({named})."


def destination_not_delivered(*, kind: object) -> str:
    return (
        f"Shoal does not deliver to {kind} destinations yet; use an ExtendedS3 (or S3) "
        "or an HttpEndpoint destination."
    )


def s3_configuration_required(*, kind: object) -> str:
    return f"S3Configuration is required for a {kind} destination."


def redshift_member_required(*, member: object) -> str:
    return f"{member} is required for a Redshift destination."


def redshift_compression_refused(*, compression: object) -> str:
    return (
        f"CompressionFormat {compression} is not supported for a Redshift "
        "destination: COPY reads UNCOMPRESSED or GZIP objects."
    )


def member_required(*, member: object, what: object) -> str:
    return f"{member} is required for {what}."


def not_a_bucket_arn(*, arn: object) -> str:
    return f"BucketARN {arn} is not an S3 bucket ARN."
