"""SubscribeToShard: enhanced fan-out's push of a shard's records to one registered consumer.

`Subscriptions.subscribe(request)` checks everything a client can get wrong before the first
event (consumer, stream, shard, starting position, one subscription per consumer and shard)
and raises the Kinesis error for it, so both front doors answer those like any other failed
call. It returns `{"EventStream": Subscription}`: the AWS output shape, whose member is an
async iterator of event-stream messages (`{"SubscribeToShardEvent": {...}}`), as boto3 hands
an `EventStream` back in the same place. The gRPC door writes each message to a server
stream; the AWS door frames it as `application/vnd.amazon.eventstream` (event_stream.py).

What a subscription does (AWS's documented behaviour, REFERENCE.md §1.9):

- Events carry `Records` (committed records only: reads stop at the high watermark),
  `ContinuationSequenceNumber` (the last position delivered, so a new subscription with
  AFTER_SEQUENCE_NUMBER resumes exactly there, even across events without records) and
  `MillisBehindLatest`. The first event goes out at once; after that an event goes out when
  records commit, and an empty one at least every `subscription_heartbeat_ms` (5 s).
- At the end of a closed shard the last event has `ChildShards`, no continuation number (what
  the KCL and the Flink/Beam connectors test for) and the stream ends.
- After `subscription_lifetime_ms` (5 minutes) the stream ends normally; clients subscribe
  again from their continuation number.
- One subscription per (consumer, shard) **per node**: a second subscribe within
  `subscription_takeover_ms` (5 s) of the first is ResourceInUseException; a later one takes
  over, and the first ends with ResourceInUseException (AWS). A cluster-wide guarantee would
  need a metadata command per subscribe; two clients that reach different nodes can each hold
  one, which costs the second reader nothing but its own budget.
- Deregistering the consumer (or deleting the stream) ends the subscription with
  ResourceNotFoundException within one long-poll (`limits.read_wait_ms_max`).
- Budget: `subscription_bytes_per_second` per subscription (AWS's 2 MB/s per consumer and
  shard); the shard's GetRecords limits do not apply.

Push, not polling: the reader task asks `ShardClient.read` with `wait_ms` (a long-poll). On
the shard's leader that waits on the replication driver's turns until the high watermark passes
the position (`ReplicationDriver.wait_readable`); on any other node the read is forwarded to
the leader with the same `wait_ms` (`NodeService.ShardRead`), so a record is delivered as soon
as its leader commits it wherever the subscriber is connected, and an idle subscription costs
one bounded RPC per `read_wait_ms_max`.

Backpressure: the reader task puts events in a queue of `limits.subscription_queue_events_max`
and waits while it is full; the front door takes the next event only when the transport took
the previous one (gRPC's `write` and the ASGI `send` wait on HTTP/2 flow control). A subscriber
that stops reading therefore holds at most that many events (each at most
`subscription_event_bytes_max`) on the node, whatever is appended meanwhile
(`Subscriptions.statistics()` shows it).

Lifecycle: one `Subscriptions` per node (built by `KinesisService`), loop only. Each
`Subscription` owns one reader task, started by `subscribe` and ended by `aclose()` (which the
front doors call in a `finally`), by the end of the stream, or by an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker import limits
from broker.consumers.registry import ConsumerStatus, StreamConsumer
from broker.errors import ErrorCode, ShoalError
from broker.log.records import StoredRecord
from broker.meta.image import HOUR_MS, MetadataImage, ShardMeta, ShardState, StreamMeta
from broker.replication.refusals import ShardRefusedError
from broker.service import describe
from broker.service.context import ServiceContext
from broker.service.shards import ReadRequest, ReadResult, ReadThrottle
from broker.streams.sequence_numbers import (
    offset_for_sequence_number,
    sequence_number_for,
    sequence_numbers_for,
)
from broker.streams.throttling import TokenBucket
from broker.timestamps import datetime_from_ms, ms_from_datetime
from broker.types import NodeId, Offset, ShardUid, StreamUid

log = logging.getLogger(__name__)

Event = dict[str, Any]  # one event-stream message: {"SubscribeToShardEvent": {...}}

STARTING_POSITION_TYPES = (
    "AT_SEQUENCE_NUMBER",
    "AFTER_SEQUENCE_NUMBER",
    "TRIM_HORIZON",
    "LATEST",
    "AT_TIMESTAMP",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionSettings:
    """The timers and bounds of every subscription of one node (module docstring)."""

    lifetime_ms: int = limits.subscription_lifetime_ms_default
    heartbeat_ms: int = limits.subscription_heartbeat_ms_default
    takeover_ms: int = limits.subscription_takeover_ms_default
    bytes_per_second: int = limits.subscription_bytes_per_second_default  # 0: unlimited
    queue_events_max: int = limits.subscription_queue_events_max
    event_bytes_max: int = limits.subscription_event_bytes_max
    event_records_max: int = limits.subscription_event_records_max
    read_wait_ms: int = limits.read_wait_ms_max
    subscriptions_max: int = limits.subscriptions_per_node_max

    def __post_init__(self) -> None:
        assert self.lifetime_ms > 0
        assert 0 < self.heartbeat_ms <= self.lifetime_ms
        assert self.takeover_ms >= 0
        assert self.bytes_per_second >= 0
        assert self.queue_events_max >= 1
        assert 0 < self.event_bytes_max <= limits.subscription_event_bytes_max
        assert 0 < self.event_records_max <= limits.subscription_event_records_max
        assert 0 < self.read_wait_ms <= limits.read_wait_ms_max
        assert self.subscriptions_max >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionStatistics:
    """One open subscription, as `Subscriptions.statistics()` reports it."""

    consumer_arn: str
    shard_id: str
    queued_events: int  # read ahead, not yet taken by the front door
    queued_bytes: int
    queued_events_peak: int  # the most ever queued at once (bounded by queue_events_max)
    events_sent: int
    records_sent: int
    next_offset: int


@dataclass(slots=True)
class _Counters:
    queued_bytes: int = 0
    queued_events_peak: int = 0
    events_sent: int = 0
    records_sent: int = 0


@dataclass(frozen=True, slots=True)
class _End:
    """The queue's last item: the stream ends normally (None) or with this error."""

    error: ShoalError | None = None


