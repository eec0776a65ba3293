"""KDA's log-parsing functions as DuckDB expressions (SQL text), for `sql.py` to splice in.

Each function of the KDA SQL Reference returns a row whose fields a query reads by name
(`T.REC.COLUMN1`); here it is a DuckDB STRUCT with the same field names:

- `REGEX_LOG_PARSE(text, pattern)`: the pattern's groups, left to right, as COLUMN1..COLUMNn
  (VARCHAR); NULL when the pattern does not match the whole text (Java's `Matcher.matches`).
  DuckDB's regular expressions are RE2's: Java's backreferences and lookarounds are refused
  by the engine's dry run at CreateApplication, not run differently.
- `VARIABLE_COLUMN_LOG_PARSE(text, columns, delimiter)`: the text split at every delimiter
  (a character or a string); `columns` is a count (fields COLUMN1..COLUMNn, VARCHAR) or a list
  `'NAME TYPE type [NOT NULL], ...'` (each field cast to its type, NULL when it does not
  convert). Missing fields are NULL, extra ones are ignored.
- `FIXED_COLUMN_LOG_PARSE(text, 'NAME TYPE type [NOT NULL] START n [FOR m], ...')`: each
  field the characters from position n (0 is the first) for m characters (to the end without
  FOR), cast to its type (surrounding blanks trimmed for non-character types).

Pure text in, text out; a specification Shoal cannot run raises `LogParseError`, which
`sql.py` turns into CodeValidationException naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# KDA: "The columns will be of type varchar(1024)".
PARSED_TEXT_TYPE = "VARCHAR"


class LogParseError(ValueError):
    """The function's arguments are not a specification Shoal can run (the message says why)."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    sql_type: str  # the engine's type
    start: int | None = None  # FIXED_COLUMN_LOG_PARSE: 0-based position
    length: int | None = None  # FIXED_COLUMN_LOG_PARSE: FOR m (None: to the end)


def literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _struct(fields: list[tuple[str, str]]) -> str:
    return "struct_pack(" + ", ".join(f"{_identifier(n)} := {v}" for n, v in fields) + ")"


def group_count(pattern: str) -> int:
    """The capturing groups of a Java regular expression (its named groups `(?<name>...)`
    counted as Python spells them)."""
    python = re.sub(r"\(\?<(?![=!])", "(?P<", pattern)
    try:
        return re.compile(python).groups
    except re.error as error:
        message = f"the pattern {pattern!r} is not a regular expression: {error}"
        raise LogParseError(message) from error


def regex_log_parse(text: str, pattern: str) -> str:
    groups = group_count(pattern)
    if groups == 0:
        raise LogParseError(f"the pattern {pattern!r} has no group: it would parse no column")
    anchored = literal(f"^(?:{pattern})$")
    names = ", ".join(literal(f"COLUMN{index}") for index in range(1, groups + 1))
    return (
        f"CASE WHEN regexp_matches({text}, {anchored}) "
        f"THEN regexp_extract({text}, {anchored}, [{names}]) END"
    )


def _split_columns(spec: str) -> list[str]:
    """The comma-separated column descriptions of `spec` (commas inside parentheses, as in
    DECIMAL(10, 2), do not separate)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in spec:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += (char == "(") - (char == ")")
        current.append(char)
    parts.append("".join(current).strip())
    if any(not part for part in parts):
        raise LogParseError(f"an empty column description in {spec!r}")
    return parts


_COLUMN = re.compile(
    r'^(?P<name>"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)\s+TYPE\s+(?P<type>.+?)'
    r"(?:\s+NOT\s+NULL)?"
    r"(?:\s+START\s+(?P<start>\d+)(?:\s+FOR\s+(?P<length>\d+))?)?$",
    re.IGNORECASE | re.DOTALL,
)


def columns(spec: str, engine_type: Callable[[str], str], *, fixed: bool) -> list[Field]:
    """The fields of a column description list (`engine_type` turns a SQL type into the
    engine's, raising ValueError for one it does not know)."""
    fields: list[Field] = []
    for description in _split_columns(spec):
        match = _COLUMN.match(description)
        if match is None:
            expected = "NAME TYPE type [NOT NULL]" + (" START n [FOR m]" if fixed else "")
            raise LogParseError(f"the column description {description!r} is not {expected}")
        if "'" in match["type"]:
            raise LogParseError(f"a format string in {description!r} (not run by Shoal)")
        if fixed != (match["start"] is not None):
            raise LogParseError(
                f"START in {description!r}" if not fixed else f"no START in {description!r}"
            )
        name = match["name"]
        name = name[1:-1] if name.startswith('"') else name.upper()
        try:
            sql_type = engine_type(match["type"].strip())
        except ValueError as error:
            raise LogParseError(f"the type of column {name}: {error}") from error
        fields.append(
            Field(
                name=name,
                sql_type=sql_type,
                start=int(match["start"]) if match["start"] is not None else None,
                length=int(match["length"]) if match["length"] is not None else None,
            )
        )
    return fields


def _cast(value: str, sql_type: str) -> str:
    if sql_type.startswith("VARCHAR") or sql_type == PARSED_TEXT_TYPE:
        return value
    return f"TRY_CAST(trim({value}) AS {sql_type})"


def variable_column_log_parse(text: str, fields: int | list[Field], delimiter: str) -> str:
    if not delimiter:
        raise LogParseError("an empty delimiter")
    if isinstance(fields, int):
        if fields < 1:
            raise LogParseError(f"{fields} columns")
        fields = [Field(f"COLUMN{index}", PARSED_TEXT_TYPE) for index in range(1, fields + 1)]
    parts = f"string_split({text}, {literal(delimiter)})"
    values = [
        (field.name, _cast(f"{parts}[{index}]", field.sql_type))
        for index, field in enumerate(fields, start=1)
    ]
    return f"CASE WHEN {text} IS NOT NULL THEN {_struct(values)} END"


def fixed_column_log_parse(text: str, fields: list[Field]) -> str:
    values = []
    for field in fields:
        assert field.start is not None
        if field.length is None:
            part = f"substring({text}, {field.start + 1})"
        else:
            part = f"substring({text}, {field.start + 1}, {field.length})"
        values.append((field.name, _cast(part, field.sql_type)))
    return f"CASE WHEN {text} IS NOT NULL THEN {_struct(values)} END"
