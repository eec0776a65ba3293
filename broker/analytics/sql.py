"""The Kinesis Data Analytics SQL dialect, through sqlglot: the one module importing it.

An application's code is a list of statements, each of which is one of

    CREATE OR REPLACE STREAM "NAME" (column type, ...);
    CREATE OR REPLACE PUMP "NAME" AS INSERT INTO "STREAM" [(columns)] SELECT STREAM ...;

`compile_program` splits the code with sqlglot's tokenizer, parses each statement with a
sqlglot dialect extended for the streaming syntax (`SELECT STREAM`, `STEP(expr BY INTERVAL
...)`), and returns a `Program`: the in-application streams with their columns, and for each
pump its source and target, the query translated to the engine's SQL (DuckDB), and its window.

Semantics kept from KDA: unquoted identifiers are upper-cased (SQL's rule; quoted ones keep
their case); every in-application stream has the implicit column ROWTIME (TIMESTAMP) first;
a pump inserts its select list into the target's columns by position (or into the columns it
names). A query that groups must group by exactly one tumbling window over a time column
(`STEP(col BY INTERVAL 'n' unit)` or `FLOOR(col TO unit)`); its rows are emitted when the
window closes, with the window's end as ROWTIME. A query that does not group is a continuous
filter/projection whose rows keep their input row's ROWTIME.

A query with OVER clauses is a sliding window (`RANGE INTERVAL 'n' unit PRECEDING` or `ROWS n
PRECEDING`, ordered by ROWTIME as KDA does): each row is emitted at once, computed by the engine
over the partition's rows in the range before it (the pipeline keeps that history).

A query may join its stream with reference tables (`JOIN "TABLE" ON ...`, the application's
reference data sources, which the engine holds as tables of those names), or with another
in-application stream through a window (`JOIN "S" OVER (RANGE INTERVAL ... PRECEDING) AS s ON
...` or `OVER (ROWS n PRECEDING)`: a `StreamJoin`, inner or LEFT/RIGHT/FULL outer; CROSS
joins of streams and outer joins with a ROWS window are refused).

A stagger window (`WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL ...)`) is a window
per key, opened by the key's first row and closed the range later; the query runs grouped by
the keys when it closes, and its rows get the close time as ROWTIME.

A pump may read `FROM TABLE(RANDOM_CUT_FOREST[_WITH_EXPLANATION](CURSOR(SELECT STREAM ...),
...))` or `TABLE(HOTSPOTS(CURSOR(...), ...))`: a `ScoredSource`, the cursor's rows scored in
order by the pump's model (`anomaly.py`, `hotspots.py`).

What Shoal does not run yet (cross stream-to-stream joins, subqueries, set operations) is
refused with CodeValidationException naming the line and the construct, never
run approximately. Pure: no I/O; the engine's own dry run
(`duckdb_engine.check`) refuses what DuckDB cannot execute (an unknown function, a type error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sqlglot
from sqlglot import Token, TokenType, exp, parser
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError

from broker.analytics import anomaly, hotspots, log_parsing, messages
from broker.errors import ErrorCode, ShoalError

ROWTIME = "ROWTIME"
# The table name a pump's translated query reads (the engine binds the input rows to it).
INPUT_TABLE = "__shoal_input"
# The engine query's last column for a continuous (unwindowed) pump: the input row's ROWTIME.
ROWTIME_ALIAS = "__shoal_rowtime"
# A sliding-window pump's input column: True for the batch's rows, False for the history rows
# they are computed over (only new rows are emitted).
NEW_ROW = "__shoal_new"
# The table a stream-to-stream join's query reads its right stream's rows from.
JOIN_TABLE = "__shoal_join"
# An outer join's row identity column, in the tables its match query reads.
ROW_ID = "__shoal_row_id"
# The alias a FROM subquery without one gets.
DERIVED = "__shoal_derived"
STATEMENTS_MAX = 1_000
_UNIT_MS = {
    "MILLISECOND": 1,
    "SECOND": 1_000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
}


class _KdaDialect(Dialect):
    """sqlglot's default dialect, plus KDA's STEP(expr BY INTERVAL ...) window function."""

    class Parser(parser.Parser):
        FUNCTION_PARSERS = {  # noqa: RUF012 (sqlglot's own class-level table, extended)
            **parser.Parser.FUNCTION_PARSERS,
            "STEP": lambda self: self._parse_step(),
        }

        def _parse_step(self) -> exp.Expr:
            this = self._parse_bitwise()
            if not self._match_text_seq("BY"):
                self.raise_error("Expected BY INTERVAL in STEP")
            interval = self._parse_bitwise()
            return self.expression(exp.Anonymous(this="STEP", expressions=[this, interval]))


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str  # as the engine (DuckDB) spells it: VARCHAR, INTEGER, DOUBLE, TIMESTAMP, ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDef:
    name: str
    columns: tuple[Column, ...]  # ROWTIME first
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TumblingWindow:
    column: str  # the time column the window is over (ROWTIME or an event-time column)
    size_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SlidingWindow:
    """OVER (... RANGE INTERVAL 'n' unit PRECEDING) or (... ROWS n PRECEDING): each row is
    emitted at once, computed over the rows of its partition in the range before it."""

    range_ms: int | None  # RANGE: the interval
    rows: int | None  # ROWS: the row count
    prune_query: str | None  # ROWS: the engine query keeping each partition's last rows


@dataclass(frozen=True, slots=True, kw_only=True)
class StaggerWindow:
    """WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL ...): a window per key, opened
    by the key's first row (its ROWTIME) and closed `range_ms` later; the query is grouped by
    the keys. `key_query` gives each batch row's key, in the batch's order."""

    range_ms: int
    key_query: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamJoin:
    """`FROM left [OVER (RANGE ...)] JOIN right OVER (RANGE INTERVAL ...) ON ...`: a windowed
    stream-to-stream join. A side without OVER joins only its current row (a range of 0). Rows
    `l` and `r` pair when `l.ROWTIME - right_range_ms <= r.ROWTIME <= l.ROWTIME + left_range_ms`
    and the ON condition holds; the pair is emitted when its later row arrives, with the later
    ROWTIME of the two as its ROWTIME (the query reads the right rows as `JOIN_TABLE`)."""

    right: str  # the in-application stream joined (the pump's source is the left side)
    left_range_ms: int
    right_range_ms: int
    kind: str = "INNER"  # INNER, LEFT, RIGHT or FULL (OUTER)
    # A ROWS window: the side's last n rows (inner joins), whatever their ROWTIME.
    left_rows: int | None = None
    right_rows: int | None = None
    # Outer joins: the query over the unmatched rows of a side whose window passed (the other
    # side's table empty), and the query pairing the rows' ids (ROW_ID) by the ON condition.
    outer_query: str | None = None
    match_query: str | None = None

    def outer_sides(self) -> tuple[bool, bool]:
        """Whether the left and the right side keep their unmatched rows."""
        return self.kind in ("LEFT", "FULL"), self.kind in ("RIGHT", "FULL")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoredSource:
    """`FROM TABLE(RANDOM_CUT_FOREST[_WITH_EXPLANATION](CURSOR(SELECT STREAM ... FROM s),
    ...))`: the cursor's rows, each scored by the pump's forest (`anomaly.py`), are the rows the
    pump's query reads: ROWTIME, the cursor's columns, ANOMALY_SCORE [, ANOMALY_EXPLANATION]."""

    function: str
    parameters: anomaly.ForestParameters | hotspots.HotspotParameters
    cursor_query: str  # DuckDB SQL over INPUT_TABLE: the cursor's columns, then ROWTIME_ALIAS


@dataclass(frozen=True, slots=True, kw_only=True)
class Pump:
    name: str
    source: str  # the in-application stream it reads
    target: str  # the in-application stream it inserts into
    target_columns: tuple[str, ...] | None  # INSERT INTO s (a, b): the columns named
    query: str  # DuckDB SQL over INPUT_TABLE
    window: TumblingWindow | None
    line: int
    sliding: SlidingWindow | None = None
    # The tables the query joins (stream-to-table joins): the application's reference tables.
    tables: tuple[str, ...] = ()
    stagger: StaggerWindow | None = None
    join: StreamJoin | None = None
    scored: ScoredSource | None = None

    def input_columns(self, source: tuple[Column, ...]) -> tuple[Column, ...]:
        """The columns the query reads: the source's, and NEW_ROW for a sliding window."""
        return (*source, Column(NEW_ROW, "BOOLEAN")) if self.sliding is not None else source


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    streams: tuple[StreamDef, ...]
    pumps: tuple[Pump, ...]

    def stream(self, name: str) -> StreamDef | None:
        for stream in self.streams:
            if stream.name == name:
                return stream
        return None


