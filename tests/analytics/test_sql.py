"""The KDA SQL dialect: what compiles into streams and pumps, and what is refused by line and
construct (never accepted and run differently)."""

from __future__ import annotations

import pytest

from broker.analytics import sql
from broker.analytics.duckdb_engine import DuckDbChecker
from broker.errors import ErrorCode, ShoalError

SOURCE = [
    {
        "NamePrefix": "SOURCE_SQL_STREAM",
        "InAppStreamNames": ["SOURCE_SQL_STREAM_001"],
        "InputSchema": {
            "RecordFormat": {"RecordFormatType": "JSON"},
            "RecordColumns": [
                {"Name": "TICKER_SYMBOL", "Mapping": "$.TICKER_SYMBOL", "SqlType": "VARCHAR(4)"},
                {"Name": "SECTOR", "Mapping": "$.SECTOR", "SqlType": "VARCHAR(16)"},
                {"Name": "PRICE", "Mapping": "$.PRICE", "SqlType": "REAL"},
                {"Name": "EVENT_TIME", "Mapping": "$.EVENT_TIME", "SqlType": "TIMESTAMP"},
            ],
        },
    }
]


def refusal(code: str) -> str:
    with pytest.raises(ShoalError) as raised:
        DuckDbChecker().check(sql.compile_program(code), SOURCE)
    assert raised.value.code is ErrorCode.CODE_VALIDATION
    return raised.value.message


def test_streams_and_pumps() -> None:
    program = sql.compile_program(
        'CREATE OR REPLACE STREAM "DEST" (ticker_symbol VARCHAR(4), "avg" DOUBLE);\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST" (ticker_symbol, "avg")\n'
        "SELECT STREAM ticker_symbol, AVG(price) FROM SOURCE_SQL_STREAM_001\n"
        "GROUP BY ticker_symbol, FLOOR(SOURCE_SQL_STREAM_001.ROWTIME TO MINUTE);"
    )
    (stream,) = program.streams
    assert stream.name == "DEST"  # quoted: kept; unquoted columns: upper-cased, quoted kept
    assert [c.name for c in stream.columns] == ["ROWTIME", "TICKER_SYMBOL", "avg"]
    assert [c.sql_type for c in stream.columns] == ["TIMESTAMP", "VARCHAR(4)", "DOUBLE"]
    (pump,) = program.pumps
    assert (pump.name, pump.source, pump.target) == ("P", "SOURCE_SQL_STREAM_001", "DEST")
    assert pump.target_columns == ("TICKER_SYMBOL", "avg")
    assert pump.window == sql.TumblingWindow(column="ROWTIME", size_ms=60_000)
    DuckDbChecker().check(program, SOURCE)


