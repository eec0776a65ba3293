"""The pipeline over micro-batches with DuckDB: tumbling windows closed by the watermark,
continuous pumps, chains of in-application streams, late rows; and the pure window rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.analytics import (
    anomaly,
    hotspots,
    log_parsing,
    pipeline,
    records,
    runner,
    sql,
    windows,
)
from broker.analytics.duckdb_engine import DuckDbChecker, DuckDbEngine
from broker.errors import ErrorCode, ShoalError
from tests.analytics.test_sql import SOURCE

T0 = 1_790_000_000_000  # a multiple of every window size below

CODE = """
CREATE OR REPLACE STREAM "COUNTS" (TICKER_SYMBOL VARCHAR(4), N INTEGER, WINDOW_START TIMESTAMP);
CREATE OR REPLACE PUMP "COUNT_PUMP" AS INSERT INTO "COUNTS"
  SELECT STREAM TICKER_SYMBOL, COUNT(*),
         STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '10' SECOND)
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '10' SECOND);
CREATE OR REPLACE STREAM "CHEAP" (TICKER_SYMBOL VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "CHEAP_PUMP" AS INSERT INTO "CHEAP"
  SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE < 50;
CREATE OR REPLACE STREAM "CHEAP_PER_MINUTE" (TICKER_SYMBOL VARCHAR(4), LOW DOUBLE);
CREATE OR REPLACE PUMP "MINUTE_PUMP" AS INSERT INTO "CHEAP_PER_MINUTE"
  SELECT STREAM TICKER_SYMBOL, MIN(PRICE) FROM "CHEAP"
  GROUP BY TICKER_SYMBOL, FLOOR("CHEAP".ROWTIME TO MINUTE);
"""


@pytest.fixture
def engine() -> Iterator[DuckDbEngine]:
    engine = DuckDbEngine()
    yield engine
    engine.close()


def row(at_ms: int, ticker: str, price: float) -> records.Row:
    time = records.to_timestamp(at_ms)
    return (time, time, ticker, "TECHNOLOGY", price, None)


def values(rows: list[records.Row]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[1:]) for r in rows)


def test_windows_close_on_the_watermark_and_chains_follow(engine: DuckDbEngine) -> None:
    program = sql.compile_program(CODE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    pipe.push(
        "SOURCE_SQL_STREAM_001",
        [row(T0, "QXZ", 40.0), row(T0 + 3_000, "QXZ", 60.0), row(T0 + 9_999, "ABC", 45.0)],
    )
    pipe.push("SOURCE_SQL_STREAM_001", [row(T0 + 10_000, "QXZ", 30.0)])
    received = pipe.drain()
    # The continuous pump's rows come at once, with their input rows' ROWTIME.
    assert values(received["CHEAP"]) == [("ABC", 45.0), ("QXZ", 30.0), ("QXZ", 40.0)]
    assert "COUNTS" not in received

    pipe.advance(T0 + 9_999)  # the first window ends at T0 + 10 s: still open
    assert "COUNTS" not in pipe.drain()
    assert not pipe.closes_a_window(T0 + 9_999)  # the runner's cue to close windows at once
    assert pipe.closes_a_window(T0 + 10_000)
    assert pipe.next_close_ms() == T0 + 10_000  # when the runner's next tick is due
    pipe.advance(T0 + 10_000)
    assert pipe.next_close_ms() == T0 + 20_000  # the window of the T0 + 10 s row
    counts = pipe.drain()["COUNTS"]
    start = records.to_timestamp(T0)
    assert values(counts) == [("ABC", 1, start), ("QXZ", 2, start)]
    assert {r[0] for r in counts} == {records.to_timestamp(T0 + 10_000)}  # ROWTIME: the end

    pipe.push("SOURCE_SQL_STREAM_001", [row(T0 + 5_000, "LATE", 1.0)])  # its window closed
    assert pipe.late_rows == 1
    pipe.advance(T0 + 60_000)
    received = pipe.drain()
    assert values(received["COUNTS"]) == [("QXZ", 1, records.to_timestamp(T0 + 10_000))]
    # The chained pump: the minute's cheapest per ticker, from the CHEAP stream.
    assert values(received["CHEAP_PER_MINUTE"]) == [("ABC", 45.0), ("LATE", 1.0), ("QXZ", 30.0)]
    assert pipe.open_windows() == {"COUNT_PUMP": {}, "MINUTE_PUMP": {}}


def test_a_window_is_emitted_once(engine: DuckDbEngine) -> None:
    program = sql.compile_program(CODE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    pipe.push("SOURCE_SQL_STREAM_001", [row(T0, "QXZ", 70.0)])
    pipe.advance(T0 + 10_000)
    assert len(pipe.drain()["COUNTS"]) == 1
    pipe.advance(T0 + 10_000)
    pipe.advance(T0 + 5_000)  # a watermark never goes back
    assert pipe.drain() == {}
    assert pipe.watermark_ms == T0 + 10_000


def test_insert_into_named_columns(engine: DuckDbEngine) -> None:
    program = sql.compile_program(
        'CREATE OR REPLACE STREAM "D" (A VARCHAR(4), B DOUBLE, C INTEGER);\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D" (C, A)\n'
        'SELECT STREAM 7, TICKER_SYMBOL FROM "SOURCE_SQL_STREAM_001";'
    )
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    pipe.push("SOURCE_SQL_STREAM_001", [row(T0, "QXZ", 1.0)])
    assert values(pipe.drain()["D"]) == [("QXZ", None, 7)]


def test_sliding_windows(engine: DuckDbEngine) -> None:
    """RANGE and ROWS windows from the guide's sliding-window example: every row is emitted at
    once, computed over its partition's rows in the range before it, across batches."""
    program = sql.compile_program(
        'CREATE OR REPLACE STREAM "AVGS" (TICKER_SYMBOL VARCHAR(4), AVG_PRICE DOUBLE, N INTEGER);\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "AVGS"\n'
        "SELECT STREAM TICKER_SYMBOL, AVG(PRICE) OVER W, COUNT(*) OVER W\n"
        'FROM "SOURCE_SQL_STREAM_001"\n'
        "WINDOW W AS (PARTITION BY TICKER_SYMBOL RANGE INTERVAL '10' SECOND PRECEDING);\n"
        'CREATE OR REPLACE STREAM "LAST2" (TICKER_SYMBOL VARCHAR(4), TOTAL DOUBLE);\n'
        'CREATE OR REPLACE PUMP "P2" AS INSERT INTO "LAST2"\n'
        "SELECT STREAM TICKER_SYMBOL,\n"
        "       SUM(PRICE) OVER (PARTITION BY TICKER_SYMBOL ROWS 1 PRECEDING)\n"
        'FROM "SOURCE_SQL_STREAM_001";'
    )
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    pipe.push(
        "SOURCE_SQL_STREAM_001",
        [row(T0, "A", 10.0), row(T0 + 1_000, "A", 20.0), row(T0 + 2_000, "B", 5.0)],
    )
    received = pipe.drain()
    assert [r[1:] for r in received["AVGS"]] == [("A", 10.0, 1), ("A", 15.0, 2), ("B", 5.0, 1)]
    assert [r[1:] for r in received["LAST2"]] == [("A", 10.0), ("A", 30.0), ("B", 5.0)]
    pipe.push("SOURCE_SQL_STREAM_001", [row(T0 + 10_500, "A", 30.0)])
    received = pipe.drain()
    # T0's row is out of the 10-second range; ROWS 1 PRECEDING is the last row before.
    assert [r[1:] for r in received["AVGS"]] == [("A", 25.0, 2)]
    assert [r[1:] for r in received["LAST2"]] == [("A", 50.0)]
    assert received["AVGS"][0][0] == records.to_timestamp(T0 + 10_500)


@given(st.integers(min_value=-(10**15), max_value=10**15), st.integers(1, 10**8))
def test_window_start_holds_the_time(time_ms: int, size_ms: int) -> None:
    start = windows.window_start(time_ms, size_ms)
    assert start <= time_ms < start + size_ms
    assert start % size_ms == 0


def test_watermarks() -> None:
    assert (
        windows.next_watermark(0, max_rowtime_ms=5, caught_up=False, now_ms=100, in_flight_ms=10)
        == 5
    )
    assert (
        windows.next_watermark(7, max_rowtime_ms=5, caught_up=False, now_ms=100, in_flight_ms=10)
        == 7
    )
    assert (
        windows.next_watermark(0, max_rowtime_ms=5, caught_up=True, now_ms=100, in_flight_ms=10)
        == 90
    )
    assert windows.closed([0, 10, 20], 10, 20) == [0, 10]
    assert windows.is_late(15, 10, 20) and not windows.is_late(20, 10, 20)


KDA_FUNCTIONS = """
CREATE OR REPLACE STREAM "OUT" (
    SECTOR_NAME VARCHAR(16), LAG_MS BIGINT, MINUTE_TEXT VARCHAR(16), PARSED TIMESTAMP,
    DAY_TEXT VARCHAR(10), ORDERED TIMESTAMP);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "OUT"
  SELECT STREAM INITCAP(SECTOR),
         TSDIFF(ROWTIME, EVENT_TIME),
         TIMESTAMP_TO_CHAR('yyyy-MM-dd HH:mm', EVENT_TIME),
         CHAR_TO_TIMESTAMP('dd/MMM/yyyy:HH:mm:ss', '07/Dec/2026:10:11:12'),
         TIMESTAMP_TO_CHAR('dd.MM.yy', ROWTIME),
         MONOTONIC(ROWTIME)
  FROM "SOURCE_SQL_STREAM_001";
"""


def test_kda_functions_duckdb_lacks(engine: DuckDbEngine) -> None:
    """TSDIFF, TIMESTAMP_TO_CHAR / CHAR_TO_TIMESTAMP (Java date patterns), MONOTONIC and
    INITCAP give KDA's values."""
    program = sql.compile_program(KDA_FUNCTIONS)
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    at = records.to_timestamp(T0 + 1_500)
    event = records.to_timestamp(T0)
    pipe.push("SOURCE_SQL_STREAM_001", [(at, at, "QXZ", "health CARE", 1.0, event)])
    (out,) = pipe.drain()["OUT"]
    assert out[1:3] == ("Health Care", 1_500)
    assert out[3] == event.strftime("%Y-%m-%d %H:%M")
    assert out[4] == datetime(2026, 12, 7, 10, 11, 12)
    assert out[5] == at.strftime("%d.%m.%y")
    assert out[6] == at


LOG_PARSING = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (match1 VARCHAR(1024), match2 VARCHAR(1024));
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM T.REC.COLUMN1, T.REC.COLUMN2
    FROM
         (SELECT STREAM SECTOR,
             REGEX_LOG_PARSE(SECTOR, '.*([E].).*([R].*)') AS REC
             FROM SOURCE_SQL_STREAM_001) AS T;
CREATE OR REPLACE STREAM "FIELDS" (NAME VARCHAR(8), N INTEGER, CODE VARCHAR(3), REST INTEGER);
CREATE OR REPLACE PUMP "FIELDS_PUMP" AS INSERT INTO "FIELDS"
    SELECT STREAM V.P.NAME, V.P.N, V.F.CODE, V.F.REST
    FROM (SELECT STREAM
              VARIABLE_COLUMN_LOG_PARSE(SECTOR,
                  'NAME TYPE VARCHAR(8), N TYPE INTEGER NOT NULL', '-') AS P,
              FIXED_COLUMN_LOG_PARSE(SECTOR,
                  'CODE TYPE VARCHAR(3) START 0 FOR 3, REST TYPE INTEGER START 4') AS F
          FROM SOURCE_SQL_STREAM_001) AS V;
"""


def test_log_parsing_functions(engine: DuckDbEngine) -> None:
    """The SQL reference's REGEX_LOG_PARSE example (a FROM subquery over the source stream,
    its row's fields read by name), VARIABLE_COLUMN_LOG_PARSE and FIXED_COLUMN_LOG_PARSE with
    typed columns; a text that does not match gives NULLs, and rows keep their ROWTIME."""
    program = sql.compile_program(LOG_PARSING)
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    at = records.to_timestamp(T0 + 1_500)
    sectors = ["ENERGY", "TECHNOLOGY", "ABC-12-34", "ABC 12"]
    pipe.push("SOURCE_SQL_STREAM_001", [(at, at, "QXZ", sector, 1.0, None) for sector in sectors])
    received = pipe.drain()
    assert received["DESTINATION_SQL_STREAM"] == [
        (at, "EN", "RGY"),
        (at, None, None),  # no R after an E and a character: no match
        (at, None, None),
        (at, None, None),
    ]
    assert received["FIELDS"] == [
        (at, "ENERGY", None, "ENE", None),  # a missing field; "RGY" is no INTEGER
        (at, "TECHNOLOGY", None, "TEC", None),
        (at, "ABC", 12, "ABC", None),  # the third field is ignored; "12-34" is no INTEGER
        (at, "ABC 12", None, "ABC", 12),
    ]


STAGGER = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    TICKER_SYMBOL VARCHAR(4), EVENT_MINUTE TIMESTAMP, TICKER_COUNT INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM TICKER_SYMBOL, FLOOR(EVENT_TIME TO MINUTE), COUNT(*) AS TICKER_COUNT
  FROM "SOURCE_SQL_STREAM_001"
  WINDOWED BY STAGGER (
      PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL RANGE INTERVAL '1' MINUTE);
"""


def test_stagger_windows_open_per_key_and_close_a_range_later(engine: DuckDbEngine) -> None:
    """The guide's stagger window: a window per (minute, ticker) opened by its first row and
    closed a minute later, emitted with the close time as ROWTIME; a row of the same key after
    the close opens the next window; a row for a closed window is late."""
    program = sql.compile_program(STAGGER)
    DuckDbChecker().check(program, SOURCE)
    minute = T0 - T0 % 60_000 + 60_000
    event = records.to_timestamp(minute)

    def at(offset_ms: int, ticker: str) -> records.Row:
        time = records.to_timestamp(minute + offset_ms)
        return (time, time, ticker, "TECHNOLOGY", 1.0, event)

    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    pipe.push("SOURCE_SQL_STREAM_001", [at(1_000, "QXZ"), at(20_000, "QXZ"), at(30_000, "ABC")])
    pipe.drain()
    pipe.advance(minute + 60_999)
    assert pipe.drain().get("DESTINATION_SQL_STREAM", []) == []  # not a minute yet
    pipe.advance(minute + 61_000)
    assert pipe.drain()["DESTINATION_SQL_STREAM"] == [
        (records.to_timestamp(minute + 61_000), "QXZ", event, 2)
    ]
    pipe.push("SOURCE_SQL_STREAM_001", [at(65_000, "QXZ"), at(0, "QXZ")])  # the second: late
    pipe.drain()
    assert pipe.late_rows == 1
    pipe.advance(minute + 125_000)
    assert pipe.drain()["DESTINATION_SQL_STREAM"] == [
        (records.to_timestamp(minute + 90_000), "ABC", event, 1),
        (records.to_timestamp(minute + 125_000), "QXZ", event, 1),
    ]


TOP_K = """
CREATE OR REPLACE STREAM DESTINATION_SQL_STREAM (
  "TICKER_SYMBOL" VARCHAR(4),
  "MOST_FREQUENT_VALUES" BIGINT
);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
    INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM *
        FROM TABLE (TOP_K_ITEMS_TUMBLING(
            CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"),
            'TICKER_SYMBOL',         -- name of column in single quotes
            2,                       -- number of the most frequently occurring values
            60                       -- tumbling window size in seconds
            )
        );
CREATE OR REPLACE STREAM "DISTINCT_TICKERS" ("NUMBER_OF_DISTINCT_ITEMS" BIGINT);
CREATE OR REPLACE PUMP "DISTINCT_PUMP" AS INSERT INTO "DISTINCT_TICKERS"
    SELECT STREAM * FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(
        CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001" WHERE PRICE < 100),
        'TICKER_SYMBOL', 60));
"""


def test_the_tumbling_item_functions_count_per_window(engine: DuckDbEngine) -> None:
    """The SQL reference's TOP_K_ITEMS_TUMBLING example (K 2 here) and
    COUNT_DISTINCT_ITEMS_TUMBLING: per 60-second tumbling window of the cursor's rows, the K
    most frequent tickers with their counts, and the number of distinct tickers, emitted when
    the window closes (ROWTIME its end)."""
    program = sql.compile_program(TOP_K)
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    minute = T0 - T0 % 60_000 + 60_000
    tickers = ["QXZ", "ABC", "QXZ", "XYZ", "QXZ", "ABC", "NFLX"]
    pipe.push(
        "SOURCE_SQL_STREAM_001",
        [
            row(minute + i * 1_000, ticker, 150.0 if ticker == "NFLX" else 50.0)
            for i, ticker in enumerate(tickers)
        ],
    )
    pipe.push("SOURCE_SQL_STREAM_001", [row(minute + 61_000, "ABC", 10.0)])
    pipe.advance(minute + 60_000)
    received = pipe.drain()
    end = records.to_timestamp(minute + 60_000)
    assert received["DESTINATION_SQL_STREAM"] == [(end, "QXZ", 3), (end, "ABC", 2)]
    assert received["DISTINCT_TICKERS"] == [(end, 3)]  # NFLX's row is filtered out
    pipe.advance(minute + 120_000)
    received = pipe.drain()
    end = records.to_timestamp(minute + 120_000)
    assert received["DESTINATION_SQL_STREAM"] == [(end, "ABC", 1)]
    assert received["DISTINCT_TICKERS"] == [(end, 1)]


@pytest.mark.parametrize(
    ("call", "refusal"),
    [
        ("TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM S), 'C', 5, 3601)", "windowSize 3601"),
        ("TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM S), 'C', 0, 60)", "with K 0"),
        ("TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM S), C, 5, 60)", "this TOP_K_ITEMS"),
        ("COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM S), 'C', 5, 60)", "this COUNT"),
    ],
)
def test_a_tumbling_item_function_call_kda_refuses_is_refused(call: str, refusal: str) -> None:
    code = f"""CREATE OR REPLACE STREAM D (C VARCHAR(4), N BIGINT);
CREATE OR REPLACE PUMP P AS INSERT INTO D
  SELECT STREAM * FROM TABLE({call});"""
    with pytest.raises(ShoalError) as raised:
        sql.compile_program(code)
    assert raised.value.code is ErrorCode.CODE_VALIDATION
    assert "Line 3" in str(raised.value) and refusal in str(raised.value)


JOIN_CODE = """
CREATE OR REPLACE STREAM "ORDERS" (TICKER VARCHAR(4), AMOUNT DOUBLE);
CREATE OR REPLACE PUMP "ORDERS_PUMP" AS INSERT INTO "ORDERS"
  SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE SECTOR = 'ORDER';
CREATE OR REPLACE STREAM "TRADES" (TICKER VARCHAR(4), AMOUNT DOUBLE);
CREATE OR REPLACE PUMP "TRADES_PUMP" AS INSERT INTO "TRADES"
  SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE SECTOR = 'TRADE';
CREATE OR REPLACE STREAM "MATCHED" (ORDER_TIME TIMESTAMP, TICKER VARCHAR(4),
                                    ORDER_AMOUNT DOUBLE, TRADE_AMOUNT DOUBLE);
CREATE OR REPLACE PUMP "JOIN_PUMP" AS INSERT INTO "MATCHED"
  SELECT STREAM ROWTIME, o.TICKER, o.AMOUNT AS ORDER_AMOUNT, t.AMOUNT AS TRADE_AMOUNT
  FROM "ORDERS" AS o
  JOIN "TRADES" OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS t
  ON o.TICKER = t.TICKER;
"""


def test_an_outer_stream_to_stream_join(engine: DuckDbEngine) -> None:
    """LEFT JOIN: an order no trade matched comes out with NULL trade columns once its window
    passed (the watermark), at the window's end as ROWTIME; a matched order only as its pair
    (a WHERE on the pair does not make it unmatched); FULL JOIN: unmatched trades too."""
    left_join = JOIN_CODE.replace('  JOIN "TRADES"', '  LEFT OUTER JOIN "TRADES"').replace(
        "ON o.TICKER = t.TICKER;", "ON o.TICKER = t.TICKER WHERE t.AMOUNT IS NULL OR t.AMOUNT > 5;"
    )
    program = sql.compile_program(left_join)
    assert program.pumps[-1].join is not None
    assert program.pumps[-1].join.kind == "LEFT"
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    source = "SOURCE_SQL_STREAM_001"
    pipe.push(source, [sector_row(T0, "ABC", "TRADE", 10.0), sector_row(T0, "QRS", "TRADE", 1.0)])
    pipe.push(source, [sector_row(T0 + 5_000, "ABC", "ORDER", 11.0)])  # matched
    pipe.push(source, [sector_row(T0 + 6_000, "XYZ", "ORDER", 2.0)])  # no trade
    pipe.push(source, [sector_row(T0 + 7_000, "QRS", "ORDER", 3.0)])  # matched, WHERE drops it
    assert [r[2:] for r in pipe.drain()["MATCHED"]] == [("ABC", 11.0, 10.0)]
    pipe.advance(T0 + 6_000)  # the XYZ order's window (its own instant) is still open
    assert "MATCHED" not in pipe.drain()
    pipe.advance(T0 + 8_000)
    assert pipe.drain()["MATCHED"] == [
        (records.to_timestamp(T0 + 6_000), records.to_timestamp(T0 + 6_000), "XYZ", 2.0, None)
    ]

    full = sql.compile_program(JOIN_CODE.replace('  JOIN "TRADES"', '  FULL JOIN "TRADES"'))
    pipe = pipeline.Pipeline(full, pipeline.source_streams(SOURCE), engine)
    pipe.push(source, [sector_row(T0, "ABC", "TRADE", 10.0)])
    pipe.advance(T0 + 61_000)  # the trade's minute passed with no order
    unmatched = pipe.drain()["MATCHED"]
    window_end = records.to_timestamp(T0 + 60_000)
    assert unmatched == [(window_end, window_end, None, None, 10.0)]


def test_a_stream_to_stream_join_over_the_last_rows(engine: DuckDbEngine) -> None:
    """OVER (ROWS 2 PRECEDING) on the joined stream: an order pairs with its ticker's trades
    among the last two trades, however old."""
    program = sql.compile_program(
        JOIN_CODE.replace("RANGE INTERVAL '1' MINUTE PRECEDING", "ROWS 2 PRECEDING")
    )
    assert program.pumps[-1].join == sql.StreamJoin(
        right="TRADES", left_range_ms=0, right_range_ms=0, right_rows=2
    )
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    source = "SOURCE_SQL_STREAM_001"
    trades = [("ABC", 1.0), ("XYZ", 2.0), ("ABC", 3.0)]  # the first ABC trade drops out
    pipe.push(source, [sector_row(T0 + i, t, "TRADE", a) for i, (t, a) in enumerate(trades)])
    pipe.advance(T0 + 3_600_000)  # an hour later: a ROWS window keeps its rows
    pipe.push(source, [sector_row(T0 + 3_600_000, "ABC", "ORDER", 9.0)])
    assert [r[2:] for r in pipe.drain()["MATCHED"]] == [("ABC", 9.0, 3.0)]


def sector_row(at_ms: int, ticker: str, sector: str, price: float) -> records.Row:
    time = records.to_timestamp(at_ms)
    return (time, time, ticker, sector, price, None)


def test_a_windowed_stream_to_stream_join(engine: DuckDbEngine) -> None:
    """Each order pairs with the trades of its ticker in the minute before it (the windowed
    side); a later trade pairs only with an order of its own ROWTIME (the side without a
    window is its current row); the pair's ROWTIME is the later of the two; history beyond
    the window is dropped once the watermark passes it."""
    program = sql.compile_program(JOIN_CODE)
    join = program.pumps[-1].join
    assert join == sql.StreamJoin(right="TRADES", left_range_ms=0, right_range_ms=60_000)
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    source = "SOURCE_SQL_STREAM_001"
    pipe.push(source, [sector_row(T0, "ABC", "TRADE", 10.0), sector_row(T0, "XYZ", "TRADE", 1.0)])
    pipe.push(source, [sector_row(T0 + 30_000, "ABC", "ORDER", 11.0)])  # trade 30 s before
    pipe.push(source, [sector_row(T0 + 61_000, "XYZ", "ORDER", 2.0)])  # trade 61 s before
    pipe.push(source, [sector_row(T0 + 62_000, "ABC", "TRADE", 12.0)])  # after the order
    same_time = [sector_row(T0 + 70_000, "QRS", "ORDER", 3.0)]
    pipe.push(source, same_time)
    pipe.push(source, [sector_row(T0 + 70_000, "QRS", "TRADE", 4.0)])  # the order's instant
    matched = pipe.drain()["MATCHED"]
    assert [(records.from_timestamp(r[0]), *r[1:]) for r in matched] == [
        (T0 + 30_000, records.to_timestamp(T0 + 30_000), "ABC", 11.0, 10.0),
        (T0 + 70_000, records.to_timestamp(T0 + 70_000), "QRS", 3.0, 4.0),
    ]
    pipe.advance(T0 + 140_000)  # every kept row is now out of its window
    pipe.push(source, [sector_row(T0 + 140_000, "ABC", "ORDER", 5.0)])
    assert "MATCHED" not in pipe.drain()
    kept_time = records.to_timestamp(T0 + 140_000)
    left, right = pipe._joined["JOIN_PUMP"]
    assert (left.rows, right.rows) == ([(kept_time, "ABC", 5.0)], [])


ANOMALY_CODE = """
CREATE OR REPLACE STREAM "TEMP_STREAM" ("TICKER_SYMBOL" VARCHAR(4), "SECTOR" VARCHAR(16),
    "PRICE" REAL, "ANOMALY_SCORE" DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "TEMP_STREAM"
SELECT STREAM "TICKER_SYMBOL", "SECTOR", "PRICE", "ANOMALY_SCORE"
FROM TABLE(RANDOM_CUT_FOREST(
    CURSOR(SELECT STREAM "TICKER_SYMBOL", "SECTOR", "PRICE" FROM "SOURCE_SQL_STREAM_001"),
    50, 64));
CREATE OR REPLACE STREAM "EXPLAINED" ("PRICE" REAL, "ANOMALY_SCORE" DOUBLE,
    "ANOMALY_EXPLANATION" VARCHAR(512));
CREATE OR REPLACE PUMP "EXPLAIN_PUMP" AS INSERT INTO "EXPLAINED"
SELECT STREAM "PRICE", "ANOMALY_SCORE", "ANOMALY_EXPLANATION"
FROM TABLE(RANDOM_CUT_FOREST_WITH_EXPLANATION(
    CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 100, 256, 100000, 1, true))
WHERE "SECTOR" = 'TECHNOLOGY';
"""


def test_random_cut_forest_scores_a_planted_anomaly(engine: DuckDbEngine) -> None:
    """The reference's anomaly-detection pumps: every row gets ANOMALY_SCORE (0 while the
    forest warms up); a price far from the background scores far above every background row;
    the explanation names the numeric column (PRICE) with its direction and strength. A forest
    gives the same scores under the same seed."""

    def run() -> dict[str, list[records.Row]]:
        program = sql.compile_program(ANOMALY_CODE)
        DuckDbChecker().check(program, SOURCE)
        pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
        noise = [50.0 + (i * 37 % 11) / 10 for i in range(300)]
        noise[250] = 95.0  # the planted anomaly
        rows = [row(T0 + i * 100, "QXZ", price) for i, price in enumerate(noise)]
        for start in range(0, len(rows), 50):  # micro-batches
            pipe.push("SOURCE_SQL_STREAM_001", rows[start : start + 50])
        return pipe.drain()

    drained = run()
    scored = drained["TEMP_STREAM"]
    assert len(scored) == 300
    assert scored[0][1:] == ("QXZ", "TECHNOLOGY", 50.0, 0.0)
    background = [r[4] for i, r in enumerate(scored) if i != 250]
    anomaly_score = scored[250][4]
    assert anomaly_score > 3 * max(background)
    explained = drained["EXPLAINED"]
    assert len(explained) == 300
    assert explained[250][2] > 3 * max(r[2] for i, r in enumerate(explained) if i != 250)
    explanation = json.loads(explained[250][3])
    assert list(explanation) == ["PRICE"]  # the one numeric column (times are not numeric)
    assert explanation["PRICE"]["DIRECTION"] == "HIGH"
    assert float(explanation["PRICE"]["ATTRIBUTION_SCORE"]) == pytest.approx(
        explained[250][2], abs=1e-4
    )
    assert float(explanation["PRICE"]["STRENGTH"]) > 0.5 * explained[250][2]

    def scores(seed: int) -> list[tuple[Any, ...]]:  # a small forest, the same rows
        settings = anomaly.parameters("RANDOM_CUT_FOREST", [10, 16])
        detector = anomaly.AnomalyDetector(settings, [("X", "DOUBLE")], seed=seed)
        return [detector.score((float(i % 7),)) for i in range(60)]

    assert scores(7) == scores(7)  # deterministic under a seed
    assert scores(7) != scores(8)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            "RANDOM_CUT_FOREST(CURSOR(SELECT STREAM PRICE FROM SOURCE_SQL_STREAM_001), 0)",
            "numberOfTrees must be an integer from 1 to 1000",
        ),
        (
            "RANDOM_CUT_FOREST(CURSOR(SELECT STREAM PRICE FROM SOURCE_SQL_STREAM_001), "
            "100, 256, 100000, 1, true)",
            "takes at most 4 arguments after its CURSOR",
        ),
        (
            "RANDOM_CUT_FOREST(CURSOR(SELECT STREAM SECTOR FROM SOURCE_SQL_STREAM_001))",
            "the CURSOR has no numeric column to score",
        ),
        (
            "RANDOM_CUT_FOREST(CURSOR(SELECT STREAM CAST(PRICE AS DECIMAL(8, 2)) AS P "
            "FROM SOURCE_SQL_STREAM_001))",
            "column P is a DECIMAL; cast it to DOUBLE",
        ),
    ],
)
def test_random_cut_forest_refusals(call: str, expected: str) -> None:
    code = (
        'CREATE OR REPLACE STREAM "D" (S DOUBLE);\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
        f"SELECT STREAM ANOMALY_SCORE FROM TABLE({call});"
    )
    with pytest.raises(ShoalError) as raised:
        DuckDbChecker().check(sql.compile_program(code), SOURCE)
    assert raised.value.code is ErrorCode.CODE_VALIDATION
    assert expected in raised.value.message