def refused(line: int, construct: str, detail: str = "") -> ShoalError:
    suffix = f": {detail}" if detail else ""
    return ShoalError(
        ErrorCode.CODE_VALIDATION,
        messages.construct_not_run(line=line, construct=construct, suffix=suffix),
    )


@dataclass(frozen=True, slots=True)
class _Statement:
    tokens: tuple[Token, ...]
    text: str  # the code, with removed tokens blanked (so lines and columns stay true)
    line: int

    def words(self, count: int) -> list[str]:
        return [token.text.upper() for token in self.tokens[:count]]


def compile_program(code: str) -> Program:
    """The Program of `code`; raises ShoalError(CODE_VALIDATION) naming line and construct."""
    streams: list[StreamDef] = []
    pumps: list[Pump] = []
    for statement in _statements(code):
        words = statement.words(4)
        if words[:4] == ["CREATE", "OR", "REPLACE", "STREAM"]:
            streams.append(_stream(statement))
        elif words[:4] == ["CREATE", "OR", "REPLACE", "PUMP"]:
            pumps.append(_pump(statement))
        else:
            raise refused(statement.line, " ".join(statement.words(4)) or "an empty statement")
    program = Program(streams=tuple(streams), pumps=tuple(pumps))
    _check_references(program)
    return program


def _statements(code: str) -> list[_Statement]:
    try:
        tokens = sqlglot.tokenize(code)
    except TokenError as error:
        raise ShoalError(ErrorCode.CODE_VALIDATION, messages.unreadable_sql(error=error)) from error
    statements: list[_Statement] = []
    current: list[Token] = []
    for token in [*tokens, None]:
        if token is None or token.token_type is TokenType.SEMICOLON:
            if current:
                statements.append(_statement(code, current))
                current = []
            continue
        current.append(token)
    if len(statements) > STATEMENTS_MAX:
        raise ShoalError(ErrorCode.CODE_VALIDATION, messages.statements_max(maximum=STATEMENTS_MAX))
    return statements


def _statement(code: str, tokens: list[Token]) -> _Statement:
    start, end = tokens[0].start, tokens[-1].end + 1
    # Keep the statement's position in the code: the text before it is blanked, newlines kept.
    prefix = "".join("\n" if char == "\n" else " " for char in code[:start])
    return _Statement(tokens=tuple(tokens), text=prefix + code[start:end], line=tokens[0].line)


def _normalize(identifier: exp.Identifier) -> str:
    name = str(identifier.this)
    return name if identifier.quoted else name.upper()


def _parse(text: str, line: int) -> exp.Expr:
    try:
        parsed = sqlglot.parse_one(text, dialect=_KdaDialect)
    except ParseError as error:
        first = error.errors[0] if error.errors else {}
        where = int(first.get("line") or line)
        raise ShoalError(
            ErrorCode.CODE_VALIDATION,
            messages.syntax_error(
                where=where,
                description=first.get("description", "syntax error"),
                highlight=first.get("highlight", ""),
            ),
        ) from error
    return parsed


# --- CREATE OR REPLACE STREAM ---------------------------------------------------------------


def _stream(statement: _Statement) -> StreamDef:
    stream_token = statement.tokens[3]
    text = _blank(statement.text, stream_token, "TABLE")
    parsed = _parse(text, statement.line)
    if not isinstance(parsed, exp.Create) or not isinstance(parsed.this, exp.Schema):
        raise refused(statement.line, "this CREATE STREAM", "expected a column list")
    schema = parsed.this
    table = schema.this
    assert isinstance(table, exp.Table)
    name = _normalize(table.this)
    columns = [Column(ROWTIME, "TIMESTAMP")]
    for definition in schema.expressions:
        if not isinstance(definition, exp.ColumnDef):
            raise refused(statement.line, f"{definition.key.upper()} in CREATE STREAM {name}")
        column_name = _normalize(definition.this)
        if column_name == ROWTIME:
            raise refused(statement.line, "a column named ROWTIME", "it is implicit")
        kind = definition.args.get("kind")
        if kind is None:
            raise refused(statement.line, f"column {column_name} without a type")
        columns.append(Column(column_name, engine_type(kind)))
    return StreamDef(name=name, columns=tuple(columns), line=statement.line)


def _blank(text: str, token: Token, replacement: str) -> str:
    """`text` with `token` replaced by `replacement` (padded: positions stay true)."""
    width = token.end + 1 - token.start
    assert len(replacement) <= width or replacement == "TABLE"
    return text[: token.start] + replacement + text[token.end + 1 :]


def engine_type(kind: exp.DataType) -> str:
    """A SQL type as DuckDB spells it; KDA's VARCHAR(n)/CHAR(n) keep no length (DuckDB does
    not enforce one), DECIMAL keeps precision and scale."""
    return kind.sql(dialect="duckdb").replace("TEXT", "VARCHAR")


def parse_sql_type(sql_type: str) -> str:
    """A schema's SqlType ("VARCHAR(4)", "DOUBLE", "TIMESTAMP") as the engine spells it."""
    try:
        kind = exp.DataType.build(sql_type)
    except (ParseError, ValueError) as error:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, messages.unknown_sql_type(sql_type=sql_type)
        ) from error
    return engine_type(kind)


# --- CREATE OR REPLACE PUMP ------------------------------------------------------------------


