"""A SQL application from AWS's guide, run by a node: records in, windows out, through boto3.

Goal: the whole path a KDA user relies on, unmodified: a stream of the guide's stock-ticker
records, an application with the guide's tumbling-window count per ticker and its continuous
filter (SIMILAR TO '%TECH%'), started from TRIM_HORIZON; the windows' rows are read back from
the JSON output stream and the filtered rows from the CSV one, and compared with the rows the
guide's semantics give. The node's clock is a ManualClock: records get their ROWTIME
(arrival time) from it, and the test moves it past a window's end to close the window, so the
rows are exact, not timing-dependent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import boto3
import botocore.config
import pytest

from broker.analytics import records
from broker.clock import ManualClock
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP
from tests.analytics.test_api import ROLE, SCHEMA, STREAM_ARN
from tests.compat.conftest import call

pytestmark = [pytest.mark.integration, MODULE_LOOP]

CODE = """-- The guide's tumbling window: a count per ticker every 10 seconds.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    TICKER_SYMBOL VARCHAR(4),
    TICKER_SYMBOL_COUNT INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
  INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER_SYMBOL, COUNT(*) AS TICKER_SYMBOL_COUNT
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER_SYMBOL,
             STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '10' SECOND);
-- The getting-started application's continuous filter.
CREATE OR REPLACE STREAM "TECH_STREAM" (ticker_symbol VARCHAR(4), sector VARCHAR(12),
                                        change DOUBLE, price DOUBLE);
CREATE OR REPLACE PUMP "TECH_PUMP" AS INSERT INTO "TECH_STREAM"
    SELECT STREAM ticker_symbol, sector, change, price
    FROM "SOURCE_SQL_STREAM_001"
    WHERE sector SIMILAR TO '%TECH%';
"""

WINDOW_1 = [
    ("QXZ", "HEALTHCARE", -0.05, 84.51),
    ("ABC", "TECHNOLOGY", 1.25, 102.0),
    ("QXZ", "HEALTHCARE", 0.5, 85.01),
    ("ABC", "TECHNOLOGY", -0.75, 101.25),
    ("QXZ", "HEALTHCARE", 0.1, 85.11),
]
WINDOW_2 = [
    ("XYZ", "ENERGY", 2.0, 40.0),
    ("QXZ", "HEALTHCARE", 0.2, 85.31),
    ("XYZ", "ENERGY", 1.0, 41.0),
]


def ticker_record(values: tuple[str, str, float, float]) -> dict[str, Any]:
    ticker, sector, change, price = values
    data = {"TICKER_SYMBOL": ticker, "SECTOR": sector, "CHANGE": change, "PRICE": price}
    return {"Data": json.dumps(data).encode(), "PartitionKey": ticker}


async def read_all(kinesis: Any, stream: str, want: int, *, deadline_s: float = 30) -> list[bytes]:
    """Every record of `stream` once `want` have arrived (bounded wait)."""
    shards = (await call(kinesis.list_shards, StreamName=stream))["Shards"]
    iterators = {
        shard["ShardId"]: (
            await call(
                kinesis.get_shard_iterator,
                StreamName=stream,
                ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON",
            )
        )["ShardIterator"]
        for shard in shards
    }
    found: list[bytes] = []
    async with asyncio.timeout(deadline_s):
        while len(found) < want:
            for shard_id, iterator in iterators.items():
                answer = await call(kinesis.get_records, ShardIterator=iterator)
                found += [record["Data"] for record in answer["Records"]]
                iterators[shard_id] = answer["NextShardIterator"]
            await asyncio.sleep(0.05)
    return found


async def wait_read(node: Node, records_in: int, *, deadline_s: float = 30) -> None:
    assert node.applications is not None
    statistics: list[Any] = []
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                statistics = list(node.applications.statistics().values())
                if statistics and statistics[0].records_in >= records_in:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{records_in} records not read: {statistics}") from None


async def test_tumbling_window_and_filter_from_the_guide(
    node: Node, clock: ManualClock, kinesis: Any, analytics: Any
) -> None:
    for stream in ("ticker", "counts", "tech", "errors"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=2)
    await call(
        analytics.create_application,
        ApplicationName="ticker-counts",
        ApplicationCode=CODE,
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
                    "ResourceARN": STREAM_ARN.format("counts"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            },
            {
                "Name": "TECH_STREAM",
                "KinesisStreamsOutput": {"ResourceARN": STREAM_ARN.format("tech"), "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": "CSV"},
            },
            {
                "Name": "error_stream",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("errors"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            },
        ],
    )
    # The clock starts on a 10-second boundary: the first window is [t, t + 10 s).
    assert clock.wall_ms() % 10_000 == 0
    await call(
        kinesis.put_records,
        StreamName="ticker",
        Records=[
            *(ticker_record(r) for r in WINDOW_1),
            {"Data": b"not a ticker record", "PartitionKey": "bad"},
        ],
    )
    await call(
        analytics.start_application,
        ApplicationName="ticker-counts",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    await wait_read(node, len(WINDOW_1) + 1)
    clock.advance(ms=10_000)  # the second window; the first is not closed yet (in flight)
    await call(
        kinesis.put_records, StreamName="ticker", Records=[ticker_record(r) for r in WINDOW_2]
    )
    await wait_read(node, len(WINDOW_1) + 1 + len(WINDOW_2))
    clock.advance(ms=12_000)  # past both windows' ends and the in-flight allowance

    counts = [json.loads(data) for data in await read_all(kinesis, "counts", 4)]
    assert sorted(counts, key=lambda row: (row["TICKER_SYMBOL"], row["TICKER_SYMBOL_COUNT"])) == [
        {"TICKER_SYMBOL": "ABC", "TICKER_SYMBOL_COUNT": 2},
        {"TICKER_SYMBOL": "QXZ", "TICKER_SYMBOL_COUNT": 1},
        {"TICKER_SYMBOL": "QXZ", "TICKER_SYMBOL_COUNT": 3},
        {"TICKER_SYMBOL": "XYZ", "TICKER_SYMBOL_COUNT": 2},
    ]
    tech = sorted(data.decode() for data in await read_all(kinesis, "tech", 2))
    assert tech == ["ABC,TECHNOLOGY,-0.75,101.25\n", "ABC,TECHNOLOGY,1.25,102.0\n"]
    assert node.applications is not None
    (error_record,) = await read_all(kinesis, "errors", 1)
    (statistics,) = node.applications.statistics().values()
    error = json.loads(error_record)
    assert error["ERROR_NAME"] == "Error parsing input record"
    assert error["DATA_ROW"] == "not a ticker record"
    assert statistics.records_in == 9
    assert statistics.errors == 1
    assert statistics.records_out == 7
    assert statistics.late_rows == 0

    await call(analytics.stop_application, ApplicationName="ticker-counts")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)


REGEX_EXAMPLE = """-- The SQL reference's REGEX_LOG_PARSE example 1, unchanged.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (match1 VARCHAR(1024), match2 VARCHAR(1024));
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM T.REC.COLUMN1, T.REC.COLUMN2
    FROM
         (SELECT STREAM SECTOR,
             REGEX_LOG_PARSE(SECTOR, '.*([E].).*([R].*)') AS REC
             FROM SOURCE_SQL_STREAM_001) AS T;
