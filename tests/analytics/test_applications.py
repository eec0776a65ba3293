"""The application rules as the metadata state machine applies them: namespaces, versions
checked at apply time, ids, states and their timers."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from broker.analytics.applications import Application, ApplicationStatus
from broker.analytics.snapshots import Snapshot
from broker.errors import ErrorCode
from broker.meta.commands import (
    ChangeAnalyticsApplication,
    ChangeAnalyticsSnapshot,
    CreateAnalyticsApplication,
)
from broker.meta.image import MetadataImage
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import Applied, apply

ACCOUNT, REGION = "111122223333", "eu-west-1"


def create(name: str, *, account: str = ACCOUNT, now_ms: int = 1) -> CreateAnalyticsApplication:
    return CreateAnalyticsApplication(
        now_ms=now_ms,
        account_id=account,
        region=REGION,
        name=name,
        description="",
        code="",
        inputs="[]",
        outputs="[]",
        logging_options="[]",
        tags=(),
        applications_max=2,
    )


def change(
    name: str, operation: str, request: dict[str, Any], *, now_ms: int = 2, transition_ms: int = 0
) -> ChangeAnalyticsApplication:
    return ChangeAnalyticsApplication(
        now_ms=now_ms,
        account_id=ACCOUNT,
        region=REGION,
        name=name,
        operation=operation,
        request=json.dumps(request),
        transition_ms=transition_ms,
    )


def applied_app(applied: Applied) -> Application:
    assert applied.error is None, applied.error
    assert isinstance(applied.result, Application)
    return applied.result


def test_namespaces_and_limits() -> None:
    image = apply(MetadataImage(), create("a")).image
    other = apply(image, create("a", account="999999999999"))
    assert applied_app(other).arn == "arn:aws:kinesisanalytics:eu-west-1:999999999999:application/a"
    image = other.image
    again = apply(image, create("a"))
    assert again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE
    image = apply(image, create("b")).image
    third = apply(image, create("c"))
    assert third.error is not None and third.error.code is ErrorCode.LIMIT_EXCEEDED


def test_racing_updates_one_wins() -> None:
    image = apply(MetadataImage(), create("a")).image
    first = change(
        "a",
        "UpdateApplication",
        {
            "CurrentApplicationVersionId": 1,
            "ApplicationUpdate": {"ApplicationCodeUpdate": "-- one"},
        },
    )
    second = change(
        "a",
        "UpdateApplication",
        {
            "CurrentApplicationVersionId": 1,
            "ApplicationUpdate": {"ApplicationCodeUpdate": "-- two"},
        },
    )
    won = apply(image, first)
    assert applied_app(won).version_id == 2
    lost = apply(won.image, second)
    assert lost.error is not None and lost.error.code is ErrorCode.CONCURRENT_MODIFICATION
    stored = lost.image.analytics.get(f"{ACCOUNT}/{REGION}/a", now_ms=3)
    assert stored is not None and stored.code == "-- one"


def test_states_and_timers() -> None:
    output = {
        "Name": "D",
        "KinesisStreamsOutput": {
            "ResourceARN": "arn:aws:kinesis:eu-west-1:1:stream/o",
            "RoleARN": "r",
        },
        "DestinationSchema": {"RecordFormatType": "JSON"},
    }
    source = {
        "NamePrefix": "SOURCE_SQL_STREAM",
        "KinesisStreamsInput": {
            "ResourceARN": "arn:aws:kinesis:eu-west-1:1:stream/i",
            "RoleARN": "r",
        },
        "InputSchema": {"RecordFormat": {"RecordFormatType": "CSV"}, "RecordColumns": []},
    }
    image = apply(MetadataImage(), create("a")).image
    no_input = apply(image, change("a", "StartApplication", {"InputConfigurations": []}))
    assert no_input.error is not None
    assert no_input.error.code is ErrorCode.INVALID_APPLICATION_CONFIGURATION
    image = apply(
        image,
        change(
            "a",
            "AddApplicationInput",
            {
                "CurrentApplicationVersionId": 1,
                "Input": source,
            },
        ),
    ).image
    added = apply(
        image,
        change(
            "a",
            "AddApplicationOutput",
            {
                "CurrentApplicationVersionId": 2,
                "Output": output,
            },
        ),
    )
    assert [o["OutputId"] for o in applied_app(added).output_descriptions()] == ["2.1"]
    started = apply(
        added.image,
        change(
            "a",
            "StartApplication",
            {
                "InputConfigurations": [
                    {
                        "Id": "1.1",
                        "InputStartingPositionConfiguration": {"InputStartingPosition": "NOW"},
                    }
                ]
            },
            now_ms=10,
            transition_ms=100,
        ),
    )
    app = applied_app(started)
    assert app.status_at(50) is ApplicationStatus.STARTING
    assert app.status_at(110) is ApplicationStatus.RUNNING
    assert app.run == 1 and app.version_id == 3
    busy = apply(
        started.image,
        change(
            "a",
            "UpdateApplication",
            {
                "CurrentApplicationVersionId": 3,
                "ApplicationUpdate": {},
            },
            now_ms=50,
        ),
    )
    assert busy.error is not None and busy.error.code is ErrorCode.RESOURCE_IN_USE
    updating = apply(
        started.image,
        change(
            "a",
            "UpdateApplication",
            {
                "CurrentApplicationVersionId": 3,
                "ApplicationUpdate": {},
            },
            now_ms=200,
            transition_ms=100,
        ),
    )
    assert applied_app(updating).status_at(250) is ApplicationStatus.UPDATING
    assert applied_app(updating).status_at(300) is ApplicationStatus.RUNNING
    stopped = apply(
        updating.image, change("a", "StopApplication", {}, now_ms=400, transition_ms=100)
    )
    assert applied_app(stopped).status_at(450) is ApplicationStatus.STOPPING
    assert applied_app(stopped).status_at(500) is ApplicationStatus.READY
    deleted = apply(
        stopped.image,
        change("a", "DeleteApplication", {"CreateTimestamp": 1}, now_ms=600, transition_ms=100),
    )
    assert applied_app(deleted).status_at(650) is ApplicationStatus.DELETING
    assert deleted.image.analytics.get(f"{ACCOUNT}/{REGION}/a", now_ms=700) is None
    assert apply(deleted.image, create("a", now_ms=700)).error is None  # the name is free again


def test_flink_operations_and_windows_survive_the_image_codec() -> None:
    """VPC configurations, the maintenance window and the operations list are state of the
    image: a node restarted from an encoded image (or a snapshot) answers the same."""
    flink = dataclasses.replace(create("f"), runtime="FLINK-1_20", service_execution_role="r")
    image = apply(MetadataImage(), flink).image
    vpc = {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-1"]}
    added = apply(
        image,
        change(
            "f",
            "AddApplicationVpcConfiguration",
            {"ApplicationName": "f", "VpcConfiguration": vpc, "CurrentApplicationVersionId": 1},
        ),
    )
    app = applied_app(added)
    assert app.version_id == 2 and len(app.operations) == 1
    window = {"ApplicationMaintenanceWindowStartTimeUpdate": "23:15"}
    maintained = apply(
        added.image,
        change(
            "f",
            "UpdateApplicationMaintenanceConfiguration",
            {"ApplicationName": "f", "ApplicationMaintenanceConfigurationUpdate": window},
        ),
    )
    app = applied_app(maintained)
    assert app.version_id == 2 and len(app.operations) == 1  # not a new version
    assert app.maintenance_description() == {
        "ApplicationMaintenanceWindowStartTime": "23:15",
        "ApplicationMaintenanceWindowEndTime": "07:15",
    }
    restored = decode_image(encode_image(maintained.image)).analytics.applications[app.key]
    assert restored == app
    assert restored.operation_records()[0]["Operation"] == "AddApplicationVpcConfiguration"
    # A SQL application refuses a VPC, in the state machine (whichever door proposed it).
    image = apply(maintained.image, create("s")).image
    refused = apply(
        image,
        change(
            "s",
            "AddApplicationVpcConfiguration",
            {"ApplicationName": "s", "VpcConfiguration": vpc, "CurrentApplicationVersionId": 1},
        ),
    )
    assert refused.error is not None and refused.error.code is ErrorCode.INVALID_ARGUMENT


def snapshot_change(
    operation: str, request: dict[str, Any], result: dict[str, Any], *, now_ms: int
) -> ChangeAnalyticsSnapshot:
    return ChangeAnalyticsSnapshot(
        now_ms=now_ms,
        account_id=ACCOUNT,
        region=REGION,
        name="sp",
        operation=operation,
        request=json.dumps(request),
        result=json.dumps(result),
        transition_ms=1_000,
    )


def test_enhanced_snapshot_states_operations_and_codec() -> None:
    """CREATING then READY; an operation IN_PROGRESS until its end; one export at a time; no
    deletion while an operation runs; DELETING then gone; kept through the image codec."""
    prefix = {"BucketARN": "arn:aws:s3:::b", "KeyPrefix": "sp/"}
    source = {"SourceType": "S3", "ImportRoleArn": "arn:r", "SourceS3PrefixLocation": prefix}
    found = {"objects": 2, "size_bytes": 10, "digest": "d"}
    imported = apply(
        MetadataImage(),
        snapshot_change(
            "ImportSnapshot", {"ImportSourceConfiguration": source}, found, now_ms=1_000
        ),
    )
    assert imported.error is None
    snapshot = imported.result
    assert isinstance(snapshot, Snapshot)
    assert snapshot.status_at(1_500) == "CREATING"
    assert snapshot.status_at(2_000) == "READY"
    assert snapshot.operation_records(1_500)[0]["SnapshotOperationStatus"] == "IN_PROGRESS"
    assert "EndTime" not in snapshot.operation_records(1_500)[0]
    assert snapshot.operation_records(2_000)[0]["SnapshotOperationStatus"] == "SUCCESSFUL"
    again = apply(
        imported.image,
        snapshot_change("ImportSnapshot", {"ImportSourceConfiguration": source}, found, now_ms=2),
    )
    assert again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE
    early = apply(
        imported.image,
        snapshot_change("DeleteSnapshot", {"SnapshotCreationTimestamp": 1_000}, {}, now_ms=1_500),
    )
    assert early.error is not None and early.error.code is ErrorCode.RESOURCE_IN_USE

    destination = {
        "DestinationType": "S3",
        "ExportRoleArn": "arn:r",
        "DestinationS3PrefixLocation": {"BucketARN": "arn:aws:s3:::b", "KeyPrefix": "out"},
    }
    export = {"ExportDestinationConfiguration": destination}
    exported = apply(
        imported.image,
        snapshot_change("ExportSnapshot", export, {"copied": 2}, now_ms=3_000),
    )
    assert exported.error is None
    second = apply(
        exported.image, snapshot_change("ExportSnapshot", export, {"copied": 2}, now_ms=3_500)
    )
    assert second.error is not None and second.error.code is ErrorCode.LIMIT_EXCEEDED
    restored = decode_image(encode_image(exported.image)).analytics
    assert restored.snapshots == exported.image.analytics.snapshots

    deleted = apply(
        exported.image,
        snapshot_change("DeleteSnapshot", {"SnapshotCreationTimestamp": 1_000}, {}, now_ms=5_000),
    )
    assert deleted.error is None
    key = snapshot.key
    assert deleted.image.analytics.snapshot(key, now_ms=5_500) is not None
    assert deleted.image.analytics.snapshot(key, now_ms=6_000) is None