def test_hotspots_find_the_dense_region_of_the_window() -> None:
    """A dense cluster among spread points is one hotspot (its bounds and density); border
    points join it; it leaves the result once its rows leave the window."""
    settings = hotspots.parameters([100, 0.5, 20])
    detector = hotspots.HotspotDetector(settings, [("LABEL", "VARCHAR"), ("X", "DOUBLE")])
    results = [detector.score(("spread", 100.0 + 3 * i))[0] for i in range(40)]
    assert json.loads(results[-1]) == {"hotspots": []}
    cluster = [9.8 + (i % 5) / 10 for i in range(59)]  # 9.8 .. 10.2
    results = [detector.score(("dense", x))[0] for x in [*cluster, 10.6]]  # 10.6: a border point
    (hotspot,) = json.loads(results[-1])["hotspots"]
    assert hotspot == {"density": pytest.approx(60 / 0.8), "maxValues": [10.6], "minValues": [9.8]}
    results = [detector.score(("spread", 500.0 + 3 * i))[0] for i in range(100)]
    assert json.loads(results[-1]) == {"hotspots": []}  # the cluster left the window


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([99, 0.5, 20], "windowSize must be an integer from 100 to 1000"),
        ([100, 0, 20], "scanRadius must be a number greater than 0"),
        ([100, 0.5, 101], "minimumNumberOfPointsInAHotspot must be from 2 to windowSize"),
        ([100, 0.5], "HOTSPOTS takes windowSize, scanRadius and"),
    ],
)
def test_hotspots_parameters(arguments: list[float], expected: str) -> None:
    with pytest.raises(anomaly.AnomalyError, match=expected):
        hotspots.parameters(arguments)


