"""The deliverer's record processor: buffer, compress, write the object, then checkpoint.

One `DeliveryProcessor` per shard lease of a delivery stream's source (the KCL contract,
`broker.client.worker`). Records are buffered as they are read; the buffer is delivered when
`buffering.flush_reason` says so: at once when it reaches the size hint (in `process_records`,
so reading pauses while a full buffer is written: backpressure), or by a timer task when the
interval since the buffer opened has passed. Delivering writes one object (records
concatenated as they were put, compressed as configured, under AWS's key layout), retrying
with backoff (`retry.py`) until the store takes it, then checkpoints the last record in it.

At least once: a crash (or a lost lease) between the write and the checkpoint delivers those
records again from the new owner. In order per source shard: objects of one shard are written
one after another, each holding records in shard order. The configuration is read from the
metadata at each delivery, so UpdateDestination applies from the next object on.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import json
import logging
import random
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker.client.worker import (
    Checkpointer,
    InitializationInput,
    LeaseLostError,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
)
from broker.clock import Clock
from broker.firehose import (
    buffering,
    compression,
    conversion,
    copy_command,
    destinations,
    http_endpoint,
    iceberg_routing,
    indexers,
    object_keys,
    partition_keys,
    processing,
    retry,
    snowflake_tables,
)
from broker.firehose.aws_clients import (
    GlueCatalog,
    LambdaError,
    LambdaInvoker,
    RequestSigner,
    S3Store,
    StoreError,
)
from broker.firehose.probe import FirehoseProbe
from broker.firehose.retry import RetrySchedule
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus

if TYPE_CHECKING:  # imported when first used: pyiceberg and psycopg weigh on every node start
    from broker.firehose.iceberg_tables import IcebergTables
    from broker.firehose.warehouse import PostgresWarehouse

log = logging.getLogger(__name__)

Watermark = tuple[int, int]  # (sequence number, sub-sequence number) of a source record

TIMER_WAIT_MS_MAX = 200  # the timer looks again at least this often (a manual clock moves)


@dataclass(slots=True)
class DeliveryStatistics:
    """Counters of one node's deliveries (read by metrics and tests)."""

    objects: int = 0
    records: int = 0
    bytes: int = 0
    records_read: int = 0  # taken into a buffer (delivered, or waiting for its hints)
    failed_attempts: int = 0
    abandoned_records: int = 0
    failed_records: int = 0  # written to the error output (S3 backup) after the retries
    freshness_ms: list[int] = field(default_factory=list)  # the last deliveries' data age
    # Records each buffer ("delivery stream/shard id") held when its timer last looked and
    # found nothing due: a test proves a look passed without waiting a fixed time.
    held_at_timer_look: dict[str, int] = field(default_factory=dict)
    probe: FirehoseProbe | None = None  # the node's Prometheus metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class _Failure:
    data: bytes
    arrival_ms: int
    attempts: int
    error_code: str
    message: str
    ended_ms: int


PartitionKeys = dict[str, dict[str, str]]  # namespace -> key -> value


@dataclass(frozen=True, slots=True, kw_only=True)
class _Batch:
    records: list[bytes]
    arrivals_ms: list[int]
    first_arrival: datetime
    keys: list[PartitionKeys] | None = None  # per record, with dynamic partitioning
    # per record: its source record's (after processing: the record it came from)
    sequences: list[Watermark] | None = None
    routing: list[dict[str, str]] | None = None  # per record, the Lambda's otfMetadata

    def subset(self, indices: list[int]) -> _Batch:
        return _Batch(
            records=[self.records[i] for i in indices],
            arrivals_ms=[self.arrivals_ms[i] for i in indices],
            first_arrival=datetime.fromtimestamp(
                min(self.arrivals_ms[i] for i in indices) / 1000, tz=UTC
            ),
            keys=None if self.keys is None else [self.keys[i] for i in indices],
            sequences=None if self.sequences is None else [self.sequences[i] for i in indices],
            routing=None if self.routing is None else [self.routing[i] for i in indices],
        )