def _pump(statement: _Statement) -> Pump:
    tokens = statement.tokens
    if len(tokens) < 7 or tokens[5].text.upper() != "AS" or tokens[6].text.upper() != "INSERT":
        raise refused(
            statement.line, "this CREATE PUMP", "expected AS INSERT INTO ... SELECT STREAM"
        )
    name = _token_name(tokens[4])
    text, stagger_range = _stagger_clause(statement)
    text, join_ranges = _join_windows(statement, text)
    # Blank everything up to INSERT, and the STREAM of SELECT STREAM.
    text = (
        "".join("\n" if char == "\n" else " " for char in text[: tokens[6].start])
        + text[tokens[6].start :]
    )
    for index, token in enumerate(tokens[:-1]):
        if token.token_type is TokenType.SELECT and tokens[index + 1].text.upper() == "STREAM":
            text = _blank(text, tokens[index + 1], " " * len(tokens[index + 1].text))
    parsed = _parse(text, statement.line)
    if not isinstance(parsed, exp.Insert):
        raise refused(statement.line, f"pump {name}", "expected INSERT INTO ... SELECT STREAM")
    target_columns: tuple[str, ...] | None = None
    into = parsed.this
    if isinstance(into, exp.Schema):
        target_columns = tuple(_normalize(column) for column in into.expressions)
        into = into.this
    assert isinstance(into, exp.Table)
    target = _normalize(into.this)
    select = parsed.expression
    if not isinstance(select, exp.Select):
        raise refused(statement.line, f"{select.key.upper()} in pump {name}")
    line = statement.line
    scored: ScoredSource | None = None
    table_function = _table_function(select)
    if table_function is not None and _table_function_name(table_function) in _ITEM_FUNCTIONS:
        select = _item_window(select, table_function, tokens, line)
    elif table_function is not None:
        select, scored = _scored_source(select, table_function, tokens, line)
    _refuse_unsupported(select, line, tokens)
    source = _source(select, line)
    join: StreamJoin | None = None
    if join_ranges:
        join = _stream_join(select, source, join_ranges, tokens, line)
        tables: tuple[str, ...] = ()
    else:
        tables = _joined_tables(select, source, tokens, line)
    stagger: StaggerWindow | None = None
    if stagger_range is not None:
        window = None
        stagger = _stagger(select, source, stagger_range, line)
    else:
        window = _window(select, line)
    sliding = _sliding(select, line, tokens)
    if stagger is not None and sliding is not None:
        raise refused(line, "a sliding window (OVER) in a stagger-window query")
    if tables and sliding is not None:
        raise refused(_line_of(tokens, "JOIN", line), "a JOIN in a sliding-window query")
    derived = _derived_table(select)
    if derived is not None and stagger is not None:
        raise refused(line, "a stagger window over a subquery")
    if derived is not None and sliding is not None and _outer_windows(select, derived):
        # A sliding window inside the subquery, filtered outside it, is the guide's throttled
        # alerts; one over the subquery's rows would need its rows kept as history instead.
        raise refused(_line_of(tokens, "OVER", line), "a sliding window (OVER) over a subquery")
    if scored is not None and (window or stagger or sliding or join or tables):
        raise refused(
            _line_of(tokens, "TABLE", line),
            f"a query over {scored.function} that groups, joins or uses OVER",
            "score in one pump and aggregate its output stream in another",
        )
    if join is not None and (window or stagger or sliding or _derived_table(select)):
        raise refused(
            _line_of(tokens, "JOIN", line),
            "a stream-to-stream join that also groups, uses OVER or reads a subquery",
            "join the streams in one pump and aggregate its output stream in another",
        )
    try:
        query = _translate(
            select,
            source,
            windowed=window is not None or stagger is not None,
            sliding=sliding is not None,
            join=join,
        )
    except log_parsing.LogParseError as error:
        where = next((t.line for t in tokens if "_LOG_PARSE" in t.text.upper()), line)
        raise refused(where, "this log-parsing call", str(error)) from error
    if join is not None and join.kind != "INNER":
        join = dataclasses.replace(
            join,
            outer_query=_translate(
                select, source, windowed=False, sliding=False, join=join, join_variant="outer"
            ),
            match_query=_translate(
                select, source, windowed=False, sliding=False, join=join, join_variant="match"
            ),
        )
    if sliding is not None and sliding.rows is not None:
        sliding = SlidingWindow(
            range_ms=None, rows=sliding.rows, prune_query=_prune_query(select, sliding.rows)
        )
    return Pump(
        name=name,
        source=source,
        target=target,
        target_columns=target_columns,
        query=query,
        window=window,
        line=line,
        sliding=sliding,
        tables=tables,
        stagger=stagger,
        join=join,
        scored=scored,
    )


def _table_function(select: exp.Select) -> exp.Anonymous | None:
    """The `TABLE(...)` call a query reads FROM, if any."""
    from_ = select.args.get("from_") or select.args.get("from")
    if not isinstance(from_, exp.From) or not isinstance(from_.this, exp.Table):
        return None
    call = from_.this.this
    if isinstance(call, exp.Anonymous) and str(call.this).upper() == "TABLE":
        return call
    return None


def _table_function_name(table: exp.Anonymous) -> str:
    inner = table.expressions[0] if len(table.expressions) == 1 else None
    return str(inner.this).upper() if isinstance(inner, exp.Anonymous) else ""


# KDA's tumbling item functions: the columns of their rows (after the counted column for
# TOP_K_ITEMS_TUMBLING), and their parameters' ranges (the SQL reference's).
_ITEM_FUNCTIONS = ("TOP_K_ITEMS_TUMBLING", "COUNT_DISTINCT_ITEMS_TUMBLING")
TOP_K_COUNT_COLUMN = "MOST_FREQUENT_VALUES"
DISTINCT_COUNT_COLUMN = "NUMBER_OF_DISTINCT_ITEMS"
_TOP_K_MAX = 100_000
_ITEM_WINDOW_S_MAX = 3_600


def _item_window(
    select: exp.Select, table: exp.Anonymous, tokens: tuple[Token, ...], line: int
) -> exp.Select:
    """`SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM ... FROM s),
    'column', K, windowSize))` (and COUNT_DISTINCT_ITEMS_TUMBLING(cursor, 'column',
    windowSize)) as the tumbling-window query it is: over the cursor's rows, grouped by
    STEP(ROWTIME BY INTERVAL 'windowSize' SECOND), the K most frequent values of the column
    with their counts (most frequent first; exact counts, which the function's approximation
    allows), or the number of distinct values."""
    where = _line_of(tokens, "TABLE", line)
    inner = table.expressions[0]
    assert isinstance(inner, exp.Anonymous)
    name = str(inner.this).upper()
    top_k = name == "TOP_K_ITEMS_TUMBLING"
    arguments = inner.expressions
    shape = (
        "(CURSOR(SELECT STREAM ...), 'column', K, windowSize)"
        if top_k
        else ("(CURSOR(SELECT STREAM ...), 'column', windowSize)")
    )
    cursor = arguments[0] if arguments else None
    if (
        len(arguments) != (4 if top_k else 3)
        or not isinstance(cursor, exp.Anonymous)
        or str(cursor.this).upper() != "CURSOR"
        or len(cursor.expressions) != 1
        or not isinstance(cursor.expressions[0], exp.Select)
        or not isinstance(arguments[1], exp.Literal)
        or not arguments[1].is_string
        or not all(
            isinstance(a, exp.Literal) and not a.is_string and str(a.this).isdigit()
            for a in arguments[2:]
        )
    ):
        raise refused(where, f"this {name} call", f"write {name}{shape}")
    outer_from = select.args.get("from_") or select.args.get("from")
    if (
        len(select.expressions) != 1
        or not isinstance(select.expressions[0], exp.Star)
        or any(select.args.get(part) for part in ("where", "group", "having", "order", "joins"))
        or outer_from is None
    ):
        raise refused(
            where,
            f"a query over {name} other than SELECT STREAM * FROM TABLE(...)",
            "filter or aggregate its output stream in another pump",
        )
    cursor_select = cursor.expressions[0]
    if (
        cursor_select.args.get("group") is not None
        or cursor_select.args.get("joins")
        or cursor_select.find(exp.Window) is not None
        or cursor_select.find(exp.AggFunc) is not None
    ):
        raise refused(where, f"a CURSOR of {name} that groups, joins or uses OVER")
    _refuse_unsupported(cursor_select, where, tokens)
    numbers = [int(str(argument.this)) for argument in arguments[2:]]
    window_s = numbers[-1]
    if not 1 <= window_s <= _ITEM_WINDOW_S_MAX:
        raise refused(where, f"{name} with windowSize {window_s}", "it is 1 to 3600 seconds")
    if top_k and not 1 <= numbers[0] <= _TOP_K_MAX:
        raise refused(where, f"{name} with K {numbers[0]}", "it is 1 to 100000")
    column = exp.column(str(arguments[1].this), quoted=True)
    step = exp.Anonymous(
        this="STEP",
        expressions=[
            exp.column(ROWTIME),
            exp.Interval(this=exp.Literal.string(str(window_s)), unit=exp.var("SECOND")),
        ],
    )
    grouped = cursor_select.copy()
    if top_k:
        count = exp.alias_(exp.Count(this=exp.Star()), TOP_K_COUNT_COLUMN, quoted=True)
        grouped.set("expressions", [column.copy(), count])
        grouped.set("group", exp.Group(expressions=[column.copy(), step]))
        order = [
            exp.Ordered(this=exp.column(TOP_K_COUNT_COLUMN, quoted=True), desc=True),
            exp.Ordered(this=column.copy()),
        ]
        grouped.set("order", exp.Order(expressions=order))
        grouped.set("limit", exp.Limit(expression=exp.Literal.number(numbers[0])))
    else:
        distinct = exp.Count(this=exp.Distinct(expressions=[column.copy()]))
        grouped.set("expressions", [exp.alias_(distinct, DISTINCT_COUNT_COLUMN, quoted=True)])
        grouped.set("group", exp.Group(expressions=[step]))
    return grouped


