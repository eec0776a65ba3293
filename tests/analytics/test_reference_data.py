"""Stream-to-reference-table joins with reference data from S3, and outputs to Firehose
delivery streams delivering to S3 (moto's server on loopback).

Goal: AWS's reference-data example runs unchanged: a CSV object in S3 named by
AddApplicationReferenceDataSource becomes the in-application table "CompanyName", the pump's
LEFT JOIN adds each ticker's company to the output rows, and an UpdateApplication of the
running application reloads the table (KDA's rule), so rows read after it carry the new data.
A JOIN with a stream (stream-to-stream) or with a table the application does not have is
refused at UpdateApplication, naming the line. An output naming a delivery stream receives the
rows, which Firehose delivers to its bucket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from broker.analytics.runner import _RunningApp
from broker.clock import ManualClock
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP, analytics_client
from tests.analytics.test_api import ROLE, SCHEMA, STREAM_ARN, error_of
from tests.analytics.test_running import read_all, ticker_record
from tests.compat.conftest import REGION, boto_client, call
from tests.conftest import node_config, running_node
from tests.firehose.conftest import firehose_client, s3_destination, wait_status
from tests.s3_server import S3Server, s3_server  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.integration, MODULE_LOOP]

CODE = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker_symbol VARCHAR(4), "Company" VARCHAR(20), sector VARCHAR(12), price DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM ticker_symbol, "c"."Company", sector, price
    FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" AS "c"
    ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker";
"""

DELIVERY_ARN = f"arn:aws:firehose:{REGION}:000000000000:deliverystream/{{}}"

