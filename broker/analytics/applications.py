"""Kinesis Data Analytics applications as metadata: the record and its rules, pure.

An application is one `Application` record in the metadata image (`ApplicationTable`, keyed by
account, region and name), changed only by the analytics commands (`broker/meta/commands.py`)
through `broker/meta/transitions/analytics_applications.py`, which calls the rules here. Every
rule takes the record and the AWS-shaped request members and returns the next record or raises
the ShoalError AWS would answer with; none reads a clock (time is the command's `now_ms`).

The configuration (inputs, outputs, reference data sources, CloudWatch logging options) is kept
as the AWS *description* documents (`InputDescriptions`, ...), canonical JSON text in the
record: DescribeApplication answers them as they are, and the running application reads its
schemas and destinations from them. Their ids are AWS's "<n>.1" form, unique per application.

Versions: `version_id` starts at 1 and every configuration change raises it by one; a change
naming another CurrentApplicationVersionId is refused (ConcurrentModificationException), so
two racing updates cannot both apply. Starting and stopping do not change the version, as on
AWS.

Runtimes: the record is shared by both APIs. `kinesisanalytics` (2015-08-14) sees the SQL-1_0
applications; `kinesisanalyticsv2` (2018-05-23) sees every application, SQL ones through its
shapes. An application of another runtime (FLINK-*, ZEPPELIN-FLINK-*) is stored, changed and
described (`configuration`: its v2 ApplicationConfiguration as the create form, canonical JSON)
but never started: Shoal runs SQL. Such an application keeps its earlier versions
(`past_versions`) for ListApplicationVersions and DescribeApplicationVersion, which AWS offers
for those runtimes only.

Status: `status` is the settled one (READY or RUNNING); a transition shows
`transient_status` (STARTING, STOPPING, UPDATING, DELETING) until `status_until_ms`, as
streams show CREATING. A DELETING application is gone once its timer has passed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker import arns
from broker.analytics import messages
from broker.analytics.snapshots import Snapshot
from broker.errors import ErrorCode, ShoalError

Document = dict[str, Any]

# AWS's limits for SQL applications (Kinesis Data Analytics developer guide, "Limits").
INPUTS_MAX = 1
OUTPUTS_MAX = 3
REFERENCE_DATA_SOURCES_MAX = 1
TAGS_MAX = 50
IN_APP_STREAMS_MAX = 64  # InputParallelism.Count is at most 64
PAST_VERSIONS_MAX = 100  # the earlier versions a FLINK or ZEPPELIN application keeps
OPERATIONS_MAX = 100  # the operations ListApplicationOperations keeps per application
# Managed Service for Apache Flink's maintenance window is 8 hours from its start time.
MAINTENANCE_WINDOW_HOURS = 8

SQL_RUNTIME = "SQL-1_0"  # the one runtime Shoal runs


class ApplicationStatus(enum.Enum):
    DELETING = "DELETING"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    READY = "READY"
    RUNNING = "RUNNING"
    UPDATING = "UPDATING"


def application_key(account_id: str, region: str, name: str) -> str:
    """The image key: applications are namespaced by the caller's account and region."""
    return f"{account_id}/{region}/{name}"


def application_arn(account_id: str, region: str, name: str) -> str:
    return arns.regional("kinesisanalytics", region, account_id, f"application/{name}")


# The placement lease's key: every stream's first shard (the lease table keys leases by shard).
PLACEMENT_LEASE_KEY = "shardId-000000000000"


def lease_application(app: Application, suffix: str) -> str:
    """The lease table's application name for `app` and `suffix` ("placement" or a reader),
    in DynamoDB table-name characters as the lease table requires."""
    return f"kinesisanalytics.{app.account_id}.{app.region}.{app.name}.{suffix}"


