"""Loads staged objects into PostgreSQL, the SQL warehouse a Redshift destination names
(adapter: psycopg, the one module of Shoal importing it).

Each load is one transaction: the rows through `COPY ... FROM STDIN` (`copy_command.CopyPlan`)
and the new high-water mark of the source shard in `shoal_firehose_loads` (keyed by the
delivery stream's incarnation and the shard; the sequence number of the last record loaded,
and the staged object's key). Records at or below the mark were loaded already: the deliverer
drops them before staging (`watermark`), and `load` commits only if the mark is still the one
the batch was filtered with (compare-and-set under `SELECT ... FOR UPDATE`), so a deliverer
killed between the COPY's commit and its checkpoint, or two owners of one shard for a moment,
never load a record twice, and a failed transaction loads nothing.

Calls block (psycopg's synchronous API, one connection per load): the caller runs them in a
thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import psycopg.errors
from psycopg import sql

from broker.firehose.copy_command import CopyPlan, Target

LOADS_TABLE = "shoal_firehose_loads"
_CONNECT_TIMEOUT_S = 5
Watermark = tuple[int, int]  # (sequence number, sub-sequence number)
NO_WATERMARK: Watermark = (-1, 0)


class WarehouseError(Exception):
    """The connection, the COPY or the transaction failed (the message is the server's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadKey:
    """Whose progress a load advances: one delivery stream incarnation's source shard."""

    stream_uid: str
    shard_id: str


def _connect(target: Target, credentials: Credentials) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(
            host=target.host,
            port=target.port,
            dbname=target.database,
            user=credentials.username,
            password=credentials.password,
            connect_timeout=_CONNECT_TIMEOUT_S,
            application_name="shoal-firehose",
            autocommit=True,
        )
    except psycopg.Error as error:
        raise WarehouseError(f"Cannot connect to {target.host}:{target.port}: {error}") from error


def _ensure_loads_table(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """Creates the marks table once. Two first loads may race to create it: the loser's
    unique violation means it exists now."""
    with contextlib.suppress(psycopg.errors.UniqueViolation), connection.transaction():
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (stream_uid text NOT NULL, shard_id text NOT NULL,"
                " sequence_number numeric NOT NULL, sub_sequence_number bigint NOT NULL,"
                " object_key text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (stream_uid, shard_id))"
            ).format(sql.Identifier(LOADS_TABLE))
        )


class PostgresWarehouse:
    def watermark(self, target: Target, credentials: Credentials, key: LoadKey) -> Watermark:
        """The last record of `key`'s shard already loaded (NO_WATERMARK: none)."""
        try:
            with _connect(target, credentials) as connection:
                _ensure_loads_table(connection)
                row = connection.execute(
                    sql.SQL(
                        "SELECT sequence_number, sub_sequence_number FROM {} "
                        "WHERE stream_uid = %s AND shard_id = %s"
                    ).format(sql.Identifier(LOADS_TABLE)),
                    (key.stream_uid, key.shard_id),
                ).fetchone()
        except psycopg.Error as error:
            raise WarehouseError(str(error)) from error
        if row is None:
            return NO_WATERMARK
        return int(str(row[0])), int(str(row[1]))

    def load(
        self,
        target: Target,
        credentials: Credentials,
        plan: CopyPlan,
        *,
        key: LoadKey,
        expected: Watermark,
        loaded: Watermark,
        object_key: str,
        data: bytes = b"",
        rows: Sequence[Sequence[str | None]] | None = None,
    ) -> bool:
        """Copies `data` (text/csv, as staged) or `rows` (JSON, one value per column) and
        moves the mark from `expected` to `loaded`, in one transaction. False, and nothing
        loaded, when the mark is no longer `expected` (another owner loaded meanwhile)."""
        try:
            with _connect(target, credentials) as connection:
                _ensure_loads_table(connection)
                with connection.transaction():
                    if self._current(connection, key) != expected:
                        return False
                    columns = plan.columns or self._columns(connection, plan)
                    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(
                        sql.Identifier(*plan.table),
                        sql.SQL(", ").join(sql.Identifier(column) for column in columns),
                        _copy_options(plan),
                    )
                    with connection.cursor() as cursor, cursor.copy(statement) as copy:
                        if rows is None:
                            copy.write(data)
                        else:
                            for row in rows:
                                copy.write_row(row)
                    connection.execute(
                        sql.SQL(
                            "UPDATE {} SET sequence_number = %s, sub_sequence_number = %s, "
                            "object_key = %s, loaded_at = now() "
                            "WHERE stream_uid = %s AND shard_id = %s"
                        ).format(sql.Identifier(LOADS_TABLE)),
                        (loaded[0], loaded[1], object_key, key.stream_uid, key.shard_id),
                    )
                return True
        except psycopg.Error as error:
            raise WarehouseError(str(error)) from error

    def columns(self, target: Target, credentials: Credentials, plan: CopyPlan) -> list[str]:
        """The table's columns in order (JSON 'auto' without DataTableColumns)."""
        try:
            with _connect(target, credentials) as connection:
                return self._columns(connection, plan)
        except psycopg.Error as error:
            raise WarehouseError(str(error)) from error

    @staticmethod
    def _current(connection: psycopg.Connection[tuple[object, ...]], key: LoadKey) -> Watermark:
        connection.execute(
            sql.SQL(
                "INSERT INTO {} (stream_uid, shard_id, sequence_number, sub_sequence_number, "
                "object_key) VALUES (%s, %s, %s, %s, '') ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(LOADS_TABLE)),
            (key.stream_uid, key.shard_id, NO_WATERMARK[0], NO_WATERMARK[1]),
        )
        row = connection.execute(
            sql.SQL(
                "SELECT sequence_number, sub_sequence_number FROM {} "
                "WHERE stream_uid = %s AND shard_id = %s FOR UPDATE"
            ).format(sql.Identifier(LOADS_TABLE)),
            (key.stream_uid, key.shard_id),
        ).fetchone()
        assert row is not None
        return int(str(row[0])), int(str(row[1]))

    @staticmethod
    def _columns(connection: psycopg.Connection[tuple[object, ...]], plan: CopyPlan) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier(*plan.table)))
            return [column.name for column in cursor.description or ()]


def _copy_options(plan: CopyPlan) -> sql.Composable:
    if plan.format == "json":
        return sql.SQL("FORMAT text")  # rows are written with write_row
    options: list[sql.Composable] = [
        sql.SQL("FORMAT {}").format(sql.SQL(plan.format)),
        sql.SQL("DELIMITER {}").format(sql.Literal(plan.delimiter)),
    ]
    if plan.format == "csv":
        options.append(sql.SQL("QUOTE {}").format(sql.Literal(plan.quote)))
    if plan.null is not None:
        options.append(sql.SQL("NULL {}").format(sql.Literal(plan.null)))
    return sql.SQL(", ").join(options)
