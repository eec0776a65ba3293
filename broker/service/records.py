"""Data-plane operations: PutRecord, PutRecords, GetShardIterator, GetRecords.

Writes are routed by hash key to the open shard that owns it and appended through the shard
writers (group commit; answered only once durable). A shard that is being sealed by a reshard
refuses appends; those records are routed again once the metadata shows the children, so a write
in flight during a split or merge lands on one side or the other, never on both, never lost.
Reads see only committed records, and never records past the stream's retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from broker import error_messages, limits
from broker.error_messages import (
    iterator_position_mismatch,
    missing_member,
    timestamp_in_the_future,
)
from broker.errors import ErrorCode, ShoalError
from broker.log.records import (
    NewRecords,
    RecordPage,
    StoredRecord,
    records_size_bytes,
)
from broker.meta.image import (
    HOUR_MS,
    MetadataImage,
    NodeState,
    RecordDistribution,
    ShardMeta,
    ShardState,
    StreamMeta,
)
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.service import describe
from broker.service.context import CURRENT_CALLER, ServiceContext
from broker.service.shards import AppendResult, ReadRequest, ReadResult, ReadThrottle
from broker.service.throughput import get_records_rate_exceeded, rate_exceeded
from broker.streams.hash_keys import (
    ShardRouter,
    parse_hash_key,
    partition_key_bytes_hash,
    partition_keys_bytes_hashes,
)
from broker.streams.iterators import IteratorPosition, decode_iterator, encode_iterator
from broker.streams.namespaces import name_of, namespace_of_arn
from broker.streams.sequence_numbers import (
    is_valid_ordering_number,
    offset_for_sequence_number,
    record_number_base,
    record_sequence_numbers,
    sequence_numbers_for,
)
from broker.timestamps import datetime_from_ms, ms_from_datetime
from broker.types import Offset, ShardUid, StreamUid
from broker.wire.put_entries import PutEntries
from broker.wire.put_results import written_entries
from broker.wire.record_fields import records_ahead

Request = Mapping[str, Any]
Response = dict[str, Any]

log = logging.getLogger(__name__)


class _Entry(NamedTuple):
    """One record of a put, checked and routed, made one by one (PutRecord, and a PutRecords
    that is not all common records); the common PutRecords is made as columns at once."""

    partition_key: str
    partition_key_utf8: bytes
    data: bytes
    size_bytes: int  # partition key (UTF-8) + data, what limits and throttles count
    hash_key: int


# A written record's result, already in its response shape (PutRecords' result entry, what
# PutRecord answers): made once per record by `_settle`, handed on as it is.
_Written = dict[str, str]


def _entry(stream: StreamMeta, raw: Mapping[str, Any], path: str) -> _Entry:
    """One record of a put: its size checked, its hash key chosen (the partition key's MD5,
    the explicit hash key, or, on an AUTO-distributed stream, uniformly at random)."""
    partition_key: str | None = raw.get("PartitionKey")
    auto = stream.record_distribution is RecordDistribution.AUTO
    if partition_key is None:
        if not auto:
            # Optional in the model (an AUTO-distributed stream ignores it), required here.
            raise missing_member(path.removesuffix("data") + "partitionKey")
        partition_key = ""
    data: bytes = raw["Data"]
    partition_key_utf8 = partition_key.encode()
    size = len(partition_key_utf8) + len(data)
    size_max = stream.max_record_size_kib * limits.KiB
    if size > size_max:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.record_too_large(path=path, size_max=size_max),
        )
    explicit = raw.get("ExplicitHashKey")
    if auto:
        hash_key = random.getrandbits(128)  # spread evenly; keys are ignored, as on AWS
    elif explicit is not None:
        hash_key = parse_hash_key(explicit, field="ExplicitHashKey")
    else:
        hash_key = partition_key_bytes_hash(partition_key_utf8)
    return _Entry(partition_key, partition_key_utf8, data, size, hash_key)


def _columns(entries: Sequence[_Entry]) -> NewRecords:
    """The append's one value (`NewRecords`) of entries made one by one."""
    keys, keys_utf8, datas, sizes, hash_keys = zip(*entries, strict=True)
    return NewRecords(keys, keys_utf8, datas, sizes, hash_keys)


def _put_records_path(position: int) -> str:
    return f"records.{position + 1}.member.data"


