"""Running SQL applications inside the nodes, as consumers of their input streams.

Every node runs one `ApplicationRunner`. It watches the metadata image and, for each RUNNING
application, competes for the application's **placement lease** (one lease in the metadata
quorum's lease table, under the application's own lease application name): the node holding it
runs the whole application, so every shard of the input feeds one pipeline and a window's rows
are counted once, whatever the number of shards or nodes. The lease follows the KCL's rules
(renewed every third of the failover time; taken by another node once it has seen the lease's
counter unchanged for the failover time), so when the running node dies another node takes the
application over within about the failover time.

The node that holds the placement runs a KCL-style `Worker` (`broker/client/worker.py`) over
the input stream, in process (`LocalLeaseClient`; each shard read inside the node by
`shard_reader.ShardReader`, GetRecords' read without its page shapes): it is the application's
only worker, so it takes every shard's lease; its record processors parse the records into rows
(`records.py`) and push them into the application's `Pipeline`. A tick advances the watermark
(`windows.next_watermark` per shard, the minimum over shards) so idle streams close their
windows too, and writes the rows of every in-application stream an output names to its
destination stream (PutRecords through LocalKinesis, as the application's account).

The starting position: NOW and TRIM_HORIZON start a new reader (lease application name with
the application's `run`), LAST_STOPPED_POINT continues the previous run's checkpoints.

Durability: the marks (`RecordAnalyticsProgress`: windows written through a watermark, each
shard's last record whose continuous rows were written) are recorded at each tick, and input
checkpoints held back until no open window needs a record, so a successor replays the open
windows' records and skips what the marks cover. Rows written after the last mark are keyed in
their Kinesis output streams by a hash of (output, ROWTIME, record): a resumed application
reads the keys its outputs received lately and does not write those rows again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from broker.analytics import messages, pipeline, records, reference_data, sql, windows
from broker.analytics.applications import (
    PLACEMENT_LEASE_KEY,
    Application,
    ApplicationStatus,
    ApplicationTable,
    lease_application,
)
from broker.analytics.duckdb_engine import DuckDbEngine
from broker.analytics.hotspots import HotspotParameters
from broker.analytics.shard_reader import ShardReader, StoredPage
from broker.caller import Caller
from broker.client.retrieval import ShardInfo
from broker.client.worker import (
    Checkpointer,
    InitializationInput,
    InitialPosition,
    LeaseClient,
    LeaseLostError,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
    Worker,
    WorkerConfig,
)
from broker.clock import Clock
from broker.consumers.leases import (
    CreateLeases,
    Lease,
    LeaseError,
    NewLease,
    ReleaseLease,
    RenewLease,
    TakeLease,
)
from broker.errors import ErrorCode, ShoalError
from broker.firehose.aws_clients import LambdaError, LambdaInvoker
from broker.meta.commands import RecordAnalyticsProgress
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import MetadataImage
from broker.service.kinesis import KinesisService
from broker.streams.namespaces import Namespace, stream_key

log = logging.getLogger(__name__)

PUT_RECORDS_MAX = 500  # Kinesis' PutRecords entries per call


class DeliveryStreams(Protocol):
    """The node's Firehose service (its `call`), for outputs to delivery streams."""

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]: ...


# A Lambda output's invocation: Lambda's 6 MB synchronous payload, with room for the envelope.
LAMBDA_PAYLOAD_BYTES_MAX = 5 * 1024 * 1024
LAMBDA_RECORDS_MAX = 500
LAMBDA_RECORD_OVERHEAD_BYTES = 96  # a record's id and metadata in the event

# Firehose's PutRecordBatch: at most 500 records and 4 MiB a call.
PUT_RECORD_BATCH_MAX = 500
PUT_RECORD_BATCH_BYTES_MAX = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerSettings:
    failover_ms: int = 10_000  # the KCL's default: how long a dead node's application waits
    tick_ms: int = 200  # watermark and output cadence
    # Records written this long ago may still be unread: the watermark stays this far behind
    # the clock once a reader has caught up.
    in_flight_ms: int = 1_000
    polling_idle_interval_ms: int = 200
    # A resumed application skips the rows its outputs' streams received this long before it
    # started that its replay produces again (a takeover comes within about twice the failover
    # time of the last write).
    rewrite_lookback_ms: int = 60_000


def _starting_position(app: Application) -> str:
    configuration = app.input_descriptions()[0].get("InputStartingPositionConfiguration", {})
    return str(configuration.get("InputStartingPosition", "NOW"))


