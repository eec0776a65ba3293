"""The kinesisanalytics (2015-08-14) API through boto3, unmodified, and through gRPC.

Goal: every one of the model's 20 operations answers as AWS does: the shapes boto3 parses,
ARNs, version ids and CurrentApplicationVersionId checks, the READY/RUNNING states, error
names and statuses from the model (validation included), and SQL refused at Create/Update with
the line and construct named. The node's clock is a ManualClock with 0 ms transitions.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError, ParamValidationError

from broker.api.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from broker.api.analytics.v2 import analytics_pb2 as v2_pb2
from broker.gateway.validation import service_model
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP, analytics_client
from tests.compat.conftest import REGION, call
from tests.required_members import (
    boto3_ask,
    grpc_ask,
    grpc_operations,
    malformed_request_answer,
    sweep,
)

pytestmark = [pytest.mark.integration, MODULE_LOOP]

ACCOUNT = "000000000000"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{{}}"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/kda"

TUMBLING = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    TICKER_SYMBOL VARCHAR(4),
    TICKER_SYMBOL_COUNT INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER_SYMBOL, COUNT(*) AS TICKER_SYMBOL_COUNT
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '10' SECOND);
"""

SCHEMA = {
    "RecordFormat": {
        "RecordFormatType": "JSON",
        "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
    },
    "RecordEncoding": "UTF-8",
    "RecordColumns": [
        {"Name": "TICKER_SYMBOL", "Mapping": "$.TICKER_SYMBOL", "SqlType": "VARCHAR(4)"},
        {"Name": "SECTOR", "Mapping": "$.SECTOR", "SqlType": "VARCHAR(16)"},
        {"Name": "CHANGE", "Mapping": "$.CHANGE", "SqlType": "REAL"},
        {"Name": "PRICE", "Mapping": "$.PRICE", "SqlType": "REAL"},
    ],
}


def stock_input(stream: str) -> dict[str, Any]:
    return {
        "NamePrefix": "SOURCE_SQL_STREAM",
        "KinesisStreamsInput": {"ResourceARN": STREAM_ARN.format(stream), "RoleARN": ROLE},
        "InputParallelism": {"Count": 1},
        "InputSchema": SCHEMA,
    }


def stream_output(stream: str, name: str = "DESTINATION_SQL_STREAM") -> dict[str, Any]:
    return {
        "Name": name,
        "KinesisStreamsOutput": {"ResourceARN": STREAM_ARN.format(stream), "RoleARN": ROLE},
        "DestinationSchema": {"RecordFormatType": "JSON"},
    }


