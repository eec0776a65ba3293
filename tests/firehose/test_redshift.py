"""Redshift destinations delivered to a real PostgreSQL server (Debian's package, started by
the tests): staged to S3 (moto's server), then the staged object's rows loaded with COPY as
the CopyCommand says (JSON 'auto', CSV, GZIP, columns), S3 backup of the source records,
retries for RetryOptions then an error manifest, AWS's Describe shape and validation."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from broker.clock import ManualClock
from broker.firehose import copy_command
from broker.firehose.warehouse import Credentials, LoadKey, PostgresWarehouse
from broker.node import Node
from tests.firehose.conftest import call, s3_destination, wait_status
from tests.postgres_server import PASSWORD, USER, PostgresServer, postgres_server  # noqa: F401
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[Any]:  # noqa: F811
    with postgres_server.connect() as connection:
        yield connection


def _redshift(server: PostgresServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "ClusterJDBCURL": server.jdbc_url,
        "Username": USER,
        "Password": PASSWORD,
        "S3Configuration": s3_destination(
            bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}
        ),
        **extra,
    }


async def _rows(
    database: Any, query: str, clock: ManualClock, *, count: int, deadline_s: float = 30
) -> list[Any]:
    """The query's rows once there are `count` (bounded); the buffers' interval (1 s) passes
    on the node's clock meanwhile."""
    async with asyncio.timeout(deadline_s):
        while True:
            rows = await asyncio.to_thread(lambda: database.execute(query).fetchall())
            if len(rows) >= count:
                return list(rows)
            clock.advance(ms=100)
            await asyncio.sleep(0.1)


async def test_json_auto_rows_are_staged_then_copied_once(
    firehose: Any,
    fh_node: Node,
    s3_server: S3Server,
    postgres_server: PostgresServer,  # noqa: F811
    database: Any,
    clock: ManualClock,
) -> None:
    database.execute("CREATE TABLE orders (id integer, customer text, total numeric, meta jsonb)")
    s3_server.create_bucket("staging-json")
    configuration = _redshift(
        postgres_server,
        "staging-json",
        CopyCommand={"DataTableName": "orders", "CopyOptions": "JSON 'auto ignorecase' GZIP"},
    )
    configuration["S3Configuration"]["CompressionFormat"] = "GZIP"
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-warehouse",
        RedshiftDestinationConfiguration=configuration,
    )
    description = await wait_status(firehose, "to-warehouse", "ACTIVE")
    redshift = description["Destinations"][0]["RedshiftDestinationDescription"]
    assert "Password" not in redshift
    assert redshift["ClusterJDBCURL"] == postgres_server.jdbc_url
    assert redshift["CopyCommand"]["DataTableName"] == "orders"
    assert redshift["S3BackupMode"] == "Disabled"
    assert redshift["S3DestinationDescription"]["CompressionFormat"] == "GZIP"
    records = [
        {"Data": json.dumps({"ID": i, "Customer": f"c{i}", "total": i * 1.5, "meta": {"k": i}})}
        for i in range(200)
    ]
    answer = await call(
        firehose.put_record_batch, DeliveryStreamName="to-warehouse", Records=records
    )
    assert answer["FailedPutCount"] == 0
    rows = await _rows(
        database, "SELECT id, customer, total, meta FROM orders ORDER BY id", clock, count=200
    )
    assert [row[0] for row in rows] == list(range(200))
    assert rows[3][1:] == ("c3", pytest.approx(4.5), {"k": 3})
    staged = await asyncio.to_thread(s3_server.objects, "staging-json")
    assert staged
    assert all(gzip.decompress(body) for body in staged.values())
    loads = database.execute("SELECT count(*) FROM shoal_firehose_loads").fetchone()
    assert loads is not None and loads[0] >= 1


async def test_csv_with_columns_and_the_source_records_backed_up(
    firehose: Any,
    fh_node: Node,
    s3_server: S3Server,
    postgres_server: PostgresServer,  # noqa: F811
    database: Any,
    clock: ManualClock,
) -> None:
    database.execute("CREATE TABLE readings (sensor text, value integer, note text)")
    s3_server.create_bucket("staging-csv")
    s3_server.create_bucket("backup-csv")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="csv-warehouse",
        RedshiftDestinationConfiguration=_redshift(
            postgres_server,
            "staging-csv",
            CopyCommand={
                "DataTableName": "public.readings",
                "DataTableColumns": "sensor,value",
                "CopyOptions": "CSV DELIMITER ';' TIMEFORMAT 'auto'",
            },
            S3BackupMode="Enabled",
            S3BackupConfiguration=s3_destination("backup-csv", Prefix="source/"),
        ),
    )
    await wait_status(firehose, "csv-warehouse", "ACTIVE")
    lines = [f'"s;{i}";{i}\n'.encode() for i in range(50)]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="csv-warehouse",
        Records=[{"Data": line} for line in lines],
    )
    rows = await _rows(
        database, "SELECT sensor, value, note FROM readings ORDER BY value", clock, count=50
    )
    assert rows[7] == ("s;7", 7, None)
    assert len(rows) == 50

    async def backed_up() -> list[bytes]:
        async with asyncio.timeout(20):
            while True:
                found = await asyncio.to_thread(s3_server.objects, "backup-csv", "source/")
                got = [line for body in found.values() for line in body.splitlines(True)]
                if len(got) >= 50:
                    return got
                await asyncio.sleep(0.1)

    assert sorted(await backed_up()) == sorted(lines)


