"""Data-plane operations: PutRecord, PutRecords, GetShardIterator, GetRecords.

Writes are routed by hash key to the open shard that owns it and appended through the shard
writers (group commit; answered only once durable). A shard that is being sealed by a reshard
refuses appends; those records are routed again once the metadata shows the children, so a write
in flight during a split or merge lands on one side or the other, never on both, never lost.
Reads see only committed records, and never records past the stream's retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.log.records import NewRecord, StoredRecord, new_record
from broker.log.shard_writer import ShardSealedError
from broker.meta.image import HOUR_MS, MetadataImage, ShardMeta, ShardState, StreamMeta
from broker.service import describe
from broker.service.context import ServiceContext
from broker.service.throughput import rate_exceeded
from broker.streams.hash_keys import ShardRouter, parse_hash_key, partition_key_bytes_hash
from broker.streams.iterators import IteratorPosition, decode_iterator, encode_iterator
from broker.streams.sequence_numbers import (
    decode_sequence_number,
    offset_for_sequence_number,
    sequence_numbers_for,
)
from broker.timestamps import datetime_from_ms, ms_from_datetime
from broker.types import Offset, ShardUid, StreamUid

Request = Mapping[str, Any]
Response = dict[str, Any]

log = logging.getLogger(__name__)


class _Entry(NamedTuple):
    """One record of a put on its way to a shard (a tuple: PutRecords makes 500 per call)."""

    position: int  # index in the request
    hash_key: int
    record: NewRecord
    size_bytes: int  # partition key (UTF-8) + data, what limits and throttles count


_new_tuple = tuple.__new__  # NamedTuple construction without its generated Python __new__


class _Written(NamedTuple):
    shard_id: str
    sequence_number: str


def _record_bytes(partition_key: str, data: bytes) -> int:
    return len(partition_key.encode()) + len(data)


def _entry(stream: StreamMeta, position: int, raw: Mapping[str, Any], path: str) -> _Entry:
    partition_key: str = raw["PartitionKey"]
    data: bytes = raw["Data"]
    partition_key_utf8 = partition_key.encode()
    size = len(partition_key_utf8) + len(data)
    size_max = stream.max_record_size_kib * limits.KiB
    if size > size_max:
        raise ShoalError(
            ErrorCode.VALIDATION,
            f"1 validation error detected: Value at '{path}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {size_max} "
            "(partition key and data together)",
        )
    explicit = raw.get("ExplicitHashKey")
    hash_key = (
        parse_hash_key(explicit, field="ExplicitHashKey")
        if explicit is not None
        else partition_key_bytes_hash(partition_key_utf8)
    )
    entry: _Entry = _new_tuple(_Entry, (position, hash_key, new_record(partition_key, data), size))
    return entry


class Router:
    """Caches one ShardRouter per stream incarnation and shard layout. Node view; loop only."""

    def __init__(self) -> None:
        self._routers: dict[StreamUid, tuple[tuple[ShardMeta, ...], ShardRouter]] = {}

    def for_stream(self, stream: StreamMeta) -> ShardRouter:
        cached = self._routers.get(stream.uid)
        if cached is not None and cached[0] is stream.shards:
            return cached[1]
        router = ShardRouter.for_stream(stream)
        self._routers[stream.uid] = (stream.shards, router)
        return router


async def _write(
    ctx: ServiceContext, router: Router, stream: StreamMeta, entries: Sequence[_Entry]
) -> dict[int, _Written | ShoalError]:
    """Append entries, re-routing those refused by sealing shards; results by position."""
    results: dict[int, _Written | ShoalError] = {}
    pending = list(entries)
    for _attempt in range(limits.route_retry_attempts_max):
        current = ctx.image().stream_by_uid(stream.uid)
        if current is None or current.is_gone(now_ms=ctx.now_ms()):
            raise ctx.stream_not_found(stream.name)
        shard_router = router.for_stream(current)
        groups: dict[ShardUid, tuple[ShardMeta, list[_Entry]]] = {}
        for entry in pending:
            shard = shard_router.find(entry.hash_key)
            group = groups.get(shard.uid)
            if group is None:
                group = groups[shard.uid] = (shard, [])
            group[1].append(entry)
        if ctx.throttles.writes_limited:
            _throttle(ctx, current, groups, results)
        outcomes = await asyncio.gather(
            *(
                ctx.writers.append(shard.uid, [e.record for e in items], now_ms=ctx.now_ms())
                for shard, items in groups.values()
            ),
            return_exceptions=True,
        )
        pending = []
        sealed: set[ShardUid] = set()
        for (shard, items), outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, ShardSealedError):
                pending.extend(items)
                sealed.add(shard.uid)
            elif isinstance(outcome, ShoalError):
                results.update((e.position, outcome) for e in items)
            elif isinstance(outcome, BaseException):
                log.error("append_failed", extra={"shard_uid": shard.uid}, exc_info=outcome)
                failure = ShoalError(ErrorCode.INTERNAL_FAILURE, "Internal service failure.")
                results.update((e.position, failure) for e in items)
            else:
                first_offset, _arrival_ms = outcome
                shard_id = shard.shard_id
                numbers = sequence_numbers_for(shard, first_offset, len(items))
                for entry, number in zip(items, numbers, strict=True):
                    results[entry.position] = _Written(shard_id, number)
        if not pending:
            return results
        await _wait_sealed_closed(ctx, stream.uid, sealed)
    failure = ShoalError(ErrorCode.INTERNAL_FAILURE, "Internal service failure.")
    results.update((e.position, failure) for e in pending)
    return results


def _throttle(
    ctx: ServiceContext,
    stream: StreamMeta,
    groups: dict[ShardUid, tuple[ShardMeta, list[_Entry]]],
    results: dict[int, _Written | ShoalError],
) -> None:
    """Refuse, record by record, what a shard's write budget does not cover."""
    now_ms = ctx.clock.monotonic_ms()
    for shard_uid, (shard, items) in groups.items():
        throttle = ctx.throttles.write(shard_uid, now_ms=now_ms)
        admitted = []
        for entry in items:
            if throttle.admit(record_bytes=entry.size_bytes, now_ms=now_ms):
                admitted.append(entry)
            else:
                results[entry.position] = rate_exceeded(
                    shard_id=shard.shard_id,
                    stream_name=stream.name,
                    account_id=ctx.config.account_id,
                )
        items[:] = admitted
    for shard_uid in [uid for uid, (_, items) in groups.items() if not items]:
        del groups[shard_uid]