def canonical(value: Any) -> str:
    """Canonical JSON text (sorted keys): equal configurations store as equal records."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    """One SQL application (cluster view). Frozen; rules return a changed copy."""

    account_id: str
    region: str
    name: str
    arn: str
    description: str
    code: str
    version_id: int
    created_ms: int
    updated_ms: int
    status: ApplicationStatus  # READY or RUNNING
    transient_status: ApplicationStatus | None = None
    status_until_ms: int = 0
    inputs: str = "[]"  # canonical JSON of InputDescriptions
    outputs: str = "[]"  # OutputDescriptions
    reference_data_sources: str = "[]"  # ReferenceDataSourceDescriptions
    logging_options: str = "[]"  # CloudWatchLoggingOptionDescriptions
    tags: tuple[tuple[str, str], ...] = ()  # sorted by key
    next_id: int = 1  # the next "<n>.1" id handed to an input, output, source or option
    # Raised by every StartApplication: a runner that sees a new run knows to reset (a start
    # after a stop reads from the starting position given to that start).
    run: int = 0
    # The input reader (its lease application, `lease_application(app, reader)`): a new one
    # for a start from NOW or TRIM_HORIZON, the previous one for LAST_STOPPED_POINT.
    reader: str = ""
    # The reader's progress (RecordAnalyticsProgress, fenced by the placement lease): every
    # window ending at or before `emitted_through_ms` has been written to the outputs, and
    # each shard's continuous (unwindowed) rows through its sequence number.
    emitted_through_ms: int = 0
    continuous_through: tuple[tuple[str, str], ...] = ()
    # kinesisanalyticsv2 members (module docstring). A v1 application is SQL-1_0 without a
    # service execution role (its roles are per input and output).
    runtime: str = SQL_RUNTIME
    service_execution_role: str = ""
    mode: str = ""  # ApplicationMode (STREAMING, INTERACTIVE); "" for SQL applications
    configuration: str = "{}"  # a non-SQL application's ApplicationConfiguration
    past_versions: tuple[str, ...] = ()  # canonical JSON of `version_fields`, oldest first
    # UpdateApplicationMaintenanceConfiguration's window start ("HH:MM"; "" until one is set).
    maintenance_window_start: str = ""
    # The operations of a FLINK or ZEPPELIN application (ListApplicationOperations), each the
    # canonical JSON of `record_operation`'s document, oldest first; `operations_made` counts
    # them all (the next operation id's seed).
    operations: tuple[str, ...] = ()
    operations_made: int = 0

    @property
    def key(self) -> str:
        return application_key(self.account_id, self.region, self.name)

    @property
    def is_sql(self) -> bool:
        return self.runtime == SQL_RUNTIME

    def version_fields(self) -> Document:
        """What differs between two versions of an application (a past version's record)."""
        return {
            "version_id": self.version_id,
            "updated_ms": self.updated_ms,
            "description": self.description,
            "code": self.code,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "reference_data_sources": self.reference_data_sources,
            "logging_options": self.logging_options,
            "runtime": self.runtime,
            "service_execution_role": self.service_execution_role,
            "configuration": self.configuration,
        }

    def at_version(self, version_id: int) -> Application | None:
        """The application as it was at `version_id` (this one, or a kept past version)."""
        if version_id == self.version_id:
            return self
        for past in self.past_versions:
            fields = json.loads(past)
            if fields["version_id"] == version_id:
                return dataclasses.replace(self, past_versions=(), **fields)
        return None

    def configuration_document(self) -> Document:
        value: Document = json.loads(self.configuration)
        return value

    def status_at(self, now_ms: int) -> ApplicationStatus:
        if self.transient_status is not None and now_ms < self.status_until_ms:
            return self.transient_status
        if self.transient_status is ApplicationStatus.DELETING:
            return ApplicationStatus.DELETING
        return self.status

    def is_gone(self, now_ms: int) -> bool:
        return (
            self.transient_status is ApplicationStatus.DELETING and now_ms >= self.status_until_ms
        )

    def input_stream_name(self) -> str | None:
        """The Kinesis data stream the (first) input reads, if any."""
        inputs = self.input_descriptions()
        if not inputs:
            return None
        arn = inputs[0].get("KinesisStreamsInputDescription", {}).get("ResourceARN", "")
        _, _, name = str(arn).partition(":stream/")
        return name or None

    def input_descriptions(self) -> list[Document]:
        value: list[Document] = json.loads(self.inputs)
        return value

    def output_descriptions(self) -> list[Document]:
        value: list[Document] = json.loads(self.outputs)
        return value

    def reference_descriptions(self) -> list[Document]:
        value: list[Document] = json.loads(self.reference_data_sources)
        return value

    def logging_descriptions(self) -> list[Document]:
        value: list[Document] = json.loads(self.logging_options)
        return value

    def operation_records(self) -> list[Document]:
        """The kept operations, newest first (ListApplicationOperations' order)."""
        return [json.loads(record) for record in reversed(self.operations)]

    def maintenance_description(self) -> Document | None:
        """ApplicationMaintenanceConfigurationDescription, once a window is set."""
        if not self.maintenance_window_start:
            return None
        hours, minutes = self.maintenance_window_start.split(":")
        end = f"{(int(hours) + MAINTENANCE_WINDOW_HOURS) % 24:02d}:{minutes}"
        return {
            "ApplicationMaintenanceWindowStartTime": self.maintenance_window_start,
            "ApplicationMaintenanceWindowEndTime": end,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationTable:
    """Every application of the cluster, keyed by `application_key`."""

    applications: dict[str, Application] = field(default_factory=dict)
    # kinesisanalyticsv2's enhanced snapshots, keyed by `snapshots.snapshot_key`.
    snapshots: dict[str, Snapshot] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict field: identity is enough, tables are never keys
        return id(self)

    def get(self, key: str, *, now_ms: int) -> Application | None:
        """The live application under `key` (a DELETING one past its timer is gone)."""
        app = self.applications.get(key)
        if app is None or app.is_gone(now_ms):
            return None
        return app

    def by_arn(self, arn: str, *, now_ms: int) -> Application | None:
        for app in self.applications.values():
            if app.arn == arn and not app.is_gone(now_ms):
                return app
        return None

    def live(self, account_id: str, region: str, *, now_ms: int) -> list[Application]:
        """The namespace's live applications, sorted by name (ListApplications)."""
        found = [
            app
            for app in self.applications.values()
            if app.account_id == account_id and app.region == region and not app.is_gone(now_ms)
        ]
        return sorted(found, key=lambda app: app.name)

    def with_application(self, app: Application) -> ApplicationTable:
        applications = dict(self.applications)
        applications[app.key] = app
        return dataclasses.replace(self, applications=applications)

    def snapshot(self, key: str, *, now_ms: int) -> Snapshot | None:
        """The live enhanced snapshot under `key` (`snapshots.snapshot_key`)."""
        snapshot = self.snapshots.get(key)
        if snapshot is None or snapshot.is_gone(now_ms):
            return None
        return snapshot

    def live_snapshots(self, account_id: str, region: str, *, now_ms: int) -> list[Snapshot]:
        """The namespace's live snapshots, newest first (ListSnapshots' order)."""
        found = [
            snapshot
            for snapshot in self.snapshots.values()
            if snapshot.account_id == account_id
            and snapshot.region == region
            and not snapshot.is_gone(now_ms)
        ]
        return sorted(found, key=lambda snapshot: (-snapshot.created_ms, snapshot.name))

    def with_snapshot(self, snapshot: Snapshot, *, now_ms: int) -> ApplicationTable:
        """The table with `snapshot` stored (and deleted snapshots past their timer gone)."""
        snapshots = {key: kept for key, kept in self.snapshots.items() if not kept.is_gone(now_ms)}
        snapshots[snapshot.key] = snapshot
        return dataclasses.replace(self, snapshots=snapshots)


# --- Errors ----------------------------------------------------------------------------------


def not_found(name: str, account_id: str) -> ShoalError:
    return ShoalError(
        ErrorCode.RESOURCE_NOT_FOUND,
        messages.application_not_found(name=name, account_id=account_id),
    )


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, message)


def check_version(app: Application, expected: int) -> None:
    if expected != app.version_id:
        raise ShoalError(
            ErrorCode.CONCURRENT_MODIFICATION,
            messages.version_mismatch(version_id=app.version_id, expected=expected),
        )


def require_status(app: Application, now_ms: int, *allowed: ApplicationStatus) -> None:
    status = app.status_at(now_ms)
    if status not in allowed:
        wanted = " or ".join(state.value for state in allowed)
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.wrong_status(name=app.name, status=status.value, wanted=wanted),
        )


