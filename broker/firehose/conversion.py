"""Record format conversion: JSON records to Apache Parquet or ORC, with the columns of a Glue
table (DataFormatConversionConfiguration). The one module importing pyarrow.

Input: one JSON object per record, read as the OpenX JSON SerDe reads it by default (keys
matched to columns case-insensitively; HiveJsonSerDe reads the same JSON). Columns take their
Hive types (string, varchar, char, tinyint, smallint, int, bigint, float, double, boolean,
decimal(p,s), date, timestamp, array<..>, map<..>, struct<..>); a missing key is null. A
timestamp is ISO 8601 text or epoch seconds. Output: one Parquet file (ParquetSerDe,
compression SNAPPY by default, GZIP or UNCOMPRESSED) or ORC file (OrcSerDe, SNAPPY by
default, ZLIB or NONE) per object. A record that is not a JSON object, or whose values do not
fit the columns, fails conversion alone (AWS's DataFormatConversion error codes) and goes to
the error output.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.orc as pa_orc
import pyarrow.parquet as pa_parquet


@dataclass(frozen=True, slots=True, kw_only=True)
class Converted:
    data: bytes  # the Parquet or ORC file ("" when every record failed)
    converted: int  # how many records it holds
    failures: list[tuple[int, str, str]]  # (record index, error code, message)


def output_format(configuration: Mapping[str, Any]) -> tuple[str, str]:
    """("parquet" | "orc", compression) of a DataFormatConversionConfiguration."""
    serializer = (configuration.get("OutputFormatConfiguration") or {}).get("Serializer") or {}
    if "OrcSerDe" in serializer:
        return "orc", str((serializer["OrcSerDe"] or {}).get("Compression") or "SNAPPY")
    parquet = serializer.get("ParquetSerDe") or {}
    return "parquet", str(parquet.get("Compression") or "SNAPPY")


def _split_top(text: str) -> list[str]:
    """`a:int,b:array<int>` -> ["a:int", "b:array<int>"] (commas outside brackets)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


_SIMPLE = {
    "string": pa.string(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "int": pa.int32(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("ms"),
    "binary": pa.binary(),
}


def arrow_type(hive_type: str) -> pa.DataType:
    """The Arrow type of a Hive column type; ValueError for one it does not know."""
    text = hive_type.strip()
    lowered = text.lower()
    if lowered in _SIMPLE:
        return _SIMPLE[lowered]
    if lowered.startswith(("varchar", "char")):
        return pa.string()
    if lowered.startswith("decimal"):
        precision, scale = (int(x) for x in lowered[lowered.index("(") + 1 : -1].split(","))
        return pa.decimal128(precision, scale)
    if lowered.startswith("array<") and lowered.endswith(">"):
        return pa.list_(arrow_type(text[6:-1]))
    if lowered.startswith("map<") and lowered.endswith(">"):
        key, value = _split_top(text[4:-1])
        return pa.map_(arrow_type(key), arrow_type(value))
    if lowered.startswith("struct<") and lowered.endswith(">"):
        fields = []
        for part in _split_top(text[7:-1]):
            name, _, member_type = part.partition(":")
            fields.append(pa.field(name.strip(), arrow_type(member_type)))
        return pa.struct(fields)
    raise ValueError(f"unsupported column type {hive_type!r}")


def schema_of(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    return pa.schema([pa.field(name, arrow_type(hive)) for name, hive in columns])


def _value(value: Any, arrow: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_timestamp(arrow):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if pa.types.is_date(arrow):
        return dt.date.fromisoformat(str(value))
    if pa.types.is_string(arrow) and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, dict | list) else str(value)
    return value


def _row(record: bytes, schema: pa.Schema) -> dict[str, Any]:
    document = json.loads(record)
    if not isinstance(document, dict):
        raise ValueError("the record is not a JSON object")
    by_lower = {str(key).lower(): value for key, value in document.items()}
    return {field.name: _value(by_lower.get(field.name.lower()), field.type) for field in schema}


def convert(
    records: Sequence[bytes], columns: Sequence[tuple[str, str]], configuration: Mapping[str, Any]
) -> Converted:
    """The records as one Parquet/ORC file; records that fail are left out and listed."""
    schema = schema_of(columns)
    rows: list[dict[str, Any]] = []
    failures: list[tuple[int, str, str]] = []
    for index, record in enumerate(records):
        try:
            row = _row(record, schema)
            pa.Table.from_pylist([row], schema=schema)  # the values fit the columns
        except (ValueError, TypeError, OverflowError, pa.ArrowException) as error:
            failures.append((index, "DataFormatConversion.MalformedData", str(error)[:500]))
            continue
        rows.append(row)
    if not rows:
        return Converted(data=b"", converted=0, failures=failures)
    table = pa.Table.from_pylist(rows, schema=schema)
    kind, compression = output_format(configuration)
    out = io.BytesIO()
    if kind == "parquet":
        codec = {"UNCOMPRESSED": "none", "GZIP": "gzip", "SNAPPY": "snappy"}.get(compression)
        pa_parquet.write_table(table, out, compression=codec or "snappy")
    else:
        codec = {"NONE": "uncompressed", "ZLIB": "zlib", "SNAPPY": "snappy"}.get(compression)
        pa_orc.write_table(table, out, compression=codec or "snappy")
    return Converted(data=out.getvalue(), converted=len(rows), failures=failures)


def extension(configuration: Mapping[str, Any]) -> str:
    kind, _ = output_format(configuration)
    return ".parquet" if kind == "parquet" else ".orc"
