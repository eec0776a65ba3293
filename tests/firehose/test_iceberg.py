"""Iceberg destinations: JSON records appended to an Iceberg table through pyiceberg's SQL
catalog (sqlite here) over S3 (moto's server): the table created from the records, records
that do not fit to the S3 error output, AWS's Describe shape, and the checks."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import botocore.exceptions
import pyarrow as pa
import pytest
from pyiceberg.catalog import load_catalog

from broker.clock import ManualClock
from broker.firehose.iceberg_tables import NO_WATERMARK, IcebergTables, Watermark, mark_property
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
    twice = _iceberg(
        DestinationTableConfigurationList=[
            {"DestinationDatabaseName": "a", "DestinationTableName": "t"},
            {"DestinationDatabaseName": "a", "DestinationTableName": "t"},
        ]
    )
    none = _iceberg(DestinationTableConfigurationList=[])
    for configuration, message in ((twice, "names a table twice"), (none, "at least one")):
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await call(
                firehose.create_delivery_stream,
                DeliveryStreamName="refused",
                IcebergDestinationConfiguration=configuration,
            )
        assert raised.value.response["Error"]["Code"] == "InvalidArgumentException"
        assert message in raised.value.response["Error"]["Message"]


async def test_records_are_routed_to_tables_and_upserted_or_deleted_on_unique_keys(
    firehose: Any,
    s3_server: S3Server,
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS's JSONQuery routing: the MetadataExtraction query names each record's database,
    table and operation; `orders` has UniqueKeys (update = upsert, delete), `refunds` is
    insert only. Records with an unknown operation, or a delete on a table without
    UniqueKeys, go to the table's S3ErrorOutputPrefix / the error output."""
    catalog_uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    monkeypatch.setenv("PYICEBERG_CATALOG__SHOAL__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__SHOAL__URI", catalog_uri)
    s3_server.create_bucket("iceberg-routed")
    s3_server.create_bucket("iceberg-routed-errors")
    configuration = _iceberg(
        CatalogConfiguration={
            "CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog",
            "WarehouseLocation": "s3://iceberg-routed/warehouse",
        },
        DestinationTableConfigurationList=[
            {
                "DestinationDatabaseName": "shop",
                "DestinationTableName": "orders",
                "UniqueKeys": ["id"],
                "S3ErrorOutputPrefix": "orders-errors/",
            },
            {"DestinationDatabaseName": "shop", "DestinationTableName": "refunds"},
        ],
        ProcessingConfiguration={
            "Enabled": True,
            "Processors": [
                {
                    "Type": "MetadataExtraction",
                    "Parameters": [
                        {
                            "ParameterName": "MetadataExtractionQuery",
                            "ParameterValue": '{destinationDatabaseName: "shop", '
                            "destinationTableName: .table, operation: .op}",
                        },
                        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                    ],
                }
            ],
        },
        S3Configuration=s3_destination("iceberg-routed-errors"),
    )
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-tables",
        IcebergDestinationConfiguration=configuration,
    )
    await wait_status(firehose, "to-tables", "ACTIVE")
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

    def rows(table: str) -> dict[int, str]:
        try:
            loaded = catalog.load_table(("shop", table))
        except Exception:  # not created yet
            return {}
        return {row["id"]: row["v"] for row in loaded.scan().to_arrow().to_pylist()}

    async def put_and_wait(documents: list[dict[str, Any]], done: Any) -> None:
        await call(
            firehose.put_record_batch,
            DeliveryStreamName="to-tables",
            Records=[{"Data": json.dumps(document).encode()} for document in documents],
        )
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(done):
                clock.advance(ms=500)
                await asyncio.sleep(0.2)

    def row(table: str, op: str, id: int, v: str) -> dict[str, Any]:
        return {"table": table, "op": op, "id": id, "v": v}

    # Records of one delivery stream are not kept in order across its shards (as on AWS):
    # each phase waits for the previous one.
    await put_and_wait(
        [row("orders", "insert", i, "new") for i in (1, 2, 3)] + [row("refunds", "insert", 9, "r")],
        lambda: len(rows("orders")) == 3 and rows("refunds") == {9: "r"},
    )
    await put_and_wait(
        [
            row("orders", "update", 1, "changed"),
            row("orders", "delete", 2, ""),
            row("orders", "update", 4, "upserted"),
            row("orders", "merge", 3, "?"),
            row("refunds", "delete", 9, ""),
        ],
        lambda: rows("orders") == {1: "changed", 3: "new", 4: "upserted"},
    )
    assert rows("refunds") == {9: "r"}

    def failures() -> dict[str, str]:
        found = s3_server.objects("iceberg-routed-errors")
        return {
            json.loads(base64.b64decode(json.loads(line)["rawData"]))["op"]: json.loads(line)[
                "errorCode"
            ]
            for body in found.values()
            for line in body.splitlines()
        }

    async with asyncio.timeout(30):
        while len(await asyncio.to_thread(failures)) < 2:
            clock.advance(ms=500)
            await asyncio.sleep(0.2)
    assert failures() == {
        "merge": "Iceberg.InvalidOperation",
        "delete": "Iceberg.MissingUniqueKeys",
    }


