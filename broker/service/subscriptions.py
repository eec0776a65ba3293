"""SubscribeToShard: enhanced fan-out's push of a shard's records to one registered consumer.

`Subscriptions.subscribe(request)` checks everything a client can get wrong before the first
event (consumer, stream, shard, starting position, one subscription per consumer and shard)
and raises the Kinesis error for it, so both front doors answer those like any other failed
call. It returns `{"EventStream": Subscription}`: the AWS output shape, whose member is an
async iterator of event-stream messages (`{"SubscribeToShardEvent": {...}}`), as boto3 hands
an `EventStream` back in the same place. The gRPC door writes each message to a server
stream; the AWS door frames it as `application/vnd.amazon.eventstream` (event_stream.py).

What a subscription does (AWS's documented behaviour, REFERENCE.md §1.9):

- Events carry `Records` (committed records only: reads stop at the high watermark; the
  shape and the read path are GetRecords', `service/records.py`),
  `ContinuationSequenceNumber` (the last position delivered, so a new subscription with
  AFTER_SEQUENCE_NUMBER resumes exactly there, even across events without records:
  `continuation_number`) and
  `MillisBehindLatest`. The first event goes out at once; after that an event goes out when
  records commit, and an empty one at least every `subscription_heartbeat_ms` (5 s).
- At the end of a closed shard the last event has `ChildShards`, no continuation number (what
  the KCL and the Flink/Beam connectors test for) and the stream ends.
- After `subscription_lifetime_ms` (5 minutes) the stream ends normally; clients subscribe
  again from their continuation number.
- One subscription per (consumer, shard), **cluster-wide**: a second subscribe within
  `subscription_takeover_ms` (5 s) of the first, while the first is open, is
  ResourceInUseException; a later one takes over, and the first ends with
  ResourceInUseException (AWS). Two checks:
  - per node, the fast path (`_open`): refused before anything is asked of the leader; a
    takeover ends the older subscription here at once;
  - on the shard's leader, the claim table (`streams/subscription_claims.py`): every read of a
    subscription (the positions read in `subscribe`, then every long-poll) carries its `Claim`
    (consumer ARN, a subscription id, its start on the wall clock) to the leader, which keeps
    one live claim per (consumer, shard), renewed by each read. A read of another subscription
    is refused with ResourceInUseException: the first read happens in `subscribe`, so the
    client gets a plain error; a subscription taken over from another node gets it on its next
    read (within one long-poll) and ends. An ended subscription frees the slot with one last
    read (`release`: nothing is read), sent before the subscriber learns the stream ended
    when it ends by itself (lifetime, shard end), and in the background when it is closed (a
    subscribe here for the same slot waits for it, bounded). No metadata command.
  Windows, on purpose: a new leader starts with an empty table (after a failover two
  subscriptions may each get one read before the next renewal orders them); while the leader is
  unreachable a replica serves reads unchecked; a subscriber that stops reading (its reader
  parked on a full queue) longer than the claim's expiry (about 4 s) loses the slot to another
  subscribe, and ends at its next read; a lost release (the node died, or stopped: `end_all`
  sends none) leaves the slot held until the claim expires (about 4 s). Leniencies: a closed
  subscription frees its slot at once (AWS refuses a new call for 5 s after a successful one
  either way), and AWS's "one call per second per consumer and shard" (LimitExceededException)
  is not enforced; both only make well-behaved clients (the KCL) wait.
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
front doors call in a `finally`, so a client gone on HTTP/1.1, h2 or gRPC frees its slot and
task at once), by the end of the stream, by an error, or by `end()`: a takeover, or
`Subscriptions.end_all()` when the node stops (every stream ends normally at once, so neither
door's shutdown grace waits on streams that would run for minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker import error_messages, limits
from broker.consumers.registry import ConsumerStatus, StreamConsumer
from broker.errors import ErrorCode, ShoalError
from broker.log.records import RecordPage, records_size_bytes
from broker.meta.image import HOUR_MS, MetadataImage, ShardMeta, ShardState, StreamMeta
from broker.service import describe
from broker.service.context import ServiceContext
from broker.service.records import (
    ShardPage,
    check_position_members,
    position_offset,
    read_routed,
    readable_end,
)
from broker.service.shards import ReadRequest, ReadResult, ReadThrottle
from broker.streams.namespaces import namespace_of_arn
from broker.streams.sequence_numbers import (
    bound_number_for,
    offset_for_sequence_number,
    sequence_number_for,
)
from broker.streams.subscription_claims import Claim
from broker.streams.throttling import TokenBucket
from broker.timestamps import ms_from_datetime
from broker.types import Offset, ShardUid

log = logging.getLogger(__name__)

Event = dict[str, Any]  # one event-stream message: {"SubscribeToShardEvent": {...}}


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
    reader_parked: bool  # the reader waits on a full queue: the subscriber is behind
    byte_rate_waits: int  # times the reader waited for its byte rate's refill


@dataclass(slots=True)
class _Counters:
    queued_bytes: int = 0
    queued_events_peak: int = 0
    events_sent: int = 0
    records_sent: int = 0
    reader_parked: bool = False
    byte_rate_waits: int = 0


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
        claim: Claim,
    ) -> None:
        self._owner = owner
        self._target = target
        self.started_ms = started_ms  # monotonic
        self.claim = claim  # carried by every read, checked on the shard's leader
        self.released = False  # the release of its claim was sent (or is not to be)
        self._offset = start_offset
        # (next offset, ContinuationSequenceNumber) of the last event: see `_continuation`.
        self._continuation_at: tuple[Offset, str] | None = None
        self._queue: asyncio.Queue[tuple[Event, int] | _End] = asyncio.Queue(
            maxsize=owner.settings.queue_events_max
        )
        self._counters = _Counters()
        self._finished = False
        self._task: asyncio.Task[None] | None = None
        # Whether events carry their Records as a `ShardPage` (the doors that write pages from
        # the stored batch bytes: `KinesisService.call` sets it before the first event is
        # read) rather than record dicts.
        self.pages_for_doors = False

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
        """A newer subscription took over: end this one with ResourceInUseException at once
        (AWS: "the previous connection expires or fails"), even when its subscriber is not
        reading and its reader is parked on a full queue."""
        self._owner._forget(self)
        self.end(
            ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.subscription_taken_over(
                    consumer_arn=self.consumer_arn, shard_id=self.shard_id
                ),
            )
        )

    def end(self, error: ShoalError | None = None) -> None:
        """Ends the stream now: stops the reader, drops the events it read ahead (the
        subscriber's last ContinuationSequenceNumber still says where it stopped) and makes
        the next `__anext__` the end (normal when `error` is None). Sync, so it runs between
        the reader's steps: a cancelled `Queue.put` puts nothing."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, _End):
                self._counters.queued_bytes -= item[1]
        self._queue.put_nowait(_End(error))

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
            reader_parked=counters.reader_parked,
            byte_rate_waits=counters.byte_rate_waits,
        )

    # --- The reader task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._pump()
            # Free the leader's slot before the subscriber learns of the end, so its next
            # subscribe (on any node) is not refused by this subscription's claim.
            await self._owner.release(self)
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
                    await clock.sleep(min(deficit_ms, settings.read_wait_ms))
                    self._counters.byte_rate_waits += 1
                    continue
                bytes_max = max(1, min(bytes_max, int(available)))
            since_ms = settings.heartbeat_ms if last_event_ms is None else now_ms - last_event_ms
            due = since_ms >= settings.heartbeat_ms
            # Until the next heartbeat or the end, whichever is first (0 when one is due).
            wait_ms = min(settings.read_wait_ms, settings.heartbeat_ms - since_ms, ends_ms - now_ms)
            wait_ms = max(0, wait_ms)
            result = await owner.read(
                stream, shard, self._offset, wait_ms=wait_ms, bytes_max=bytes_max, claim=self.claim
            )
            records = result.records
            if not records and not due:
                if result.next_offset > self._offset:
                    self._offset = result.next_offset  # past control records only
                continue
            self._offset = Offset(max(self._offset, result.next_offset))
            size = records_size_bytes(records)
            if bucket is not None and size:
                bucket.overdraw(size, now_ms=clock.monotonic_ms())
            event = self._event(records, readable_end=readable_end(shard, result.readable_end))
            await self._put(event, records=len(records), size=size)
            last_event_ms = clock.monotonic_ms()

    def _refresh(self) -> None:
        """The newest image's view of the consumer, stream and shard; raises the error that
        ends the subscription when one of them is gone."""
        ctx = self._owner.ctx
        now_ms = ctx.now_ms()
        image = ctx.image()
        consumer = image.consumers.by_arn(self.consumer_arn, now_ms=now_ms)
        if consumer is None or consumer.status(now_ms=now_ms) is not ConsumerStatus.ACTIVE:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.consumer_was_deregistered(consumer_arn=self.consumer_arn),
            )
        stream = image.stream_by_uid(consumer.stream_uid)
        shard = stream.shard_by_index(self._target.shard.index) if stream is not None else None
        if stream is None or stream.is_gone(now_ms=now_ms) or shard is None:
            raise ctx.stream_not_found(self._target.stream.name)
        self._target.consumer, self._target.stream, self._target.shard = consumer, stream, shard

    async def _put(self, event: Event, *, records: int, size: int) -> None:
        """Queue one event, waiting while the subscriber is behind (the backpressure)."""
        counters = self._counters
        counters.reader_parked = self._queue.full()
        try:
            await self._queue.put((event, size))
        finally:
            counters.reader_parked = False
        counters.queued_bytes += size
        counters.queued_events_peak = max(counters.queued_events_peak, self._queue.qsize())
        counters.events_sent += 1
        counters.records_sent += records
        body = event["SubscribeToShardEvent"]
        self._owner.report(self._target, records, size, body["MillisBehindLatest"])

    def _event(self, records: RecordPage, *, readable_end: Offset) -> Event:
        """An event of `records`, as a `ShardPage` the doors write from the stored batch bytes
        (`pages_for_doors`) or as record dicts (`records_shape`) for everyone else."""
        shard = self._target.shard
        now_ms = self._owner.ctx.now_ms()
        behind = 0
        if records and self._offset < readable_end:
            behind = max(0, now_ms - records.last_arrival_ms())
        page = ShardPage(shard, records)
        return {
            "SubscribeToShardEvent": {
                "Records": page if self.pages_for_doors else page.shaped(),
                "ContinuationSequenceNumber": self._continuation(records),
                "MillisBehindLatest": behind,
            }
        }

    def _continuation(self, records: RecordPage) -> str:
        """The last delivered record's own number while the next offset is right after it,
        repeated by the heartbeats that follow; otherwise `continuation_number`. Either way
        the numbers never go down from one event to the next."""
        at = self._continuation_at
        if records and records.next_offset() == self._offset:
            last = Offset(self._offset - 1)
            number = sequence_number_for(
                self._target.shard, last, arrival_ms=records.last_arrival_ms()
            )
            at = (self._offset, number)
        elif at is None or at[0] != self._offset:
            at = (self._offset, continuation_number(self._target.shard, self._offset))
        self._continuation_at = at
        return at[1]

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
        # Releases of ended subscriptions' claims on their leaders, in flight.
        self._releasing: dict[tuple[str, ShardUid], asyncio.Task[None]] = {}
        self._closing = False
        if ctx.shards.meter is not None:  # kinesis_subscriptions, read at each scrape
            ctx.shards.meter.probe.watch_subscriptions(self.per_stream)

    @property
    def count(self) -> int:
        return len(self._open)

    def per_stream(self) -> dict[str, int]:
        """Open subscriptions by stream name. Called from the metrics server's thread: the
        copy is one C-level step under the GIL, so it never sees the dict mid-change."""
        counts: dict[str, int] = {}
        for subscription in list(self._open.values()):
            name = subscription._target.stream.name
            counts[name] = counts.get(name, 0) + 1
        return counts

    def statistics(self) -> list[SubscriptionStatistics]:
        return [subscription.statistics() for subscription in self._open.values()]

    async def subscribe(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """SubscribeToShard: `{"EventStream": Subscription}`, already reading; raises the
        Kinesis error of a bad request before any event (module docstring)."""
        ctx = self.ctx
        self._check_open()
        target = self._resolve(ctx.image(), request)
        position = request["StartingPosition"]
        check_position_members(
            position["Type"],
            position.get("SequenceNumber"),
            position.get("Timestamp"),
            number_field="StartingPosition.SequenceNumber",
            type_field="StartingPosition.Type",
        )
        self._check_local(target)  # the fast path, before asking the leader
        releasing = self._releasing.get(target.key)
        if releasing is not None:  # a subscription here just ended: its slot is being freed
            await asyncio.wait({releasing}, timeout=limits.read_wait_ms_max / 1000)
        claim = Claim(
            consumer_arn=target.consumer.arn,
            subscription_id=uuid.uuid4().hex,
            started_ms=ctx.now_ms(),
        )
        try:  # the leader checks the claim (module docstring)
            start_offset = await self._start_offset(target, position, claim)
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_IN_USE:
                self.report_refused(target)
            raise
        try:
            self._check_open()  # again: end_all() may have run while the leader was asked
            current = self._check_local(target)  # again: another may have opened meanwhile
            if len(self._open) >= self.settings.subscriptions_max and current is None:
                self.report_refused(target)
                raise ShoalError(
                    ErrorCode.LIMIT_EXCEEDED,
                    error_messages.node_subscriptions_full(count=len(self._open)),
                )
        except ShoalError:
            # Refused here after the leader granted the claim: free it (in the background).
            self._spawn_release(target, claim)
            raise
        now_ms = ctx.clock.monotonic_ms()
        if current is not None:
            current.supersede()
        subscription = Subscription(
            self, target, start_offset=start_offset, started_ms=now_ms, claim=claim
        )
        self._open[target.key] = subscription
        subscription.start()
        return {"EventStream": subscription}

    def end_all(self) -> int:
        """Before the node stops: end every open subscription normally, at once, and refuse
        new ones. Subscribers resubscribe (from their last ContinuationSequenceNumber, on
        another node) as after the 5-minute lifetime, and the front doors' graceful shutdown
        is not held by streams that would otherwise run for minutes. Returns how many ended."""
        self._closing = True
        ended = list(self._open.values())
        for subscription in ended:
            subscription.released = True  # stopping: the claims expire (module docstring)
            self._forget(subscription)
            subscription.end()
        return len(ended)

    def _check_local(self, target: _Target) -> Subscription | None:
        """This node's subscription of the same consumer and shard, old enough to be taken
        over (None: there is none); ResourceInUseException when it is younger."""
        current = self._open.get(target.key)
        if current is None:
            return None
        if self.ctx.clock.monotonic_ms() - current.started_ms < self.settings.takeover_ms:
            self.report_refused(target)
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.subscription_exists(
                    arn=target.consumer.arn, shard_id=target.shard.shard_id
                ),
            )
        return current

    def _check_open(self) -> None:
        """InternalFailure (retryable: the SDKs and the KCL try again, on another node behind a
        load balancer) once `end_all` ran."""
        if self._closing:
            raise ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.NODE_SHUTTING_DOWN)

    def _forget(self, subscription: Subscription) -> None:
        key = subscription._target.key
        if not subscription.released:
            subscription.released = True
            self._spawn_release(subscription._target, subscription.claim)
        if self._open.get(key) is subscription:
            del self._open[key]
            if self.ctx.shards.meter is not None:  # its MillisBehindLatest is stale now
                target = subscription._target
                self.ctx.shards.meter.probe.subscription_closed(
                    target.stream.name, target.shard.shard_id
                )

    def _spawn_release(self, target: _Target, claim: Claim) -> None:
        key = target.key
        task = asyncio.create_task(self._release_claim(target, claim), name="subscription-release")
        self._releasing[key] = task
        task.add_done_callback(lambda done: self._release_done(key, done))

    def _release_done(self, key: tuple[str, ShardUid], task: asyncio.Task[None]) -> None:
        if self._releasing.get(key) is task:
            del self._releasing[key]

    async def release(self, subscription: Subscription) -> None:
        """Frees the subscription's claim on the shard's leader (best effort, bounded: a
        release that fails leaves the claim to expire)."""
        subscription.released = True
        await self._release_claim(subscription._target, subscription.claim)

    async def _release_claim(self, target: _Target, claim: Claim) -> None:
        claim = dataclasses.replace(claim, release=True)
        try:
            async with asyncio.timeout(limits.read_wait_ms_max / 1000):
                await read_routed(
                    self.ctx,
                    target.stream,
                    target.shard,
                    ReadRequest(start_offset=Offset(0), records_max=0, bytes_max=1, claim=claim),
                )
        except Exception as error:  # best effort: the claim expires
            log.debug("subscription_release_failed", extra={"error": repr(error)})

    def _resolve(self, image: MetadataImage, request: Mapping[str, Any]) -> _Target:
        ctx = self.ctx
        now_ms = ctx.now_ms()
        arn = request["ConsumerARN"]
        consumer = image.consumers.by_arn(arn, now_ms=now_ms)
        if consumer is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.consumer_not_found(arn=arn)
            )
        status = consumer.status(now_ms=now_ms)
        if status is not ConsumerStatus.ACTIVE:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.consumer_not_active(arn=arn, status=status.value),
            )
        stream = image.stream_by_uid(consumer.stream_uid)
        if stream is not None and not ctx.in_callers_namespace(stream.name):
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.consumer_not_found(arn=arn)
            )
        if stream is None or stream.is_gone(now_ms=now_ms):
            raise ctx.stream_not_found(consumer.stream_name)
        stream = ctx.stream_for_data({"StreamName": stream.name})
        if stream.uid != consumer.stream_uid:
            raise ctx.stream_not_found(consumer.stream_name)
        shard = ctx.shard_for(stream, request["ShardId"])
        return _Target(consumer=consumer, stream=stream, shard=shard)

    async def _start_offset(
        self, target: _Target, position: Mapping[str, Any], claim: Claim
    ) -> Offset:
        """Where the first event starts, from the leader's positions (as GetShardIterator);
        the leader checks `claim` first."""
        kind = position["Type"]
        stream, shard = target.stream, target.shard
        number = position.get("SequenceNumber")
        offset: int | None = None
        if number is not None:
            offset = offset_for_sequence_number(
                number,
                shard=shard,
                stream_name=stream.display_name,
                account_id=namespace_of_arn(stream.arn)[1],
                operation="SubscribeToShard",
                field="StartingPosition.SequenceNumber",
            )
        timestamp = position.get("Timestamp")
        positions = await read_routed(
            self.ctx,
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(0),
                records_max=0,
                bytes_max=1,
                at_timestamp_ms=None if timestamp is None else ms_from_datetime(timestamp),
                claim=claim,
            ),
        )
        # Never before the log's start: a number of a record trimmed since reads from the first
        # one left.
        return Offset(max(position_offset(kind, offset, shard, positions), positions.log_start))

    async def read(
        self,
        stream: StreamMeta,
        shard: ShardMeta,
        offset: Offset,
        *,
        wait_ms: int,
        bytes_max: int,
        claim: Claim | None = None,
    ) -> ReadResult:
        """One (long-polled) read of committed records at `offset` for a subscription (at
        least one record, as GetRecords, even past `bytes_max`)."""
        now_ms = self.ctx.now_ms()
        return await read_routed(
            self.ctx,
            stream,
            shard,
            ReadRequest(
                start_offset=offset,
                records_max=self.settings.event_records_max,
                bytes_max=bytes_max,
                arrival_ms_min=now_ms - stream.retention_hours * HOUR_MS,
                throttle=ReadThrottle.NONE,  # fan-out has its own budget (module docstring)
                wait_ms=wait_ms,
                claim=claim,
            ),
        )

    def report_refused(self, target: _Target) -> None:
        """A subscribe refused by the one-per-consumer-and-shard or per-node rule: the
        SubscribeToShard.RateExceeded metric."""
        if self.ctx.shards.meter is not None:
            self.ctx.shards.meter.probe.subscribe_refused(target.stream.name)

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


def continuation_number(shard: ShardMeta, next_offset: Offset) -> str:
    """ContinuationSequenceNumber when the next record to deliver is at `next_offset`: the
    number of the last position delivered, so AFTER_SEQUENCE_NUMBER of it (what the KCL and
    `client/fanout.py` resubscribe with) resumes exactly at `next_offset`. It is at or above
    the number of the record there whenever it arrived (`bound_number_for`), so continuation
    numbers never go down from one event to the next.

    Offset 0 has no position before it, so an empty shard's events name offset 0 itself. That
    skips nothing: offset 0 of every shard is its first leader's epoch marker, a control record
    no reader receives (replication/replica.py, `epoch_marker`); the test
    `test_continuation_from_an_empty_shard_does_not_skip_its_first_record` holds it to that.
    """
    return bound_number_for(shard, max(next_offset - 1, 0))


def _at_shard_end(shard: ShardMeta, offset: Offset) -> bool:
    return (
        shard.state is ShardState.CLOSED
        and shard.end_offset is not None
        and offset >= shard.end_offset
    )