# --- Descriptions from requests ----------------------------------------------------------------


def _described(member: Mapping[str, Any]) -> Document:
    """A destination or source member as its description (same members, e.g. ResourceARN)."""
    return dict(member)


def input_description(request: Mapping[str, Any], input_id: str) -> Document:
    """An `Input` as its `InputDescription`; the in-application streams are the prefix with
    _001, _002, ... for each of InputParallelism.Count (1 by default)."""
    prefix = str(request["NamePrefix"])
    count = int(request.get("InputParallelism", {}).get("Count", 1))
    if not 1 <= count <= IN_APP_STREAMS_MAX:
        raise _invalid(messages.input_parallelism_range(maximum=IN_APP_STREAMS_MAX))
    described: Document = {
        "InputId": input_id,
        "NamePrefix": prefix,
        "InAppStreamNames": [f"{prefix}_{index:03d}" for index in range(1, count + 1)],
        "InputSchema": dict(request["InputSchema"]),
        "InputParallelism": {"Count": count},
        "InputStartingPositionConfiguration": {},
    }
    sources = [key for key in ("KinesisStreamsInput", "KinesisFirehoseInput") if key in request]
    if len(sources) != 1:
        raise _invalid(messages.INPUT_NEEDS_ONE_SOURCE)
    described[f"{sources[0]}Description"] = _described(request[sources[0]])
    processing = request.get("InputProcessingConfiguration")
    if processing is not None:
        described["InputProcessingConfigurationDescription"] = processing_description(processing)
    return described


def processing_description(request: Mapping[str, Any]) -> Document:
    return {"InputLambdaProcessorDescription": _described(request["InputLambdaProcessor"])}


def output_description(request: Mapping[str, Any], output_id: str) -> Document:
    described: Document = {
        "OutputId": output_id,
        "Name": str(request["Name"]),
        "DestinationSchema": dict(request["DestinationSchema"]),
    }
    kinds = ("KinesisStreamsOutput", "KinesisFirehoseOutput", "LambdaOutput")
    destinations = [key for key in kinds if key in request]
    if len(destinations) != 1:
        raise _invalid(messages.OUTPUT_NEEDS_ONE_DESTINATION)
    described[f"{destinations[0]}Description"] = _described(request[destinations[0]])
    return described


def reference_description(request: Mapping[str, Any], reference_id: str) -> Document:
    described: Document = {
        "ReferenceId": reference_id,
        "TableName": str(request["TableName"]),
        "ReferenceSchema": dict(request["ReferenceSchema"]),
    }
    if "S3ReferenceDataSource" in request:
        described["S3ReferenceDataSourceDescription"] = _described(request["S3ReferenceDataSource"])
    return described


def logging_description(request: Mapping[str, Any], option_id: str) -> Document:
    described: Document = {
        "CloudWatchLoggingOptionId": option_id,
        "LogStreamARN": str(request["LogStreamARN"]),
    }
    if "RoleARN" in request:  # v1's; v2 logs with the service execution role
        described["RoleARN"] = str(request["RoleARN"])
    return described


# --- Rules ------------------------------------------------------------------------------------