@dataclass(slots=True)
class _Target:
    """Where a subscription reads: resolved at subscribe, re-checked on every read."""

    consumer: StreamConsumer
    stream: StreamMeta
    shard: ShardMeta
    key: tuple[str, ShardUid] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.consumer.arn, self.shard.uid)


class Subscription:
    """One open subscription: an async iterator of event-stream messages. Loop only."""

    def __init__(
        self,
        owner: Subscriptions,
        target: _Target,
        *,
        start_offset: Offset,
        started_ms: int,
    ) -> None:
        self._owner = owner
        self._target = target
        self.started_ms = started_ms  # monotonic
        self._offset = start_offset
        self._queue: asyncio.Queue[tuple[Event, int] | _End] = asyncio.Queue(
            maxsize=owner.settings.queue_events_max
        )
        self._counters = _Counters()
        self._superseded = False
        self._finished = False
        self._task: asyncio.Task[None] | None = None

    @property
    def consumer_arn(self) -> str:
        return self._target.consumer.arn

    @property
    def shard_id(self) -> str:
        return self._target.shard.shard_id

    def start(self) -> None:
        assert self._task is None
        self._task = asyncio.create_task(self._run(), name=f"subscription-{self.shard_id}")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        """The next message; StopAsyncIteration at the end, or the error that ended it."""
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self._finished = True
            await self.aclose()
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        event, size = item
        self._counters.queued_bytes -= size
        return event

    async def aclose(self) -> None:
        """Stops the reader and frees the (consumer, shard) slot; idempotent."""
        self._finished = True
        self._owner._forget(self)
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def supersede(self) -> None:
        """A newer subscription took over: end this one with ResourceInUseException."""
        self._superseded = True
        self._owner._forget(self)

    def statistics(self) -> SubscriptionStatistics:
        counters = self._counters
        return SubscriptionStatistics(
            consumer_arn=self.consumer_arn,
            shard_id=self.shard_id,
            queued_events=self._queue.qsize(),
            queued_bytes=counters.queued_bytes,
            queued_events_peak=counters.queued_events_peak,
            events_sent=counters.events_sent,
            records_sent=counters.records_sent,
            next_offset=self._offset,
        )

    # --- The reader task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._pump()
            await self._queue.put(_End())
        except ShoalError as error:
            await self._queue.put(_End(error))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscription_failed", extra={"shard": self.shard_id})
            await self._queue.put(_End(ShoalError(ErrorCode.INTERNAL_FAILURE)))

    async def _pump(self) -> None:
        """Reads and queues events until the lifetime ends, the shard ends, or an error."""
        owner = self._owner
        settings = owner.settings
        clock = owner.ctx.clock
        ends_ms = self.started_ms + settings.lifetime_ms
        bucket = (
            TokenBucket(rate_per_second=settings.bytes_per_second, now_ms=clock.monotonic_ms())
            if settings.bytes_per_second > 0
            else None
        )
        last_event_ms: int | None = None
        while True:  # bounded by the lifetime: every pass waits at most read_wait_ms
            now_ms = clock.monotonic_ms()
            if now_ms >= ends_ms:
                return
            self._refresh()
            stream, shard = self._target.stream, self._target.shard
            if _at_shard_end(shard, self._offset):
                await self._put(self._final_event(), records=0, size=0)
                return
            bytes_max = settings.event_bytes_max
            if bucket is not None:
                available = bucket.available(now_ms=now_ms)
                if available <= 0:
                    # Spent: wait for the refill (bounded, then the timers are checked again).
                    deficit_ms = (1 - available) * 1000 / bucket.rate_per_second
                    await asyncio.sleep(min(deficit_ms, settings.read_wait_ms) / 1000)
                    continue
                bytes_max = max(1, min(bytes_max, int(available)))
            since_ms = settings.heartbeat_ms if last_event_ms is None else now_ms - last_event_ms
            due = since_ms >= settings.heartbeat_ms
            # Until the next heartbeat or the end, whichever is first (0 when one is due).
            wait_ms = min(settings.read_wait_ms, settings.heartbeat_ms - since_ms, ends_ms - now_ms)
            wait_ms = max(0, wait_ms)
            result = await owner.read(
                stream, shard, self._offset, wait_ms=wait_ms, bytes_max=bytes_max
            )
            records = result.records
            if not records and not due:
                if result.next_offset > self._offset:
                    self._offset = result.next_offset  # past control records only
                continue
            self._offset = Offset(max(self._offset, result.next_offset))
            size = sum(r.size_bytes for r in records)
            if bucket is not None and size:
                bucket.overdraw(size, now_ms=clock.monotonic_ms())
            event = self._event(records, readable_end=_readable_end(shard, result))
            await self._put(event, records=len(records), size=size)
            last_event_ms = clock.monotonic_ms()

    def _refresh(self) -> None:
        """The newest image's view of the consumer, stream and shard; raises the error that
        ends the subscription when one of them is gone or it was taken over."""
        if self._superseded:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                f"Another subscription of consumer {self.consumer_arn} to shard "
                f"{self.shard_id} took over.",
            )
        ctx = self._owner.ctx
        now_ms = ctx.now_ms()
        image = ctx.image()
        consumer = image.consumers.by_arn(self.consumer_arn, now_ms=now_ms)
        if consumer is None or consumer.status(now_ms=now_ms) is not ConsumerStatus.ACTIVE:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, f"Consumer {self.consumer_arn} was deregistered."
            )
        stream = image.stream_by_uid(consumer.stream_uid)
        shard = stream.shard_by_index(self._target.shard.index) if stream is not None else None
        if stream is None or stream.is_gone(now_ms=now_ms) or shard is None:
            raise ctx.stream_not_found(self._target.stream.name)
        self._target.consumer, self._target.stream, self._target.shard = consumer, stream, shard

    async def _put(self, event: Event, *, records: int, size: int) -> None:
        """Queue one event, waiting while the subscriber is behind (the backpressure)."""
        counters = self._counters
        await self._queue.put((event, size))
        counters.queued_bytes += size
        counters.queued_events_peak = max(counters.queued_events_peak, self._queue.qsize())
        counters.events_sent += 1
        counters.records_sent += records
        body = event["SubscribeToShardEvent"]
        self._owner.report(self._target, records, size, body["MillisBehindLatest"])

    def _event(self, records: Sequence[StoredRecord], *, readable_end: Offset) -> Event:
        shard = self._target.shard
        now_ms = self._owner.ctx.now_ms()
        behind = 0
        if records and self._offset < readable_end:
            behind = max(0, now_ms - records[-1].arrival_ms)
        return {
            "SubscribeToShardEvent": {
                "Records": _records_shape(shard, records),
                "ContinuationSequenceNumber": sequence_number_for(shard, max(self._offset - 1, 0)),
                "MillisBehindLatest": behind,
            }
        }

    def _final_event(self) -> Event:
        stream, shard = self._target.stream, self._target.shard
        return {
            "SubscribeToShardEvent": {
                "Records": [],
                "MillisBehindLatest": 0,
                "ChildShards": describe.child_shards_shape(stream, shard),
            }
        }


