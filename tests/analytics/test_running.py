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


JOIN_EXAMPLE = """-- The SQL reference's windowed stream-to-stream join (LEFT OUTER: an
-- order without a trade too): orders with the trades of the minute before them.
CREATE OR REPLACE STREAM "ORDERS" (TICKER VARCHAR(4), AMOUNT DOUBLE);
CREATE OR REPLACE PUMP "ORDERS_PUMP" AS INSERT INTO "ORDERS"
    SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE SECTOR = 'ORDER';
CREATE OR REPLACE STREAM "TRADES" (TICKER VARCHAR(4), AMOUNT DOUBLE);
CREATE OR REPLACE PUMP "TRADES_PUMP" AS INSERT INTO "TRADES"
    SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE SECTOR = 'TRADE';
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ORDER_TIME TIMESTAMP, TICKER VARCHAR(4),
                                                   ORDER_AMOUNT DOUBLE, TRADE_AMOUNT DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM ROWTIME, o.TICKER, o.AMOUNT AS ORDER_AMOUNT, t.AMOUNT AS TRADE_AMOUNT
    FROM "ORDERS" AS o
    LEFT OUTER JOIN "TRADES" OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS t
    ON o.TICKER = t.TICKER;
"""


async def test_a_windowed_stream_to_stream_join(
    node: Node, clock: ManualClock, kinesis: Any, analytics: Any
) -> None:
    for stream in ("trading", "matched"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="order-trades",
        ApplicationCode=JOIN_EXAMPLE,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("trading"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("matched"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )

    async def put(*rows: tuple[str, str, float, float]) -> int:
        await call(
            kinesis.put_records, StreamName="trading", Records=[ticker_record(r) for r in rows]
        )
        return clock.wall_ms()

    await put(("ABC", "TRADE", 0.0, 10.0), ("XYZ", "TRADE", 0.0, 1.0))
    clock.advance(ms=30_000)
    abc_order = await put(("ABC", "ORDER", 0.0, 11.0))  # its trade 30 s before: paired
    clock.advance(ms=31_000)
    xyz_order = await put(("XYZ", "ORDER", 0.0, 2.0))  # its trade 61 s before: not paired
    await put(("ABC", "TRADE", 0.0, 12.0))  # after the order, which has no window: not paired
    qrs = await put(("QRS", "ORDER", 0.0, 3.0), ("QRS", "TRADE", 0.0, 4.0))  # the same instant
    await call(
        analytics.start_application,
        ApplicationName="order-trades",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    await wait_read(node, 7)
    clock.advance(ms=2_000)  # past the XYZ order's window (its instant) and the in-flight time
    matched = [json.loads(data) for data in await read_all(kinesis, "matched", 3)]

    def at(ms: int) -> str:
        return records.to_timestamp(ms).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    assert matched == [
        {"ORDER_TIME": at(abc_order), "TICKER": "ABC", "ORDER_AMOUNT": 11.0, "TRADE_AMOUNT": 10.0},
        {"ORDER_TIME": at(qrs), "TICKER": "QRS", "ORDER_AMOUNT": 3.0, "TRADE_AMOUNT": 4.0},
        {"ORDER_TIME": at(xyz_order), "TICKER": "XYZ", "ORDER_AMOUNT": 2.0, "TRADE_AMOUNT": None},
    ]
    await call(analytics.stop_application, ApplicationName="order-trades")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)


ANOMALY_EXAMPLE = """-- The developer guide's anomaly detection example, unchanged.
CREATE OR REPLACE STREAM "TEMP_STREAM" (
            "TICKER_SYMBOL"     VARCHAR(4),
            "SECTOR"          VARCHAR(16),
            "CHANGE"          REAL,
            "PRICE"          REAL,
            "ANOMALY_SCORE"  DOUBLE);
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
            "TICKER_SYMBOL"     VARCHAR(4),
            "SECTOR"          VARCHAR(16),
            "CHANGE"          REAL,
            "PRICE"          REAL,
            "ANOMALY_SCORE"  DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
   INSERT INTO "TEMP_STREAM"
      SELECT STREAM "TICKER_SYMBOL", "SECTOR", "CHANGE", "PRICE", ANOMALY_SCORE
      FROM TABLE(RANDOM_CUT_FOREST(
              CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001")));
CREATE OR REPLACE PUMP "OUTPUT_PUMP" AS
   INSERT INTO "DESTINATION_SQL_STREAM"
      SELECT STREAM * FROM "TEMP_STREAM"
      ORDER BY FLOOR("TEMP_STREAM".ROWTIME TO SECOND), ANOMALY_SCORE DESC;
"""


async def test_the_anomaly_detection_example(node: Node, kinesis: Any, analytics: Any) -> None:
    """The guide's RANDOM_CUT_FOREST application over ticker records with one planted price
    spike: every record comes out with its ANOMALY_SCORE, the spike's far above the rest."""
    for stream in ("prices", "scored"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="anomalies",
        ApplicationCode=ANOMALY_EXAMPLE,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("prices"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("scored"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    prices = [80.0 + (i * 7 % 13) / 4 for i in range(150)]  # exact in a REAL
    prices[120] = 160.0  # the planted spike
    for start in range(0, len(prices), 50):
        await call(
            kinesis.put_records,
            StreamName="prices",
            Records=[
                ticker_record(("QXZ", "HEALTHCARE", 0.1, price))
                for price in prices[start : start + 50]
            ],
        )
    await call(
        analytics.start_application,
        ApplicationName="anomalies",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    scored = [json.loads(data) for data in await read_all(kinesis, "scored", len(prices))]
    assert len(scored) == len(prices)
    assert sorted(row["PRICE"] for row in scored) == sorted(prices)
    assert set(scored[0]) == {"TICKER_SYMBOL", "SECTOR", "CHANGE", "PRICE", "ANOMALY_SCORE"}
    spike = next(row for row in scored if row["PRICE"] == 160.0)
    others = [row["ANOMALY_SCORE"] for row in scored if row is not spike]
    assert spike["ANOMALY_SCORE"] > 3 * max(others)
    await call(analytics.stop_application, ApplicationName="anomalies")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)


HOTSPOTS_EXAMPLE = """-- The SQL reference's HOTSPOTS example 1, unchanged.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM"(
    CHANGE REAL,
    PRICE REAL,
    HOTSPOTS_RESULT VARCHAR(10000));

CREATE OR REPLACE PUMP "STREAM_PUMP" AS
    INSERT INTO "DESTINATION_SQL_STREAM"
        SELECT
            "CHANGE",
            "PRICE",
            "HOTSPOTS_RESULT"
        FROM TABLE (
            HOTSPOTS(
                CURSOR(SELECT STREAM "CHANGE", "PRICE" FROM "SOURCE_SQL_STREAM_001"),
                100,
                0.013,
                20)
            );
"""


async def test_the_hotspots_example(node: Node, kinesis: Any, analytics: Any) -> None:
    """The reference's HOTSPOTS pump over ticker records: 70 spread prices, then 30 at one
    (CHANGE, PRICE): every record comes out with HOTSPOTS_RESULT; the last one's names the one
    hotspot, its bounds and density (30 rows over a radius-sided square)."""
    for stream in ("quotes", "hot"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="hotspots",
        ApplicationCode=HOTSPOTS_EXAMPLE,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("quotes"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("hot"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    quotes = [("ABC", "TECHNOLOGY", 0.25, 10.0 + i) for i in range(70)]
    quotes += [("XYZ", "ENERGY", 0.5, 40.0)] * 30
    for start in range(0, len(quotes), 50):
        await call(
            kinesis.put_records,
            StreamName="quotes",
            Records=[ticker_record(quote) for quote in quotes[start : start + 50]],
        )
    await call(
        analytics.start_application,
        ApplicationName="hotspots",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    rows = [json.loads(data) for data in await read_all(kinesis, "hot", len(quotes))]
    assert len(rows) == len(quotes)
    assert json.loads(rows[69]["HOTSPOTS_RESULT"]) == {"hotspots": []}
    (hotspot,) = json.loads(rows[-1]["HOTSPOTS_RESULT"])["hotspots"]
    assert hotspot["minValues"] == hotspot["maxValues"] == [0.5, 40.0]
    assert hotspot["density"] == pytest.approx(30 / 0.013**2)
    await call(analytics.stop_application, ApplicationName="hotspots")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)


LOG_EXAMPLE = """-- The SQL reference's W3C_LOG_PARSE COMMON columns, and SYS_LOG_PARSE.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (HOST VARCHAR(64), LOG_USER VARCHAR(16),
    REQUEST VARCHAR(256), STATUS INTEGER, LOGGED TIMESTAMP, MESSAGE VARCHAR(256));
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM l.w.COLUMN1, l.w.COLUMN3, l.w.COLUMN5, l.w.COLUMN6, l.s.COLUMN1, l.s.COLUMN2
    FROM (SELECT STREAM W3C_LOG_PARSE(LINE, 'COMMON') AS w, SYS_LOG_PARSE(LINE) AS s
          FROM "SOURCE_SQL_STREAM_001") AS l;
"""


async def test_the_log_parsing_functions(node: Node, kinesis: Any, analytics: Any) -> None:
    for stream in ("logs", "parsed"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    schema = {
        "RecordFormat": {
            "RecordFormatType": "JSON",
            "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
        },
        "RecordColumns": [{"Name": "LINE", "Mapping": "$.line", "SqlType": "VARCHAR(1024)"}],
    }
    await call(
        analytics.create_application,
        ApplicationName="log-parsing",
        ApplicationCode=LOG_EXAMPLE,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": STREAM_ARN.format("logs"), "RoleARN": ROLE},
                "InputSchema": schema,
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {
                    "ResourceARN": STREAM_ARN.format("parsed"),
                    "RoleARN": ROLE,
                },
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    lines = [
        '192.168.254.30 - John [24/May/2004:22:01:02 -0700] "GET /icons/apache_pb.gif HTTP/1.1"'
        " 304 0",
        "Mar  1 09:05:00 web1 cron[7]: job done",
    ]
    await call(
        kinesis.put_records,
        StreamName="logs",
        Records=[
            {"Data": json.dumps({"line": line}).encode(), "PartitionKey": "k"} for line in lines
        ],
    )
    await call(
        analytics.start_application,
        ApplicationName="log-parsing",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    parsed = [json.loads(data) for data in await read_all(kinesis, "parsed", 2)]
    assert parsed[0] == {
        "HOST": "192.168.254.30",
        "LOG_USER": "John",
        "REQUEST": "GET /icons/apache_pb.gif HTTP/1.1",
        "STATUS": 304,
        "LOGGED": None,
        "MESSAGE": None,
    }
    assert parsed[1]["HOST"] is None
    assert parsed[1]["MESSAGE"] == "web1 cron[7]: job done"
    await call(analytics.stop_application, ApplicationName="log-parsing")
    assert node.applications is not None
    async with asyncio.timeout(10):
        while True:  # the application leaves the node (bounded by the timeout)
            if not node.applications.running():
                break
            await asyncio.sleep(0.05)