class ApplicationRunner:
    """Module docstring. One per node; `run()` until cancelled."""

    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        lease_client: LeaseClient,
        kinesis: KinesisService,
        delivery_streams: DeliveryStreams | None = None,
        clock: Clock,
        worker_id: str,
        default_namespace: Namespace,
        settings: RunnerSettings | None = None,
    ) -> None:
        self._metadata = metadata
        self._default_namespace = default_namespace
        self._lease_client = lease_client
        self._kinesis = kinesis
        self.delivery_streams = delivery_streams
        self._clock = clock
        self._worker_id = worker_id
        self.settings = settings if settings is not None else RunnerSettings()
        self._placements: dict[str, _Placement] = {}

    def running(self) -> tuple[str, ...]:
        """The keys of the applications this node runs now (holds the placement of)."""
        return tuple(sorted(k for k, p in self._placements.items() if p.active is not None))

    def statistics(self) -> dict[str, ApplicationStatistics]:
        """Per application this node runs: records in and out, errors, the watermark."""
        found = {}
        for key, placement in list(self._placements.items()):
            active = placement.active
            if active is not None:
                found[key] = active.statistics()
        return found

    async def run(self) -> None:
        """Reconciles the applications with the image every tick; infinite on purpose (the
        node cancels it at stop)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    self._reconcile(tasks)
                    # Again at the next change of the applications (a StartApplication is
                    # placed at once), or after a tick for the transitions that time makes.
                    seen = self._metadata.image().analytics

                    def changed(image: MetadataImage, seen: ApplicationTable = seen) -> bool:
                        return image.analytics is not seen

                    with contextlib.suppress(ShoalError):
                        await self._metadata.wait_for_image(
                            changed, timeout_s=self.settings.tick_ms / 1000
                        )
        finally:
            for placement in self._placements.values():
                placement.cancel()

    def _reconcile(self, tasks: asyncio.TaskGroup) -> None:
        now_ms = self._clock.wall_ms()
        wanted: dict[str, Application] = {}
        for key, app in self._metadata.image().analytics.applications.items():
            if app.is_gone(now_ms) or app.transient_status is ApplicationStatus.DELETING:
                continue
            if app.status is ApplicationStatus.RUNNING and self.input_of(app) is not None:
                wanted[key] = app
        for key, placement in list(self._placements.items()):
            current = wanted.get(key)
            if current is None or current.run != placement.app.run or placement.done():
                placement.stop()
                if placement.done():
                    del self._placements[key]
            elif current.version_id != placement.app.version_id:
                placement.update(current)
        for key, app in wanted.items():
            if key not in self._placements:
                placement = _Placement(self, app)
                self._placements[key] = placement
                placement.task = tasks.create_task(placement.run(), name=f"analytics-{app.name}")

    def input_of(self, app: Application) -> InputSource | None:
        """The Kinesis stream an application's input reads, and as whom: its data stream, or
        for a delivery stream the stream holding what is put into it (a DirectPut delivery
        stream's internal stream, in the node's default namespace as every internal stream;
        a KinesisStreamAsSource one's source stream). None while there is nothing to read
        (no input, or the delivery stream does not exist)."""
        inputs = app.input_descriptions()
        if not inputs:
            return None
        stream = app.input_stream_name()
        if stream is not None:
            arn = str(inputs[0]["KinesisStreamsInputDescription"]["ResourceARN"])
            caller = stream_caller(arn)
            key = self._stream_key(stream, caller.account_id, caller.region)
            return InputSource(stream=stream, key=key, caller=caller, arn=arn, firehose=False)
        described = inputs[0].get("KinesisFirehoseInputDescription")
        if described is None:
            return None
        arn = str(described["ResourceARN"])
        meta = self._metadata.image().delivery_streams.get(arn)
        if meta is None:
            return None
        source = meta.source()
        if source is None:
            name = meta.internal_stream  # in the default namespace: its key is its name
            return InputSource(stream=name, key=name, caller=None, arn=arn, firehose=True)
        source_arn = str(source["KinesisStreamARN"])
        caller = stream_caller(source_arn)
        name = source_arn.rsplit("/", 1)[-1]
        key = self._stream_key(name, caller.account_id, caller.region)
        return InputSource(stream=name, key=key, caller=caller, arn=arn, firehose=True)

    def _stream_key(self, name: str, account_id: str, region: str) -> str:
        namespace = Namespace(account_id=account_id, region=region)
        return stream_key(name, namespace, default=self._default_namespace)


def stream_caller(arn: str) -> Caller:
    """The internal caller acting in the namespace (region, account) a stream's ARN names."""
    _, _, _, region, account_id, _ = arn.split(":", 5)
    return Caller(region=region, account_id=account_id, door="internal")


@dataclass(frozen=True, slots=True)
class InputSource:
    """What a running application reads: a Kinesis stream, in a namespace."""

    stream: str
    key: str  # the stream's key in the metadata image (its namespace's)
    caller: Caller | None  # None: the node's default namespace (internal streams)
    arn: str  # the input's ResourceARN (a data stream's or a delivery stream's)
    firehose: bool  # a delivery stream's records (KDA's preprocessor event says so)


class _LocalCalls:
    """LocalKinesis's call, in a stream's namespace (imported lazily by the node)."""

    def __init__(self, service: KinesisService, caller: Caller | None) -> None:
        self._service = service
        self._caller = caller

    async def call(self, operation: str, request: Any) -> dict[str, Any]:
        return await self._service.call(operation, request, self._caller)


class _Placement:
    """One application on this node: competes for its placement lease and runs it while held."""

    def __init__(self, runner: ApplicationRunner, app: Application) -> None:
        self.runner = runner
        self.app = app
        self.task: asyncio.Task[None] | None = None
        self.active: _RunningApp | None = None
        self._stopping = asyncio.Event()
        self._lease_name = lease_application(app, "placement")

    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def stop(self) -> None:
        self._stopping.set()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def update(self, app: Application) -> None:
        """A new configuration version: the running application restarts with it."""
        self.app = app
        if self.active is not None:
            self.active.restart_with(app)

    async def run(self) -> None:
        settings = self.runner.settings
        renew_s = (settings.failover_ms // 3 - 25) / 1000
        held: Lease | None = None
        seen: tuple[str | None, int, int] | None = None  # owner, counter, since (monotonic)
        source = self.runner.input_of(self.app)
        assert source is not None
        stream = source.key  # the lease table names a stream by its key (its namespace's)
        running: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    held, seen = await self._hold(stream, held, seen)
                except ShoalError as error:  # no quorum: keep what we have until it expires
                    log.warning("analytics_placement_unavailable", extra={"error": str(error)})
                if held is not None and running is None:
                    try:
                        self.app = await self._latest(stream)
                    except ShoalError as error:  # the image lags: try at the next step
                        log.warning("analytics_placement_unavailable", extra={"error": str(error)})
                    else:
                        self.active = _RunningApp(self.runner, self.app)
                        running = asyncio.create_task(self.active.run())
                if held is None and running is not None:
                    running.cancel()  # deposed: stop at once, without checkpointing
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
                    running, self.active = None, None
                if running is not None and running.done():
                    # The application failed (an engine error, an output it cannot write to):
                    # logged, and started again from its marks at the next step, as KDA
                    # restarts a failed application. Only this application is affected.
                    if not running.cancelled() and running.exception() is not None:
                        log.error("analytics_application_failed", exc_info=running.exception())
                    running, self.active = None, None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=renew_s / 3)
        finally:
            if running is not None:
                if self.active is not None and not running.done():
                    # Gracefully (its marks recorded), within the failover time: a successor
                    # would take the placement by then anyway.
                    self.active.stop()
                    await asyncio.wait({running}, timeout=settings.failover_ms / 1000)
                running.cancel()
                (outcome,) = await asyncio.gather(running, return_exceptions=True)
                if isinstance(outcome, Exception):
                    log.error("analytics_application_failed", exc_info=outcome)
            self.active = None
            if held is not None:
                with contextlib.suppress(ShoalError):
                    await self.runner._lease_client.release(
                        ReleaseLease(
                            application=self._lease_name,
                            stream_name=stream,
                            lease_key=PLACEMENT_LEASE_KEY,
                            owner=self.runner._worker_id,
                            expected_counter=held.lease_counter,
                        )
                    )

    async def _latest(self, stream: str) -> Application:
        """The application as of this node's placement: an image that shows the lease taken
        also shows every mark the previous holder recorded before it lost the lease."""
        me = self.runner._worker_id
        name = self._lease_name

        def placed_here(image: MetadataImage) -> bool:
            lease = image.leases.get(name, stream, PLACEMENT_LEASE_KEY)
            return lease is not None and lease.lease_owner == me

        image = await self.runner._metadata.wait_for_image(placed_here)
        latest = image.analytics.applications.get(self.app.key)
        return latest if latest is not None and latest.run == self.app.run else self.app

    async def _hold(
        self, stream: str, held: Lease | None, seen: tuple[str | None, int, int] | None
    ) -> tuple[Lease | None, tuple[str | None, int, int] | None]:
        """One step of the placement lease: renew it when held, else take it when it is free
        or its counter has not moved for the failover time."""
        client = self.runner._lease_client
        me = self.runner._worker_id
        now = self.runner._clock.monotonic_ms()
        if held is not None:
            renewed = await client.renew(
                RenewLease(
                    application=self._lease_name,
                    stream_name=stream,
                    lease_key=PLACEMENT_LEASE_KEY,
                    owner=me,
                    expected_counter=held.lease_counter,
                )
            )
            return (None, None) if isinstance(renewed, LeaseError) else (renewed, None)
        current = await client.list_leases(application=self._lease_name, stream_name=stream)
        if not current:
            created = await client.create_leases(
                CreateLeases(
                    application=self._lease_name,
                    stream_name=stream,
                    leases=(NewLease(shard_id=PLACEMENT_LEASE_KEY),),
                )
            )
            if isinstance(created, LeaseError):
                return None, None
            current = created
        lease = current[0]
        observed = (lease.lease_owner, lease.lease_counter)
        if seen is None or (seen[0], seen[1]) != observed:
            seen = (lease.lease_owner, lease.lease_counter, now)
        expired = now - seen[2] >= self.runner.settings.failover_ms
        if lease.lease_owner is None or lease.lease_owner == me or expired:
            taken = await client.take(
                TakeLease(
                    application=self._lease_name,
                    stream_name=stream,
                    lease_key=PLACEMENT_LEASE_KEY,
                    owner=me,
                    expected_owner=lease.lease_owner,
                    expected_counter=lease.lease_counter,
                )
            )
            if not isinstance(taken, LeaseError):
                log.info("analytics_application_placed", extra={"application": self.app.name})
                return taken, None
        return None, seen


@dataclass(slots=True)
class _ShardProgress:
    started_ms: int
    max_rowtime_ms: int | None = None
    caught_up: bool = False
    watermark_ms: int = 0
    millis_behind_latest: int = 0
    # Batches processed but not checkpointed: (last sequence number, the time until which a
    # window may still need its records, `records` after the batch), oldest first.
    pending: deque[tuple[str, int, int]] = field(default_factory=deque)
    records: int = 0  # records processed on the shard in this lease period
    checkpointer: Checkpointer | None = None


@dataclass(slots=True)
class _Counters:
    records_in: int = 0
    records_out: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationStatistics:
    records_in: int  # input records read
    records_out: int  # output records written
    errors: int  # input records that did not parse (KDA's error_stream)
    late_rows: int  # rows for windows that had already closed
    watermark_ms: int
    millis_behind_latest: int  # the slowest input shard's, at its last read
    # The configuration version being run (its reference data loaded); 0 while starting.
    version_id: int = 0


class _RunningApp:
    """The application running on this node: its worker, pipeline, watermark and outputs."""

    def __init__(self, runner: ApplicationRunner, app: Application) -> None:
        self.runner = runner
        self.app = app
        self.counters = _Counters()
        self._lock = asyncio.Lock()
        self._worker: Worker | None = None
        self._restart = asyncio.Event()
        self._stop = asyncio.Event()
        self._shards: dict[str, _ShardProgress] = {}
        self._engine = DuckDbEngine()
        self._running_version = 0
        self._lambda: LambdaInvoker | None = None
        # The marks: what the metadata quorum has recorded (`_*_recorded`), and what this
        # process has written (each shard's last record whose continuous rows are out; the
        # windows through the pipeline's watermark). They differ for up to a tick, and for
        # longer when no quorum answers; a restart in this process (UpdateApplication) resumes
        # from what it wrote, a successor on another node from what was recorded.
        self._emitted_recorded = 0
        self._continuous_recorded: dict[str, str] = {}
        self._continuous_written: dict[str, str] = {}
        self._restarted = False
        self._build(app, emitted_ms=0)

    def _build(self, app: Application, *, emitted_ms: int) -> None:
        """The pipeline, resumed from the marks: windows that ended by the application's
        `emitted_through_ms` (or `emitted_ms`, written here) were written (their replayed rows
        are late, not emitted again); records through `continuous_through` (or this process's
        `_continuous_written`) had their continuous rows written."""
        self.app = app
        program = sql.compile_program(app.code)
        inputs = app.input_descriptions()
        self._emitted_recorded = max(self._emitted_recorded, app.emitted_through_ms)
        _merge_marks(self._continuous_recorded, app.continuous_through)
        _merge_marks(self._continuous_written, self._continuous_recorded.items())
        self._pipeline = pipeline.Pipeline(
            program,
            pipeline.source_streams(inputs),
            self._engine,
            watermark_ms=max(self._emitted_recorded, emitted_ms),
        )
        # A record may feed a window until its ROWTIME plus every window's size (a chain of
        # windows delays each stage by at most its size); it is checkpointed after that.
        self._retention_ms = sum(p.window.size_ms for p in program.pumps if p.window is not None)
        self._retention_ms += sum(
            p.stagger.range_ms for p in program.pumps if p.stagger is not None
        )
        self._retention_ms += sum(
            p.sliding.range_ms
            for p in program.pumps
            if p.sliding is not None and p.sliding.range_ms is not None
        )
        self._retention_ms += sum(
            max(p.join.left_range_ms, p.join.right_range_ms)
            for p in program.pumps
            if p.join is not None
        )
        # And a row-counted state (ROWS windows, HOTSPOTS' window, RANDOM_CUT_FOREST's sample)
        # needs a shard's last rows: that many records of each shard are replayed, which
        # rebuilds it on a successor (a forest from its last sample's worth of rows).
        self._retention_rows = max((_rows_kept(pump) for pump in program.pumps), default=0)
        self._parser = records.RecordParser(inputs[0]["InputSchema"])
        processor = inputs[0].get("InputProcessingConfigurationDescription", {})
        function = processor.get("InputLambdaProcessorDescription", {}).get("ResourceARN")
        self._preprocessor: str | None = str(function) if function else None
        self._source: InputSource | None = None  # resolved at each (re)start
        # After a resumed start: the partition keys (counted) of the rows the outputs' streams
        # received lately, so the replayed rows already written before are not written again.
        self._written: Counter[str] = Counter()
        self._source_names = list(inputs[0]["InAppStreamNames"])
        self._outputs = app.output_descriptions()

    def statistics(self) -> ApplicationStatistics:
        return ApplicationStatistics(
            records_in=self.counters.records_in,
            records_out=self.counters.records_out,
            errors=self.counters.errors,
            late_rows=self._pipeline.late_rows,
            watermark_ms=self._pipeline.watermark_ms,
            millis_behind_latest=max(
                (progress.millis_behind_latest for progress in list(self._shards.values())),
                default=0,
            ),
            version_id=self._running_version,
        )

    def restart_with(self, app: Application) -> None:
        self.app = app
        self._restart.set()

    def stop(self) -> None:
        """Graceful stop: the reader stops after its current batch, and the marks of what was
        written are recorded (a LAST_STOPPED_POINT start replays nothing that is out)."""
        self._stop.set()
        self._restart.set()

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                self._restart.clear()
                await self._run_once()
                if self._stop.is_set():
                    return
                # UpdateApplication: the new version resumes from what this run wrote.
                self._restarted = True
                self._build(self.app, emitted_ms=self._pipeline.watermark_ms)
        finally:
            self._engine.close()

    async def _load_references(self, app: Application) -> None:
        """Reads every reference data source's S3 object into its table (at each start and
        each rebuild after an UpdateApplication, as KDA reloads reference data)."""
        tables = pipeline.reference_tables(app.reference_descriptions())
        for described in app.reference_descriptions():
            rows = await asyncio.to_thread(reference_data.load, described, region=app.region)
            name = str(described["TableName"])
            self._engine.load_table(name, tables[name], rows)

    async def _run_once(self) -> None:
        app = self.app
        await self._load_references(app)
        if not self._restarted and (app.emitted_through_ms or app.continuous_through):
            # Resumed from recorded marks (a takeover, LAST_STOPPED_POINT): rows written after
            # them may be replayed. A restart in this process knows what it wrote exactly.
            self._written = await self._recently_written()
        self._running_version = app.version_id
        settings = self.runner.settings
        position = _starting_position(app)
        source = self.runner.input_of(app)
        if source is None:
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, messages.input_gone(arn=app.arn))
        self._source = source
        config = WorkerConfig(
            worker_id=self.runner._worker_id,
            failover_ms=settings.failover_ms,
            initial_position=(
                InitialPosition.LATEST if position == "NOW" else InitialPosition.TRIM_HORIZON
            ),
            polling_idle_interval_ms=settings.polling_idle_interval_ms,
            # An empty read says the reader reached the shard's committed end (MillisBehindLatest
            # 0): the watermark may then follow the clock, even when the last page with records
            # came from a replica that could not tell (its MillisBehindLatest above 0).
            process_empty_batches=True,
            shard_sync_interval_ms=5_000,
            parent_poll_interval_ms=1_000,
            clock=self.runner._clock,
        )
        ctx = self.runner._kinesis.ctx

        def reader(shard: ShardInfo) -> ShardReader:
            # The shard's log read inside the node (shard_reader.py), not through GetRecords.
            return ShardReader(
                ctx, stream_key=source.key, shard=shard, caller=source.caller, config=config
            )

        self._worker = Worker(
            application=lease_application(app, app.reader),
            stream_name=source.stream,
            lease_stream_name=source.key,
            processor_factory=lambda: _Processor(self),
            lease_client=self.runner._lease_client,
            kinesis=_LocalCalls(self.runner._kinesis, source.caller),
            config=config,
            record_source_factory=reader,
        )
        async with asyncio.TaskGroup() as tasks:
            worker_task = tasks.create_task(self._worker.run())
            ticker = tasks.create_task(self._tick_until_restart())
            await self._restart.wait()
            # Gracefully: the reader ends after its batch, the ticker after its tick (never
            # cancelled halfway, between closing windows and writing their rows).
            await self._worker.shutdown()
            await ticker
            await worker_task
        async with self._lock:  # what the last batches and tick wrote, recorded
            await self._flush(_window_position(self._pipeline.watermark_ms))
            await self._record_progress()

    async def _tick_until_restart(self) -> None:
        while not self._restart.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._restart.wait(), await self._until_next_tick_s())
            if not self._restart.is_set():
                await self.tick()

    async def _until_next_tick_s(self) -> float:
        """The wait before the next tick: the tick interval, or less when a caught-up reader's
        watermark (the clock less the in-flight allowance) reaches the end of the earliest open
        window sooner, so that window closes on time rather than up to a tick late."""
        settings = self.runner.settings
        async with self._lock:  # the pipeline changes in a thread under the lock
            close_ms = self._pipeline.next_close_ms()
        if close_ms is None:
            return settings.tick_ms / 1000
        due_ms = close_ms + settings.in_flight_ms - self.runner._clock.wall_ms()
        if due_ms <= 0:  # already due: a reader not caught up holds it (reads close it)
            return settings.tick_ms / 1000
        return min(settings.tick_ms, due_ms) / 1000

    async def _recently_written(self) -> Counter[str]:
        """The rows (`_row_key`, counted) each Kinesis output stream received in the last
        `rewrite_lookback_ms` past the recorded marks: the rows a previous holder wrote in the
        moment between its last output write and the marks it recorded, which the replay
        produces again. A row's partition key names the progress that produced it, so a row
        the marks cover is not counted (a new row equal to it is written)."""
        since = self.runner._clock.wall_ms() - self.runner.settings.rewrite_lookback_ms
        keys: Counter[str] = Counter()
        for output in self._outputs:
            destination = output.get("KinesisStreamsOutputDescription")
            if destination is None:
                continue
            arn = str(destination["ResourceARN"])
            calls = _LocalCalls(self.runner._kinesis, stream_caller(arn))
            for partition_key in await _partition_keys_since(
                calls, arn.partition(":stream/")[2], since
            ):
                row_key = _past_the_marks(
                    partition_key, self._continuous_recorded, self._emitted_recorded
                )
                if row_key is not None:
                    keys[row_key] += 1
        return keys

    def shard_started(self, shard_id: str) -> None:
        self._shards[shard_id] = _ShardProgress(started_ms=self.runner._clock.wall_ms())

    def shard_stopped(self, shard_id: str) -> None:
        self._shards.pop(shard_id, None)

    async def process(self, shard_id: str, batch: ProcessRecordsInput) -> None:
        """Parses a batch into rows and pushes them; records replayed after a restart (at or
        below the shard's recorded continuous mark) rebuild the windows, and their continuous
        rows, already written before, are dropped. An empty batch only updates how far behind
        the shard's reader is."""
        if not batch.records:
            progress = self._shards.get(shard_id)
            if progress is not None:
                progress.caught_up = batch.millis_behind_latest == 0
                progress.millis_behind_latest = batch.millis_behind_latest
            return
        rows: list[records.Row] = []  # of the shard's source stream
        replayed: list[records.Row] = []  # rows of records whose continuous rows are out
        stream = self._source_names[_stream_index(shard_id, len(self._source_names))]
        page = batch.records
        if not isinstance(page, StoredPage):  # not read by ShardReader: its columns
            page = StoredPage.of_users(page, missing_arrival_ms=self.runner._clock.wall_ms())
        number = page.number
        # Sequence numbers grow along a shard: a batch starting past the mark replays nothing.
        mark = self._continuous_written.get(shard_id)
        replay_through = int(mark) if mark is not None else -1
        replaying = int(number(0)) <= replay_through
        errors: list[records.Row] = []  # KDA's error_stream rows
        processed = await self._preprocess(shard_id, page)
        parse = self._parser.rows
        last_arrival_ms = -1
        rowtime: Any = None
        result, data = "Ok", b""
        payloads = page.data
        for index, arrival_ms in enumerate(page.arrivals_ms):
            if arrival_ms != last_arrival_ms:  # records of one page share a few arrival times
                last_arrival_ms = arrival_ms
                rowtime = records.to_timestamp(arrival_ms)
            is_replay = replaying and int(number(index)) <= replay_through
            if processed is None:
                data = payloads[index]
            else:
                result, data = processed[index]
                if result == "Dropped":
                    continue
            try:
                if result != "Ok":
                    raise records.RecordError(messages.preprocessor_result(result=result))
                values = parse(data)
            except records.RecordError as error:
                self.counters.errors += 1
                if not is_replay:
                    errors.append(_error_row(rowtime, payloads[index], str(error)))
                continue
            append = replayed.append if is_replay else rows.append
            for value in values:
                append((rowtime, rowtime, *value))
        # Checkpointed per batch: through its last record once no window needs its latest.
        last = number(len(page) - 1)
        max_rowtime = max(page.arrivals_ms)
        pending = (last, max_rowtime + self._retention_ms)
        self.counters.records_in += len(batch.records)
        progress = self._shards.setdefault(
            shard_id, _ShardProgress(started_ms=self.runner._clock.wall_ms())
        )
        progress.caught_up = batch.millis_behind_latest == 0
        progress.millis_behind_latest = batch.millis_behind_latest
        if max_rowtime is not None:
            progress.max_rowtime_ms = max(progress.max_rowtime_ms or max_rowtime, max_rowtime)
        progress.checkpointer = batch.checkpointer
        async with self._lock:
            if replayed:
                await asyncio.to_thread(self._pipeline.push, stream, replayed)
            self._pipeline.drain()  # the replayed records' continuous rows: written before
            if rows:
                await asyncio.to_thread(self._pipeline.push, stream, rows)
            position = _continuous_position(shard_id, last)
            await self._flush(position)
            await self._write_errors(errors, position)
            progress.records += len(batch.records)
            progress.pending.append((*pending, progress.records))
            self._continuous_written[shard_id] = last
        watermark_ms = self._next_watermark_ms()
        if watermark_ms is not None and self._pipeline.closes_a_window(watermark_ms):
            await self.tick()  # a record of a later window: close the window now, not next tick

    async def _preprocess(
        self, shard_id: str, batch_records: Sequence[Any]
    ) -> list[tuple[str, bytes]] | None:
        """The input's Lambda preprocessor (KDA's contract): each record's result (Ok, Dropped,
        ProcessingFailed) and data, in order; None without a preprocessor. An invocation that
        fails, or answers without a record, is retried (the input waits, as on KDA)."""
        if self._preprocessor is None or not batch_records:
            return None
        if self._lambda is None:
            self._lambda = LambdaInvoker(region=self.app.region)
        results: list[tuple[str, bytes]] = []
        for start in range(0, len(batch_records), LAMBDA_RECORDS_MAX):
            chunk = batch_records[start : start + LAMBDA_RECORDS_MAX]
            source = self._source
            assert source is not None
            event = {
                "invocationId": str(uuid.uuid4()),
                "applicationArn": self.app.arn,
                "streamArn": source.arn,
                "records": [
                    {
                        "recordId": str(record.sequence_number),
                        **_record_metadata(record, shard_id, source),
                        "data": base64.b64encode(record.data).decode("ascii"),
                    }
                    for record in chunk
                ],
            }
            results.extend(await self._invoke_preprocessor(event))
        return results

    async def _invoke_preprocessor(self, event: dict[str, Any]) -> list[tuple[str, bytes]]:
        assert self._lambda is not None
        assert self._preprocessor is not None
        delay_s = 0.05
        while True:  # until answered (cancelled with the application)
            try:
                body = await asyncio.to_thread(
                    self._lambda.invoke, self._preprocessor, orjson.dumps(event)
                )
                answered = {str(item["recordId"]): item for item in orjson.loads(body)["records"]}
                results = []
                for record in event["records"]:
                    item = answered[record["recordId"]]
                    result = str(item["result"])
                    data = base64.b64decode(item["data"]) if result == "Ok" else b""
                    results.append((result, data))
                return results
            except (LambdaError, ValueError, KeyError, TypeError) as error:
                log.warning("analytics_preprocessor_failed", extra={"error": str(error)})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)

    def _reading_every_shard(self) -> bool:
        """Whether every open shard of the input has a reader here: until then the watermark
        stays (a shard not read yet may hold rows for any open window)."""
        if self._source is None:
            return False
        now_ms = self.runner._clock.wall_ms()
        meta = self.runner._metadata.image().stream(self._source.key, now_ms=now_ms)
        if meta is None:
            return False
        return all(shard.shard_id in self._shards for shard in meta.open_shards())

    def _next_watermark_ms(self) -> int | None:
        """The application's watermark now: the lowest of its shards' (None until every open
        shard of the input has a reader here)."""
        now_ms = self.runner._clock.wall_ms()
        settings = self.runner.settings
        if not self._reading_every_shard():
            return None
        marks = []
        for progress in self._shards.values():
            # Caught up only on the shard's own answer (MillisBehindLatest 0; empty reads are
            # processed too): a slow first read of a backlog holds the watermark back, never
            # lets its windows close before its records are read.
            progress.watermark_ms = windows.next_watermark(
                progress.watermark_ms,
                max_rowtime_ms=progress.max_rowtime_ms,
                caught_up=progress.caught_up,
                now_ms=now_ms,
                in_flight_ms=settings.in_flight_ms,
            )
            marks.append(progress.watermark_ms)
        return min(marks) if marks else None

    async def tick(self) -> None:
        """Advances the watermark (closing windows), writes the outputs' rows, records the
        marks and checkpoints: every tick, and at once when a read closes a window."""
        watermark_ms = self._next_watermark_ms()
        if watermark_ms is None:
            return
        async with self._lock:
            await asyncio.to_thread(self._pipeline.advance, watermark_ms)
            await self._flush(_window_position(self._pipeline.watermark_ms))
            await self._record_progress()
        await self._checkpoint()

    async def _record_progress(self) -> None:
        """Records the marks in the metadata quorum once the rows they cover are written
        (fenced by the placement lease: a deposed node's proposal is refused)."""
        emitted = self._pipeline.watermark_ms
        continuous = {
            shard_id: sequence_number
            for shard_id, sequence_number in self._continuous_written.items()
            if sequence_number != self._continuous_recorded.get(shard_id)
        }
        if emitted <= self._emitted_recorded and not continuous:
            return
        app = self.app
        command = RecordAnalyticsProgress(
            now_ms=self.runner._clock.wall_ms(),
            account_id=app.account_id,
            region=app.region,
            name=app.name,
            reader=app.reader,
            owner=self.runner._worker_id,
            emitted_through_ms=emitted,
            continuous_through=tuple(sorted(continuous.items())),
        )
        try:
            await self.runner._metadata.propose(command)
        except ShoalError as error:  # no quorum, or deposed: retried at the next tick
            log.warning("analytics_progress_not_recorded", extra={"error": str(error)})
            return
        self._emitted_recorded = emitted
        self._continuous_recorded.update(continuous)

    async def _checkpoint(self) -> None:
        """Checkpoints each shard through its last record that no open window needs, that has
        `_retention_rows` records after it, and whose continuous rows are recorded as written:
        a restart replays the rest, rebuilding the open windows and row-counted states, and
        emits none that was written."""
        for shard_id, progress in list(self._shards.items()):
            safe: str | None = None
            recorded = self._continuous_recorded.get(shard_id)
            while progress.pending:
                sequence_number, needed_until_ms, records_then = progress.pending[0]
                if needed_until_ms > self._emitted_recorded or recorded is None:
                    break
                if progress.records - records_then < self._retention_rows:
                    break
                if int(sequence_number) > int(recorded):
                    break
                safe = sequence_number
                progress.pending.popleft()
            if safe is None or progress.checkpointer is None:
                continue
            try:
                await progress.checkpointer.checkpoint(safe)
            except (LeaseLostError, ValueError, ShoalError) as error:
                log.info("analytics_checkpoint_skipped", extra={"error": str(error)})

    async def _flush(self, position: str) -> None:
        """Writes the rows the pipeline produced since the last flush; `position` is the
        progress that produced them (`_continuous_position`, `_window_position`)."""
        received = self._pipeline.drain()
        for output in self._outputs:
            rows = received.get(str(output["Name"]))
            if not rows:
                continue
            await self._write(output, rows, position)

    async def _write_errors(self, rows: Sequence[records.Row], position: str) -> None:
        """Records that did not match the input schema go to the output named error_stream,
        if the application has one (as in KDA), with KDA's error columns."""
        if not rows:
            return
        for output in self._outputs:
            if str(output["Name"]).lower() == ERROR_STREAM:
                await self._write(output, rows, position, names=ERROR_COLUMNS)

    async def _write(
        self,
        output: dict[str, Any],
        rows: Sequence[records.Row],
        position: str,
        *,
        names: Sequence[str] | None = None,
    ) -> None:
        record_format = str(output["DestinationSchema"]["RecordFormatType"])
        if names is None:
            names = [column.name for column in self._pipeline.columns(str(output["Name"]))[1:]]
        payloads = [records.format_record(names, row[1:], record_format) for row in rows]
        delivery = output.get("KinesisFirehoseOutputDescription")
        if delivery is not None:
            _, _, name = str(delivery["ResourceARN"]).partition(":deliverystream/")
            await self._deliver(name, payloads)
            return
        function = output.get("LambdaOutputDescription")
        if function is not None:
            await self._invoke(str(function["ResourceARN"]), payloads)
            return
        destination = output.get("KinesisStreamsOutputDescription")
        if destination is None:
            return  # no other destination exists
        arn = str(destination["ResourceARN"])
        _, _, stream = arn.partition(":stream/")
        entries = []
        skipped = 0
        for row, data in zip(rows, payloads, strict=True):
            key = _row_key(str(output["Name"]), row, data)
            if self._written.get(key):  # written after the marks before a takeover, replayed
                self._written[key] -= 1
                if not self._written[key]:
                    del self._written[key]
                skipped += 1
                continue
            entries.append({"Data": data, "PartitionKey": f"{key}:{position}"})
        if skipped:
            log.info(
                "analytics_rows_already_written",
                extra={"application": self.app.name, "stream": stream, "rows": skipped},
            )
        calls = _LocalCalls(self.runner._kinesis, stream_caller(arn))
        for start in range(0, len(entries), PUT_RECORDS_MAX):
            chunk = entries[start : start + PUT_RECORDS_MAX]
            await _put_all(calls, stream, chunk)
            self.counters.records_out += len(chunk)

    async def _deliver(self, delivery_stream: str, payloads: list[bytes]) -> None:
        """Rows to a Firehose delivery stream (PutRecordBatch in AWS's batch limits; failed
        records, e.g. throttled, are retried), in the application's account."""
        service = self.runner.delivery_streams
        assert service is not None  # checked at StartApplication
        caller = Caller(region=self.app.region, account_id=self.app.account_id, door="internal")
        batch: list[bytes] = []
        size = 0
        for data in [*payloads, None]:
            full = data is None or (
                len(batch) == PUT_RECORD_BATCH_MAX or size + len(data) > PUT_RECORD_BATCH_BYTES_MAX
            )
            if batch and full:
                await _put_batch(service, caller, delivery_stream, batch)
                self.counters.records_out += len(batch)
                batch, size = [], 0
            if data is not None:
                batch.append(data)
                size += len(data)

    async def _invoke(self, function: str, payloads: list[bytes]) -> None:
        """Rows to a Lambda function with KDA's output contract: an event of records (id,
        base64 data, retryHint), answered per record Ok or DeliveryFailed; failed records are
        sent again with their retryHint raised, until every one is Ok."""
        if self._lambda is None:
            self._lambda = LambdaInvoker(region=self.app.region)
        invoker = self._lambda
        batches: list[list[bytes]] = [[]]
        size = 0
        for data in payloads:
            encoded = (len(data) + 2) // 3 * 4 + LAMBDA_RECORD_OVERHEAD_BYTES
            if batches[-1] and (
                len(batches[-1]) == LAMBDA_RECORDS_MAX or size + encoded > LAMBDA_PAYLOAD_BYTES_MAX
            ):
                batches.append([])
                size = 0
            batches[-1].append(data)
            size += encoded
        for batch in batches:
            if batch:
                await _deliver_to_lambda(invoker, function, self.app.arn, batch)
                self.counters.records_out += len(batch)