def error_of(raised: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


async def version(analytics: Any, name: str) -> int:
    detail = (await call(analytics.describe_application, ApplicationName=name))["ApplicationDetail"]
    return int(detail["ApplicationVersionId"])


async def test_every_operation(analytics: Any, kinesis: Any) -> None:
    """Each of the 20 operations once, with its main effect seen through Describe/List."""
    await call(kinesis.create_stream, StreamName="ticker", ShardCount=1)
    await call(kinesis.create_stream, StreamName="out", ShardCount=1)
    await call(
        kinesis.put_record,
        StreamName="ticker",
        Data=b'{"TICKER_SYMBOL": "QXZ", "SECTOR": "HEALTHCARE", "CHANGE": -0.05, "PRICE": 84.51}',
        PartitionKey="QXZ",
    )

    discovered = await call(
        analytics.discover_input_schema,
        ResourceARN=STREAM_ARN.format("ticker"),
        RoleARN=ROLE,
        InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"},
    )
    columns = discovered["InputSchema"]["RecordColumns"]
    assert [(c["Name"], c["SqlType"]) for c in columns] == [
        ("TICKER_SYMBOL", "VARCHAR(4)"),
        ("SECTOR", "VARCHAR(16)"),
        ("CHANGE", "REAL"),
        ("PRICE", "REAL"),
    ]
    assert discovered["ParsedInputRecords"] == [["QXZ", "HEALTHCARE", "-0.05", "84.51"]]

    created = await call(
        analytics.create_application,
        ApplicationName="tickers",
        ApplicationDescription="tumbling window count",
        ApplicationCode=TUMBLING,
        Tags=[{"Key": "team", "Value": "analytics"}],
    )
    arn = f"arn:aws:kinesisanalytics:{REGION}:{ACCOUNT}:application/tickers"
    assert created["ApplicationSummary"] == {
        "ApplicationName": "tickers",
        "ApplicationARN": arn,
        "ApplicationStatus": "READY",
    }
    await call(
        analytics.add_application_input,
        ApplicationName="tickers",
        CurrentApplicationVersionId=1,
        Input=stock_input("ticker"),
    )
    await call(
        analytics.add_application_output,
        ApplicationName="tickers",
        CurrentApplicationVersionId=2,
        Output=stream_output("out"),
    )
    await call(
        analytics.add_application_cloud_watch_logging_option,
        ApplicationName="tickers",
        CurrentApplicationVersionId=3,
        CloudWatchLoggingOption={
            "LogStreamARN": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:kda:log-stream:app",
            "RoleARN": ROLE,
        },
    )
    await call(
        analytics.add_application_reference_data_source,
        ApplicationName="tickers",
        CurrentApplicationVersionId=4,
        ReferenceDataSource={
            "TableName": "COMPANIES",
            "S3ReferenceDataSource": {
                "BucketARN": "arn:aws:s3:::reference",
                "FileKey": "companies.csv",
                "ReferenceRoleARN": ROLE,
            },
            "ReferenceSchema": SCHEMA,
        },
    )
    await call(
        analytics.add_application_input_processing_configuration,
        ApplicationName="tickers",
        CurrentApplicationVersionId=5,
        InputId="1.1",
        InputProcessingConfiguration={
            "InputLambdaProcessor": {
                "ResourceARN": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pre",
                "RoleARN": ROLE,
            }
        },
    )
    detail = (await call(analytics.describe_application, ApplicationName="tickers"))[
        "ApplicationDetail"
    ]
    assert detail["ApplicationVersionId"] == 6
    assert detail["ApplicationStatus"] == "READY"
    assert detail["ApplicationARN"] == arn
    assert detail["ApplicationCode"] == TUMBLING
    assert detail["ApplicationDescription"] == "tumbling window count"
    (described_input,) = detail["InputDescriptions"]
    assert described_input["InputId"] == "1.1"
    assert described_input["InAppStreamNames"] == ["SOURCE_SQL_STREAM_001"]
    assert described_input["InputProcessingConfigurationDescription"] == {
        "InputLambdaProcessorDescription": {
            "ResourceARN": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pre",
            "RoleARN": ROLE,
        }
    }
    (output,) = detail["OutputDescriptions"]
    assert output["KinesisStreamsOutputDescription"]["ResourceARN"] == STREAM_ARN.format("out")
    (logging_option,) = detail["CloudWatchLoggingOptionDescriptions"]
    (reference,) = detail["ReferenceDataSourceDescriptions"]
    assert reference["TableName"] == "COMPANIES"

    await call(
        analytics.delete_application_input_processing_configuration,
        ApplicationName="tickers",
        CurrentApplicationVersionId=6,
        InputId="1.1",
    )
    await call(
        analytics.delete_application_reference_data_source,
        ApplicationName="tickers",
        CurrentApplicationVersionId=7,
        ReferenceId=reference["ReferenceId"],
    )
    await call(
        analytics.delete_application_cloud_watch_logging_option,
        ApplicationName="tickers",
        CurrentApplicationVersionId=8,
        CloudWatchLoggingOptionId=logging_option["CloudWatchLoggingOptionId"],
    )
    await call(
        analytics.update_application,
        ApplicationName="tickers",
        CurrentApplicationVersionId=9,
        ApplicationUpdate={
            "InputUpdates": [{"InputId": "1.1", "InputParallelismUpdate": {"CountUpdate": 2}}],
            "OutputUpdates": [
                {
                    "OutputId": output["OutputId"],
                    "DestinationSchemaUpdate": {"RecordFormatType": "CSV"},
                }
            ],
        },
    )
    detail = (await call(analytics.describe_application, ApplicationName="tickers"))[
        "ApplicationDetail"
    ]
    assert detail["ApplicationVersionId"] == 10
    assert detail["InputDescriptions"][0]["InAppStreamNames"] == [
        "SOURCE_SQL_STREAM_001",
        "SOURCE_SQL_STREAM_002",
    ]
    assert detail["OutputDescriptions"][0]["DestinationSchema"] == {"RecordFormatType": "CSV"}

    await call(
        analytics.start_application,
        ApplicationName="tickers",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    summaries = (await call(analytics.list_applications))["ApplicationSummaries"]
    assert summaries == [
        {"ApplicationName": "tickers", "ApplicationARN": arn, "ApplicationStatus": "RUNNING"}
    ]
    await call(analytics.stop_application, ApplicationName="tickers")
    assert (await version(analytics, "tickers")) == 10  # start/stop keep the version

    await call(analytics.tag_resource, ResourceARN=arn, Tags=[{"Key": "env", "Value": "test"}])
    await call(analytics.untag_resource, ResourceARN=arn, TagKeys=["team"])
    tags = (await call(analytics.list_tags_for_resource, ResourceARN=arn))["Tags"]
    assert tags == [{"Key": "env", "Value": "test"}]

    await call(
        analytics.delete_application_output,
        ApplicationName="tickers",
        CurrentApplicationVersionId=10,
        OutputId=output["OutputId"],
    )
    await call(
        analytics.delete_application,
        ApplicationName="tickers",
        CreateTimestamp=detail["CreateTimestamp"],
    )
    assert (await call(analytics.list_applications))["ApplicationSummaries"] == []
    with pytest.raises(ClientError) as raised:
        await call(analytics.describe_application, ApplicationName="tickers")
    assert error_of(raised) == ("ResourceNotFoundException", 400)


async def test_version_checks_and_states(analytics: Any) -> None:
    await call(analytics.create_application, ApplicationName="v", ApplicationCode=TUMBLING)
    with pytest.raises(ClientError) as raised:
        await call(analytics.create_application, ApplicationName="v")
    assert error_of(raised) == ("ResourceInUseException", 400)
    with pytest.raises(ClientError) as raised:
        await call(
            analytics.update_application,
            ApplicationName="v",
            CurrentApplicationVersionId=7,
            ApplicationUpdate={"ApplicationCodeUpdate": ""},
        )
    assert error_of(raised) == ("ConcurrentModificationException", 400)
    with pytest.raises(ClientError) as raised:
        await call(analytics.start_application, ApplicationName="v", InputConfigurations=[])
    assert error_of(raised) == ("InvalidApplicationConfigurationException", 400)
    with pytest.raises(ClientError) as raised:
        await call(
            analytics.delete_application_output,
            ApplicationName="v",
            CurrentApplicationVersionId=1,
            OutputId="9.1",
        )
    assert error_of(raised) == ("ResourceNotFoundException", 400)
    with pytest.raises(ClientError) as raised:
        await call(analytics.stop_application, ApplicationName="missing")
    assert error_of(raised) == ("ResourceNotFoundException", 400)
    detail = (await call(analytics.describe_application, ApplicationName="v"))["ApplicationDetail"]
    wrong = detail["CreateTimestamp"].replace(year=2001)
    with pytest.raises(ClientError) as raised:
        await call(analytics.delete_application, ApplicationName="v", CreateTimestamp=wrong)
    assert error_of(raised) == ("ConcurrentModificationException", 400)


async def test_sql_refused_at_create_and_update_names_line_and_construct(analytics: Any) -> None:
    join = (
        'CREATE OR REPLACE STREAM "D" (A VARCHAR(4));\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
        'SELECT STREAM S.A FROM "SOURCE_SQL_STREAM_001" AS S\n'
        'JOIN "SOURCE_SQL_STREAM_001" AS C ON S.A = C.A;\n'
    )  # stream-to-stream (stream-to-table joins run: test_reference_data.py)
    with pytest.raises(ClientError) as raised:
        await call(analytics.create_application, ApplicationName="j", ApplicationCode=join)
    assert error_of(raised) == ("CodeValidationException", 400)
    message = raised.value.response["Error"]["Message"]
    assert "Line 4" in message and "JOIN" in message and "stream-to-stream" in message

    await call(
        analytics.create_application,
        ApplicationName="u",
        ApplicationCode=TUMBLING,
        Inputs=[stock_input("ticker")],
    )
    unknown_column = TUMBLING.replace("COUNT(*)", "SUM(VOLUME)")
    with pytest.raises(ClientError) as raised:
        await call(
            analytics.update_application,
            ApplicationName="u",
            CurrentApplicationVersionId=1,
            ApplicationUpdate={"ApplicationCodeUpdate": unknown_column},
        )
    assert error_of(raised) == ("CodeValidationException", 400)
    message = raised.value.response["Error"]["Message"]
    assert "Line 4" in message and "VOLUME" in message
    assert (await version(analytics, "u")) == 1  # nothing applied


async def test_validation_from_the_model(analytics: Any, node: Node) -> None:
    """Limits and patterns of the model answer ValidationException, as AWS does; botocore's own
    client-side validation is off so the request reaches the node."""
    raw = analytics_client(node, parameter_validation=False)
    try:
        with pytest.raises(ClientError) as raised:
            await call(raw.create_application, ApplicationName="bad name!")
        assert error_of(raised) == ("ValidationException", 400)
        with pytest.raises(ClientError) as raised:
            await call(raw.list_applications, Limit=0)
        assert error_of(raised) == ("ValidationException", 400)
    finally:
        raw.close()
    with pytest.raises(ParamValidationError):
        await call(analytics.create_application)


async def test_the_grpc_service(node: Node) -> None:
    """The same API as a native gRPC service (messages mirror the model's shapes)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = analytics_pb2_grpc.KinesisAnalyticsServiceStub(channel)
        created = await stub.CreateApplication(
            analytics_pb2.CreateApplicationRequest(
                application_name="native", application_code=TUMBLING
            )
        )
        assert created.application_summary.application_status == "READY"
        described = await stub.DescribeApplication(
            analytics_pb2.DescribeApplicationRequest(application_name="native")
        )
        assert described.application_detail.application_version_id == 1
        assert described.application_detail.create_timestamp.seconds > 0
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DescribeApplication(
                analytics_pb2.DescribeApplicationRequest(application_name="absent")
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


# --- Every request shape of both models (tests/required_members.py) ---------------------------
# Every operation of botocore's kinesisanalytics and kinesisanalyticsv2 models, with nothing,
# with only its required members and with each required member missing, through boto3 (its own
# validation off) and through gRPC: a missing member is AWS's ValidationException naming it,
# never a 500/INTERNAL. The requests name one SQL application of each API that exists, so
# "required only" reaches the service's own checks, not just the not-found answer.

V1 = "kinesisanalytics"
V2 = "kinesisanalyticsv2"
REQUIRED_V1_APP = "required-v1"
REQUIRED_V2_APP = "required-v2"
SERVICES = {
    V1: analytics_pb2.DESCRIPTOR.services_by_name["KinesisAnalyticsService"],
    V2: v2_pb2.DESCRIPTOR.services_by_name["KinesisAnalyticsV2Service"],
}


def _required_samples(application: str) -> dict[str, Any]:
    """Values for members whose model shape alone does not give a useful value."""
    return {
        "ApplicationName": application,
        "ResourceARN": f"arn:aws:kinesisanalytics:{REGION}:{ACCOUNT}:application/{application}",
        "ServiceExecutionRole": ROLE,
        "RoleARN": ROLE,
        "CurrentApplicationVersionId": 1,
        "ApplicationVersionId": 1,
        "RuntimeEnvironment": "SQL-1_0",
        "InputId": "1.1",
        "OutputId": "1.1",
        "ReferenceId": "1.1",
        "CloudWatchLoggingOptionId": "1.1",
        "SnapshotName": "snap",
        "OperationId": "op",
        "SnapshotOperationId": "op",
        "UrlType": "FLINK_DASHBOARD_URL",
        "LogStreamARN": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g:log-stream:s",
        "BucketARN": "arn:aws:s3:::bucket",
        "FileKey": "key",
        "TagKeys": ["missing"],
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def required_applications(node: Node) -> None:
    """One SQL application per API (v1's has no input; v2's is created with its role)."""
    v1 = analytics_client(node)
    v2 = analytics_client(node, service=V2)
    try:
        await call(v1.create_application, ApplicationName=REQUIRED_V1_APP)
        await call(
            v2.create_application,
            ApplicationName=REQUIRED_V2_APP,
            RuntimeEnvironment="SQL-1_0",
            ServiceExecutionRole=ROLE,
        )
    finally:
        v1.close()
        v2.close()


@pytest.mark.usefixtures("required_applications")
async def test_every_request_shape_through_boto3_never_answers_500(node: Node) -> None:
    problems: list[str] = []
    for model, application in ((V1, REQUIRED_V1_APP), (V2, REQUIRED_V2_APP)):
        client = analytics_client(node, parameter_validation=False, service=model)
        try:
            operations = service_model(model).operation_names
            samples = _required_samples(application)
            problems += await sweep(model, operations, samples, boto3_ask(client))
        finally:
            client.close()
    assert not problems, "\n".join(problems)


@pytest.mark.usefixtures("required_applications")
async def test_every_request_shape_through_grpc_never_answers_internal(node: Node) -> None:
    problems: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        for model, application in ((V1, REQUIRED_V1_APP), (V2, REQUIRED_V2_APP)):
            service = SERVICES[model]
            served = grpc_operations(service)
            assert served == set(service_model(model).operation_names), model
            ask = grpc_ask(channel, service)
            problems += await sweep(model, served, _required_samples(application), ask)
            answer = await malformed_request_answer(channel, service, "DescribeApplication")
            assert answer == (grpc.StatusCode.INVALID_ARGUMENT, "SerializationException"), model
    assert not problems, "\n".join(problems)