MORE_LOG_PARSING = """
CREATE OR REPLACE STREAM "WEBLOG" (HOST VARCHAR(64), LOG_USER VARCHAR(16), TIME_DATES VARCHAR(32),
    REQUEST VARCHAR(256), STATUS INTEGER, BYTES BIGINT);
CREATE OR REPLACE PUMP "WEBLOG_PUMP" AS INSERT INTO "WEBLOG"
  SELECT STREAM l.r.COLUMN1, l.r.COLUMN3, l.r.COLUMN4, l.r.COLUMN5, l.r.COLUMN6, l.r.COLUMN7
  FROM (SELECT STREAM W3C_LOG_PARSE(SECTOR, 'COMMON') AS r FROM "SOURCE_SQL_STREAM_001") AS l;
CREATE OR REPLACE STREAM "AGENTS" (VHOST VARCHAR(64), AGENT VARCHAR(256), METHOD VARCHAR(8));
CREATE OR REPLACE PUMP "AGENTS_PUMP" AS INSERT INTO "AGENTS"
  SELECT STREAM W3C_LOG_PARSE(SECTOR, 'COMMON WITH VHOST').COLUMN1,
         W3C_LOG_PARSE(SECTOR, 'NCSA EXTENDED').COLUMN9,
         W3C_LOG_PARSE(SECTOR, '%m %U').COLUMN1
  FROM "SOURCE_SQL_STREAM_001";
CREATE OR REPLACE STREAM "SYSLOG" (LOGGED TIMESTAMP, MESSAGE VARCHAR(256));
CREATE OR REPLACE PUMP "SYSLOG_PUMP" AS INSERT INTO "SYSLOG"
  SELECT STREAM SYS_LOG_PARSE(SECTOR).COLUMN1, SYS_LOG_PARSE(SECTOR).COLUMN2
  FROM "SOURCE_SQL_STREAM_001";
CREATE OR REPLACE STREAM "FAST" (KEY VARCHAR(64), VALUE VARCHAR(64));
CREATE OR REPLACE PUMP "FAST_PUMP" AS INSERT INTO "FAST"
  SELECT STREAM T.REC.COLUMN1, T.REC.COLUMN2 FROM
    (SELECT STREAM FAST_REGEX_LOG_PARSER(SECTOR, '(.*)"="(.*)') AS REC
     FROM "SOURCE_SQL_STREAM_001") AS T;
"""