def _scored_source(
    select: exp.Select, table: exp.Anonymous, tokens: tuple[Token, ...], line: int
) -> tuple[exp.Select, ScoredSource]:
    """The query rewritten to read its cursor's stream (the scored rows stand in for that
    stream's rows), and the scoring: the function, its parameters, the cursor's query."""
    where = _line_of(tokens, "TABLE", line)
    inner = table.expressions[0] if len(table.expressions) == 1 else None
    name = str(inner.this).upper() if isinstance(inner, exp.Anonymous) else ""
    if not isinstance(inner, exp.Anonymous) or name not in _ANOMALY_FUNCTIONS:
        shown = name or (inner.sql() if inner is not None else "")
        raise refused(
            where,
            f"TABLE({shown})",
            "Shoal runs TABLE(RANDOM_CUT_FOREST(...)), "
            "TABLE(RANDOM_CUT_FOREST_WITH_EXPLANATION(...)), TABLE(HOTSPOTS(...)), "
            "TABLE(TOP_K_ITEMS_TUMBLING(...)) and TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(...))",
        )
    arguments = inner.expressions
    cursor = arguments[0] if arguments else None
    if (
        not isinstance(cursor, exp.Anonymous)
        or str(cursor.this).upper() != "CURSOR"
        or len(cursor.expressions) != 1
        or not isinstance(cursor.expressions[0], exp.Select)
    ):
        raise refused(where, f"{name} without CURSOR(SELECT STREAM ... FROM a stream)")
    cursor_select = cursor.expressions[0]
    if (
        cursor_select.args.get("group") is not None
        or cursor_select.args.get("joins")
        or cursor_select.find(exp.Window) is not None
        or cursor_select.find(exp.AggFunc) is not None
    ):
        raise refused(where, f"a CURSOR of {name} that groups, joins or uses OVER")
    _refuse_unsupported(cursor_select, where, tokens)
    values: list[int | float | bool] = []
    for argument in arguments[1:]:
        if isinstance(argument, exp.Boolean):
            values.append(bool(argument.this))
        elif isinstance(argument, exp.Literal) and not argument.is_string:
            text = str(argument.this)
            try:
                values.append(int(text) if text.lstrip("-").isdigit() else float(text))
            except ValueError as error:
                raise refused(where, f"{name} with {argument.sql()}") from error
        else:
            raise refused(where, f"{name} with {argument.sql()}", "its arguments are literals")
    settings: anomaly.ForestParameters | hotspots.HotspotParameters
    try:
        if name == "HOTSPOTS":
            settings = hotspots.parameters(values)
        else:
            settings = anomaly.parameters(name, values)
    except anomaly.AnomalyError as error:
        raise refused(where, f"this {name} call", str(error)) from error
    source = _source(cursor_select, where)
    try:
        cursor_query = _translate(cursor_select, source, windowed=False, sliding=False)
    except log_parsing.LogParseError as error:
        raise refused(where, "this log-parsing call", str(error)) from error
    outer = select.copy()
    from_ = outer.args.get("from_") or outer.args.get("from")
    assert isinstance(from_, exp.From)
    assert isinstance(from_.this, exp.Table)
    alias = from_.this.alias
    stream = exp.Table(this=exp.to_identifier(source, quoted=True))
    from_.this.replace(stream.as_(alias, quoted=True) if alias else stream)
    return outer, ScoredSource(function=name, parameters=settings, cursor_query=cursor_query)


def _join_windows(statement: _Statement, text: str) -> tuple[str, dict[int, tuple[str, int]]]:
    """The text with each stream's window in FROM/JOIN (`name OVER (RANGE INTERVAL ...
    PRECEDING)` or `OVER (ROWS n PRECEDING)`) blanked, and the windows (RANGE and its
    milliseconds, or ROWS and its count) by the stream's position (0: the FROM stream, n: the
    nth JOIN)."""
    tokens = statement.tokens
    ranges: dict[int, tuple[str, int]] = {}
    joins = 0
    for index, token in enumerate(tokens):
        if token.token_type is TokenType.JOIN:
            joins += 1
        if token.token_type is not TokenType.OVER or index < 2:
            continue
        if tokens[index - 2].token_type not in (TokenType.FROM, TokenType.JOIN):
            continue  # an analytic function's OVER, not a stream's window
        where = token.line
        if index + 1 >= len(tokens) or tokens[index + 1].token_type is not TokenType.L_PAREN:
            raise refused(where, "a named window in a JOIN", "write OVER (RANGE INTERVAL ...)")
        depth = 0
        close = None
        for position in range(index + 1, len(tokens)):
            kind = tokens[position].token_type
            depth += (kind is TokenType.L_PAREN) - (kind is TokenType.R_PAREN)
            if depth == 0:
                close = position
                break
        if close is None:
            raise refused(where, "an unclosed OVER (...) in a JOIN")
        spec = (
            text[tokens[index + 2].start : tokens[close - 1].end + 1] if close > index + 2 else ""
        )
        words = spec.split()
        frame = words[0].upper() if words else ""
        if (
            len(words) < 2
            or frame not in ("RANGE", "ROWS")
            or words[-1].upper() != "PRECEDING"
            or (frame == "ROWS" and (len(words) != 3 or not words[1].isdigit()))
        ):
            raise refused(
                where,
                f"the join window ({spec})",
                "Shoal runs OVER (RANGE INTERVAL 'n' unit PRECEDING) and OVER (ROWS n PRECEDING)",
            )
        if frame == "ROWS":
            ranges[joins] = ("ROWS", int(words[1]))
        else:
            interval = _parse(f"SELECT {' '.join(words[1:-1])}", where).find(exp.Interval)
            if interval is None:
                raise refused(where, f"the join window ({spec})")
            ranges[joins] = ("RANGE", _interval_ms(interval, where))
        span = text[token.start : tokens[close].end + 1]
        text = (
            text[: token.start]
            + "".join("\n" if char == "\n" else " " for char in span)
            + text[tokens[close].end + 1 :]
        )
    return text, ranges


