"""Data transformation through a Lambda function, invoked with boto3's Lambda Invoke
(AWS_ENDPOINT_URL_LAMBDA) on a small HTTP server implementing the Invoke API, with AWS's
Firehose-to-Lambda event and result contract: Ok records (transformed) are delivered, Dropped
ones are not, ProcessingFailed ones go to the error output in S3."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.clock import ManualClock
from tests.conftest import node_config, running_node
from tests.firehose.conftest import call, firehose_client, s3_destination, wait_status
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration

FUNCTION = "arn:aws:lambda:us-east-1:000000000000:function:upper"


class _Invocations:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.functions: list[str] = []


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


@pytest.fixture
def lambda_server() -> Iterator[tuple[str, _Invocations]]:
    invocations = _Invocations()

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            # POST /2015-03-31/functions/{FunctionName}/invocations
            parts = self.path.split("/")
            invocations.functions.append(urllib.parse.unquote(parts[3]))
            event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            invocations.events.append(event)
            answer = json.dumps(_transform(event)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Invoke)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", invocations
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_lambda_transformation_contract(
    tmp_path: Path,
    clock: ManualClock,
    s3_server: S3Server,
    lambda_server: tuple[str, _Invocations],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, invocations = lambda_server
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
    s3_server.client().create_bucket(Bucket="transformed")
    config = node_config(tmp_path / "node", firehose_reconcile_interval_ms=50)
    async with running_node(config, clock) as node:
        client = firehose_client(f"http://127.0.0.1:{node.http_port}")
        await call(
            client.create_delivery_stream,
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
                            "Parameters": [
                                {"ParameterName": "LambdaArn", "ParameterValue": FUNCTION}
                            ],
                        },
                        {"Type": "AppendDelimiterToRecord"},
                    ],
                },
            ),
        )
        await wait_status(client, "upper", "ACTIVE")
        records = [b"keep-1", b"drop-me", b"bad-one", b"keep-2"]
        await call(
            client.put_record_batch,
            DeliveryStreamName="upper",
            Records=[{"Data": data} for data in records],
        )
        await asyncio.sleep(0.5)  # the deliverer reads them; the interval has not passed
        clock.advance(ms=61_000)
        async with asyncio.timeout(20):
            while True:
                objects = await asyncio.to_thread(s3_server.objects, "transformed")
                failed_keys = {key for key in objects if key.startswith("ok/processing-failed/")}
                delivered = [
                    line
                    for key, body in objects.items()
                    if key not in failed_keys
                    for line in body.splitlines()
                ]
                failed = [
                    json.loads(line) for key in failed_keys for line in objects[key].splitlines()
                ]
                if len(delivered) >= 2 and failed:
                    break
                await asyncio.sleep(0.1)
        assert sorted(delivered) == [b"KEEP-1", b"KEEP-2"]
        assert [base64.b64decode(item["rawData"]) for item in failed] == [b"bad-one"]
        assert failed[0]["errorCode"] == "Lambda.ProcessingFailed"
        assert failed[0]["lambdaArn"] == FUNCTION
        assert set(invocations.functions) == {FUNCTION}
        event = invocations.events[0]
        assert event["deliveryStreamArn"].endswith(":deliverystream/upper")
        assert {"recordId", "approximateArrivalTimestamp", "data"} <= set(event["records"][0])
        client.close()