def test_w3c_sys_log_and_fast_regex_parsing(engine: DuckDbEngine) -> None:
    """The reference's W3C_LOG_PARSE COMMON example lines (and a COMMON WITH VHOST, an NCSA
    EXTENDED and a custom format), SYS_LOG_PARSE's timestamp and text, and
    FAST_REGEX_LOG_PARSER's lazy groups (the first '=' splits); other lines give NULLs."""
    program = sql.compile_program(MORE_LOG_PARSING)
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    at = records.to_timestamp(T0)
    lines = [
        '192.168.254.30 - John [24/May/2004:22:01:02 -0700] "GET /icons/apache_pb.gif HTTP/1.1"'
        " 304 0",
        'www.example.com 10.0.0.1 - - [24/May/2004:22:01:03 -0700] "GET / HTTP/1.1" 200 -',
        '10.0.0.2 - - [24/May/2004:22:01:04 -0700] "GET /a HTTP/1.1" 200 12 "http://r/" '
        '"Mozilla/5.0 (X11; Linux)"',
        "Dec  6 20:01:02 myhost sshd[42]: Accepted key",
        "key=a=b",
    ]
    pipe.push("SOURCE_SQL_STREAM_001", [(at, at, "QXZ", line, 1.0, None) for line in lines])
    received = pipe.drain()
    assert received["WEBLOG"][0] == (
        at,
        "192.168.254.30",
        "John",
        "[24/May/2004:22:01:02 -0700]",
        "GET /icons/apache_pb.gif HTTP/1.1",
        304,
        0,
    )
    # The NCSA line starts with COMMON's fields but has more: it is not COMMON.
    assert received["WEBLOG"][2][1:] == (None,) * 6
    assert [r[1:] for r in received["AGENTS"]] == [
        (None, None, None),
        ("www.example.com", None, None),
        (None, "Mozilla/5.0 (X11; Linux)", None),
        (None, None, None),
        (None, None, None),
    ]
    year = datetime.now(tz=UTC).year
    assert received["SYSLOG"][3][1:] == (
        datetime(year, 12, 6, 20, 1, 2),
        "myhost sshd[42]: Accepted key",
    )
    assert received["SYSLOG"][0][1:] == (None, None)
    assert [r[1:] for r in received["FAST"]][3:] == [(None, None), ("key", "a=b")]