def _rows_kept(pump: sql.Pump) -> int:
    """The rows of its source a pump's state holds by count (0: none)."""
    counts = [0]
    if pump.sliding is not None and pump.sliding.rows is not None:
        counts.append(pump.sliding.rows)
    if pump.join is not None:
        counts += [pump.join.left_rows or 0, pump.join.right_rows or 0]
    if pump.scored is not None:
        parameters = pump.scored.parameters
        if isinstance(parameters, HotspotParameters):
            counts.append(parameters.window_size)
        else:  # a forest's full sample, and a shingle before its first point
            counts.append(parameters.sub_sample_size + parameters.shingle_size - 1)
    return max(counts)


def _merge_marks(marks: dict[str, str], more: Iterable[tuple[str, str]]) -> None:
    """Each shard's later sequence number of the two (marks only move forward)."""
    for shard_id, sequence_number in more:
        current = marks.get(shard_id)
        if current is None or int(sequence_number) > int(current):
            marks[shard_id] = sequence_number


def _record_metadata(record: Any, shard_id: str, source: InputSource) -> dict[str, Any]:
    """A record's metadata in KDA's preprocessor event: a delivery stream's record carries its
    arrival time only; a data stream's its sequence number, partition key and shard too."""
    arrival = record.approximate_arrival_timestamp
    arrival_ms = round(arrival.timestamp() * 1000) if arrival is not None else 0
    if source.firehose:
        return {"kinesisFirehoseRecordMetadata": {"approximateArrivalTimestamp": arrival_ms}}
    return {
        "kinesisStreamRecordMetadata": {
            "sequenceNumber": str(record.sequence_number),
            "partitionKey": record.partition_key,
            "shardId": shard_id,
            "approximateArrivalTimestamp": arrival_ms,
        }
    }