def test_two_owners_of_a_shard_never_append_one_buffer_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The takeover race: the old owner of a shard has loaded the table and is about to commit
    a buffer when the new owner (which read the same records from the checkpoint) appends them
    and moves the shard's mark. The old owner's commit must not land (pyiceberg would retry it
    on the refreshed table and append the buffer twice); then, filtered against the new mark,
    it appends only records the table does not hold. Every record once, none lost."""
    monkeypatch.setenv("PYICEBERG_CATALOG__SHOAL__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__SHOAL__URI", f"sqlite:///{tmp_path / 'catalog.db'}")
    warehouse = f"file://{tmp_path / 'warehouse'}"
    table = ("race", "events")
    key = mark_property("uid-1", "shardId-000000000000")
    old_owner, new_owner = IcebergTables(), IcebergTables()  # each its own catalog connection
    schema = old_owner.columns(warehouse=warehouse, table=table, create_from=[{"n": 0}])
    assert schema is not None

    def rows(numbers: list[int]) -> pa.Table:
        return pa.Table.from_pylist([{"n": n} for n in numbers], schema=schema)

    def append(owner: IcebergTables, numbers: list[int], expected: Watermark) -> bool:
        return owner.append(
            warehouse=warehouse,
            table=table,
            rows=rows(numbers),
            key=key,
            expected=expected,
            appended=(numbers[-1], 0),
        )

    catalog = old_owner._catalog(warehouse)
    load_table = catalog.load_table
    raced: list[bool] = []

    def load_then_race(identifier: Any) -> Any:
        loaded = load_table(identifier)
        if not raced:  # the old owner holds the table's metadata; the new owner commits now
            raced.append(append(new_owner, [1, 2, 3], NO_WATERMARK))
        return loaded

    monkeypatch.setattr(catalog, "load_table", load_then_race)
    assert not append(old_owner, [1, 2, 3], NO_WATERMARK)  # lost the race: nothing appended
    assert raced == [True]
    monkeypatch.setattr(catalog, "load_table", load_table)
    assert old_owner.mark(warehouse=warehouse, table=table, key=key) == (3, 0)
    assert not append(old_owner, [1, 2, 3], NO_WATERMARK)  # still stale: refused up front
    assert append(old_owner, [4, 5], (3, 0))  # refiltered: only what the table lacks
    assert not append(new_owner, [4, 5], (3, 0))  # the new owner's copy of the same buffer
    held = catalog.load_table(table).scan().to_arrow().column("n").to_pylist()
    assert sorted(held) == [1, 2, 3, 4, 5]
