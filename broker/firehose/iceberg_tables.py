"""Appends to Apache Iceberg tables for Iceberg destinations (adapter: pyiceberg, the one
module of Shoal importing it).

The catalog is pyiceberg's own configuration of a catalog named `shoal` (environment
`PYICEBERG_CATALOG__SHOAL__TYPE=sql`, `PYICEBERG_CATALOG__SHOAL__URI=sqlite:///...` or a
PostgreSQL URL shared by every node, or `~/.pyiceberg.yaml`), with the destination's
`CatalogConfiguration.WarehouseLocation` as its warehouse and the S3 store the node's boto3
settings select (`AWS_ENDPOINT_URL_S3`, the credentials). AWS's Glue catalog is not used.

Each append is one Iceberg commit that also sets the table property
`shoal.firehose.<stream uid>.<shard>` to the last record appended from that source shard
(`<sequence number>:<sub-sequence number>`), and commits only if the property is still what the
batch was filtered with: a deliverer killed between the commit and its checkpoint, or a
concurrent commit, never appends a record twice. The check is an Iceberg table requirement
(`_AssertMark`) the catalog validates against the table's current metadata inside the commit
(pyiceberg's SQL catalog then swaps the metadata location with a compare-and-set), so it also
holds when two owners of one shard (a lease taken over while the old owner still writes) commit
at once: pyiceberg retries a commit that lost a race on refreshed metadata, and that retry fails
the requirement instead of appending the buffer a second time.

Calls block (pyiceberg is synchronous): the caller runs them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pyarrow as pa
from pydantic import Field
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import ValidatableTableRequirement
from pyiceberg.table.upsert_util import create_match_filter
from pyiceberg.utils.config import Config

CATALOG_NAME = "shoal"
Watermark = tuple[int, int]
NO_WATERMARK: Watermark = (-1, 0)


class IcebergError(Exception):
    """The catalog, the store or the commit failed (the message says why)."""


def _s3_properties() -> dict[str, str]:
    properties: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        properties["s3.endpoint"] = endpoint
    for variable, name in (
        ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
        ("AWS_SESSION_TOKEN", "s3.session-token"),
        ("AWS_DEFAULT_REGION", "s3.region"),
    ):
        if os.environ.get(variable):
            properties[name] = os.environ[variable]
    return properties


def mark_property(stream_uid: str, shard_id: str) -> str:
    return f"shoal.firehose.{stream_uid}.{shard_id}"


class _MarkMoved(ValidationException):
    """The shard's mark is no longer the one the batch was filtered with (another owner
    appended): the commit did not land, and pyiceberg does not retry it."""


class _AssertMark(ValidatableTableRequirement):
    """The table property `key` must still be `expected` (None: absent) in the table's current
    metadata when the commit is applied."""

    type: str = Field(default="assert-shoal-firehose-mark")
    key: str
    expected: str | None

    def validate(self, base_metadata: TableMetadata | None) -> None:  # type: ignore[override]
        current = None if base_metadata is None else base_metadata.properties.get(self.key)
        if current != self.expected:
            raise _MarkMoved(f"{self.key} is {current!r}, not {self.expected!r}")


def _parse_mark(text: str | None) -> Watermark:
    if not text:
        return NO_WATERMARK
    sequence, _, sub = text.partition(":")
    return int(sequence), int(sub or 0)


class IcebergTables:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._catalogs: dict[str, Catalog] = {}

    def _catalog(self, warehouse: str) -> Catalog:
        with self._lock:
            catalog = self._catalogs.get(warehouse)
            if catalog is None:
                try:
                    # The configuration read now (pyiceberg reads the environment once, at
                    # import), the destination's warehouse and the node's S3 settings.
                    configured = Config().get_catalog_config(CATALOG_NAME) or {}
                    if not configured.get("uri"):
                        raise ValueError("no uri")
                    properties: dict[str, Any] = {
                        **{str(k): v for k, v in configured.items()},
                        "warehouse": warehouse,
                        **_s3_properties(),
                    }
                    catalog = load_catalog(CATALOG_NAME, **properties)
                except (ValueError, KeyError, ImportError) as error:
                    raise IcebergError(
                        "No Iceberg catalog is configured for Shoal: set "
                        "PYICEBERG_CATALOG__SHOAL__TYPE and PYICEBERG_CATALOG__SHOAL__URI "
                        f"({error})"
                    ) from error
                self._catalogs[warehouse] = catalog
            return catalog

    def mark(self, *, warehouse: str, table: tuple[str, str], key: str) -> Watermark:
        """The last record appended from the shard `key` names (NO_WATERMARK: none, or no
        table yet)."""
        try:
            loaded = self._catalog(warehouse).load_table(table)
        except NoSuchTableError:
            return NO_WATERMARK
        except IcebergError:
            raise
        except Exception as error:  # pyiceberg raises many kinds (catalog, store, HTTP)
            raise IcebergError(f"Loading {'.'.join(table)}: {error}") from error
        return _parse_mark(loaded.properties.get(key))

    def columns(
        self, *, warehouse: str, table: tuple[str, str], create_from: Sequence[Mapping[str, Any]]
    ) -> pa.Schema | None:
        """The table's Arrow schema; a missing table is created from `create_from`'s inferred
        columns when given (TableCreationConfiguration), else None."""
        catalog = self._catalog(warehouse)
        try:
            return catalog.load_table(table).schema().as_arrow()
        except NoSuchTableError:
            if not create_from:
                return None
        except Exception as error:
            raise IcebergError(f"Loading {'.'.join(table)}: {error}") from error
        try:
            with contextlib.suppress(NamespaceAlreadyExistsError):
                catalog.create_namespace(table[0])
            schema = pa.Table.from_pylist(list(create_from)).schema
            try:
                created = catalog.create_table(table, schema=schema)
            except TableAlreadyExistsError:
                created = catalog.load_table(table)
            return created.schema().as_arrow()
        except Exception as error:
            raise IcebergError(f"Creating {'.'.join(table)}: {error}") from error

    def append(
        self,
        *,
        warehouse: str,
        table: tuple[str, str],
        rows: pa.Table,
        key: str,
        expected: Watermark,
        appended: Watermark,
    ) -> bool:
        """Appends `rows` (see `apply`)."""
        return self.apply(
            warehouse=warehouse,
            table=table,
            steps=[("insert", rows)],
            unique_keys=(),
            key=key,
            expected=expected,
            appended=appended,
        )

    def apply(
        self,
        *,
        warehouse: str,
        table: tuple[str, str],
        steps: Sequence[tuple[str, pa.Table]],
        unique_keys: Sequence[str],
        key: str,
        expected: Watermark,
        appended: Watermark,
    ) -> bool:
        """Applies the steps in order (`insert`: append the rows; `update`: upsert them on
        `unique_keys`, the last row of a key winning; `delete`: delete the rows with their
        keys) and moves the shard's mark from `expected` to `appended`, in one commit; False
        (nothing applied) when the mark is no longer `expected` or another commit won the
        race."""
        try:
            loaded = self._catalog(warehouse).load_table(table)
            current = loaded.properties.get(key)
            if _parse_mark(current) != expected:
                return False
            with loaded.transaction() as transaction:
                # pyiceberg has no public way to add a requirement; `_stage` is how its own
                # builders add theirs (pinned: pyiceberg 0.12).
                transaction._stage((), (cast("Any", _AssertMark(key=key, expected=current)),))
                for operation, rows in steps:
                    if operation == "insert":
                        transaction.append(rows)
                    elif operation == "update":
                        transaction.upsert(_last_per_key(rows, unique_keys), list(unique_keys))
                    else:
                        assert operation == "delete", operation
                        transaction.delete(create_match_filter(rows, list(unique_keys)))
                transaction.set_properties({key: f"{appended[0]}:{appended[1]}"})
            return True
        except (CommitFailedException, _MarkMoved):
            return False
        except IcebergError:
            raise
        except Exception as error:
            raise IcebergError(f"Writing to {'.'.join(table)}: {error}") from error


def _last_per_key(rows: pa.Table, keys: Sequence[str]) -> pa.Table:
    """One row per key, the last one (an upsert refuses a key twice)."""
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows.to_pylist():
        key = tuple(row[name] for name in keys)
        kept.pop(key, None)
        kept[key] = row
    return pa.Table.from_pylist(list(kept.values()), schema=rows.schema)


def rows_for(
    records: Sequence[bytes], schema: pa.Schema
) -> tuple[pa.Table | None, list[int], list[tuple[int, str]]]:
    """The records (JSON objects, members matched to the columns case-insensitively) as an
    Arrow table of `schema`; the indices of the records in it, and (index, reason) of those
    that do not fit."""
    import json

    names = {field.name.lower(): field.name for field in schema}
    documents: list[dict[str, Any]] = []
    kept: list[int] = []
    failed: list[tuple[int, str]] = []
    for index, data in enumerate(records):
        try:
            document = json.loads(data)
        except ValueError as error:
            failed.append((index, f"The record is not JSON: {error}"))
            continue
        if not isinstance(document, dict):
            failed.append((index, "The record is not a JSON object."))
            continue
        documents.append({names[k.lower()]: v for k, v in document.items() if k.lower() in names})
        kept.append(index)
    if not documents:
        return None, [], failed
    try:
        return pa.Table.from_pylist(documents, schema=schema), kept, failed
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    good: list[dict[str, Any]] = []
    good_indices: list[int] = []
    for index, document in zip(kept, documents, strict=True):
        try:
            pa.Table.from_pylist([document], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as error:
            failed.append((index, f"The record does not fit the table's columns: {error}"))
            continue
        good.append(document)
        good_indices.append(index)
    table = pa.Table.from_pylist(good, schema=schema) if good else None
    return table, good_indices, sorted(failed)