def _continuous_position(shard_id: str, sequence_number: str) -> str:
    """The progress that produced the rows written after a batch: its shard and last record
    (the continuous mark that covers them once recorded)."""
    return f"c:{shard_id}:{sequence_number}"


def _window_position(watermark_ms: int) -> str:
    """The progress that produced the rows of the windows a watermark closed (the emitted mark
    that covers them once recorded)."""
    return f"w:{watermark_ms}"


def _past_the_marks(
    partition_key: str, continuous: Mapping[str, str], emitted_ms: int
) -> str | None:
    """The row key of an output record written past the recorded marks (its position is
    beyond them: a replay produces it again), None for one they cover. A key without a position
    (written by a release before stop 26) counts as past them, as those releases did."""
    row_key, _, position = partition_key.partition(":")
    kind, _, where = position.partition(":")
    if len(row_key) != ROW_KEY_CHARACTERS:
        return None  # another producer's record
    if not position:
        return row_key
    shard_id, _, sequence_number = where.partition(":")
    mark = continuous.get(shard_id)
    with contextlib.suppress(ValueError):
        if kind == "w":
            return row_key if int(where) > emitted_ms else None
        if kind == "c":
            return row_key if mark is None or int(sequence_number) > int(mark) else None
    return None


ROW_KEY_CHARACTERS = 32  # an MD5 digest in hex