def _new_records(stream: StreamMeta, raw_records: Sequence[Mapping[str, Any]]) -> NewRecords:
    """A PutRecords' records as the one value every layer below takes (`NewRecords`): column
    by column when every record is the common one (`_common_records`), else in one loop where
    the common record is made inline and any other goes through `_entry`, which also raises
    the error of a bad one, so the first error is the same as record-by-record."""
    if stream.record_distribution is RecordDistribution.AUTO:
        return _columns(
            [_entry(stream, raw, _put_records_path(i)) for i, raw in enumerate(raw_records)]
        )
    size_max = stream.max_record_size_kib * limits.KiB
    common = _common_records(raw_records, size_max)
    if common is not None:
        return common
    entries: list[_Entry] = []
    append = entries.append
    for position, raw in enumerate(raw_records):
        partition_key = raw.get("PartitionKey")
        if partition_key is None or "ExplicitHashKey" in raw:
            append(_entry(stream, raw, _put_records_path(position)))
            continue
        data: bytes = raw["Data"]
        partition_key_utf8 = partition_key.encode()
        size = len(partition_key_utf8) + len(data)
        if size > size_max:
            append(_entry(stream, raw, _put_records_path(position)))  # raises
            continue
        hash_key = partition_key_bytes_hash(partition_key_utf8)
        append(_new_tuple(_Entry, (partition_key, partition_key_utf8, data, size, hash_key)))
    return _columns(entries)


_new_tuple = tuple.__new__  # NamedTuple construction without its generated Python __new__
_partition_keys = operator.itemgetter("PartitionKey")
_datas = operator.itemgetter("Data")


def _common_records(raw_records: Sequence[Mapping[str, Any]], size_max: int) -> NewRecords | None:
    """The records of a PutRecords whose records are all the common one (exactly Data and a
    PartitionKey, within `size_max`) on a stream routed by key, made column by column: each
    step (`map` over a column) runs its loop in C, no Python step per record. None when any
    record is not the common one (the caller's loop then makes them, and raises the error of
    the first bad one); nothing here has an effect, so that costs only the time. A door's
    `PutEntries` brings its columns ready-made."""
    if type(raw_records) is PutEntries:  # read as columns by the door (wire/put_entries.py)
        keys: Sequence[str] = raw_records.partition_keys
        keys_utf8: Sequence[bytes] = raw_records.partition_keys_utf8
        datas: Sequence[bytes] = raw_records.datas
        sizes: Sequence[int] = raw_records.sizes
    else:
        try:
            # Two members each, and every one has both keys (itemgetter raises otherwise): no
            # ExplicitHashKey anywhere.
            if sum(map(len, raw_records)) != 2 * len(raw_records):
                return None
            keys = list(map(_partition_keys, raw_records))
            datas = list(map(_datas, raw_records))
            keys_utf8 = list(map(str.encode, keys))
            sizes = list(map(operator.add, map(len, keys_utf8), map(len, datas)))
        except (KeyError, TypeError):
            return None
    if not sizes or max(sizes) > size_max:
        return None
    # No hash keys: a common record's is its key's MD5, computed where it is needed (routing
    # over several shards, `_routing_keys`; the leader's load tracker, after the answer), not
    # on a one-shard stream's way to the disk.
    return NewRecords(keys, keys_utf8, datas, sizes)


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


class _Results:
    """A put's result per record, in request order (`written`: each a `_Written` or the
    ShoalError it failed with), and the positions that failed (each at most once: a failure
    is final, only refused records are routed again), so that nothing walks every record to
    find the failures. `run`: (shard id, sequence numbers) when one shard's append wrote
    every record of the put (`WrittenRun`); `run_bytes`: the gRPC door's bytes of its entries,
    when they were written ahead."""

    __slots__ = ("failed", "run", "run_bytes", "written")

    def __init__(self, count: int, failure: ShoalError) -> None:
        self.written: list[_Written | ShoalError] = [failure] * count  # each one set
        self.failed: list[int] = []
        self.run: tuple[str, list[str]] | None = None
        self.run_bytes: bytes | None = None

    def fail(self, positions: Sequence[int], error: ShoalError) -> None:
        written = self.written
        for position in positions:
            written[position] = error
        self.failed.extend(positions)
        self.run = None
        self.run_bytes = None


class WrittenRun(list[_Written]):
    """PutRecords' Records when one shard's append wrote every record of the put: the result
    entries (a list like any other answer's), with the same as columns: `shard_id` and the
    sequence numbers in request order (`numbers`), from which the gRPC door writes them in one
    join (gateway/put_records.py), or has them written already (`prepared`: `wire.put_results`'
    bytes, made while the records were fsynced). Never changed once made."""

    __slots__ = ("numbers", "prepared", "shard_id")

    def __init__(
        self,
        entries: list[_Written],
        shard_id: str,
        numbers: list[str],
        prepared: bytes | None = None,
    ) -> None:
        super().__init__(entries)
        self.shard_id = shard_id
        self.numbers = numbers
        self.prepared = prepared


