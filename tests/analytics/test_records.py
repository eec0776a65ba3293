"""Input records to rows (JSON and CSV schemas, mappings, SQL types), rows to output records,
and schema discovery."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from broker.analytics import records


def test_json_mappings_and_types() -> None:
    parser = records.RecordParser(
        {
            "RecordFormat": {
                "RecordFormatType": "JSON",
                "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
            },
            "RecordColumns": [
                {"Name": "ID", "Mapping": "$.order.id", "SqlType": "BIGINT"},
                {"Name": "FIRST_ITEM", "Mapping": "$.items[0]", "SqlType": "VARCHAR(8)"},
                {"Name": "TOTAL", "Mapping": "$.total", "SqlType": "DECIMAL(8,2)"},
                {"Name": "AT", "Mapping": "$.at", "SqlType": "TIMESTAMP"},
                {"Name": "PAID", "Mapping": "$.paid", "SqlType": "BOOLEAN"},
                {"Name": "MISSING", "Mapping": "$.nothing", "SqlType": "INTEGER"},
            ],
        }
    )
    data = (
        b'{"order": {"id": 12345678901}, "items": ["pen", "ink"], "total": "12.50",'
        b' "at": "2026-12-06 10:00:00.250", "paid": true}'
    )
    assert parser.rows(data) == [
        (12345678901, "pen", Decimal("12.50"), datetime(2026, 12, 6, 10, 0, 0, 250_000), True, None)
    ]
    with pytest.raises(records.RecordError):
        parser.rows(b"not json")
    with pytest.raises(records.RecordError):
        parser.rows(b'{"order": {"id": "twelve"}}')


def test_csv_records_may_hold_several_lines() -> None:
    parser = records.RecordParser(
        {
            "RecordFormat": {
                "RecordFormatType": "CSV",
                "MappingParameters": {
                    "CSVMappingParameters": {
                        "RecordRowDelimiter": "\n",
                        "RecordColumnDelimiter": ",",
                    }
                },
            },
            "RecordColumns": [
                {"Name": "TICKER", "SqlType": "VARCHAR(4)"},
                {"Name": "PRICE", "SqlType": "DOUBLE"},
            ],
        }
    )
    assert parser.rows(b"QXZ,84.5\nABC,1\n") == [("QXZ", 84.5), ("ABC", 1.0)]
    with pytest.raises(records.RecordError):
        parser.rows(b"QXZ\n")


def test_output_formats() -> None:
    values = ("QXZ", 3, datetime(2026, 12, 6, 10, 0, 10), None)
    names = ["TICKER_SYMBOL", "N", "WINDOW_END", "NOTHING"]
    assert records.format_record(names, values, "JSON") == (
        b'{"TICKER_SYMBOL":"QXZ","N":3,"WINDOW_END":"2026-12-06 10:00:10.000","NOTHING":null}'
    )
    assert records.format_record(names, values, "CSV") == b"QXZ,3,2026-12-06 10:00:10.000,\n"


def test_discovery() -> None:
    schema, parsed = records.discover_schema(
        [
            b'{"TICKER_SYMBOL": "QXZ", "SECTOR": "HEALTHCARE", "CHANGE": -0.05, "PRICE": 84.51}',
            b'{"TICKER_SYMBOL": "AB", "SECTOR": "TECHNOLOGY", "CHANGE": 1, "PRICE": 12}',
        ]
    )
    assert schema["RecordFormat"]["RecordFormatType"] == "JSON"
    assert [(c["Name"], c["Mapping"], c["SqlType"]) for c in schema["RecordColumns"]] == [
        ("TICKER_SYMBOL", "$.TICKER_SYMBOL", "VARCHAR(4)"),
        ("SECTOR", "$.SECTOR", "VARCHAR(16)"),
        ("CHANGE", "$.CHANGE", "REAL"),
        ("PRICE", "$.PRICE", "REAL"),
    ]
    assert parsed[1] == ["AB", "TECHNOLOGY", "1", "12"]
    schema, parsed = records.discover_schema([b"QXZ,84.5,3", b"ABC,1.5,4"])
    assert [(c["Name"], c["SqlType"]) for c in schema["RecordColumns"]] == [
        ("COL_1", "VARCHAR(4)"),
        ("COL_2", "REAL"),
        ("COL_3", "INTEGER"),
    ]
    with pytest.raises(ValueError, match="neither JSON"):
        records.discover_schema([b"a,b", b"a,b,c"])
