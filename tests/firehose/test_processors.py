"""The built-in processors (Decompression, CloudWatchLogProcessing, RecordDeAggregation) and
S3 backup of an S3 destination's source records: units over `processing.expand`, and one
delivery through the node to S3 (moto's server)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.firehose import processing
from broker.node import Node
from tests.firehose.conftest import call, records_read, s3_destination, wait_read, wait_status
from tests.s3_server import S3Server


def _processing(*processors: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "ProcessingConfiguration": {
            "Enabled": True,
            "Processors": [
                {
                    "Type": kind,
                    "Parameters": [
                        {"ParameterName": name, "ParameterValue": value}
                        for name, value in parameters.items()
                    ],
                }
                for kind, parameters in processors
            ],
        }
    }


def _log_record(*messages: str, control: bool = False) -> bytes:
    document = {
        "messageType": "CONTROL_MESSAGE" if control else "DATA_MESSAGE",
        "owner": "000000000000",
        "logGroup": "/app",
        "logStream": "s1",
        "subscriptionFilters": ["f"],
        "logEvents": [
            {"id": str(i), "timestamp": 1_790_000_000_000, "message": message}
            for i, message in enumerate(messages)
        ],
    }
    return gzip.compress(json.dumps(document).encode())


def test_cloudwatch_logs_records_become_their_messages() -> None:
    configuration = _processing(
        ("Decompression", {"CompressionFormat": "GZIP"}),
        ("CloudWatchLogProcessing", {"DataMessageExtraction": "true"}),
    )
    assert processing.check(configuration) is None
    expanded = processing.expand(
        configuration,
        [_log_record("a", "b"), _log_record(control=True), b"not gzip", _log_record("c")],
    )
    assert expanded.records == [b"a", b"b", b"c"]
    assert expanded.sources == [0, 0, 3]
    assert [(index, code) for index, code, _ in expanded.failed] == [(2, "Decompression.Failed")]


def test_record_deaggregation_splits_json_objects_or_at_a_delimiter() -> None:
    by_json = _processing(("RecordDeAggregation", {"SubRecordType": "JSON"}))
    expanded = processing.expand(by_json, [b'{"a":1}{"b":2}\n {"c":[3]}', b"[1,"])
    assert expanded.records == [b'{"a":1}', b'{"b":2}', b'{"c":[3]}']
    assert [code for _, code, _ in expanded.failed] == ["RecordDeAggregation.InvalidJson"]
    delimiter = base64.b64encode(b"||").decode()
    by_delimiter = _processing(
        ("RecordDeAggregation", {"SubRecordType": "DELIMITED", "Delimiter": delimiter})
    )
    assert processing.expand(by_delimiter, [b"x||y||"]).records == [b"x", b"y"]


@pytest.mark.parametrize(
    ("processors", "message"),
    [
        ((("RecordDeAggregation", {"SubRecordType": "XML"}),), "SubRecordType"),
        ((("RecordDeAggregation", {"SubRecordType": "DELIMITED"}),), "Delimiter"),
        ((("Decompression", {"CompressionFormat": "ZIP"}),), "GZIP"),
        ((("CloudWatchLogProcessing", {"DataMessageExtraction": "true"}),), "Decompression"),
    ],
)
def test_built_in_processors_are_checked(
    processors: tuple[tuple[str, dict[str, str]], ...], message: str
) -> None:
    problem = processing.check(_processing(*processors))
    assert problem is not None and message in problem


@pytest.mark.integration
async def test_cloudwatch_logs_are_delivered_as_lines_and_their_source_backed_up(
    firehose: Any, fh_node: Node, s3_server: S3Server, clock: ManualClock
) -> None:
    s3_server.create_bucket("logs-out")
    s3_server.create_bucket("logs-source")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="cw-logs",
        ExtendedS3DestinationConfiguration=s3_destination(
            "logs-out",
            BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 60},
            S3BackupMode="Enabled",
            S3BackupConfiguration=s3_destination("logs-source", Prefix="raw/"),
            **_processing(
                ("Decompression", {"CompressionFormat": "GZIP"}),
                ("CloudWatchLogProcessing", {"DataMessageExtraction": "true"}),
                ("AppendDelimiterToRecord", {}),
            ),
        ),
    )
    described = await wait_status(firehose, "cw-logs", "ACTIVE")
    extended = described["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert extended["S3BackupMode"] == "Enabled"
    assert extended["S3BackupDescription"]["Prefix"] == "raw/"
    sources = [_log_record(f"line {i}a", f"line {i}b") for i in range(10)]
    read_before = records_read(fh_node)
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="cw-logs",
        Records=[{"Data": data} for data in sources],
    )
    await wait_read(fh_node, read_before + len(sources))  # the deliverer reads them
    clock.advance(ms=61_000)
    async with asyncio.timeout(30):
        while True:
            out = await asyncio.to_thread(s3_server.objects, "logs-out")
            lines = sorted(line for body in out.values() for line in body.splitlines())
            if len(lines) >= 20:
                break
            clock.advance(ms=1_000)
            await asyncio.sleep(0.1)
    assert lines == sorted(f"line {i}{x}".encode() for i in range(10) for x in "ab")
    backed_up = await asyncio.to_thread(s3_server.objects, "logs-source", "raw/")
    raw = b"".join(backed_up.values())
    assert sum(raw.count(source) for source in sources) == len(sources)