"""


async def test_the_regex_log_parse_example(node: Node, kinesis: Any, analytics: Any) -> None:
    for stream in ("sectors", "matches"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="regex-example",
        ApplicationCode=REGEX_EXAMPLE,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("sectors"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("matches"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    await call(
        kinesis.put_records,
        StreamName="sectors",
        Records=[ticker_record(r) for r in (WINDOW_2[0], WINDOW_1[1])],  # ENERGY, TECHNOLOGY
    )
    await call(
        analytics.start_application,
        ApplicationName="regex-example",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    matches = [json.loads(data) for data in await read_all(kinesis, "matches", 2)]
    assert matches == [{"MATCH1": "EN", "MATCH2": "RGY"}, {"MATCH1": None, "MATCH2": None}]
    await call(analytics.stop_application, ApplicationName="regex-example")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)


COPY = """CREATE OR REPLACE STREAM "COPIES" (TICKER VARCHAR(4));
CREATE OR REPLACE PUMP "COPY_PUMP" AS INSERT INTO "COPIES"
    SELECT STREAM TICKER_SYMBOL FROM "SOURCE_SQL_STREAM_001";
"""


async def test_rows_written_before_a_takeover_are_not_written_again(
    node: Node, kinesis: Any, analytics: Any
) -> None:
    """A holder that wrote rows and died before recording the marks covering them: its
    successor replays their records and finds the rows in the output stream (by their
    partition keys: output, ROWTIME and record), so it does not write them again. The dead
    holder is simulated by writing BBB's copies into the output stream, as it would have,
    while the application is stopped; it then continues from LAST_STOPPED_POINT."""
    for stream in ("copy-in", "copies"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="copier",
        ApplicationCode=COPY,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("copy-in"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "COPIES",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("copies"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )

    async def start(position: str) -> None:
        await call(
            analytics.start_application,
            ApplicationName="copier",
            InputConfigurations=[
                {
                    "Id": "1.1",
                    "InputStartingPositionConfiguration": {"InputStartingPosition": position},
                }
            ],
        )

    async def stop() -> None:
        await call(analytics.stop_application, ApplicationName="copier")
        assert node.applications is not None
        async with asyncio.timeout(10):
            while True:  # the application leaves the node (bounded by the timeout)
                if not node.applications.running():
                    break
                await asyncio.sleep(0.05)

    await call(kinesis.put_records, StreamName="copy-in", Records=[ticker_record(WINDOW_1[0])])
    await start("TRIM_HORIZON")
    assert len(await read_all(kinesis, "copies", 1)) == 1
    await stop()
    await call(kinesis.put_records, StreamName="copy-in", Records=[ticker_record(WINDOW_2[0])])
    # The dead holder's write: BBB's copy, keyed as the runner keys it.
    (shard,) = (await call(kinesis.list_shards, StreamName="copy-in"))["Shards"]
    iterator = (
        await call(
            kinesis.get_shard_iterator,
            StreamName="copy-in",
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )
    )["ShardIterator"]
    last = (await call(kinesis.get_records, ShardIterator=iterator))["Records"][-1]
    arrival_ms = round(last["ApproximateArrivalTimestamp"].timestamp() * 1000)
    copy = records.format_record(["TICKER"], ["XYZ"], "JSON")
    key = hashlib.md5(f"COPIES|{arrival_ms}|".encode() + copy, usedforsecurity=False).hexdigest()
    await call(kinesis.put_record, StreamName="copies", Data=copy, PartitionKey=key)

    await start("LAST_STOPPED_POINT")
    await call(kinesis.put_records, StreamName="copy-in", Records=[ticker_record(WINDOW_2[2])])
    copies = [json.loads(data) for data in await read_all(kinesis, "copies", 3)]
    await asyncio.sleep(0.5)  # a copy written again would come with the next one's
    copies = [json.loads(data) for data in await read_all(kinesis, "copies", 3)]
    assert copies == [{"TICKER": "QXZ"}, {"TICKER": "XYZ"}, {"TICKER": "XYZ"}]
    await stop()


async def test_an_application_of_another_region_reads_and_writes_its_streams(
    node: Node, kinesis: Any
) -> None:
    """Two namespaces hold streams of the same names: an application created by a caller in
    eu-west-1 (not the node's default region) is of that region, and reads and writes that
    region's streams only (its placement and shard leases are on their namespaced keys)."""
    endpoint = f"http://127.0.0.1:{node.http_port}"
    west, west_analytics = (
        boto3.client(
            service,
            endpoint_url=endpoint,
            region_name="eu-west-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        for service in ("kinesis", "kinesisanalytics")
    )
    west_arn = "arn:aws:kinesis:eu-west-1:000000000000:stream/{}"
    for client, shards in ((kinesis, 1), (west, 2)):  # west's input has a shard east's lacks
        for stream in ("ns-in", "ns-out"):
            await call(client.create_stream, StreamName=stream, ShardCount=shards)
    await call(kinesis.put_records, StreamName="ns-in", Records=[ticker_record(WINDOW_1[0])])
    second_shard = {"ExplicitHashKey": str(2**127 + 1)}
    await call(
        west.put_records, StreamName="ns-in", Records=[ticker_record(WINDOW_2[0]) | second_shard]
    )
    created = await call(
        west_analytics.create_application,
        ApplicationName="ns-copier",
        ApplicationCode=COPY,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": west_arn.format("ns-in"), "RoleARN": ROLE},
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "COPIES",
                "KinesisStreamsOutput": {
                    "ResourceARN": west_arn.format("ns-out"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    arn = created["ApplicationSummary"]["ApplicationARN"]
    assert arn == "arn:aws:kinesisanalytics:eu-west-1:000000000000:application/ns-copier"
    await call(
        west_analytics.start_application,
        ApplicationName="ns-copier",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    copies = [json.loads(data) for data in await read_all(west, "ns-out", 1, deadline_s=10)]
    assert copies == [{"TICKER": "XYZ"}]  # west's record, not the default region's QXZ
    await call(west.put_records, StreamName="ns-in", Records=[ticker_record(WINDOW_1[1])])
    copies = [json.loads(data) for data in await read_all(west, "ns-out", 2, deadline_s=10)]
    assert sorted(copy["TICKER"] for copy in copies) == ["ABC", "XYZ"]
    east_out = await call(
        kinesis.get_shard_iterator,
        StreamName="ns-out",
        ShardId="shardId-000000000000",
        ShardIteratorType="TRIM_HORIZON",
    )
    assert (await call(kinesis.get_records, ShardIterator=east_out["ShardIterator"]))[
        "Records"
    ] == []
    # Its progress is recorded: the fence found the placement lease on west's stream.
    metadata = node._metadata
    assert metadata is not None
    key = "000000000000/eu-west-1/ns-copier"
    async with asyncio.timeout(10):
        while True:
            app = metadata.image().analytics.applications[key]
            if app.continuous_through:
                break
            await asyncio.sleep(0.05)
    await call(west_analytics.stop_application, ApplicationName="ns-copier")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)
    west.close()
    west_analytics.close()