async def test_a_failing_copy_is_retried_then_its_manifest_goes_to_errors(
    firehose: Any,
    fh_node: Node,
    s3_server: S3Server,
    postgres_server: PostgresServer,  # noqa: F811
    clock: ManualClock,
) -> None:
    s3_server.create_bucket("staging-fail")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="no-table",
        RedshiftDestinationConfiguration=_redshift(
            postgres_server,
            "staging-fail",
            CopyCommand={"DataTableName": "missing_table", "CopyOptions": "JSON 'auto'"},
            RetryOptions={"DurationInSeconds": 1},
        ),
    )
    await wait_status(firehose, "no-table", "ACTIVE")
    await call(firehose.put_record, DeliveryStreamName="no-table", Record={"Data": b'{"a": 1}'})
    async with asyncio.timeout(30):
        while True:
            manifests = await asyncio.to_thread(
                s3_server.objects, "staging-fail", "errors/manifests/"
            )
            if manifests:
                break
            clock.advance(ms=200)
            await asyncio.sleep(0.2)
    (manifest,) = (json.loads(body) for body in manifests.values())
    (entry,) = manifest["entries"]
    assert entry["url"].startswith("s3://staging-fail/")
    assert "missing_table" in manifest["errorMessage"]
    staged_key = entry["url"].removeprefix("s3://staging-fail/")
    staged = await asyncio.to_thread(s3_server.objects, "staging-fail", staged_key)
    assert list(staged.values()) == [b'{"a": 1}']


_REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"ClusterJDBCURL": "https://example.com"}, "ValidationException", "jdbc:(redshift"),
    (
        {"CopyCommand": {"DataTableName": "t", "CopyOptions": "MAXERROR 5"}},
        "InvalidArgumentException",
        "MAXERROR",
    ),
    (
        {"CopyCommand": {"DataTableName": "t", "CopyOptions": "JSON 's3://b/p.json'"}},
        "InvalidArgumentException",
        "jsonpaths",
    ),
    ({"CopyCommand": {"DataTableName": "a;b"}}, "InvalidArgumentException", "DataTableName"),
    ({"S3BackupMode": "Enabled"}, "InvalidArgumentException", "S3BackupConfiguration"),
    (
        {"SecretsManagerConfiguration": {"Enabled": True}},
        "InvalidArgumentException",
        "Secrets Manager",
    ),
]


async def test_redshift_configurations_shoal_cannot_run_are_refused(
    firehose: Any,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    for change, code, message in _REFUSED:
        configuration = {
            **_redshift(postgres_server, "any", CopyCommand={"DataTableName": "t"}),
            **change,
        }
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await call(
                firehose.create_delivery_stream,
                DeliveryStreamName="refused",
                RedshiftDestinationConfiguration=configuration,
            )
        assert raised.value.response["Error"]["Code"] == code, change
        assert message in raised.value.response["Error"]["Message"], change
    zipped = _redshift(postgres_server, "any", CopyCommand={"DataTableName": "t"})
    zipped["S3Configuration"]["CompressionFormat"] = "ZIP"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            firehose.create_delivery_stream,
            DeliveryStreamName="zip",
            RedshiftDestinationConfiguration=zipped,
        )
    assert "COPY reads UNCOMPRESSED or GZIP" in raised.value.response["Error"]["Message"]


def test_a_load_commits_only_against_the_mark_it_was_filtered_with(
    postgres_server: PostgresServer,  # noqa: F811
    database: Any,
) -> None:
    """The compare-and-set that keeps a record from being loaded twice when a deliverer dies
    between the COPY's commit and its checkpoint."""
    database.execute("CREATE TABLE marks (n integer)")
    warehouse = PostgresWarehouse()
    target = copy_command.target(postgres_server.jdbc_url)
    credentials = Credentials(username=USER, password=PASSWORD)
    plan = copy_command.plan({"DataTableName": "marks"})
    key = LoadKey(stream_uid="u1", shard_id="shardId-000000000000")
    start = warehouse.watermark(target, credentials, key)
    assert warehouse.load(
        target,
        credentials,
        plan,
        key=key,
        expected=start,
        loaded=(10, 0),
        object_key="a",
        data=b"1\n2\n",
    )
    assert warehouse.watermark(target, credentials, key) == (10, 0)
    # A second owner filtered against the old mark: refused, nothing loaded.
    assert not warehouse.load(
        target,
        credentials,
        plan,
        key=key,
        expected=start,
        loaded=(12, 0),
        object_key="b",
        data=b"1\n2\n3\n",
    )
    assert database.execute("SELECT count(*) FROM marks").fetchone() == (2,)
    # A failing COPY loads nothing and leaves the mark where it was.
    with pytest.raises(Exception, match="invalid input syntax"):
        warehouse.load(
            target,
            credentials,
            plan,
            key=key,
            expected=(10, 0),
            loaded=(12, 0),
            object_key="c",
            data=b"3\nnot-a-number\n",
        )
    assert warehouse.watermark(target, credentials, key) == (10, 0)
    assert database.execute("SELECT count(*) FROM marks").fetchone() == (2,)
