"""AnalyticsV2Service: the kinesisanalyticsv2 (2018-05-23) operations behind both doors.

One application store serves both APIs (`broker.analytics.applications`): a SQL application
made through either is the same record, shown by v1 in its shapes and by v2 in its own
(`RuntimeEnvironment: SQL-1_0`, the SQL parts under `SqlApplicationConfigurationDescription`,
the code under `ApplicationCodeConfigurationDescription`). v2 requests are translated to the v1
request form of the same change and proposed through the same command, so the version checks,
states and SQL checks are v1's, applied once.

Applications of the FLINK and ZEPPELIN runtimes are stored, described, listed, tagged, updated,
versioned and deleted as AWS does; StartApplication refuses them (UnsupportedOperation), naming
the runtime Shoal runs. ListApplicationVersions, DescribeApplicationVersion and
RollbackApplication are, as on AWS, for those runtimes only; a rollback needs a running
application, which such an application never is here, so it is refused with its status.
Application snapshots likewise exist only for running Flink applications: their list is empty.
So are VPC configurations, the maintenance window and the application operations list (kept on
the record by the state machine), refused for SQL applications with AWS's errors.

Enhanced snapshots (CreateSnapshot, ImportSnapshot, ...) belong to the account and region
(`broker.analytics.snapshots`); the S3 reads and copies of ImportSnapshot and ExportSnapshot are
done here, in a thread, before the command that records their outcome is proposed.

`ConditionalToken` (v2's alternative to CurrentApplicationVersionId) is a digest of the ARN
and version; a request naming one is checked and proposed with the version it stands for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from broker.analytics import applications as rules
from broker.analytics import messages, snapshot_storage, snapshots, v2_shapes
from broker.analytics.applications import SQL_RUNTIME, Application, ApplicationStatus
from broker.analytics.service import (
    AnalyticsService,
    Request,
    Response,
    json_safe,
    timestamp,
)
from broker.analytics.snapshots import Snapshot
from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import ChangeAnalyticsSnapshot, CreateAnalyticsApplication

# The v2 operations that are v1's change of the same name, with the same request members
# (plus ConditionalToken), answered with the ARN, the new version and `answer`'s members.
_ADD_OR_DELETE: dict[str, tuple[str, ...]] = {
    "AddApplicationInput": ("InputDescriptions",),
    "AddApplicationOutput": ("OutputDescriptions",),
    "AddApplicationReferenceDataSource": ("ReferenceDataSourceDescriptions",),
    "AddApplicationCloudWatchLoggingOption": ("CloudWatchLoggingOptionDescriptions",),
    "AddApplicationInputProcessingConfiguration": ("InputProcessingConfiguration",),
    "DeleteApplicationOutput": (),
    "DeleteApplicationReferenceDataSource": (),
    "DeleteApplicationInputProcessingConfiguration": (),
    "DeleteApplicationCloudWatchLoggingOption": ("CloudWatchLoggingOptionDescriptions",),
}

_SQL_CONFIGURATION = ("SqlApplicationConfiguration", "ApplicationCodeConfiguration")


class AnalyticsV2Service(AnalyticsService):
    """The kinesisanalyticsv2 API (module docstring). One per node, next to the v1 one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers = {
            "CreateApplication": self._create_v2,
            "DescribeApplication": self._describe_v2,
            "ListApplications": self._list_v2,
            "DiscoverInputSchema": self._discover_v2,
            "UpdateApplication": self._update_v2,
            "StartApplication": self._start_v2,
            "StopApplication": self._stop_v2,
            "DeleteApplication": self._changer("DeleteApplication"),
            "ListApplicationVersions": self._list_versions,
            "DescribeApplicationVersion": self._describe_version,
            "RollbackApplication": self._rollback,
            "ListApplicationSnapshots": self._list_snapshots,
            "DescribeApplicationSnapshot": self._describe_snapshot,
            "DeleteApplicationSnapshot": self._describe_snapshot,
            "CreateApplicationSnapshot": self._create_snapshot,
            "AddApplicationVpcConfiguration": self._add_vpc,
            "DeleteApplicationVpcConfiguration": self._delete_vpc,
            "UpdateApplicationMaintenanceConfiguration": self._update_maintenance,
            "ListApplicationOperations": self._list_operations,
            "DescribeApplicationOperation": self._describe_operation,
            "CreateApplicationPresignedUrl": self._presigned_url,
            "ListTagsForResource": self._list_tags_v2,
            "TagResource": self._tag_v2("TagResource"),
            "UntagResource": self._tag_v2("UntagResource"),
            "CreateSnapshot": self._create_enhanced_snapshot,
            "ImportSnapshot": self._import_snapshot,
            "ExportSnapshot": self._export_snapshot,
            "DeleteSnapshot": self._delete_enhanced_snapshot,
            "DescribeSnapshot": self._describe_enhanced_snapshot,
            "ListSnapshots": self._list_enhanced_snapshots,
            "ListSnapshotOperations": self._list_snapshot_operations,
            "DescribeSnapshotOperation": self._describe_snapshot_operation,
        }
        for operation in _ADD_OR_DELETE:
            self._handlers[operation] = self._add_or_delete(operation)

    def _sees(self, app: Application) -> bool:
        return True

    # --- Reads -------------------------------------------------------------------------------

    async def _describe_v2(self, request: Request, caller: Caller) -> Response:
        app = self._application(str(request["ApplicationName"]), caller)
        return {"ApplicationDetail": self.detail(app)}

    def detail(self, app: Application) -> dict[str, Any]:
        """v2's ApplicationDetail of `app` (at its own version)."""
        now_ms = self._clock.wall_ms()
        detail: dict[str, Any] = {
            "ApplicationARN": app.arn,
            "ApplicationName": app.name,
            "RuntimeEnvironment": app.runtime,
            "ApplicationStatus": app.status_at(now_ms).value,
            "ApplicationVersionId": app.version_id,
            "CreateTimestamp": timestamp(app.created_ms),
            "LastUpdateTimestamp": timestamp(app.updated_ms),
            "ApplicationConfigurationDescription": _configuration_description(app),
            "CloudWatchLoggingOptionDescriptions": app.logging_descriptions(),
            "ConditionalToken": conditional_token(app),
        }
        if app.description:
            detail["ApplicationDescription"] = app.description
        if app.service_execution_role:
            detail["ServiceExecutionRole"] = app.service_execution_role
        if app.mode:
            detail["ApplicationMode"] = app.mode
        if app.past_versions:
            detail["ApplicationVersionUpdatedFrom"] = app.version_id - 1
        maintenance = app.maintenance_description()
        if maintenance is not None:
            detail["ApplicationMaintenanceConfigurationDescription"] = maintenance
        return detail

    async def _list_v2(self, request: Request, caller: Caller) -> Response:
        apps = self._live(caller)
        token = request.get("NextToken")
        if token is not None:
            apps = [app for app in apps if app.name > str(token)]
        limit = int(request.get("Limit", 50))
        now_ms = self._clock.wall_ms()
        response: Response = {
            "ApplicationSummaries": [
                {
                    "ApplicationName": app.name,
                    "ApplicationARN": app.arn,
                    "ApplicationStatus": app.status_at(now_ms).value,
                    "ApplicationVersionId": app.version_id,
                    "RuntimeEnvironment": app.runtime,
                    **({"ApplicationMode": app.mode} if app.mode else {}),
                }
                for app in apps[:limit]
            ]
        }
        if len(apps) > limit:  # the last name listed (names match the token's pattern)
            response["NextToken"] = apps[limit - 1].name
        return response

    async def _discover_v2(self, request: Request, caller: Caller) -> Response:
        members = ("ResourceARN", "InputStartingPositionConfiguration", "S3Configuration")
        return await self._discover(
            {key: request[key] for key in members if key in request}, caller
        )

    # --- Versions, rollback and snapshots (FLINK and ZEPPELIN runtimes only, as on AWS) ------

    def _not_sql(self, request: Request, caller: Caller, operation: str) -> Application:
        app = self._application(str(request["ApplicationName"]), caller)
        if app.is_sql:
            raise ShoalError(
                ErrorCode.UNSUPPORTED_OPERATION,
                messages.flink_only_operation(
                    operation=operation, name=app.name, sql_runtime=SQL_RUNTIME
                ),
            )
        return app

    async def _list_versions(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "ListApplicationVersions")
        current = app.status_at(self._clock.wall_ms()).value
        # Earlier versions of an application that never runs here were all READY.
        ids = [
            version
            for version in reversed(range(1, app.version_id + 1))
            if app.at_version(version) is not None
        ]
        token = request.get("NextToken")
        if token is not None:
            if not str(token).isdigit():
                raise _invalid(messages.next_token_invalid(token=token))
            ids = [version for version in ids if version < int(token)]
        limit = int(request.get("Limit", 50))
        versions = [
            {
                "ApplicationVersionId": version,
                "ApplicationStatus": current if version == app.version_id else "READY",
            }
            for version in ids[:limit]
        ]
        response: Response = {"ApplicationVersionSummaries": versions}
        if len(ids) > limit:
            response["NextToken"] = str(ids[limit - 1])
        return response

    async def _describe_version(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "DescribeApplicationVersion")
        wanted = int(request["ApplicationVersionId"])
        version = app.at_version(wanted)
        if version is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                messages.version_not_found(name=app.name, wanted=wanted),
            )
        detail = self.detail(version)
        if version is not app:
            detail["ApplicationStatus"] = ApplicationStatus.READY.value
        return {"ApplicationVersionDetail": detail}

    async def _rollback(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "RollbackApplication")
        rules.check_version(app, int(request["CurrentApplicationVersionId"]))
        status = app.status_at(self._clock.wall_ms())
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.rollback_needs_status(name=app.name, status=status.value, runtime=app.runtime),
        )

    async def _list_snapshots(self, request: Request, caller: Caller) -> Response:
        self._not_sql(request, caller, "ListApplicationSnapshots")
        return {"SnapshotSummaries": []}  # snapshots are taken of running applications only

    async def _describe_snapshot(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "Application snapshots")
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            messages.no_application_snapshot(name=app.name, snapshot_name=request["SnapshotName"]),
        )

    async def _create_snapshot(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "CreateApplicationSnapshot")
        status = app.status_at(self._clock.wall_ms())
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.application_snapshot_needs_running(
                name=app.name, status=status.value, runtime=app.runtime
            ),
        )

    # --- Enhanced snapshots (account-level; broker.analytics.snapshots) ----------------------

    def _snapshot(self, name: str, caller: Caller) -> Snapshot:
        key = snapshots.snapshot_key(caller.account_id, caller.region, name)
        found = self._metadata.image().analytics.snapshot(key, now_ms=self._clock.wall_ms())
        if found is None:
            raise snapshots.not_found(name)
        return found

    def _snapshot_exists(self, name: str, caller: Caller) -> bool:
        key = snapshots.snapshot_key(caller.account_id, caller.region, name)
        return (
            self._metadata.image().analytics.snapshot(key, now_ms=self._clock.wall_ms()) is not None
        )

    async def _propose_snapshot(
        self,
        operation: str,
        name: str,
        request: Request,
        caller: Caller,
        result: Mapping[str, Any] | None = None,
    ) -> Snapshot:
        command = ChangeAnalyticsSnapshot(
            now_ms=self._clock.wall_ms(),
            account_id=caller.account_id,
            region=caller.region,
            name=name,
            operation=operation,
            request=rules.canonical(json_safe(request)),
            result=rules.canonical(dict(result or {})),
            transition_ms=self._settings.transition_ms,
        )
        snapshot = await self._metadata.propose(command)
        assert isinstance(snapshot, Snapshot)
        return snapshot

    def _snapshot_answer(self, snapshot: Snapshot, *, with_status: bool = True) -> Response:
        (latest, *_) = snapshot.operation_records(self._clock.wall_ms())
        answer: Response = {
            "SnapshotOperationId": latest["SnapshotOperationId"],
            "SnapshotOperationStatus": latest["SnapshotOperationStatus"],
        }
        if with_status:
            answer["SnapshotArn"] = snapshot.arn
            answer["SnapshotStatus"] = snapshot.status_at(self._clock.wall_ms())
        return answer

    async def _create_enhanced_snapshot(self, request: Request, caller: Caller) -> Response:
        """CreateSnapshot snapshots a RUNNING Flink application's state. Shoal stores Flink
        applications but never runs one, so there is no state to snapshot: refused as AWS
        refuses an application that is not running (ResourceInUse)."""
        name = str(request["ApplicationName"])
        try:
            app = self._application(name, caller)
        except ShoalError as error:  # the model has no ResourceNotFound for CreateSnapshot
            raise _invalid(str(error)) from error
        if app.is_sql:
            raise ShoalError(
                ErrorCode.UNSUPPORTED_OPERATION,
                messages.flink_only_operation(
                    operation="CreateSnapshot", name=app.name, sql_runtime=SQL_RUNTIME
                ),
            )
        if self._snapshot_exists(str(request["SnapshotName"]), caller):
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                messages.snapshot_exists(snapshot_name=request["SnapshotName"]),
            )
        status = app.status_at(self._clock.wall_ms())
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.create_snapshot_needs_running(
                name=app.name, status=status.value, runtime=app.runtime, sql_runtime=SQL_RUNTIME
            ),
        )

    async def _import_snapshot(self, request: Request, caller: Caller) -> Response:
        name = str(request["SnapshotName"])
        if self._snapshot_exists(name, caller):
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE, messages.snapshot_exists(snapshot_name=name)
            )
        source = request["ImportSourceConfiguration"]["SourceS3PrefixLocation"]
        found = await asyncio.to_thread(snapshot_storage.inspect, source, region=caller.region)
        snapshot = await self._propose_snapshot("ImportSnapshot", name, request, caller, found)
        return self._snapshot_answer(snapshot)

    async def _export_snapshot(self, request: Request, caller: Caller) -> Response:
        name = str(request["SnapshotName"])
        current = self._snapshot(name, caller)
        snapshots.require_ready(current, self._clock.wall_ms(), "ExportSnapshot")
        destination = request["ExportDestinationConfiguration"]["DestinationS3PrefixLocation"]
        copied = await asyncio.to_thread(
            snapshot_storage.export,
            current.source_prefix(),
            destination,
            current.digest,
            region=caller.region,
        )
        snapshot = await self._propose_snapshot("ExportSnapshot", name, request, caller, copied)
        return self._snapshot_answer(snapshot, with_status=False)

    async def _delete_enhanced_snapshot(self, request: Request, caller: Caller) -> Response:
        name = str(request["SnapshotName"])
        self._snapshot(name, caller)
        snapshot = await self._propose_snapshot("DeleteSnapshot", name, request, caller)
        return self._snapshot_answer(snapshot)

    async def _describe_enhanced_snapshot(self, request: Request, caller: Caller) -> Response:
        snapshot = self._snapshot(str(request["SnapshotName"]), caller)
        described = snapshots.details(snapshot, self._clock.wall_ms())
        return {"SnapshotInfoDetails": _snapshot_times(described)}

    async def _list_enhanced_snapshots(self, request: Request, caller: Caller) -> Response:
        filters = {
            "SourceApplicationName": "SourceApplicationName",
            "SnapshotInitiator": "SnapshotInitiator",
            "SnapshotInitiatorOperation": "SnapshotInitiatorOperation",
            "SnapshotStatus": "SnapshotStatus",
        }
        snapshots.check_list_filters(request, list(filters))
        now_ms = self._clock.wall_ms()
        found = self._metadata.image().analytics.live_snapshots(
            caller.account_id, caller.region, now_ms=now_ms
        )
        infos = [snapshots.info(snapshot, now_ms) for snapshot in found]
        for member in filters:
            if member in request:
                infos = [item for item in infos if item.get(member) == request[member]]
        page, following = _paged(infos, "SnapshotName", request)
        response: Response = {"SnapshotInfoList": [_snapshot_times(item) for item in page]}
        if following is not None:
            response["NextToken"] = following
        return response

    async def _list_snapshot_operations(self, request: Request, caller: Caller) -> Response:
        snapshots.check_list_filters(request, ["SnapshotOperation", "SnapshotOperationStatus"])
        snapshot = self._snapshot(str(request["SnapshotName"]), caller)
        records = snapshot.operation_records(self._clock.wall_ms())
        for member in ("SnapshotOperation", "SnapshotOperationStatus"):
            if member in request:
                records = [item for item in records if item[member] == request[member]]
        page, following = _paged(records, "SnapshotOperationId", request)
        members = (
            "SnapshotOperationId",
            "SnapshotOperation",
            "SnapshotOperationStatus",
            "StartTime",
            "EndTime",
        )
        response: Response = {
            "SnapshotOperationInfoList": [
                _snapshot_times({key: item[key] for key in members if key in item}) for item in page
            ]
        }
        if following is not None:
            response["NextToken"] = following
        return response

    async def _describe_snapshot_operation(self, request: Request, caller: Caller) -> Response:
        snapshot = self._snapshot(str(request["SnapshotName"]), caller)
        wanted = str(request["SnapshotOperationId"])
        for item in snapshot.operation_records(self._clock.wall_ms()):
            if item["SnapshotOperationId"] == wanted:
                return {"SnapshotOperationInfoDetails": _snapshot_times(item)}
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            messages.snapshot_operation_not_found(wanted=wanted, name=snapshot.name),
        )

    # --- Tags (applications and snapshots) ---------------------------------------------------

    def _tagged_snapshot(self, arn: str, caller: Caller) -> Snapshot | None:
        """The snapshot `arn` names, or None when it names no snapshot (an application)."""
        if ":snapshot/" not in arn:
            return None
        name = arn.rsplit("/", 1)[-1]
        found = self._metadata.image().analytics.snapshot(
            snapshots.snapshot_key(caller.account_id, caller.region, name),
            now_ms=self._clock.wall_ms(),
        )
        if found is None or found.arn != arn:
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, messages.resource_not_found(arn=arn))
        return found

    async def _list_tags_v2(self, request: Request, caller: Caller) -> Response:
        snapshot = self._tagged_snapshot(str(request["ResourceARN"]), caller)
        if snapshot is None:
            return await self._list_tags(request, caller)
        return {"Tags": [{"Key": key, "Value": value} for key, value in snapshot.tags]}

    def _tag_v2(self, operation: str) -> Any:
        async def change(request: Request, caller: Caller) -> Response:
            snapshot = self._tagged_snapshot(str(request["ResourceARN"]), caller)
            if snapshot is None:
                return await self._change(operation, request, caller)
            await self._propose_snapshot(operation, snapshot.name, request, caller)
            return {}

        return change

    # --- Changes -----------------------------------------------------------------------------

    async def _create_v2(self, request: Request, caller: Caller) -> Response:
        runtime = str(request["RuntimeEnvironment"])
        configuration = dict(request.get("ApplicationConfiguration", {}))
        tags = tuple(
            (str(tag["Key"]), str(tag.get("Value", ""))) for tag in request.get("Tags", ())
        )
        sql_parts: dict[str, Any] = {}
        code = ""
        if runtime == SQL_RUNTIME:
            extra = sorted(set(configuration) - set(_SQL_CONFIGURATION))
            if extra:
                raise _invalid(messages.members_not_for_sql(extra=", ".join(extra)))
            if "ApplicationMode" in request:
                raise _invalid(messages.APPLICATION_MODE_NOT_FOR_SQL)
            sql_parts = dict(configuration.get("SqlApplicationConfiguration", {}))
            code = _sql_code(configuration.get("ApplicationCodeConfiguration"))
            inputs = list(sql_parts.get("Inputs", ()))
            references = [
                rules.reference_description(item, "0.1")
                for item in sql_parts.get("ReferenceDataSources", ())
            ]
            self._check_code(
                code, [rules.input_description(item, "0.1") for item in inputs], references
            )
            configuration = {}
        else:
            if "SqlApplicationConfiguration" in configuration:
                raise _invalid(
                    messages.sql_configuration_not_for_runtime(
                        sql_runtime=SQL_RUNTIME, runtime=runtime
                    )
                )
            configuration = _stored_configuration(configuration)
        default_mode = "INTERACTIVE" if runtime.startswith("ZEPPELIN") else "STREAMING"
        command = CreateAnalyticsApplication(
            now_ms=self._clock.wall_ms(),
            account_id=caller.account_id,
            region=caller.region,
            name=str(request["ApplicationName"]),
            description=str(request.get("ApplicationDescription", "")),
            code=code,
            inputs=rules.canonical(list(sql_parts.get("Inputs", ()))),
            outputs=rules.canonical(list(sql_parts.get("Outputs", ()))),
            reference_data_sources=rules.canonical(list(sql_parts.get("ReferenceDataSources", ()))),
            logging_options=rules.canonical(list(request.get("CloudWatchLoggingOptions", ()))),
            tags=tags,
            applications_max=self._settings.applications_max,
            runtime=runtime,
            service_execution_role=str(request["ServiceExecutionRole"]),
            mode=""
            if runtime == SQL_RUNTIME
            else str(request.get("ApplicationMode", default_mode)),
            configuration=rules.canonical(configuration),
        )
        app = await self._propose_create(command)
        return {"ApplicationDetail": self.detail(app)}

    def _versioned(self, request: Request, caller: Caller) -> dict[str, Any]:
        """The request's version guard in v1's form: CurrentApplicationVersionId, or the one a
        ConditionalToken stands for (checked here against the current application)."""
        guard: dict[str, Any] = {}
        if "CurrentApplicationVersionId" in request:
            guard["CurrentApplicationVersionId"] = int(request["CurrentApplicationVersionId"])
        token = request.get("ConditionalToken")
        if token is not None:
            app = self._application(str(request["ApplicationName"]), caller)
            if token != conditional_token(app):
                raise ShoalError(
                    ErrorCode.CONCURRENT_MODIFICATION,
                    messages.conditional_token_mismatch(name=app.name, version_id=app.version_id),
                )
            guard.setdefault("CurrentApplicationVersionId", app.version_id)
        return guard

    def _add_or_delete(self, operation: str) -> Any:
        answer = _ADD_OR_DELETE[operation]

        async def change(request: Request, caller: Caller) -> Response:
            v1_request = {
                **{key: value for key, value in request.items() if key != "ConditionalToken"},
                **self._versioned(request, caller),
            }
            if "CurrentApplicationVersionId" not in v1_request:
                raise _invalid(messages.VERSION_OR_TOKEN_REQUIRED)
            app = await self._apply(operation, v1_request, caller)
            response: Response = {"ApplicationARN": app.arn, "ApplicationVersionId": app.version_id}
            for member in answer:
                response.update(_answer_member(app, member, request))
            response.update(_operation_of(app, operation))
            return response

        return change

    async def _update_v2(self, request: Request, caller: Caller) -> Response:
        name = str(request["ApplicationName"])
        app = self._application(name, caller)
        update: dict[str, Any] = {}
        configuration = dict(request.get("ApplicationConfigurationUpdate", {}))
        if app.is_sql:
            extra = sorted(
                set(configuration)
                - {"SqlApplicationConfigurationUpdate", "ApplicationCodeConfigurationUpdate"}
            )
            if extra or "RunConfigurationUpdate" in request:
                members = [
                    *extra,
                    *(["RunConfigurationUpdate"] if "RunConfigurationUpdate" in request else []),
                ]
                raise _invalid(messages.members_not_for_sql(extra=", ".join(members)))
            sql_update = configuration.get("SqlApplicationConfigurationUpdate", {})
            for member in ("InputUpdates", "OutputUpdates", "ReferenceDataSourceUpdates"):
                if member in sql_update:
                    update[member] = sql_update[member]
            code_update = configuration.get("ApplicationCodeConfigurationUpdate")
            if code_update is not None:
                update["ApplicationCodeUpdate"] = _sql_code_update(code_update)
        else:
            if "SqlApplicationConfigurationUpdate" in configuration:
                raise _invalid(
                    messages.sql_configuration_update_not_for_runtime(sql_runtime=SQL_RUNTIME)
                )
            if "RunConfigurationUpdate" in request:
                configuration["RunConfigurationUpdate"] = request["RunConfigurationUpdate"]
            if configuration:
                update["ConfigurationUpdate"] = json_safe(_stored_configuration(configuration))
        if "CloudWatchLoggingOptionUpdates" in request:
            update["CloudWatchLoggingOptionUpdates"] = request["CloudWatchLoggingOptionUpdates"]
        for member in ("ServiceExecutionRoleUpdate", "RuntimeEnvironmentUpdate"):
            if member in request:
                update[member] = request[member]
        v1_request = {
            "ApplicationName": name,
            "ApplicationUpdate": update,
            **self._versioned(request, caller),
        }
        if "CurrentApplicationVersionId" not in v1_request:
            raise _invalid(messages.VERSION_OR_TOKEN_REQUIRED)
        changed = await self._apply("UpdateApplication", v1_request, caller)
        return {
            "ApplicationDetail": self.detail(changed),
            **_operation_of(changed, "UpdateApplication"),
        }

    async def _add_vpc(self, request: Request, caller: Caller) -> Response:
        changed = await self._apply_versioned(
            "AddApplicationVpcConfiguration",
            {
                "ApplicationName": request["ApplicationName"],
                "VpcConfiguration": request["VpcConfiguration"],
            },
            request,
            caller,
        )
        vpcs = changed.configuration_document()["VpcConfigurations"]
        return {
            "ApplicationARN": changed.arn,
            "ApplicationVersionId": changed.version_id,
            "VpcConfigurationDescription": vpcs[-1],
            **_operation_of(changed, "AddApplicationVpcConfiguration"),
        }

    async def _delete_vpc(self, request: Request, caller: Caller) -> Response:
        changed = await self._apply_versioned(
            "DeleteApplicationVpcConfiguration",
            {
                "ApplicationName": request["ApplicationName"],
                "VpcConfigurationId": request["VpcConfigurationId"],
            },
            request,
            caller,
        )
        return {
            "ApplicationARN": changed.arn,
            "ApplicationVersionId": changed.version_id,
            **_operation_of(changed, "DeleteApplicationVpcConfiguration"),
        }

    async def _apply_versioned(
        self, operation: str, change: Request, request: Request, caller: Caller
    ) -> Application:
        """Proposes `change`, guarded by the request's CurrentApplicationVersionId or
        ConditionalToken (AWS requires one of them)."""
        guard = self._versioned(request, caller)
        if "CurrentApplicationVersionId" not in guard:
            raise _invalid(messages.VERSION_OR_TOKEN_REQUIRED)
        return await self._apply(operation, {**change, **guard}, caller)

    async def _update_maintenance(self, request: Request, caller: Caller) -> Response:
        changed = await self._apply(
            "UpdateApplicationMaintenanceConfiguration",
            {
                "ApplicationName": request["ApplicationName"],
                "ApplicationMaintenanceConfigurationUpdate": request[
                    "ApplicationMaintenanceConfigurationUpdate"
                ],
            },
            caller,
        )
        return {
            "ApplicationARN": changed.arn,
            "ApplicationMaintenanceConfigurationDescription": changed.maintenance_description(),
        }

    # --- Operations (FLINK and ZEPPELIN runtimes only, as on AWS) -----------------------------

    async def _list_operations(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "ListApplicationOperations")
        records = app.operation_records()
        if "Operation" in request:
            records = [item for item in records if item["Operation"] == request["Operation"]]
        if "OperationStatus" in request:
            records = [
                item for item in records if item["OperationStatus"] == request["OperationStatus"]
            ]
        token = request.get("NextToken")
        if token is not None:
            ids = [item["OperationId"] for item in records]
            if token not in ids:
                raise _invalid(messages.next_token_invalid(token=token))
            records = records[ids.index(token) + 1 :]
        limit = int(request.get("Limit", 50))
        response: Response = {
            "ApplicationOperationInfoList": [
                {
                    "Operation": item["Operation"],
                    "OperationId": item["OperationId"],
                    "StartTime": timestamp(item["StartTime"]),
                    "EndTime": timestamp(item["EndTime"]),
                    "OperationStatus": item["OperationStatus"],
                }
                for item in records[:limit]
            ]
        }
        if len(records) > limit:  # the last operation listed
            response["NextToken"] = records[limit - 1]["OperationId"]
        return response

    async def _describe_operation(self, request: Request, caller: Caller) -> Response:
        app = self._not_sql(request, caller, "DescribeApplicationOperation")
        wanted = str(request["OperationId"])
        for item in app.operation_records():
            if item["OperationId"] == wanted:
                details: dict[str, Any] = {
                    "Operation": item["Operation"],
                    "StartTime": timestamp(item["StartTime"]),
                    "EndTime": timestamp(item["EndTime"]),
                    "OperationStatus": item["OperationStatus"],
                }
                if "ApplicationVersionChangeDetails" in item:
                    details["ApplicationVersionChangeDetails"] = item[
                        "ApplicationVersionChangeDetails"
                    ]
                return {"ApplicationOperationInfoDetails": details}
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            messages.application_operation_not_found(wanted=wanted, name=app.name),
        )

    async def _presigned_url(self, request: Request, caller: Caller) -> Response:
        """A URL to a running application's extension (the Flink dashboard, the Zeppelin
        notebook). AWS answers ResourceInUse for an application that is not running; a FLINK
        or ZEPPELIN application never runs here, and a SQL one has no extension."""
        app = self._application(str(request["ApplicationName"]), caller)
        url_type = str(request["UrlType"])
        if app.is_sql:
            raise _invalid(
                messages.url_type_not_for_sql(url_type=url_type, sql_runtime=SQL_RUNTIME)
            )
        if url_type == "ZEPPELIN_UI_URL" and app.mode != "INTERACTIVE":
            raise _invalid(
                messages.zeppelin_url_not_for_runtime(name=app.name, runtime=app.runtime)
            )
        status = app.status_at(self._clock.wall_ms())
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.presigned_url_needs_running(
                name=app.name, status=status.value, runtime=app.runtime, sql_runtime=SQL_RUNTIME
            ),
        )

    async def _start_v2(self, request: Request, caller: Caller) -> Response:
        run = request.get("RunConfiguration", {})
        v1_request: dict[str, Any] = {"ApplicationName": request["ApplicationName"]}
        configurations = [
            {
                "Id": item["InputId"],
                "InputStartingPositionConfiguration": item["InputStartingPositionConfiguration"],
            }
            for item in run.get("SqlRunConfigurations", ())
        ]
        if configurations:
            v1_request["InputConfigurations"] = configurations
        await self._apply("StartApplication", v1_request, caller)
        return {}

    async def _stop_v2(self, request: Request, caller: Caller) -> Response:
        # Force (stop without a snapshot) is Flink's; a SQL application stops the same way.
        await self._apply(
            "StopApplication", {"ApplicationName": request["ApplicationName"]}, caller
        )
        return {}