async def _wait_sealed_closed(
    ctx: ServiceContext, stream_uid: StreamUid, shard_uids: set[ShardUid]
) -> None:
    """Wait (bounded) until the reshard that sealed these shards has published its children."""

    def closed(image: MetadataImage) -> bool:
        stream = image.stream_by_uid(stream_uid)
        if stream is None:
            return True
        return all(
            shard.state is ShardState.CLOSED for shard in stream.shards if shard.uid in shard_uids
        )

    await ctx.metadata.wait_for_image(closed, timeout_s=limits.route_retry_wait_ms_max / 1000)


class RecordsApi:
    """The data-plane operations of one node. Loop only."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._router = Router()

    async def put_record(self, request: Request) -> Response:
        ctx = self._ctx
        stream = ctx.stream_for_data(request)
        entry = _entry(stream, 0, request, "data")
        ordering = request.get("SequenceNumberForOrdering")
        if ordering is not None:
            # Our numbers already grow with arrival within a shard and from parents to
            # children, so a serial producer always gets a larger number than the one it
            # passes; we only check that it is a number Shoal issued.
            decode_sequence_number(ordering)
        outcome = (await _write(ctx, self._router, stream, [entry]))[0]
        if isinstance(outcome, ShoalError):
            raise outcome
        return {
            "ShardId": outcome.shard_id,
            "SequenceNumber": outcome.sequence_number,
            "EncryptionType": "NONE",
        }

    async def put_records(self, request: Request) -> Response:
        ctx = self._ctx
        stream = ctx.stream_for_data(request)
        raw_records = request["Records"]
        entries = [
            _entry(stream, i, raw, f"records.{i + 1}.member.data")
            for i, raw in enumerate(raw_records)
        ]
        if sum(entry.size_bytes for entry in entries) > limits.put_records_bytes_max:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                f"Records size exceeds {limits.put_records_bytes_max // limits.MiB} MB limit",
            )
        outcomes = await _write(ctx, self._router, stream, entries)
        result_entries: list[dict[str, Any]] = []
        failed = 0
        for position in range(len(entries)):
            outcome = outcomes[position]
            if isinstance(outcome, ShoalError):
                failed += 1
                result_entries.append(
                    {"ErrorCode": outcome.code.kinesis_name, "ErrorMessage": outcome.message}
                )
            else:
                result_entries.append(
                    {"ShardId": outcome.shard_id, "SequenceNumber": outcome.sequence_number}
                )
        return {"FailedRecordCount": failed, "Records": result_entries, "EncryptionType": "NONE"}

    async def get_shard_iterator(self, request: Request) -> Response:
        ctx = self._ctx
        stream = ctx.stream_for_data(request)
        shard = ctx.shard_for(stream, request["ShardId"])
        throttle = ctx.throttles.read(shard.uid, now_ms=ctx.clock.monotonic_ms())
        if not throttle.admit_get_shard_iterator(now_ms=ctx.clock.monotonic_ms()):
            raise self._rate_exceeded(stream, shard)
        offset = await self._iterator_offset(stream, shard, request)
        position = IteratorPosition(
            stream_uid=stream.uid,
            shard_uid=shard.uid,
            shard_index=shard.index,
            offset=offset,
            issued_ms=ctx.now_ms(),
        )
        token = encode_iterator(position, secret=ctx.image().iterator_secret)
        return {"ShardIterator": token}

    async def _iterator_offset(self, stream: StreamMeta, shard: ShardMeta, request: Request) -> int:
        ctx = self._ctx
        kind = request["ShardIteratorType"]
        number = request.get("StartingSequenceNumber")
        timestamp = request.get("Timestamp")
        needs_number = kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
        if needs_number and number is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                f"Must specify StartingSequenceNumber for {kind} ShardIteratorType.",
            )
        if not needs_number and number is not None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                f"Request should not contain StartingSequenceNumber for {kind} ShardIteratorType.",
            )
        if kind == "AT_TIMESTAMP" and timestamp is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP.",
            )
        if kind != "AT_TIMESTAMP" and timestamp is not None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                f"Request should not contain a timestamp for {kind} ShardIteratorType.",
            )
        end = self._readable_end(shard)
        if kind == "LATEST":
            return end
        if kind == "TRIM_HORIZON":
            return await asyncio.to_thread(ctx.store.log_start, shard.uid)
        if kind == "AT_TIMESTAMP":
            assert timestamp is not None
            found = await asyncio.to_thread(
                ctx.store.first_offset_at_or_after_time, shard.uid, ms_from_datetime(timestamp)
            )
            return end if found is None else min(found, end)
        assert number is not None
        offset = offset_for_sequence_number(number, shard=shard, stream_name=stream.name)
        if kind == "AFTER_SEQUENCE_NUMBER":
            offset += 1
        return min(offset, end)

    def _rate_exceeded(self, stream: StreamMeta, shard: ShardMeta) -> ShoalError:
        return rate_exceeded(
            shard_id=shard.shard_id, stream_name=stream.name, account_id=self._ctx.config.account_id
        )

    def _readable_end(self, shard: ShardMeta) -> int:
        """The end of what readers may see: committed records (all of them once closed)."""
        if shard.state is ShardState.CLOSED:
            assert shard.end_offset is not None
            return shard.end_offset
        return self._ctx.writers.committed_end(shard.uid)

    async def get_records(self, request: Request) -> Response:
        ctx = self._ctx
        now_ms = ctx.now_ms()
        image = ctx.image()
        position = decode_iterator(
            request["ShardIterator"], secret=image.iterator_secret, now_ms=now_ms
        )
        stream = image.stream_by_uid(StreamUid(position.stream_uid))
        shard = stream.shard_by_index(position.shard_index) if stream is not None else None
        if stream is None or shard is None or shard.uid != position.shard_uid:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"Shard {describe.shard_id_of(position.shard_index)} in the iterator's stream "
                f"{ctx.account_phrase()} does not exist",
            )
        if stream.is_gone(now_ms=now_ms):
            raise ctx.stream_not_found(stream.name)
        limit = request.get("Limit", limits.get_records_count_max)
        end = self._readable_end(shard)
        throttle = ctx.throttles.read(shard.uid, now_ms=ctx.clock.monotonic_ms())
        if not throttle.admit_get_records(now_ms=ctx.clock.monotonic_ms()):
            raise self._rate_exceeded(stream, shard)
        records = await self._read(stream, shard, Offset(position.offset), end, limit, now_ms)
        throttle.record_read(
            read_bytes=sum(_record_bytes(r.partition_key, r.data) for r in records),
            now_ms=ctx.clock.monotonic_ms(),
        )
        next_offset = records[-1].offset + 1 if records else max(position.offset, 0)
        if not records:
            next_offset = max(next_offset, await asyncio.to_thread(ctx.store.log_start, shard.uid))
        response: Response = {
            "Records": self._records_shape(shard, records),
            "MillisBehindLatest": self._millis_behind(records, next_offset, end, now_ms),
        }
        if shard.state is ShardState.CLOSED and next_offset >= end:
            response["ChildShards"] = describe.child_shards_shape(stream, shard)
        else:
            next_position = IteratorPosition(
                stream_uid=stream.uid,
                shard_uid=shard.uid,
                shard_index=shard.index,
                offset=next_offset,
                issued_ms=now_ms,
            )
            response["NextShardIterator"] = encode_iterator(
                next_position, secret=image.iterator_secret
            )
        return response

    async def _read(
        self,
        stream: StreamMeta,
        shard: ShardMeta,
        start: Offset,
        end: int,
        limit: int,
        now_ms: int,
    ) -> list[StoredRecord]:
        """Committed records in [start, end), without those past the stream's retention."""
        if start >= end:
            return []
        store = self._ctx.store
        records = await asyncio.to_thread(
            store.read,
            shard.uid,
            start_offset=start,
            end_offset=Offset(end),
            records_max=limit,
            bytes_max=limits.get_records_bytes_max,
        )
        cutoff_ms = now_ms - stream.retention_hours * HOUR_MS
        if records and records[0].arrival_ms < cutoff_ms:
            # Past retention but not trimmed yet: unreadable at once, as on AWS. Arrival times
            # are non-decreasing per shard, so the expired records are a prefix.
            first_live = await asyncio.to_thread(
                store.first_offset_at_or_after_time, shard.uid, cutoff_ms
            )
            if first_live is None or first_live >= end:
                return []
            if first_live > records[-1].offset:
                return await self._read(stream, shard, Offset(first_live), end, limit, now_ms)
            records = [r for r in records if r.offset >= first_live]
        return records

    @staticmethod
    def _records_shape(shard: ShardMeta, records: Sequence[StoredRecord]) -> list[dict[str, Any]]:
        """GetRecords' Records. Offsets are consecutive apart from control records, and a
        batch shares one arrival time, so numbers and timestamps are made once per run."""
        if not records:
            return []
        first = records[0].offset
        numbers = sequence_numbers_for(shard, first, records[-1].offset - first + 1)
        arrival_ms = -1
        arrival = datetime_from_ms(0)
        shaped = []
        for record in records:
            if record.arrival_ms != arrival_ms:
                arrival_ms = record.arrival_ms
                arrival = datetime_from_ms(arrival_ms)
            shaped.append(
                {
                    "SequenceNumber": numbers[record.offset - first],
                    "ApproximateArrivalTimestamp": arrival,
                    "Data": record.data,
                    "PartitionKey": record.partition_key,
                }
            )
        return shaped

    @staticmethod
    def _millis_behind(
        records: Sequence[StoredRecord], next_offset: int, end: int, now_ms: int
    ) -> int:
        if next_offset >= end or not records:
            return 0
        return max(0, now_ms - records[-1].arrival_ms)
