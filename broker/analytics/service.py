"""AnalyticsService: the kinesisanalytics (2015-08-14) operations behind both doors.

The doors decode and validate every request against botocore's `kinesisanalytics` model
before `call` (the HTTP door by X-Amz-Target `KinesisAnalytics_20150814.*`, the gRPC door by
`proto/broker/api/analytics/v1/analytics.proto`); this class turns each operation into a
metadata command (`CreateAnalyticsApplication`, `ChangeAnalyticsApplication`) or a read of the
node's image, and answers in the model's shapes. Every rule about versions, ids and states is
applied in the state machine (`broker.analytics.applications`), so two racing callers cannot
both win; the application's SQL is compiled here, before proposing, and refused with
CodeValidationException naming the line and the construct (`sql.py`, `engine`).

Applications are namespaced by the caller's account and region (`Caller`; the node's own
when None). Loop-bound, like the metadata frontend it proposes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from broker.analytics import applications as rules
from broker.analytics import messages, records, reference_data, sql
from broker.analytics.applications import Application
from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import ChangeAnalyticsApplication, CreateAnalyticsApplication
from broker.meta.frontend import MetadataFrontend

Request = Mapping[str, Any]
Response = dict[str, Any]

# DiscoverInputSchema reads at most this many records (AWS samples the stream's first ones).
DISCOVERY_RECORDS_MAX = 100


class KinesisCalls(Protocol):
    """The node's Kinesis service, called in a namespace (`caller`, door "internal")."""

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]: ...


