"""The node's audit trail: calls become CloudTrail events in a replicated internal stream.

Every call through an `AuthorizedService` (both doors, every service), every IamService call
and every refused authentication is told to `AuditTrail` (it is the enforcer's
`CallObserver`), whether or not access control is on (with it off, callers are still
identified by their access key and address). Recorded: every control-plane call (failed ones
with their error), every refused call (access denied, failed authentication), and data-plane
calls (CloudTrail's data events: PutRecord(s), GetRecords, ...) when `Config.audit_data_plane`
is on. Other failures of data-plane calls (throttling, a missing stream) are not events, as
CloudTrail logs data events only when asked: a throttled producer must not flood the trail.

Durability: events are queued (bounded by `QUEUE_EVENTS_MAX`; beyond it the oldest is
dropped, counted and logged, so a stuck trail never stops the service) and written by `run`
in batches of up to 500 with PutRecords to the internal stream `__shoal.audit.trail`: the
shard log replicates them like any record, so an event the trail acknowledged survives the
loss of a minority of nodes. The window between a call and its event's write is the batch
interval (`FLUSH_INTERVAL_MS`); an event still queued when the node is killed is lost (as
CloudTrail's delivery is asynchronous too). The stream is created by the first node that
writes, with the retention `Config.audit_retention_hours` (7 days by default; set again when
the setting changes), which bounds the trail's size; it is hidden from the public doors
(internal name), counts against no account limit, and is read back by `lookup` for
`shoal audit`.

Lifecycle: one per node (node.py); `run` is a background task of the node's TaskGroup.
Loop-bound.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from broker import error_messages
from broker.audit.events import cloudtrail_event, is_data_event
from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.streams.internal_names import AUDIT_TRAIL_STREAM

log = logging.getLogger(__name__)

STREAM_NAME = AUDIT_TRAIL_STREAM
QUEUE_EVENTS_MAX = 50_000
BATCH_EVENTS_MAX = 500  # PutRecords' limit
# Errors that are refusals of the caller: a data-plane call refused is always an event.
REFUSALS = frozenset(
    {
        ErrorCode.ACCESS_DENIED,
        ErrorCode.UNRECOGNIZED_CLIENT,
        ErrorCode.INVALID_SIGNATURE,
        ErrorCode.MISSING_AUTHENTICATION_TOKEN,
        ErrorCode.INCOMPLETE_SIGNATURE,
    }
)
FLUSH_INTERVAL_MS = 200
LOOKUP_RECORDS_READ_MAX = 200_000  # one lookup reads at most this many events
RETRY_BACKOFF_MS_MAX = 5_000


class Kinesis(Protocol):
    async def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    start_ms: int = 0
    end_ms: int | None = None
    principal_arn: str = ""
    event_name: str = ""
    account_id: str = ""
    only_errors: bool = False
    limit: int = 1_000

    def matches(self, event: Mapping[str, Any]) -> bool:
        identity = event.get("userIdentity", {})
        if self.principal_arn and identity.get("arn") != self.principal_arn:
            return False
        if self.account_id and event.get("recipientAccountId") != self.account_id:
            return False
        if self.event_name and event.get("eventName") != self.event_name:
            return False
        return not self.only_errors or "errorCode" in event


class AuditTrail:
    def __init__(
        self,
        *,
        kinesis: Kinesis,
        clock: Clock,
        data_plane: bool,
        account_id: str,
        retention_hours: int = 168,
    ) -> None:
        self.account_id = account_id  # the node's: calls refused before identification
        self._retention_hours = retention_hours
        self._kinesis = kinesis
        self._clock = clock
        self._data_plane = data_plane
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._ready = False
        self.dropped = 0
        self.written = 0

    # --- Recording (CallObserver) -----------------------------------------------------------

    def call_finished(
        self,
        *,
        signing_name: str,
        operation: str,
        request: Mapping[str, Any],
        caller: Caller,
        resource: str,
        error: ShoalError | None,
    ) -> None:
        if (
            not self._data_plane
            and is_data_event(signing_name, operation)
            and (error is None or error.code not in REFUSALS)
        ):
            return
        self.record(
            cloudtrail_event(
                signing_name=signing_name,
                operation=operation,
                request=request,
                principal_arn=caller.principal_arn,
                account_id=caller.account_id,
                access_key_id=caller.access_key_id,
                source_address=caller.source_address,
                region=caller.region,
                resource=resource,
                error_code=None if error is None else error.code.kinesis_name,
                error_message=None if error is None else error.message,
                now_ms=self._clock.wall_ms(),
                event_id=str(uuid.uuid4()),
            )
        )

    def record(self, event: dict[str, Any]) -> None:
        if len(self._queue) >= QUEUE_EVENTS_MAX:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped % 1_000 == 1:
                log.warning("audit_events_dropped", extra={"dropped": self.dropped})
        self._queue.append(event)
        self._drained.clear()
        self._wake.set()

    # --- Writing -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Writes queued events until cancelled (infinite on purpose: the node's lifetime)."""
        backoff_ms = FLUSH_INTERVAL_MS
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL_MS / 1000)  # gather a batch
            try:
                while self._queue:
                    await self._flush()
                backoff_ms = FLUSH_INTERVAL_MS
                self._wake.clear()
                self._drained.set()
            except ShoalError as error:
                log.warning("audit_write_failed", extra={"error": error.code.kinesis_name})
                await asyncio.sleep(backoff_ms / 1000)
                backoff_ms = min(backoff_ms * 2, RETRY_BACKOFF_MS_MAX)

    async def wait_written(self, *, timeout_s: float) -> None:
        """Returns once every event recorded so far is written (tests, `shoal audit`)."""
        async with asyncio.timeout(timeout_s):
            await self._drained.wait()

    async def _ensure_stream(self) -> None:
        if self._ready:
            return
        try:
            await self._kinesis.call("CreateStream", {"StreamName": STREAM_NAME, "ShardCount": 1})
        except ShoalError as error:
            if error.code is not ErrorCode.RESOURCE_IN_USE:
                raise
        summary = await self._kinesis.call("DescribeStreamSummary", {"StreamName": STREAM_NAME})
        description = summary["StreamDescriptionSummary"]
        if description["StreamStatus"] != "ACTIVE":
            raise ShoalError(ErrorCode.RESOURCE_IN_USE, error_messages.AUDIT_STREAM_NOT_ACTIVE)
        current = description["RetentionPeriodHours"]
        if current != self._retention_hours:
            change = "Increase" if current < self._retention_hours else "Decrease"
            await self._kinesis.call(
                f"{change}StreamRetentionPeriod",
                {"StreamName": STREAM_NAME, "RetentionPeriodHours": self._retention_hours},
            )
        self._ready = True

    async def _flush(self) -> None:
        await self._ensure_stream()
        batch = [self._queue[i] for i in range(min(BATCH_EVENTS_MAX, len(self._queue)))]
        records = [
            {"Data": orjson.dumps(event), "PartitionKey": event["eventID"]} for event in batch
        ]
        answer = await self._kinesis.call(
            "PutRecords", {"StreamName": STREAM_NAME, "Records": records}
        )
        failed = [batch[i] for i, result in enumerate(answer["Records"]) if result.get("ErrorCode")]
        for _ in batch:
            self._queue.popleft()
        self.written += len(batch) - len(failed)
        self._queue.extendleft(reversed(failed))  # retried first, in their order
        if failed:
            raise ShoalError(ErrorCode.THROUGHPUT_EXCEEDED, error_messages.AUDIT_EVENTS_NOT_WRITTEN)

    # --- Reading -----------------------------------------------------------------------------

    async def lookup(self, wanted: EventFilter) -> list[dict[str, Any]]:
        """Events matching `wanted`, oldest first, at most `wanted.limit`."""
        try:
            shards = await self._kinesis.call("ListShards", {"StreamName": STREAM_NAME})
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                return []  # nothing was ever audited in this cluster
            raise
        found: list[dict[str, Any]] = []
        read = 0
        for shard in shards["Shards"]:
            position: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
            if wanted.start_ms:
                position = {
                    "ShardIteratorType": "AT_TIMESTAMP",
                    "Timestamp": wanted.start_ms / 1000,
                }
            iterator = (
                await self._kinesis.call(
                    "GetShardIterator",
                    {"StreamName": STREAM_NAME, "ShardId": shard["ShardId"], **position},
                )
            )["ShardIterator"]
            while iterator and read < LOOKUP_RECORDS_READ_MAX:
                page = await self._kinesis.call(
                    "GetRecords", {"ShardIterator": iterator, "Limit": 10_000}
                )
                for record in page["Records"]:
                    read += 1
                    data = record["Data"]
                    event = orjson.loads(base64.b64decode(data) if isinstance(data, str) else data)
                    if wanted.matches(event) and _before(event, wanted.end_ms):
                        found.append(event)
                if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                    break
                iterator = page.get("NextShardIterator")
        found.sort(key=lambda event: str(event["eventTime"]))
        return found[-wanted.limit :] if wanted.limit else found


def _before(event: Mapping[str, Any], end_ms: int | None) -> bool:
    if end_ms is None:
        return True
    when = datetime.strptime(str(event["eventTime"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return when.timestamp() * 1000 <= end_ms
