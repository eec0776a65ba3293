"""Inserts a buffer's JSON records into the table a Snowflake destination names (adapter:
snowflake-connector-python, Snowflake's official driver, the one module of Shoal importing it).

Firehose writes to Snowflake with Snowpipe Streaming; Shoal writes the same rows with the
driver's SQL API instead: one `INSERT ... SELECT ... FROM VALUES` per buffer, in a
transaction, as the
destination's User with key-pair authentication (PrivateKey, a base64 PKCS#8 key, encrypted
when KeyPassphrase is set). The account comes from AccountUrl (`https://<account>.snowflake
computing.com`, AWS's pattern); `SHOAL_SNOWFLAKE_ENDPOINT_URL` (e.g. `http://127.0.0.1:8085`)
sends the requests to another server speaking Snowflake's protocol instead (a local emulator,
a proxy), as `AWS_ENDPOINT_URL_S3` does for S3. DataLoadingOption as AWS defines it:

- JSON_MAPPING (the default): each top-level key of the record is a column of the same name
  (unquoted: Snowflake matches it case-insensitively); a nested value is inserted as its JSON
  text;
- VARIANT_CONTENT_MAPPING: the whole record into ContentColumnName (PARSE_JSON);
- VARIANT_CONTENT_AND_METADATA_MAPPING: also the record's metadata into MetaDataColumnName.

Exactly once into the table, as for Redshift: each insert commits together with the source
shard's mark (the last record inserted) in `SHOAL_FIREHOSE_LOADS` of the same schema, moved
with a compare-and-set; records at or below the mark are not inserted again by a deliverer
killed between the commit and its checkpoint, or by a shard's two owners during a takeover.

Calls block (the driver is synchronous): the caller runs them in a thread.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_LOGIN_TIMEOUT_S = 10
_MARK_ATTEMPTS = 5
LOADS_TABLE = "SHOAL_FIREHOSE_LOADS"
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class SnowflakeError(Exception):
    """The connection, the authentication or the statement failed (the message says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class Rows:
    """The statement's rows, and the records that cannot be inserted: (index, reason)."""

    columns: tuple[str, ...]
    values: list[tuple[Any, ...]]
    indices: list[int]  # the record behind each row
    unfit: list[tuple[int, str]]
    parse_json: tuple[bool, ...]  # per column: the value is JSON text for PARSE_JSON


def rows_for(
    configuration: Mapping[str, Any],
    records: Sequence[bytes],
    metadata: Sequence[Mapping[str, Any]],
) -> Rows:
    """The rows of the records as the destination's DataLoadingOption maps them. Pure."""
    option = str(configuration.get("DataLoadingOption") or "JSON_MAPPING")
    documents: list[tuple[int, Any]] = []
    unfit: list[tuple[int, str]] = []
    for index, data in enumerate(records):
        try:
            documents.append((index, json.loads(data)))
        except ValueError as error:
            unfit.append((index, f"The record is not JSON: {error}"))
    if option != "JSON_MAPPING":
        content = str(configuration["ContentColumnName"])
        with_metadata = option == "VARIANT_CONTENT_AND_METADATA_MAPPING"
        variants: tuple[str, ...] = (content,)
        if with_metadata:
            variants = (content, str(configuration["MetaDataColumnName"]))
        values = [
            (json.dumps(document), json.dumps(dict(metadata[index])))[: len(variants)]
            for index, document in documents
        ]
        return Rows(
            columns=variants,
            values=values,
            indices=[index for index, _ in documents],
            unfit=unfit,
            parse_json=(True,) * len(variants),
        )
    names: dict[str, str] = {}  # upper-cased -> as first seen
    objects: list[tuple[int, dict[str, Any]]] = []
    for index, document in documents:
        if not isinstance(document, dict):
            unfit.append((index, "The record is not a JSON object (JSON_MAPPING)."))
            continue
        bad = [key for key in document if not _COLUMN.fullmatch(key)]
        if bad:
            unfit.append((index, f"{bad[0]!r} is not a column name."))
            continue
        for key in document:
            names.setdefault(key.upper(), key)
        objects.append((index, {key.upper(): value for key, value in document.items()}))
    columns = tuple(names)
    values = [tuple(_scalar(document.get(column)) for column in columns) for _, document in objects]
    return Rows(
        columns=columns,
        values=values,
        indices=[index for index, _ in objects],
        unfit=sorted(unfit),
        parse_json=(False,) * len(columns),
    )


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def connection_parameters(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """The driver's connect() arguments for the destination (the private key included). Pure
    but for the key's parsing."""
    from cryptography.hazmat.primitives import serialization

    account = (urllib.parse.urlsplit(str(configuration["AccountUrl"])).hostname or "").split(".")[0]
    url = urllib.parse.urlsplit(
        os.environ.get("SHOAL_SNOWFLAKE_ENDPOINT_URL") or str(configuration["AccountUrl"])
    )
    host = url.hostname or ""
    passphrase = configuration.get("KeyPassphrase")
    try:
        der = base64.b64decode("".join(str(configuration["PrivateKey"]).split()))
        try:
            key = serialization.load_der_private_key(
                der, password=str(passphrase).encode() if passphrase else None
            )
        except ValueError:  # PEM text, base64-encoded as a whole
            key = serialization.load_pem_private_key(
                der, password=str(passphrase).encode() if passphrase else None
            )
    except (ValueError, TypeError) as error:
        raise SnowflakeError(
            "Snowflake.InvalidPrivateKey", f"PrivateKey cannot be read: {error}"
        ) from error
    parameters: dict[str, Any] = {
        "account": account,
        "user": str(configuration["User"]),
        "authenticator": "SNOWFLAKE_JWT",
        "private_key": key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "host": host,
        "protocol": url.scheme or "https",
        "port": url.port or (443 if url.scheme != "http" else 80),
        "database": str(configuration["Database"]),
        "schema": str(configuration["Schema"]),
        "login_timeout": _LOGIN_TIMEOUT_S,
        "network_timeout": _LOGIN_TIMEOUT_S * 3,
        "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    }
    role = (configuration.get("SnowflakeRoleConfiguration") or {}).get("SnowflakeRole")
    if (configuration.get("SnowflakeRoleConfiguration") or {}).get("Enabled") and role:
        parameters["role"] = str(role)
    return parameters


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    inserted: int  # rows inserted by this call (0: the table held them already)
    unfit: list[tuple[int, str]]  # (record index, reason) of records that do not map to rows


def load(
    configuration: Mapping[str, Any],
    *,
    stream_uid: str,
    shard_id: str,
    records: Sequence[bytes],
    sequences: Sequence[tuple[int, int]],
    metadata: Sequence[Mapping[str, Any]],
) -> Loaded:
    """Inserts the records after the shard's mark and moves the mark to the last of them, in
    one transaction (exactly once into the table: records at or below the mark were inserted
    already, by this shard's previous owner). The mark is a row of `SHOAL_FIREHOSE_LOADS` in
    the destination's schema, moved with a compare-and-set UPDATE; a lost race re-reads it.
    SnowflakeError on failure."""
    import snowflake.connector  # imported here: the driver is heavy and only this path needs it

    loads = f"{configuration['Database']}.{configuration['Schema']}.{LOADS_TABLE}"
    where = "STREAM_UID = %s AND SHARD_ID = %s"
    try:
        connection = snowflake.connector.connect(**connection_parameters(configuration))
    except snowflake.connector.errors.Error as error:
        raise SnowflakeError("Snowflake.ConnectionFailed", str(error)) from error
    try:
        cursor = connection.cursor()
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {loads} (STREAM_UID VARCHAR, SHARD_ID VARCHAR, "
            "SEQUENCE_NUMBER VARCHAR, SUB_SEQUENCE_NUMBER INT)"
        )
        # The shard's row, once (two first owners may both add it: equal rows, one CAS wins).
        cursor.execute(
            f"INSERT INTO {loads} SELECT %s, %s, '-1', 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM {loads} WHERE {where})",
            (stream_uid, shard_id, stream_uid, shard_id),
        )
        for _ in range(_MARK_ATTEMPTS):
            cursor.execute("BEGIN")
            cursor.execute(
                f"SELECT SEQUENCE_NUMBER, SUB_SEQUENCE_NUMBER FROM {loads} WHERE {where}",
                (stream_uid, shard_id),
            )
            marks = {(str(sequence), int(sub)) for sequence, sub in cursor.fetchall()}
            if len(marks) != 1:
                raise SnowflakeError(
                    "Snowflake.InvalidMark", f"{loads} holds {marks} for {shard_id}"
                )
            ((text, sub),) = marks
            expected = (int(text), sub)
            fresh = [i for i, sequence in enumerate(sequences) if sequence > expected]
            if not fresh:
                cursor.execute("ROLLBACK")
                return Loaded(inserted=0, unfit=[])
            rows = rows_for(
                configuration, [records[i] for i in fresh], [metadata[i] for i in fresh]
            )
            if rows.values:
                cursor.execute(*_insert_statement(configuration, rows))
            last = sequences[fresh[-1]]
            cursor.execute(
                f"UPDATE {loads} SET SEQUENCE_NUMBER = %s, SUB_SEQUENCE_NUMBER = %s "
                f"WHERE {where} AND SEQUENCE_NUMBER = %s AND SUB_SEQUENCE_NUMBER = %s",
                (str(last[0]), last[1], stream_uid, shard_id, text, sub),
            )
            if not cursor.rowcount:  # another owner moved the mark: filter again
                cursor.execute("ROLLBACK")
                continue
            cursor.execute("COMMIT")
            return Loaded(
                inserted=len(rows.values), unfit=[(fresh[i], why) for i, why in rows.unfit]
            )
        raise SnowflakeError("Snowflake.Conflict", f"The mark of {shard_id} kept moving.")
    except snowflake.connector.errors.Error as error:
        raise SnowflakeError("Snowflake.InsertFailed", str(error)) from error
    finally:
        connection.close()


def _insert_statement(configuration: Mapping[str, Any], rows: Rows) -> tuple[str, tuple[Any, ...]]:
    """`INSERT INTO Database.Schema.Table (...) SELECT ... FROM VALUES ...` and its parameters
    (identifiers as configured: unquoted, so Snowflake matches them case-insensitively)."""
    table = ".".join(str(configuration[part]) for part in ("Database", "Schema", "Table"))
    one = "(" + ", ".join("%s" for _ in rows.columns) + ")"
    select = ", ".join(
        f"PARSE_JSON(column{i + 1})" if parse else f"column{i + 1}"
        for i, parse in enumerate(rows.parse_json)
    )
    statement = (
        f"INSERT INTO {table} ({', '.join(rows.columns)}) "
        f"SELECT {select} FROM VALUES {', '.join(one for _ in rows.values)}"
    )
    return statement, tuple(value for row in rows.values for value in row)
