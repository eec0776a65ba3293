"""Record format conversion: JSON records delivered as Parquet and ORC files with the columns
of a Glue table (moto's server serves both the Glue Data Catalog and S3 on loopback); a record
that does not convert goes to the error output."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import boto3
import pyarrow.orc as pa_orc
import pyarrow.parquet as pa_parquet
import pytest

from broker.clock import ManualClock
from tests.firehose.conftest import advance_until, call, s3_destination, wait_status
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = pytest.mark.integration


def _glue_table(s3_server: S3Server, database: str) -> None:
    glue = boto3.client(
        "glue",
        endpoint_url=s3_server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    glue.create_database(DatabaseInput={"Name": database})
    glue.create_table(
        DatabaseName=database,
        TableInput={
            "Name": "orders",
            "StorageDescriptor": {
                "Columns": [
                    {"Name": "id", "Type": "bigint"},
                    {"Name": "customer", "Type": "string"},
                    {"Name": "total", "Type": "double"},
                    {"Name": "tags", "Type": "array<string>"},
                ]
            },
        },
    )


@pytest.mark.parametrize("serializer", ["ParquetSerDe", "OrcSerDe"])
async def test_json_records_become_columnar_files(
    firehose: Any, clock: ManualClock, s3_server: S3Server, serializer: str
) -> None:
    database = f"shop_{serializer.lower()}"
    bucket = f"columnar-{serializer.lower()}"
    name = f"columnar-{serializer.lower()}"
    _glue_table(s3_server, database)
    s3_server.client().create_bucket(Bucket=bucket)
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(
            bucket,
            Prefix="data/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
            DataFormatConversionConfiguration={
                "Enabled": True,
                "SchemaConfiguration": {
                    "DatabaseName": database,
                    "TableName": "orders",
                    "RoleARN": "arn:aws:iam::000000000000:role/firehose",
                },
                "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
                "OutputFormatConfiguration": {"Serializer": {serializer: {}}},
            },
        ),
    )
    await wait_status(firehose, name, "ACTIVE")
    rows: list[dict[str, Any]] = [
        {"id": i, "Customer": f"c{i}", "total": i * 1.5, "tags": ["a", str(i)]} for i in range(20)
    ]
    records = [json.dumps(row).encode() for row in rows] + [b"not json"]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName=name,
        Records=[{"Data": data} for data in records],
    )
    data: dict[str, bytes] = {}
    errors: dict[str, bytes] = {}
    tables: list[Any] = []

    async def converted() -> bool:
        nonlocal data, errors, tables
        objects = await asyncio.to_thread(s3_server.objects, bucket)
        data = {k: v for k, v in objects.items() if k.startswith("data/")}
        errors = {k: v for k, v in objects.items() if k.startswith("errors/")}
        tables = [
            (pa_parquet if serializer == "ParquetSerDe" else pa_orc).read_table(io.BytesIO(body))
            for body in data.values()
        ]
        return sum(table.num_rows for table in tables) >= 20 and bool(errors)

    await advance_until(clock, converted, interval_ms=60_000)
    extension = ".parquet" if serializer == "ParquetSerDe" else ".orc"
    assert all(key.endswith(extension) for key in data)
    got = sorted((row for table in tables for row in table.to_pylist()), key=lambda r: r["id"])
    assert got == [
        {"id": i, "customer": f"c{i}", "total": i * 1.5, "tags": ["a", str(i)]} for i in range(20)
    ]
    (error_key,) = errors
    assert error_key.startswith("errors/format-conversion-failed/")
    failed = json.loads(errors[error_key])
    assert failed["errorCode"] == "DataFormatConversion.MalformedData"