@pytest.mark.parametrize(
    ("pattern", "line", "columns"),
    [
        # Each expression lazily up to the fixed text after it: the first '=' splits.
        ('(@)"="(@)', "key=a=b", ["key", "a=b"]),
        ('(@)" "(@)" "(@)', "GET /x HTTP/1.1", ["GET", "/x", "HTTP/1.1"]),
        ('([0-9]+)"."([0-9]+)', "12.34", ["12", "34"]),
        # No backtracking: the first group stopped at the first ':', and what follows is not
        # digits; a backtracking matcher would answer ("a:b", "12").
        ('(@)":"([0-9]+)', "a:b:12", None),
        ('(@)":"([0-9]+)', "a:12", ["a", "12"]),
        # A fixed-length group is its own column; the end of the line ends the last group.
        ('("GET"|"PUT")" "(@)', "PUT /y", ["PUT", "/y"]),
        ('(@)"b"', "abab", ["aba"]),
        ("(..)(@)", "x", None),
    ],
)
def test_fast_regex_matches_each_expression_lazily_without_backtracking(
    engine: DuckDbEngine, pattern: str, line: str, columns: list[str] | None
) -> None:
    """KDA's FAST_REGEX_LOG_PARSER evaluation: expressions in turn, each the shortest text
    followed by the fixed-length text after it, never reconsidered; through the engine's
    function as a query calls it."""
    assert log_parsing.fast_regex_groups(line, log_parsing.fast_regex(pattern)) == columns
    call = log_parsing.fast_regex_log_parse("LINE", pattern)
    (row,) = engine._connection.execute(
        f"SELECT {call} FROM (VALUES ($1)) t(LINE)", [line]
    ).fetchall()
    assert row[0] == (
        None if columns is None else {f"COLUMN{i + 1}": c for i, c in enumerate(columns)}
    )