def _stream_join(
    select: exp.Select,
    source: str,
    ranges: dict[int, tuple[str, int]],
    tokens: tuple[Token, ...],
    line: int,
) -> StreamJoin:
    joins = select.args.get("joins") or []
    where = _line_of(tokens, "JOIN", line)
    if len(joins) != 1:
        raise refused(where, "a stream-to-stream join of more than two streams")
    join = joins[0]
    method = " ".join(
        str(join.args.get(part) or "").upper() for part in ("method", "side", "kind")
    ).split()
    kinds = {(): "INNER", ("INNER",): "INNER", ("LEFT",): "LEFT", ("LEFT", "OUTER"): "LEFT"}
    kinds |= {("RIGHT",): "RIGHT", ("RIGHT", "OUTER"): "RIGHT"}
    kinds |= {("FULL",): "FULL", ("FULL", "OUTER"): "FULL"}
    kind = kinds.get(tuple(method))
    if kind is None:
        raise refused(
            where,
            f"a {' '.join(method)} JOIN of two streams",
            "Shoal runs INNER, LEFT, RIGHT and FULL stream-to-stream joins",
        )
    if join.args.get("on") is None or join.args.get("using"):
        raise refused(where, "a stream-to-stream join without ON")
    table = join.this
    if not isinstance(table, exp.Table):
        raise refused(where, "a JOIN with something other than a stream")
    right = _normalize(table.this)
    if right == source:
        raise refused(where, f"a JOIN of stream {right} with itself")
    if 1 not in ranges:
        raise refused(
            where,
            f"a join of stream {source} with {right} without a window on {right}",
            "add OVER (RANGE INTERVAL 'n' unit PRECEDING) after the joined stream",
        )
    left_kind, left_amount = ranges.get(0, ("RANGE", 0))
    right_kind, right_amount = ranges[1]
    if kind != "INNER" and "ROWS" in (left_kind, right_kind):
        raise refused(where, f"a {kind} JOIN with a ROWS window", "use a RANGE window")
    return StreamJoin(
        right=right,
        left_range_ms=left_amount if left_kind == "RANGE" else 0,
        right_range_ms=right_amount if right_kind == "RANGE" else 0,
        kind=kind,
        left_rows=left_amount if left_kind == "ROWS" else None,
        right_rows=right_amount if right_kind == "ROWS" else None,
    )


def _stagger_clause(statement: _Statement) -> tuple[str, int | None]:
    """The statement's text with `WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL ...)`
    rewritten as `GROUP BY keys` (newlines kept, so lines stay true), and the range; or the
    text unchanged and None."""
    tokens = statement.tokens
    text = statement.text
    for index, token in enumerate(tokens):
        if token.text.upper() != "WINDOWED":
            continue
        words = [t.text.upper() for t in tokens[index + 1 : index + 4]]
        if words[:3] != ["BY", "STAGGER", "("] or index + 4 >= len(tokens):
            raise refused(token.line, "WINDOWED without BY STAGGER (...)")
        if tokens[index + 4].token_type is not TokenType.PARTITION_BY:
            raise refused(token.line, "a stagger window without PARTITION BY")
        depth = 1
        close = range_at = None
        for position in range(index + 5, len(tokens)):
            kind = tokens[position].token_type
            if kind is TokenType.L_PAREN:
                depth += 1
            elif kind is TokenType.R_PAREN:
                depth -= 1
                if depth == 0:
                    close = position
                    break
            elif kind is TokenType.RANGE and depth == 1:
                range_at = position
        if close is None or range_at is None or range_at == index + 5:
            raise refused(token.line, "this stagger window", "PARTITION BY keys RANGE INTERVAL")
        keys = text[tokens[index + 5].start : tokens[range_at - 1].end + 1]
        interval_text = text[tokens[range_at + 1].start : tokens[close - 1].end + 1]
        interval = _parse(f"SELECT {interval_text}", token.line).find(exp.Interval)
        if interval is None:
            raise refused(token.line, f"RANGE {interval_text} in a stagger window")
        span = text[token.start : tokens[close].end + 1]
        replacement = f"GROUP BY {keys}".replace("\n", " ") + "\n" * span.count("\n")
        text = text[: token.start] + replacement + text[tokens[close].end + 1 :]
        return text, _interval_ms(interval, token.line)
    return text, None


def _stagger(select: exp.Select, source: str, range_ms: int, line: int) -> StaggerWindow:
    group = select.args.get("group")
    assert group is not None  # the rewritten PARTITION BY
    keys = select.copy()
    keys.set("expressions", [expression.copy() for expression in group.expressions])
    keys.set("group", None)
    if select.args.get("having") is not None:
        raise refused(line, "HAVING in a stagger-window query")
    return StaggerWindow(
        range_ms=range_ms, key_query=_translate(keys, source, windowed=True, sliding=False)
    )


def _joined_tables(
    select: exp.Select, source: str, tokens: tuple[Token, ...], line: int
) -> tuple[str, ...]:
    """The tables a query joins its stream with. Only a stream-to-table join (a reference
    table) is run; a join with another stream is refused here or by `_check_references`."""
    tables: list[str] = []
    for index, join in enumerate(select.args.get("joins") or [], start=1):
        where = _line_of(tokens, "JOIN", line, index)
        table = join.this
        if not isinstance(table, exp.Table):
            raise refused(where, "a JOIN with something other than a reference table")
        name = _normalize(table.this)
        if name == source:
            raise refused(where, f"a JOIN of stream {name} with itself (stream-to-stream joins)")
        tables.append(name)
    return tuple(tables)


def _sliding(select: exp.Select, line: int, tokens: tuple[Token, ...]) -> SlidingWindow | None:
    """The sliding window of a query's OVER clauses (all RANGE or all ROWS, PRECEDING up to
    the current row), or None."""
    specs = [w.args["spec"] for w in select.find_all(exp.Window) if w.args.get("spec")]
    if not any(True for _ in select.find_all(exp.Window)):
        return None
    where = _line_of(tokens, "OVER", line)
    if select.args.get("group") is not None:
        raise refused(where, "a sliding window (OVER) in a GROUP BY query")
    if not specs:
        raise refused(where, "OVER without RANGE INTERVAL ... PRECEDING or ROWS n PRECEDING")
    ranges: list[int] = []
    rows: list[int] = []
    for spec in specs:
        kind = str(spec.args.get("kind") or "").upper()
        start = spec.args.get("start")
        if str(spec.args.get("start_side") or "").upper() != "PRECEDING" or spec.args.get("end"):
            raise refused(where, f"the window frame {spec.sql()}", "use ... PRECEDING")
        if kind == "RANGE" and isinstance(start, exp.Interval):
            ranges.append(_interval_ms(start, where))
        elif kind == "ROWS" and isinstance(start, exp.Literal) and not start.is_string:
            rows.append(int(str(start.this)))
        else:
            raise refused(where, f"the window frame {spec.sql()}")
    if ranges and rows:
        raise refused(where, "RANGE and ROWS sliding windows in one query")
    if ranges:
        return SlidingWindow(range_ms=max(ranges), rows=None, prune_query=None)
    return SlidingWindow(range_ms=None, rows=max(rows), prune_query=None)


def _prune_query(select: exp.Select, rows: int) -> str:
    """Keeps each partition's last `rows` rows of a ROWS sliding window's history (every
    PARTITION BY of the query together: a row is kept if any window still needs it)."""
    partitions = [
        ", ".join(e.sql(dialect="duckdb") for e in w.args.get("partition_by") or [])
        for w in select.find_all(exp.Window)
        if w.args.get("spec") is not None
    ]
    keeps = [
        f'row_number() OVER (PARTITION BY {p} ORDER BY "{ROWTIME}" DESC) <= {rows}'
        if p
        else f'row_number() OVER (ORDER BY "{ROWTIME}" DESC) <= {rows}'
        for p in partitions
    ]
    return f"SELECT * FROM {INPUT_TABLE} QUALIFY {' OR '.join(keeps)}"


def _token_name(token: Token) -> str:
    return token.text if token.token_type is TokenType.IDENTIFIER else token.text.upper()


