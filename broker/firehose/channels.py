"""Kinesis channels (CreateChannel ... DeleteChannel): a data stream delivered to S3 or to an
Iceberg table (S3 Tables), served on the Kinesis doors.

A channel is a delivery stream of this package with the stream as its source, stored in the
metadata quorum's delivery-stream table under the channel's ARN
(`arn:aws:kinesis:<region>:<account>:channel/<name>`, so it never shows among Firehose's
delivery streams, which are keyed by `arn:aws:firehose:...`). The lifecycle reconciler and the
deliverers treat it as any KinesisStreamAsSource delivery stream: CREATING until the source
and the bucket are checked, then ACTIVE with one deliverer per source shard across the nodes
(leases in the quorum, checkpoint after each object, at least once, in order per shard).

The channel's own definition, as AWS describes it, is kept inside its destination document
(`_CHANNEL` member), so UpdateChannel is one compare-and-set UpdateDeliveryStreamDestination
command and no metadata format change was needed. The S3 destination becomes an ExtendedS3
one (OutputKeyTemplate as the Prefix, DataFreshnessInSeconds as the buffering interval,
CompressionType NONE/GZIP/ZSTD); an S3 Tables destination becomes an Iceberg one whose
warehouse is the table bucket (`s3://<table bucket name>`), the dead-letter bucket taking the
records that cannot be appended.

Shoal's limits, each refused with InvalidArgumentException naming it: one source stream per
channel, and one table per S3 Tables destination (Firehose's Iceberg writer appends to one).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker import arns, error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus, canonical_json
from broker.meta.image import StreamMode
from broker.service.context import ServiceContext
from broker.service.tokens import decode_token, encode_token
from broker.streams import tag_rules
from broker.timestamps import datetime_from_ms, ms_from_datetime

Request = Mapping[str, Any]
Response = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]

CHANNEL_ARN = re.compile(r"arn:aws[\w-]*:kinesis:([\w-]+):(\d{12}):channel/(\S+)")
_CHANNEL = "ShoalChannel"  # the member of the destination document holding the definition
_FRESHNESS_DEFAULT_S = 60
_BUFFER_MIB = 64  # S3 objects are cut by freshness, or at this size
_COMPRESSION = {"NONE": "UNCOMPRESSED", "GZIP": "GZIP", "ZSTD": "ZSTD"}
_STATUS = {
    DeliveryStreamStatus.CREATING: "CREATING",
    DeliveryStreamStatus.ACTIVE: "ACTIVE",
    DeliveryStreamStatus.DELETING: "DELETING",
    DeliveryStreamStatus.DELETING_FAILED: "DELETING",
    DeliveryStreamStatus.CREATING_FAILED: "FAILED",
}
_LOGGING_DEFAULT = {"CloudWatchLogs": {"Enabled": False}}


class ChannelOperations:
    """The five channel operations and channel tagging of one node. Loop only."""

    def __init__(self, ctx: ServiceContext, *, on_change: Callable[[], None]) -> None:
        self._ctx = ctx
        self._on_change = on_change  # wakes the lifecycle reconciler

    def handlers(self) -> dict[str, Handler]:
        return {
            "CreateChannel": self.create_channel,
            "DescribeChannel": self.describe_channel,
            "ListChannels": self.list_channels,
            "UpdateChannel": self.update_channel,
            "DeleteChannel": self.delete_channel,
        }

    def tagging(self) -> dict[str, Handler]:
        return {
            "TagResource": self.tag_channel,
            "UntagResource": self.untag_channel,
            "ListTagsForResource": self.list_channel_tags,
        }

    # --- Lookups --------------------------------------------------------------------------

    def _arn(self, name: str) -> str:
        namespace = self._ctx.namespace()
        return arns.regional("kinesis", namespace.region, namespace.account_id, f"channel/{name}")

    def _channel(self, arn: str) -> DeliveryStreamMeta:
        meta = self._ctx.image().delivery_streams.get(arn)
        namespace = self._ctx.namespace()
        theirs = meta is not None and (meta.account_id, meta.region) != (
            namespace.account_id,
            namespace.region,
        )
        if meta is None or not meta.is_channel or theirs:  # another namespace's: not found
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.channel_not_found(arn))
        return meta

    async def _propose(self, command: commands.Command) -> DeliveryStreamMeta:
        result = await self._ctx.metadata.propose(command)
        assert isinstance(result, DeliveryStreamMeta), result
        self._on_change()
        return result

    # --- Operations -----------------------------------------------------------------------

    async def create_channel(self, request: Request) -> Response:
        ctx = self._ctx
        s3 = request.get("S3DestinationConfiguration")
        tables = request.get("S3TablesDestinationConfiguration")
        if (s3 is None) == (tables is None):
            raise ShoalError(ErrorCode.VALIDATION, error_messages.CHANNEL_ONE_DESTINATION)
        configurations = request["StreamConfigurationList"]
        if len(configurations) != 1:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.CHANNEL_ONE_STREAM)
        (configuration,) = configurations
        _check_record_configuration(configuration["RecordConfiguration"])
        stream = ctx.stream_for({"StreamARN": configuration["StreamARN"]})
        if stream.mode is not StreamMode.ON_DEMAND:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, error_messages.channel_needs_on_demand(stream.arn)
            )
        if tables is not None and len(tables["S3TablesConfigurationList"]) != 1:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.CHANNEL_ONE_TABLE)
        tags: dict[str, str] = request.get("Tags") or {}
        namespace = ctx.namespace()
        tag_rules.check_tag_characters(
            [*tags, *tags.values()],
            verb=tag_rules.ADD,
            stream_name=stream.display_name,
            account_id=namespace.account_id,
        )
        name: str = request["ChannelName"]
        arn = self._arn(name)
        if arn in ctx.image().delivery_streams:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.channel_name_in_use(name, namespace.account_id),
            )
        definition = {
            "ServiceExecutionRoleARN": request["ServiceExecutionRoleARN"],
            "StreamConfigurationList": [
                {
                    "StreamARN": stream.arn,
                    "StreamCreationTimestampMs": stream.created_ms,
                    "RecordConfiguration": dict(configuration["RecordConfiguration"]),
                }
            ],
            "LoggingConfiguration": request.get("LoggingConfiguration") or _LOGGING_DEFAULT,
        }
        if request.get("EncryptionConfiguration") is not None:
            definition["EncryptionConfiguration"] = request["EncryptionConfiguration"]
        if s3 is not None:
            definition["S3DestinationConfiguration"] = {
                "DataFreshnessInSeconds": s3.get("DataFreshnessInSeconds", _FRESHNESS_DEFAULT_S),
                **{key: value for key, value in s3.items() if key != "DataFreshnessInSeconds"},
            }
        else:
            assert tables is not None
            definition["S3TablesDestinationConfiguration"] = {
                "DataFreshnessInSeconds": tables.get(
                    "DataFreshnessInSeconds", _FRESHNESS_DEFAULT_S
                ),
                **{k: v for k, v in tables.items() if k != "DataFreshnessInSeconds"},
            }
        _check_freshness(definition)
        meta = await self._propose(
            commands.CreateDeliveryStream(
                now_ms=ctx.now_ms(),
                arn=arn,
                name=name,
                account_id=namespace.account_id,
                region=namespace.region,
                uid=secrets.token_hex(6),
                delivery_stream_type="KinesisStreamAsSource",
                destination_json=canonical_json(destination_document(definition)),
                source_json=canonical_json(
                    {"KinesisStreamARN": stream.arn, "StreamKey": stream.name}
                ),
                tags=tuple(sorted(tags.items())),
                delivery_streams_max=limits.channels_per_account_max,
            )
        )
        return {"ChannelDescription": channel_description(meta)}

    async def describe_channel(self, request: Request) -> Response:
        return {"ChannelDescription": channel_description(self._channel(request["ChannelARN"]))}

    async def list_channels(self, request: Request) -> Response:
        ctx = self._ctx
        image = ctx.image()
        now_ms = ctx.now_ms()
        namespace = ctx.namespace()
        channels = sorted(
            (
                meta
                for meta in image.delivery_streams.values()
                if meta.is_channel
                and meta.account_id == namespace.account_id
                and meta.region == namespace.region
            ),
            key=lambda meta: meta.arn,
        )
        filters = request.get("StreamFilter")
        if filters is not None:
            channels = [c for c in channels if any(_filter_matches(f, c) for f in filters)]
        token = request.get("NextToken")
        if token is not None:
            payload = decode_token(token, secret=image.iterator_secret, now_ms=now_ms, expires=True)
            after = payload.get("after_channel")
            if not isinstance(after, str):
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT, error_messages.invalid_next_token(token)
                )
            channels = [c for c in channels if c.arn > after]
        limit = request.get("MaxResults", limits.list_channels_page_max)
        page = channels[:limit]
        response: Response = {"ChannelSummaries": [_summary(meta) for meta in page]}
        if len(channels) > limit:
            response["NextToken"] = encode_token(
                {"after_channel": page[-1].arn}, issued_ms=now_ms, secret=image.iterator_secret
            )
        return response

    async def update_channel(self, request: Request) -> Response:
        meta = self._channel(request["ChannelARN"])
        definition = channel_definition(meta)
        if meta.status is not DeliveryStreamStatus.ACTIVE:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.channel_not_active(meta.arn, _STATUS[meta.status]),
            )
        for kind in ("S3DestinationConfiguration", "S3TablesDestinationConfiguration"):
            update = request.get(kind)
            if update is None:
                continue
            if kind not in definition:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT, error_messages.channel_other_destination(kind)
                )
            definition[kind] = {
                **definition[kind],
                "DataFreshnessInSeconds": update["DataFreshnessInSeconds"],
            }
        logging_update = request.get("LoggingConfiguration")
        if logging_update is not None:
            definition["LoggingConfiguration"] = logging_update
        _check_freshness(definition)
        changed = await self._propose(
            commands.UpdateDeliveryStreamDestination(
                now_ms=self._ctx.now_ms(),
                arn=meta.arn,
                name=meta.name,
                current_version_id=meta.version_id,
                destination_id=meta.destination_id,
                destination_json=canonical_json(destination_document(definition)),
            )
        )
        # UPDATING as AWS answers; the change is applied by the time this returns.
        return {"ChannelDescription": channel_description(changed, status="UPDATING")}

    async def delete_channel(self, request: Request) -> Response:
        meta = self._channel(request["ChannelARN"])
        await self._propose(
            commands.DeleteDeliveryStream(now_ms=self._ctx.now_ms(), arn=meta.arn, name=meta.name)
        )
        return {}

    # --- Tags (TagResource, UntagResource, ListTagsForResource on a channel ARN) ------------

    async def tag_channel(self, request: Request) -> Response:
        meta = self._channel(request["ResourceARN"])
        tags: dict[str, str] = request["Tags"]
        self._check_tags(meta, [*tags, *tags.values()], verb=tag_rules.ADD)
        await self._propose(
            commands.ChangeDeliveryStreamTags(
                now_ms=self._ctx.now_ms(),
                arn=meta.arn,
                name=meta.name,
                added=tuple(sorted(tags.items())),
                tags_max=limits.tags_per_stream_max,
            )
        )
        return {}

    async def untag_channel(self, request: Request) -> Response:
        meta = self._channel(request["ResourceARN"])
        keys: list[str] = request["TagKeys"]
        self._check_tags(meta, keys, verb=tag_rules.REMOVE)
        await self._propose(
            commands.ChangeDeliveryStreamTags(
                now_ms=self._ctx.now_ms(), arn=meta.arn, name=meta.name, removed=tuple(keys)
            )
        )
        return {}

    async def list_channel_tags(self, request: Request) -> Response:
        meta = self._channel(request["ResourceARN"])
        return {"Tags": [{"Key": key, "Value": value} for key, value in meta.tags]}

    def _check_tags(self, meta: DeliveryStreamMeta, texts: list[str], *, verb: str) -> None:
        tag_rules.check_tag_characters(
            texts, verb=verb, stream_name=meta.name, account_id=meta.account_id
        )


# --- The channel definition and the delivery stream it becomes (pure) ---------------------


def destination_document(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery-stream destination a channel definition delivers through, holding the
    definition itself under `_CHANNEL`."""
    role = definition["ServiceExecutionRoleARN"]
    s3 = definition.get("S3DestinationConfiguration")
    if s3 is not None:
        storage = s3["StorageConfiguration"]
        configuration: dict[str, Any] = {
            "RoleARN": role,
            "BucketARN": storage["BucketARN"],
            "CompressionFormat": _COMPRESSION[storage["CompressionType"]],
            "BufferingHints": {
                "IntervalInSeconds": s3["DataFreshnessInSeconds"],
                "SizeInMBs": _BUFFER_MIB,
            },
        }
        if storage.get("OutputKeyTemplate"):
            configuration["Prefix"] = storage["OutputKeyTemplate"]
        dead_letter = s3.get("DeadLetterQueueS3Configuration")
        if dead_letter is not None and dead_letter.get("ErrorOutputPrefix"):
            configuration["ErrorOutputPrefix"] = dead_letter["ErrorOutputPrefix"]
        return {"ExtendedS3DestinationConfiguration": {**configuration, _CHANNEL: definition}}
    tables = definition["S3TablesDestinationConfiguration"]
    (table,) = tables["S3TablesConfigurationList"]
    bucket = str(table["TableBucketARN"]).rsplit("/", 1)[-1]
    dead_letter = tables["DeadLetterQueueS3Configuration"]
    backup: dict[str, Any] = {"RoleARN": role, "BucketARN": dead_letter["BucketARN"]}
    if dead_letter.get("ErrorOutputPrefix"):
        backup["ErrorOutputPrefix"] = dead_letter["ErrorOutputPrefix"]
    return {
        "IcebergDestinationConfiguration": {
            "RoleARN": role,
            "CatalogConfiguration": {"WarehouseLocation": f"s3://{bucket}"},
            "DestinationTableConfigurationList": [
                {
                    "DestinationDatabaseName": table["Namespace"],
                    "DestinationTableName": table["TableName"],
                }
            ],
            "BufferingHints": {
                "IntervalInSeconds": tables["DataFreshnessInSeconds"],
                "SizeInMBs": _BUFFER_MIB,
            },
            "S3BackupMode": "FailedDataOnly",
            "S3Configuration": backup,
            _CHANNEL: definition,
        }
    }


