"""Kinesis Data Analytics applications: CreateAnalyticsApplication and
ChangeAnalyticsApplication over the image's `ApplicationTable`.

The rules live in `broker.analytics.applications` (pure); this module finds the application in
the caller's namespace, checks CurrentApplicationVersionId at apply time (two racing updates
both pass the service's early check, exactly one applies) and stores the result.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from broker.analytics import applications as rules
from broker.analytics import messages, snapshots
from broker.analytics.applications import Application, ApplicationTable
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    ChangeAnalyticsApplication,
    ChangeAnalyticsSnapshot,
    CreateAnalyticsApplication,
    RecordAnalyticsProgress,
)
from broker.meta.image import MetadataImage
from broker.streams.namespaces import keys_for_arn


def create_application(
    image: MetadataImage, command: CreateAnalyticsApplication
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    table = image.analytics
    key = rules.application_key(command.account_id, command.region, command.name)
    if table.get(key, now_ms=now_ms) is not None:
        raise ShoalError(ErrorCode.RESOURCE_IN_USE, messages.application_exists(name=command.name))
    if len(table.live(command.account_id, command.region, now_ms=now_ms)) >= (
        command.applications_max
    ):
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            messages.applications_limit(maximum=command.applications_max),
        )
    try:
        app = _created(command)
    except (KeyError, TypeError, ValueError) as error:  # as in change_application
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.malformed_request(operation="CreateApplication", error=error),
        ) from error
    return _stored(image, table, app), app


def _created(command: CreateAnalyticsApplication) -> Application:
    return rules.create(
        account_id=command.account_id,
        region=command.region,
        name=command.name,
        description=command.description,
        code=command.code,
        inputs=json.loads(command.inputs),
        outputs=json.loads(command.outputs),
        logging_options=json.loads(command.logging_options),
        tags=command.tags,
        now_ms=command.now_ms,
        references=json.loads(command.reference_data_sources),
        runtime=command.runtime,
        service_execution_role=command.service_execution_role,
        mode=command.mode,
        configuration=json.loads(command.configuration),
    )


def change_application(
    image: MetadataImage, command: ChangeAnalyticsApplication
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    table = image.analytics
    app = table.get(
        rules.application_key(command.account_id, command.region, command.name), now_ms=now_ms
    )
    if app is None:
        raise rules.not_found(command.name, command.account_id)
    request: dict[str, Any] = json.loads(command.request)
    if "CurrentApplicationVersionId" in request:
        rules.check_version(app, int(request["CurrentApplicationVersionId"]))
    try:
        changed = _change(app, command.operation, request, now_ms, command.transition_ms)
        if not app.is_sql and command.operation in rules.RECORDED_OPERATIONS:
            changed = rules.record_operation(app, changed, command.operation, now_ms=now_ms)
    except (KeyError, TypeError, ValueError) as error:
        # A request the doors let through but the rules cannot read: refused the same way on
        # every replica, never an apply that fails the state machine.
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.malformed_request(operation=command.operation, error=error),
        ) from error
    return _stored(image, table, changed), changed


def _change(
    app: Application, operation: str, request: dict[str, Any], now_ms: int, transition_ms: int
) -> Application:
    timing = {"now_ms": now_ms, "updating_ms": transition_ms}
    if operation not in (
        "DeleteApplication",
        "StopApplication",
        "TagResource",
        "UntagResource",
    ):
        _require_changeable(app, now_ms)
    match operation:
        case "UpdateApplication":
            return rules.update(app, request["ApplicationUpdate"], **timing)
        case "AddApplicationInput":
            return rules.add_input(app, request["Input"], **timing)
        case "AddApplicationOutput":
            return rules.add_output(app, request["Output"], **timing)
        case "AddApplicationReferenceDataSource":
            return rules.add_reference(app, request["ReferenceDataSource"], **timing)
        case "AddApplicationCloudWatchLoggingOption":
            return rules.add_logging_option(app, request["CloudWatchLoggingOption"], **timing)
        case "AddApplicationInputProcessingConfiguration":
            return rules.add_input_processing(
                app, request["InputId"], request["InputProcessingConfiguration"], **timing
            )
        case "DeleteApplicationInputProcessingConfiguration":
            return rules.delete_input_processing(app, request["InputId"], **timing)
        case "DeleteApplicationOutput":
            return rules.delete_output(app, request["OutputId"], **timing)
        case "DeleteApplicationReferenceDataSource":
            return rules.delete_reference(app, request["ReferenceId"], **timing)
        case "DeleteApplicationCloudWatchLoggingOption":
            return rules.delete_logging_option(app, request["CloudWatchLoggingOptionId"], **timing)
        case "StartApplication":
            return rules.start(
                app,
                request.get("InputConfigurations", ()),
                now_ms=now_ms,
                starting_ms=transition_ms,
            )
        case "StopApplication":
            return rules.stop(app, now_ms=now_ms, stopping_ms=transition_ms)
        case "DeleteApplication":
            return rules.delete(
                app, int(request["CreateTimestamp"]), now_ms=now_ms, deleting_ms=transition_ms
            )
        case "AddApplicationVpcConfiguration":
            return rules.add_vpc_configuration(app, request["VpcConfiguration"], **timing)
        case "DeleteApplicationVpcConfiguration":
            return rules.delete_vpc_configuration(app, request["VpcConfigurationId"], **timing)
        case "UpdateApplicationMaintenanceConfiguration":
            update = request["ApplicationMaintenanceConfigurationUpdate"]
            return rules.update_maintenance(
                app, str(update["ApplicationMaintenanceWindowStartTimeUpdate"])
            )
        case "TagResource":
            added = [(str(tag["Key"]), str(tag.get("Value", ""))) for tag in request["Tags"]]
            return rules.change_tags(app, added=added, removed=())
        case "UntagResource":
            return rules.change_tags(app, added=(), removed=list(request["TagKeys"]))
        case _:
            raise AssertionError(f"not an application change: {operation}")


def record_progress(
    image: MetadataImage, command: RecordAnalyticsProgress
) -> tuple[MetadataImage, object]:
    """The marks of a running application, from the node holding its placement lease only."""
    table = image.analytics
    app = table.get(
        rules.application_key(command.account_id, command.region, command.name),
        now_ms=command.now_ms,
    )
    if app is None:
        raise rules.not_found(command.name, command.account_id)
    stream = _input_stream_key(image, app, now_ms=command.now_ms)
    placement = (
        image.leases.get(
            rules.lease_application(app, "placement"), stream, rules.PLACEMENT_LEASE_KEY
        )
        if stream is not None
        else None
    )
    if placement is None or placement.lease_owner != command.owner:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.runs_elsewhere(name=app.name, owner=command.owner),
        )
    changed = rules.record_progress(
        app,
        reader=command.reader,
        emitted_through_ms=command.emitted_through_ms,
        continuous_through=command.continuous_through,
    )
    return _stored(image, table, changed), changed


def change_snapshot(
    image: MetadataImage, command: ChangeAnalyticsSnapshot
) -> tuple[MetadataImage, object]:
    """An enhanced snapshot's import, export, deletion or tags (`broker.analytics.snapshots`)."""
    now_ms = command.now_ms
    table = image.analytics
    key = snapshots.snapshot_key(command.account_id, command.region, command.name)
    current = table.snapshot(key, now_ms=now_ms)
    request: dict[str, Any] = json.loads(command.request)
    result: dict[str, Any] = json.loads(command.result)
    timing = command.transition_ms
    try:
        if command.operation == "ImportSnapshot":
            if current is not None:
                raise ShoalError(
                    ErrorCode.RESOURCE_IN_USE, messages.snapshot_exists(snapshot_name=command.name)
                )
            changed = snapshots.imported(
                account_id=command.account_id,
                region=command.region,
                name=command.name,
                request=request,
                found=result,
                now_ms=now_ms,
                creating_ms=timing,
            )
        elif current is None:
            raise snapshots.not_found(command.name)
        elif command.operation == "ExportSnapshot":
            changed = snapshots.exported(
                current, request, result, now_ms=now_ms, exporting_ms=timing
            )
        elif command.operation == "DeleteSnapshot":
            changed = snapshots.deleted(
                current,
                int(request["SnapshotCreationTimestamp"]),
                now_ms=now_ms,
                deleting_ms=timing,
            )
        elif command.operation == "TagResource":
            changed = snapshots.change_tags(current, added=request["Tags"], removed=())
        elif command.operation == "UntagResource":
            changed = snapshots.change_tags(current, added=(), removed=request["TagKeys"])
        else:
            raise AssertionError(f"not a snapshot change: {command.operation}")
    except (KeyError, TypeError, ValueError) as error:  # as in change_application
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.malformed_request(operation=command.operation, error=error),
        ) from error
    stored = dataclasses.replace(image, analytics=table.with_snapshot(changed, now_ms=now_ms))
    return stored, changed


