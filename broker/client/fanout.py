"""Enhanced fan-out retrieval for the KCL-style worker: a `RecordSource` over SubscribeToShard.

`WorkerConfig(retrieval="fanout")` makes the worker read every shard through a subscription of
one registered stream consumer, named after the application as the KCL names it:

* `ConsumerRegistration` registers the consumer once per worker, idempotently: it describes it
  first, registers it only when absent (a concurrent registration by another worker is
  ResourceInUseException, answered by describing again) and waits (bounded) until it is
  ACTIVE. A consumer deregistered under a running worker is registered again.
* `FanOutRecordSource` subscribes from the lease's checkpoint (AT_SEQUENCE_NUMBER: the worker
  drops what it already processed), hands each event over as a `RecordBatch`, and when a
  subscription ends (its 5 minutes, or an error the service allows to retry) subscribes again
  AFTER_SEQUENCE_NUMBER of the last ContinuationSequenceNumber, so nothing is skipped or
  repeated. An event with ChildShards and no continuation number is the shard's end.

A second subscription of the same consumer and shard is refused while the first is open
(ResourceInUseException); that happens when a lease moves between workers before the old
owner closed its subscription, so the source retries it with backoff instead of failing.

Every `next_batch` returns within `event_wait_ms` (an empty batch when nothing arrived), so the
worker notices a lost lease or a shutdown promptly; `aclose()` ends the subscription. One
reader task per subscription moves events into a queue of `_QUEUE_EVENTS_MAX`, so a slow
processor holds back the stream instead of buffering it. Loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from broker import error_messages
from broker.client.grpc_client import AsyncEventStream, AsyncShoalClient
from broker.client.retrieval import RecordBatch, RecordSource, ShardInfo
from broker.client.worker_config import WorkerConfig
from broker.consumers.leases import Checkpoint
from broker.errors import ErrorCode, ShoalError

log = logging.getLogger(__name__)

_QUEUE_EVENTS_MAX = 2
_ACTIVE_WAIT_MS_MAX = 60_000  # a consumer is ACTIVE seconds after registration on AWS
_ACTIVE_POLL_MS = 100
EVENT_WAIT_MS_DEFAULT = 1_000


class ConsumerRegistration:
    """The worker's stream consumer: its ARN once registered and ACTIVE (module docstring)."""

    def __init__(self, kinesis: AsyncShoalClient, *, stream_name: str, consumer_name: str) -> None:
        self._kinesis = kinesis
        self._stream_name = stream_name
        self.consumer_name = consumer_name
        self._arn: str | None = None
        self._lock = asyncio.Lock()

    async def arn(self) -> str:
        """The consumer's ARN, registering it first if needed; waits until it is ACTIVE."""
        async with self._lock:
            if self._arn is None:
                self._arn = await self._register()
            return self._arn

    def forget(self, arn: str) -> None:
        """The consumer `arn` is gone (deregistered): the next `arn()` registers again."""
        if self._arn == arn:
            self._arn = None

    async def _register(self) -> str:
        summary = await self._kinesis.call(
            "DescribeStreamSummary", {"StreamName": self._stream_name}
        )
        stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        by_name = {"StreamARN": stream_arn, "ConsumerName": self.consumer_name}
        description = await self._describe(by_name)
        if description is None:
            try:
                registered = await self._kinesis.call("RegisterStreamConsumer", by_name)
                description = registered["Consumer"]
            except ShoalError as error:
                if error.code is not ErrorCode.RESOURCE_IN_USE:
                    raise
                description = await self._describe(by_name)  # another worker registered it
                if description is None:
                    raise
        arn: str = description["ConsumerARN"]
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + _ACTIVE_WAIT_MS_MAX / 1000
        while description["ConsumerStatus"] != "ACTIVE":  # bounded by give_up_at
            if loop.time() > give_up_at:
                raise ShoalError(
                    ErrorCode.RESOURCE_IN_USE, error_messages.consumer_not_active_in_time(arn=arn)
                )
            await asyncio.sleep(_ACTIVE_POLL_MS / 1000)
            found = await self._describe({"ConsumerARN": arn})
            if found is None:
                raise ShoalError(
                    ErrorCode.RESOURCE_NOT_FOUND, error_messages.consumer_disappeared(arn=arn)
                )
            description = found
        log.info("fanout_consumer_ready", extra={"consumer_arn": arn})
        return arn

    async def _describe(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            answer = await self._kinesis.call("DescribeStreamConsumer", request)
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                return None
            raise
        description: dict[str, Any] = answer["ConsumerDescription"]
        return description


class _Ended:
    """The reader's last queue item: the subscription ended normally (error None) or not."""

    def __init__(self, error: ShoalError | None = None) -> None:
        self.error = error


class FanOutRecordSource:
    """One shard's records through SubscribeToShard (module docstring). Implements the
    worker's `RecordSource`; `idle_wait_ms` is 0 because the service pushes."""

    idle_wait_ms = 0

    def __init__(
        self,
        kinesis: AsyncShoalClient,
        *,
        consumer: ConsumerRegistration,
        shard_id: str,
        config: WorkerConfig,
        event_wait_ms: int = EVENT_WAIT_MS_DEFAULT,
    ) -> None:
        assert event_wait_ms > 0
        self._kinesis = kinesis
        self._consumer = consumer
        self._shard_id = shard_id
        self._config = config
        self._event_wait_ms = event_wait_ms
        self._position: dict[str, Any] | None = None
        self._continuation: str | None = None
        self._events: AsyncEventStream | None = None
        self._queue: asyncio.Queue[dict[str, Any] | _Ended] = asyncio.Queue(_QUEUE_EVENTS_MAX)
        self._reader: asyncio.Task[None] | None = None
        self._retry_backoff_ms = config.retry_backoff_ms_min
        self._retry_at = 0.0  # loop time before which no new subscription is tried
        self._arn: str | None = None
        self._subscriptions = 0

    @property
    def subscriptions(self) -> int:
        """How many times this source subscribed (1 + every resubscription)."""
        return self._subscriptions

    async def start(self, position: Checkpoint) -> None:
        if not position.is_sentinel:
            self._position = {
                "Type": "AT_SEQUENCE_NUMBER",
                "SequenceNumber": position.sequence_number,
            }
        elif position.sequence_number == "AT_TIMESTAMP":
            assert self._config.initial_timestamp is not None
            self._position = {"Type": "AT_TIMESTAMP", "Timestamp": self._config.initial_timestamp}
        else:
            assert not position.is_shard_end, "a finished shard is never read"
            self._position = {"Type": position.sequence_number}

    async def next_batch(self) -> RecordBatch:
        assert self._position is not None, "start first"
        loop = asyncio.get_running_loop()
        if self._reader is None:
            remaining_s = self._retry_at - loop.time()
            if remaining_s > 0:  # backing off after a refused subscription
                await asyncio.sleep(min(remaining_s, self._event_wait_ms / 1000))
                return _empty()
            await self._subscribe()
        try:
            async with asyncio.timeout(self._event_wait_ms / 1000):
                item = await self._queue.get()
        except TimeoutError:
            return _empty()
        if isinstance(item, _Ended):
            arn = self._arn
            await self._close()
            if item.error is not None:
                self._settle(item.error, arn)
            return _empty()
        self._retry_backoff_ms = self._config.retry_backoff_ms_min
        return self._batch(item["SubscribeToShardEvent"])

    async def aclose(self) -> None:
        await self._close()

    def _batch(self, event: Mapping[str, Any]) -> RecordBatch:
        continuation = event.get("ContinuationSequenceNumber")
        children: tuple[ShardInfo, ...] | None = None
        if continuation is None:
            children = tuple(_child_info(c) for c in event.get("ChildShards", ()))
        else:
            self._continuation = continuation
        return RecordBatch(
            records=event.get("Records", ()),
            millis_behind_latest=event.get("MillisBehindLatest", 0),
            child_shards=children,
        )

    async def _subscribe(self) -> None:
        """Opens a subscription, from the last continuation number once there is one. Its
        errors (refusals included) arrive through the reader, as the stream's end."""
        position = self._position
        assert position is not None
        if self._continuation is not None:
            position = {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self._continuation}
        self._arn = await self._consumer.arn()
        events = self._kinesis.subscribe_to_shard(
            {"ConsumerARN": self._arn, "ShardId": self._shard_id, "StartingPosition": position}
        )
        self._events = events
        self._subscriptions += 1
        self._reader = asyncio.create_task(self._read(events), name=f"fanout-{self._shard_id}")

    async def _read(self, events: AsyncEventStream) -> None:
        """Moves events into the queue, waiting while it is full (the backpressure)."""
        try:
            async for event in events:
                await self._queue.put(event)
        except ShoalError as error:
            await self._queue.put(_Ended(error))
            return
        except Exception:
            # Anything else would end this task unseen and leave `next_batch` returning empty
            # batches forever: surface it as a retryable failure (resubscribe with backoff).
            log.exception("fanout_reader_failed", extra={"shard_id": self._shard_id})
            await self._queue.put(_Ended(ShoalError(ErrorCode.INTERNAL_FAILURE)))
            return
        await self._queue.put(_Ended())

    def _settle(self, error: ShoalError, arn: str | None) -> None:
        """After a failed subscription: back off and subscribe again for what that can cure
        (another subscription still open, the consumer gone and to be registered again, a
        retryable failure); raise the rest (the worker's own retry policy applies then)."""
        code = error.code
        if code is ErrorCode.RESOURCE_NOT_FOUND and arn is not None:
            self._consumer.forget(arn)
        curable = code in (ErrorCode.RESOURCE_IN_USE, ErrorCode.RESOURCE_NOT_FOUND)
        if not curable and not code.spec.retryable:
            raise error
        log.info(
            "fanout_resubscribe", extra={"shard_id": self._shard_id, "error": code.kinesis_name}
        )
        jitter = self._config.rng.uniform(0.5, 1.0)
        self._retry_at = asyncio.get_running_loop().time() + self._retry_backoff_ms * jitter / 1000
        self._retry_backoff_ms = min(2 * self._retry_backoff_ms, self._config.retry_backoff_ms_max)

    async def _close(self) -> None:
        reader, events = self._reader, self._events
        self._reader = self._events = None
        if events is not None:
            await events.aclose()
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        while not self._queue.empty():
            self._queue.get_nowait()


def _empty() -> RecordBatch:
    return RecordBatch(records=(), millis_behind_latest=0)


def _child_info(shape: Mapping[str, Any]) -> ShardInfo:
    hash_range = shape["HashKeyRange"]
    return ShardInfo(
        shard_id=shape["ShardId"],
        parent_shard_ids=tuple(shape.get("ParentShards", ())),
        hash_range=(int(hash_range["StartingHashKey"]), int(hash_range["EndingHashKey"])),
    )


class FanOutRetrieval:
    """The worker's `record_source_factory` for fan-out: one registration, a source per shard."""

    def __init__(
        self,
        kinesis: AsyncShoalClient,
        *,
        stream_name: str,
        consumer_name: str,
        config: WorkerConfig,
    ) -> None:
        self._kinesis = kinesis
        self._config = config
        self.registration = ConsumerRegistration(
            kinesis, stream_name=stream_name, consumer_name=consumer_name
        )

    def __call__(self, shard: ShardInfo) -> RecordSource:
        return FanOutRecordSource(
            self._kinesis, consumer=self.registration, shard_id=shard.shard_id, config=self._config
        )