def channel_definition(meta: DeliveryStreamMeta) -> dict[str, Any]:
    _, configuration = meta.destination()
    definition = configuration[_CHANNEL]
    copy = json.loads(json.dumps(definition))  # a copy to change
    assert isinstance(copy, dict)
    return copy


def channel_description(meta: DeliveryStreamMeta, *, status: str | None = None) -> Response:
    definition = channel_definition(meta)
    description: Response = {
        "ChannelName": meta.name,
        "ChannelARN": meta.arn,
        "ChannelId": meta.uid,
        "ChannelStatus": status or _STATUS[meta.status],
        "ChannelCreationTimestamp": datetime_from_ms(meta.created_ms),
        "ServiceExecutionRoleARN": definition["ServiceExecutionRoleARN"],
        "StreamConfigurationList": [
            {
                "StreamARN": stream["StreamARN"],
                "StreamCreationTimestamp": datetime_from_ms(stream["StreamCreationTimestampMs"]),
                "RecordConfiguration": stream["RecordConfiguration"],
            }
            for stream in definition["StreamConfigurationList"]
        ],
        "LoggingConfiguration": definition["LoggingConfiguration"],
    }
    if meta.status is DeliveryStreamStatus.CREATING_FAILED and meta.failure_details:
        description["ChannelStatusReason"] = meta.failure_details[:2048]
    for key in (
        "S3DestinationConfiguration",
        "S3TablesDestinationConfiguration",
        "EncryptionConfiguration",
    ):
        if key in definition:
            description[key] = definition[key]
    return description