class CodeChecker(Protocol):
    """Compiles an application's SQL against its input schemas with the engine (a dry run):
    raises ShoalError(CODE_VALIDATION) naming the line and construct it cannot run."""

    def check(
        self,
        program: sql.Program,
        inputs: list[dict[str, Any]],
        references: list[dict[str, Any]] | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalyticsSettings:
    region: str  # the node's region and account: the namespace of calls without a Caller
    account_id: str
    applications_max: int = 50  # AWS's default limit of SQL applications per region
    # How long an application shows STARTING, STOPPING, UPDATING and DELETING.
    transition_ms: int = 1_000


class AnalyticsService:
    """The kinesisanalytics API (module docstring). One per node."""

    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        clock: Clock,
        settings: AnalyticsSettings,
        kinesis: KinesisCalls,
        checker: CodeChecker,
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self._settings = settings
        self._kinesis = kinesis
        self._checker = checker
        self._handlers: dict[str, Callable[[Request, Caller], Awaitable[Response]]] = {
            "CreateApplication": self._create,
            "DescribeApplication": self._describe,
            "ListApplications": self._list,
            "DiscoverInputSchema": self._discover,
            "ListTagsForResource": self._list_tags,
        }
        for operation in _CHANGES:
            self._handlers[operation] = self._changer(operation)

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def call(
        self, operation: str, request: Request, caller: Caller | None = None
    ) -> Response:
        if caller is None:
            caller = Caller(region=self._settings.region, account_id=self._settings.account_id)
        return await self._handlers[operation](request, caller)

    # --- Reads -------------------------------------------------------------------------------

    def _sees(self, app: Application) -> bool:
        """kinesisanalytics (2015-08-14) knows SQL applications only; v2 sees every runtime."""
        return app.is_sql

    def _application(self, name: str, caller: Caller) -> Application:
        now_ms = self._clock.wall_ms()
        key = rules.application_key(caller.account_id, caller.region, name)
        app = self._metadata.image().analytics.get(key, now_ms=now_ms)
        if app is None or not self._sees(app):
            raise rules.not_found(name, caller.account_id)
        return app

    async def _describe(self, request: Request, caller: Caller) -> Response:
        app = self._application(str(request["ApplicationName"]), caller)
        return {"ApplicationDetail": application_detail(app, now_ms=self._clock.wall_ms())}

    async def _list(self, request: Request, caller: Caller) -> Response:
        now_ms = self._clock.wall_ms()
        apps = self._live(caller)
        start = request.get("ExclusiveStartApplicationName")
        if start is not None:
            apps = [app for app in apps if app.name > start]
        limit = int(request.get("Limit", 50))
        return {
            "ApplicationSummaries": [_summary(app, now_ms) for app in apps[:limit]],
            "HasMoreApplications": len(apps) > limit,
        }

    def _live(self, caller: Caller) -> list[Application]:
        apps = self._metadata.image().analytics.live(
            caller.account_id, caller.region, now_ms=self._clock.wall_ms()
        )
        return [app for app in apps if self._sees(app)]

    async def _list_tags(self, request: Request, caller: Caller) -> Response:
        app = self._by_arn(str(request["ResourceARN"]), caller)
        return {"Tags": [{"Key": key, "Value": value} for key, value in app.tags]}

    def _by_arn(self, arn: str, caller: Caller) -> Application:
        app = self._metadata.image().analytics.by_arn(arn, now_ms=self._clock.wall_ms())
        if (
            app is None
            or app.account_id != caller.account_id
            or app.region != caller.region
            or not self._sees(app)
        ):
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, messages.resource_not_found(arn=arn))
        return app

    # --- Changes -----------------------------------------------------------------------------

    async def _create(self, request: Request, caller: Caller) -> Response:
        code = str(request.get("ApplicationCode", ""))
        inputs = list(request.get("Inputs", ()))
        self._check_code(code, [rules.input_description(item, "0.1") for item in inputs])
        tags = tuple(
            (str(tag["Key"]), str(tag.get("Value", ""))) for tag in request.get("Tags", ())
        )
        command = CreateAnalyticsApplication(
            now_ms=self._clock.wall_ms(),
            account_id=caller.account_id,
            region=caller.region,
            name=str(request["ApplicationName"]),
            description=str(request.get("ApplicationDescription", "")),
            code=code,
            inputs=rules.canonical(inputs),
            outputs=rules.canonical(list(request.get("Outputs", ()))),
            logging_options=rules.canonical(list(request.get("CloudWatchLoggingOptions", ()))),
            tags=tags,
            applications_max=self._settings.applications_max,
        )
        app = await self._propose_create(command)
        return {"ApplicationSummary": _summary(app, self._clock.wall_ms())}

    async def _propose_create(self, command: CreateAnalyticsApplication) -> Application:
        app = await self._metadata.propose(command)
        assert isinstance(app, Application)
        return app

    def _check_code(
        self,
        code: str,
        inputs: list[dict[str, Any]],
        references: list[dict[str, Any]] | None = None,
    ) -> None:
        program = sql.compile_program(code)
        self._checker.check(program, inputs, references)

    def _changer(self, operation: str) -> Callable[[Request, Caller], Awaitable[Response]]:
        async def change(request: Request, caller: Caller) -> Response:
            return await self._change(operation, request, caller)

        return change

    async def _change(self, operation: str, request: Request, caller: Caller) -> Response:
        await self._apply(operation, request, caller)
        return {}

    async def _apply(self, operation: str, request: Request, caller: Caller) -> Application:
        """Proposes one change (an operation of `_CHANGES`, in v1's request form) and returns
        the application after it."""
        if operation in ("TagResource", "UntagResource"):
            name = self._by_arn(str(request["ResourceARN"]), caller).name
        else:
            name = str(request["ApplicationName"])
            current = self._application(name, caller)
            self._precheck(operation, request, current)
        command = ChangeAnalyticsApplication(
            now_ms=self._clock.wall_ms(),
            account_id=caller.account_id,
            region=caller.region,
            name=name,
            operation=operation,
            request=rules.canonical(json_safe(request)),
            transition_ms=self._settings.transition_ms,
        )
        app = await self._metadata.propose(command)
        assert isinstance(app, Application)
        return app

    def _precheck(self, operation: str, request: Request, current: Application) -> None:
        """Checks that need the SQL compiler, before proposing: the code as it would be after
        an UpdateApplication or AddApplicationInput must compile against the inputs."""
        if operation == "UpdateApplication" and current.is_sql:
            updated = rules.update(current, request["ApplicationUpdate"], now_ms=0, updating_ms=0)
            self._check_code(
                updated.code, updated.input_descriptions(), updated.reference_descriptions()
            )
        elif operation == "StartApplication":
            _check_runnable(current)
        elif operation == "AddApplicationInput":
            inputs = [
                *current.input_descriptions(),
                rules.input_description(request["Input"], "0.1"),
            ]
            self._check_code(current.code, inputs, current.reference_descriptions())

    # --- DiscoverInputSchema ----------------------------------------------------------------

    async def _discover(self, request: Request, caller: Caller) -> Response:
        s3 = request.get("S3Configuration")
        arn = request.get("ResourceARN")
        if (s3 is None) == (arn is None):
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.DISCOVERY_SOURCE_ONE_OF)
        if s3 is not None:
            samples = await self._sample_object(str(s3["BucketARN"]), str(s3["FileKey"]), caller)
        else:
            stream = _stream_name(str(arn))
            position = request.get("InputStartingPositionConfiguration", {}).get(
                "InputStartingPosition", "TRIM_HORIZON"
            )
            samples = await self._sample(stream, position, _stream_caller(str(arn), caller))
        if not samples:
            raise ShoalError(ErrorCode.UNABLE_TO_DETECT_SCHEMA, messages.NO_RECORDS_TO_SAMPLE)
        try:
            schema, parsed = records.discover_schema(samples)
        except ValueError as error:
            raise ShoalError(ErrorCode.UNABLE_TO_DETECT_SCHEMA, str(error)) from error
        raw = [sample.decode("utf-8", errors="replace") for sample in samples]
        return {
            "InputSchema": schema,
            "ParsedInputRecords": parsed,
            "ProcessedInputRecords": raw,
            "RawInputRecords": raw,
        }

    async def _sample_object(self, bucket_arn: str, key: str, caller: Caller) -> list[bytes]:
        """An S3 object's first lines (KDA samples a reference or input file by its lines)."""
        try:
            data = await asyncio.to_thread(
                reference_data.read_object, bucket_arn, key, region=caller.region
            )
        except reference_data.ReferenceDataError as error:
            raise ShoalError(ErrorCode.UNABLE_TO_DETECT_SCHEMA, str(error)) from error
        lines = [line for line in data.splitlines() if line.strip()]
        return lines[:DISCOVERY_RECORDS_MAX]

    async def _sample(self, stream: str, position: str, caller: Caller) -> list[bytes]:
        iterator_type = "LATEST" if position == "NOW" else "TRIM_HORIZON"
        shards = await self._kinesis.call("ListShards", {"StreamName": stream}, caller)
        samples: list[bytes] = []
        for shard in shards.get("Shards", ()):
            iterator = await self._kinesis.call(
                "GetShardIterator",
                {
                    "StreamName": stream,
                    "ShardId": shard["ShardId"],
                    "ShardIteratorType": iterator_type,
                },
                caller,
            )
            got = await self._kinesis.call(
                "GetRecords",
                {"ShardIterator": iterator["ShardIterator"], "Limit": DISCOVERY_RECORDS_MAX},
                caller,
            )
            samples.extend(bytes(record["Data"]) for record in got.get("Records", ()))
            if len(samples) >= DISCOVERY_RECORDS_MAX:
                break
        return samples[:DISCOVERY_RECORDS_MAX]