def create(
    *,
    account_id: str,
    region: str,
    name: str,
    description: str,
    code: str,
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    logging_options: Sequence[Mapping[str, Any]],
    tags: Sequence[tuple[str, str]],
    now_ms: int,
    references: Sequence[Mapping[str, Any]] = (),
    runtime: str = SQL_RUNTIME,
    service_execution_role: str = "",
    mode: str = "",
    configuration: Mapping[str, Any] | None = None,
) -> Application:
    """A new READY application at version 1 (CreateApplication, either API). A SQL
    application's configuration is its inputs, outputs and reference data sources; another
    runtime's is `configuration` (the v2 create form), and it has no SQL parts."""
    if runtime != SQL_RUNTIME and (inputs or outputs or references or code):
        raise _invalid(
            messages.sql_parts_on_other_runtime(sql_runtime=SQL_RUNTIME, runtime=runtime)
        )
    if len(inputs) > INPUTS_MAX:
        raise _invalid(messages.inputs_max(maximum=INPUTS_MAX))
    if len(outputs) > OUTPUTS_MAX:
        raise ShoalError(ErrorCode.LIMIT_EXCEEDED, messages.outputs_max(maximum=OUTPUTS_MAX))
    if len(dict(tags)) > TAGS_MAX:
        raise ShoalError(ErrorCode.TOO_MANY_TAGS, messages.application_tags_max(maximum=TAGS_MAX))
    next_id = 1
    described_inputs = []
    for request in inputs:
        described_inputs.append(input_description(request, f"{next_id}.1"))
        next_id += 1
    described_outputs = []
    for request in outputs:
        described_outputs.append(output_description(request, f"{next_id}.1"))
        next_id += 1
    if len(references) > REFERENCE_DATA_SOURCES_MAX:
        raise _invalid(messages.reference_data_sources_max(maximum=REFERENCE_DATA_SOURCES_MAX))
    described_references = []
    for request in references:
        described_references.append(reference_description(request, f"{next_id}.1"))
        next_id += 1
    described_logging = []
    for request in logging_options:
        described_logging.append(logging_description(request, f"{next_id}.1"))
        next_id += 1
    _check_unique_outputs(described_outputs)
    configuration = dict(configuration or {})
    if configuration.get("VpcConfigurations"):
        described_vpcs = []
        for request in configuration["VpcConfigurations"]:
            described_vpcs.append(vpc_description(request, f"{next_id}.1"))
            next_id += 1
        configuration["VpcConfigurations"] = described_vpcs
    return Application(
        account_id=account_id,
        region=region,
        name=name,
        arn=application_arn(account_id, region, name),
        description=description,
        code=code,
        version_id=1,
        created_ms=now_ms,
        updated_ms=now_ms,
        status=ApplicationStatus.READY,
        transient_status=None,
        inputs=canonical(described_inputs),
        outputs=canonical(described_outputs),
        reference_data_sources=canonical(described_references),
        logging_options=canonical(described_logging),
        tags=tuple(sorted(dict(tags).items())),
        next_id=next_id,
        runtime=runtime,
        service_execution_role=service_execution_role,
        mode=mode,
        configuration=canonical(configuration),
    )


def _check_unique_outputs(outputs: Sequence[Mapping[str, Any]]) -> None:
    names = [str(output["Name"]) for output in outputs]
    if len(set(names)) != len(names):
        raise _invalid(messages.OUTPUTS_SHARE_A_STREAM)


def _changed(app: Application, *, now_ms: int, updating_ms: int, **changes: Any) -> Application:
    """A configuration change: the next version; a RUNNING application shows UPDATING."""
    transient = None
    until = 0
    if app.status is ApplicationStatus.RUNNING and updating_ms > 0:
        transient = ApplicationStatus.UPDATING
        until = now_ms + updating_ms
    past = app.past_versions
    if not app.is_sql:  # ListApplicationVersions: AWS keeps versions of these runtimes only
        past = (*past, canonical(app.version_fields()))[-PAST_VERSIONS_MAX:]
    return dataclasses.replace(
        app,
        past_versions=past,
        version_id=app.version_id + 1,
        updated_ms=now_ms,
        transient_status=transient,
        status_until_ms=until,
        **changes,
    )


def _find(items: list[Document], key: str, wanted: str, what: str, app: Application) -> int:
    for index, item in enumerate(items):
        if item.get(key) == wanted:
            return index
    raise ShoalError(
        ErrorCode.RESOURCE_NOT_FOUND,
        messages.member_not_found(what=what, wanted=wanted, name=app.name),
    )


def _strip_update(member: Mapping[str, Any]) -> Document:
    """An *Update member (ResourceARNUpdate, ...) as the description's members."""
    return {key.removesuffix("Update"): value for key, value in member.items()}


def _merge_schema(schema: Mapping[str, Any], update: Mapping[str, Any]) -> Document:
    return {**schema, **_strip_update(update)}


