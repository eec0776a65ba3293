"""A Redshift destination's COPY, as Shoal runs it into PostgreSQL. Pure (values in and out).

Firehose delivers to Redshift by staging each buffer as an S3 object, then running
`COPY <DataTableName> (<DataTableColumns>) FROM 's3://<object>' <CopyOptions>` on the cluster
named by `ClusterJDBCURL`. PostgreSQL cannot read S3, so Shoal reads the staged object itself
and streams its rows through `COPY ... FROM STDIN`; this module turns the CopyCommand into
that load (`CopyPlan`) and the staged bytes into what is streamed:

- no format option: Redshift's default, `|`-delimited text with `\\N` for NULL (PostgreSQL's
  text format with DELIMITER '|');
- `CSV` (with `DELIMITER`, `QUOTE [AS]`): PostgreSQL's csv format;
- `JSON 'auto'` / `JSON 'auto ignorecase'`: each JSON object's members matched to the
  columns by name (case-insensitively with ignorecase), missing ones NULL, nested values
  as JSON text; rows written one by one;
- `GZIP`: the staged object is gzip-compressed; `IGNOREHEADER n`: the first n lines skipped;
  `NULL [AS] 's'`, `DELIMITER [AS] 'c'`;
- accepted and without effect here (PostgreSQL's parsing already does what they ask):
  `DATEFORMAT`/`TIMEFORMAT 'auto'`, `COMPUPDATE`/`STATUPDATE` [ON|OFF], `REGION 's'`.

Any other option (a jsonpaths file, BZIP2, ZSTD, MAXERROR, ...) is refused when the delivery
stream is created or updated, naming it: loading silently differently from Redshift would be
worse.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["text", "csv", "json"]

_JDBC_URL = re.compile(
    r"^jdbc:(?:redshift|postgresql)://(?P<host>[^:/?]+)(?::(?P<port>\d+))?/(?P<database>[^?;]+)"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_NO_EFFECT = {"DATEFORMAT", "TIMEFORMAT"}
_SWITCHES = {"COMPUPDATE", "STATUPDATE"}
REDSHIFT_DEFAULT_PORT = 5439


class CopyCommandError(ValueError):
    """The CopyCommand or the JDBC URL cannot be run (the message says why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where to connect: from `jdbc:redshift://host:port/database` (or jdbc:postgresql)."""

    host: str
    port: int
    database: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyPlan:
    table: tuple[str, ...]  # the (schema-qualified) table name, one identifier per part
    columns: tuple[str, ...]  # empty: every column of the table, in order
    format: Format = "text"
    delimiter: str = "|"
    quote: str = '"'
    null: str | None = None
    gzip: bool = False
    ignore_header: int = 0
    ignore_case: bool = False


def target(jdbc_url: str) -> Target:
    match = _JDBC_URL.match(jdbc_url)
    if match is None:
        raise CopyCommandError(
            f"ClusterJDBCURL {jdbc_url} is not a jdbc:redshift://host:port/database URL."
        )
    port = int(match["port"]) if match["port"] else REDSHIFT_DEFAULT_PORT
    return Target(host=match["host"], port=port, database=match["database"])


def _identifiers(name: str, what: str) -> tuple[str, ...]:
    parts = tuple(part.strip().strip('"') for part in name.split("."))
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise CopyCommandError(f"{what} {name!r} is not a table name ([schema.]table).")
    return parts


def plan(copy_command: Mapping[str, Any]) -> CopyPlan:
    """The load a CopyCommand asks for; CopyCommandError naming what cannot be run."""
    table = _identifiers(str(copy_command.get("DataTableName") or ""), "DataTableName")
    columns_text = str(copy_command.get("DataTableColumns") or "").strip()
    columns: tuple[str, ...] = ()
    if columns_text:
        columns = tuple(column.strip().strip('"') for column in columns_text.split(","))
        for column in columns:
            if not _IDENTIFIER.match(column):
                raise CopyCommandError(f"DataTableColumns: {column!r} is not a column name.")
    options = _options(str(copy_command.get("CopyOptions") or ""))
    return CopyPlan(table=table, columns=columns, **options)


def _options(text: str) -> dict[str, Any]:
    try:
        tokens = shlex.split(text.strip().removesuffix(";"), posix=True)
    except ValueError as error:
        raise CopyCommandError(f"CopyOptions {text!r} cannot be parsed: {error}.") from error
    options: dict[str, Any] = {}
    position = 0

    def value(option: str) -> str:
        nonlocal position
        if position < len(tokens) and tokens[position].upper() == "AS":
            position += 1
        if position >= len(tokens):
            raise CopyCommandError(f"CopyOptions: {option} needs a value.")
        position += 1
        return tokens[position - 1]

    while position < len(tokens):
        option = tokens[position].upper()
        position += 1
        if option == "JSON":
            mode = value(option).lower()
            if mode not in ("auto", "auto ignorecase"):
                raise CopyCommandError(
                    f"CopyOptions: JSON {mode!r} (a jsonpaths file) is not supported by "
                    "Shoal's PostgreSQL load; use JSON 'auto' or 'auto ignorecase'."
                )
            options["format"] = "json"
            options["ignore_case"] = mode == "auto ignorecase"
        elif option == "CSV":
            options["format"] = "csv"
            options.setdefault("delimiter", ",")
            if position < len(tokens) and tokens[position].upper() == "QUOTE":
                position += 1
                options["quote"] = value("QUOTE")
        elif option in ("DELIMITER", "QUOTE"):
            options[option.lower()] = value(option)
            if len(options[option.lower()]) != 1:
                raise CopyCommandError(f"CopyOptions: {option} must be one character.")
        elif option == "NULL":
            options["null"] = value(option)
        elif option == "GZIP":
            options["gzip"] = True
        elif option == "IGNOREHEADER":
            count = value(option)
            if not count.isdigit():
                raise CopyCommandError("CopyOptions: IGNOREHEADER needs a number of lines.")
            options["ignore_header"] = int(count)
        elif option in _NO_EFFECT:
            if value(option).lower() != "auto":
                raise CopyCommandError(f"CopyOptions: only {option} 'auto' is supported.")
        elif option in _SWITCHES:
            if position < len(tokens) and tokens[position].upper() in ("ON", "OFF", "TRUE"):
                position += 1
        elif option == "REGION":
            value(option)
        else:
            raise CopyCommandError(
                f"CopyOptions: {option} is not supported by Shoal's PostgreSQL load."
            )
    if options.get("format") == "json" and ("delimiter" in options or "null" in options):
        raise CopyCommandError("CopyOptions: JSON cannot be combined with DELIMITER or NULL.")
    return options


def lines(data: bytes, ignore_header: int) -> bytes:
    """The data less its first `ignore_header` lines."""
    for _ in range(ignore_header):
        end = data.find(b"\n")
        data = b"" if end < 0 else data[end + 1 :]
    return data


def json_rows(data: bytes, columns: Sequence[str], *, ignore_case: bool) -> list[list[str | None]]:
    """JSON 'auto': one row per JSON object (objects may follow each other with or without
    newlines), members matched to `columns` by name, a missing or null member NULL, nested
    arrays and objects as JSON text. CopyCommandError for data that is not JSON objects."""
    text = data.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    rows: list[list[str | None]] = []
    position = 0
    wanted = [column.lower() if ignore_case else column for column in columns]
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return rows
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise CopyCommandError(f"Invalid JSON in the staged object: {error}.") from error
        if not isinstance(document, dict):
            raise CopyCommandError("JSON 'auto' needs a JSON object per row.")
        members = (
            {str(key).lower(): item for key, item in document.items()} if ignore_case else document
        )
        rows.append([_text(members.get(column)) for column in wanted])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