def _row_key(output: str, row: records.Row, data: bytes) -> str:
    """A row's identity in an output stream: its output, ROWTIME and record, hashed, so the
    same row replayed after a takeover has the same key (and rows spread over shards). Its
    partition key is this key, ':', and the position that produced it (`_*_position`)."""
    rowtime_ms = records.from_timestamp(row[0]) if row[0] is not None else 0
    digest = hashlib.md5(f"{output}|{rowtime_ms}|".encode(), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


async def _partition_keys_since(calls: _LocalCalls, stream: str, since_ms: int) -> list[str]:
    """The partition keys of `stream`'s records that arrived from `since_ms` on, every shard
    read to its end (a stream that is gone has none)."""
    keys: list[str] = []
    try:
        shards = (await calls.call("ListShards", {"StreamName": stream}))["Shards"]
    except ShoalError as error:
        if error.code is ErrorCode.RESOURCE_NOT_FOUND:
            return keys
        raise
    timestamp = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
    for shard in shards:
        iterator = (
            await calls.call(
                "GetShardIterator",
                {
                    "StreamName": stream,
                    "ShardId": shard["ShardId"],
                    "ShardIteratorType": "AT_TIMESTAMP",
                    "Timestamp": timestamp,
                },
            )
        )["ShardIterator"]
        while iterator:
            answer = await calls.call("GetRecords", {"ShardIterator": iterator, "Limit": 10_000})
            keys.extend(str(record["PartitionKey"]) for record in answer["Records"])
            if not answer["Records"] or answer.get("MillisBehindLatest", 0) == 0:
                break
            iterator = answer.get("NextShardIterator")
    return keys


async def _deliver_to_lambda(
    invoker: LambdaInvoker, function: str, application_arn: str, batch: list[bytes]
) -> None:
    pending = {f"{index:08d}": data for index, data in enumerate(batch)}
    retry_hint = 0
    delay_s = 0.05
    while pending:
        event = {
            "invocationId": str(uuid.uuid4()),
            "applicationArn": application_arn,
            "records": [
                {
                    "recordId": record_id,
                    "lambdaDeliveryRecordMetadata": {"retryHint": retry_hint},
                    "data": base64.b64encode(data).decode("ascii"),
                }
                for record_id, data in pending.items()
            ],
        }
        try:
            body = await asyncio.to_thread(invoker.invoke, function, orjson.dumps(event))
            answered = orjson.loads(body).get("records", [])
            delivered = {str(item["recordId"]) for item in answered if item.get("result") == "Ok"}
        except (LambdaError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
            log.warning("analytics_lambda_output_failed", extra={"error": str(error)})
            delivered = set()
        pending = {key: data for key, data in pending.items() if key not in delivered}
        if pending:
            retry_hint += 1
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


async def _put_batch(
    service: DeliveryStreams, caller: Caller, delivery_stream: str, batch: list[bytes]
) -> None:
    pending = batch
    delay_s = 0.05
    while pending:
        answer = await service.call(
            "PutRecordBatch",
            {"DeliveryStreamName": delivery_stream, "Records": [{"Data": d} for d in pending]},
            caller,
        )
        if not answer.get("FailedPutCount"):
            return
        pending = [
            data
            for data, result in zip(pending, answer["RequestResponses"], strict=True)
            if "ErrorCode" in result
        ]
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 1.0)


async def _put_all(calls: _LocalCalls, stream: str, entries: list[dict[str, Any]]) -> None:
    """PutRecords until every entry is in (failed entries, e.g. throttled, are retried)."""
    pending = entries
    delay_s = 0.05
    while pending:
        answer = await calls.call("PutRecords", {"StreamName": stream, "Records": pending})
        if not answer.get("FailedRecordCount"):
            return
        pending = [
            entry
            for entry, result in zip(pending, answer["Records"], strict=True)
            if "ErrorCode" in result
        ]
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 1.0)