def update(
    app: Application, update_request: Mapping[str, Any], *, now_ms: int, updating_ms: int
) -> Application:
    """UpdateApplication: code, inputs, outputs, reference data sources and logging options
    changed by id; an id that does not exist is ResourceNotFound."""
    changes: dict[str, Any] = {}
    sql_members = ("ApplicationCodeUpdate", "InputUpdates", "OutputUpdates")
    if not app.is_sql and any(member in update_request for member in sql_members):
        raise _not_sql(app, "SQL code, inputs and outputs")
    if "ApplicationCodeUpdate" in update_request:
        changes["code"] = str(update_request["ApplicationCodeUpdate"])
    # kinesisanalyticsv2's members (the v2 service puts them in the update it proposes).
    if "ServiceExecutionRoleUpdate" in update_request:
        changes["service_execution_role"] = str(update_request["ServiceExecutionRoleUpdate"])
    if "RuntimeEnvironmentUpdate" in update_request:
        changes["runtime"] = _runtime_update(app, str(update_request["RuntimeEnvironmentUpdate"]))
    if "ConfigurationUpdate" in update_request:
        configuration_update = dict(update_request["ConfigurationUpdate"])
        vpc_updates = configuration_update.pop("VpcConfigurationUpdates", ())
        configuration = merge_update(app.configuration_document(), configuration_update)
        if vpc_updates:
            configuration["VpcConfigurations"] = _updated_vpcs(app, configuration, vpc_updates)
        changes["configuration"] = canonical(configuration)
    inputs = app.input_descriptions()
    for change in update_request.get("InputUpdates", ()):
        index = _find(inputs, "InputId", str(change["InputId"]), "Input", app)
        inputs[index] = _updated_input(inputs[index], change)
    outputs = app.output_descriptions()
    for change in update_request.get("OutputUpdates", ()):
        index = _find(outputs, "OutputId", str(change["OutputId"]), "Output", app)
        outputs[index] = _updated_output(outputs[index], change)
    _check_unique_outputs(outputs)
    references = app.reference_descriptions()
    for change in update_request.get("ReferenceDataSourceUpdates", ()):
        index = _find(
            references, "ReferenceId", str(change["ReferenceId"]), "Reference data source", app
        )
        references[index] = _updated_reference(references[index], change)
    options = app.logging_descriptions()
    for change in update_request.get("CloudWatchLoggingOptionUpdates", ()):
        option_id = str(change["CloudWatchLoggingOptionId"])
        index = _find(options, "CloudWatchLoggingOptionId", option_id, "Logging option", app)
        options[index] = {**options[index], **_strip_update(change)}
        options[index]["CloudWatchLoggingOptionId"] = option_id
    return _changed(
        app,
        now_ms=now_ms,
        updating_ms=updating_ms,
        inputs=canonical(inputs),
        outputs=canonical(outputs),
        reference_data_sources=canonical(references),
        logging_options=canonical(options),
        **changes,
    )


def _runtime_update(app: Application, runtime: str) -> str:
    """A FLINK application may move to another FLINK runtime (AWS's in-place upgrade); a SQL
    application stays SQL and a ZEPPELIN one stays ZEPPELIN."""
    family = runtime.rsplit("-", 1)[0]
    if app.is_sql or runtime == SQL_RUNTIME or family != app.runtime.rsplit("-", 1)[0]:
        raise _invalid(
            messages.runtime_change_refused(
                name=app.name, from_runtime=app.runtime, to_runtime=runtime
            )
        )
    return runtime


def _not_sql(app: Application, what: str) -> ShoalError:
    return _invalid(
        messages.sql_only_configuration(
            what=what, sql_runtime=SQL_RUNTIME, name=app.name, runtime=app.runtime
        )
    )


def update_key(name: str) -> str:
    """The member an update member changes: XUpdate -> X, XUpdates -> X's plural form as the
    create form spells it (EnvironmentPropertyUpdates -> EnvironmentProperties)."""
    if name.endswith("Updates"):
        return _PLURALS.get(name, name.removesuffix("Updates") + "s")
    return name.removesuffix("Update")


# Update members whose create-form member is not "<stem>s".
_PLURALS = {"EnvironmentPropertyUpdates": "EnvironmentProperties"}


def merge_update(current: Mapping[str, Any], update_form: Mapping[str, Any]) -> Document:
    """A v2 configuration update (FlinkApplicationConfigurationUpdate, ...) applied to the
    stored create form: nested updates merge member by member, anything else replaces."""
    merged = dict(current)
    for name, value in update_form.items():
        key = update_key(name)
        existing = merged.get(key)
        if isinstance(value, Mapping) and isinstance(existing, Mapping):
            merged[key] = merge_update(existing, value)
        elif isinstance(value, Mapping):
            merged[key] = merge_update({}, value)
        else:
            merged[key] = value
    return merged


def _updated_input(described: Document, change: Mapping[str, Any]) -> Document:
    result = dict(described)
    if "NamePrefixUpdate" in change:
        result["NamePrefix"] = str(change["NamePrefixUpdate"])
    if "InputParallelismUpdate" in change:
        count = int(change["InputParallelismUpdate"]["CountUpdate"])
        if not 1 <= count <= IN_APP_STREAMS_MAX:
            raise _invalid(messages.input_parallelism_range(maximum=IN_APP_STREAMS_MAX))
        result["InputParallelism"] = {"Count": count}
    count = int(result["InputParallelism"]["Count"])
    prefix = str(result["NamePrefix"])
    result["InAppStreamNames"] = [f"{prefix}_{index:03d}" for index in range(1, count + 1)]
    for kind in ("KinesisStreamsInput", "KinesisFirehoseInput"):
        if f"{kind}Update" in change:
            result.pop("KinesisStreamsInputDescription", None)
            result.pop("KinesisFirehoseInputDescription", None)
            result[f"{kind}Description"] = _strip_update(change[f"{kind}Update"])
    if "InputSchemaUpdate" in change:
        result["InputSchema"] = _merge_schema(result["InputSchema"], change["InputSchemaUpdate"])
    processing = change.get("InputProcessingConfigurationUpdate")
    if processing is not None:
        lambda_update = _strip_update(processing["InputLambdaProcessorUpdate"])
        result["InputProcessingConfigurationDescription"] = {
            "InputLambdaProcessorDescription": lambda_update
        }
    return result


def _updated_output(described: Document, change: Mapping[str, Any]) -> Document:
    result = dict(described)
    if "NameUpdate" in change:
        result["Name"] = str(change["NameUpdate"])
    for kind in ("KinesisStreamsOutput", "KinesisFirehoseOutput", "LambdaOutput"):
        if f"{kind}Update" in change:
            for other in ("KinesisStreamsOutput", "KinesisFirehoseOutput", "LambdaOutput"):
                result.pop(f"{other}Description", None)
            result[f"{kind}Description"] = _strip_update(change[f"{kind}Update"])
    if "DestinationSchemaUpdate" in change:
        result["DestinationSchema"] = dict(change["DestinationSchemaUpdate"])
    return result