# Constructs refused, with the keyword that locates them in the statement (its Nth occurrence).
_UNSUPPORTED: tuple[tuple[type[exp.Expr], str, str, int], ...] = (
    (exp.Subquery, "a subquery", "SELECT", 2),
    (exp.Union, "UNION", "UNION", 1),
    (exp.Except, "EXCEPT", "EXCEPT", 1),
    (exp.Intersect, "INTERSECT", "INTERSECT", 1),
    (exp.With, "WITH", "WITH", 1),
)
_ANOMALY_FUNCTIONS = ("RANDOM_CUT_FOREST", "RANDOM_CUT_FOREST_WITH_EXPLANATION", "HOTSPOTS")
_UNSUPPORTED_FUNCTIONS = {
    "RANDOM_CUT_FOREST": "RANDOM_CUT_FOREST outside FROM TABLE(...)",
    "RANDOM_CUT_FOREST_WITH_EXPLANATION": (
        "RANDOM_CUT_FOREST_WITH_EXPLANATION outside FROM TABLE(...)"
    ),
    "HOTSPOTS": "HOTSPOTS outside FROM TABLE(...)",
    "TABLE": "TABLE(...) outside FROM",
    "CURSOR": "CURSOR(...)",
}


def _refuse_unsupported(select: exp.Select, line: int, tokens: tuple[Token, ...]) -> None:
    derived = _derived_table(select)
    for kind, construct, keyword, occurrence in _UNSUPPORTED:
        found = [node for node in select.find_all(kind) if node is not derived]
        if found:
            if derived is not None and kind is exp.Subquery:
                occurrence += 1  # the derived table's SELECT comes first
            raise refused(_line_of(tokens, keyword, line, occurrence), construct)
    for function in select.find_all(exp.Anonymous):
        name = str(function.this).upper()
        if name in _UNSUPPORTED_FUNCTIONS:
            raise refused(_line_of(tokens, name, line), _UNSUPPORTED_FUNCTIONS[name])


def _line_of(tokens: tuple[Token, ...], word: str, default: int, occurrence: int = 1) -> int:
    """The line of the `occurrence`th token `word` (the statement's line if absent)."""
    seen = 0
    for token in tokens:
        if token.text.upper() == word.upper():
            seen += 1
            if seen == occurrence:
                return token.line
    return default


def _derived_table(select: exp.Select) -> exp.Subquery | None:
    """The subquery a query reads FROM (`FROM (SELECT STREAM ... FROM s) AS t`), if any."""
    from_ = select.args.get("from_") or select.args.get("from")
    if isinstance(from_, exp.From) and isinstance(from_.this, exp.Subquery):
        return from_.this
    return None


def _outer_windows(select: exp.Select, derived: exp.Subquery) -> bool:
    """Whether `select` has an OVER clause of its own (not inside its FROM subquery)."""
    return any(w.find_ancestor(exp.Subquery) is not derived for w in select.find_all(exp.Window))


def _source(select: exp.Select, line: int) -> str:
    derived = _derived_table(select)
    if derived is not None:
        inner = derived.this
        if not isinstance(inner, exp.Select):
            raise refused(line, "a subquery that is not a SELECT STREAM")
        grouped = any(  # an aggregate OVER a window is a sliding window's (below)
            agg.find_ancestor(exp.Window) is None for agg in inner.find_all(exp.AggFunc)
        )
        if inner.args.get("group") is not None or inner.args.get("joins") or grouped:
            raise refused(line, "a subquery that groups or joins")
        select = inner
    from_ = select.args.get("from_") or select.args.get("from")
    if not isinstance(from_, exp.From) or not isinstance(from_.this, exp.Table):
        raise refused(line, "a SELECT without FROM an in-application stream")
    return _normalize(from_.this.this)


def _window(select: exp.Select, line: int) -> TumblingWindow | None:
    group = select.args.get("group")
    has_aggregate = any(  # an aggregate OVER a window is a sliding window's, not a group's
        agg.find_ancestor(exp.Window) is None for agg in select.find_all(exp.AggFunc)
    )
    if group is None:
        if has_aggregate:
            raise refused(
                line,
                "an aggregate without GROUP BY a window",
                "group by STEP(ROWTIME BY INTERVAL ...) or FLOOR(ROWTIME TO unit)",
            )
        return None
    windows = [w for w in (_as_window(e, line) for e in group.expressions) if w is not None]
    if len(windows) != 1:
        raise refused(
            line,
            "GROUP BY without exactly one tumbling window",
            "add STEP(ROWTIME BY INTERVAL ...) or FLOOR(ROWTIME TO unit) to the GROUP BY",
        )
    return windows[0]


def _as_window(expression: exp.Expr, line: int) -> TumblingWindow | None:
    if isinstance(expression, exp.Anonymous) and str(expression.this).upper() == "STEP":
        column, interval = expression.expressions
        if not isinstance(interval, exp.Interval):
            raise refused(line, "STEP without BY INTERVAL")
        return TumblingWindow(
            column=_time_column(column, line), size_ms=_interval_ms(interval, line)
        )
    if isinstance(expression, exp.Floor) and expression.args.get("to") is not None:
        unit = str(expression.args["to"].name).upper()
        if unit not in _UNIT_MS:
            raise refused(line, f"FLOOR(... TO {unit})")
        return TumblingWindow(column=_time_column(expression.this, line), size_ms=_UNIT_MS[unit])
    return None


def _time_column(expression: exp.Expr, line: int) -> str:
    if not isinstance(expression, exp.Column):
        raise refused(line, f"a window over {expression.sql()}", "window over a time column")
    return _normalize(expression.this)


def _interval_ms(interval: exp.Interval, line: int) -> int:
    unit_expression = interval.args.get("unit")
    unit = str(unit_expression.name).upper() if unit_expression is not None else ""
    unit = unit.removesuffix("S") if unit.endswith("S") and unit[:-1] in _UNIT_MS else unit
    try:
        amount = int(str(interval.this.name))
    except ValueError as error:
        raise refused(line, f"INTERVAL {interval.this.sql()} {unit}") from error
    if unit not in _UNIT_MS or amount <= 0:
        raise refused(line, f"INTERVAL '{amount}' {unit}")
    return amount * _UNIT_MS[unit]


# --- Translation to the engine's SQL ----------------------------------------------------------