def _snapshot_times(record: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot document with its epoch-millisecond members as timestamps."""
    converted = dict(record)
    for member in ("StartTime", "EndTime", "SnapshotCreationTimestamp"):
        if member in converted:
            converted[member] = timestamp(int(converted[member]))
    return converted


def _paged(
    items: list[dict[str, Any]], key: str, request: Request
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `items` after the request's NextToken (the `key` of the last item of the
    page before), and the token of the page after it."""
    token = request.get("NextToken")
    if token is not None:
        keys = [item[key] for item in items]
        if token not in keys:
            raise _invalid(messages.next_token_invalid(token=token))
        items = items[keys.index(token) + 1 :]
    limit = int(request.get("Limit", 50))
    following = str(items[limit - 1][key]) if len(items) > limit else None
    return items[:limit], following


def _operation_of(app: Application, operation: str) -> dict[str, Any]:
    """The OperationId member of a change's answer: the operation just recorded for a FLINK
    or ZEPPELIN application (SQL applications have no operations, as on AWS)."""
    if app.is_sql or operation not in rules.RECORDED_OPERATIONS or not app.operations:
        return {}
    return {"OperationId": app.operation_records()[0]["OperationId"]}


def conditional_token(app: Application) -> str:
    """v2's ConditionalToken: stands for one version of one application."""
    digest = hashlib.sha256(f"{app.arn}#{app.created_ms}#{app.version_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, message)


def _sql_code(code_configuration: Mapping[str, Any] | None) -> str:
    if code_configuration is None:
        return ""
    if code_configuration.get("CodeContentType") != "PLAINTEXT":
        raise _invalid(messages.SQL_CODE_IS_PLAINTEXT)
    content = code_configuration.get("CodeContent", {})
    if set(content) - {"TextContent"}:
        raise _invalid(messages.SQL_CODE_IS_TEXT_CONTENT)
    return str(content.get("TextContent", ""))


def _sql_code_update(code_update: Mapping[str, Any]) -> str:
    if code_update.get("CodeContentTypeUpdate", "PLAINTEXT") != "PLAINTEXT":
        raise _invalid(messages.SQL_CODE_IS_PLAINTEXT)
    content = code_update.get("CodeContentUpdate", {})
    if set(content) - {"TextContentUpdate"}:
        raise _invalid(messages.SQL_CODE_IS_TEXT_CONTENT)
    return str(content.get("TextContentUpdate", ""))


def _stored_configuration(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """A non-SQL configuration (create or update form) as stored: a zip file's bytes are not
    kept in the metadata, only its MD5 and size (what DescribeApplication shows of it)."""
    stored: dict[str, Any] = {}
    for key, value in configuration.items():
        if key in ("ZipFileContent", "ZipFileContentUpdate") and isinstance(value, bytes):
            stored["CodeMD5"] = hashlib.md5(value).hexdigest()
            stored["CodeSize"] = len(value)
        elif isinstance(value, Mapping):
            stored[key] = _stored_configuration(value)
        else:
            stored[key] = value
    return json_safe(stored)  # type: ignore[no-any-return]


def _configuration_description(app: Application) -> dict[str, Any]:
    if not app.is_sql:
        return v2_shapes.describe_configuration(app.configuration_document(), app.runtime)
    described: dict[str, Any] = {
        "SqlApplicationConfigurationDescription": {
            "InputDescriptions": app.input_descriptions(),
            "OutputDescriptions": app.output_descriptions(),
            "ReferenceDataSourceDescriptions": app.reference_descriptions(),
        }
    }
    if app.code:
        code = app.code.encode()
        described["ApplicationCodeConfigurationDescription"] = {
            "CodeContentType": "PLAINTEXT",
            "CodeContentDescription": {
                "TextContent": app.code,
                "CodeMD5": hashlib.md5(code).hexdigest(),
                "CodeSize": len(code),
            },
        }
    return described


def _answer_member(app: Application, member: str, request: Request) -> dict[str, Any]:
    if member == "InputDescriptions":
        return {member: app.input_descriptions()}
    if member == "OutputDescriptions":
        return {member: app.output_descriptions()}
    if member == "ReferenceDataSourceDescriptions":
        return {member: app.reference_descriptions()}
    if member == "CloudWatchLoggingOptionDescriptions":
        return {member: app.logging_descriptions()}
    # AddApplicationInputProcessingConfiguration: the input's new configuration.
    input_id = str(request["InputId"])
    for described in app.input_descriptions():
        if described["InputId"] == input_id:
            return {
                "InputId": input_id,
                "InputProcessingConfigurationDescription": described[
                    "InputProcessingConfigurationDescription"
                ],
            }
    return {"InputId": input_id}