def _require_changeable(app: Application, now_ms: int) -> None:
    """Configuration changes and starts wait while a transition is in progress (AWS answers
    ResourceInUse while an application is STARTING, STOPPING, UPDATING or DELETING)."""
    rules.require_status(
        app, now_ms, rules.ApplicationStatus.READY, rules.ApplicationStatus.RUNNING
    )


def _stored(image: MetadataImage, table: ApplicationTable, app: Application) -> MetadataImage:
    return dataclasses.replace(image, analytics=table.with_application(app))


def _input_stream_key(image: MetadataImage, app: Application, *, now_ms: int) -> str | None:
    """The key of the Kinesis stream the application's input reads (its placement lease is on
    it, under that key): its data stream, or a delivery stream's internal stream or source
    stream (as the runner resolves it)."""
    inputs = app.input_descriptions()
    if not inputs:
        return None
    streams = inputs[0].get("KinesisStreamsInputDescription")
    if streams is not None:
        return _stream_key_of(image, str(streams["ResourceARN"]), now_ms=now_ms)
    described = inputs[0].get("KinesisFirehoseInputDescription")
    if described is None:
        return None
    meta = image.delivery_streams.get(str(described["ResourceARN"]))
    if meta is None:
        return None
    source = meta.source()
    if source is None:
        return meta.internal_stream  # in the default namespace: its key is its name
    return _stream_key_of(image, str(source["KinesisStreamARN"]), now_ms=now_ms)


def _stream_key_of(image: MetadataImage, arn: str, *, now_ms: int) -> str | None:
    """The image key of the stream this ARN names, in whichever namespace it is."""
    for key in keys_for_arn(arn):  # the bare key, then the namespaced one
        meta = image.stream(key, now_ms=now_ms)
        if meta is not None and meta.arn == arn:
            return key
    return None
