"""Data transformation through a Lambda function, invoked with boto3's Lambda Invoke
(AWS_ENDPOINT_URL_LAMBDA) on a small HTTP server implementing the Invoke API, with AWS's
Firehose-to-Lambda event and result contract: Ok records (transformed) are delivered, Dropped
ones are not, ProcessingFailed ones go to the error output in S3."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from broker.clock import ManualClock
from tests.firehose.conftest import advance_until, call, s3_destination, wait_status
from tests.lambda_server import LambdaServer
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration

FUNCTION = "arn:aws:lambda:us-east-1:000000000000:function:upper"


def _transform(event: dict[str, Any]) -> dict[str, Any]:
    """The function: upper-cases records, drops those containing "drop", fails "bad"."""
    out = []
    for record in event["records"]:
        data = base64.b64decode(record["data"])
        if b"drop" in data:
            out.append({"recordId": record["recordId"], "result": "Dropped"})
        elif b"bad" in data:
            out.append({"recordId": record["recordId"], "result": "ProcessingFailed"})
        else:
            upper = base64.b64encode(data.upper()).decode()
            out.append({"recordId": record["recordId"], "result": "Ok", "data": upper})
    return {"records": out}


async def test_lambda_transformation_contract(
    firehose: Any, clock: ManualClock, s3_server: S3Server, lambda_server: LambdaServer
) -> None:
    lambda_server.register(FUNCTION, _transform)
    s3_server.client().create_bucket(Bucket="transformed")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="upper",
        ExtendedS3DestinationConfiguration=s3_destination(
            "transformed",
            Prefix="ok/",
            BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 60},
            ProcessingConfiguration={
                "Enabled": True,
                "Processors": [
                    {
                        "Type": "Lambda",
                        "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": FUNCTION}],
                    },
                    {"Type": "AppendDelimiterToRecord"},
                ],
            },
        ),
    )
    await wait_status(firehose, "upper", "ACTIVE")
    records = [b"keep-1", b"drop-me", b"bad-one", b"keep-2"]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="upper",
        Records=[{"Data": data} for data in records],
    )
    delivered: list[bytes] = []
    failed: list[Any] = []

    async def transformed_and_failed() -> bool:
        nonlocal delivered, failed
        objects = await asyncio.to_thread(s3_server.objects, "transformed")
        failed_keys = {key for key in objects if key.startswith("ok/processing-failed/")}
        delivered = [
            line
            for key, body in objects.items()
            if key not in failed_keys
            for line in body.splitlines()
        ]
        failed = [json.loads(line) for key in failed_keys for line in objects[key].splitlines()]
        return len(delivered) >= 2 and bool(failed)

    await advance_until(clock, transformed_and_failed, interval_ms=60_000)
    assert sorted(delivered) == [b"KEEP-1", b"KEEP-2"]
    assert [base64.b64decode(item["rawData"]) for item in failed] == [b"bad-one"]
    assert failed[0]["errorCode"] == "Lambda.ProcessingFailed"
    assert failed[0]["lambdaArn"] == FUNCTION
    event = lambda_server.events(FUNCTION)[0]
    assert event["deliveryStreamArn"].endswith(":deliverystream/upper")
    assert {"recordId", "approximateArrivalTimestamp", "data"} <= set(event["records"][0])
