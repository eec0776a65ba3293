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
from broker.analytics.shard_reader import ShardReader, StoredPage
from broker.client.kpl import UserRecord, aggregate, deaggregate_batch
from broker.client.retrieval import RecordBatch, child_shard
from broker.client.worker_config import WorkerConfig
from broker.clock import ManualClock
from broker.consumers.leases import Checkpoint
from broker.errors import ErrorCode, ShoalError
from broker.node import Node
from broker.timestamps import ms_from_datetime
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


async def create_application(
    analytics: Any,
    name: str,
    code: str,
    *,
    source: str,
    outputs: list[tuple[str, str, str]],
    schema: dict[str, Any] = SCHEMA,
    arn: str = STREAM_ARN,
) -> dict[str, Any]:
    """CreateApplication reading stream `source` with `schema`, each output an in-application
    stream written to a Kinesis stream as (in-application stream, stream, record format)."""
    answer: dict[str, Any] = await call(
        analytics.create_application,
        ApplicationName=name,
        ApplicationCode=code,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": arn.format(source), "RoleARN": ROLE},
                "InputSchema": schema,
            }
        ],
        Outputs=[
            {
                "Name": in_application,
                "KinesisStreamsOutput": {"ResourceARN": arn.format(stream), "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": record_format},
            }
            for in_application, stream, record_format in outputs
        ],
    )
    return answer


async def start_application(analytics: Any, name: str, position: str = "TRIM_HORIZON") -> None:
    await call(
        analytics.start_application,
        ApplicationName=name,
        InputConfigurations=[
            {"Id": "1.1", "InputStartingPositionConfiguration": {"InputStartingPosition": position}}
        ],
    )