# Operations that change one application through ChangeAnalyticsApplication.
_CHANGES = (
    "UpdateApplication",
    "AddApplicationInput",
    "AddApplicationOutput",
    "AddApplicationReferenceDataSource",
    "AddApplicationCloudWatchLoggingOption",
    "AddApplicationInputProcessingConfiguration",
    "DeleteApplicationInputProcessingConfiguration",
    "DeleteApplicationOutput",
    "DeleteApplicationReferenceDataSource",
    "DeleteApplicationCloudWatchLoggingOption",
    "StartApplication",
    "StopApplication",
    "DeleteApplication",
    "TagResource",
    "UntagResource",
)


def _check_runnable(app: Application) -> None:
    """What Shoal runs: an input from a Kinesis data stream or a Firehose delivery stream (a
    Lambda preprocessor or not), and outputs to Kinesis data streams, Firehose delivery streams
    and Lambda; an output must read a stream the code creates."""
    rules.require_sql(app)
    streams = {stream.name for stream in sql.compile_program(app.code).streams}
    for output in app.output_descriptions():
        name = str(output["Name"])
        if name not in streams and name.lower() != "error_stream":
            raise ShoalError(
                ErrorCode.INVALID_APPLICATION_CONFIGURATION,
                messages.output_stream_not_created(
                    output_id=output["OutputId"], name=app.name, stream=name
                ),
            )


def json_safe(value: Any) -> Any:
    """The request as JSON values: timestamps (DeleteApplication's CreateTimestamp) as epoch
    milliseconds."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _stream_caller(arn: str, caller: Caller) -> Caller:
    """The internal caller acting in the namespace (region, account) a stream's ARN names; an
    ARN without them (`arn:aws:kinesis:::stream/x`) names the caller's."""
    parts = arn.split(":")
    if len(parts) < 6:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.not_a_stream_arn(arn=arn))
    return Caller(
        region=parts[3] or caller.region,
        account_id=parts[4] or caller.account_id,
        door="internal",
    )


def _stream_name(arn: str) -> str:
    _, _, name = arn.partition(":stream/")
    if not name:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.not_a_stream_arn(arn=arn))
    return name


def timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _summary(app: Application, now_ms: int) -> dict[str, Any]:
    return {
        "ApplicationName": app.name,
        "ApplicationARN": app.arn,
        "ApplicationStatus": app.status_at(now_ms).value,
    }


def application_detail(app: Application, *, now_ms: int) -> dict[str, Any]:
    """DescribeApplication's ApplicationDetail."""
    detail: dict[str, Any] = {
        **_summary(app, now_ms),
        "CreateTimestamp": timestamp(app.created_ms),
        "LastUpdateTimestamp": timestamp(app.updated_ms),
        "InputDescriptions": app.input_descriptions(),
        "OutputDescriptions": app.output_descriptions(),
        "ReferenceDataSourceDescriptions": app.reference_descriptions(),
        "CloudWatchLoggingOptionDescriptions": app.logging_descriptions(),
        "ApplicationVersionId": app.version_id,
    }
    if app.description:
        detail["ApplicationDescription"] = app.description
    if app.code:
        detail["ApplicationCode"] = app.code
    return detail