def _summary(meta: DeliveryStreamMeta) -> Response:
    definition = channel_definition(meta)
    summary: Response = {
        "ChannelName": meta.name,
        "ChannelARN": meta.arn,
        "ChannelId": meta.uid,
        "ChannelStatus": _STATUS[meta.status],
        "ChannelCreationTimestamp": datetime_from_ms(meta.created_ms),
        "ChannelDestinationType": (
            "S3" if "S3DestinationConfiguration" in definition else "S3_TABLES"
        ),
        "Streams": [
            {
                "StreamARN": stream["StreamARN"],
                "StreamCreationTimestamp": datetime_from_ms(stream["StreamCreationTimestampMs"]),
            }
            for stream in definition["StreamConfigurationList"]
        ],
    }
    if meta.status is DeliveryStreamStatus.CREATING_FAILED and meta.failure_details:
        summary["ChannelStatusReason"] = meta.failure_details[:2048]
    return summary


def _filter_matches(stream_filter: Mapping[str, Any], meta: DeliveryStreamMeta) -> bool:
    created = stream_filter.get("StreamCreationTimestamp")
    for stream in channel_definition(meta)["StreamConfigurationList"]:
        if stream["StreamARN"] != stream_filter["StreamARN"]:
            continue
        if created is None or ms_from_datetime(created) == stream["StreamCreationTimestampMs"]:
            return True
    return False


def _check_record_configuration(configuration: Mapping[str, Any]) -> None:
    has_schema = configuration.get("GSRSchemaARN") is not None
    if configuration["RecordFormatType"] == "GSR_JSON" and not has_schema:
        raise ShoalError(ErrorCode.VALIDATION, error_messages.CHANNEL_SCHEMA_REQUIRED)
    if configuration["RecordFormatType"] != "GSR_JSON" and has_schema:
        raise ShoalError(ErrorCode.VALIDATION, error_messages.CHANNEL_SCHEMA_NOT_ALLOWED)


def _check_freshness(definition: Mapping[str, Any]) -> None:
    for kind in ("S3DestinationConfiguration", "S3TablesDestinationConfiguration"):
        destination = definition.get(kind)
        if destination is None:
            continue
        seconds = destination["DataFreshnessInSeconds"]
        low, high = limits.channel_freshness_s_min, limits.channel_freshness_s_max
        if not low <= seconds <= high:
            raise ShoalError(
                ErrorCode.VALIDATION, error_messages.channel_freshness_out_of_range(seconds)
            )
