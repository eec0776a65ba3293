"""Iceberg destinations: JSON records appended to an Iceberg table through pyiceberg's SQL
catalog (sqlite here) over S3 (moto's server): the table created from the records, records
that do not fit to the S3 error output, AWS's Describe shape, and the checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from pyiceberg.catalog import load_catalog

from broker.clock import ManualClock
from broker.node import Node
from tests.firehose.conftest import call, s3_destination, wait_status
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


def _iceberg(**extra: Any) -> dict[str, Any]:
    return {
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "CatalogConfiguration": {
            "CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog",
            "WarehouseLocation": "s3://iceberg-lake/warehouse",
        },
        "DestinationTableConfigurationList": [
            {"DestinationDatabaseName": "sales", "DestinationTableName": "orders"}
        ],
        "TableCreationConfiguration": {"Enabled": True},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
        "S3Configuration": s3_destination("iceberg-errors"),
        **extra,
    }


async def test_json_records_are_appended_to_an_iceberg_table(
    firehose: Any,
    fh_node: Node,
    s3_server: S3Server,
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog_uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    monkeypatch.setenv("PYICEBERG_CATALOG__SHOAL__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__SHOAL__URI", catalog_uri)
    s3_server.create_bucket("iceberg-lake")
    s3_server.create_bucket("iceberg-errors")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-lake",
        IcebergDestinationConfiguration=_iceberg(),
    )
    description = await wait_status(firehose, "to-lake", "ACTIVE")
    iceberg = description["Destinations"][0]["IcebergDestinationDescription"]
    assert iceberg["CatalogConfiguration"]["WarehouseLocation"] == "s3://iceberg-lake/warehouse"
    assert iceberg["S3BackupMode"] == "FailedDataOnly"
    assert iceberg["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::iceberg-errors"
    records = [json.dumps({"id": i, "item": f"i{i}"}).encode() for i in range(30)]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="to-lake",
        Records=[{"Data": data} for data in [*records, b"not json"]],
    )
    catalog = load_catalog(
        "shoal",
        type="sql",
        uri=catalog_uri,
        **{
            "s3.endpoint": s3_server.endpoint_url,
            "s3.access-key-id": s3_server.environment()["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": s3_server.environment()["AWS_SECRET_ACCESS_KEY"],
            "s3.region": "us-east-1",
        },
    )

    def rows() -> list[dict[str, Any]]:
        try:
            table = catalog.load_table(("sales", "orders"))
        except Exception:  # not created yet
            return []
        return list(table.scan().to_arrow().to_pylist())

    async with asyncio.timeout(60):
        while len(found := await asyncio.to_thread(rows)) < 30:
            clock.advance(ms=500)
            await asyncio.sleep(0.2)
    assert sorted(row["id"] for row in found) == list(range(30))
    assert {row["item"] for row in found} == {f"i{i}" for i in range(30)}
    async with asyncio.timeout(30):
        while not (errors := await asyncio.to_thread(s3_server.objects, "iceberg-errors")):
            clock.advance(ms=500)
            await asyncio.sleep(0.2)
    (line,) = b"".join(errors.values()).splitlines()
    assert json.loads(line)["errorCode"] == "Iceberg.InvalidRecord"
    assert "iceberg-failed/" in next(iter(errors))


async def test_iceberg_configurations_shoal_cannot_run_are_refused(firehose: Any) -> None:
    two_tables = _iceberg(
        DestinationTableConfigurationList=[
            {"DestinationDatabaseName": "a", "DestinationTableName": "t"},
            {"DestinationDatabaseName": "b", "DestinationTableName": "t"},
        ]
    )
    upserts = _iceberg(
        DestinationTableConfigurationList=[
            {"DestinationDatabaseName": "a", "DestinationTableName": "t", "UniqueKeys": ["id"]}
        ]
    )
    for configuration, message in ((two_tables, "exactly one table"), (upserts, "UniqueKeys")):
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await call(
                firehose.create_delivery_stream,
                DeliveryStreamName="refused",
                IcebergDestinationConfiguration=configuration,
            )
        assert raised.value.response["Error"]["Code"] == "InvalidArgumentException"
        assert message in raised.value.response["Error"]["Message"]