async def stop_application(
    node: Node, analytics: Any, name: str, *, deadline_s: float = 10
) -> None:
    """StopApplication, then until the application has left the node (bounded)."""
    await call(analytics.stop_application, ApplicationName=name)
    assert node.applications is not None
    async with asyncio.timeout(deadline_s):
        while True:  # bounded by the timeout
            if not node.applications.running():
                return
            await asyncio.sleep(0.02)


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
    await create_application(
        analytics,
        "ticker-counts",
        CODE,
        source="ticker",
        outputs=[
            ("DESTINATION_SQL_STREAM", "counts", "JSON"),
            ("TECH_STREAM", "tech", "CSV"),
            ("error_stream", "errors", "JSON"),
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
    await start_application(analytics, "ticker-counts")
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

    await stop_application(node, analytics, "ticker-counts")


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
    await create_application(
        analytics,
        "regex-example",
        REGEX_EXAMPLE,
        source="sectors",
        outputs=[("DESTINATION_SQL_STREAM", "matches", "JSON")],
    )
    await call(
        kinesis.put_records,
        StreamName="sectors",
        Records=[ticker_record(r) for r in (WINDOW_2[0], WINDOW_1[1])],  # ENERGY, TECHNOLOGY
    )
    await start_application(analytics, "regex-example")
    matches = [json.loads(data) for data in await read_all(kinesis, "matches", 2)]
    assert matches == [{"MATCH1": "EN", "MATCH2": "RGY"}, {"MATCH1": None, "MATCH2": None}]
    await stop_application(node, analytics, "regex-example")


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
    await create_application(
        analytics,
        "copier",
        COPY,
        source="copy-in",
        outputs=[("COPIES", "copies", "JSON")],
    )

    await call(kinesis.put_records, StreamName="copy-in", Records=[ticker_record(WINDOW_1[0])])
    await start_application(analytics, "copier")
    assert len(await read_all(kinesis, "copies", 1)) == 1
    await stop_application(node, analytics, "copier")
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
    # With the position that produced it: the batch ending at BBB's record, past the marks.
    position = f"c:{shard['ShardId']}:{last['SequenceNumber']}"
    await call(kinesis.put_record, StreamName="copies", Data=copy, PartitionKey=f"{key}:{position}")

    await start_application(analytics, "copier", "LAST_STOPPED_POINT")
    await call(kinesis.put_records, StreamName="copy-in", Records=[ticker_record(WINDOW_2[2])])
    # A later record's copy closes the check: one written again would come before it.
    await call(kinesis.put_records, StreamName="copy-in", Records=[ticker_record(WINDOW_1[1])])
    copies = [json.loads(data) for data in await read_all(kinesis, "copies", 4)]
    assert copies == [{"TICKER": t} for t in ("QXZ", "XYZ", "XYZ", "ABC")]
    await stop_application(node, analytics, "copier")


async def test_a_new_row_equal_to_one_the_marks_cover_is_written_after_a_resume(
    node: Node, kinesis: Any, analytics: Any
) -> None:
    """The resumed application skips only rows written past the recorded marks: a new row
    equal to a row they cover (same output, ROWTIME and record) is written. The node's
    ManualClock stands still, so the second record arrives in the same millisecond as the
    first, with the same data."""
    for stream in ("twins-in", "twins"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await create_application(
        analytics, "twins", COPY, source="twins-in", outputs=[("COPIES", "twins", "JSON")]
    )
    twin = ticker_record(WINDOW_1[0])
    await call(kinesis.put_records, StreamName="twins-in", Records=[twin])
    await start_application(analytics, "twins")
    assert len(await read_all(kinesis, "twins", 1)) == 1
    await stop_application(node, analytics, "twins")  # its marks cover the first copy

    await call(kinesis.put_records, StreamName="twins-in", Records=[twin])
    await start_application(analytics, "twins", "LAST_STOPPED_POINT")
    copies = [json.loads(data) for data in await read_all(kinesis, "twins", 2, deadline_s=10)]
    assert copies == [{"TICKER": "QXZ"}, {"TICKER": "QXZ"}]
    await stop_application(node, analytics, "twins")


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
    await create_application(
        analytics,
        "order-trades",
        JOIN_EXAMPLE,
        source="trading",
        outputs=[("DESTINATION_SQL_STREAM", "matched", "JSON")],
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
    await start_application(analytics, "order-trades")
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
    await stop_application(node, analytics, "order-trades")


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
    await create_application(
        analytics,
        "anomalies",
        ANOMALY_EXAMPLE,
        source="prices",
        outputs=[("DESTINATION_SQL_STREAM", "scored", "JSON")],
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
    await start_application(analytics, "anomalies")
    scored = [json.loads(data) for data in await read_all(kinesis, "scored", len(prices))]
    assert len(scored) == len(prices)
    assert sorted(row["PRICE"] for row in scored) == sorted(prices)
    assert set(scored[0]) == {"TICKER_SYMBOL", "SECTOR", "CHANGE", "PRICE", "ANOMALY_SCORE"}
    spike = next(row for row in scored if row["PRICE"] == 160.0)
    others = [row["ANOMALY_SCORE"] for row in scored if row is not spike]
    assert spike["ANOMALY_SCORE"] > 3 * max(others)
    await stop_application(node, analytics, "anomalies")


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
    hotspot, its bounds and density (30 rows over a radius-sided square). Its window is
    rebuilt when the application resumes."""
    for stream in ("quotes", "hot"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await create_application(
        analytics,
        "hotspots",
        HOTSPOTS_EXAMPLE,
        source="quotes",
        outputs=[("DESTINATION_SQL_STREAM", "hot", "JSON")],
    )
    quotes = [("ABC", "TECHNOLOGY", 0.25, 10.0 + i) for i in range(70)]
    quotes += [("XYZ", "ENERGY", 0.5, 40.0)] * 30
    for start in range(0, len(quotes), 50):
        await call(
            kinesis.put_records,
            StreamName="quotes",
            Records=[ticker_record(quote) for quote in quotes[start : start + 50]],
        )
    await start_application(analytics, "hotspots")
    rows = [json.loads(data) for data in await read_all(kinesis, "hot", len(quotes))]
    assert len(rows) == len(quotes)
    assert json.loads(rows[69]["HOTSPOTS_RESULT"]) == {"hotspots": []}
    (hotspot,) = json.loads(rows[-1]["HOTSPOTS_RESULT"])["hotspots"]
    assert hotspot["minValues"] == hotspot["maxValues"] == [0.5, 40.0]
    assert hotspot["density"] == pytest.approx(30 / 0.013**2)
    # Stopped and started again from LAST_STOPPED_POINT (as a successor takes over): the
    # window's last 100 records are read again, so the next row's window holds 31 dense
    # rows, not 1; the rows written before are not written again.
    await stop_application(node, analytics, "hotspots")
    await start_application(analytics, "hotspots", "LAST_STOPPED_POINT")
    await call(kinesis.put_records, StreamName="quotes", Records=[ticker_record(quotes[-1])])
    rows = [json.loads(data) for data in await read_all(kinesis, "hot", len(quotes) + 1)]
    assert len(rows) == len(quotes) + 1
    (hotspot,) = json.loads(rows[-1]["HOTSPOTS_RESULT"])["hotspots"]
    assert hotspot["density"] == pytest.approx(31 / 0.013**2)
    await stop_application(node, analytics, "hotspots")


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
    await create_application(
        analytics,
        "log-parsing",
        LOG_EXAMPLE,
        source="logs",
        outputs=[("DESTINATION_SQL_STREAM", "parsed", "JSON")],
        schema=schema,
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
    await start_application(analytics, "log-parsing")
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
    await stop_application(node, analytics, "log-parsing")


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
    created = await create_application(
        west_analytics,
        "ns-copier",
        COPY,
        source="ns-in",
        outputs=[("COPIES", "ns-out", "JSON")],
        arn=west_arn,
    )
    arn = created["ApplicationSummary"]["ApplicationARN"]
    assert arn == "arn:aws:kinesisanalytics:eu-west-1:000000000000:application/ns-copier"
    await start_application(west_analytics, "ns-copier")
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
    await stop_application(node, west_analytics, "ns-copier")
    west.close()
    west_analytics.close()


# --- The input read inside the node (`broker/analytics/shard_reader.py`) ----------------------
# Reading a shard's log inside the node hands the runner exactly what a GetRecords consumer
# (the KCL's de-aggregation included) would get: the same user records in the same order with
# the same sequence numbers, sub-sequence numbers and arrival times; a closed shard ends with the
# same children, and the application reads the parent before its children.


async def _create(kinesis: Any, name: str, shards: int) -> dict[str, Any]:
    await call(kinesis.create_stream, StreamName=name, ShardCount=shards)
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout
            described = await call(kinesis.describe_stream, StreamName=name)
            if described["StreamDescription"]["StreamStatus"] == "ACTIVE":
                return dict(described["StreamDescription"]["Shards"][0])
            await asyncio.sleep(0.02)


def _reader(node: Node, stream: str, shard: dict[str, Any], *, limit: int) -> ShardReader:
    info = child_shard({**shard, "ParentShards": ()})
    assert node.service is not None
    return ShardReader(
        node.service.ctx,
        stream_key=stream,
        shard=info,
        caller=None,
        config=WorkerConfig(get_records_limit=limit),
    )


async def _read_to_end(reader: ShardReader) -> tuple[list[UserRecord], RecordBatch]:
    users: list[UserRecord] = []
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout
            batch = await reader.next_batch()
            assert not batch.records and isinstance(batch.users, StoredPage)
            users += list(batch.users)
            if batch.child_shards is not None or batch.empty:
                return users, batch


async def _get_records(kinesis: Any, stream: str, shard_id: str) -> tuple[list[UserRecord], Any]:
    iterator = (
        await call(
            kinesis.get_shard_iterator,
            StreamName=stream,
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout
            answer = await call(kinesis.get_records, ShardIterator=iterator, Limit=3)
            records += answer["Records"]
            if not answer["Records"] or "NextShardIterator" not in answer:
                return deaggregate_batch(records), answer.get("ChildShards")
            iterator = answer["NextShardIterator"]


def _fields(users: list[UserRecord]) -> list[tuple[Any, ...]]:
    return [
        (
            u.partition_key,
            u.data,
            u.sequence_number,
            u.sub_sequence_number,
            u.aggregated,
            ms_from_datetime(u.approximate_arrival_timestamp)
            if u.approximate_arrival_timestamp is not None
            else None,
        )
        for u in users
    ]


async def test_the_reader_hands_over_what_get_records_and_deaggregation_give(
    node: Node, kinesis: Any
) -> None:
    stream = "reader-equivalence"
    shard = await _create(kinesis, stream, 1)
    plain = [{"Data": f"plain-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(5)]
    blob = aggregate(
        [UserRecord(partition_key=f"a{i}", data=f"agg-{i}".encode()) for i in range(4)]
    )
    await call(kinesis.put_records, StreamName=stream, Records=plain[:3])
    await call(
        kinesis.put_record, StreamName=stream, Data=blob.data, PartitionKey=blob.partition_key
    )
    await call(kinesis.put_records, StreamName=stream, Records=plain[3:])

    reader = _reader(node, stream, shard, limit=3)  # pages of 3: an aggregate inside one
    await reader.start(Checkpoint("TRIM_HORIZON"))
    read, _ = await _read_to_end(reader)
    expected, _ = await _get_records(kinesis, stream, shard["ShardId"])
    assert len(expected) == 9 and sum(u.aggregated for u in expected) == 4
    assert _fields(read) == _fields(expected)

    # A checkpoint inside the aggregate: read from its record again (the worker drops what is
    # at or below the checkpoint); a plain record's checkpoint: from that record.
    resumed = _reader(node, stream, shard, limit=100)
    await resumed.start(Checkpoint(str(expected[5].sequence_number), 2))
    again, _ = await _read_to_end(resumed)
    assert _fields(again) == _fields(expected[3:])


async def test_a_closed_shard_ends_with_its_children_as_get_records_does(
    node: Node, kinesis: Any
) -> None:
    stream = "reader-split"
    shard = await _create(kinesis, stream, 1)
    await call(
        kinesis.put_records,
        StreamName=stream,
        Records=[{"Data": b"before", "PartitionKey": "p"}],
    )
    middle = str((int(shard["HashKeyRange"]["EndingHashKey"]) + 1) // 2)
    await call(
        kinesis.split_shard,
        StreamName=stream,
        ShardToSplit=shard["ShardId"],
        NewStartingHashKey=middle,
    )
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout: the split commits through the quorum
            described = await call(kinesis.describe_stream, StreamName=stream)
            closed = described["StreamDescription"]["Shards"][0]["SequenceNumberRange"]
            if "EndingSequenceNumber" in closed:
                break
            await asyncio.sleep(0.02)
    reader = _reader(node, stream, shard, limit=100)
    await reader.start(Checkpoint("TRIM_HORIZON"))
    read, last = await _read_to_end(reader)
    assert last.child_shards is not None
    expected, children = await _get_records(kinesis, stream, shard["ShardId"])
    assert [u.data for u in read] == [u.data for u in expected] == [b"before"]
    assert last.child_shards == tuple(child_shard(c) for c in children)
    assert all(c.parent_shard_ids == (shard["ShardId"],) for c in last.child_shards)
    with pytest.raises(ShoalError) as raised:  # as GetShardIterator answers
        await _reader(node, "reader-no-such-stream", shard, limit=1).start(Checkpoint("LATEST"))
    assert raised.value.code is ErrorCode.RESOURCE_NOT_FOUND


async def test_an_application_reads_a_split_shard_then_its_children_once(
    node: Node, clock: ManualClock, kinesis: Any, analytics: Any
) -> None:
    """Through the in-node reader: a closed parent's records, then its children's, each once
    (the parent's end hands the worker the children, whose leases wait for the parent)."""
    shard = await _create(kinesis, "resharded-in", 1)
    await _create(kinesis, "resharded", 1)
    await create_application(
        analytics,
        "resharded",
        COPY,
        source="resharded-in",
        outputs=[("COPIES", "resharded", "JSON")],
    )
    before = [
        {"Data": json.dumps({"TICKER_SYMBOL": f"P{i}"}).encode(), "PartitionKey": f"k{i}"}
        for i in range(3)
    ]
    await call(kinesis.put_records, StreamName="resharded-in", Records=before)
    middle = str((int(shard["HashKeyRange"]["EndingHashKey"]) + 1) // 2)
    await call(
        kinesis.split_shard,
        StreamName="resharded-in",
        ShardToSplit=shard["ShardId"],
        NewStartingHashKey=middle,
    )
    async with asyncio.timeout(10):
        while True:  # bounded by the timeout: the children take writes once the split commits
            described = await call(kinesis.describe_stream, StreamName="resharded-in")
            if described["StreamDescription"]["StreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.02)
    after = [
        {"Data": json.dumps({"TICKER_SYMBOL": f"C{i}"}).encode(), "PartitionKey": f"k{i}"}
        for i in range(6)
    ]
    await call(kinesis.put_records, StreamName="resharded-in", Records=after)
    # Started after the split: the parent, closed, is read to its end before either child.
    await start_application(analytics, "resharded")
    async with asyncio.timeout(30):
        while True:  # bounded by the timeout
            # The worker's scans run on the node's ManualClock: a second on, it takes the
            # children's leases (the parent checkpointed SHARD_END).
            clock.advance(ms=1_000)
            try:
                found = await read_all(kinesis, "resharded", 9, deadline_s=0.5)
                break
            except TimeoutError:
                continue
    copies = [json.loads(data)["TICKER"] for data in found]
    assert len(copies) == 9
    assert copies[:3] == ["P0", "P1", "P2"]  # the parent, in order, before any child's
    assert sorted(copies[3:]) == [f"C{i}" for i in range(6)]  # each child's record once
    await stop_application(node, analytics, "resharded")