def test_a_pathological_fast_regex_runs_in_linear_time() -> None:
    """Expressions never backtracked into: a pattern that makes a backtracking matcher
    explore every split of the line (exponentially many) fails at once here."""
    pattern = log_parsing.fast_regex('(@)(@)(@)(@)(@)(@)(@)(@)"!"')
    assert log_parsing.fast_regex_groups("a" * 5_000, pattern) is None


def test_a_resume_counts_only_output_rows_written_past_the_recorded_marks() -> None:
    """An output record's partition key is its row key and the position that produced it: a
    batch's shard and last record, or the watermark that closed its windows. A resumed
    application counts (to skip their replay) only the rows past the recorded marks; a key
    without a position (an older release's) counts, another producer's record does not."""
    digest = "0123456789abcdef0123456789abcdef"
    marks = {"shardId-000000000000": "49600"}
    assert runner._past_the_marks(f"{digest}:c:shardId-000000000000:49600", marks, 0) is None
    assert runner._past_the_marks(f"{digest}:c:shardId-000000000000:49601", marks, 0) == digest
    assert runner._past_the_marks(f"{digest}:c:shardId-000000000001:1", marks, 0) == digest
    assert runner._past_the_marks(f"{digest}:w:60000", marks, 60_000) is None
    assert runner._past_the_marks(f"{digest}:w:61000", marks, 60_000) == digest
    assert runner._past_the_marks(digest, marks, 60_000) == digest
    assert runner._past_the_marks("a-producers-key", marks, 0) is None
    assert runner._past_the_marks(f"{digest}:w:soon", marks, 0) is None