def _translate(
    select: exp.Select,
    source: str,
    *,
    windowed: bool,
    sliding: bool,
    join: StreamJoin | None = None,
    join_variant: str = "inner",
) -> str:
    """The select as DuckDB SQL over INPUT_TABLE (aliased as the source stream, so qualified
    columns keep working), with identifiers normalized and KDA's functions rewritten. A
    stream-to-stream join's query pairs rows as an inner join ("inner"), or is its own (outer)
    join over the unmatched rows ("outer"), or gives the ids of the pairs ON matches
    ("match")."""
    tree = select.copy()
    for identifier in tree.find_all(exp.Identifier):
        identifier.set("this", _normalize(identifier))
        identifier.set("quoted", True)
    derived = _derived_table(tree)
    reader = tree
    if derived is not None:  # its rows carry their input row's ROWTIME (every stream's column)
        if not derived.alias:
            derived.set("alias", exp.TableAlias(this=exp.to_identifier(DERIVED, quoted=True)))
        reader = derived.this
        assert isinstance(reader, exp.Select)
    from_ = reader.args.get("from_") or reader.args.get("from")
    assert isinstance(from_, exp.From)
    table = from_.this
    assert isinstance(table, exp.Table)
    alias = table.alias or source
    table.replace(exp.to_table(INPUT_TABLE).as_(alias, quoted=True))
    later: exp.Expr | None = None
    if join is not None:
        later = _join_rowtime(tree, alias, join, join_variant)
    if derived is not None:
        if ROWTIME not in reader.named_selects:
            reader.select(exp.column(ROWTIME, table=alias, quoted=True), copy=False)
        if sliding:  # its OVER: which rows are the batch's (the rest are history)
            reader.select(exp.column(NEW_ROW, table=alias, quoted=True), copy=False)
        alias = derived.alias
    rewritten = tree.transform(_rewrite_function)
    assert isinstance(rewritten, exp.Select)
    if join is not None and join_variant == "match":
        return _match_query(rewritten, alias)
    _star_without_rowtime(rewritten)
    for window in rewritten.find_all(exp.Window):
        if window.args.get("spec") is not None and window.args.get("order") is None:
            # KDA orders every window by ROWTIME, implicitly.
            order = exp.Order(expressions=[exp.Ordered(this=exp.column(ROWTIME, quoted=True))])
            window.set("order", order)
    if not windowed:
        rowtime = later or exp.column(ROWTIME, table=alias, quoted=True)
        rewritten = rewritten.select(exp.alias_(rowtime, ROWTIME_ALIAS, quoted=True))
    if not sliding:
        return rewritten.sql(dialect="duckdb")
    rewritten = rewritten.select(
        exp.alias_(exp.column(NEW_ROW, table=alias, quoted=True), NEW_ROW, quoted=True)
    )
    inner = rewritten.sql(dialect="duckdb")
    return (
        f'SELECT * EXCLUDE ("{NEW_ROW}") FROM ({inner}) AS __shoal_rows WHERE "{NEW_ROW}" '
        f'ORDER BY "{ROWTIME_ALIAS}"'
    )


def _star_without_rowtime(select: exp.Select) -> None:
    """KDA's `SELECT STREAM *` is a stream's columns without ROWTIME (the row's ROWTIME is
    its own, not a column inserted by position)."""
    for projection in select.expressions:
        star = projection.this if isinstance(projection, exp.Column) else projection
        if isinstance(star, exp.Star) and not star.args.get("except_"):
            star.set("except_", [exp.column(ROWTIME, quoted=True)])


def _match_query(rewritten: exp.Select, left: str) -> str:
    """The ids of the left and right rows an outer join's ON pairs (its WHERE aside)."""
    from_ = rewritten.args.get("from_") or rewritten.args.get("from")
    assert isinstance(from_, exp.From)
    joined = rewritten.args["joins"][0]
    right = joined.this.alias
    query = (
        exp.select(
            exp.column(ROW_ID, table=left, quoted=True),
            exp.column(ROW_ID, table=right, quoted=True),
        )
        .from_(from_.this.copy())
        .join(joined.copy())
    )
    return query.sql(dialect="duckdb")


def _join_rowtime(tree: exp.Select, left: str, join: StreamJoin, variant: str) -> exp.Expr:
    """Binds a stream-to-stream join's right stream to JOIN_TABLE and adds its time condition
    to ON; returns the joined row's ROWTIME (the later of the pair's; for an unmatched row of
    an outer join, the end of its window), which an unqualified ROWTIME in the query now
    means."""
    joined = tree.args["joins"][0]
    if variant != "outer":  # pairs are inner-joined; unmatched rows wait for their window
        joined.set("side", None)
        joined.set("kind", None)
    table = joined.this
    assert isinstance(table, exp.Table)
    right = table.alias or join.right
    table.replace(exp.to_table(JOIN_TABLE).as_(right, quoted=True))
    left_time = exp.column(ROWTIME, table=left, quoted=True)
    right_time = exp.column(ROWTIME, table=right, quoted=True)
    bounds = []  # a ROWS side's rows pair whatever their ROWTIME: its side has no bound
    if join.right_rows is None:
        bounds.append(
            f"{right_time.sql()} >= {left_time.sql()} - INTERVAL {join.right_range_ms} MILLISECOND"
        )
    if join.left_rows is None:
        bounds.append(
            f"{right_time.sql()} <= {left_time.sql()} + INTERVAL {join.left_range_ms} MILLISECOND"
        )
    on: exp.Expr = exp.paren(joined.args["on"])
    if bounds:
        on = exp.and_(on, sqlglot.parse_one(" AND ".join(bounds), dialect="duckdb"))
    joined.set("on", on)
    later: exp.Expr = exp.func("greatest", left_time, right_time)
    if variant == "outer":  # one side is NULL: greatest() is the other's window end
        later = sqlglot.parse_one(
            f"greatest({left_time.sql()} + INTERVAL {join.left_range_ms} MILLISECOND, "
            f"{right_time.sql()} + INTERVAL {join.right_range_ms} MILLISECOND)",
            dialect="duckdb",
        )
    for column in list(tree.find_all(exp.Column)):
        if column.name == ROWTIME and not column.table:
            column.replace(later.copy())
    return later


def _rewrite_function(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Anonymous) and str(node.this).upper() == "STEP":
        column, interval = node.expressions
        size_us = _interval_ms(interval, 0) * 1000
        return sqlglot.parse_one(
            f"make_timestamp((epoch_us({column.sql(dialect='duckdb')}) // {size_us}) * {size_us})",
            dialect="duckdb",
        )
    if isinstance(node, exp.Floor) and node.args.get("to") is not None:
        unit = str(node.args["to"].name).lower()
        return exp.func("date_trunc", exp.Literal.string(unit), node.this)
    if isinstance(node, exp.Anonymous):
        kda = _kda_function(str(node.this).upper(), node.expressions)
        if kda is not None:
            return kda
    if isinstance(node, exp.Initcap):
        # Each word's first letter upper-cased and the rest lower-cased (KDA's INITCAP), in
        # DuckDB's lambda syntax (sqlglot's own translation uses the arrow DuckDB 2 refuses).
        text = node.this.sql(dialect="duckdb")
        return sqlglot.parse_one(
            f"array_to_string(list_transform(regexp_extract_all({text}, '(\\w+|\\W+)'), "
            "lambda part: upper(left(part, 1)) || lower(substring(part, 2))), '')",
            dialect="duckdb",
        )
    if isinstance(node, exp.SimilarTo):
        return exp.func(
            "regexp_full_match", node.this, exp.Literal.string(_similar_to_regex(node.expression))
        )
    return node