async def _write(
    ctx: ServiceContext, router: Router, stream: StreamMeta, records: NewRecords
) -> _Results:
    """Append `records`, grouped by shard, each group on its shard's leader; a result per
    record, in request order.

    Groups refused by a shard (sealed by a reshard, leader moved or unreachable) are routed
    again once a newer image shows where they go, within `limits.route_retry_attempts_max`
    and `limits.route_deadline_ms`; past that their records fail with InternalFailure.
    """
    failure = ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.INTERNAL_SERVICE_FAILURE)
    results = _Results(len(records), failure)
    pending: Sequence[int] = range(len(records))  # positions in the request
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + limits.route_deadline_ms / 1000
    for attempt in range(limits.route_retry_attempts_max):
        image = ctx.image()
        current = image.stream_by_uid(stream.uid)
        if current is None or current.is_gone(now_ms=ctx.now_ms()):
            raise ctx.stream_not_found(stream.name)
        shard_router = router.for_stream(current)
        groups: dict[ShardUid, tuple[ShardMeta, Sequence[int]]] = {}
        if len(shard_router.shards) == 1:
            only = shard_router.shards[0]  # it covers every hash key: no lookup per record
            groups[only.uid] = (only, pending)
        else:
            hash_keys = _routing_keys(records)
            split: dict[ShardUid, tuple[ShardMeta, list[int]]] = {}
            for position in pending:
                shard = shard_router.find(hash_keys[position])
                group = split.get(shard.uid)
                if group is None:
                    group = split[shard.uid] = (shard, [])
                group[1].append(position)
            groups.update(split)
        grpc = _door() == "grpc"
        answers = [
            _Answer(ctx, current, shard, positions, len(records), door_bytes=grpc)
            for shard, positions in groups.values()
        ]
        outcomes: list[AppendResult | BaseException]
        if len(groups) == 1:
            # One shard (every put to a one-shard stream): awaited here, as gather's
            # return_exceptions would hand it back, without a task and a loop step per call.
            ((shard, positions),) = groups.values()
            part = _part(records, positions)
            try:
                outcomes = [
                    await _append_watching(ctx, image, stream.uid, shard, part, answers[0].prepare)
                ]
            except Exception as error:  # sorted below, as gather's outcomes are
                outcomes = [error]
        else:
            outcomes = await asyncio.gather(
                *(
                    _append_watching(
                        ctx, image, stream.uid, shard, _part(records, positions), answer.prepare
                    )
                    for (shard, positions), answer in zip(groups.values(), answers, strict=True)
                ),
                return_exceptions=True,
            )
        refused_positions: list[int] = []
        refused: list[tuple[ShardMeta, ShardRefusedError]] = []
        for (shard, positions), outcome, answer in zip(
            groups.values(), outcomes, answers, strict=True
        ):
            if isinstance(outcome, ShardRefusedError):
                if outcome.reason is RefusalReason.OUTCOME_UNKNOWN:
                    # Maybe stored: never routed again behind the client's back (refusals.py).
                    results.fail(positions, failure)
                    continue
                refused_positions.extend(positions)
                refused.append((shard, outcome))
            elif isinstance(outcome, ShoalError):
                results.fail(positions, outcome)
            elif isinstance(outcome, BaseException):
                log.error("append_failed", extra={"shard_uid": shard.uid}, exc_info=outcome)
                results.fail(positions, failure)
            else:
                answer.settle(outcome, results)
        if not refused_positions:
            return results
        pending = sorted(refused_positions)
        remaining_s = give_up_at - loop.time()
        if remaining_s <= 0:
            break
        await _wait_for_routes(ctx, stream.uid, refused, attempt=attempt, timeout_s=remaining_s)
    log.warning("append_route_exhausted", extra={"stream": stream.name, "records": len(pending)})
    results.fail(pending, failure)
    return results


def _routing_keys(records: NewRecords) -> Sequence[int]:
    """The hash keys the records are routed by: those they carry, else (common records) each
    partition key's MD5."""
    if records.hash_keys is not None:
        return records.hash_keys
    return list(partition_keys_bytes_hashes(records.partition_keys_utf8))


def _part(records: NewRecords, positions: Sequence[int]) -> NewRecords:
    """The records at `positions`: the value itself when they are all of it, in order (a
    one-shard stream's first attempt), else the records taken out."""
    if len(positions) == len(records) and positions == range(len(records)):
        return records
    return records.take(positions)