REFERENCE_SCHEMA = {
    "RecordFormat": {
        "RecordFormatType": "CSV",
        "MappingParameters": {
            "CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}
        },
    },
    "RecordEncoding": "UTF-8",
    "RecordColumns": [
        {"Name": "Ticker", "SqlType": "VARCHAR(4)"},
        {"Name": "Company", "SqlType": "VARCHAR(20)"},
    ],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def s3_node(
    tmp_path_factory: pytest.TempPathFactory,
    clock: ManualClock,
    s3_server: S3Server,  # noqa: F811
) -> AsyncIterator[Node]:
    with pytest.MonkeyPatch.context() as environment:
        for name, value in s3_server.environment().items():
            environment.setenv(name, value)
        config = node_config(
            tmp_path_factory.mktemp("node"),
            firehose_reconcile_interval_ms=50,
            firehose_write_bytes_per_second=0,
            firehose_write_records_per_second=0,
        )
        async with running_node(config, clock) as node:
            yield node


async def wait_version(node: Node, version_id: int, *, deadline_s: float = 30) -> None:
    """Until the node runs the application's `version_id` (its reference data reloaded)."""
    assert node.applications is not None
    async with asyncio.timeout(deadline_s):
        while True:
            running = list(node.applications.statistics().values())
            if running and running[0].version_id >= version_id:
                return
            await asyncio.sleep(0.05)


async def _records_nothing(self: _RunningApp) -> None:
    """`_RunningApp._record_progress` while no quorum records the marks."""


async def test_reference_join_from_s3_reloaded_on_update(
    s3_node: Node,
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="reference")
    s3.put_object(Bucket="reference", Key="tickers.csv", Body=b"ABC,Alpha Corp\nQXZ,Quux Inc\n")
    analytics = analytics_client(s3_node)
    kinesis = boto_client(f"http://127.0.0.1:{s3_node.http_port}")
    for stream in ("ticker", "enriched"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="enrich",
        ApplicationCode="",
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("ticker"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("enriched"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    with pytest.raises(ClientError) as raised:  # no reference data source yet
        await call(
            analytics.update_application,
            ApplicationName="enrich",
            CurrentApplicationVersionId=1,
            ApplicationUpdate={"ApplicationCodeUpdate": CODE},
        )
    assert error_of(raised)[0] == "CodeValidationException"
    await call(
        analytics.add_application_reference_data_source,
        ApplicationName="enrich",
        CurrentApplicationVersionId=1,
        ReferenceDataSource={
            "TableName": "CompanyName",
            "S3ReferenceDataSource": {
                "BucketARN": "arn:aws:s3:::reference",
                "FileKey": "tickers.csv",
                "ReferenceRoleARN": ROLE,
            },
            "ReferenceSchema": REFERENCE_SCHEMA,
        },
    )
    for code, construct in (
        (CODE.replace('"CompanyName"', '"Other"'), "not a reference data source's table"),
        (CODE.replace('"CompanyName"', '"DESTINATION_SQL_STREAM"'), "without a window"),
    ):
        with pytest.raises(ClientError) as raised:
            await call(
                analytics.update_application,
                ApplicationName="enrich",
                CurrentApplicationVersionId=2,
                ApplicationUpdate={"ApplicationCodeUpdate": code},
            )
        assert error_of(raised)[0] == "CodeValidationException"
        message = raised.value.response["Error"]["Message"]
        assert construct in message and "Line" in message, message
    await call(
        analytics.update_application,
        ApplicationName="enrich",
        CurrentApplicationVersionId=2,
        ApplicationUpdate={"ApplicationCodeUpdate": CODE},
    )
    await call(
        kinesis.put_records,
        StreamName="ticker",
        Records=[
            ticker_record(("ABC", "TECHNOLOGY", 1.0, 10.0)),
            ticker_record(("XYZ", "ENERGY", 2.0, 20.0)),
        ],
    )
    # The update below restarts the application in this node before the quorum has its marks
    # (as when UpdateApplication lands between an output write and the next tick's record,
    # which once wrote the ABC row twice): the restart resumes from what it wrote itself.
    monkeypatch.setattr(_RunningApp, "_record_progress", _records_nothing)
    await call(
        analytics.start_application,
        ApplicationName="enrich",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    rows = [json.loads(data) for data in await read_all(kinesis, "enriched", 2)]
    assert sorted(rows, key=lambda row: row["TICKER_SYMBOL"]) == [
        {"TICKER_SYMBOL": "ABC", "Company": "Alpha Corp", "SECTOR": "TECHNOLOGY", "PRICE": 10.0},
        {"TICKER_SYMBOL": "XYZ", "Company": None, "SECTOR": "ENERGY", "PRICE": 20.0},
    ]

    # A new object, named by an UpdateApplication of the running application: reloaded.
    s3.put_object(Bucket="reference", Key="tickers-2.csv", Body=b"XYZ,Xylo Energy\n")
    await call(
        analytics.update_application,
        ApplicationName="enrich",
        CurrentApplicationVersionId=3,
        ApplicationUpdate={
            "ReferenceDataSourceUpdates": [
                {
                    "ReferenceId": "3.1",
                    "S3ReferenceDataSourceUpdate": {"FileKeyUpdate": "tickers-2.csv"},
                }
            ]
        },
    )
    await wait_version(s3_node, 4)
    await call(
        kinesis.put_record,
        StreamName="ticker",
        Data=ticker_record(("XYZ", "ENERGY", 3.0, 21.0))["Data"],
        PartitionKey="XYZ",
    )
    rows = [json.loads(data) for data in await read_all(kinesis, "enriched", 3)]
    assert rows[2] == {
        "TICKER_SYMBOL": "XYZ",
        "Company": "Xylo Energy",
        "SECTOR": "ENERGY",
        "PRICE": 21.0,
    }
    assert len(rows) == 3  # the restart on the update wrote nothing again
    await call(analytics.stop_application, ApplicationName="enrich")
    analytics.close()
    kinesis.close()


async def test_output_to_a_delivery_stream(
    s3_node: Node,
    s3_server: S3Server,  # noqa: F811
) -> None:
    s3_server.create_bucket("delivered")
    analytics = analytics_client(s3_node)
    kinesis = boto_client(f"http://127.0.0.1:{s3_node.http_port}")
    firehose = firehose_client(f"http://127.0.0.1:{s3_node.http_port}")
    await call(kinesis.create_stream, StreamName="ticks", ShardCount=1)
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-s3",
        ExtendedS3DestinationConfiguration=s3_destination(
            "delivered", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}
        ),
    )
    await wait_status(firehose, "to-s3", "ACTIVE")
    code = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE > 15;
"""
    await call(
        analytics.create_application,
        ApplicationName="to-firehose",
        ApplicationCode=code,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": STREAM_ARN.format("ticks"), "RoleARN": ROLE},
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisFirehoseOutput": {
                    "ResourceARN": f"arn:aws:firehose:{REGION}:000000000000:deliverystream/to-s3",
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "CSV"},
            }
        ],
    )
    await call(
        kinesis.put_records,
        StreamName="ticks",
        Records=[
            ticker_record(("ABC", "TECHNOLOGY", 1.0, 10.0)),
            ticker_record(("XYZ", "ENERGY", 2.0, 20.0)),
            ticker_record(("QXZ", "HEALTHCARE", 2.0, 30.0)),
        ],
    )
    await call(
        analytics.start_application,
        ApplicationName="to-firehose",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    delivered = b""
    async with asyncio.timeout(30):
        while delivered.count(b"\n") < 2:
            delivered = b"".join(s3_server.objects("delivered").values())
            await asyncio.sleep(0.1)
    assert sorted(delivered.decode().splitlines()) == ["QXZ,30.0", "XYZ,20.0"]
    await call(analytics.stop_application, ApplicationName="to-firehose")
    for client in (analytics, kinesis, firehose):
        client.close()


async def test_a_delivery_stream_as_input(
    s3_node: Node,
    s3_server: S3Server,  # noqa: F811
) -> None:
    """An application reading a DirectPut delivery stream (KinesisFirehoseInput) sees what is
    put into it, while the delivery stream still delivers every record to S3."""
    s3_server.create_bucket("raw")
    analytics = analytics_client(s3_node)
    kinesis = boto_client(f"http://127.0.0.1:{s3_node.http_port}")
    firehose = firehose_client(f"http://127.0.0.1:{s3_node.http_port}")
    await call(kinesis.create_stream, StreamName="pricey", ShardCount=1)
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="ticks-in",
        ExtendedS3DestinationConfiguration=s3_destination(
            "raw", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}
        ),
    )
    await wait_status(firehose, "ticks-in", "ACTIVE")
    code = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE > 15;
"""
    await call(
        analytics.create_application,
        ApplicationName="from-firehose",
        ApplicationCode=code,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisFirehoseInput": {
                    "ResourceARN": DELIVERY_ARN.format("ticks-in"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("pricey"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    records = [
        ticker_record(("ABC", "TECHNOLOGY", 1.0, 10.0)),
        ticker_record(("XYZ", "ENERGY", 2.0, 20.0)),
        ticker_record(("QXZ", "HEALTHCARE", 2.0, 30.0)),
    ]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="ticks-in",
        Records=[{"Data": record["Data"] + b"\n"} for record in records],
    )
    await call(
        analytics.start_application,
        ApplicationName="from-firehose",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    rows = [json.loads(data) for data in await read_all(kinesis, "pricey", 2)]
    # The delivery stream spreads its records over its internal stream's shards: no order.
    assert sorted(rows, key=lambda row: row["PRICE"]) == [
        {"TICKER": "XYZ", "PRICE": 20.0},
        {"TICKER": "QXZ", "PRICE": 30.0},
    ]
    delivered = b""
    async with asyncio.timeout(30):  # the delivery stream still delivers all three
        while delivered.count(b"\n") < 3:
            delivered = b"".join(s3_server.objects("raw").values())
            await asyncio.sleep(0.1)
    async with asyncio.timeout(10):  # its marks are recorded (fenced by its placement lease)
        while True:
            assert s3_node.service is not None
            image = s3_node.service.ctx.image()
            (app,) = [a for a in image.analytics.applications.values() if a.name == "from-firehose"]
            if app.continuous_through:  # the shards that received the records
                break
            await asyncio.sleep(0.05)
    await call(analytics.stop_application, ApplicationName="from-firehose")
    for client in (analytics, kinesis, firehose):
        client.close()


async def test_discover_input_schema_from_an_s3_object(
    s3_node: Node,
    s3_server: S3Server,  # noqa: F811
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="samples")
    s3.put_object(Bucket="samples", Key="tickers.csv", Body=b"ABC,Alpha Corp,10.5\nQXZ,Quux,7\n")
    analytics = analytics_client(s3_node)
    analytics_v2 = analytics_client(s3_node, service="kinesisanalyticsv2")
    found = await call(
        analytics.discover_input_schema,
        S3Configuration={
            "RoleARN": ROLE,
            "BucketARN": "arn:aws:s3:::samples",
            "FileKey": "tickers.csv",
        },
    )
    schema = found["InputSchema"]
    assert schema["RecordFormat"]["RecordFormatType"] == "CSV"
    assert [c["SqlType"] for c in schema["RecordColumns"]] == [
        "VARCHAR(4)",
        "VARCHAR(16)",
        "REAL",
    ]
    assert found["ParsedInputRecords"] == [["ABC", "Alpha Corp", "10.5"], ["QXZ", "Quux", "7"]]
    same = await call(
        analytics_v2.discover_input_schema,
        ServiceExecutionRole=ROLE,
        S3Configuration={"BucketARN": "arn:aws:s3:::samples", "FileKey": "tickers.csv"},
    )
    assert same["InputSchema"] == schema
    with pytest.raises(ClientError) as raised:
        await call(
            analytics_v2.discover_input_schema,
            ServiceExecutionRole=ROLE,
            S3Configuration={"BucketARN": "arn:aws:s3:::samples", "FileKey": "absent.csv"},
        )
    assert error_of(raised) == ("UnableToDetectSchemaException", 400)
    analytics.close()
    analytics_v2.close()


async def test_enhanced_snapshots_imported_and_exported_through_s3(
    s3_node: Node,
    s3_server: S3Server,  # noqa: F811
    clock: ManualClock,
) -> None:
    """kinesisanalyticsv2's enhanced snapshots: ImportSnapshot records a Flink savepoint from an
    S3 prefix (CREATING, then READY; a prefix without one FAILED), ExportSnapshot copies it to
    another prefix, DeleteSnapshot removes it; each operation listed and described; names are
    unique; CreateSnapshot refused as AWS refuses an application that is not running."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="savepoints")
    savepoint = {"sp/1/_metadata": b"flink-metadata", "sp/1/state-0": b"x" * 100}
    for key, body in savepoint.items():
        s3.put_object(Bucket="savepoints", Key=key, Body=body)
    analytics_v2 = analytics_client(s3_node, service="kinesisanalyticsv2")
    source = {
        "SourceType": "S3",
        "ImportRoleArn": ROLE,
        "SourceS3PrefixLocation": {"BucketARN": "arn:aws:s3:::savepoints", "KeyPrefix": "sp/1"},
    }
    imported = await call(
        analytics_v2.import_snapshot,
        SnapshotName="sp-1",
        ImportSourceConfiguration=source,
        SnapshotDescription="from a savepoint",
        Tags=[{"Key": "team", "Value": "a"}],
    )
    # The test node's transitions take no time (the CREATING and IN_PROGRESS that a longer one
    # shows are test_applications.py's).
    assert imported["SnapshotStatus"] == "READY"
    assert imported["SnapshotOperationStatus"] == "SUCCESSFUL"
    with pytest.raises(ClientError) as raised:  # names are unique
        await call(
            analytics_v2.import_snapshot, SnapshotName="sp-1", ImportSourceConfiguration=source
        )
    assert error_of(raised) == ("ResourceInUseException", 400)
    failed = await call(
        analytics_v2.import_snapshot,
        SnapshotName="sp-empty",
        ImportSourceConfiguration={
            **source,
            "SourceS3PrefixLocation": {"BucketARN": "arn:aws:s3:::savepoints", "KeyPrefix": "no/"},
        },
    )
    clock.advance(ms=2_000)  # past the transition

    details = (await call(analytics_v2.describe_snapshot, SnapshotName="sp-1"))[
        "SnapshotInfoDetails"
    ]
    assert details["SnapshotStatus"] == "READY"
    assert details["SnapshotSizeInBytes"] == sum(len(body) for body in savepoint.values())
    assert details["SnapshotInitiatorOperation"] == "ImportSnapshot"
    assert details["SnapshotSourceDescription"]["S3PrefixLocation"]["KeyPrefix"] == "sp/1"
    assert details["SnapshotDescription"] == "from a savepoint"
    assert (await call(analytics_v2.describe_snapshot, SnapshotName="sp-empty"))[
        "SnapshotInfoDetails"
    ]["SnapshotStatus"] == "FAILED"
    operation = (
        await call(
            analytics_v2.describe_snapshot_operation,
            SnapshotName="sp-empty",
            SnapshotOperationId=failed["SnapshotOperationId"],
        )
    )["SnapshotOperationInfoDetails"]
    assert operation["SnapshotOperationStatus"] == "FAILED"
    assert "_metadata" in operation["SnapshotOperationFailureDetails"]["ErrorInfo"]["ErrorString"]
    assert (await call(analytics_v2.list_tags_for_resource, ResourceARN=details["SnapshotArn"]))[
        "Tags"
    ] == [{"Key": "team", "Value": "a"}]

    listed = (await call(analytics_v2.list_snapshots))["SnapshotInfoList"]
    assert [item["SnapshotName"] for item in listed] == ["sp-1", "sp-empty"]
    ready = (await call(analytics_v2.list_snapshots, SnapshotStatus="READY"))["SnapshotInfoList"]
    assert [item["SnapshotName"] for item in ready] == ["sp-1"]
    with pytest.raises(ClientError) as raised:  # one filter at a time
        await call(analytics_v2.list_snapshots, SnapshotStatus="READY", SnapshotInitiator="USER")
    assert error_of(raised) == ("InvalidArgumentException", 400)

    exported = await call(
        analytics_v2.export_snapshot,
        SnapshotName="sp-1",
        ExportDestinationConfiguration={
            "DestinationType": "S3",
            "ExportRoleArn": ROLE,
            "DestinationS3PrefixLocation": {
                "BucketARN": "arn:aws:s3:::savepoints",
                "KeyPrefix": "exported/",
            },
        },
    )
    assert exported["SnapshotOperationStatus"] == "SUCCESSFUL"
    assert s3_server.objects("savepoints", "exported/") == {
        "exported/_metadata": b"flink-metadata",
        "exported/state-0": b"x" * 100,
    }
    clock.advance(ms=2_000)
    operations = (await call(analytics_v2.list_snapshot_operations, SnapshotName="sp-1"))[
        "SnapshotOperationInfoList"
    ]
    assert [
        (item["SnapshotOperation"], item["SnapshotOperationStatus"]) for item in operations
    ] == [
        ("ExportSnapshot", "SUCCESSFUL"),
        ("ImportSnapshot", "SUCCESSFUL"),
    ]
    assert operations[0]["SnapshotOperationId"] == exported["SnapshotOperationId"]

    # CreateSnapshot needs a running Flink application; a SQL one has no snapshots at all.
    await call(
        analytics_v2.create_application,
        ApplicationName="snap-flink",
        RuntimeEnvironment="FLINK-1_20",
        ServiceExecutionRole=ROLE,
    )
    with pytest.raises(ClientError) as raised:
        await call(analytics_v2.create_snapshot, ApplicationName="snap-flink", SnapshotName="s")
    assert error_of(raised) == ("ResourceInUseException", 400)

    deleted = await call(
        analytics_v2.delete_snapshot,
        SnapshotName="sp-1",
        SnapshotCreationTimestamp=details["SnapshotCreationTimestamp"],
    )
    assert deleted["SnapshotStatus"] == "DELETING"
    clock.advance(ms=2_000)
    with pytest.raises(ClientError) as raised:
        await call(analytics_v2.describe_snapshot, SnapshotName="sp-1")
    assert error_of(raised) == ("ResourceNotFoundException", 400)
    assert [
        item["SnapshotName"]
        for item in (await call(analytics_v2.list_snapshots))["SnapshotInfoList"]
    ] == ["sp-empty"]
    analytics_v2.close()
