"""A running application's input, read from the shard logs inside the node (issue 12's
throughput: no GetRecords page between the log and the runner).

`ShardReader` is the worker's `RecordSource` for one shard: it reads through `read_routed`, the
read GetRecords makes (this node's replica below its high watermark when it may answer, the
shard's leader otherwise, routed again when the leader moves; a damaged range read elsewhere),
with GetRecords' throttle, retention and end-of-shard rules, so it never sees an uncommitted
record and ends a closed shard with its children as GetRecords does (the worker then creates
the children's leases, parents before children). What it skips is GetRecords' shaping: no
iterator token, no dict per record, no datetime per record, no `UserRecord` per record.

A page is a `StoredPage`: the user records of one read as columns (data, arrival time,
sequence number), the shape the runner consumes; indexing it makes a `UserRecord` (the
worker's checkpointer and the Lambda preprocessor use a few). KPL aggregates are de-aggregated
as the worker would (`kpl.deaggregate`, with the shard's hash range), record by record, only in
pages that hold one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from broker import limits
from broker.caller import Caller
from broker.client.kpl import MAGIC, UserRecord, deaggregate
from broker.client.retrieval import RecordBatch, ShardInfo, child_shard
from broker.client.worker_config import WorkerConfig
from broker.consumers.leases import Checkpoint
from broker.log.records import StoredRecord, records_size_bytes
from broker.meta.image import HOUR_MS, ShardMeta, ShardState, StreamMeta, StreamStatus
from broker.service import describe
from broker.service.context import CURRENT_CALLER, ServiceContext
from broker.service.records import position_offset, read_routed, readable_end
from broker.service.shards import ReadRequest, ReadThrottle
from broker.service.throughput import get_records_rate_exceeded, rate_exceeded
from broker.streams.namespaces import namespace_of_arn
from broker.streams.sequence_numbers import offset_for_sequence_number, record_sequence_numbers
from broker.timestamps import datetime_from_ms, ms_from_datetime
from broker.types import Offset, ShardUid, StreamUid

# The statuses a stream takes reads in (GetShardIterator's `stream_for_data`).
_READABLE = (StreamStatus.ACTIVE, StreamStatus.UPDATING)


class StoredPage(Sequence[UserRecord]):
    """The user records of one read, in order, as columns: `data` and `arrivals_ms` (epoch
    ms, one int object per run of records that arrived together); `number(i)` is a record's
    sequence number (made on demand: the runner needs a page's first and last). Plain records
    keep their `StoredRecord` and become a `UserRecord` only when indexed; a de-aggregated
    record is its `UserRecord` already."""

    __slots__ = ("_made", "_numbers", "_shard", "_stored", "arrivals_ms", "data")

    def __init__(
        self,
        data: list[bytes],
        arrivals_ms: list[int],
        *,
        numbers: list[str] | None = None,
        shard: ShardMeta | None = None,
        stored: Sequence[StoredRecord] = (),
        made: list[UserRecord] | None = None,
    ) -> None:
        assert numbers is not None or (shard is not None and len(stored) == len(data))
        self.data = data
        self.arrivals_ms = arrivals_ms
        self._numbers = numbers
        self._shard = shard
        self._stored = stored
        self._made = made

    @classmethod
    def read(
        cls,
        shard: ShardMeta,
        stored: Sequence[StoredRecord],
        hash_range: tuple[int, int] | None = None,
    ) -> StoredPage:
        """The page of `stored`, records of `shard` in offset order."""
        data = [r.data for r in stored]
        if not any(d.startswith(MAGIC) for d in data):
            return cls(data, [r.arrival_ms for r in stored], shard=shard, stored=stored)
        numbers = record_sequence_numbers(shard, [(r.offset, r.arrival_ms) for r in stored])
        users: list[UserRecord] = []
        for record, number in zip(stored, numbers, strict=True):
            users += deaggregate(
                {
                    "Data": record.data,
                    "PartitionKey": record.partition_key,
                    "SequenceNumber": number,
                    "ApproximateArrivalTimestamp": datetime_from_ms(record.arrival_ms),
                },
                shard_hash_range=hash_range,
            )
        return cls.of_users(users)

    @classmethod
    def of_users(cls, users: Sequence[UserRecord], *, missing_arrival_ms: int = 0) -> StoredPage:
        """A page of user records read elsewhere (each with its sequence number; one without
        an arrival time takes `missing_arrival_ms`)."""
        arrivals: list[int] = []
        for user in users:
            arrival = user.approximate_arrival_timestamp
            arrivals.append(
                ms_from_datetime(arrival) if arrival is not None else missing_arrival_ms
            )
        return cls(
            [u.data for u in users],
            arrivals,
            numbers=[str(u.sequence_number) for u in users],
            made=list(users),
        )

    def number(self, index: int) -> str:
        """The sequence number of the record at `index`."""
        if self._numbers is not None:
            return self._numbers[index]
        assert self._shard is not None
        record = self._stored[index]
        return record_sequence_numbers(self._shard, ((record.offset, record.arrival_ms),))[0]

    def __len__(self) -> int:
        return len(self.data)

    @overload
    def __getitem__(self, index: int) -> UserRecord: ...

    @overload
    def __getitem__(self, index: slice) -> StoredPage: ...

    def __getitem__(self, index: int | slice) -> UserRecord | StoredPage:
        if isinstance(index, slice):
            return StoredPage(
                self.data[index],
                self.arrivals_ms[index],
                numbers=self._numbers[index] if self._numbers is not None else None,
                shard=self._shard,
                stored=self._stored[index],
                made=self._made[index] if self._made is not None else None,
            )
        if self._made is not None:
            return self._made[index]
        stored = self._stored[index]
        return UserRecord(
            partition_key=stored.partition_key,
            data=stored.data,
            sequence_number=self.number(index),
            approximate_arrival_timestamp=datetime_from_ms(stored.arrival_ms),
        )

    def __iter__(self) -> Iterator[UserRecord]:
        for index in range(len(self.data)):
            yield self[index]


class ShardReader:
    """One shard's records for the worker, read inside the node (module docstring). Reads as
    `caller` (its namespace names the stream in errors); the stream is known by its metadata
    key, the shard by its id, both fixed at `start` (a stream recreated under the same name
    is another stream: ResourceNotFoundException, as GetRecords answers)."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        stream_key: str,
        shard: ShardInfo,
        caller: Caller | None,
        config: WorkerConfig,
    ) -> None:
        self._ctx = ctx
        self._stream_key = stream_key
        self._shard_info = shard
        self._caller = caller
        self._config = config
        self._stream_uid: StreamUid | None = None
        self._shard_uid: ShardUid | None = None
        self._shard_index = -1
        self._offset: int | None = None
        self.idle_wait_ms = config.polling_idle_interval_ms

    async def start(self, position: Checkpoint) -> None:
        token = CURRENT_CALLER.set(self._caller)
        try:
            await self._start(position)
        finally:
            CURRENT_CALLER.reset(token)

    async def next_batch(self) -> RecordBatch:
        token = CURRENT_CALLER.set(self._caller)
        try:
            return await self._next_batch()
        finally:
            CURRENT_CALLER.reset(token)

    async def aclose(self) -> None:
        """Nothing to release: the position is this object's."""

    async def _start(self, position: Checkpoint) -> None:
        ctx = self._ctx
        now_ms = ctx.now_ms()
        stream = ctx.image().stream(self._stream_key, now_ms=now_ms)
        if stream is None or stream.status(now_ms=now_ms) not in _READABLE:
            raise ctx.stream_not_found(self._stream_key)  # as GetShardIterator answers
        shard = ctx.shard_for(stream, self._shard_info.shard_id)
        self._stream_uid, self._shard_uid, self._shard_index = stream.uid, shard.uid, shard.index
        number: str | None = None
        timestamp_ms: int | None = None
        if not position.is_sentinel:
            kind, number = "AT_SEQUENCE_NUMBER", position.sequence_number
        elif position.sequence_number == "AT_TIMESTAMP":
            assert self._config.initial_timestamp is not None
            kind, timestamp_ms = "AT_TIMESTAMP", ms_from_datetime(self._config.initial_timestamp)
        else:
            assert not position.is_shard_end, "a finished shard is never read"
            kind = position.sequence_number
        offset = None
        if number is not None:
            offset = offset_for_sequence_number(
                number,
                shard=shard,
                stream_name=stream.display_name,
                account_id=namespace_of_arn(stream.arn)[1],
            )
        positions = await read_routed(
            ctx,
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(0),
                records_max=0,
                bytes_max=1,
                at_timestamp_ms=timestamp_ms,
                throttle=ReadThrottle.GET_SHARD_ITERATOR,
            ),
        )
        if positions.throttled:
            raise rate_exceeded(
                shard_id=shard.shard_id,
                stream_name=stream.display_name,
                account_id=ctx.namespace().account_id,
            )
        self._offset = position_offset(kind, offset, shard, positions)

    def _current(self, now_ms: int) -> tuple[StreamMeta, ShardMeta]:
        """The stream and shard read, as the metadata has them now; gone: ResourceNotFound."""
        assert self._stream_uid is not None, "start first"
        stream = self._ctx.image().stream_by_uid(self._stream_uid)
        shard = stream.shard_by_index(self._shard_index) if stream is not None else None
        if stream is None or shard is None or shard.uid != self._shard_uid:
            raise self._ctx.stream_not_found(self._stream_key)
        if stream.is_gone(now_ms=now_ms):
            raise self._ctx.stream_not_found(stream.name)
        return stream, shard

    async def _next_batch(self) -> RecordBatch:
        assert self._offset is not None, "start first; nothing follows the shard's end"
        ctx = self._ctx
        now_ms = ctx.now_ms()
        stream, shard = self._current(now_ms)
        read = await read_routed(
            ctx,
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(self._offset),
                records_max=self._config.get_records_limit,
                bytes_max=limits.get_records_bytes_max,
                arrival_ms_min=now_ms - stream.retention_hours * HOUR_MS,
                throttle=ReadThrottle.GET_RECORDS,
            ),
        )
        if read.throttled:
            raise get_records_rate_exceeded(
                shard_id=shard.shard_id,
                stream_name=stream.display_name,
                account_id=ctx.namespace().account_id,
            )
        stored = read.records
        end = readable_end(shard, read.readable_end)
        self._offset = read.next_offset
        if not stored or (read.next_offset >= end and read.end_is_committed_end):
            millis_behind = 0  # at the committed end (as GetRecords' MillisBehindLatest)
        else:
            millis_behind = max(0, now_ms - stored[-1].arrival_ms)
        page = StoredPage.read(shard, stored, self._shard_info.hash_range)
        meter = ctx.shards.meter
        if meter is not None:
            meter.probe.records_read(
                stream.name,
                shard.shard_id,
                len(stored),
                records_size_bytes(stored),
                millis_behind,
                stream.enhanced_metrics,
            )
        children: tuple[ShardInfo, ...] | None = None
        if (
            shard.state is ShardState.CLOSED
            and read.next_offset >= end
            and end >= (shard.end_offset or 0)
        ):
            children = tuple(
                child_shard(child) for child in describe.child_shards_shape(stream, shard)
            )
            self._offset = None
        return RecordBatch(
            records=(), users=page, millis_behind_latest=millis_behind, child_shards=children
        )