def _updated_reference(described: Document, change: Mapping[str, Any]) -> Document:
    result = dict(described)
    if "TableNameUpdate" in change:
        result["TableName"] = str(change["TableNameUpdate"])
    if "S3ReferenceDataSourceUpdate" in change:
        current = dict(result.get("S3ReferenceDataSourceDescription", {}))
        current.update(_strip_update(change["S3ReferenceDataSourceUpdate"]))
        result["S3ReferenceDataSourceDescription"] = current
    if "ReferenceSchemaUpdate" in change:
        result["ReferenceSchema"] = dict(change["ReferenceSchemaUpdate"])
    return result


def vpc_description(request: Mapping[str, Any], vpc_configuration_id: str) -> Document:
    """A `VpcConfiguration` as stored (and described): its subnets and security groups with
    an id, and a VpcId. AWS finds the VPC the subnets belong to; Shoal has no VPCs to look
    subnets up in, so the VpcId is derived from the subnets (the same subnets, the same id)."""
    subnets = [str(subnet) for subnet in request["SubnetIds"]]
    groups = [str(group) for group in request["SecurityGroupIds"]]
    digest = hashlib.sha256("\n".join(sorted(subnets)).encode()).hexdigest()
    return {
        "VpcConfigurationId": vpc_configuration_id,
        "VpcId": f"vpc-{digest[:17]}",
        "SubnetIds": subnets,
        "SecurityGroupIds": groups,
    }


def _vpcs(app: Application) -> list[Document]:
    value: list[Document] = list(app.configuration_document().get("VpcConfigurations", ()))
    return value


def _updated_vpcs(
    app: Application, configuration: Mapping[str, Any], updates: Sequence[Mapping[str, Any]]
) -> list[Document]:
    """UpdateApplication's VpcConfigurationUpdates, each changing one configuration by id."""
    vpcs = [dict(vpc) for vpc in configuration.get("VpcConfigurations", ())]
    for change in updates:
        vpc_id = str(change["VpcConfigurationId"])
        index = _find(vpcs, "VpcConfigurationId", vpc_id, "VPC configuration", app)
        vpcs[index] = vpc_description(
            {
                "SubnetIds": change.get("SubnetIdUpdates", vpcs[index]["SubnetIds"]),
                "SecurityGroupIds": change.get(
                    "SecurityGroupIdUpdates", vpcs[index]["SecurityGroupIds"]
                ),
            },
            vpc_id,
        )
    return vpcs


def add_vpc_configuration(
    app: Application, request: Mapping[str, Any], *, now_ms: int, updating_ms: int
) -> Application:
    """AddApplicationVpcConfiguration (Managed Service for Apache Flink applications only)."""
    if app.is_sql:
        raise _invalid(messages.VPC_NOT_FOR_SQL)
    vpc_id, next_id = _next_id(app)
    configuration = app.configuration_document()
    configuration["VpcConfigurations"] = [*_vpcs(app), vpc_description(request, vpc_id)]
    return _changed(
        app,
        now_ms=now_ms,
        updating_ms=updating_ms,
        configuration=canonical(configuration),
        next_id=next_id,
    )


def delete_vpc_configuration(
    app: Application, vpc_id: str, *, now_ms: int, updating_ms: int
) -> Application:
    if app.is_sql:
        raise _invalid(messages.VPC_NOT_FOR_SQL)
    vpcs = _vpcs(app)
    del vpcs[_find(vpcs, "VpcConfigurationId", vpc_id, "VPC configuration", app)]
    configuration = app.configuration_document()
    if vpcs:
        configuration["VpcConfigurations"] = vpcs
    else:
        configuration.pop("VpcConfigurations", None)
    return _changed(
        app, now_ms=now_ms, updating_ms=updating_ms, configuration=canonical(configuration)
    )


def update_maintenance(app: Application, window_start: str) -> Application:
    """UpdateApplicationMaintenanceConfiguration: the window used from the next maintenance
    on; not a configuration change (the version stays, as on AWS)."""
    if app.is_sql:
        raise _unsupported(app, "UpdateApplicationMaintenanceConfiguration")
    hours, _, minutes = window_start.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise _invalid(messages.maintenance_window_invalid(window_start=window_start))
    return dataclasses.replace(app, maintenance_window_start=f"{int(hours):02d}:{minutes}")


def _unsupported(app: Application, operation: str) -> ShoalError:
    return ShoalError(
        ErrorCode.UNSUPPORTED_OPERATION,
        messages.flink_only_operation(operation=operation, name=app.name, sql_runtime=SQL_RUNTIME),
    )


def operation_id(app: Application, sequence: int) -> str:
    """The id of the application's `sequence`th operation: unique per application (and per
    creation of a name), the same on every replica."""
    digest = hashlib.sha256(f"{app.arn}#{app.created_ms}#{sequence}".encode()).hexdigest()
    return digest[:16]


# The changes a FLINK or ZEPPELIN application lists as its operations (those whose v2
# response carries an OperationId; starts and rollbacks are refused here, never recorded).
RECORDED_OPERATIONS = frozenset(
    {
        "UpdateApplication",
        "AddApplicationVpcConfiguration",
        "DeleteApplicationVpcConfiguration",
        "AddApplicationCloudWatchLoggingOption",
        "DeleteApplicationCloudWatchLoggingOption",
    }
)