class DeliveryProcessor:
    def __init__(
        self,
        *,
        target: Callable[[], DeliveryStreamMeta | None],
        store: S3Store,
        lambda_invoker: LambdaInvoker,
        glue: GlueCatalog,
        clock: Clock,
        statistics: DeliveryStatistics,
        rng: random.Random,
        retry: RetrySchedule | None = None,
        warehouse: PostgresWarehouse | None = None,
        iceberg: IcebergTables | None = None,
        signer: RequestSigner | None = None,
    ) -> None:
        self._target = target
        self._signer = signer or RequestSigner()
        self._warehouse_adapter = warehouse
        self._iceberg_adapter = iceberg
        self._store = store
        self._lambda = lambda_invoker
        self._glue = glue
        self._clock = clock
        self._statistics = statistics
        self._rng = rng
        self._retry = retry or RetrySchedule()
        self._lock = asyncio.Lock()
        self._records: list[bytes] = []
        self._arrivals_ms: list[int] = []
        self._sequences: list[Watermark] = []
        self._state = buffering.EMPTY
        self._first_arrival: datetime | None = None
        self._last: tuple[str, int] | None = None  # (sequence number, sub-sequence number)
        self._checkpointer: Checkpointer | None = None
        self._timer: asyncio.Task[None] | None = None
        self._shard_id = ""

    def _warehouse(self) -> PostgresWarehouse:
        if self._warehouse_adapter is None:
            from broker.firehose.warehouse import PostgresWarehouse

            self._warehouse_adapter = PostgresWarehouse()
        return self._warehouse_adapter

    def _iceberg(self) -> IcebergTables:
        if self._iceberg_adapter is None:
            from broker.firehose.iceberg_tables import IcebergTables

            self._iceberg_adapter = IcebergTables()
        return self._iceberg_adapter

    # --- The KCL contract -----------------------------------------------------------------

    async def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id
        self._timer = asyncio.create_task(
            self._run_timer(), name=f"firehose-timer-{self._shard_id}"
        )

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        async with self._lock:
            self._checkpointer = process_records_input.checkpointer
            now_ms = self._clock.monotonic_ms()
            for record in process_records_input.records:
                assert record.sequence_number is not None
                self._records.append(record.data)
                arrival = record.approximate_arrival_timestamp
                self._arrivals_ms.append(
                    int(arrival.timestamp() * 1000) if arrival else self._clock.wall_ms()
                )
                self._sequences.append((int(record.sequence_number), record.sub_sequence_number))
                self._state = self._state.add(len(record.data), now_ms=now_ms)
                self._last = (record.sequence_number, record.sub_sequence_number)
                if self._first_arrival is None:
                    self._first_arrival = record.approximate_arrival_timestamp or datetime.now(UTC)
            hints = self._hints()
            if (
                hints is not None
                and buffering.flush_reason(self._state, hints, now_ms=now_ms) == "size"
            ):
                await self._deliver()
            self._statistics.records_read += len(process_records_input.records)

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        await self._stop_timer()
        self._reset()  # the next owner delivers them again from the checkpoint

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        await self._stop_timer()
        async with self._lock:
            self._checkpointer = shard_ended_input.checkpointer
            await self._deliver()
            await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        await self._stop_timer()
        async with self._lock:
            self._checkpointer = shutdown_requested_input.checkpointer
            await self._deliver()

    # --- Buffering ------------------------------------------------------------------------

    def _hints(self) -> buffering.Hints | None:
        meta = self._target()
        if meta is None:
            return None
        _, configuration = meta.destination()
        return buffering.hints_from(configuration)

    async def _run_timer(self) -> None:
        """Delivers a buffer whose interval has passed. Infinite on purpose: stopped with
        the processor."""
        while True:
            hints = self._hints()
            due = None if hints is None else buffering.flush_due_ms(self._state, hints)
            now_ms = self._clock.monotonic_ms()
            wait_ms = TIMER_WAIT_MS_MAX if due is None else min(TIMER_WAIT_MS_MAX, due - now_ms)
            await self._clock.sleep(max(wait_ms, 0))
            meta = self._target()
            if hints is None or meta is None:
                continue
            async with self._lock:
                reason = buffering.flush_reason(
                    self._state, hints, now_ms=self._clock.monotonic_ms()
                )
                if reason is None:
                    looked = f"{meta.name}/{self._shard_id}"
                    self._statistics.held_at_timer_look[looked] = len(self._records)
                    continue
                try:
                    await self._deliver()
                except LeaseLostError:
                    return
                except Exception:
                    # The object is written (or not); a failed checkpoint is retried by the
                    # next delivery's, which covers these records too.
                    log.exception("firehose_timer_delivery_failed")

    async def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)

    def _reset(self) -> None:
        self._records = []
        self._arrivals_ms = []
        self._sequences = []
        self._state = buffering.EMPTY
        self._first_arrival = None

    # --- Delivery -------------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Delivers the buffer to the destination, then checkpoints its last record. Lock
        held."""
        if not self._records:
            return
        meta = self._target()
        if meta is None or meta.status is not DeliveryStreamStatus.ACTIVE:
            self._reset()  # deleted: its data goes with it
            return
        assert self._first_arrival is not None
        assert self._last is not None
        batch = _Batch(
            records=self._records,
            arrivals_ms=self._arrivals_ms,
            first_arrival=self._first_arrival,
            sequences=self._sequences,
        )
        last = self._last
        kind, configuration = meta.destination()
        if kind in ("Redshift", "Iceberg"):
            if kind == "Redshift":
                await self._deliver_redshift(meta, configuration, batch)
            else:
                await self._deliver_iceberg(meta, configuration, batch)
            self._reset()
            if self._checkpointer is not None:
                await self._checkpointer.checkpoint(last[0], last[1])
            return
        await self._backup_source(meta, configuration, batch)
        batch = await self._process(meta, kind, configuration, batch)
        if not batch.records:
            pass  # every record was dropped or failed processing
        elif kind == "HttpEndpoint":
            await self._deliver_http(meta, configuration, batch)
        elif kind in indexers.KINDS:
            await self._deliver_indexed(meta, kind, configuration, batch)
        else:
            assert kind == "ExtendedS3", kind
            await self._deliver_s3(meta, configuration, batch)
        self._reset()
        if self._checkpointer is not None:
            await self._checkpointer.checkpoint(last[0], last[1])

    async def _backup_source(
        self, meta: DeliveryStreamMeta, configuration: Mapping[str, Any], batch: _Batch
    ) -> None:
        """S3BackupMode Enabled (S3 and Redshift destinations): the source records, before
        any processing, to the S3BackupConfiguration's bucket and prefix."""
        backup = configuration.get("S3BackupConfiguration")
        if configuration.get("S3BackupMode") != "Enabled" or not backup:
            return
        await self._write_s3_object(
            meta,
            backup,
            b"".join(batch.records),
            batch.first_arrival,
            prefix=str(backup.get("Prefix") or ""),
        )

    async def _stage(
        self, meta: DeliveryStreamMeta, staging: Mapping[str, Any], batch: _Batch
    ) -> str | None:
        """Writes the buffer as one object under the staging configuration; its key, or None
        when the store's retry duration ran out."""
        compression_format = str(staging.get("CompressionFormat") or "UNCOMPRESSED")
        payload = await asyncio.to_thread(
            compression.compress, b"".join(batch.records), compression_format
        )
        key = self._key(
            meta,
            staging,
            batch.first_arrival,
            compression_format=compression_format,
            prefix=str(staging.get("Prefix") or ""),
        )
        written = await self._write(meta.name, destinations.bucket_name(staging), key, payload)
        return key if written else None

    async def _deliver_redshift(
        self, meta: DeliveryStreamMeta, configuration: Mapping[str, Any], batch: _Batch
    ) -> None:
        """Stage to S3, then COPY the staged object's rows into the warehouse (PostgreSQL,
        `warehouse.py`), retrying for RetryOptions.DurationInSeconds (3600 s by default);
        then a manifest of the skipped object goes to the bucket's `errors/manifests/`.
        Records the warehouse already holds (at or below the shard's mark) are dropped
        first, and the load moves the mark in the COPY's transaction: exactly once into the
        table across deliverer crashes."""
        from broker.firehose.warehouse import Credentials, LoadKey, WarehouseError

        schedule = retry.schedule_for(
            configuration.get("RetryOptions"), default_ms=retry.REDSHIFT_RETRY_DURATION_MS
        )
        staging = configuration["S3Configuration"]
        credentials = Credentials(
            username=str(configuration.get("Username") or ""),
            password=str(configuration.get("Password") or ""),
        )
        key = LoadKey(stream_uid=meta.uid, shard_id=self._shard_id)
        assert batch.sequences is not None
        staged: tuple[Watermark, Watermark, str, int] | None = None  # mark, last, key, records
        first_failure_ms: int | None = None
        attempts = 0
        while True:
            try:
                target = copy_command.target(str(configuration["ClusterJDBCURL"]))
                plan = copy_command.plan(configuration["CopyCommand"])
                expected = await asyncio.to_thread(
                    self._warehouse().watermark, target, credentials, key
                )
                if staged is None or staged[0] != expected:
                    fresh = [i for i, seq in enumerate(batch.sequences) if seq > expected]
                    if not fresh:
                        return  # loaded already, by this shard's previous owner
                    source = batch.subset(fresh)
                    await self._backup_source(meta, configuration, source)
                    processed = await self._process(meta, "Redshift", configuration, source)
                    if not processed.records:
                        return
                    object_key = await self._stage(meta, staging, processed)
                    if object_key is None:
                        self._count(meta, "redshift", processed, 0, delivered=False)
                        return
                    last = batch.sequences[fresh[-1]]
                    staged = (expected, last, object_key, len(processed.records))
                _, last, object_key, count = staged
                data = await asyncio.to_thread(
                    self._store.get_object,
                    bucket=destinations.bucket_name(staging),
                    key=object_key,
                )
                if plan.gzip:
                    data = await asyncio.to_thread(_gunzip, data)
                data = copy_command.lines(data, plan.ignore_header)
                rows = None
                if plan.format == "json":
                    columns = plan.columns or tuple(
                        await asyncio.to_thread(
                            self._warehouse().columns, target, credentials, plan
                        )
                    )
                    rows = copy_command.json_rows(data, columns, ignore_case=plan.ignore_case)
                loaded = await asyncio.to_thread(
                    functools.partial(
                        self._warehouse().load,
                        target,
                        credentials,
                        plan,
                        key=key,
                        expected=expected,
                        loaded=last,
                        object_key=object_key,
                        data=data,
                        rows=rows,
                    )
                )
                if loaded:
                    self._count_records(meta, "redshift", count, len(data), batch.first_arrival)
                    return
                log.warning("firehose_redshift_mark_moved", extra={"shard": self._shard_id})
                continue  # another owner loaded part of it: filter again against the new mark
            except (WarehouseError, StoreError, copy_command.CopyCommandError) as error:
                attempts += 1
                self._statistics.failed_attempts += 1
                if self._statistics.probe is not None:
                    self._statistics.probe.attempt_failed(meta.name, "redshift")
                now_ms = self._clock.wall_ms()
                first_failure_ms = now_ms if first_failure_ms is None else first_failure_ms
                if schedule.gives_up(first_failure_ms=first_failure_ms, now_ms=now_ms):
                    await self._skip_redshift_load(meta, staging, staged, batch, str(error))
                    return
                log.warning(
                    "firehose_redshift_retry", extra={"attempt": attempts, "error": str(error)}
                )
                await asyncio.sleep(schedule.backoff_ms(attempts, jitter=self._rng.random()) / 1000)

    async def _deliver_iceberg(
        self, meta: DeliveryStreamMeta, configuration: Mapping[str, Any], batch: _Batch
    ) -> None:
        """Routes the buffer's processed JSON records to their Iceberg tables
        (`iceberg_routing.py`: the Lambda's otfMetadata, else the MetadataExtraction query,
        else the one table listed) and applies each table's records (insert, update = upsert
        on UniqueKeys, delete) in one commit per table (`iceberg_tables.py`). Records the
        table already holds (at or below the shard's mark, a table property moved in that
        commit) are dropped first: exactly once into each table across deliverer crashes and
        takeovers. Records that cannot be routed, or do not fit the table's columns, and
        after RetryOptions.DurationInSeconds (300 s by default) a table's records, go to the
        S3 backup as `iceberg-failed`."""
        if configuration.get("S3BackupMode") == "AllData":
            backup = configuration["S3Configuration"]
            await self._write_s3_object(
                meta,
                backup,
                b"".join(batch.records),
                batch.first_arrival,
                prefix=str(backup.get("Prefix") or ""),
            )
        processed = await self._process(meta, "Iceberg", configuration, batch)
        tables = iceberg_routing.table_configs(configuration)
        query = processing.metadata_query(configuration)
        routes: dict[iceberg_routing.TableName, list[tuple[int, str]]] = {}
        unrouted: list[tuple[int, str, str]] = []
        for index, data in enumerate(processed.records):
            information = processed.routing[index] if processed.routing else None
            try:
                if not information and query is not None:
                    information = partition_keys.extract(query, data)
                route = iceberg_routing.route(information, tables)
            except iceberg_routing.RoutingError as error:
                unrouted.append((index, error.code, str(error)))
                continue
            except partition_keys.PartitioningError as error:
                unrouted.append((index, "Iceberg.MissingRoutingInformation", str(error)))
                continue
            routes.setdefault(route.table, []).append((index, route.operation))
        if unrouted:
            await self._write_iceberg_failed(meta, configuration, processed, unrouted, None)
        for table in sorted(routes):
            await self._deliver_iceberg_table(
                meta, configuration, processed, tables.get(table), table, routes[table]
            )

    async def _deliver_iceberg_table(
        self,
        meta: DeliveryStreamMeta,
        configuration: Mapping[str, Any],
        processed: _Batch,
        table_config: iceberg_routing.TableConfig | None,
        table: iceberg_routing.TableName,
        entries: list[tuple[int, str]],
    ) -> None:
        """One table's records (index in `processed`, operation), retried as a whole."""
        from broker.firehose.iceberg_tables import IcebergError, mark_property, rows_for

        schedule = retry.schedule_for(
            configuration.get("RetryOptions"), default_ms=retry.HTTP_RETRY_DURATION_MS
        )
        warehouse = str(configuration["CatalogConfiguration"]["WarehouseLocation"])
        create = bool((configuration.get("TableCreationConfiguration") or {}).get("Enabled"))
        unique_keys = table_config.unique_keys if table_config is not None else ()
        key = mark_property(meta.uid, self._shard_id)
        sequences = processed.sequences
        assert sequences is not None
        first_failure_ms: int | None = None
        attempts = 0
        error_message = ""
        pending = entries
        while True:
            try:
                expected = await asyncio.to_thread(
                    self._iceberg().mark, warehouse=warehouse, table=table, key=key
                )
                pending = [(i, op) for i, op in entries if sequences[i] > expected]
                if not pending:
                    return  # applied already, by this shard's previous owner
                records = [processed.records[i] for i, _ in pending]
                documents = [] if not create else _json_objects(records)
                schema = await asyncio.to_thread(
                    self._iceberg().columns, warehouse=warehouse, table=table, create_from=documents
                )
                if schema is None:
                    raise IcebergError(
                        f"Table {'.'.join(table)} does not exist and TableCreationConfiguration "
                        "is not enabled."
                    )
                rows, kept, unfit = await asyncio.to_thread(rows_for, records, schema)
                applied = True
                if rows is not None:
                    operations = [pending[k][1] for k in kept]
                    steps = [
                        (operation, rows.take(indices))
                        for operation, indices in iceberg_routing.steps(operations)
                    ]
                    applied = await asyncio.to_thread(
                        functools.partial(
                            self._iceberg().apply,
                            warehouse=warehouse,
                            table=table,
                            steps=steps,
                            unique_keys=unique_keys,
                            key=key,
                            expected=expected,
                            appended=sequences[pending[-1][0]],
                        )
                    )
                if not applied:
                    log.warning("firehose_iceberg_mark_moved", extra={"shard": self._shard_id})
                    continue  # another owner committed: filter again against the new mark
                if rows is not None:
                    self._count_records(
                        meta, "iceberg", len(kept), rows.nbytes, processed.first_arrival
                    )
                if unfit:
                    failed = [(pending[k][0], "Iceberg.InvalidRecord", why) for k, why in unfit]
                    await self._write_iceberg_failed(
                        meta, configuration, processed, failed, table_config
                    )
                return
            except (IcebergError, StoreError) as error:
                attempts += 1
                error_message = str(error)
                self._statistics.failed_attempts += 1
                if self._statistics.probe is not None:
                    self._statistics.probe.attempt_failed(meta.name, "iceberg")
                now_ms = self._clock.wall_ms()
                first_failure_ms = now_ms if first_failure_ms is None else first_failure_ms
                if schedule.gives_up(first_failure_ms=first_failure_ms, now_ms=now_ms):
                    break
                log.warning("firehose_iceberg_retry", extra={"error": error_message})
                await asyncio.sleep(schedule.backoff_ms(attempts, jitter=self._rng.random()) / 1000)
        await self._write_iceberg_failed(
            meta,
            configuration,
            processed,
            [(i, "Iceberg.DeliveryFailed", error_message) for i, _ in pending],
            table_config,
            attempts=attempts,
        )

    async def _write_iceberg_failed(
        self,
        meta: DeliveryStreamMeta,
        configuration: Mapping[str, Any],
        processed: _Batch,
        failed: list[tuple[int, str, str]],
        table_config: iceberg_routing.TableConfig | None,
        *,
        attempts: int = 1,
    ) -> None:
        """Records (index in `processed`, error code, message) to the S3 error output: the
        table's S3ErrorOutputPrefix when it has one."""
        backup = configuration["S3Configuration"]
        if table_config is not None and table_config.error_output_prefix:
            backup = {**backup, "ErrorOutputPrefix": table_config.error_output_prefix}
        ended_ms = self._clock.wall_ms()
        await self._write_failed(
            meta,
            kind="Iceberg",
            configuration={**configuration, "S3Configuration": backup},
            error_output_type="iceberg-failed",
            failures=[
                _Failure(
                    data=processed.records[index],
                    arrival_ms=processed.arrivals_ms[index],
                    attempts=attempts,
                    error_code=code,
                    message=message,
                    ended_ms=ended_ms,
                )
                for index, code, message in failed
            ],
            first_arrival=processed.first_arrival,
        )

    async def _skip_redshift_load(
        self,
        meta: DeliveryStreamMeta,
        staging: Mapping[str, Any],
        staged: tuple[Watermark, Watermark, str, int] | None,
        batch: _Batch,
        error: str,
    ) -> None:
        """After the retries: the staged object's manifest (Redshift's COPY manifest format)
        to `<Prefix>errors/manifests/`, as AWS records a skipped load."""
        log.error("firehose_redshift_load_skipped", extra={"error": error})
        bucket = destinations.bucket_name(staging)
        entries = (
            [] if staged is None else [{"url": f"s3://{bucket}/{staged[2]}", "mandatory": True}]
        )
        manifest = json.dumps({"entries": entries, "errorMessage": error}).encode()
        await self._write_s3_object(
            meta,
            {**staging, "CompressionFormat": "UNCOMPRESSED", "FileExtension": ""},
            manifest,
            batch.first_arrival,
            prefix=f"{staging.get('Prefix') or ''}errors/manifests/",
        )
        records = len(batch.records) if staged is None else staged[3]
        self._statistics.failed_records += records
        if self._statistics.probe is not None:
            self._statistics.probe.records_failed(meta.name, "redshift-failed", records)

    def _key(
        self,
        meta: DeliveryStreamMeta,
        configuration: Mapping[str, Any],
        moment: datetime,
        *,
        compression_format: str,
        prefix: str,
        error_output_type: str | None = None,
        partition_keys: PartitionKeys | None = None,
    ) -> str:
        zone = object_keys.zone_of(configuration.get("CustomTimeZone"), zoneinfo.ZoneInfo)
        random_part = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        extension = configuration.get("FileExtension") or object_keys.EXTENSIONS[compression_format]
        return object_keys.object_key(
            prefix=prefix,
            delivery_stream_name=meta.name,
            version_id=meta.version_id,
            moment=zone(moment.astimezone(UTC)),
            random_part=random_part,
            extension=str(extension),
            error_output_type=error_output_type,
            partition_keys=partition_keys,
        )

    async def _write_s3_object(
        self,
        meta: DeliveryStreamMeta,
        configuration: Mapping[str, Any],
        data: bytes,
        moment: datetime,
        *,
        prefix: str,
        error_output_type: str | None = None,
        partition_keys: PartitionKeys | None = None,
    ) -> bool:
        compression_format = str(configuration.get("CompressionFormat") or "UNCOMPRESSED")
        payload = await asyncio.to_thread(compression.compress, data, compression_format)
        key = self._key(
            meta,
            configuration,
            moment,
            compression_format=compression_format,
            prefix=prefix,
            error_output_type=error_output_type,
            partition_keys=partition_keys,
        )
        return await self._write(meta.name, destinations.bucket_name(configuration), key, payload)

    async def _deliver_s3(
        self, meta: DeliveryStreamMeta, configuration: Mapping[str, Any], batch: _Batch
    ) -> None:
        """One object, or with dynamic partitioning one object per set of partition keys
        (records in their order within each)."""
        if batch.keys is None:
            await self._deliver_s3_part(meta, configuration, batch, None)
            return
        groups: dict[str, list[int]] = {}
        for index, keys in enumerate(batch.keys):
            groups.setdefault(json.dumps(keys, sort_keys=True), []).append(index)
        for encoded, indices in groups.items():
            await self._deliver_s3_part(
                meta, configuration, batch.subset(indices), json.loads(encoded)
            )

    async def _deliver_s3_part(
        self,
        meta: DeliveryStreamMeta,
        configuration: Mapping[str, Any],
        batch: _Batch,
        partition_keys: PartitionKeys | None,
    ) -> None:
        conversion_configuration = configuration.get("DataFormatConversionConfiguration") or {}
        if conversion_configuration.get("Enabled", True) and conversion_configuration:
            await self._deliver_converted(
                meta, configuration, conversion_configuration, batch, partition_keys
            )
            return
        body = b"".join(batch.records)
        delivered = await self._write_s3_object(
            meta,
            configuration,
            body,
            batch.first_arrival,
            prefix=str(configuration.get("Prefix") or ""),
            partition_keys=partition_keys,
        )
        self._count(meta, "s3", batch, len(body), delivered=delivered)

    async def _deliver_converted(
        self,
        meta: DeliveryStreamMeta,
        configuration: Mapping[str, Any],
        conversion_configuration: Mapping[str, Any],
        batch: _Batch,
        partition_keys: PartitionKeys | None,
    ) -> None:
        """Parquet/ORC with the Glue table's columns (fetched per delivery, retried like a
        write); records that do not convert go to the error output."""
        schema = conversion_configuration.get("SchemaConfiguration") or {}
        first_failure_ms: int | None = None
        attempt = 0
        while True:
            try:
                columns = await asyncio.to_thread(
                    self._glue.columns,
                    database=str(schema["DatabaseName"]),
                    table=str(schema["TableName"]),
                    catalog_id=schema.get("CatalogId"),
                    region=schema.get("Region"),
                )
                converted = await asyncio.to_thread(
                    conversion.convert, batch.records, columns, conversion_configuration
                )
                break
            except (StoreError, ValueError) as error:
                attempt += 1
                self._statistics.failed_attempts += 1
                now_ms = self._clock.wall_ms()
                first_failure_ms = now_ms if first_failure_ms is None else first_failure_ms
                if self._retry.gives_up(first_failure_ms=first_failure_ms, now_ms=now_ms):
                    converted = conversion.Converted(
                        data=b"",
                        converted=0,
                        failures=[
                            (index, "DataFormatConversion.InvalidSchema", str(error))
                            for index in range(len(batch.records))
                        ],
                    )
                    break
                log.warning("firehose_conversion_retry", extra={"error": str(error)})
                await asyncio.sleep(
                    self._retry.backoff_ms(attempt, jitter=self._rng.random()) / 1000
                )
        if converted.failures:
            ended_ms = self._clock.wall_ms()
            await self._write_failed(
                meta,
                kind="ExtendedS3",
                configuration=configuration,
                error_output_type="format-conversion-failed",
                failures=[
                    _Failure(
                        data=batch.records[index],
                        arrival_ms=batch.arrivals_ms[index],
                        attempts=1,
                        error_code=code,
                        message=message,
                        ended_ms=ended_ms,
                    )
                    for index, code, message in converted.failures
                ],
                first_arrival=batch.first_arrival,
            )
        if converted.converted == 0:
            return
        delivered = await self._write_s3_object(
            meta,
            {
                **configuration,
                "CompressionFormat": "UNCOMPRESSED",
                "FileExtension": configuration.get("FileExtension")
                or conversion.extension(conversion_configuration),
            },
            converted.data,
            batch.first_arrival,
            prefix=str(configuration.get("Prefix") or ""),
            partition_keys=partition_keys,
        )
        self._count(meta, "s3", batch, len(converted.data), delivered=delivered)

    def _count(
        self,
        meta: DeliveryStreamMeta,
        destination: str,
        batch: _Batch,
        size: int,
        *,
        delivered: bool,
    ) -> None:
        statistics = self._statistics
        if not delivered:
            statistics.abandoned_records += len(batch.records)
            if statistics.probe is not None:
                statistics.probe.records_failed(meta.name, "abandoned", len(batch.records))
            return
        self._count_records(meta, destination, len(batch.records), size, batch.first_arrival)

    def _count_records(
        self,
        meta: DeliveryStreamMeta,
        destination: str,
        records: int,
        size: int,
        first_arrival: datetime,
    ) -> None:
        statistics = self._statistics
        statistics.objects += 1
        statistics.records += records
        statistics.bytes += size
        age_ms = int((datetime.now(UTC) - first_arrival).total_seconds() * 1000)
        statistics.freshness_ms = [*statistics.freshness_ms[-999:], age_ms]
        if statistics.probe is not None:
            statistics.probe.delivered(
                meta.name, destination, records=records, size=size, age_s=age_ms / 1000
            )

    async def _deliver_http(
        self, meta: DeliveryStreamMeta, configuration: Mapping[str, Any], batch: _Batch
    ) -> None:
        """POSTs the buffer in AWS's format, retrying for RetryOptions.DurationInSeconds
        (300 s by default); then the records go to the S3 backup's error prefix. With
        S3BackupMode AllData every delivered buffer is also written to the backup bucket."""
        schedule = retry.schedule_for(
            configuration.get("RetryOptions"), default_ms=retry.HTTP_RETRY_DURATION_MS
        )
        request_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        headers, body = http_endpoint.build_request(
            records=batch.records,
            request_id=request_id,
            timestamp_ms=self._clock.wall_ms(),
            source_arn=meta.arn,
            configuration=configuration,
        )
        url = str(configuration["EndpointConfiguration"]["Url"])
        first_failure_ms = self._clock.wall_ms()
        attempts = 0
        while True:
            attempts += 1
            try:
                status, answer = await asyncio.to_thread(http_endpoint.post, url, headers, body)
                failure = http_endpoint.check_response(status, answer, request_id=request_id)
                error_code = "HttpEndpoint.InvalidResponseFromDestination"
            except OSError as error:
                failure = f"The endpoint could not be reached: {error}"
                error_code = "HttpEndpoint.ConnectionFailed"
            if failure is None:
                break
            self._statistics.failed_attempts += 1
            if self._statistics.probe is not None:
                self._statistics.probe.attempt_failed(meta.name, "http_endpoint")
            now_ms = self._clock.wall_ms()
            if schedule.gives_up(first_failure_ms=first_failure_ms, now_ms=now_ms):
                break
            pause_ms = schedule.backoff_ms(attempts, jitter=self._rng.random())
            log.warning("firehose_delivery_retry", extra={"url_host": url.split("/")[2:3]})
            await asyncio.sleep(pause_ms / 1000)
        backup = configuration["S3Configuration"]
        size = sum(len(data) for data in batch.records)
        if failure is None:
            self._count(meta, "http_endpoint", batch, size, delivered=True)
            if configuration.get("S3BackupMode") == "AllData":
                await self._write_s3_object(
                    meta,
                    backup,
                    b"".join(batch.records),
                    batch.first_arrival,
                    prefix=str(backup.get("Prefix") or ""),
                )
            return
        ended_ms = self._clock.wall_ms()
        await self._write_failed(
            meta,
            kind="HttpEndpoint",
            configuration=configuration,
            error_output_type="http-endpoint-failed",
            failures=[
                _Failure(
                    data=data,
                    arrival_ms=arrival_ms,
                    attempts=attempts,
                    error_code=error_code,
                    message=failure,
                    ended_ms=ended_ms,
                )
                for data, arrival_ms in zip(batch.records, batch.arrivals_ms, strict=True)
            ],
            first_arrival=batch.first_arrival,
        )

    async def _deliver_indexed(
        self,
        meta: DeliveryStreamMeta,
        kind: str,
        configuration: Mapping[str, Any],
        batch: _Batch,
    ) -> None:
        """OpenSearch `_bulk` / Splunk HEC (`indexers.py`), retried for RetryOptions (AWS's
        default per destination); then, and for the documents the destination refused, the
        records go to the S3 backup's error output. With All* backup every record is also
        written to the backup bucket."""
        schedule = retry.schedule_for(
            configuration.get("RetryOptions"), default_ms=indexers.RETRY_DURATION_MS[kind]
        )
        channel = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        label = "splunk" if kind == "Splunk" else kind.lower()
        first_failure_ms = self._clock.wall_ms()
        attempts = 0
        while True:
            attempts += 1
            answer = await self._send_indexed(meta, kind, configuration, batch, channel)
            if answer.retry is None:
                break
            self._statistics.failed_attempts += 1
            if self._statistics.probe is not None:
                self._statistics.probe.attempt_failed(meta.name, label)
            if schedule.gives_up(first_failure_ms=first_failure_ms, now_ms=self._clock.wall_ms()):
                break
            log.warning("firehose_delivery_retry", extra={"destination": kind})
            await asyncio.sleep(schedule.backoff_ms(attempts, jitter=self._rng.random()) / 1000)
        if answer.retry is None:
            failed = dict(answer.failed or {})
        else:
            failed = dict.fromkeys(range(len(batch.records)), (answer.error_code, answer.retry))
        delivered = [i for i in range(len(batch.records)) if i not in failed]
        if delivered:
            part = batch.subset(delivered)
            size = sum(len(data) for data in part.records)
            self._count(meta, label, part, size, delivered=True)
        backup = configuration["S3Configuration"]
        if configuration.get("S3BackupMode") == indexers.ALL_RECORDS_BACKUP[kind]:
            await self._write_s3_object(
                meta,
                backup,
                b"".join(batch.records),
                batch.first_arrival,
                prefix=str(backup.get("Prefix") or ""),
            )
        if failed:
            ended_ms = self._clock.wall_ms()
            await self._write_failed(
                meta,
                kind=kind,
                configuration=configuration,
                error_output_type=indexers.ERROR_OUTPUT_TYPE[kind],
                failures=[
                    _Failure(
                        data=batch.records[index],
                        arrival_ms=batch.arrivals_ms[index],
                        attempts=attempts,
                        error_code=code,
                        message=message,
                        ended_ms=ended_ms,
                    )
                    for index, (code, message) in sorted(failed.items())
                ],
                first_arrival=batch.first_arrival,
            )

    async def _send_indexed(
        self,
        meta: DeliveryStreamMeta,
        kind: str,
        configuration: Mapping[str, Any],
        batch: _Batch,
        channel: str,
    ) -> indexers.Answer:
        if kind == "Snowflake":
            return await self._send_snowflake(meta, configuration, batch)
        if kind in indexers.OPENSEARCH_KINDS and not (
            configuration.get("ClusterEndpoint") or configuration.get("CollectionEndpoint")
        ):
            return indexers.Answer(
                retry="Shoal cannot look a DomainARN's endpoint up; set ClusterEndpoint.",
                error_code="OS.DomainEndpointUnknown",
            )
        if kind == "Splunk":
            request = indexers.splunk_request(configuration, batch.records, channel)
            headers = request.headers
        else:
            moment = datetime.fromtimestamp(self._clock.wall_ms() / 1000, tz=UTC)
            request = indexers.opensearch_request(configuration, batch.records, moment)
            service, region = indexers.signing_scope(kind, request.url, meta.region)
            headers = await asyncio.to_thread(
                functools.partial(
                    self._signer.sign,
                    service=service,
                    region=region,
                    method="POST",
                    url=request.url,
                    headers=request.headers,
                    body=request.body,
                )
            )
        try:
            status, body = await asyncio.to_thread(
                http_endpoint.post, request.url, headers, request.body, 16 * 1024 * 1024
            )
        except OSError as error:
            prefix = "Splunk" if kind == "Splunk" else "OS"
            return indexers.Answer(
                retry=f"The destination could not be reached: {error}",
                error_code=f"{prefix}.ConnectionFailed",
            )
        if kind == "Splunk":
            return indexers.splunk_answer(status, body)
        return indexers.opensearch_answer(status, body, len(batch.records))

    async def _send_snowflake(
        self, meta: DeliveryStreamMeta, configuration: Mapping[str, Any], batch: _Batch
    ) -> indexers.Answer:
        """One transaction inserting the buffer's records after the shard's mark
        (`snowflake_tables.load`, exactly once); records that do not map to rows fail alone, a
        failed connection or statement fails the whole request (retried)."""
        assert batch.sequences is not None
        metadata = [
            {"firehoseDeliveryStreamName": meta.name, "IngestionTime": arrival_ms}
            for arrival_ms in batch.arrivals_ms
        ]
        try:
            loaded = await asyncio.to_thread(
                functools.partial(
                    snowflake_tables.load,
                    configuration,
                    stream_uid=meta.uid,
                    shard_id=self._shard_id,
                    records=batch.records,
                    sequences=batch.sequences,
                    metadata=metadata,
                )
            )
        except snowflake_tables.SnowflakeError as error:
            return indexers.Answer(retry=str(error), error_code=error.code)
        return indexers.Answer(
            failed={index: ("Snowflake.InvalidRecord", why) for index, why in loaded.unfit}
        )

    async def _write_failed(
        self,
        meta: DeliveryStreamMeta,
        *,
        kind: str,
        configuration: Mapping[str, Any],
        error_output_type: str,
        failures: list[_Failure],
        first_arrival: datetime,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Failed records, as AWS writes them (one JSON line each), to the error output: the
        S3 destination's bucket, or an HTTP endpoint's S3 backup, under its ErrorOutputPrefix
        (with `!{firehose:error-output-type}`) or `<Prefix><error-output-type>/YYYY/MM/DD/HH/`."""
        storage = configuration if kind == "ExtendedS3" else configuration["S3Configuration"]
        lines = b"".join(
            json.dumps(
                {
                    "attemptsMade": failure.attempts,
                    "arrivalTimestamp": failure.arrival_ms,
                    "errorCode": failure.error_code,
                    "errorMessage": failure.message,
                    "attemptEndingTimestamp": failure.ended_ms,
                    "rawData": base64.b64encode(failure.data).decode("ascii"),
                    **(extra or {}),
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
            for failure in failures
        )
        error_prefix = storage.get("ErrorOutputPrefix")
        prefix = (
            str(error_prefix)
            if error_prefix
            else f"{storage.get('Prefix') or ''}{error_output_type}/"
        )
        written = await self._write_s3_object(
            meta,
            {**storage, "CompressionFormat": "UNCOMPRESSED", "FileExtension": ""},
            lines,
            first_arrival,
            prefix=prefix,
            error_output_type=error_output_type,
        )
        if written:
            self._statistics.failed_records += len(failures)
        else:
            self._statistics.abandoned_records += len(failures)
        if self._statistics.probe is not None:
            self._statistics.probe.records_failed(
                meta.name, error_output_type if written else "abandoned", len(failures)
            )

    async def _process(
        self,
        meta: DeliveryStreamMeta,
        kind: str,
        configuration: Mapping[str, Any],
        batch: _Batch,
    ) -> _Batch:
        """The batch after the configured processors: the Lambda's Ok records (Dropped ones
        gone, failed ones written to the error output), then the delimiter appended."""
        records, arrivals = batch.records, batch.arrivals_ms
        origins = list(range(len(records)))  # each record's index in `batch`
        if processing.processors(configuration):
            expanded = processing.expand(configuration, records)
            if expanded.failed:
                ended_ms = self._clock.wall_ms()
                await self._write_failed(
                    meta,
                    kind=kind,
                    configuration=configuration,
                    error_output_type="processing-failed",
                    failures=[
                        _Failure(
                            data=records[index],
                            arrival_ms=arrivals[index],
                            attempts=1,
                            error_code=code,
                            message=message,
                            ended_ms=ended_ms,
                        )
                        for index, code, message in expanded.failed
                    ],
                    first_arrival=batch.first_arrival,
                )
            records = expanded.records
            arrivals = [arrivals[index] for index in expanded.sources]
            origins = [origins[index] for index in expanded.sources]
        function = processing.lambda_processor(configuration)
        lambda_keys: list[dict[str, str]] = [{} for _ in records]
        routing: list[dict[str, str]] | None = None
        if function is not None:
            kept_records: list[bytes] = []
            kept_arrivals: list[int] = []
            kept_keys: list[dict[str, str]] = []
            kept_origins: list[int] = []
            kept_routing: list[dict[str, str]] = []
            failures: list[_Failure] = []
            for part in processing.chunks(records, function.buffer_bytes):
                outcomes, attempts = await self._invoke(
                    meta, function, [records[i] for i in part], [arrivals[i] for i in part]
                )
                ended_ms = self._clock.wall_ms()
                for index, outcome in zip(part, outcomes, strict=True):
                    if outcome.result == "Ok":
                        kept_records.append(outcome.data)
                        kept_arrivals.append(arrivals[index])
                        kept_keys.append(dict(outcome.partition_keys or {}))
                        kept_origins.append(origins[index])
                        kept_routing.append(dict(outcome.routing or {}))
                    elif outcome.result == "ProcessingFailed":
                        failures.append(
                            _Failure(
                                data=records[index],
                                arrival_ms=arrivals[index],
                                attempts=attempts,
                                error_code=outcome.error_code,
                                message=outcome.message,
                                ended_ms=ended_ms,
                            )
                        )
            if failures:
                await self._write_failed(
                    meta,
                    kind=kind,
                    configuration=configuration,
                    error_output_type="processing-failed",
                    failures=failures,
                    first_arrival=batch.first_arrival,
                    extra={"lambdaArn": function.function_arn},
                )
            records, arrivals, lambda_keys = kept_records, kept_arrivals, kept_keys
            origins, routing = kept_origins, kept_routing
        keys: list[PartitionKeys] | None = None
        sequences = batch.sequences
        if (configuration.get("DynamicPartitioningConfiguration") or {}).get("Enabled"):
            records, arrivals, keys = await self._partition(
                meta, kind, configuration, batch, records, arrivals, lambda_keys
            )
            sequences = None  # S3 only: objects are not matched to source records
        if processing.appends_delimiter(configuration):
            records = [data + b"\n" for data in records]
        return _Batch(
            records=records,
            arrivals_ms=arrivals,
            first_arrival=batch.first_arrival,
            keys=keys,
            sequences=None if sequences is None else [sequences[i] for i in origins],
            routing=routing,
        )

    async def _partition(
        self,
        meta: DeliveryStreamMeta,
        kind: str,
        configuration: Mapping[str, Any],
        batch: _Batch,
        records: list[bytes],
        arrivals: list[int],
        lambda_keys: list[dict[str, str]],
    ) -> tuple[list[bytes], list[int], list[PartitionKeys]]:
        """Each record's partition keys (the MetadataExtraction query's, the Lambda's); a
        record missing a key the prefix uses goes to the error output."""
        query = processing.metadata_query(configuration)
        needed = object_keys.partition_key_names(str(configuration.get("Prefix") or ""))
        kept: tuple[list[bytes], list[int], list[PartitionKeys]] = ([], [], [])
        failures: list[_Failure] = []
        for data, arrival_ms, from_lambda in zip(records, arrivals, lambda_keys, strict=True):
            try:
                from_query = {} if query is None else partition_keys.extract(query, data)
                missing = (needed["partitionKeyFromQuery"] - from_query.keys()) | (
                    needed["partitionKeyFromLambda"] - from_lambda.keys()
                )
                if missing:
                    raise partition_keys.PartitioningError(
                        f"No value for partition key(s) {', '.join(sorted(missing))}."
                    )
            except partition_keys.PartitioningError as error:
                failures.append(
                    _Failure(
                        data=data,
                        arrival_ms=arrival_ms,
                        attempts=1,
                        error_code="DynamicPartitioning.MetadataExtractionFailed",
                        message=str(error),
                        ended_ms=self._clock.wall_ms(),
                    )
                )
                continue
            kept[0].append(data)
            kept[1].append(arrival_ms)
            kept[2].append(
                {
                    "partitionKeyFromQuery": {
                        name: from_query[name] for name in needed["partitionKeyFromQuery"]
                    },
                    "partitionKeyFromLambda": {
                        name: from_lambda[name] for name in needed["partitionKeyFromLambda"]
                    },
                }
            )
        if failures:
            await self._write_failed(
                meta,
                kind=kind,
                configuration=configuration,
                error_output_type="partitioning-failed",
                failures=failures,
                first_arrival=batch.first_arrival,
            )
        return kept

    async def _invoke(
        self,
        meta: DeliveryStreamMeta,
        function: processing.LambdaProcessor,
        records: list[bytes],
        arrivals_ms: list[int],
    ) -> tuple[list[processing.Outcome], int]:
        """Each record's outcome, and the attempts made: the invocation is retried
        `function.retries` times; then every record of it is ProcessingFailed."""
        record_ids = [str(index) for index in range(len(records))]
        failure = processing.Outcome(result="ProcessingFailed", data=b"")
        attempts = 0
        while attempts <= function.retries:
            attempts += 1
            event = processing.build_event(
                invocation_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                delivery_stream_arn=meta.arn,
                region=meta.region,
                record_ids=record_ids,
                arrivals_ms=arrivals_ms,
                records=records,
            )
            try:
                payload = await asyncio.to_thread(self._lambda.invoke, function.function_arn, event)
                return processing.parse_result(
                    payload, record_ids=record_ids, records=records
                ), attempts
            except LambdaError as error:
                failure = processing.Outcome(
                    result="ProcessingFailed",
                    data=b"",
                    error_code="Lambda.FunctionError",
                    message=str(error),
                )
            except processing.ContractError as error:
                failure = processing.Outcome(
                    result="ProcessingFailed", data=b"", error_code=error.code, message=str(error)
                )
            self._statistics.failed_attempts += 1
            if attempts <= function.retries:
                await asyncio.sleep(
                    self._retry.backoff_ms(attempts, jitter=self._rng.random()) / 1000
                )
        log.warning("firehose_processing_failed", extra={"error": failure.message})
        return [
            processing.Outcome(
                result="ProcessingFailed",
                data=data,
                error_code=failure.error_code,
                message=failure.message,
            )
            for data in records
        ], attempts

    async def _write(self, delivery_stream: str, bucket: str, key: str, payload: bytes) -> bool:
        """True once written; False when the retry duration ran out (the data is dropped, as
        AWS drops S3 data it could not deliver for 24 hours)."""
        first_failure_ms: int | None = None
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(
                    self._store.put_object, bucket=bucket, key=key, body=payload
                )
                return True
            except StoreError as error:
                attempt += 1
                self._statistics.failed_attempts += 1
                if self._statistics.probe is not None:
                    self._statistics.probe.attempt_failed(delivery_stream, "s3")
                now_ms = self._clock.wall_ms()
                first_failure_ms = now_ms if first_failure_ms is None else first_failure_ms
                if self._retry.gives_up(first_failure_ms=first_failure_ms, now_ms=now_ms):
                    log.error(
                        "firehose_delivery_abandoned", extra={"key": key, "error": str(error)}
                    )
                    return False
                pause_ms = self._retry.backoff_ms(attempt, jitter=self._rng.random())
                log.warning(
                    "firehose_delivery_retry",
                    extra={"key": key, "attempt": attempt, "error": str(error)},
                )
                await asyncio.sleep(pause_ms / 1000)


def _gunzip(data: bytes) -> bytes:
    """A staged object COPY's GZIP option reads; CopyCommandError when it is not gzip."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as error:
        raise copy_command.CopyCommandError(
            f"The staged object is not gzip-compressed, as the GZIP option says: {error}"
        ) from error


def _json_objects(records: list[bytes]) -> list[dict[str, Any]]:
    """The records that are JSON objects (a new table's columns are inferred from them)."""
    documents = []
    for data in records:
        try:
            document = json.loads(data)
        except ValueError:
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents
