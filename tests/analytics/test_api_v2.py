"""The kinesisanalyticsv2 (2018-05-23) API through boto3, unmodified, and through gRPC.

Goal: SQL-1_0 applications through the v2 shapes are the same applications v1 shows (one
store); version ids, ConditionalToken and CurrentApplicationVersionId checks; FLINK and
ZEPPELIN applications stored, described with AWS's defaults, listed, tagged, updated,
versioned and deleted, but never started (UnsupportedOperation naming the runtime Shoal runs);
ListApplicationVersions, DescribeApplicationVersion and RollbackApplication answering as AWS
does for each runtime.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from botocore.exceptions import ClientError

from broker.api.analytics.v2 import analytics_pb2, analytics_pb2_grpc
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP
from tests.analytics.test_api import ROLE, SCHEMA, STREAM_ARN, TUMBLING, error_of
from tests.compat.conftest import REGION, call
from tests.support import REPO

pytestmark = [pytest.mark.integration, MODULE_LOOP]

ACCOUNT = "000000000000"
BUCKET = "arn:aws:s3:::code"


def sql_configuration(stream: str, out: str) -> dict[str, Any]:
    return {
        "SqlApplicationConfiguration": {
            "Inputs": [
                {
                    "NamePrefix": "SOURCE_SQL_STREAM",
                    "KinesisStreamsInput": {"ResourceARN": STREAM_ARN.format(stream)},
                    "InputSchema": SCHEMA,
                }
            ],
            "Outputs": [
                {
                    "Name": "DESTINATION_SQL_STREAM",
                    "KinesisStreamsOutput": {"ResourceARN": STREAM_ARN.format(out)},
                    "DestinationSchema": {"RecordFormatType": "JSON"},
                }
            ],
        },
        "ApplicationCodeConfiguration": {
            "CodeContentType": "PLAINTEXT",
            "CodeContent": {"TextContent": TUMBLING},
        },
    }


async def test_sql_applications_through_v2_are_v1_applications(
    analytics: Any, analytics_v2: Any, kinesis: Any
) -> None:
    await call(kinesis.create_stream, StreamName="ticker", ShardCount=1)
    await call(kinesis.create_stream, StreamName="out", ShardCount=1)
    created = await call(
        analytics_v2.create_application,
        ApplicationName="v2sql",
        RuntimeEnvironment="SQL-1_0",
        ServiceExecutionRole=ROLE,
        ApplicationConfiguration=sql_configuration("ticker", "out"),
        Tags=[{"Key": "team", "Value": "analytics"}],
    )
    detail = created["ApplicationDetail"]
    arn = f"arn:aws:kinesisanalytics:{REGION}:{ACCOUNT}:application/v2sql"
    assert detail["ApplicationARN"] == arn
    assert detail["RuntimeEnvironment"] == "SQL-1_0"
    assert detail["ApplicationStatus"] == "READY"
    assert detail["ApplicationVersionId"] == 1
    assert detail["ServiceExecutionRole"] == ROLE
    configuration = detail["ApplicationConfigurationDescription"]
    sql = configuration["SqlApplicationConfigurationDescription"]
    assert sql["InputDescriptions"][0]["InAppStreamNames"] == ["SOURCE_SQL_STREAM_001"]
    assert sql["OutputDescriptions"][0]["OutputId"] == "2.1"
    code = configuration["ApplicationCodeConfigurationDescription"]
    assert code["CodeContentType"] == "PLAINTEXT"
    assert code["CodeContentDescription"]["TextContent"] == TUMBLING

    # The same application through v1, and a v1 application through v2.
    v1 = (await call(analytics.describe_application, ApplicationName="v2sql"))["ApplicationDetail"]
    assert v1["ApplicationCode"] == TUMBLING
    assert v1["InputDescriptions"] == sql["InputDescriptions"]
    await call(analytics.create_application, ApplicationName="v1sql", ApplicationCode=TUMBLING)
    listed = (await call(analytics_v2.list_applications))["ApplicationSummaries"]
    assert [
        (s["ApplicationName"], s["RuntimeEnvironment"], s["ApplicationVersionId"]) for s in listed
    ] == [
        ("v1sql", "SQL-1_0", 1),
        ("v2sql", "SQL-1_0", 1),
    ]
    page = await call(analytics_v2.list_applications, Limit=1)
    assert [s["ApplicationName"] for s in page["ApplicationSummaries"]] == ["v1sql"]
    rest = await call(analytics_v2.list_applications, Limit=1, NextToken=page["NextToken"])
    assert [s["ApplicationName"] for s in rest["ApplicationSummaries"]] == ["v2sql"]
    assert "NextToken" not in rest

    # Changes: version ids, CurrentApplicationVersionId and ConditionalToken checks.
    added = await call(
        analytics_v2.add_application_cloud_watch_logging_option,
        ApplicationName="v2sql",
        CurrentApplicationVersionId=1,
        CloudWatchLoggingOption={
            "LogStreamARN": "arn:aws:logs:us-east-1:0:log-group:g:log-stream:s"
        },
    )
    assert added["ApplicationVersionId"] == 2
    assert added["CloudWatchLoggingOptionDescriptions"][0]["CloudWatchLoggingOptionId"] == "3.1"
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.delete_application_output,
            ApplicationName="v2sql",
            CurrentApplicationVersionId=1,
            OutputId="2.1",
        )
    assert error_of(raised) == ("ConcurrentModificationException", 400)
    token = (await call(analytics_v2.describe_application, ApplicationName="v2sql"))[
        "ApplicationDetail"
    ]["ConditionalToken"]
    updated = await call(
        analytics_v2.update_application,
        ApplicationName="v2sql",
        ConditionalToken=token,
        ApplicationConfigurationUpdate={
            "ApplicationCodeConfigurationUpdate": {
                "CodeContentUpdate": {"TextContentUpdate": TUMBLING.replace("10", "20")}
            },
            "SqlApplicationConfigurationUpdate": {
                "InputUpdates": [{"InputId": "1.1", "NamePrefixUpdate": "SOURCE_SQL_STREAM"}]
            },
        },
    )
    detail = updated["ApplicationDetail"]
    assert detail["ApplicationVersionId"] == 3
    code = detail["ApplicationConfigurationDescription"]["ApplicationCodeConfigurationDescription"]
    assert "'20' SECOND" in code["CodeContentDescription"]["TextContent"]
    with pytest.raises(ClientError) as raised:  # the token stood for version 2
        await call(
            analytics_v2.delete_application_cloud_watch_logging_option,
            ApplicationName="v2sql",
            ConditionalToken=token,
            CloudWatchLoggingOptionId="3.1",
        )
    assert error_of(raised) == ("ConcurrentModificationException", 400)
    with pytest.raises(ClientError) as raised:  # the SQL is compiled, as through v1
        await call(
            analytics_v2.update_application,
            ApplicationName="v2sql",
            CurrentApplicationVersionId=3,
            ApplicationConfigurationUpdate={
                "ApplicationCodeConfigurationUpdate": {
                    "CodeContentUpdate": {
                        "TextContentUpdate": "SELECT STREAM * FROM A JOIN B ON 1=1"
                    }
                }
            },
        )
    assert error_of(raised)[0] == "CodeValidationException"

    # Versions and rollback are Flink's, as on AWS.
    for operation, extra in (
        (analytics_v2.list_application_versions, {}),
        (analytics_v2.describe_application_version, {"ApplicationVersionId": 1}),
        (analytics_v2.rollback_application, {"CurrentApplicationVersionId": 3}),
    ):
        with pytest.raises(ClientError) as raised:
            await call(operation, ApplicationName="v2sql", **extra)
        assert error_of(raised) == ("UnsupportedOperationException", 400)

    # Start (with v2's SqlRunConfigurations), stop, tags, delete.
    await call(
        analytics_v2.start_application,
        ApplicationName="v2sql",
        RunConfiguration={
            "SqlRunConfigurations": [
                {
                    "InputId": "1.1",
                    "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
                }
            ]
        },
    )
    described = (await call(analytics.describe_application, ApplicationName="v2sql"))[
        "ApplicationDetail"
    ]
    assert described["ApplicationStatus"] == "RUNNING"
    position = described["InputDescriptions"][0]["InputStartingPositionConfiguration"]
    assert position == {"InputStartingPosition": "TRIM_HORIZON"}
    await call(analytics_v2.stop_application, ApplicationName="v2sql", Force=False)
    await call(analytics_v2.tag_resource, ResourceARN=arn, Tags=[{"Key": "env", "Value": "dev"}])
    tags = (await call(analytics.list_tags_for_resource, ResourceARN=arn))["Tags"]
    assert tags == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "analytics"}]
    await call(
        analytics_v2.delete_application,
        ApplicationName="v2sql",
        CreateTimestamp=detail["CreateTimestamp"],
    )
    with pytest.raises(ClientError) as raised:
        await call(analytics.describe_application, ApplicationName="v2sql")
    assert error_of(raised) == ("ResourceNotFoundException", 400)


FLINK_CONFIGURATION = {
    "ApplicationCodeConfiguration": {
        "CodeContentType": "ZIPFILE",
        "CodeContent": {
            "S3ContentLocation": {"BucketARN": BUCKET, "FileKey": "app.jar"},
        },
    },
    "EnvironmentProperties": {
        "PropertyGroups": [{"PropertyGroupId": "app", "PropertyMap": {"window": "10"}}]
    },
    "FlinkApplicationConfiguration": {
        "ParallelismConfiguration": {
            "ConfigurationType": "CUSTOM",
            "Parallelism": 4,
            "ParallelismPerKPU": 2,
            "AutoScalingEnabled": True,
        }
    },
}


async def test_flink_and_zeppelin_applications_are_stored_not_run(
    analytics: Any, analytics_v2: Any
) -> None:
    created = await call(
        analytics_v2.create_application,
        ApplicationName="flink",
        RuntimeEnvironment="FLINK-1_18",
        ServiceExecutionRole=ROLE,
        ApplicationConfiguration=FLINK_CONFIGURATION,
    )
    detail = created["ApplicationDetail"]
    assert detail["ApplicationMode"] == "STREAMING"
    described = detail["ApplicationConfigurationDescription"]
    code = described["ApplicationCodeConfigurationDescription"]
    assert code == {
        "CodeContentType": "ZIPFILE",
        "CodeContentDescription": {
            "S3ApplicationCodeLocationDescription": {"BucketARN": BUCKET, "FileKey": "app.jar"}
        },
    }
    assert described["EnvironmentPropertyDescriptions"] == {
        "PropertyGroupDescriptions": [{"PropertyGroupId": "app", "PropertyMap": {"window": "10"}}]
    }
    flink = described["FlinkApplicationConfigurationDescription"]
    assert flink["ParallelismConfigurationDescription"] == {
        "ConfigurationType": "CUSTOM",
        "Parallelism": 4,
        "ParallelismPerKPU": 2,
        "AutoScalingEnabled": True,
        "CurrentParallelism": 4,
    }
    assert flink["CheckpointConfigurationDescription"]["CheckpointInterval"] == 60_000

    await call(
        analytics_v2.create_application,
        ApplicationName="notebook",
        RuntimeEnvironment="ZEPPELIN-FLINK-3_0",
        ServiceExecutionRole=ROLE,
        ApplicationMode="INTERACTIVE",
    )
    # v1 knows SQL applications only.
    listed = (await call(analytics.list_applications))["ApplicationSummaries"]
    assert {"flink", "notebook"}.isdisjoint(summary["ApplicationName"] for summary in listed)
    with pytest.raises(ClientError) as raised:
        await call(analytics.describe_application, ApplicationName="flink")
    assert error_of(raised) == ("ResourceNotFoundException", 400)

    # Updates: the configuration merged, the runtime upgraded, each version kept.
    updated = await call(
        analytics_v2.update_application,
        ApplicationName="flink",
        CurrentApplicationVersionId=1,
        ApplicationConfigurationUpdate={
            "FlinkApplicationConfigurationUpdate": {
                "ParallelismConfigurationUpdate": {
                    "ConfigurationTypeUpdate": "CUSTOM",
                    "ParallelismUpdate": 8,
                }
            },
            "ApplicationCodeConfigurationUpdate": {
                "CodeContentUpdate": {"ZipFileContentUpdate": b"PK\x03\x04 jar"}
            },
        },
        RuntimeEnvironmentUpdate="FLINK-1_20",
    )
    detail = updated["ApplicationDetail"]
    assert detail["ApplicationVersionId"] == 2
    assert detail["RuntimeEnvironment"] == "FLINK-1_20"
    described = detail["ApplicationConfigurationDescription"]
    parallelism = described["FlinkApplicationConfigurationDescription"][
        "ParallelismConfigurationDescription"
    ]
    assert (parallelism["Parallelism"], parallelism["ParallelismPerKPU"]) == (8, 2)
    assert described["ApplicationCodeConfigurationDescription"]["CodeContentDescription"][
        "CodeSize"
    ] == len(b"PK\x03\x04 jar")
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.update_application,
            ApplicationName="flink",
            CurrentApplicationVersionId=2,
            RuntimeEnvironmentUpdate="SQL-1_0",
        )
    assert error_of(raised) == ("InvalidArgumentException", 400)

    versions = await call(analytics_v2.list_application_versions, ApplicationName="flink")
    assert versions["ApplicationVersionSummaries"] == [
        {"ApplicationVersionId": 2, "ApplicationStatus": "READY"},
        {"ApplicationVersionId": 1, "ApplicationStatus": "READY"},
    ]
    first = (
        await call(
            analytics_v2.describe_application_version,
            ApplicationName="flink",
            ApplicationVersionId=1,
        )
    )["ApplicationVersionDetail"]
    assert first["RuntimeEnvironment"] == "FLINK-1_18"
    assert (
        first["ApplicationConfigurationDescription"]["FlinkApplicationConfigurationDescription"][
            "ParallelismConfigurationDescription"
        ]["Parallelism"]
        == 4
    )
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.describe_application_version,
            ApplicationName="flink",
            ApplicationVersionId=9,
        )
    assert error_of(raised) == ("ResourceNotFoundException", 400)

    # Never started: Start names what Shoal runs; rollback and snapshots need a running one.
    with pytest.raises(ClientError) as raised:
        await call(analytics_v2.start_application, ApplicationName="flink")
    assert error_of(raised) == ("UnsupportedOperationException", 400)
    assert "SQL-1_0" in raised.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.rollback_application,
            ApplicationName="flink",
            CurrentApplicationVersionId=2,
        )
    assert error_of(raised) == ("ResourceInUseException", 400)
    snapshots = await call(analytics_v2.list_application_snapshots, ApplicationName="flink")
    assert snapshots["SnapshotSummaries"] == []
    with pytest.raises(ClientError) as raised:  # SQL parts on a Flink application
        await call(
            analytics_v2.add_application_output,
            ApplicationName="flink",
            CurrentApplicationVersionId=2,
            Output={
                "Name": "X",
                "KinesisStreamsOutput": {"ResourceARN": STREAM_ARN.format("out")},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            },
        )
    assert error_of(raised) == ("InvalidArgumentException", 400)

    arn = detail["ApplicationARN"]
    await call(analytics_v2.tag_resource, ResourceARN=arn, Tags=[{"Key": "k", "Value": "v"}])
    assert (await call(analytics_v2.list_tags_for_resource, ResourceARN=arn))["Tags"] == [
        {"Key": "k", "Value": "v"}
    ]
    listed = (await call(analytics_v2.list_applications))["ApplicationSummaries"]
    assert [
        (s["ApplicationName"], s["RuntimeEnvironment"], s.get("ApplicationMode"))
        for s in listed
        if s["RuntimeEnvironment"] != "SQL-1_0"  # the module's other tests' applications
    ] == [
        ("flink", "FLINK-1_20", "STREAMING"),
        ("notebook", "ZEPPELIN-FLINK-3_0", "INTERACTIVE"),
    ]
    await call(
        analytics_v2.delete_application,
        ApplicationName="flink",
        CreateTimestamp=detail["CreateTimestamp"],
    )
    with pytest.raises(ClientError) as raised:
        await call(analytics_v2.describe_application, ApplicationName="flink")
    assert error_of(raised) == ("ResourceNotFoundException", 400)


async def test_the_v2_grpc_service(node: Node) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = analytics_pb2_grpc.KinesisAnalyticsV2ServiceStub(channel)
        created = await stub.CreateApplication(
            analytics_pb2.CreateApplicationRequest(
                application_name="native",
                runtime_environment="SQL-1_0",
                service_execution_role=ROLE,
                application_configuration=analytics_pb2.ApplicationConfiguration(
                    application_code_configuration=analytics_pb2.ApplicationCodeConfiguration(
                        code_content_type="PLAINTEXT",
                        code_content=analytics_pb2.CodeContent(text_content=TUMBLING),
                    )
                ),
            )
        )
        assert created.application_detail.application_status == "READY"
        assert created.application_detail.runtime_environment == "SQL-1_0"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.StartApplication(
                analytics_pb2.StartApplicationRequest(application_name="native")
            )
        assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # no input


async def test_vpc_configurations_maintenance_and_operations(analytics_v2: Any, node: Node) -> None:
    """The Flink-only operations: VPC configurations (by id, versioned), the maintenance
    window (no new version), each change listed as a SUCCESSFUL operation; refused for SQL
    applications with AWS's errors; a presigned URL needs a running application."""
    await call(
        analytics_v2.create_application,
        ApplicationName="vpc-flink",
        RuntimeEnvironment="FLINK-1_20",
        ServiceExecutionRole=ROLE,
        ApplicationConfiguration={
            **FLINK_CONFIGURATION,
            "VpcConfigurations": [{"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-1"]}],
        },
    )
    detail = (await call(analytics_v2.describe_application, ApplicationName="vpc-flink"))[
        "ApplicationDetail"
    ]
    (created_vpc,) = detail["ApplicationConfigurationDescription"]["VpcConfigurationDescriptions"]
    assert created_vpc["SubnetIds"] == ["subnet-a"]
    assert created_vpc["VpcId"].startswith("vpc-")

    added = await call(
        analytics_v2.add_application_vpc_configuration,
        ApplicationName="vpc-flink",
        CurrentApplicationVersionId=1,
        VpcConfiguration={"SubnetIds": ["subnet-b", "subnet-c"], "SecurityGroupIds": ["sg-2"]},
    )
    assert added["ApplicationVersionId"] == 2
    vpc_id = added["VpcConfigurationDescription"]["VpcConfigurationId"]
    assert vpc_id != created_vpc["VpcConfigurationId"]
    with pytest.raises(ClientError) as raised:  # a stale version
        await call(
            analytics_v2.add_application_vpc_configuration,
            ApplicationName="vpc-flink",
            CurrentApplicationVersionId=1,
            VpcConfiguration={"SubnetIds": ["subnet-d"], "SecurityGroupIds": ["sg-2"]},
        )
    assert error_of(raised) == ("ConcurrentModificationException", 400)
    updated = await call(
        analytics_v2.update_application,
        ApplicationName="vpc-flink",
        CurrentApplicationVersionId=2,
        ApplicationConfigurationUpdate={
            "VpcConfigurationUpdates": [
                {"VpcConfigurationId": vpc_id, "SecurityGroupIdUpdates": ["sg-3"]}
            ]
        },
    )
    vpcs = updated["ApplicationDetail"]["ApplicationConfigurationDescription"][
        "VpcConfigurationDescriptions"
    ]
    assert [(vpc["SubnetIds"], vpc["SecurityGroupIds"]) for vpc in vpcs] == [
        (["subnet-a"], ["sg-1"]),
        (["subnet-b", "subnet-c"], ["sg-3"]),
    ]
    token = updated["ApplicationDetail"]["ConditionalToken"]
    deleted = await call(
        analytics_v2.delete_application_vpc_configuration,
        ApplicationName="vpc-flink",
        ConditionalToken=token,
        VpcConfigurationId=created_vpc["VpcConfigurationId"],
    )
    assert deleted["ApplicationVersionId"] == 4
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.delete_application_vpc_configuration,
            ApplicationName="vpc-flink",
            CurrentApplicationVersionId=4,
            VpcConfigurationId=created_vpc["VpcConfigurationId"],
        )
    assert error_of(raised) == ("ResourceNotFoundException", 400)

    maintained = await call(
        analytics_v2.update_application_maintenance_configuration,
        ApplicationName="vpc-flink",
        ApplicationMaintenanceConfigurationUpdate={
            "ApplicationMaintenanceWindowStartTimeUpdate": "20:30"
        },
    )
    window = {
        "ApplicationMaintenanceWindowStartTime": "20:30",
        "ApplicationMaintenanceWindowEndTime": "04:30",
    }
    assert maintained["ApplicationMaintenanceConfigurationDescription"] == window
    detail = (await call(analytics_v2.describe_application, ApplicationName="vpc-flink"))[
        "ApplicationDetail"
    ]
    assert detail["ApplicationMaintenanceConfigurationDescription"] == window
    assert detail["ApplicationVersionId"] == 4
    assert [
        vpc["VpcConfigurationId"]
        for vpc in detail["ApplicationConfigurationDescription"]["VpcConfigurationDescriptions"]
    ] == [vpc_id]

    # Every change is an operation, newest first; filters and pages as the model has them.
    listed = (await call(analytics_v2.list_application_operations, ApplicationName="vpc-flink"))[
        "ApplicationOperationInfoList"
    ]
    assert [(item["Operation"], item["OperationStatus"]) for item in listed] == [
        ("DeleteApplicationVpcConfiguration", "SUCCESSFUL"),
        ("UpdateApplication", "SUCCESSFUL"),
        ("AddApplicationVpcConfiguration", "SUCCESSFUL"),
    ]
    assert listed[0]["OperationId"] == deleted["OperationId"]
    assert listed[2]["OperationId"] == added["OperationId"]
    assert listed[1]["OperationId"] == updated["OperationId"]
    page = await call(
        analytics_v2.list_application_operations, ApplicationName="vpc-flink", Limit=2
    )
    rest = await call(
        analytics_v2.list_application_operations,
        ApplicationName="vpc-flink",
        Limit=2,
        NextToken=page["NextToken"],
    )
    assert [item["OperationId"] for item in page["ApplicationOperationInfoList"]] + [
        item["OperationId"] for item in rest["ApplicationOperationInfoList"]
    ] == [item["OperationId"] for item in listed]
    assert "NextToken" not in rest
    only_updates = await call(
        analytics_v2.list_application_operations,
        ApplicationName="vpc-flink",
        Operation="UpdateApplication",
    )
    assert len(only_updates["ApplicationOperationInfoList"]) == 1
    described = (
        await call(
            analytics_v2.describe_application_operation,
            ApplicationName="vpc-flink",
            OperationId=added["OperationId"],
        )
    )["ApplicationOperationInfoDetails"]
    assert described["Operation"] == "AddApplicationVpcConfiguration"
    assert described["ApplicationVersionChangeDetails"] == {
        "ApplicationVersionUpdatedFrom": 1,
        "ApplicationVersionUpdatedTo": 2,
    }
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.describe_application_operation,
            ApplicationName="vpc-flink",
            OperationId="nope",
        )
    assert error_of(raised) == ("ResourceNotFoundException", 400)
    with pytest.raises(ClientError) as raised:  # never running here
        await call(
            analytics_v2.create_application_presigned_url,
            ApplicationName="vpc-flink",
            UrlType="FLINK_DASHBOARD_URL",
        )
    assert error_of(raised) == ("ResourceInUseException", 400)

    # SQL applications: no VPC, no maintenance window, no operations, no extension URL.
    await call(
        analytics_v2.create_application,
        ApplicationName="vpc-sql",
        RuntimeEnvironment="SQL-1_0",
        ServiceExecutionRole=ROLE,
    )
    refusals: list[tuple[Any, dict[str, Any], str]] = [
        (
            analytics_v2.add_application_vpc_configuration,
            {
                "CurrentApplicationVersionId": 1,
                "VpcConfiguration": {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-1"]},
            },
            "InvalidArgumentException",
        ),
        (
            analytics_v2.update_application_maintenance_configuration,
            {
                "ApplicationMaintenanceConfigurationUpdate": {
                    "ApplicationMaintenanceWindowStartTimeUpdate": "01:00"
                }
            },
            "UnsupportedOperationException",
        ),
        (analytics_v2.list_application_operations, {}, "UnsupportedOperationException"),
        (
            analytics_v2.describe_application_operation,
            {"OperationId": "x"},
            "UnsupportedOperationException",
        ),
        (
            analytics_v2.create_application_presigned_url,
            {"UrlType": "FLINK_DASHBOARD_URL"},
            "InvalidArgumentException",
        ),
    ]
    for method, members, expected in refusals:
        with pytest.raises(ClientError) as raised:
            await call(method, ApplicationName="vpc-sql", **members)
        assert error_of(raised) == (expected, 400), method
    sql_detail = (await call(analytics_v2.describe_application, ApplicationName="vpc-sql"))[
        "ApplicationDetail"
    ]
    assert sql_detail["ApplicationVersionId"] == 1

    # The native door serves the same operations.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = analytics_pb2_grpc.KinesisAnalyticsV2ServiceStub(channel)
        answer = await stub.ListApplicationOperations(
            analytics_pb2.ListApplicationOperationsRequest(application_name="vpc-flink")
        )
        assert [item.operation_id for item in answer.application_operation_info_list] == [
            item["OperationId"] for item in listed
        ]
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.AddApplicationVpcConfiguration(
                analytics_pb2.AddApplicationVpcConfigurationRequest(
                    application_name="vpc-sql",
                    current_application_version_id=1,
                    vpc_configuration=analytics_pb2.VpcConfiguration(
                        subnet_ids=["subnet-a"], security_group_ids=["sg-1"]
                    ),
                )
            )
        assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.DescribeSnapshot(analytics_pb2.DescribeSnapshotRequest(snapshot_name="x"))
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND


def _aws_cli(node: Node, home: Path, *args: str) -> Any:
    """`aws kinesisanalyticsv2 ...` (the AWS CLI v1, unmodified, in its own process)."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_ENDPOINT_URL_KINESIS_ANALYTICS_V2": f"http://127.0.0.1:{node.http_port}",
    }
    completed = subprocess.run(
        [str(REPO / ".venv" / "bin" / "aws"), "kinesisanalyticsv2", *args, "--output", "json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if completed.stdout.strip() else None


@pytest.mark.slow
async def test_the_aws_cli_manages_a_flink_application(
    analytics_v2: Any, node: Node, tmp_path: Path
) -> None:
    await call(
        analytics_v2.create_application,
        ApplicationName="cli-flink",
        RuntimeEnvironment="FLINK-1_20",
        ServiceExecutionRole=ROLE,
    )
    added = await asyncio.to_thread(
        _aws_cli,
        node,
        tmp_path,
        "add-application-vpc-configuration",
        "--application-name=cli-flink",
        "--current-application-version-id=1",
        "--vpc-configuration=SubnetIds=subnet-1,SecurityGroupIds=sg-1",
    )
    assert added["ApplicationVersionId"] == 2
    listed = await call(analytics_v2.list_application_operations, ApplicationName="cli-flink")
    assert [item["OperationId"] for item in listed["ApplicationOperationInfoList"]] == [
        added["OperationId"]
    ]