def _kda_function(name: str, arguments: list[exp.Expr]) -> exp.Expr | None:
    """KDA's functions DuckDB lacks under their names, as DuckDB expressions (None: not one).
    Dates are formatted with Java's SimpleDateFormat patterns, as the SQL reference says."""
    match name, arguments:
        case "TSDIFF", [first, second]:  # milliseconds between two timestamps
            return exp.Sub(
                this=exp.func("epoch_ms", first), expression=exp.func("epoch_ms", second)
            )
        case "MONOTONIC", [expression]:  # a declaration for KDA's planner; the value itself
            return expression
        case "CHAR_TO_TIMESTAMP", [pattern, text]:
            return exp.func("strptime", text, exp.Literal.string(java_date_format(pattern)))
        case "CHAR_TO_DATE", [pattern, text]:
            parsed = exp.func("strptime", text, exp.Literal.string(java_date_format(pattern)))
            return exp.cast(parsed, "DATE")
        case "CHAR_TO_TIME", [pattern, text]:
            parsed = exp.func("strptime", text, exp.Literal.string(java_date_format(pattern)))
            return exp.cast(parsed, "TIME")
        case "TIMESTAMP_TO_CHAR", [pattern, timestamp]:
            return exp.func("strftime", timestamp, exp.Literal.string(java_date_format(pattern)))
        case "UNIX_TIMESTAMP", [timestamp]:  # KDA: milliseconds since the epoch
            return exp.func("epoch_ms", timestamp)
        case "TO_TIMESTAMP", [milliseconds]:
            return exp.func(
                "make_timestamp", exp.Mul(this=milliseconds, expression=exp.Literal.number(1000))
            )
        case "REGEX_LOG_PARSE", [text, pattern]:
            duckdb_sql = log_parsing.regex_log_parse(_sql(text), _constant(name, pattern))
            return sqlglot.parse_one(duckdb_sql, dialect="duckdb")
        case "VARIABLE_COLUMN_LOG_PARSE", [text, columns, delimiter, *escape_and_quote] if len(
            escape_and_quote
        ) in (0, 2):
            spec = _constant(name, columns, numeric=True)
            fields: int | list[log_parsing.Field] = (
                int(spec)
                if spec.isdigit()
                else log_parsing.columns(spec, _log_parse_type, fixed=False)
            )
            escape = _constant(name, escape_and_quote[0]) if escape_and_quote else ""
            quote = _constant(name, escape_and_quote[1]) if escape_and_quote else ""
            duckdb_sql = log_parsing.variable_column_log_parse(
                _sql(text), fields, _constant(name, delimiter), escape, quote
            )
            return sqlglot.parse_one(duckdb_sql, dialect="duckdb")
        case "FIXED_COLUMN_LOG_PARSE", [text, columns]:
            fields = log_parsing.columns(_constant(name, columns), _log_parse_type, fixed=True)
            duckdb_sql = log_parsing.fixed_column_log_parse(_sql(text), fields)
            return sqlglot.parse_one(duckdb_sql, dialect="duckdb")
        case "W3C_LOG_PARSE", [text, format_string]:
            duckdb_sql = log_parsing.w3c_log_parse(_sql(text), _constant(name, format_string))
            return sqlglot.parse_one(duckdb_sql, dialect="duckdb")
        case "SYS_LOG_PARSE", [text]:
            return sqlglot.parse_one(log_parsing.sys_log_parse(_sql(text)), dialect="duckdb")
        case (("FAST_REGEX_LOG_PARSER" | "FAST_REGEX_LOG_PARSE"), [text, pattern]):
            duckdb_sql = log_parsing.fast_regex_log_parse(_sql(text), _constant(name, pattern))
            return sqlglot.parse_one(duckdb_sql, dialect="duckdb")
        case (
            (
                "REGEX_LOG_PARSE"
                | "VARIABLE_COLUMN_LOG_PARSE"
                | "FIXED_COLUMN_LOG_PARSE"
                | "W3C_LOG_PARSE"
                | "SYS_LOG_PARSE"
                | "FAST_REGEX_LOG_PARSER"
                | "FAST_REGEX_LOG_PARSE"
            ),
            _,
        ):
            raise log_parsing.LogParseError(
                messages.log_parse_arguments(name=name, count=len(arguments))
            )
    return None


def _sql(expression: exp.Expr) -> str:
    return expression.sql(dialect="duckdb")


def _constant(function: str, argument: exp.Expr, *, numeric: bool = False) -> str:
    """A string (or number) literal argument's value."""
    if isinstance(argument, exp.Literal) and (argument.is_string or numeric):
        return str(argument.this)
    raise log_parsing.LogParseError(
        messages.function_needs_literal(function=function, argument=argument.sql())
    )


def _log_parse_type(sql_type: str) -> str:
    try:
        return parse_sql_type(sql_type)
    except ShoalError as error:
        raise ValueError(error.message) from error


# Java SimpleDateFormat letters (by run length where it matters) as strftime directives.
_JAVA_DATE_LETTERS = {
    ("y", 4): "%Y",
    ("y", 2): "%y",
    ("M", 1): "%-m",
    ("M", 2): "%m",
    ("M", 3): "%b",
    ("M", 4): "%B",
    ("d", 1): "%-d",
    ("d", 2): "%d",
    ("H", 1): "%-H",
    ("H", 2): "%H",
    ("h", 1): "%-I",
    ("h", 2): "%I",
    ("m", 1): "%-M",
    ("m", 2): "%M",
    ("s", 1): "%-S",
    ("s", 2): "%S",
    ("S", 3): "%g",
    ("a", 1): "%p",
    ("E", 3): "%a",
    ("E", 4): "%A",
    ("D", 3): "%j",
    ("Z", 1): "%z",
}


def java_date_format(pattern: exp.Expr) -> str:
    """A SimpleDateFormat pattern ('yyyy-MM-dd HH:mm:ss') as a strftime format; refused
    (CodeValidation) if not a string literal or using a letter Shoal does not translate."""
    if not isinstance(pattern, exp.Literal) or not pattern.is_string:
        raise ShoalError(ErrorCode.CODE_VALIDATION, messages.DATE_FORMAT_NOT_LITERAL)
    text = str(pattern.this)
    result: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'":  # quoted literal text; '' is a quote
            end = text.find("'", index + 1)
            if end == index + 1:
                result.append("'")
                index += 2
                continue
            if end < 0:
                raise ShoalError(
                    ErrorCode.CODE_VALIDATION, messages.date_format_unclosed_quote(text=text)
                )
            result.append(text[index + 1 : end].replace("%", "%%"))
            index = end + 1
            continue
        if not char.isalpha():
            result.append("%%" if char == "%" else char)
            index += 1
            continue
        run = index
        while run < len(text) and text[run] == char:
            run += 1
        length = run - index
        directive = (
            _JAVA_DATE_LETTERS.get((char, length))
            or _JAVA_DATE_LETTERS.get((char, min(length, 4)))
            or (_JAVA_DATE_LETTERS.get((char, 2)) if length > 2 and char not in "MES" else None)
        )
        if directive is None:
            raise ShoalError(
                ErrorCode.CODE_VALIDATION,
                messages.date_format_letter_not_translated(text=text, letters=char * length),
            )
        result.append(directive)
        index = run
    return "".join(result)


def _similar_to_regex(pattern: exp.Expr) -> str:
    """SQL's SIMILAR TO pattern as a regular expression: % is any string, _ any character;
    the rest (| * + ? ( ) [ ]) is already regex syntax."""
    if not isinstance(pattern, exp.Literal) or not pattern.is_string:
        raise ShoalError(ErrorCode.CODE_VALIDATION, messages.SIMILAR_TO_NOT_LITERAL)
    return str(pattern.this).replace(".", "\\.").replace("%", ".*").replace("_", ".")


# --- References between statements ----------------------------------------------------------


def _check_references(program: Program) -> None:
    names = [stream.name for stream in program.streams]
    for stream in program.streams:
        if names.count(stream.name) > 1:
            raise refused(stream.line, f"stream {stream.name} defined twice")
    pump_names = [pump.name for pump in program.pumps]
    for pump in program.pumps:
        if pump_names.count(pump.name) > 1:
            raise refused(pump.line, f"pump {pump.name} defined twice")
        target = program.stream(pump.target)
        if target is None:
            raise ShoalError(
                ErrorCode.CODE_VALIDATION,
                messages.pump_target_undefined(line=pump.line, pump=pump.name, target=pump.target),
            )
        for table in pump.tables:
            if program.stream(table) is not None:
                raise refused(
                    pump.line,
                    f"a JOIN of pump {pump.name} with stream {table} without a window",
                    f"write JOIN {table} OVER (RANGE INTERVAL 'n' unit PRECEDING) AS alias "
                    "ON a condition",
                )
        if pump.window is not None and pump.window.column != ROWTIME:
            # An event-time window needs the time column to be a TIMESTAMP of the source; the
            # engine's dry run checks the type once the source's columns are known.
            continue
