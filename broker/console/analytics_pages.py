"""The console's SQL application pages (Kinesis Data Analytics for SQL): applications with
their status, SQL, inputs, outputs and reference data, the node that runs each, Start and Stop
with confirmation, and a live preview of an output stream.

Every read and change is a kinesisanalytics (2015-08-14) operation validated by its botocore
model and run by the node's AnalyticsService as its JSON door runs it, as the visitor. Where an
application runs is its placement lease (metadata image): the node holding it runs the whole
application. The output preview is the console's live tail on the output's Kinesis stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.analytics.applications import PLACEMENT_LEASE_KEY, lease_application
from broker.caller import Caller
from broker.clock import Clock
from broker.console.visitor import Render, Visitor
from broker.console.web import Request, Response, segment, url
from broker.gateway.validation import validate_request
from broker.meta.image import MetadataImage

MODEL = "kinesisanalytics"
LIST_LIMIT = 50  # ListApplications' Limit maximum
LIST_PAGES_MAX = 20
STARTING_POSITIONS = ("NOW", "TRIM_HORIZON", "LAST_STOPPED_POINT")


class AnalyticsCalls(Protocol):
    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputView:
    name: str  # the in-application stream it writes
    kind: str  # "Kinesis stream", "Firehose", "Lambda"
    target_arn: str
    record_format: str
    stream_name: str | None  # the Kinesis stream's name, for the live preview


_OUTPUT_KINDS = {
    "KinesisStreamsOutputDescription": "Kinesis stream",
    "KinesisFirehoseOutputDescription": "Firehose",
    "LambdaOutputDescription": "Lambda",
}


def output_views(detail: Mapping[str, Any]) -> tuple[OutputView, ...]:
    views: list[OutputView] = []
    for output in detail.get("OutputDescriptions", []):
        kind_key = next((key for key in _OUTPUT_KINDS if key in output), None)
        arn = str(output[kind_key]["ResourceARN"]) if kind_key else ""
        views.append(
            OutputView(
                name=str(output.get("Name", "")),
                kind=_OUTPUT_KINDS[kind_key] if kind_key else "unknown",
                target_arn=arn,
                record_format=str(output.get("DestinationSchema", {}).get("RecordFormatType", "")),
                stream_name=_stream_name(arn)
                if kind_key == "KinesisStreamsOutputDescription"
                else None,
            )
        )
    return tuple(views)


def _stream_name(arn: str) -> str | None:
    """The name in `arn:aws:kinesis:<region>:<account>:stream/<name>`."""
    _, found, name = arn.partition(":stream/")
    return name if found and name else None


class AnalyticsPages:
    """`/console/applications...`: one per console."""

    def __init__(
        self,
        analytics: AnalyticsCalls,
        render: Render,
        *,
        image: Callable[[], MetadataImage],
        clock: Clock,
    ) -> None:
        self._analytics = analytics
        self._render = render
        self._image = image
        self._clock = clock

    async def route(self, request: Request, visitor: Visitor, rest: str) -> Response | None:
        name, _, sub = rest.strip("/").partition("/")
        if not name:
            return await self._list(request, visitor)
        if sub == "" and request.method != "POST":
            return await self._page(request, visitor, name)
        if sub in ("start", "stop") and request.method == "POST":
            return await self._start_or_stop(request, visitor, name, sub)
        return None

    async def _call(self, operation: str, request: dict[str, Any], visitor: Visitor) -> Any:
        validate_request(operation, request, model=MODEL)
        return await self._analytics.call(operation, request, visitor.caller)

    async def _detail(self, name: str, visitor: Visitor) -> dict[str, Any]:
        answer = await self._call("DescribeApplication", {"ApplicationName": name}, visitor)
        return dict(answer["ApplicationDetail"])

    async def _list(self, request: Request, visitor: Visitor) -> Response:
        summaries: list[dict[str, Any]] = []
        listing: dict[str, Any] = {"Limit": LIST_LIMIT}
        for _ in range(LIST_PAGES_MAX):
            answer = await self._call("ListApplications", listing, visitor)
            page = list(answer.get("ApplicationSummaries", []))
            summaries.extend(page)
            if not answer.get("HasMoreApplications") or not page:
                break
            listing = {
                "Limit": LIST_LIMIT,
                "ExclusiveStartApplicationName": page[-1]["ApplicationName"],
            }
        return self._render(
            "applications.html",
            visitor,
            title="SQL applications",
            applications=summaries,
            notice=request.arg("notice") or None,
        )

    async def _page(self, request: Request, visitor: Visitor, name: str) -> Response:
        detail = await self._detail(name, visitor)
        outputs = output_views(detail)
        previewable = [output for output in outputs if output.stream_name]
        wanted = request.arg("preview")
        preview = next((o for o in previewable if o.name == wanted), None) or (
            previewable[0] if previewable else None
        )
        return self._render(
            "application.html",
            visitor,
            title=name,
            detail=detail,
            outputs=outputs,
            preview=preview,
            running_on=self._running_on(str(detail.get("ApplicationARN", ""))),
            starting_positions=STARTING_POSITIONS,
            notice=request.arg("notice") or None,
        )

    def _running_on(self, arn: str) -> str | None:
        """The worker holding the application's placement lease (its node id first)."""
        image = self._image()
        app = image.analytics.by_arn(arn, now_ms=self._clock.wall_ms())
        if app is None:
            return None
        placement = lease_application(app, "placement")
        for stream_name in image.leases.stream_names(placement):
            lease = image.leases.get(placement, stream_name, PLACEMENT_LEASE_KEY)
            if lease is not None and lease.lease_owner:
                return lease.lease_owner
        return None

    async def _start_or_stop(
        self, request: Request, visitor: Visitor, name: str, action: str
    ) -> Response:
        if action == "stop":
            operation = "StopApplication"
            call: dict[str, Any] = {"ApplicationName": name}
            summary = f"Stop the application {name}: it stops reading and writing."
            fields: dict[str, str] = {}
        else:
            detail = await self._detail(name, visitor)
            position = request.arg("position", "NOW")
            operation = "StartApplication"
            call = {
                "ApplicationName": name,
                "InputConfigurations": [
                    {
                        "Id": input_description["InputId"],
                        "InputStartingPositionConfiguration": {"InputStartingPosition": position},
                    }
                    for input_description in detail.get("InputDescriptions", [])
                ],
            }
            summary = f"Start the application {name}, reading its input from {position}."
            fields = {"position": position}
        validate_request(operation, call, model=MODEL)
        if request.form.get("confirmed") != "yes":
            return self._render(
                "confirm.html",
                visitor,
                title="Confirm",
                plan={"operation": operation, "summary": summary, "destructive": False},
                request_json=json.dumps(call, indent=2),
                fields=fields,
                target=url(f"/applications/{segment(name)}/{action}"),
                back=url(f"/applications/{segment(name)}"),
            )
        await self._call(operation, call, visitor)
        notice = f"{operation} accepted"
        return Response.redirect(url(f"/applications/{segment(name)}", notice=notice))