# The guide's "Creating Throttled Alerts" (its code, whitespace aside): a sliding window inside
# a FROM subquery, filtered outside it.
THROTTLED_ALERTS = """
CREATE OR REPLACE STREAM "CHANGE_STREAM" (ticker_symbol VARCHAR(4), sector VARCHAR(12),
                                          change DOUBLE, price DOUBLE);
CREATE OR REPLACE PUMP "change_pump" AS INSERT INTO "CHANGE_STREAM"
  SELECT STREAM ticker_symbol, sector, change, price FROM "SOURCE_SQL_STREAM_001"
  WHERE (ABS(Change / (Price - Change)) * 100) > 1;
CREATE OR REPLACE STREAM TRIGGER_COUNT_STREAM (
  ticker_symbol VARCHAR(4),
  change REAL,
  trigger_count INTEGER);
CREATE OR REPLACE PUMP trigger_count_pump AS INSERT INTO TRIGGER_COUNT_STREAM
SELECT STREAM ticker_symbol, change, trigger_count
FROM (
    SELECT STREAM ticker_symbol, change, COUNT(*) OVER W1 as trigger_count
    FROM "CHANGE_STREAM"
    --window to perform aggregations over last minute to keep track of triggers
    WINDOW W1 AS (PARTITION BY ticker_symbol RANGE INTERVAL '1' MINUTE PRECEDING)
)
WHERE trigger_count >= {limit};
"""