# KDA's error_stream: an output of this name receives the records that failed, with these
# columns (ROWTIME first, as for every in-application stream's rows).
ERROR_STREAM = "error_stream"
ERROR_COLUMNS = (
    "ERROR_TIME",
    "ERROR_LEVEL",
    "ERROR_NAME",
    "MESSAGE",
    "DATA_ROWTIME",
    "DATA_ROW",
    "PUMP_NAME",
)


def _error_row(rowtime: Any, data: bytes, message: str) -> records.Row:
    return (
        rowtime,
        rowtime,
        "Error",
        "Error parsing input record",
        message,
        rowtime,
        data.decode("utf-8", errors="replace"),
        "",
    )


def _stream_index(shard_id: str, count: int) -> int:
    """InputParallelism: each shard feeds one of the source streams, always the same one."""
    if count == 1:
        return 0
    digest = hashlib.md5(shard_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % count


class _Processor:
    """The worker's record processor for one shard of the running application."""

    def __init__(self, app: _RunningApp) -> None:
        self._app = app
        self._shard_id = ""

    async def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id
        self._app.shard_started(self._shard_id)

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        await self._app.process(self._shard_id, process_records_input)

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self._app.shard_stopped(self._shard_id)

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self._app.shard_stopped(self._shard_id)
        await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        # No checkpoint beyond what the ticks recorded: the records of open windows are read
        # again by the next reader (LAST_STOPPED_POINT, or a node taking over after a move).
        self._app.shard_stopped(self._shard_id)
