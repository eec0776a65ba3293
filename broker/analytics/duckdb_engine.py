"""DuckDB, the embedded engine that runs each pump's query: the one module importing duckdb.

`DuckDbEngine.run` binds a micro-batch of rows as the table `sql.INPUT_TABLE` (one typed list
per column, unnested together: columnar, no per-row statement) and runs the pump's translated
query over it. `check` is the dry run at CreateApplication / UpdateApplication: every pump's
query prepared against an empty table with its source's columns, so an unknown function, a
missing column or a type error is refused then (CodeValidationException with the pump's line),
not found later by a running application.

Not thread-safe: one engine (one connection) per running application, used by one thread at a
time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import duckdb.func

from broker.analytics import anomaly, log_parsing, messages, sql
from broker.analytics.pipeline import reference_tables, scored_columns, source_streams
from broker.analytics.records import Row
from broker.errors import ErrorCode, ShoalError


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDbEngine:
    def __init__(self) -> None:
        self._connection = duckdb.connect(":memory:")
        # sqlglot writes DuckDB lambdas in the arrow form (`x -> ...`, for list functions), which
        # DuckDB 2.0 refuses unless asked to accept it.
        self._connection.execute("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")
        # FAST_REGEX_LOG_PARSER's matcher (KDA's lazy evaluation without backtracking, which
        # RE2 cannot express: atomic groups), called by the SQL `log_parsing` writes.
        self._connection.create_function(
            log_parsing.FAST_REGEX_FUNCTION,
            log_parsing.fast_regex_groups,
            [duckdb.sqltypes.VARCHAR, duckdb.sqltypes.VARCHAR],
            self._connection.list_type(duckdb.sqltypes.VARCHAR),
            null_handling=duckdb.func.SPECIAL,  # it answers NULL for a text it does not match
        )
        # VARIABLE_COLUMN_LOG_PARSE with an escape or quote string (string_split has neither).
        self._connection.create_function(
            log_parsing.SPLIT_FUNCTION,
            log_parsing.split_fields,
            [duckdb.sqltypes.VARCHAR] * 4,
            self._connection.list_type(duckdb.sqltypes.VARCHAR),
            null_handling=duckdb.func.SPECIAL,  # NULL text: NULL
        )

    def close(self) -> None:
        self._connection.close()

    def run(
        self,
        query: str,
        columns: Sequence[sql.Column],
        rows: Sequence[Row],
        joined: tuple[Sequence[sql.Column], Sequence[Row]] | None = None,
    ) -> list[Row]:
        """The query's result rows over `rows` (tuples in `columns`' order), and for a
        stream-to-stream join the right stream's rows `joined` (columns, rows)."""
        self._bind(columns, rows)
        if joined is not None:
            self.load_table(sql.JOIN_TABLE, *joined)
        result: list[Row] = self._connection.execute(query).fetchall()
        return result

    def describe(self, query: str, columns: Sequence[sql.Column]) -> tuple[sql.Column, ...]:
        """The columns (names and engine types) of the query's result over `columns`."""
        self._bind(columns, ())
        description = self._connection.execute(query).description or []
        return tuple(sql.Column(str(column[0]), str(column[1])) for column in description)

    def _bind(self, columns: Sequence[sql.Column], rows: Sequence[Row]) -> None:
        self.load_table(sql.INPUT_TABLE, columns, rows)

    def load_table(self, name: str, columns: Sequence[sql.Column], rows: Sequence[Row]) -> None:
        """(Re)defines the temporary table `name` as `rows` (the batch, or a reference table
        an application's pumps join with)."""
        table = name if name == sql.INPUT_TABLE else _quoted(name)
        if not rows:
            definition = ", ".join(f"{_quoted(c.name)} {c.sql_type}" for c in columns)
            self._connection.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({definition})")
            return
        select = ", ".join(
            f"unnest(${index + 1}::{column.sql_type}[]) AS {_quoted(column.name)}"
            for index, column in enumerate(columns)
        )
        values: list[list[Any]] = [list(values) for values in zip(*rows, strict=True)]
        self._connection.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {select}", values)

    def check(
        self,
        program: sql.Program,
        sources: dict[str, tuple[sql.Column, ...]],
        tables: dict[str, tuple[sql.Column, ...]] | None = None,
    ) -> None:
        """Dry-runs every pump whose source's columns are known (an application's input may
        be added after its code), with its reference tables defined empty."""
        tables = tables or {}
        for name, table_columns in tables.items():
            self.load_table(name, table_columns, ())
        columns = {stream.name: stream.columns for stream in program.streams} | sources
        for pump in program.pumps:
            for table in pump.tables:
                if table in columns:
                    raise ShoalError(
                        ErrorCode.CODE_VALIDATION,
                        messages.stream_join_without_window(
                            line=pump.line, pump=pump.name, table=table
                        ),
                    )
                if table not in tables and sources:
                    raise ShoalError(
                        ErrorCode.CODE_VALIDATION,
                        messages.join_not_reference_table(
                            line=pump.line, pump=pump.name, table=table
                        ),
                    )
            source = columns.get(pump.source)
            joined: tuple[tuple[sql.Column, ...], tuple[Row, ...]] | None = None
            if pump.join is not None and sources:
                right = columns.get(pump.join.right)
                if right is None:
                    raise ShoalError(
                        ErrorCode.CODE_VALIDATION,
                        messages.join_stream_undefined(
                            line=pump.line, pump=pump.name, right=pump.join.right
                        ),
                    )
                joined = (right, ())
            elif pump.join is not None:
                continue  # no input yet: checked again when one is added
            if source is None:
                if not sources:
                    continue  # no input yet: checked again when one is added
                raise ShoalError(
                    ErrorCode.CODE_VALIDATION,
                    messages.pump_source_undefined(
                        line=pump.line, pump=pump.name, source=pump.source
                    ),
                )
            if pump.window is not None:
                _check_window_column(pump, source)
            try:
                if pump.scored is not None:
                    self._check_scored(pump, source)
                    continue
                self.run(pump.query, pump.input_columns(source), (), joined)
                if pump.join is not None and joined is not None:
                    _check_outer_join(self, pump.join, source, joined[0])
                if pump.sliding is not None and pump.sliding.prune_query is not None:
                    self.run(pump.sliding.prune_query, source, ())
                if pump.stagger is not None:
                    self.run(pump.stagger.key_query, source, ())
            except duckdb.Error as error:
                message = str(error).splitlines()[0]
                raise ShoalError(
                    ErrorCode.CODE_VALIDATION,
                    messages.pump_refused_by_engine(
                        line=pump.line, pump=pump.name, message=message
                    ),
                ) from error

    def _check_scored(self, pump: sql.Pump, source: tuple[sql.Column, ...]) -> None:
        """A scoring pump's cursor (numeric columns, no DECIMAL), then its query over the
        scored rows."""
        scored = pump.scored
        assert scored is not None
        cursor = self.describe(scored.cursor_query, source)
        try:
            anomaly.numeric_columns([(c.name, c.sql_type) for c in cursor[:-1]])
        except anomaly.AnomalyError as error:
            raise ShoalError(
                ErrorCode.CODE_VALIDATION,
                messages.pump_scoring_refused(
                    line=pump.line, pump=pump.name, function=scored.function, error=error
                ),
            ) from error
        self.run(pump.query, scored_columns(cursor, scored), ())