async def _append_watching(
    ctx: ServiceContext,
    image: MetadataImage,
    stream_uid: StreamUid,
    shard: ShardMeta,
    records: NewRecords,
    placed: Callable[[AppendResult], object],
) -> AppendResult:
    """One shard's append; a forwarded one is abandoned (as an unknown outcome) as soon as the
    image fences the leader's node and names another leader, so a paused leader (which will
    not answer) costs a failover, not the whole forward deadline."""
    append = ctx.shards.append(image, stream_uid, shard, records, placed)
    if ctx.shards.leader_of(shard) == ctx.shards.node_id:
        return await append
    route = (shard.leader, shard.epoch)

    def moved(current: MetadataImage) -> bool:
        """The shard changed hands because its leader's node was fenced (or removed). A
        planned move (rebalance, drain) keeps the forward: the old leader is alive and learns
        whether the records committed under its successor (replication/driver.py), so
        abandoning it would only turn a known outcome into a retry that may duplicate."""
        stream = current.stream_by_uid(stream_uid)
        latest = stream.shard_by_index(shard.index) if stream is not None else None
        if latest is None:
            return True
        if (latest.leader, latest.epoch) == route:
            return False
        node = current.nodes.get(shard.leader) if shard.leader is not None else None
        return node is None or node.state in (NodeState.FENCED, NodeState.REMOVED)

    forward = asyncio.ensure_future(append)
    watch = asyncio.ensure_future(
        ctx.metadata.wait_for_image(moved, timeout_s=limits.forward_timeout_ms / 1000)
    )
    try:
        await asyncio.wait((forward, watch), return_when=asyncio.FIRST_COMPLETED)
        if forward.done() or not watch.done() or watch.exception() is not None:
            return await forward
        raise ShardRefusedError(
            RefusalReason.OUTCOME_UNKNOWN, shard_uid=shard.uid, detail="the leader moved meanwhile"
        )
    finally:
        for task in (forward, watch):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ShoalError, ShardRefusedError):
                    await task
            elif not task.cancelled():
                # Both may end in one loop step (the watch's timeout is the forward's): the one
                # not awaited above must still have its exception read, or asyncio logs it as
                # never retrieved.
                task.exception()


def _settle(
    ctx: ServiceContext,
    stream: StreamMeta,
    shard: ShardMeta,
    positions: Sequence[int],
    outcome: AppendResult,
    results: _Results,
) -> None:
    """Per-record results of one shard's append of the records at `positions`: sequence
    numbers, or the throttle's refusal."""
    admitted: Sequence[int] = positions
    if outcome.throttled:
        throttled = set(outcome.throttled)
        admitted = [p for i, p in enumerate(positions) if i not in throttled]
        refusal = rate_exceeded(
            shard_id=shard.shard_id,
            stream_name=stream.display_name,
            account_id=ctx.namespace().account_id,
        )
        results.fail([positions[i] for i in outcome.throttled], refusal)
    if not admitted:
        return
    shard_id = shard.shard_id
    numbers = sequence_numbers_for(
        shard, outcome.first_offset, len(admitted), arrival_ms=outcome.arrival_ms
    )
    entries = [{"ShardId": shard_id, "SequenceNumber": number} for number in numbers]
    written = results.written
    if len(admitted) == len(written):  # all of the put (positions are distinct)
        written[:] = entries
        results.run = (shard_id, numbers)
    else:
        for position, entry in zip(admitted, entries, strict=True):
            written[position] = entry


class _Answer:
    """One shard's part of a put's answer (`_settle`), prepared while its records are written
    (`prepare`, `ShardClient.append`'s `placed`: during the log writer's fsync, when the loop
    has nothing else to do) and taken as it is once they are committed with the outcome it
    was prepared for (`settle`); otherwise (a forwarded append, a writer that had not started
    yet) made then, as before. With `door_bytes` (a gRPC call), a put written whole by this
    shard also has its result entries written as the door's bytes there (`wire.put_results`),
    off the way from the fsync to the answer."""

    __slots__ = ("_count", "_ctx", "_door_bytes", "_positions", "_prepared", "_shard", "_stream")

    def __init__(
        self,
        ctx: ServiceContext,
        stream: StreamMeta,
        shard: ShardMeta,
        positions: Sequence[int],
        count: int,
        *,
        door_bytes: bool = False,
    ) -> None:
        self._ctx = ctx
        self._door_bytes = door_bytes
        self._stream = stream
        self._shard = shard
        self._positions = positions
        self._count = count  # the put's records
        self._prepared: tuple[AppendResult, _Results] | None = None

    def prepare(self, outcome: AppendResult) -> None:
        results = _Results(self._count, _NOT_ANSWERED)
        _settle(self._ctx, self._stream, self._shard, self._positions, outcome, results)
        if self._door_bytes and results.run is not None:
            results.run_bytes = written_entries(*results.run)
        self._prepared = (outcome, results)

    def settle(self, outcome: AppendResult, results: _Results) -> None:
        """Sets the results of this shard's records, committed with `outcome`."""
        prepared = self._prepared
        if prepared is None or prepared[0] != outcome:
            _settle(self._ctx, self._stream, self._shard, self._positions, outcome, results)
            return
        made = prepared[1]
        if len(self._positions) == self._count:  # all of the put (positions are distinct)
            results.written[:] = made.written
            results.run = made.run
            results.run_bytes = made.run_bytes
        else:
            written, taken = results.written, made.written
            for position in self._positions:
                written[position] = taken[position]
        results.failed.extend(made.failed)


# What a prepared answer holds for the put's records of other shards (never read).
_NOT_ANSWERED = ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.INTERNAL_SERVICE_FAILURE)