def record_operation(
    before: Application, after: Application, operation: str, *, now_ms: int
) -> Application:
    """A FLINK or ZEPPELIN application's operation, for ListApplicationOperations and
    DescribeApplicationOperation. Shoal applies a change to an application that is not
    running at once, so the operation is SUCCESSFUL when it is recorded."""
    sequence = after.operations_made + 1
    record: Document = {
        "OperationId": operation_id(after, sequence),
        "Operation": operation,
        "StartTime": now_ms,
        "EndTime": now_ms,
        "OperationStatus": "SUCCESSFUL",
    }
    if after.version_id != before.version_id:
        record["ApplicationVersionChangeDetails"] = {
            "ApplicationVersionUpdatedFrom": before.version_id,
            "ApplicationVersionUpdatedTo": after.version_id,
        }
    return dataclasses.replace(
        after,
        operations=(*after.operations, canonical(record))[-OPERATIONS_MAX:],
        operations_made=sequence,
    )


def _next_id(app: Application) -> tuple[str, int]:
    return f"{app.next_id}.1", app.next_id + 1


def add_input(
    app: Application, request: Mapping[str, Any], *, now_ms: int, updating_ms: int
) -> Application:
    if not app.is_sql:
        raise _not_sql(app, "Inputs")
    inputs = app.input_descriptions()
    if len(inputs) >= INPUTS_MAX:
        raise _invalid(messages.already_has_input(name=app.name))
    input_id, next_id = _next_id(app)
    inputs.append(input_description(request, input_id))
    return _changed(
        app, now_ms=now_ms, updating_ms=updating_ms, inputs=canonical(inputs), next_id=next_id
    )


def add_output(
    app: Application, request: Mapping[str, Any], *, now_ms: int, updating_ms: int
) -> Application:
    if not app.is_sql:
        raise _not_sql(app, "Outputs")
    outputs = app.output_descriptions()
    if len(outputs) >= OUTPUTS_MAX:
        raise ShoalError(ErrorCode.LIMIT_EXCEEDED, messages.outputs_max(maximum=OUTPUTS_MAX))
    output_id, next_id = _next_id(app)
    outputs.append(output_description(request, output_id))
    _check_unique_outputs(outputs)
    return _changed(
        app, now_ms=now_ms, updating_ms=updating_ms, outputs=canonical(outputs), next_id=next_id
    )


def add_reference(
    app: Application, request: Mapping[str, Any], *, now_ms: int, updating_ms: int
) -> Application:
    if not app.is_sql:
        raise _not_sql(app, "Reference data sources")
    references = app.reference_descriptions()
    if len(references) >= REFERENCE_DATA_SOURCES_MAX:
        raise _invalid(messages.already_has_reference_data_source(name=app.name))
    reference_id, next_id = _next_id(app)
    references.append(reference_description(request, reference_id))
    return _changed(
        app,
        now_ms=now_ms,
        updating_ms=updating_ms,
        reference_data_sources=canonical(references),
        next_id=next_id,
    )


def add_logging_option(
    app: Application, request: Mapping[str, Any], *, now_ms: int, updating_ms: int
) -> Application:
    options = app.logging_descriptions()
    if any(option["LogStreamARN"] == request["LogStreamARN"] for option in options):
        raise _invalid(
            messages.already_logs_to(name=app.name, log_stream_arn=request["LogStreamARN"])
        )
    option_id, next_id = _next_id(app)
    options.append(logging_description(request, option_id))
    return _changed(
        app,
        now_ms=now_ms,
        updating_ms=updating_ms,
        logging_options=canonical(options),
        next_id=next_id,
    )


def add_input_processing(
    app: Application,
    input_id: str,
    request: Mapping[str, Any],
    *,
    now_ms: int,
    updating_ms: int,
) -> Application:
    inputs = app.input_descriptions()
    index = _find(inputs, "InputId", input_id, "Input", app)
    if "InputProcessingConfigurationDescription" in inputs[index]:
        raise _invalid(messages.already_has_input_processing(input_id=input_id))
    inputs[index]["InputProcessingConfigurationDescription"] = processing_description(request)
    return _changed(app, now_ms=now_ms, updating_ms=updating_ms, inputs=canonical(inputs))


def delete_input_processing(
    app: Application, input_id: str, *, now_ms: int, updating_ms: int
) -> Application:
    inputs = app.input_descriptions()
    index = _find(inputs, "InputId", input_id, "Input", app)
    if inputs[index].pop("InputProcessingConfigurationDescription", None) is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            messages.no_input_processing(input_id=input_id),
        )
    return _changed(app, now_ms=now_ms, updating_ms=updating_ms, inputs=canonical(inputs))


def delete_output(
    app: Application, output_id: str, *, now_ms: int, updating_ms: int
) -> Application:
    outputs = app.output_descriptions()
    del outputs[_find(outputs, "OutputId", output_id, "Output", app)]
    return _changed(app, now_ms=now_ms, updating_ms=updating_ms, outputs=canonical(outputs))


def delete_reference(
    app: Application, reference_id: str, *, now_ms: int, updating_ms: int
) -> Application:
    references = app.reference_descriptions()
    del references[_find(references, "ReferenceId", reference_id, "Reference data source", app)]
    return _changed(
        app,
        now_ms=now_ms,
        updating_ms=updating_ms,
        reference_data_sources=canonical(references),
    )