TICKER_SOURCE = [
    {
        "NamePrefix": "SOURCE_SQL_STREAM",
        "InAppStreamNames": ["SOURCE_SQL_STREAM_001"],
        "InputSchema": {
            "RecordFormat": {"RecordFormatType": "JSON"},
            "RecordColumns": [
                {"Name": "TICKER_SYMBOL", "Mapping": "$.TICKER_SYMBOL", "SqlType": "VARCHAR(4)"},
                {"Name": "SECTOR", "Mapping": "$.SECTOR", "SqlType": "VARCHAR(12)"},
                {"Name": "CHANGE", "Mapping": "$.CHANGE", "SqlType": "DOUBLE"},
                {"Name": "PRICE", "Mapping": "$.PRICE", "SqlType": "DOUBLE"},
            ],
        },
    }
]


def ticker_row(at_ms: int, ticker: str, change: float, price: float) -> records.Row:
    time = records.to_timestamp(at_ms)
    return (time, time, ticker, "TECHNOLOGY", change, price)


@pytest.mark.parametrize("limit", [1, 2])
def test_the_throttled_alerts_example_filters_a_sliding_window_in_a_subquery(
    engine: DuckDbEngine, limit: int
) -> None:
    """Each change above 1 % is counted over its ticker's changes of the minute before it
    (across batches), and only the rows whose count passes the outer WHERE go out: every one
    with the guide's `>= 1`, from the second in a minute with `>= 2`."""
    program = sql.compile_program(THROTTLED_ALERTS.replace("{limit}", str(limit)))
    DuckDbChecker().check(program, TICKER_SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(TICKER_SOURCE), engine)
    pipe.push(
        "SOURCE_SQL_STREAM_001",
        [
            ticker_row(T0, "A", 2.0, 100.0),  # 2.04 %: a trigger
            ticker_row(T0 + 1_000, "A", 0.1, 100.0),  # 0.1 %: not
            ticker_row(T0 + 2_000, "B", 5.0, 50.0),  # a trigger of another ticker
            ticker_row(T0 + 3_000, "A", -3.0, 90.0),  # the second of A in the minute
        ],
    )
    first = [r[1:] for r in pipe.drain()["TRIGGER_COUNT_STREAM"]]
    pipe.push("SOURCE_SQL_STREAM_001", [ticker_row(T0 + 61_000, "A", 4.0, 80.0)])
    second = [r[1:] for r in pipe.drain()["TRIGGER_COUNT_STREAM"]]
    # T0's trigger is out of the minute before T0 + 61 s; T0 + 3 s's is in.
    counted = [("A", 2.0, 1), ("B", 5.0, 1), ("A", -3.0, 2)]
    assert first == [r for r in counted if r[2] >= limit]
    assert second == [("A", 4.0, 2)]


def test_variable_column_log_parse_with_an_escape_and_a_quote_string(
    engine: DuckDbEngine,
) -> None:
    """The reference's escape example (`a\\,b` is the one field `a,b`) and quoted runs, with one
    quote character for both ends and with a begin and an end one."""
    program = sql.compile_program(
        'CREATE OR REPLACE STREAM "PARTS" (A VARCHAR(16), B VARCHAR(16), C VARCHAR(16));\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "PARTS"\n'
        "SELECT STREAM T.F.COLUMN1, T.F.COLUMN2, T.F.COLUMN3 FROM (\n"
        "  SELECT STREAM VARIABLE_COLUMN_LOG_PARSE(SECTOR, 3, ',', '\\', '\"') AS F\n"
        "  FROM SOURCE_SQL_STREAM_001) AS T;\n"
        'CREATE OR REPLACE STREAM "BRACKETED" (A VARCHAR(16), B VARCHAR(16));\n'
        'CREATE OR REPLACE PUMP "P2" AS INSERT INTO "BRACKETED"\n'
        "SELECT STREAM T.F.COLUMN1, T.F.COLUMN2 FROM (\n"
        "  SELECT STREAM VARIABLE_COLUMN_LOG_PARSE(SECTOR, 2, ' ', '', '[]') AS F\n"
        "  FROM SOURCE_SQL_STREAM_001) AS T;"
    )
    DuckDbChecker().check(program, SOURCE)
    pipe = pipeline.Pipeline(program, pipeline.source_streams(SOURCE), engine)
    at = records.to_timestamp(T0)
    texts = ["a,b", "a\\,b,c", '"x,y",z', "[p q] r"]
    pipe.push("SOURCE_SQL_STREAM_001", [(at, at, "QXZ", text, 1.0, None) for text in texts])
    received = pipe.drain()
    assert [r[1:] for r in received["PARTS"]] == [
        ("a", "b", None),
        ("a,b", "c", None),
        ("x,y", "z", None),
        ("[p q] r", None, None),
    ]
    assert [r[1:] for r in received["BRACKETED"]][3] == ("p q", "r")
    assert log_parsing.split_fields(None, ",", "\\", '"') is None