async def _wait_for_routes(
    ctx: ServiceContext,
    stream_uid: StreamUid,
    refused: Sequence[tuple[ShardMeta, ShardRefusedError]],
    *,
    attempt: int,
    timeout_s: float,
) -> None:
    """Wait (bounded) for an image that routes the refused shards differently: a sealed
    shard's reshard completed, or a new leader or epoch. Returns early on such an image and
    quietly at the deadline (the caller routes again either way: the image may already be
    newer than what the refusing node saw)."""
    sealed = {s.uid for s, r in refused if r.reason is RefusalReason.SHARD_SEALED}
    seen = {s.uid: (s.leader, s.epoch, s.state) for s, r in refused}

    def changed(image: MetadataImage) -> bool:
        stream = image.stream_by_uid(stream_uid)
        if stream is None:
            return True
        for shard in stream.shards:
            if shard.uid in sealed and shard.state is ShardState.CLOSED:
                return True
            route = (shard.leader, shard.epoch, shard.state)
            if shard.uid in seen and shard.uid not in sealed and seen[shard.uid] != route:
                return True
        return False

    if sealed and len(sealed) == len(seen):
        wait_ms = limits.route_retry_wait_ms_max
    else:
        wait_ms = min(limits.route_backoff_ms_min * 2**attempt, limits.route_backoff_ms_max)
    with contextlib.suppress(ShoalError):
        await ctx.metadata.wait_for_image(changed, timeout_s=min(wait_ms / 1000, timeout_s))


def _token_key(stream: StreamMeta) -> str | None:
    """The stream key an iterator of `stream` carries (None, an unnamed token, for a key that
    is not ASCII: never a client's stream, whose names the model limits to [a-zA-Z0-9_.-])."""
    return stream.name if stream.name.isascii() else None