def _check_outer_join(
    engine: DuckDbEngine,
    join: sql.StreamJoin,
    left: tuple[sql.Column, ...],
    right: tuple[sql.Column, ...],
) -> None:
    if join.outer_query is not None:
        engine.run(join.outer_query, left, (), (right, ()))
    if join.match_query is not None:
        row_id = sql.Column(sql.ROW_ID, "BIGINT")
        engine.run(join.match_query, (*left, row_id), (), ((*right, row_id), ()))


class DuckDbChecker:
    """The service's `CodeChecker`: a dry run on a fresh engine, against the sources the
    application's input descriptions define."""

    def check(
        self,
        program: sql.Program,
        inputs: list[dict[str, Any]],
        references: list[dict[str, Any]] | None = None,
    ) -> None:
        if any(table for pump in program.pumps for table in pump.tables) and not references:
            if inputs:
                names = ", ".join(sorted({t for pump in program.pumps for t in pump.tables}))
                raise ShoalError(
                    ErrorCode.CODE_VALIDATION,
                    messages.joins_without_reference_data(names=names),
                )
            return  # no input nor reference yet: checked again when they are added
        engine = DuckDbEngine()
        try:
            engine.check(program, source_streams(inputs), reference_tables(references or []))
        finally:
            engine.close()


def _check_window_column(pump: sql.Pump, source: tuple[sql.Column, ...]) -> None:
    assert pump.window is not None
    for column in source:
        if column.name == pump.window.column:
            if column.sql_type != "TIMESTAMP":
                raise ShoalError(
                    ErrorCode.CODE_VALIDATION,
                    messages.window_column_not_timestamp(
                        line=pump.line, pump=pump.name, column=column.name, sql_type=column.sql_type
                    ),
                )
            return
