"""Dynamic partitioning's inline parsing: a MetadataExtraction processor's JQ query
(`MetadataExtractionQuery`, JsonParsingEngine JQ-1.6) evaluated on each JSON record, giving the
record's partition keys for `!{partitionKeyFromQuery:<name>}` in the prefix. The one module
importing jq (bindings to libjq, the reference implementation).

The query must produce one JSON object whose values are strings, numbers or booleans (AWS's
rule); anything else, or a record that is not JSON, fails partitioning for that record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import jq


class PartitioningError(ValueError):
    """The record's partition keys cannot be computed."""


@cache
def _compiled(query: str) -> Any:
    try:
        return jq.compile(query)
    except ValueError as error:
        raise PartitioningError(f"The MetadataExtractionQuery does not compile: {error}") from error


def check_query(query: str) -> str | None:
    """Why `query` cannot be used (None: it compiles)."""
    try:
        _compiled(query)
    except PartitioningError as error:
        return str(error)
    return None


def extract(query: str, record: bytes) -> dict[str, str]:
    """The partition keys of one record."""
    try:
        document = json.loads(record)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PartitioningError("The record is not valid JSON.") from error
    try:
        results = _compiled(query).input_value(document).all()
    except ValueError as error:
        raise PartitioningError(f"The query failed on the record: {error}") from error
    if len(results) != 1 or not isinstance(results[0], Mapping):
        raise PartitioningError("The query must produce one JSON object.")
    keys: dict[str, str] = {}
    for name, value in results[0].items():
        if value is None or isinstance(value, dict | list):
            raise PartitioningError(f"Partition key {name} is not a string or number.")
        keys[str(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return keys