class RecordsApi:
    """The data-plane operations of one node. Loop only."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._router = Router()

    async def put_record(self, request: Request) -> Response:
        ctx = self._ctx
        stream = ctx.stream_for_data(request)
        entry = _entry(stream, request, "data")
        ordering = request.get("SequenceNumberForOrdering")
        if (
            ordering is not None
            and ordering != "0"  # AWS accepts 0: "before everything"
            and not is_valid_ordering_number(ordering, now_ms=ctx.now_ms())
        ):
            # Our numbers already grow with arrival within a shard and from parents to
            # children, so a serial producer always gets a larger number than the one it
            # passes; we only check that it is a number AWS would read.
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.exclusive_minimum_invalid(
                    text=ordering,
                    stream_name=stream.display_name,
                    account_id=ctx.namespace().account_id,
                ),
            )
        outcome = (await _write(ctx, self._router, stream, _columns([entry]))).written[0]
        if isinstance(outcome, ShoalError):
            raise outcome
        return {**outcome, "EncryptionType": stream.encryption_type}

    async def put_records(self, request: Request) -> Response:
        ctx = self._ctx
        stream = ctx.stream_for_data(request)
        raw_records = request["Records"]
        records = _new_records(stream, raw_records)
        if records.size_bytes > limits.put_records_bytes_max:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.put_records_too_large(
                    put_records_bytes_max=limits.put_records_bytes_max // limits.MiB
                ),
            )
        results = await _write(ctx, self._router, stream, records)
        # Per batch: the written records' entries are ready-made; only failures are reshaped.
        result_entries: list[Any] = results.written
        if results.run is not None and not results.failed:
            written = cast("list[_Written]", results.written)  # no failure among them
            result_entries = WrittenRun(written, *results.run, prepared=results.run_bytes)
        errors: list[ShoalError] = [result_entries[position] for position in results.failed]
        for position, error in zip(results.failed, errors, strict=True):
            result_entries[position] = {
                "ErrorCode": error.code.kinesis_name,
                "ErrorMessage": error.message,
            }
        failed = len(errors)
        meter = ctx.shards.meter
        if meter is not None:
            throttled = sum(1 for error in errors if error.code is ErrorCode.THROUGHPUT_EXCEEDED)
            meter.probe.put_records_finished(
                stream.name, len(records) - failed, throttled, failed - throttled
            )
        return {
            "FailedRecordCount": failed,
            "Records": result_entries,
            "EncryptionType": stream.encryption_type,
        }

    async def get_shard_iterator(self, request: Request) -> Response:
        ctx = self._ctx
        stream = ctx.stream_for_shard_iterator(request)
        shard = ctx.shard_for(stream, request["ShardId"])
        offset = await self._iterator_offset(stream, shard, request)
        position = IteratorPosition(
            stream_uid=stream.uid,
            shard_uid=shard.uid,
            shard_index=shard.index,
            offset=offset,
            issued_ms=ctx.now_ms(),
            stream_key=_token_key(stream),
        )
        token = encode_iterator(
            position,
            secret=ctx.image().iterator_secret,
            stream_name_chars=len(stream.display_name),
        )
        if stream.encryption_type == "NONE":
            # The reader's first GetRecords (at the default Limit) finds its page read already.
            ctx.shards.read_ahead_from(
                shard,
                ReadRequest(
                    start_offset=Offset(offset),
                    records_max=limits.get_records_count_max,
                    bytes_max=limits.get_records_bytes_max,
                    arrival_ms_min=position.issued_ms - stream.retention_hours * HOUR_MS,
                    throttle=ReadThrottle.GET_RECORDS,
                    prepare=_grpc_records_ahead(shard) if _door() == "grpc" else None,
                ),
            )
        return {"ShardIterator": token}

    async def _iterator_offset(self, stream: StreamMeta, shard: ShardMeta, request: Request) -> int:
        kind = request["ShardIteratorType"]
        number = request.get("StartingSequenceNumber")
        timestamp = request.get("Timestamp")
        check_position_members(kind, number, timestamp)
        now_ms = self._ctx.now_ms()
        if timestamp is not None and ms_from_datetime(timestamp) > now_ms:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                timestamp_in_the_future(ms_from_datetime(timestamp), now_ms),
            )
        offset = None
        if number is not None:
            # Checked before the shard is asked, so a bad number is an error even when throttled.
            offset = offset_for_sequence_number(
                number,
                shard=shard,
                stream_name=stream.display_name,
                account_id=namespace_of_arn(stream.arn)[1],
            )
        positions = await self._read_shard(
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(0),
                records_max=0,
                bytes_max=1,
                at_timestamp_ms=None if timestamp is None else ms_from_datetime(timestamp),
                throttle=ReadThrottle.GET_SHARD_ITERATOR,
            ),
        )
        return position_offset(kind, offset, shard, positions)

    async def _read_shard(
        self, stream: StreamMeta, shard: ShardMeta, request: ReadRequest
    ) -> ReadResult:
        """One read on whichever node serves it (`read_routed`), throttled as GetRecords."""
        result = await read_routed(self._ctx, stream, shard, request)
        if result.throttled:
            # AWS words GetRecords' refusal differently from the others (service/throughput.py).
            message = (
                get_records_rate_exceeded
                if request.throttle is ReadThrottle.GET_RECORDS
                else rate_exceeded
            )
            raise message(
                shard_id=shard.shard_id,
                stream_name=stream.display_name,
                account_id=self._ctx.namespace().account_id,
            )
        return result

    async def get_records(self, request: Request) -> Response:
        ctx = self._ctx
        now_ms = ctx.now_ms()
        image = ctx.image()
        position = decode_iterator(
            request["ShardIterator"], secret=image.iterator_secret, now_ms=now_ms
        )
        stream = image.stream_by_uid(StreamUid(position.stream_uid))
        if stream is not None and not ctx.in_callers_namespace(stream.name):
            stream = None  # another account's or region's stream: as if it did not exist
        if stream is None and position.stream_key is not None:
            stream, position = self._in_recreated_stream(position, now_ms=now_ms)
        shard = stream.shard_by_index(position.shard_index) if stream is not None else None
        if stream is None or shard is None or shard.uid != position.shard_uid:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.iterator_shard_gone(
                    shard_index=describe.shard_id_of(position.shard_index),
                    account_phrase=ctx.account_phrase(),
                ),
            )
        if stream.is_gone(now_ms=now_ms):
            raise self._iterator_shard_not_found(stream.name, position.shard_index)
        limit = request.get("Limit", limits.get_records_count_max)
        read = await self._read_shard(
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(position.offset),
                records_max=limit,
                bytes_max=limits.get_records_bytes_max,
                arrival_ms_min=now_ms - stream.retention_hours * HOUR_MS,
                throttle=ReadThrottle.GET_RECORDS,
                prepare=_grpc_records_ahead(shard) if _door() == "grpc" else None,
            ),
        )
        records = read.records
        end = readable_end(shard, read.readable_end)
        next_offset = read.next_offset
        millis_behind = self._millis_behind(
            records, next_offset, end, now_ms, at_tip_possible=read.end_is_committed_end
        )
        response: Response = {
            # The doors write the page from its stored bytes; KinesisService.call shapes it
            # into record dicts for everyone else (`ShardPage`).
            "Records": ShardPage(shard, records, read.prepared),
            "MillisBehindLatest": millis_behind,
        }
        meter = ctx.shards.meter
        if meter is not None:
            meter.probe.records_read(
                stream.name,
                shard.shard_id,
                len(records),
                records_size_bytes(records),
                millis_behind,
                stream.enhanced_metrics,
            )
        if (
            shard.state is ShardState.CLOSED
            and next_offset >= end
            and end >= (shard.end_offset or 0)
        ):
            response["ChildShards"] = describe.child_shards_shape(stream, shard)
        else:
            next_position = IteratorPosition(
                stream_uid=stream.uid,
                shard_uid=shard.uid,
                shard_index=shard.index,
                offset=next_offset,
                issued_ms=now_ms,
                stream_key=_token_key(stream),
            )
            response["NextShardIterator"] = encode_iterator(
                next_position,
                secret=image.iterator_secret,
                stream_name_chars=len(stream.display_name),
            )
        return response

    def _in_recreated_stream(
        self, position: IteratorPosition, *, now_ms: int
    ) -> tuple[StreamMeta, IteratorPosition]:
        """An iterator whose stream incarnation is gone, read as AWS reads it: by its stream's
        name (kinesalite's recording). A stream of that name with the iterator's shard is read
        from that shard's start (every number of the new incarnation is above the old one's,
        in AWS's layout); otherwise the iterator's shard is not found, also when no stream of
        that name exists (AWS names the shard there too, not the stream)."""
        ctx = self._ctx
        key = position.stream_key
        assert key is not None
        stream = ctx.image().stream(key, now_ms=now_ms)
        if stream is None or not ctx.in_callers_namespace(key):
            raise self._iterator_shard_not_found(key, position.shard_index)
        shard = stream.shard_by_index(position.shard_index)
        if shard is None:
            raise self._iterator_shard_not_found(key, position.shard_index)
        return stream, dataclasses.replace(
            position, stream_uid=stream.uid, shard_uid=shard.uid, offset=0
        )

    def _iterator_shard_not_found(self, stream_key: str, shard_index: int) -> ShoalError:
        """GetRecords' answer to an iterator whose stream is deleted (or lacks its shard):
        "Shard shardId-… in stream … under account … does not exist", as kinesalite recorded
        AWS answering it (2015; the 2023 GetShardIterator answer shows AWS still names the
        shard of a stream the caller does not have)."""
        return ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.shard_not_found(
                describe.shard_id_of(shard_index),
                name_of(stream_key),
                self._ctx.namespace().account_id,
            ),
        )

    @staticmethod
    def _millis_behind(
        records: RecordPage,
        next_offset: int,
        end: int,
        now_ms: int,
        *,
        at_tip_possible: bool,
    ) -> int:
        """0 once the read reached the shard's committed end ("no new records at this
        moment", which readers take for the end); a page that reached only a follower's end
        (`at_tip_possible` False) is as far behind as its last record (`ShardClient.read`
        never answers an empty page from there)."""
        if not records or (next_offset >= end and at_tip_possible):
            return 0
        return max(0, now_ms - records.last_arrival_ms())


# --- Shared with SubscribeToShard (service/subscriptions.py) ----------------------------------


async def read_routed(
    ctx: ServiceContext, stream: StreamMeta, shard: ShardMeta, request: ReadRequest
) -> ReadResult:
    """One read on whichever node serves the shard (here, or its leader), routed again
    (bounded by `limits.route_retry_attempts_max` and `limits.route_deadline_ms`) when refused
    because the leader moved; the shard gone (deleted stream, or a new incarnation) is
    ResourceNotFoundException. Throttling is the caller's: `result.throttled`."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + limits.route_deadline_ms / 1000
    for attempt in range(limits.route_retry_attempts_max):
        image = ctx.image()
        current = image.stream_by_uid(stream.uid)
        latest = current.shard_by_index(shard.index) if current is not None else None
        if latest is None or latest.uid != shard.uid:
            raise ctx.stream_not_found(stream.name)
        try:
            return await ctx.shards.read(image, stream.uid, latest, request)
        except ShardRefusedError as refusal:
            remaining_s = give_up_at - loop.time()
            if remaining_s <= 0:
                break
            await _wait_for_routes(
                ctx, stream.uid, [(latest, refusal)], attempt=attempt, timeout_s=remaining_s
            )
    log.warning("read_route_exhausted", extra={"stream": stream.name, "shard_uid": shard.uid})
    raise ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.INTERNAL_SERVICE_FAILURE)


