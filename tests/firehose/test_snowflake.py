"""Snowflake destinations delivered for real: the node inserts each buffer's rows with
snowflake-connector-python (Snowflake's official driver, key-pair authentication) into a
Snowflake-compatible server the test starts (fakesnow's server mode, Snowflake's REST protocol
over HTTP on loopback; SHOAL_SNOWFLAKE_ENDPOINT_URL points the node at it). JSON_MAPPING puts
each key in its column; VARIANT_CONTENT_AND_METADATA_MAPPING the record and its metadata in two
VARIANT columns; records that do not map go to the S3 backup as `snowflake-failed`."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import fakesnow
import pytest
import snowflake.connector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.clock import ManualClock
from broker.firehose import snowflake_tables
from tests.firehose.conftest import call, s3_destination, wait_status
from tests.s3_server import S3Server

pytestmark = [
    pytest.mark.integration,
    # fakesnow's server (a thread of this process) warns about its own Arrow copies.
    pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning"),
]


@pytest.fixture(scope="module")
def snowflake_server() -> Iterator[dict[str, Any]]:
    with fakesnow.server() as parameters:
        with snowflake.connector.connect(**parameters) as connection:
            cursor = connection.cursor()
            cursor.execute("CREATE DATABASE SHOP")
            cursor.execute("CREATE SCHEMA SHOP.SALES")
            cursor.execute("CREATE TABLE SHOP.SALES.ORDERS (ID INT, CUSTOMER VARCHAR, TOTAL FLOAT)")
            cursor.execute("CREATE TABLE SHOP.SALES.EVENTS (CONTENT VARIANT, META VARIANT)")
            cursor.execute("CREATE TABLE SHOP.SALES.ONCE (N INT)")
        yield parameters


def _private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode()


def _snowflake(table: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "AccountUrl": "https://shoaltest.snowflakecomputing.com",
        "User": "firehose_loader",
        "PrivateKey": _private_key(),
        "Database": "SHOP",
        "Schema": "SALES",
        "Table": table,
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
        "S3Configuration": s3_destination("snowflake-backup", Prefix=prefix),
        **extra,
    }


async def test_json_records_are_inserted_into_the_table(
    firehose: Any,
    s3_server: S3Server,
    clock: ManualClock,
    snowflake_server: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"{snowflake_server['protocol']}://{snowflake_server['host']}:{snowflake_server['port']}"
    monkeypatch.setenv("SHOAL_SNOWFLAKE_ENDPOINT_URL", url)  # read at each delivery
    s3_server.create_bucket("snowflake-backup")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-orders",
        SnowflakeDestinationConfiguration=_snowflake("ORDERS", "orders/"),
    )
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-events",
        SnowflakeDestinationConfiguration=_snowflake(
            "EVENTS",
            "events/",
            DataLoadingOption="VARIANT_CONTENT_AND_METADATA_MAPPING",
            ContentColumnName="CONTENT",
            MetaDataColumnName="META",
        ),
    )
    described = await wait_status(firehose, "to-orders", "ACTIVE")
    description = described["Destinations"][0]["SnowflakeDestinationDescription"]
    assert "PrivateKey" not in description and description["Table"] == "ORDERS"
    await wait_status(firehose, "to-events", "ACTIVE")
    orders = [{"id": i, "Customer": f"c{i}", "total": i * 1.5} for i in range(20)]
    bad = [b"not json", b'{"not-a-column": 1}']
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="to-orders",
        Records=[{"Data": json.dumps(row).encode()} for row in orders] + [{"Data": b} for b in bad],
    )
    events = [{"kind": "click", "n": i, "tags": ["a", "b"]} for i in range(5)]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="to-events",
        Records=[{"Data": json.dumps(event).encode()} for event in events],
    )

    def query(statement: str) -> list[Any]:
        with snowflake.connector.connect(**snowflake_server) as connection:
            cursor = connection.cursor()
            cursor.execute(statement)
            return list(cursor.fetchall())

    async with asyncio.timeout(60):
        while True:
            got = await asyncio.to_thread(
                query, "SELECT ID, CUSTOMER, TOTAL FROM SHOP.SALES.ORDERS"
            )
            stored = await asyncio.to_thread(query, "SELECT CONTENT, META FROM SHOP.SALES.EVENTS")
            if len(got) >= len(orders) and len(stored) >= len(events):
                break
            clock.advance(ms=500)
            await asyncio.sleep(0.2)
    assert sorted(got) == [(i, f"c{i}", i * 1.5) for i in range(20)]
    assert sorted((json.loads(content) for content, _ in stored), key=lambda e: e["n"]) == events
    assert {json.loads(meta)["firehoseDeliveryStreamName"] for _, meta in stored} == {"to-events"}

    async with asyncio.timeout(30):
        while not (failed := await asyncio.to_thread(s3_server.objects, "snowflake-backup")):
            clock.advance(ms=500)
            await asyncio.sleep(0.2)
    lines = [json.loads(line) for body in failed.values() for line in body.splitlines()]
    assert sorted(base64.b64decode(line["rawData"]) for line in lines) == sorted(bad)
    assert {line["errorCode"] for line in lines} == {"Snowflake.InvalidRecord"}
    assert all(key.startswith("orders/snowflake-failed/") for key in failed)


def _query(server: dict[str, Any], statement: str) -> list[Any]:
    with snowflake.connector.connect(**server) as connection:
        cursor = connection.cursor()
        cursor.execute(statement)
        return list(cursor.fetchall())


def test_a_shards_records_are_inserted_once_across_owners(
    snowflake_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard's mark commits with the rows: a buffer loaded again (its checkpoint lost in a
    crash, or a new owner reading from an older checkpoint) inserts only what is new."""
    url = f"{snowflake_server['protocol']}://{snowflake_server['host']}:{snowflake_server['port']}"
    monkeypatch.setenv("SHOAL_SNOWFLAKE_ENDPOINT_URL", url)
    configuration = _snowflake("ONCE", "once/")
    records = [json.dumps({"n": n}).encode() for n in range(5)]
    sequences = [(10**40 + n, 0) for n in range(5)]  # wider than NUMBER(38): kept as text

    def load(first: int, last: int) -> snowflake_tables.Loaded:
        return snowflake_tables.load(
            configuration,
            stream_uid="uid-1",
            shard_id="shardId-000000000000",
            records=records[first:last],
            sequences=sequences[first:last],
            metadata=[{}] * (last - first),
        )

    assert load(0, 3).inserted == 3
    assert load(0, 3).inserted == 0  # the same buffer again: the table holds it
    assert load(1, 5).inserted == 2  # from an older checkpoint: only records 3 and 4
    got = _query(snowflake_server, "SELECT N FROM SHOP.SALES.ONCE")
    assert sorted(row[0] for row in got) == [0, 1, 2, 3, 4]