def test_step_over_an_event_time_column() -> None:
    program = sql.compile_program(
        'CREATE OR REPLACE STREAM "D" (T VARCHAR(4), N INTEGER);\n'
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D" SELECT STREAM TICKER_SYMBOL, COUNT(*)\n'
        'FROM "SOURCE_SQL_STREAM_001"\n'
        "GROUP BY TICKER_SYMBOL, STEP(EVENT_TIME BY INTERVAL '5' MINUTE);"
    )
    assert program.pumps[0].window == sql.TumblingWindow(column="EVENT_TIME", size_ms=300_000)
    DuckDbChecker().check(program, SOURCE)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM COUNT(*) OVER W, SUM(PRICE) OVER (ROWS 3 PRECEDING)\n"
            "FROM SOURCE_SQL_STREAM_001 WINDOW W AS (RANGE INTERVAL '1' MINUTE PRECEDING);",
            "Line 3: Shoal cannot run RANGE and ROWS sliding windows in one query",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM COUNT(*) OVER (PARTITION BY TICKER_SYMBOL\n"
            "  RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND INTERVAL '1' MINUTE FOLLOWING)\n"
            "FROM SOURCE_SQL_STREAM_001;",
            "Line 3: Shoal cannot run the window frame",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM COUNT(*) FROM SOURCE_SQL_STREAM_001;",
            "Line 3: Shoal cannot run an aggregate without GROUP BY a window",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM A FROM SOURCE_SQL_STREAM_001 WHERE PRICE >\n"
            "  (SELECT STREAM MAX(PRICE) FROM SOURCE_SQL_STREAM_001);",
            "Line 4: Shoal cannot run a subquery",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM T.N FROM\n"
            "  (SELECT STREAM COUNT(*) AS N FROM SOURCE_SQL_STREAM_001 GROUP BY SECTOR) AS T;",
            "Line 2: Shoal cannot run a subquery that groups or joins",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM COUNT(*) OVER (RANGE INTERVAL '1' MINUTE PRECEDING) FROM\n"
            "  (SELECT STREAM PRICE FROM SOURCE_SQL_STREAM_001) AS T;",
            "Line 3: Shoal cannot run a sliding window (OVER) over a subquery",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(8));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM FAST_REGEX_LOG_PARSER(SECTOR, '(a)&(b)').COLUMN1\n"
            "FROM SOURCE_SQL_STREAM_001;",
            "Line 3: Shoal cannot run this log-parsing call: '&' in the Fast Regex",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(8));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM W3C_LOG_PARSE(SECTOR, 'NO FORMAT').COLUMN1 FROM SOURCE_SQL_STREAM_001;",
            "Line 3: Shoal cannot run this log-parsing call: the format 'NO FORMAT' has no "
            "specifier",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(8));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM\n"
            "  REGEX_LOG_PARSE(SECTOR, TICKER_SYMBOL).COLUMN1 FROM SOURCE_SQL_STREAM_001;",
            "Line 4: Shoal cannot run this log-parsing call: REGEX_LOG_PARSE needs a literal",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(8));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM FIXED_COLUMN_LOG_PARSE(SECTOR, 'A TYPE INTEGER').A\n"
            "FROM SOURCE_SQL_STREAM_001;",
            "Line 3: Shoal cannot run this log-parsing call: no START in 'A TYPE INTEGER'",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM TICKER_SYMBOL, COUNT(*) FROM SOURCE_SQL_STREAM_001\n"
            "GROUP BY TICKER_SYMBOL;",
            "Line 2: Shoal cannot run GROUP BY without exactly one tumbling window",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM PRICE FROM SOURCE_SQL_STREAM_001\n"
            "  WINDOWED BY STAGGER (RANGE INTERVAL '1' MINUTE);",
            "Line 4: Shoal cannot run a stagger window without PARTITION BY",
        ),
        (
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "NOWHERE"\n'
            "SELECT STREAM PRICE FROM SOURCE_SQL_STREAM_001;",
            "Line 1: pump P inserts into NOWHERE, which no CREATE OR REPLACE STREAM defines",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM NO_SUCH_FUNCTION(PRICE) FROM SOURCE_SQL_STREAM_001;",
            "Line 2: pump P: Catalog Error: Scalar Function with name no_such_function",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM PRICE FROM OTHER_STREAM;",
            "Line 2: pump P reads OTHER_STREAM",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM TICKER_SYMBOL, COUNT(*) FROM SOURCE_SQL_STREAM_001\n"
            "GROUP BY TICKER_SYMBOL, STEP(PRICE BY INTERVAL '1' SECOND);",
            "Line 2: the window of pump P is over PRICE, a REAL; it must be a TIMESTAMP",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(4));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM s.TICKER_SYMBOL FROM SOURCE_SQL_STREAM_001 AS s\n"
            "CROSS JOIN D OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS d;",
            "Line 4: Shoal cannot run a CROSS JOIN of two streams",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(4));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM s.TICKER_SYMBOL FROM SOURCE_SQL_STREAM_001 AS s\n"
            "LEFT JOIN D OVER (ROWS 10 PRECEDING) AS d ON s.SECTOR = d.A;",
            "Line 4: Shoal cannot run a LEFT JOIN with a ROWS window",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(4));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM s.TICKER_SYMBOL\n"
            "FROM SOURCE_SQL_STREAM_001 OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS s\n"
            "JOIN D AS d ON s.SECTOR = d.A;",
            "Line 5: Shoal cannot run a join of stream SOURCE_SQL_STREAM_001 with D without a "
            "window on D",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(4));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM s.TICKER_SYMBOL FROM SOURCE_SQL_STREAM_001 AS s\n"
            "JOIN ELSEWHERE OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS e ON s.SECTOR = e.A;",
            "Line 2: pump P joins ELSEWHERE, which is neither an input's in-application stream",
        ),
        (
            'CREATE OR REPLACE STREAM "D" (A VARCHAR(4));\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM s.TICKER_SYMBOL FROM SOURCE_SQL_STREAM_001 AS s\n"
            "JOIN D AS d ON s.SECTOR = d.A;",
            "Line 2: Shoal cannot run a JOIN of pump P with stream D without a window: write "
            "JOIN D OVER (RANGE INTERVAL",
        ),
        ("CREATE VIEW V AS SELECT 1;", "Line 1: Shoal cannot run CREATE VIEW V AS"),
        (
            'CREATE OR REPLACE STREAM "D" (A INTEGER);\n'
            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
            "SELECT STREAM * FROM SOURCE_SQL_STREAM_001 WHERE ((;",
            "Line 3:",
        ),
    ],
)
def test_refusals_name_line_and_construct(code: str, expected: str) -> None:
    assert expected in refusal(code)


def test_sql_types_of_schemas() -> None:
    assert sql.parse_sql_type("VARCHAR(64)") == "VARCHAR(64)"
    assert sql.parse_sql_type("DECIMAL(8,2)") == "DECIMAL(8, 2)"
    assert sql.parse_sql_type("TIMESTAMP") == "TIMESTAMP"
    with pytest.raises(ShoalError):
        sql.parse_sql_type("NOT A TYPE(")
