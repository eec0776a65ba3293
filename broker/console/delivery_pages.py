"""The console's Data Firehose pages: delivery streams with their status and destinations,
who delivers them, this node's delivery counters, a test-record form and deletion.

Every read and change is a Firehose operation validated by botocore's firehose model and run by
the node's FirehoseService as its JSON door runs it, as the visitor. The deliverers are the
KCL-style leases of the delivery stream's source (metadata image): one owner per shard, each
with the checkpoint it has delivered through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from broker.caller import Caller
from broker.console.series import labelled_series
from broker.console.views import LeaseView, lease_views
from broker.console.visitor import Render, Visitor
from broker.console.web import Request, Response, segment, url
from broker.consumers.leases import Lease
from broker.gateway.validation import validate_request
from broker.meta.image import MetadataImage

MODEL = "firehose"
PAGE_SIZE = 25  # delivery streams per list page (each row is one DescribeDeliveryStream)
RECORD_BYTES_MAX = 1000 * 1024  # Firehose's record limit (1,000 KiB)
SERIES_PREFIX = "kinesis_firehose_"
SERIES_LABEL = "delivery_stream"


class FirehoseCalls(Protocol):
    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationSummary:
    """One destination of a delivery stream, as its page shows it."""

    destination_id: str
    kind: str  # "Extended S3", "HTTP endpoint", ...
    target: str  # the bucket ARN, endpoint URL, table, ...
    details: tuple[tuple[str, str], ...]  # (label, value): buffering, compression, ...
    description_json: str  # the whole description, pretty-printed


_KINDS = {
    "ExtendedS3DestinationDescription": "Extended S3",
    "S3DestinationDescription": "S3",
    "HttpEndpointDestinationDescription": "HTTP endpoint",
    "RedshiftDestinationDescription": "Redshift",
    "IcebergDestinationDescription": "Iceberg",
    "AmazonopensearchserviceDestinationDescription": "OpenSearch",
    "ElasticsearchDestinationDescription": "Elasticsearch",
    "SplunkDestinationDescription": "Splunk",
    "SnowflakeDestinationDescription": "Snowflake",
}


def destination_summaries(description: Mapping[str, Any]) -> tuple[DestinationSummary, ...]:
    """The destinations of a DeliveryStreamDescription, the most specific form of each (AWS
    describes an Extended S3 destination under both its Extended and plain S3 keys)."""
    summaries: list[DestinationSummary] = []
    for destination in description.get("Destinations", []):
        found = [key for key in _KINDS if key in destination]
        if not found:
            continue
        key = found[0]
        config: Mapping[str, Any] = destination[key]
        summaries.append(
            DestinationSummary(
                destination_id=str(destination.get("DestinationId", "")),
                kind=_KINDS[key],
                target=_target(config),
                details=_details(config),
                description_json=json.dumps(config, indent=2, default=str, sort_keys=True),
            )
        )
    return tuple(summaries)


def _target(config: Mapping[str, Any]) -> str:
    endpoint = config.get("EndpointConfiguration")
    if isinstance(endpoint, Mapping):
        return str(endpoint.get("Url", ""))
    for key in ("BucketARN", "ClusterJDBCURL", "DomainARN", "HECEndpoint", "AccountUrl"):
        if key in config:
            return str(config[key])
    return ""


def _details(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    details: list[tuple[str, str]] = []
    for key, label in (("Prefix", "Prefix"), ("ErrorOutputPrefix", "Error output prefix")):
        if config.get(key):
            details.append((label, str(config[key])))
    hints = config.get("BufferingHints")
    if isinstance(hints, Mapping):
        details.append(
            (
                "Buffering",
                f"{hints.get('SizeInMBs', '?')} MiB or {hints.get('IntervalInSeconds', '?')} s",
            )
        )
    if config.get("CompressionFormat"):
        details.append(("Compression", str(config["CompressionFormat"])))
    processing = config.get("ProcessingConfiguration")
    if isinstance(processing, Mapping) and processing.get("Enabled"):
        kinds = ", ".join(str(p.get("Type", "")) for p in processing.get("Processors", []))
        details.append(("Processing", kinds or "enabled"))
    conversion = config.get("DataFormatConversionConfiguration")
    if isinstance(conversion, Mapping) and conversion.get("Enabled", True):
        serializer = conversion.get("OutputFormatConfiguration", {}).get("Serializer", {})
        details.append(("Format conversion", ", ".join(serializer) or "enabled"))
    partitioning = config.get("DynamicPartitioningConfiguration")
    if isinstance(partitioning, Mapping) and partitioning.get("Enabled"):
        details.append(("Dynamic partitioning", "enabled"))
    if config.get("S3BackupMode"):
        details.append(("S3 backup", str(config["S3BackupMode"])))
    return tuple(details)


class DeliveryPages:
    """`/console/delivery-streams...`: one per console."""

    def __init__(
        self,
        firehose: FirehoseCalls,
        render: Render,
        *,
        image: Callable[[], MetadataImage],
        metrics: CollectorRegistry | None,
    ) -> None:
        self._firehose = firehose
        self._render = render
        self._image = image
        self._metrics = metrics

    async def route(self, request: Request, visitor: Visitor, rest: str) -> Response | None:
        name, _, sub = rest.strip("/").partition("/")
        if not name:
            return await self._list(request, visitor)
        if sub == "" and request.method != "POST":
            return await self._page(request, visitor, name)
        if sub == "records" and request.method == "POST":
            return await self._put_record(request, visitor, name)
        if sub == "delete" and request.method == "POST":
            return await self._delete(request, visitor, name)
        return None

    async def _call(self, operation: str, request: dict[str, Any], visitor: Visitor) -> Any:
        validate_request(operation, request, model=MODEL)
        return await self._firehose.call(operation, request, visitor.caller)

    async def _describe(self, name: str, visitor: Visitor) -> dict[str, Any]:
        answer = await self._call("DescribeDeliveryStream", {"DeliveryStreamName": name}, visitor)
        return dict(answer["DeliveryStreamDescription"])

    async def _list(self, request: Request, visitor: Visitor) -> Response:
        listing: dict[str, Any] = {"Limit": PAGE_SIZE}
        after = request.arg("after")
        if after:
            listing["ExclusiveStartDeliveryStreamName"] = after
        answer = await self._call("ListDeliveryStreams", listing, visitor)
        names = [str(name) for name in answer.get("DeliveryStreamNames", [])]
        rows = []
        for name in names:
            description = await self._describe(name, visitor)
            rows.append((description, destination_summaries(description)))
        more = bool(answer.get("HasMoreDeliveryStreams")) and bool(names)
        return self._render(
            "delivery_streams.html",
            visitor,
            title="Delivery streams",
            rows=rows,
            next_after=names[-1] if more else None,
            notice=request.arg("notice") or None,
        )

    async def _page(self, request: Request, visitor: Visitor, name: str) -> Response:
        description = await self._describe(name, visitor)
        return self._render(
            "delivery_stream.html",
            visitor,
            title=name,
            description=description,
            destinations=destination_summaries(description),
            deliverers=self._deliverers(description),
            series=()
            if self._metrics is None
            else labelled_series(
                self._metrics, prefix=SERIES_PREFIX, label=SERIES_LABEL, value=name
            ),
            stream_name=name,
            notice=request.arg("notice") or None,
        )

    def _deliverers(self, description: Mapping[str, Any]) -> tuple[LeaseView, ...]:
        """The leases of the delivery stream's deliverers: on its internal stream (DirectPut)
        or on its source stream (KinesisStreamAsSource), under its own application name."""
        image = self._image()
        meta = image.delivery_streams.get(str(description.get("DeliveryStreamARN", "")))
        if meta is None:
            return ()
        leases = image.leases
        found: list[Lease] = []
        for stream_name in leases.stream_names(meta.internal_stream):
            found.extend(leases.stream_leases(meta.internal_stream, stream_name).values())
        return lease_views(found)

    async def _put_record(self, request: Request, visitor: Visitor, name: str) -> Response:
        data = request.form.get("data", "")
        if request.form.get("newline") == "yes":
            data += "\n"
        answer = await self._call(
            "PutRecord",
            {"DeliveryStreamName": name, "Record": {"Data": data.encode("utf-8")}},
            visitor,
        )
        notice = f"PutRecord accepted: record {answer['RecordId']}"
        return Response.redirect(url(f"/delivery-streams/{segment(name)}", notice=notice))

    async def _delete(self, request: Request, visitor: Visitor, name: str) -> Response:
        call = {"DeliveryStreamName": name}
        validate_request("DeleteDeliveryStream", call, model=MODEL)
        if request.form.get("confirmed") != "yes":
            return self._render(
                "confirm.html",
                visitor,
                title="Confirm",
                plan={
                    "operation": "DeleteDeliveryStream",
                    "summary": f"Delete the delivery stream {name}: records not yet delivered "
                    "are lost.",
                    "destructive": True,
                },
                request_json=json.dumps(call, indent=2),
                fields={},
                target=url(f"/delivery-streams/{segment(name)}/delete"),
                back=url(f"/delivery-streams/{segment(name)}"),
            )
        await self._call("DeleteDeliveryStream", call, visitor)
        notice = f"DeleteDeliveryStream accepted: {name} is being deleted"
        return Response.redirect(url("/delivery-streams", notice=notice))