def delete_logging_option(
    app: Application, option_id: str, *, now_ms: int, updating_ms: int
) -> Application:
    options = app.logging_descriptions()
    del options[_find(options, "CloudWatchLoggingOptionId", option_id, "Logging option", app)]
    return _changed(app, now_ms=now_ms, updating_ms=updating_ms, logging_options=canonical(options))


def start(
    app: Application,
    input_configurations: Sequence[Mapping[str, Any]],
    *,
    now_ms: int,
    starting_ms: int,
) -> Application:
    """StartApplication: READY -> STARTING -> RUNNING, reading each input from the starting
    position its configuration names. An application without an input cannot start."""
    require_status(app, now_ms, ApplicationStatus.READY)
    require_sql(app)
    inputs = app.input_descriptions()
    if not inputs:
        raise ShoalError(
            ErrorCode.INVALID_APPLICATION_CONFIGURATION,
            messages.no_input(name=app.name),
        )
    for configuration in input_configurations:
        index = _find(inputs, "InputId", str(configuration["Id"]), "Input", app)
        inputs[index]["InputStartingPositionConfiguration"] = dict(
            configuration["InputStartingPositionConfiguration"]
        )
    position = (
        inputs[0].get("InputStartingPositionConfiguration", {}).get("InputStartingPosition", "NOW")
    )
    run = app.run + 1
    progress: dict[str, Any] = {}
    if position != "LAST_STOPPED_POINT" or not app.reader:
        # A new reader starts without progress; LAST_STOPPED_POINT keeps both.
        progress = {"reader": f"run{run}", "emitted_through_ms": 0, "continuous_through": ()}
    return dataclasses.replace(
        app,
        status=ApplicationStatus.RUNNING,
        transient_status=ApplicationStatus.STARTING,
        status_until_ms=now_ms + starting_ms,
        inputs=canonical(inputs),
        run=run,
        **progress,
    )


def require_sql(app: Application) -> None:
    """Shoal runs SQL applications; one of another runtime is refused, naming both."""
    if not app.is_sql:
        raise ShoalError(
            ErrorCode.UNSUPPORTED_OPERATION,
            messages.runtime_not_run(name=app.name, runtime=app.runtime, sql_runtime=SQL_RUNTIME),
        )


def record_progress(
    app: Application,
    *,
    reader: str,
    emitted_through_ms: int,
    continuous_through: Sequence[tuple[str, str]],
) -> Application:
    """RecordAnalyticsProgress: marks only move forward (a retried or reordered proposal
    cannot take one back); a mark of another reader (an earlier run) is refused."""
    if reader != app.reader:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.reader_changed(name=app.name, reader=app.reader, wanted=reader),
        )
    through = dict(app.continuous_through)
    for shard_id, sequence_number in continuous_through:
        current = through.get(shard_id)
        if current is None or int(sequence_number) > int(current):
            through[shard_id] = sequence_number
    return dataclasses.replace(
        app,
        emitted_through_ms=max(app.emitted_through_ms, emitted_through_ms),
        continuous_through=tuple(sorted(through.items())),
    )


def stop(app: Application, *, now_ms: int, stopping_ms: int) -> Application:
    """StopApplication: RUNNING -> STOPPING -> READY; a READY application stays READY."""
    status = app.status_at(now_ms)
    if status is ApplicationStatus.READY:
        return app
    require_status(app, now_ms, ApplicationStatus.RUNNING, ApplicationStatus.STARTING)
    return dataclasses.replace(
        app,
        status=ApplicationStatus.READY,
        transient_status=ApplicationStatus.STOPPING,
        status_until_ms=now_ms + stopping_ms,
    )


def delete(
    app: Application, create_timestamp_ms: int, *, now_ms: int, deleting_ms: int
) -> Application:
    """DeleteApplication: the caller must name the application's CreateTimestamp (AWS's guard
    against deleting a recreated application); a running application is stopped."""
    if not _same_timestamp(create_timestamp_ms, app.created_ms):
        raise ShoalError(
            ErrorCode.CONCURRENT_MODIFICATION,
            messages.create_timestamp_mismatch(name=app.name),
        )
    if app.status_at(now_ms) is ApplicationStatus.DELETING:
        raise ShoalError(ErrorCode.RESOURCE_IN_USE, messages.already_deleting(name=app.name))
    return dataclasses.replace(
        app,
        status=ApplicationStatus.READY,
        transient_status=ApplicationStatus.DELETING,
        status_until_ms=now_ms + deleting_ms,
    )


def _same_timestamp(given_ms: int, created_ms: int) -> bool:
    """Equal to the millisecond, or to the second when the caller's timestamp has no
    milliseconds (the AWS CLI prints and takes whole seconds)."""
    if given_ms == created_ms:
        return True
    return given_ms % 1000 == 0 and given_ms // 1000 == created_ms // 1000


def change_tags(
    app: Application, *, added: Sequence[tuple[str, str]], removed: Sequence[str]
) -> Application:
    tags = dict(app.tags)
    tags.update(added)
    for key in removed:
        tags.pop(key, None)
    if len(tags) > TAGS_MAX:
        raise ShoalError(ErrorCode.TOO_MANY_TAGS, messages.application_tags_max(maximum=TAGS_MAX))
    return dataclasses.replace(app, tags=tuple(sorted(tags.items())))
