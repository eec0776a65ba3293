"""Records to rows and rows to records: the input and output schemas of an application.

Input (`InputSchema`, KDA's SourceSchema): a record is JSON or CSV (`RecordFormat`), decoded
as UTF-8, and becomes one row of the source in-application stream: ROWTIME, then the
record columns in the schema's order, each read by its `Mapping` (JSON: a path such as
`$.TICKER_SYMBOL` or `$.order.id`; CSV: the column's position) and converted to its `SqlType`.
A record that does not parse, or a value that does not convert, is an error (KDA sends it to
`error_stream`); `parse_record` raises `RecordError` naming why.

Output (`DestinationSchema`): JSON objects with the stream's column names as keys (ROWTIME
left out, as KDA does), or CSV lines; timestamps as `YYYY-MM-DD HH:MM:SS.fff`.

`discover_schema` infers an InputSchema from sample records (DiscoverInputSchema), with the
column names, paths and types KDA's console proposes. Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from broker.analytics import messages

Row = tuple[Any, ...]

_TIMESTAMP_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
)
_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


class RecordError(ValueError):
    """A record that cannot become a row (KDA's error_stream)."""


def to_timestamp(value_ms: int) -> datetime:
    """Epoch milliseconds as the engine's TIMESTAMP (naive, UTC)."""
    return datetime.fromtimestamp(value_ms / 1000, tz=UTC).replace(tzinfo=None)


def from_timestamp(value: datetime) -> int:
    """The engine's TIMESTAMP (naive, UTC) as epoch milliseconds."""
    return round(value.replace(tzinfo=UTC).timestamp() * 1000)


def convert(value: Any, sql_type: str) -> Any:
    """A JSON or CSV value as the SQL type (KDA's conversions); None stays None."""
    return converter(sql_type)(value)


Converter = Callable[[Any], Any]


def converter(sql_type: str) -> Converter:
    """The conversion of one SQL type, chosen once per column (the per-record path)."""
    base = sql_type.split("(", 1)[0].strip().upper()
    if base in ("VARCHAR", "CHAR", "CHARACTER"):
        return _to_text
    convert_one = _CONVERSIONS.get(base)
    if convert_one is None:
        raise RecordError(messages.record_sql_type_not_supported(sql_type=sql_type))

    def convert_value(value: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            return convert_one(value)
        except (ValueError, TypeError, ArithmeticError) as error:
            raise RecordError(
                messages.record_value_not_of_type(value=value, sql_type=sql_type)
            ) from error

    return convert_value


def _to_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    return int(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "t", "yes")


def _timestamp(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return to_timestamp(int(value))
    text = str(value)
    for layout in _TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    raise RecordError(messages.record_not_a_timestamp(value=value))


def compile_path(path: str) -> tuple[str | int, ...]:
    """A simple JSONPath (`$.a.b`, `$.a[0]`) as its steps: member names and list indexes."""
    if not path.startswith("$"):
        raise RecordError(messages.record_mapping_not_json_path(path=path))
    steps: list[str | int] = []
    for match in _PATH_STEP.finditer(path, 1):
        key, index = match.group(1), match.group(2)
        steps.append(key if key is not None else int(index))
    return tuple(steps)


def _json_path(document: Any, steps: tuple[str | int, ...]) -> Any:
    """The value at a compiled path's steps; None where absent."""
    current = document
    for step in steps:
        if isinstance(step, str):
            current = current.get(step) if isinstance(current, dict) else None
        else:
            current = current[step] if isinstance(current, list) and step < len(current) else None
        if current is None:
            return None
    return current


class RecordParser:
    """Turns one input record into a row of the source stream (after ROWTIME and
    APPROXIMATE_ARRIVAL_TIME). Built once per input schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        record_format = schema["RecordFormat"]
        self.format = str(record_format["RecordFormatType"])
        self.columns = [
            (str(column["Name"]), str(column.get("Mapping", "")), str(column["SqlType"]))
            for column in schema["RecordColumns"]
        ]
        mapping = record_format.get("MappingParameters", {})
        csv_parameters = mapping.get("CSVMappingParameters", {})
        self.column_delimiter = str(csv_parameters.get("RecordColumnDelimiter", ","))
        json_parameters = mapping.get("JSONMappingParameters", {})
        self.row_path = compile_path(str(json_parameters.get("RecordRowPath", "$")))
        # Per column, once: the path's steps and the type's conversion.
        self._plan = [
            (
                compile_path(mapping if mapping.startswith("$") else f"$.{mapping or name}"),
                converter(sql_type),
            )
            for name, mapping, sql_type in self.columns
        ]
        # Every column a top-level member (`$.NAME`, the common case): one dict.get each.
        self._flat = all(len(steps) == 1 and isinstance(steps[0], str) for steps, _ in self._plan)

    def rows(self, data: bytes) -> list[tuple[Any, ...]]:
        """The record's value rows (CSV records may hold several lines)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RecordError(messages.RECORD_NOT_UTF8) from error
        if self.format == "JSON":
            return [self._json_row(text)]
        return [self._csv_row(line) for line in text.splitlines() if line.strip()]

    def _json_row(self, text: str) -> tuple[Any, ...]:
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise RecordError(messages.RECORD_NOT_JSON) from error
        base = _json_path(document, self.row_path) if self.row_path else document
        if self._flat:
            if not isinstance(base, dict):
                return tuple(None for _ in self._plan)
            get = base.get
            return tuple(convert_one(get(steps[0])) for steps, convert_one in self._plan)
        return tuple(convert_one(_json_path(base, steps)) for steps, convert_one in self._plan)

    def _csv_row(self, line: str) -> tuple[Any, ...]:
        fields = next(csv.reader([line], delimiter=self.column_delimiter[:1] or ","))
        if len(fields) < len(self.columns):
            raise RecordError(
                messages.record_column_count(count=len(fields), expected=len(self.columns))
            )
        return tuple(
            convert(fields[index], sql_type) for index, (_, _, sql_type) in enumerate(self.columns)
        )


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def format_record(names: Sequence[str], values: Sequence[Any], record_format: str) -> bytes:
    """One output record: a JSON object of the columns, or a CSV line."""
    if record_format == "JSON":
        document = {name: _text(value) for name, value in zip(names, values, strict=True)}
        return json.dumps(document, separators=(",", ":")).encode()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        ["" if value is None else _text(value) for value in values]
    )
    return buffer.getvalue().encode()


def _to_date(value: Any) -> date:
    return date.fromisoformat(str(value))


_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("INTEGER", "INT", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT"), _to_int),
    **dict.fromkeys(("DOUBLE", "REAL", "FLOAT"), float),
    **dict.fromkeys(("DECIMAL", "NUMERIC"), lambda value: Decimal(str(value))),
    "BOOLEAN": _to_bool,
    "TIMESTAMP": _timestamp,
    "DATE": _to_date,
}


# --- DiscoverInputSchema ----------------------------------------------------------------------


def _sql_type_of(values: Sequence[Any]) -> str:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return "BOOLEAN"
    if present and all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return "INTEGER" if all(-(2**31) <= value < 2**31 for value in present) else "BIGINT"
    if present and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in present
    ):
        return "REAL"
    longest = max((len(str(value)) for value in present), default=1)
    size = 4
    while size < longest:
        size *= 2
    return f"VARCHAR({size})"


def _csv_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def discover_schema(samples: Sequence[bytes]) -> tuple[dict[str, Any], list[list[str]]]:
    """An InputSchema for the sample records and their parsed values (as text): JSON when
    every sample is a JSON object (one column per top-level member), CSV otherwise. Raises
    ValueError when the samples share no format."""
    texts = [sample.decode("utf-8", errors="replace").strip() for sample in samples]
    documents: list[dict[str, Any]] = []
    for text in texts:
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            break
        if not isinstance(document, dict):
            break
        documents.append(document)
    if len(documents) == len(texts):
        names: list[str] = []
        for document in documents:
            names.extend(name for name in document if name not in names)
        columns = [
            {
                "Name": name.upper(),
                "Mapping": f"$.{name}",
                "SqlType": _sql_type_of([document.get(name) for document in documents]),
            }
            for name in names
        ]
        schema = {
            "RecordFormat": {
                "RecordFormatType": "JSON",
                "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
            },
            "RecordEncoding": "UTF-8",
            "RecordColumns": columns,
        }
        parsed = [[_stringify(document.get(name)) for name in names] for document in documents]
        return schema, parsed
    rows = [next(csv.reader([text])) for text in texts if text]
    width = {len(row) for row in rows}
    if len(width) != 1 or width == {1}:
        raise ValueError("The records are neither JSON objects nor CSV lines of equal width.")
    count = width.pop()
    csv_columns = [
        {
            "Name": f"COL_{index + 1}",
            "SqlType": _sql_type_of([_csv_value(row[index]) for row in rows]),
        }
        for index in range(count)
    ]
    schema = {
        "RecordFormat": {
            "RecordFormatType": "CSV",
            "MappingParameters": {
                "CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}
            },
        },
        "RecordEncoding": "UTF-8",
        "RecordColumns": csv_columns,
    }
    return schema, [list(row) for row in rows]


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
