"""Lambda preprocessing and outputs with KDA's contracts, through boto3's Lambda Invoke
(AWS_ENDPOINT_URL_LAMBDA) on the tests' Lambda Invoke API server (`tests/lambda_server.py`).

Output: each event carries the application's ARN and records (id, base64 data, retryHint);
records answered DeliveryFailed are sent again with a higher retryHint until answered Ok.
Preprocessing: each event carries the input stream's ARN and records with their Kinesis
metadata; Ok records are parsed from the function's data, Dropped ones vanish, and
ProcessingFailed ones go to error_stream."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from broker.clock import ManualClock
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP, analytics_client
from tests.analytics.test_api import ROLE, SCHEMA, STREAM_ARN
from tests.analytics.test_running import read_all, ticker_record
from tests.compat.conftest import REGION, boto_client, call
from tests.conftest import node_config, running_node
from tests.lambda_server import LambdaServer, lambda_server  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.integration, MODULE_LOOP]

FUNCTION = f"arn:aws:lambda:{REGION}:000000000000:function:sink"
PREPROCESSOR = f"arn:aws:lambda:{REGION}:000000000000:function:csv-to-json"


def _preprocess(event: dict[str, Any]) -> dict[str, Any]:
    """The preprocessor: "TICKER,PRICE" lines to the input schema's JSON; drops "drop" lines,
    fails "bad" ones."""
    results = []
    for record in event["records"]:
        text = base64.b64decode(record["data"]).decode()
        if text == "drop":
            results.append({"recordId": record["recordId"], "result": "Dropped"})
        elif text == "bad":
            results.append({"recordId": record["recordId"], "result": "ProcessingFailed"})
        else:
            ticker, price = text.split(",")
            data = json.dumps({"TICKER_SYMBOL": ticker, "PRICE": float(price)}).encode()
            results.append(
                {
                    "recordId": record["recordId"],
                    "result": "Ok",
                    "data": base64.b64encode(data).decode(),
                }
            )
    return {"records": results}


def _sink() -> Any:
    """The output function: the first delivery of a QXZ row fails (the application must send
    it again); every other record is Ok."""
    failed_once: set[bytes] = set()

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        results = []
        for record in event["records"]:
            data = base64.b64decode(record["data"])
            fail = b"QXZ" in data and data not in failed_once
            failed_once.add(data)
            results.append(
                {"recordId": record["recordId"], "result": "DeliveryFailed" if fail else "Ok"}
            )
        return {"records": results}

    return answer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lambda_node(
    tmp_path_factory: pytest.TempPathFactory,
    clock: ManualClock,
    lambda_server: LambdaServer,  # noqa: F811
) -> AsyncIterator[Node]:
    lambda_server.register(FUNCTION, _sink())
    lambda_server.register(PREPROCESSOR, _preprocess)
    with pytest.MonkeyPatch.context() as environment:
        for name, value in lambda_server.environment().items():
            environment.setenv(name, value)
        environment.setenv("AWS_ACCESS_KEY_ID", "x")
        environment.setenv("AWS_SECRET_ACCESS_KEY", "y")
        config = node_config(tmp_path_factory.mktemp("node"))
        async with running_node(config, clock) as node:
            yield node


async def test_rows_to_a_lambda_function(
    lambda_node: Node,
    lambda_server: LambdaServer,  # noqa: F811
) -> None:
    analytics = analytics_client(lambda_node)
    kinesis = boto_client(f"http://127.0.0.1:{lambda_node.http_port}")
    await call(kinesis.create_stream, StreamName="ticks", ShardCount=1)
    code = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001";
"""
    await call(
        analytics.create_application,
        ApplicationName="to-lambda",
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
                "LambdaOutput": {"ResourceARN": FUNCTION, "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    await call(
        kinesis.put_records,
        StreamName="ticks",
        Records=[
            ticker_record(("ABC", "TECHNOLOGY", 1.0, 10.0)),
            ticker_record(("QXZ", "HEALTHCARE", 2.0, 30.0)),
        ],
    )
    await call(
        analytics.start_application,
        ApplicationName="to-lambda",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    async with asyncio.timeout(30):
        while True:  # bounded by the timeout
            if len(lambda_server.events(FUNCTION)) >= 2:
                break
            await asyncio.sleep(0.05)
    first, retry = lambda_server.events(FUNCTION)[:2]
    app_arn = f"arn:aws:kinesisanalytics:{REGION}:000000000000:application/to-lambda"
    assert first["applicationArn"] == app_arn
    rows = [json.loads(base64.b64decode(r["data"])) for r in first["records"]]
    assert rows == [{"TICKER": "ABC", "PRICE": 10.0}, {"TICKER": "QXZ", "PRICE": 30.0}]
    assert [r["lambdaDeliveryRecordMetadata"]["retryHint"] for r in first["records"]] == [0, 0]
    (again,) = retry["records"]  # only the failed record, with its retry hint raised
    assert json.loads(base64.b64decode(again["data"])) == {"TICKER": "QXZ", "PRICE": 30.0}
    assert again["lambdaDeliveryRecordMetadata"]["retryHint"] == 1
    assert lambda_node.applications is not None
    async with asyncio.timeout(10):
        while True:
            (statistics,) = lambda_node.applications.statistics().values()
            if statistics.records_out == 2:
                break
            await asyncio.sleep(0.05)
    await call(analytics.stop_application, ApplicationName="to-lambda")
    analytics.close()
    kinesis.close()


async def test_a_lambda_preprocessor(
    lambda_node: Node,
    lambda_server: LambdaServer,  # noqa: F811
) -> None:
    analytics = analytics_client(lambda_node)
    kinesis = boto_client(f"http://127.0.0.1:{lambda_node.http_port}")
    for stream in ("lines", "out", "errors"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    code = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001";
"""
    outputs = [
        ("DESTINATION_SQL_STREAM", "out"),
        ("error_stream", "errors"),
    ]
    await call(
        analytics.create_application,
        ApplicationName="preprocessed",
        ApplicationCode=code,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": STREAM_ARN.format("lines"), "RoleARN": ROLE},
                "InputProcessingConfiguration": {
                    "InputLambdaProcessor": {"ResourceARN": PREPROCESSOR, "RoleARN": ROLE}
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": name,
                "KinesisStreamsOutput": {"ResourceARN": STREAM_ARN.format(stream), "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
            for name, stream in outputs
        ],
    )
    await call(
        kinesis.put_records,
        StreamName="lines",
        Records=[
            {"Data": data, "PartitionKey": "k"}
            for data in (b"ABC,10", b"drop", b"bad", b"XYZ,20.5")
        ],
    )
    await call(
        analytics.start_application,
        ApplicationName="preprocessed",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    rows = [json.loads(data) for data in await read_all(kinesis, "out", 2)]
    assert rows == [{"TICKER": "ABC", "PRICE": 10.0}, {"TICKER": "XYZ", "PRICE": 20.5}]
    (error,) = [json.loads(data) for data in await read_all(kinesis, "errors", 1)]
    assert error["DATA_ROW"] == "bad" and "ProcessingFailed" in error["MESSAGE"]
    (event,) = lambda_server.events(PREPROCESSOR)
    assert event["streamArn"] == STREAM_ARN.format("lines")
    metadata = event["records"][0]["kinesisStreamRecordMetadata"]
    assert metadata["partitionKey"] == "k" and metadata["shardId"] == "shardId-000000000000"
    await call(analytics.stop_application, ApplicationName="preprocessed")
    analytics.close()
    kinesis.close()