def check_position_members(
    kind: str,
    number: str | None,
    timestamp: object | None,
    *,
    number_field: str = "StartingSequenceNumber",
    type_field: str = "ShardIteratorType",
) -> None:
    """A starting position names a sequence number exactly for AT_/AFTER_SEQUENCE_NUMBER and a
    timestamp exactly for AT_TIMESTAMP (InvalidArgumentException otherwise, AWS's messages).
    GetShardIterator's member names by default; SubscribeToShard passes StartingPosition's."""
    needs_number = kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
    takes_number = needs_number or kind in ("TRIM_HORIZON", "LATEST")
    if type_field == "ShardIteratorType" and takes_number and needs_number != (number is not None):
        # GetShardIterator's own wording (AWS, as kinesalite recorded it).
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            iterator_position_mismatch(kind, has_number=number is not None),
        )
    if needs_number and number is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.iterator_number_required(
                number_field=number_field, kind=kind, type_field=type_field
            ),
        )
    if not needs_number and number is not None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.iterator_number_not_allowed(
                number_field=number_field, kind=kind, type_field=type_field
            ),
        )
    if kind == "AT_TIMESTAMP" and timestamp is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.ITERATOR_TIMESTAMP_REQUIRED,
        )
    if kind != "AT_TIMESTAMP" and timestamp is not None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.iterator_timestamp_not_allowed(kind=kind, type_field=type_field),
        )


