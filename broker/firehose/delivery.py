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
import logging
import random
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from broker.firehose import buffering, compression, destinations, object_keys
from broker.firehose.retry import RetrySchedule
from broker.firehose.s3_store import S3Store, StoreError
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus

log = logging.getLogger(__name__)

_TIMER_WAIT_MS_MAX = 200  # the timer looks again at least this often (a manual clock moves)


@dataclass(slots=True)
class DeliveryStatistics:
    """Counters of one node's deliveries (read by metrics and tests)."""

    objects: int = 0
    records: int = 0
    bytes: int = 0
    failed_attempts: int = 0
    abandoned_records: int = 0
    freshness_ms: list[int] = field(default_factory=list)  # the last deliveries' data age


class DeliveryProcessor:
    def __init__(
        self,
        *,
        target: Callable[[], DeliveryStreamMeta | None],
        store: S3Store,
        clock: Clock,
        statistics: DeliveryStatistics,
        rng: random.Random,
        retry: RetrySchedule | None = None,
    ) -> None:
        self._target = target
        self._store = store
        self._clock = clock
        self._statistics = statistics
        self._rng = rng
        self._retry = retry or RetrySchedule()
        self._lock = asyncio.Lock()
        self._records: list[bytes] = []
        self._state = buffering.EMPTY
        self._first_arrival: datetime | None = None
        self._last: tuple[str, int] | None = None  # (sequence number, sub-sequence number)
        self._checkpointer: Checkpointer | None = None
        self._timer: asyncio.Task[None] | None = None
        self._shard_id = ""

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
            wait_ms = _TIMER_WAIT_MS_MAX if due is None else min(_TIMER_WAIT_MS_MAX, due - now_ms)
            await asyncio.sleep(max(wait_ms, 0) / 1000)
            if hints is None:
                continue
            async with self._lock:
                reason = buffering.flush_reason(
                    self._state, hints, now_ms=self._clock.monotonic_ms()
                )
                if reason is None:
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
        self._state = buffering.EMPTY
        self._first_arrival = None

    # --- Delivery -------------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Writes the buffer as one object, then checkpoints its last record. Lock held."""
        if not self._records:
            return
        meta = self._target()
        if meta is None or meta.status is not DeliveryStreamStatus.ACTIVE:
            self._reset()  # deleted: its data goes with it
            return
        assert self._first_arrival is not None
        assert self._last is not None
        kind, configuration = meta.destination()
        assert kind == "ExtendedS3", kind
        records, first_arrival, last = self._records, self._first_arrival, self._last
        body = b"".join(records)
        compression_format = str(configuration.get("CompressionFormat") or "UNCOMPRESSED")
        payload = await asyncio.to_thread(compression.compress, body, compression_format)
        zone = object_keys.zone_of(configuration.get("CustomTimeZone"), zoneinfo.ZoneInfo)
        random_part = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        extension = configuration.get("FileExtension") or object_keys.EXTENSIONS[compression_format]
        key = object_keys.object_key(
            prefix=str(configuration.get("Prefix") or ""),
            delivery_stream_name=meta.name,
            version_id=meta.version_id,
            moment=zone(first_arrival.astimezone(UTC)),
            random_part=random_part,
            extension=str(extension),
        )
        delivered = await self._write(destinations.bucket_name(configuration), key, payload)
        if delivered:
            self._statistics.objects += 1
            self._statistics.records += len(records)
            self._statistics.bytes += len(body)
            age_ms = int((datetime.now(UTC) - first_arrival).total_seconds() * 1000)
            self._statistics.freshness_ms = [*self._statistics.freshness_ms[-999:], age_ms]
        else:
            self._statistics.abandoned_records += len(records)
        self._reset()
        if self._checkpointer is not None:
            await self._checkpointer.checkpoint(last[0], last[1])

    async def _write(self, bucket: str, key: str, payload: bytes) -> bool:
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
