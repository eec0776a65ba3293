"""Which Iceberg table a record goes to, and how (Firehose's routing). Pure.

An Iceberg destination lists its tables in DestinationTableConfigurationList (each with
optional UniqueKeys and S3ErrorOutputPrefix). A record's route comes, as AWS documents it, from
routing information: the MetadataExtraction processor's JQ query (an object with
`destinationDatabaseName`, `destinationTableName` and optionally `operation`) or the Lambda's
`metadata.otfMetadata` for the record; with a single table listed, a record without routing
information goes to it. `operation` is `insert` (the default), `update` (an upsert on the
table's UniqueKeys) or `delete` (the rows with the record's UniqueKeys); update and delete need
UniqueKeys. A record that cannot be routed fails with an `Iceberg.*` error code into the S3
error output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPERATIONS = ("insert", "update", "delete")
TableName = tuple[str, str]  # (database, table)


class RoutingError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class TableConfig:
    name: TableName
    unique_keys: tuple[str, ...] = ()
    error_output_prefix: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    table: TableName
    operation: str  # one of OPERATIONS


def table_configs(configuration: Mapping[str, Any]) -> dict[TableName, TableConfig]:
    """The destination's tables by (database, table)."""
    found: dict[TableName, TableConfig] = {}
    for entry in configuration.get("DestinationTableConfigurationList") or []:
        name = (str(entry["DestinationDatabaseName"]), str(entry["DestinationTableName"]))
        found[name] = TableConfig(
            name=name,
            unique_keys=tuple(str(key) for key in entry.get("UniqueKeys") or ()),
            error_output_prefix=str(entry.get("S3ErrorOutputPrefix") or ""),
        )
    return found


def check(configuration: Mapping[str, Any]) -> str | None:
    """Why the table list is refused (None: accepted)."""
    entries: Sequence[Mapping[str, Any]] = (
        configuration.get("DestinationTableConfigurationList") or []
    )
    if not entries:
        return "DestinationTableConfigurationList must name at least one table."
    names = [(e.get("DestinationDatabaseName"), e.get("DestinationTableName")) for e in entries]
    if len(set(names)) != len(names):
        return "DestinationTableConfigurationList names a table twice."
    for entry in entries:
        keys = entry.get("UniqueKeys") or []
        if len(set(keys)) != len(keys):
            return f"UniqueKeys of {entry.get('DestinationTableName')} repeat a column."
    return None


def route(information: Mapping[str, str] | None, tables: Mapping[TableName, TableConfig]) -> Route:
    """The route of one record from its routing information (None: it has none)."""
    information = information or {}
    database = information.get("destinationDatabaseName")
    table = information.get("destinationTableName")
    if not database or not table:
        if len(tables) != 1:
            raise RoutingError(
                "Iceberg.MissingRoutingInformation",
                "The record has no destinationDatabaseName and destinationTableName, and the "
                "destination lists several tables.",
            )
        (default,) = tables
        database, table = database or default[0], table or default[1]
    operation = str(information.get("operation") or "insert").lower()
    if operation not in OPERATIONS:
        raise RoutingError(
            "Iceberg.InvalidOperation",
            f"operation {operation!r} is not one of {', '.join(OPERATIONS)}.",
        )
    name = (database, table)
    if operation != "insert" and not (name in tables and tables[name].unique_keys):
        raise RoutingError(
            "Iceberg.MissingUniqueKeys",
            f"{operation} on {database}.{table} needs UniqueKeys in its "
            "DestinationTableConfigurationList entry.",
        )
    return Route(table=name, operation=operation)


def steps(operations: Sequence[str]) -> list[tuple[str, list[int]]]:
    """The records' operations as consecutive runs (operation, record indices), in order: one
    table commit applies them one after another."""
    runs: list[tuple[str, list[int]]] = []
    for index, operation in enumerate(operations):
        if runs and runs[-1][0] == operation:
            runs[-1][1].append(index)
        else:
            runs.append((operation, [index]))
    return runs