class Subscriptions:
    """Every open subscription of one node, and SubscribeToShard's entry point. Loop only."""

    def __init__(self, ctx: ServiceContext, settings: SubscriptionSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = settings or settings_from(ctx)
        self._open: dict[tuple[str, ShardUid], Subscription] = {}

    @property
    def count(self) -> int:
        return len(self._open)

    def statistics(self) -> list[SubscriptionStatistics]:
        return [subscription.statistics() for subscription in self._open.values()]

    async def subscribe(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """SubscribeToShard: `{"EventStream": Subscription}`, already reading; raises the
        Kinesis error of a bad request before any event (module docstring)."""
        ctx = self.ctx
        target = self._resolve(ctx.image(), request)
        position = request["StartingPosition"]
        _check_position(position)
        start_offset = await self._start_offset(target, position)
        now_ms = ctx.clock.monotonic_ms()
        current = self._open.get(target.key)
        if current is not None:
            if now_ms - current.started_ms < self.settings.takeover_ms:
                raise ShoalError(
                    ErrorCode.RESOURCE_IN_USE,
                    f"Another active subscription exists for consumer {target.consumer.arn} "
                    f"and shard {target.shard.shard_id}.",
                )
            current.supersede()
        if len(self._open) >= self.settings.subscriptions_max:
            raise ShoalError(
                ErrorCode.LIMIT_EXCEEDED,
                f"This node holds {len(self._open)} subscriptions, its limit.",
            )
        subscription = Subscription(self, target, start_offset=start_offset, started_ms=now_ms)
        self._open[target.key] = subscription
        subscription.start()
        return {"EventStream": subscription}

    def _forget(self, subscription: Subscription) -> None:
        key = subscription._target.key
        if self._open.get(key) is subscription:
            del self._open[key]

    def _resolve(self, image: MetadataImage, request: Mapping[str, Any]) -> _Target:
        ctx = self.ctx
        now_ms = ctx.now_ms()
        arn = request["ConsumerARN"]
        consumer = image.consumers.by_arn(arn, now_ms=now_ms)
        if consumer is None:
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, f"Consumer {arn} not found.")
        status = consumer.status(now_ms=now_ms)
        if status is not ConsumerStatus.ACTIVE:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                f"Consumer {arn} is not in ACTIVE state (it is {status.value}).",
            )
        stream = image.stream_by_uid(consumer.stream_uid)
        if stream is None or stream.is_gone(now_ms=now_ms):
            raise ctx.stream_not_found(consumer.stream_name)
        stream = ctx.stream_for_data({"StreamName": stream.name})
        if stream.uid != consumer.stream_uid:
            raise ctx.stream_not_found(consumer.stream_name)
        shard = ctx.shard_for(stream, request["ShardId"])
        return _Target(consumer=consumer, stream=stream, shard=shard)

    async def _start_offset(self, target: _Target, position: Mapping[str, Any]) -> Offset:
        """Where the first event starts, from the leader's positions (as GetShardIterator)."""
        kind = position["Type"]
        stream, shard = target.stream, target.shard
        number = position.get("SequenceNumber")
        offset = None
        if number is not None:
            offset = offset_for_sequence_number(
                number,
                shard=shard,
                stream_name=stream.name,
                field="StartingPosition.SequenceNumber",
            )
        timestamp = position.get("Timestamp")
        positions = await self._read_routed(
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(0),
                records_max=0,
                bytes_max=1,
                at_timestamp_ms=None if timestamp is None else ms_from_datetime(timestamp),
            ),
        )
        end = _readable_end(shard, positions)
        match kind:
            case "LATEST":
                return end
            case "TRIM_HORIZON":
                return positions.log_start
            case "AT_TIMESTAMP":
                found = positions.timestamp_offset
                return end if found is None else Offset(min(found, end))
            case "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER":
                assert offset is not None
                if kind == "AFTER_SEQUENCE_NUMBER":
                    offset += 1
                return Offset(max(min(offset, end), positions.log_start))
        raise AssertionError(kind)  # _check_position admitted only the five types

    async def read(
        self, stream: StreamMeta, shard: ShardMeta, offset: Offset, *, wait_ms: int, bytes_max: int
    ) -> ReadResult:
        """One (long-polled) read of committed records at `offset` for a subscription (at
        least one record, as GetRecords, even past `bytes_max`)."""
        now_ms = self.ctx.now_ms()
        return await self._read_routed(
            stream,
            shard,
            ReadRequest(
                start_offset=offset,
                records_max=self.settings.event_records_max,
                bytes_max=bytes_max,
                arrival_ms_min=now_ms - stream.retention_hours * HOUR_MS,
                throttle=ReadThrottle.NONE,  # fan-out has its own budget (module docstring)
                wait_ms=wait_ms,
            ),
        )

    async def _read_routed(
        self, stream: StreamMeta, shard: ShardMeta, request: ReadRequest
    ) -> ReadResult:
        """A read on whichever node serves the shard; refusals (leader moving) are routed
        again once a newer image shows a new leader, until `limits.route_deadline_ms`."""
        ctx = self.ctx
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
            except ShardRefusedError:
                remaining_s = give_up_at - loop.time()
                if remaining_s <= 0:
                    break
                route = (latest.leader, latest.epoch)
                wait_ms = min(limits.route_backoff_ms_min * 2**attempt, limits.route_backoff_ms_max)

                def moved(
                    image: MetadataImage,
                    uid: StreamUid = stream.uid,
                    route: tuple[NodeId | None, int] = route,
                ) -> bool:
                    now = image.stream_by_uid(uid)
                    now_shard = now.shard_by_index(shard.index) if now is not None else None
                    return now_shard is None or (now_shard.leader, now_shard.epoch) != route

                with contextlib.suppress(ShoalError):
                    await ctx.metadata.wait_for_image(
                        moved, timeout_s=min(wait_ms / 1000, remaining_s)
                    )
        log.warning("subscription_route_exhausted", extra={"shard_uid": shard.uid})
        raise ShoalError(ErrorCode.INTERNAL_FAILURE, "Internal service failure.")

    def report(self, target: _Target, records: int, size: int, behind_ms: int) -> None:
        """One event queued: the SubscribeToShardEvent metrics."""
        meter = self.ctx.shards.meter
        if meter is None:
            return
        meter.probe.subscription_event(
            target.stream.name,
            target.shard.shard_id,
            records,
            size,
            behind_ms,
            target.stream.enhanced_metrics,
        )