def readable_end(shard: ShardMeta, replica_end: Offset) -> Offset:
    """The end of what readers may see: committed records, and no more than a closed shard's
    end (the seal's offset; control records past it are not the shard's)."""
    if shard.state is ShardState.CLOSED:
        assert shard.end_offset is not None
        return Offset(min(shard.end_offset, replica_end))
    return replica_end


def position_offset(kind: str, offset: int | None, shard: ShardMeta, positions: ReadResult) -> int:
    """Where a reader starts for a ShardIteratorType / StartingPosition.Type, from the shard's
    positions (`positions`: a `records_max=0` read on the leader) and, for AT_ and
    AFTER_SEQUENCE_NUMBER, the offset the client's number names. Never past what is readable."""
    end = readable_end(shard, positions.readable_end)
    if kind == "LATEST":
        return end
    if kind == "TRIM_HORIZON":
        return positions.log_start
    if kind == "AT_TIMESTAMP":
        found = positions.timestamp_offset
        return end if found is None else min(found, end)
    assert kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"), kind
    assert offset is not None
    if kind == "AFTER_SEQUENCE_NUMBER":
        offset += 1
    return min(offset, end)


@dataclass(frozen=True, slots=True)
class ShardPage:
    """GetRecords' Records as the service answers them: the page read from `shard`'s log, as
    runs of stored batch bytes where the replica that served it keeps them. The doors write it
    to their wire themselves (the gRPC door from the batch bytes, no object per record; the
    AWS door through `shaped`); `KinesisService.call` answers `shaped()` to every other
    caller, so in-process readers see AWS's record dicts as before."""

    shard: ShardMeta
    page: RecordPage
    # The gRPC door's records fields of `page`, written while it was read ahead (None: the
    # door writes them as it answers). Made with `shard`'s uid, whose number layout (created
    # time, index, AWS layout) never changes, so it is the page's under any image.
    records_written: bytes | None = None

    def number_base(self, arrival_ms: int) -> tuple[int, int]:
        """(base, shift) of the sequence numbers of records that arrived at `arrival_ms`: the
        record at offset o is numbered `str(base | (o << shift))`."""
        return record_number_base(self.shard, arrival_ms)

    def shaped(self) -> list[dict[str, Any]]:
        """The records as AWS-shaped dicts (`records_shape`)."""
        return records_shape(self.shard, self.page)


def _door() -> str | None:
    """The door the current call came through ("grpc", "http", "internal"), if any."""
    caller = CURRENT_CALLER.get()
    return caller.door if caller is not None else None


def _grpc_records_ahead(shard: ShardMeta) -> Callable[[RecordPage], bytes | None]:
    """A gRPC reader's `ReadRequest.prepare`: the records fields of a page read ahead, written
    in the read-ahead's worker thread (`wire.record_fields.records_ahead`)."""

    def write(page: RecordPage) -> bytes | None:
        runs = page.runs
        if runs is None:
            return None
        return records_ahead(runs, lambda arrival_ms: record_number_base(shard, arrival_ms))

    return write


def shaped_answer(response: Mapping[str, Any]) -> dict[str, Any]:
    """`response` with a `ShardPage` in its Records turned into record dicts."""
    page = response.get("Records")
    if isinstance(page, ShardPage):
        return {**response, "Records": page.shaped()}
    return response if isinstance(response, dict) else dict(response)


def records_shape(shard: ShardMeta, records: Sequence[StoredRecord]) -> list[dict[str, Any]]:
    """The Records of GetRecords and of a SubscribeToShardEvent. A batch shares one arrival
    time (in the AWS layout, also the time field of its numbers), so the shard's bits and the
    timestamps are made once per run. A record sealed on the replica that served it carries
    EncryptionType KMS; a clear one carries no EncryptionType, as AWS answers (the member is
    optional in the model, and AWS's own Lambda event fixtures show it only on encrypted
    records; clients read its absence as NONE)."""
    if not records:
        return []
    numbers = record_sequence_numbers(shard, ((r.offset, r.arrival_ms) for r in records))
    arrival_ms = -1
    arrival = datetime_from_ms(0)
    shaped = []
    for record, number in zip(records, numbers, strict=True):
        if record.arrival_ms != arrival_ms:
            arrival_ms = record.arrival_ms
            arrival = datetime_from_ms(arrival_ms)
        shape = {
            "SequenceNumber": number,
            "ApproximateArrivalTimestamp": arrival,
            "Data": record.data,
            "PartitionKey": record.partition_key,
        }
        if record.encrypted:
            shape["EncryptionType"] = "KMS"
        shaped.append(shape)
    return shaped
