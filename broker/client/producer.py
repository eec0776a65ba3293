"""KinesisProducer: a KPL-style asyncio producer over the native gRPC client.

    async with KinesisProducer(client, stream_name="orders") as producer:
        future = await producer.put("order-1", b"{...}")   # waits only when buffers are full
        result = await future                               # PutResult(shard_id, ...)

Lifecycle of a user record:

1. `put` waits while `buffered_records_max` records or `buffered_bytes_max` bytes are
   outstanding (backpressure), hashes the key and predicts its shard from the shard map (open
   shards' hash ranges from ListShards, refreshed every `shard_map_refresh_ms` and whenever a
   record lands in a shard other than the predicted one).
2. The record waits in its shard's buffer until the oldest record there has waited
   `record_max_buffered_time_ms`, the buffer holds a full PutRecords request, or `flush` asks.
3. The flusher packs each ready buffer into Kinesis records: KPL aggregates (`kpl.py`) when
   aggregation is on, a lone record sent plain as the KPL does; an optional token bucket per
   shard holds back what the shard would refuse anyway. The records go out in PutRecords
   requests of at most `put_records_count_max` records and `put_records_bytes_max` bytes,
   at most `requests_in_flight_max` at a time.
4. Per Kinesis record: success resolves each user record's future with (shard id, sequence
   number, sub-sequence number). ProvisionedThroughputExceeded, InternalFailure and the other
   retryable errors put its user records back after an exponential backoff, up to
   `attempts_max` attempts; other errors fail them with `ProducerError`. An aggregate stored in
   a shard other than the predicted one is accepted if every user record in it hashes into that
   shard (after refreshing the shard map); otherwise its user records are sent again, and the
   copy is the one the KCL discards (it drops aggregates holding out-of-range records).

One task owns the producer (asyncio, not thread-safe); its tasks live in a TaskGroup entered by
`async with`. Time comes from an injected `Clock`, so tests can share a node's manual clock.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import random
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from broker import error_messages, limits
from broker.client.grpc_client import AsyncShoalClient
from broker.client.kpl import AggregateBuilder, UserRecord, validate_user_record
from broker.clock import Clock, SystemClock
from broker.errors import ErrorCode, ShoalError, error_code_by_name
from broker.streams.throttling import TokenBucket

log = logging.getLogger(__name__)

# The flusher sleeps at most this long while anything is buffered, so time that moves in jumps
# (a shared manual clock) or a refilling rate limiter is noticed promptly.
_FLUSHER_WAIT_MS_MAX = 20
_SHARD_LIST_PAGES_MAX = limits.shard_count_per_stream_max // 100 + 1  # 100: smallest page we ask
_WRONG_SHARD = "WrongShard"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerConfig:
    """Producer knobs; the defaults are the KPL's where it has one."""

    aggregation_enabled: bool = True
    # The KPL's AggregationMaxSize (50 KiB); at most a Kinesis record (data + partition key).
    aggregation_bytes_max: int = 51_200
    aggregation_records_max: int = 4_294_967_295  # the KPL's; the byte bound binds first
    record_max_buffered_time_ms: int = 100
    put_records_count_max: int = limits.put_records_count_max
    put_records_bytes_max: int = 5 * limits.MiB  # the KPL's CollectionMaxSize
    requests_in_flight_max: int = 24  # the KPL's MaxConnections
    # Backpressure: `put` waits while this much is buffered or in flight.
    buffered_records_max: int = 100_000
    buffered_bytes_max: int = 64 * limits.MiB
    attempts_max: int = 10
    retry_backoff_ms_min: int = 100
    retry_backoff_ms_max: int = 5_000
    # Per-shard rate limiting, as a percentage of the shard's limits (the KPL's RateLimit: 150%
    # lets one producer saturate a shard). Off: send and let the broker throttle.
    rate_limit_enabled: bool = True
    rate_limit_percent: int = 150
    shard_records_per_second: int = limits.shard_write_records_per_second_default
    shard_bytes_per_second: int = limits.shard_write_bytes_per_second_default
    shard_map_refresh_ms: int = 60_000
    flush_timeout_ms: int = 120_000  # `close` waits this long for outstanding records

    def __post_init__(self) -> None:
        assert 0 < self.aggregation_bytes_max <= limits.record_bytes_max_default
        assert self.aggregation_records_max >= 1
        assert self.record_max_buffered_time_ms >= 0
        assert 1 <= self.put_records_count_max <= limits.put_records_count_max
        assert 0 < self.put_records_bytes_max <= limits.put_records_bytes_max
        assert self.requests_in_flight_max >= 1
        assert self.buffered_records_max >= 1
        assert self.buffered_bytes_max >= 1
        assert self.attempts_max >= 1
        assert 0 < self.retry_backoff_ms_min <= self.retry_backoff_ms_max
        assert self.rate_limit_percent > 0
        assert self.shard_records_per_second > 0
        assert self.shard_bytes_per_second > 0
        assert self.shard_map_refresh_ms > 0
        assert self.flush_timeout_ms > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PutResult:
    """Where one user record was stored."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    attempts: int


class ProducerError(Exception):
    """A user record that could not be put: the last Kinesis error, after `attempts`."""

    def __init__(self, *, error_code: str, message: str, attempts: int) -> None:
        self.error_code = error_code
        self.message = message
        self.attempts = attempts
        super().__init__(f"{error_code} after {attempts} attempt(s): {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerStatistics:
    outstanding_records: int
    buffered_records: int
    kinesis_records_sent: int
    retries: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardRange:
    shard_id: str
    starting_hash_key: int
    ending_hash_key: int

    def contains(self, hash_key: int) -> bool:
        return self.starting_hash_key <= hash_key <= self.ending_hash_key


class ShardMap:
    """The open shards of a stream by hash range, for predicting where a record goes."""

    def __init__(self, shards: Sequence[ShardRange], *, fetched_ms: int) -> None:
        ordered = sorted(shards, key=lambda shard: shard.starting_hash_key)
        assert ordered, "a stream has at least one open shard"
        assert ordered[0].starting_hash_key == 0
        assert ordered[-1].ending_hash_key == limits.hash_key_max
        for low, high in itertools.pairwise(ordered):
            assert low.ending_hash_key + 1 == high.starting_hash_key, "open shards tile the space"
        self.shards = tuple(ordered)
        self.fetched_ms = fetched_ms
        self._starts = [shard.starting_hash_key for shard in ordered]
        self._by_id = {shard.shard_id: shard for shard in ordered}

    def shard_for(self, hash_key: int) -> ShardRange:
        assert 0 <= hash_key <= limits.hash_key_max
        shard = self.shards[bisect.bisect_right(self._starts, hash_key) - 1]
        assert shard.contains(hash_key)
        return shard

    def get(self, shard_id: str) -> ShardRange | None:
        return self._by_id.get(shard_id)


@dataclass(slots=True, kw_only=True, eq=False)
class _Pending:
    """One user record from `put` until its future resolves (mutable; hashed by identity)."""

    record: UserRecord
    hash_key: int
    size_bytes: int  # data + partition key
    future: asyncio.Future[PutResult]
    due_ms: int  # sent by then at the latest (linger), or not before then (retry backoff)
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outgoing:
    """One Kinesis record in a PutRecords request, and the user records it carries."""

    predicted_shard_id: str
    entry: dict[str, Any]
    size_bytes: int
    members: tuple[_Pending, ...]
    aggregated: bool


@dataclass(slots=True)
class _ShardBuffer:
    pending: deque[_Pending] = field(default_factory=deque)
    size_bytes: int = 0
    records_limiter: TokenBucket | None = None
    bytes_limiter: TokenBucket | None = None


class KinesisProducer:
    """Buffers, aggregates and sends user records to one stream; see the module docstring."""

    def __init__(
        self,
        client: AsyncShoalClient,
        *,
        stream_name: str,
        config: ProducerConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._stream_name = stream_name
        self._config = config or ProducerConfig()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._shard_map: ShardMap | None = None
        self._shard_map_lock = asyncio.Lock()
        self._buffers: dict[str, _ShardBuffer] = {}
        self._retries: list[_Pending] = []
        self._outstanding: set[_Pending] = set()  # from `put` until resolved, wherever it is
        self._outstanding_bytes = 0
        self._kinesis_records_sent = 0
        self._retry_count = 0
        self._flushes_waiting = 0
        self._puts_waiting = 0
        self._closing = False
        self._released = asyncio.Event()  # set whenever an outstanding record resolves
        self._wakeup = asyncio.Event()  # set when the flusher has something new to look at
        self._request_slots = asyncio.Semaphore(self._config.requests_in_flight_max)
        self._task_group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> KinesisProducer:
        assert self._task_group is None, "a producer runs once"
        await self._refresh_shard_map()
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        self._spawn(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        try:
            if exc_type is None:
                await self.flush(timeout_ms=self._config.flush_timeout_ms)
        finally:
            # Whatever is still running (nothing, after a flush) is cancelled; the body's own
            # exception, if any, propagates unchanged.
            self._closing = True
            for task in list(self._tasks):
                task.cancel()
            await self._task_group.__aexit__(None, None, None)
            self._cancel_outstanding()

    async def flush(self, *, timeout_ms: int | None = None) -> None:
        """Send everything buffered now, and wait until every outstanding record resolved."""
        timeout_ms = timeout_ms if timeout_ms is not None else self._config.flush_timeout_ms
        self._flushes_waiting += 1
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                while self._outstanding:
                    self._released.clear()
                    await self._released.wait()
        finally:
            self._flushes_waiting -= 1

    def statistics(self) -> ProducerStatistics:
        return ProducerStatistics(
            outstanding_records=len(self._outstanding),
            buffered_records=sum(len(b.pending) for b in self._buffers.values())
            + len(self._retries),
            kinesis_records_sent=self._kinesis_records_sent,
            retries=self._retry_count,
        )

    # --- put --------------------------------------------------------------------------------

    async def put(
        self, partition_key: str, data: bytes, *, explicit_hash_key: str | None = None
    ) -> asyncio.Future[PutResult]:
        """Buffer one user record; waits while the producer is full. The returned future
        resolves to a PutResult or fails with ProducerError."""
        assert self._task_group is not None, "use `async with KinesisProducer(...)`"
        assert not self._closing
        record = UserRecord(
            partition_key=partition_key, data=data, explicit_hash_key=explicit_hash_key
        )
        validate_user_record(record)
        size_bytes = len(data) + len(partition_key.encode("utf-8"))
        if not self._has_room(size_bytes):
            # Backpressure: send what is buffered now, and wait for records to resolve.
            self._puts_waiting += 1
            self._wakeup.set()
            try:
                while not self._has_room(size_bytes):
                    self._released.clear()
                    await self._released.wait()
            finally:
                self._puts_waiting -= 1
        now_ms = self._clock.monotonic_ms()
        pending = _Pending(
            record=record,
            hash_key=record.hash_key,
            size_bytes=size_bytes,
            future=asyncio.get_running_loop().create_future(),
            due_ms=now_ms + self._config.record_max_buffered_time_ms,
        )
        self._outstanding.add(pending)
        self._outstanding_bytes += size_bytes
        self._buffer(pending)
        return pending.future

    def _has_room(self, size_bytes: int) -> bool:
        if not self._outstanding:
            return True  # one record always fits, however large
        return (
            len(self._outstanding) < self._config.buffered_records_max
            and self._outstanding_bytes + size_bytes <= self._config.buffered_bytes_max
        )

    def _buffer(self, pending: _Pending, *, front: bool = False) -> None:
        assert self._shard_map is not None
        shard_id = self._shard_map.shard_for(pending.hash_key).shard_id
        buffer = self._buffers.get(shard_id)
        if buffer is None:
            buffer = self._buffers[shard_id] = self._new_buffer()
        if front:
            buffer.pending.appendleft(pending)
        else:
            buffer.pending.append(pending)
        buffer.size_bytes += pending.size_bytes
        if self._buffer_full(buffer):
            self._wakeup.set()

    def _new_buffer(self) -> _ShardBuffer:
        config = self._config
        if not config.rate_limit_enabled:
            return _ShardBuffer()
        now_ms = self._clock.monotonic_ms()
        percent = config.rate_limit_percent
        return _ShardBuffer(
            records_limiter=TokenBucket(
                rate_per_second=max(1, config.shard_records_per_second * percent // 100),
                now_ms=now_ms,
            ),
            bytes_limiter=TokenBucket(
                rate_per_second=max(1, config.shard_bytes_per_second * percent // 100),
                now_ms=now_ms,
            ),
        )

    def _buffer_full(self, buffer: _ShardBuffer) -> bool:
        """A buffer holding a full request's worth goes out before its linger time."""
        if buffer.size_bytes >= self._config.put_records_bytes_max:
            return True
        return (
            not self._config.aggregation_enabled
            and len(buffer.pending) >= self._config.put_records_count_max
        )

    # --- the flusher ------------------------------------------------------------------------

    async def _run(self) -> None:
        # Infinite on purpose: it ends when the producer closes with nothing outstanding (or is
        # cancelled by `__aexit__`).
        while not (self._closing and not self._outstanding):
            self._wakeup.clear()
            now_ms = self._clock.monotonic_ms()
            if self._shard_map_stale(now_ms):
                await self._refresh_shard_map()
            self._requeue_retries(now_ms)
            outgoing, held_back = self._drain(now_ms)
            for request in self._requests(outgoing):
                await self._request_slots.acquire()
                self._spawn(self._send(request))
            await self._wait_for_work(now_ms, held_back=held_back)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._task_group is not None
        task = self._task_group.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_for_work(self, now_ms: int, *, held_back: bool) -> None:
        dues = [p.due_ms for p in self._retries]
        dues += [b.pending[0].due_ms for b in self._buffers.values() if b.pending]
        if not dues:
            await self._wakeup.wait()  # idle until a put, a flush or a finished request
            return
        # Anything due now was held back by a rate limiter: give its bucket time to refill.
        wait_ms = max(min(dues) - now_ms, _FLUSHER_WAIT_MS_MAX if held_back else 1)
        try:
            async with asyncio.timeout(min(wait_ms, _FLUSHER_WAIT_MS_MAX) / 1000):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    def _requeue_retries(self, now_ms: int) -> None:
        """Retries whose backoff passed go back to the front of their (re-predicted) shard's
        buffer, in their original order, and are due at once."""
        ready = [p for p in self._retries if p.due_ms <= now_ms]
        self._retries = [p for p in self._retries if p.due_ms > now_ms]
        for pending in reversed(ready):
            self._buffer(pending, front=True)

    def _drain(self, now_ms: int) -> tuple[list[_Outgoing], bool]:
        """The Kinesis records to send now, and whether a rate limiter held any back."""
        force = self._flushes_waiting > 0 or self._puts_waiting > 0 or self._closing
        outgoing: list[_Outgoing] = []
        held_back = False
        for shard_id, buffer in self._buffers.items():
            if not buffer.pending:
                continue
            if not (force or buffer.pending[0].due_ms <= now_ms or self._buffer_full(buffer)):
                continue
            sent, held = self._pack(shard_id, buffer, now_ms)
            outgoing += sent
            held_back = held_back or held
        return outgoing, held_back

    def _pack(
        self, shard_id: str, buffer: _ShardBuffer, now_ms: int
    ) -> tuple[list[_Outgoing], bool]:
        """Pack a shard's buffer into Kinesis records, in order, while its limiter admits."""
        groups = self._group(list(buffer.pending))
        sent: list[_Outgoing] = []
        for index, (group, builder) in enumerate(groups):
            record = self._kinesis_record(shard_id, group, builder)
            if not self._admit(buffer, record.size_bytes, now_ms):
                kept = [p for g, _ in groups[index:] for p in g]
                buffer.pending = deque(kept)
                buffer.size_bytes = sum(p.size_bytes for p in kept)
                return sent, True
            sent.append(record)
        buffer.pending.clear()
        buffer.size_bytes = 0
        return sent, False

    def _group(
        self, pendings: list[_Pending]
    ) -> list[tuple[list[_Pending], AggregateBuilder | None]]:
        """User records per Kinesis record, in order: filled aggregates (with their builder),
        or one record each when aggregation is off or a record is too large to aggregate."""
        config = self._config
        if not config.aggregation_enabled:
            return [([p], None) for p in pendings]
        groups: list[tuple[list[_Pending], AggregateBuilder | None]] = []
        builder: AggregateBuilder | None = None
        for pending in pendings:
            if builder is None or not builder.fits(pending.record):
                builder = AggregateBuilder(
                    aggregation_bytes_max=config.aggregation_bytes_max,
                    aggregation_records_max=config.aggregation_records_max,
                )
                if not builder.fits(pending.record):
                    groups.append(([pending], None))
                    builder = None
                    continue
                groups.append(([], builder))
            builder.add(pending.record)
            groups[-1][0].append(pending)
        return groups

    @staticmethod
    def _kinesis_record(
        shard_id: str, group: list[_Pending], builder: AggregateBuilder | None
    ) -> _Outgoing:
        if len(group) == 1:  # the KPL sends a lone record as itself, not as an aggregate
            record = group[0].record
            entry: dict[str, Any] = {"PartitionKey": record.partition_key, "Data": record.data}
            if record.explicit_hash_key is not None:
                entry["ExplicitHashKey"] = record.explicit_hash_key
            return _Outgoing(
                predicted_shard_id=shard_id,
                entry=entry,
                size_bytes=group[0].size_bytes,
                members=tuple(group),
                aggregated=False,
            )
        assert builder is not None
        assert builder.record_count == len(group)
        blob = builder.build()
        return _Outgoing(
            predicted_shard_id=shard_id,
            entry={
                "PartitionKey": blob.partition_key,
                "ExplicitHashKey": blob.explicit_hash_key,
                "Data": blob.data,
            },
            size_bytes=blob.size_bytes,
            members=tuple(group),
            aggregated=True,
        )

    @staticmethod
    def _admit(buffer: _ShardBuffer, size_bytes: int, now_ms: int) -> bool:
        """Take one record and its bytes from the shard's limiter, or nothing. A record larger
        than the byte bucket goes once the bucket is full, and leaves it in debt."""
        records, byte_bucket = buffer.records_limiter, buffer.bytes_limiter
        if records is None or byte_bucket is None:
            return True
        needed = min(size_bytes, byte_bucket.rate_per_second)
        if byte_bucket.available(now_ms=now_ms) < needed:
            return False
        if not records.take(1, now_ms=now_ms):
            return False
        byte_bucket.overdraw(size_bytes, now_ms=now_ms)
        return True

    def _requests(self, outgoing: list[_Outgoing]) -> list[list[_Outgoing]]:
        """PutRecords requests within the count and byte bounds (an oversized record alone)."""
        requests: list[list[_Outgoing]] = []
        request_bytes = 0
        for record in outgoing:
            if (
                not requests
                or len(requests[-1]) >= self._config.put_records_count_max
                or request_bytes + record.size_bytes > self._config.put_records_bytes_max
            ):
                requests.append([])
                request_bytes = 0
            requests[-1].append(record)
            request_bytes += record.size_bytes
        return requests

    # --- sending and results ----------------------------------------------------------------

    async def _send(self, request: list[_Outgoing]) -> None:
        try:
            started_ms = self._clock.monotonic_ms()
            self._kinesis_records_sent += len(request)
            try:
                response = await self._client.call(
                    "PutRecords",
                    {"StreamName": self._stream_name, "Records": [r.entry for r in request]},
                )
            except ShoalError as exc:
                for record in request:
                    self._retry_or_fail(record.members, exc.code.kinesis_name, exc.message)
                return
            results: list[dict[str, Any]] = response["Records"]
            assert len(results) == len(request)
            misplaced: list[tuple[_Outgoing, dict[str, Any]]] = []
            for record, result in zip(request, results, strict=True):
                if "ErrorCode" in result:
                    self._retry_or_fail(
                        record.members, result["ErrorCode"], result.get("ErrorMessage", "")
                    )
                elif record.aggregated and result["ShardId"] != record.predicted_shard_id:
                    misplaced.append((record, result))
                else:
                    self._succeed(record, result)
            if misplaced:
                await self._settle_misplaced(misplaced, started_ms=started_ms)
        finally:
            self._request_slots.release()
            self._wakeup.set()

    async def _settle_misplaced(
        self, misplaced: list[tuple[_Outgoing, dict[str, Any]]], *, started_ms: int
    ) -> None:
        """Aggregates stored in an unpredicted shard: the shard map was stale (a reshard)."""
        await self._refresh_shard_map(unless_fetched_since_ms=started_ms)
        await self._await_listed({result["ShardId"] for _, result in misplaced})
        assert self._shard_map is not None
        for record, result in misplaced:
            shard = self._shard_map.get(result["ShardId"])
            if shard is not None and all(shard.contains(p.hash_key) for p in record.members):
                self._succeed(record, result)
            else:
                self._retry_or_fail(record.members, _WRONG_SHARD, "stored in an unpredicted shard")

    async def _await_listed(self, shard_ids: set[str]) -> None:
        """Waits (bounded by the longest retry backoff) until the shard map lists `shard_ids`.

        The stream stored records in shards its listing does not show yet: a reshard it still
        shows UPDATING for keeps the old shards listed until ACTIVE, as AWS's does. Judging
        those aggregates only once their shard is listed keeps one already stored in range from
        being written twice."""
        assert self._shard_map is not None
        delay_ms = self._config.retry_backoff_ms_min
        waited_ms = 0
        while any(self._shard_map.get(shard_id) is None for shard_id in shard_ids):
            if waited_ms >= self._config.retry_backoff_ms_max:
                return  # the retry path decides, as for any record of an unknown shard
            await self._clock.sleep(delay_ms)
            waited_ms += delay_ms
            delay_ms = min(delay_ms * 2, self._config.retry_backoff_ms_max)
            await self._refresh_shard_map()
            assert self._shard_map is not None

    def _succeed(self, record: _Outgoing, result: dict[str, Any]) -> None:
        for index, pending in enumerate(record.members):
            put_result = PutResult(
                shard_id=result["ShardId"],
                sequence_number=result["SequenceNumber"],
                sub_sequence_number=index if record.aggregated else 0,
                attempts=pending.attempts + 1,
            )
            if not pending.future.done():
                pending.future.set_result(put_result)
            self._release(pending)

    def _retry_or_fail(self, members: Sequence[_Pending], error_code: str, message: str) -> None:
        code = error_code_by_name(error_code)
        retryable = error_code == _WRONG_SHARD or (code is not None and code.spec.retryable)
        now_ms = self._clock.monotonic_ms()
        for pending in members:
            pending.attempts += 1
            if retryable and pending.attempts < self._config.attempts_max:
                pending.due_ms = now_ms + self._backoff_ms(pending.attempts)
                self._retries.append(pending)
                self._retry_count += 1
                continue
            error = ProducerError(error_code=error_code, message=message, attempts=pending.attempts)
            if not pending.future.done():
                pending.future.set_exception(error)
            self._release(pending)

    def _backoff_ms(self, attempts: int) -> int:
        """Exponential backoff with full jitter above half of it."""
        config = self._config
        ceiling = min(config.retry_backoff_ms_max, config.retry_backoff_ms_min << (attempts - 1))
        return self._rng.randint(ceiling // 2, ceiling)

    def _release(self, pending: _Pending) -> None:
        assert pending.future.done()
        self._outstanding.remove(pending)
        self._outstanding_bytes -= pending.size_bytes
        assert self._outstanding_bytes >= 0
        self._released.set()

    def _cancel_outstanding(self) -> None:
        """After the tasks stopped: fail nothing silently, cancel what never resolved."""
        for pending in self._outstanding:
            pending.future.cancel()
        self._outstanding.clear()
        self._outstanding_bytes = 0
        self._buffers.clear()
        self._retries.clear()

    # --- the shard map ----------------------------------------------------------------------

    def _shard_map_stale(self, now_ms: int) -> bool:
        assert self._shard_map is not None
        return now_ms - self._shard_map.fetched_ms >= self._config.shard_map_refresh_ms

    async def _refresh_shard_map(self, *, unless_fetched_since_ms: int | None = None) -> None:
        async with self._shard_map_lock:
            current = self._shard_map
            if (
                current is not None
                and unless_fetched_since_ms is not None
                and current.fetched_ms > unless_fetched_since_ms
            ):
                return  # another task refreshed it meanwhile
            fetched_ms = self._clock.monotonic_ms()
            try:
                shards = await self._list_open_shards()
            except ShoalError as exc:
                if current is None:
                    raise
                log.warning(
                    "producer_shard_map_refresh_failed",
                    extra={"stream_name": self._stream_name, "error": exc.code.kinesis_name},
                )
                # Keep the old map and try again after the longest retry backoff.
                refresh_ms = self._config.shard_map_refresh_ms
                fetched_ms -= refresh_ms - min(refresh_ms, self._config.retry_backoff_ms_max)
                shards = list(current.shards)
            self._shard_map = ShardMap(shards, fetched_ms=fetched_ms)
        self._rebuffer()

    def _rebuffer(self) -> None:
        """Move buffered records whose predicted shard changed with the new map."""
        assert self._shard_map is not None
        moved: list[_Pending] = []
        for shard_id, buffer in list(self._buffers.items()):
            if self._shard_map.get(shard_id) is not None:
                continue
            moved += buffer.pending
            del self._buffers[shard_id]
        for pending in moved:
            self._buffer(pending)

    async def _list_open_shards(self) -> list[ShardRange]:
        shards: list[ShardRange] = []
        request: dict[str, Any] = {
            "StreamName": self._stream_name,
            "ShardFilter": {"Type": "AT_LATEST"},
        }
        for _ in range(_SHARD_LIST_PAGES_MAX):
            response = await self._client.call("ListShards", request)
            for shard in response["Shards"]:
                hash_range = shard["HashKeyRange"]
                shards.append(
                    ShardRange(
                        shard_id=shard["ShardId"],
                        starting_hash_key=int(hash_range["StartingHashKey"]),
                        ending_hash_key=int(hash_range["EndingHashKey"]),
                    )
                )
            token = response.get("NextToken")
            if not token:
                return shards
            request = {"NextToken": token}
        raise ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.LIST_SHARDS_DID_NOT_END)