def settings_from(ctx: ServiceContext) -> SubscriptionSettings:
    """The node's subscription settings from its configuration."""
    config = ctx.config
    return SubscriptionSettings(
        lifetime_ms=config.knobs.subscription_lifetime_ms,
        heartbeat_ms=config.knobs.subscription_heartbeat_ms,
        takeover_ms=config.knobs.subscription_takeover_ms,
        bytes_per_second=config.subscription_bytes_per_second,
    )


def _check_position(position: Mapping[str, Any]) -> None:
    """StartingPosition's members must match its Type, as GetShardIterator's do."""
    kind = position["Type"]
    number = position.get("SequenceNumber")
    timestamp = position.get("Timestamp")
    needs_number = kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
    if needs_number and number is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Must specify StartingPosition.SequenceNumber for {kind} StartingPosition.Type.",
        )
    if not needs_number and number is not None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"StartingPosition should not contain a SequenceNumber for {kind}.",
        )
    if (kind == "AT_TIMESTAMP") != (timestamp is not None):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            "StartingPosition.Timestamp is required for AT_TIMESTAMP and allowed only there.",
        )


def _readable_end(shard: ShardMeta, result: ReadResult) -> Offset:
    """What readers may see: committed records, and no more than a closed shard's end."""
    if shard.state is ShardState.CLOSED and shard.end_offset is not None:
        return Offset(min(shard.end_offset, result.readable_end))
    return result.readable_end


def _at_shard_end(shard: ShardMeta, offset: Offset) -> bool:
    return (
        shard.state is ShardState.CLOSED
        and shard.end_offset is not None
        and offset >= shard.end_offset
    )


def _records_shape(shard: ShardMeta, records: Sequence[StoredRecord]) -> list[dict[str, Any]]:
    """Records as in GetRecords (numbers made once per run of offsets)."""
    if not records:
        return []
    first = records[0].offset
    numbers = sequence_numbers_for(shard, first, records[-1].offset - first + 1)
    return [
        {
            "SequenceNumber": numbers[record.offset - first],
            "ApproximateArrivalTimestamp": datetime_from_ms(record.arrival_ms),
            "Data": record.data,
            "PartitionKey": record.partition_key,
        }
        for record in records
    ]
