"""The queue operations behind both doors (CreateQueue ... RestoreDeadLetterQueueRecords).

A receive reads from the stream on whichever node serves each shard (`read_routed`, as
GetRecords does, without counting against the shard's GetRecords budget: a queue is a
registered consumer with its own throughput on AWS) and then proposes one `ClaimQueueRecords`
command naming exactly what it read. Only the records that command hands out are returned, so
two nodes serving receives on one queue never deliver the same record at once, and a record is
delivered only after its in-flight state is durable in the metadata quorum: a node that dies
after a receive leaves the record in flight until its visibility timeout, then it is delivered
again; an acknowledged record is gone from the state and never delivered again.

A receive that finds nothing waits (WaitTimeSeconds, default 9) and looks again every
`limits.queue_poll_interval_ms`.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker import arns, error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.log.records import StoredRecord
from broker.meta import commands
from broker.meta.image import ShardMeta, StreamMeta
from broker.queues import state
from broker.queues.state import (
    CursorAdvance,
    Delivered,
    QueueMeta,
    Redelivery,
    SettleEntry,
    SettleFailure,
    Settlement,
    StartingPosition,
    TakenRecord,
)
from broker.service.context import ServiceContext
from broker.service.records import read_routed, records_shape
from broker.service.shards import ReadRequest, ReadThrottle
from broker.service.tokens import decode_token, encode_token
from broker.streams import tag_rules
from broker.timestamps import datetime_from_ms, ms_from_datetime
from broker.types import Offset, StreamUid

Request = Mapping[str, Any]
Response = dict[str, Any]

_HOUR_MS = 3_600_000


class QueueOperations:
    """The twelve queue operations of one node's KinesisService. Loop only."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def handlers(self) -> dict[str, Any]:
        return {
            "CreateQueue": self.create_queue,
            "DescribeQueue": self.describe_queue,
            "ListQueues": self.list_queues,
            "UpdateQueue": self.update_queue,
            "DeleteQueue": self.delete_queue,
            "ReceiveQueueRecords": lambda r: self.receive(r, dead_letter=False),
            "ReceiveDeadLetterQueueRecords": lambda r: self.receive(r, dead_letter=True),
            "AcknowledgeQueueRecords": lambda r: self.settle(r, Settlement.ACKNOWLEDGE),
            "UpdateQueueRecordsVisibility": lambda r: self.settle(r, Settlement.CHANGE_VISIBILITY),
            "AcknowledgeDeadLetterQueueRecords": lambda r: self.settle(
                r, Settlement.ACKNOWLEDGE_DEAD_LETTER
            ),
            "UpdateDeadLetterQueueRecordsVisibility": lambda r: self.settle(
                r, Settlement.CHANGE_DEAD_LETTER_VISIBILITY
            ),
            "RestoreDeadLetterQueueRecords": lambda r: self.settle(
                r, Settlement.RESTORE_DEAD_LETTER
            ),
        }

    # --- Definitions ----------------------------------------------------------------------

    def _queue(self, arn: str) -> QueueMeta:
        queue = self._ctx.image().queues.by_arn(arn)
        namespace = self._ctx.namespace()
        mine = queue is not None and (queue.account_id, queue.region) == (
            namespace.account_id,
            namespace.region,
        )
        if queue is None or not mine:  # another namespace's queue is not found, as on AWS
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.queue_not_found(arn))
        return queue

    async def create_queue(self, request: Request) -> Response:
        ctx = self._ctx
        configurations = request["StreamConfigurationList"]
        if len(configurations) != 1:
            raise ShoalError(ErrorCode.VALIDATION, error_messages.QUEUE_ONE_STREAM)
        (configuration,) = configurations
        start = configuration.get("StartingPosition") or {"Type": "LATEST"}
        position = StartingPosition(start["Type"])
        timestamp = start.get("Timestamp")
        if position is StartingPosition.AT_TIMESTAMP and timestamp is None:
            raise ShoalError(ErrorCode.VALIDATION, error_messages.QUEUE_TIMESTAMP_REQUIRED)
        if position is not StartingPosition.AT_TIMESTAMP and timestamp is not None:
            raise ShoalError(ErrorCode.VALIDATION, error_messages.QUEUE_TIMESTAMP_NOT_ALLOWED)
        stream = ctx.stream_for({"StreamARN": configuration["StreamARN"]})
        attributes = _attributes(request.get("QueueAttributes") or {})
        now_ms = ctx.now_ms()
        start_ms = {
            StartingPosition.TRIM_HORIZON: None,
            StartingPosition.LATEST: now_ms,
            StartingPosition.AT_TIMESTAMP: None
            if timestamp is None
            else ms_from_datetime(timestamp),
        }[position]
        tags: dict[str, str] = request.get("Tags") or {}
        tag_rules.check_tag_characters(
            [*tags, *tags.values()],
            verb=tag_rules.ADD,
            stream_name=stream.name,
            account_id=ctx.namespace().account_id,
        )
        if len(tags) > limits.tags_per_stream_max:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.queue_tags_at_creation(
                    tags_per_stream_max=limits.tags_per_stream_max
                ),
            )
        queue_id = uuid.uuid4().hex
        config = ctx.config
        namespace = ctx.namespace()  # the caller's account and region
        result = await ctx.metadata.propose(
            commands.CreateQueue(
                now_ms=now_ms,
                arn=arns.regional(
                    "kinesis", namespace.region, namespace.account_id, f"queue/{queue_id}"
                ),
                queue_id=queue_id,
                name=request["QueueName"],
                account_id=namespace.account_id,
                region=namespace.region,
                stream_uid=stream.uid,
                starting_position=position,
                start_timestamp_ms=start_ms,
                visibility_timeout_s=attributes.visibility_timeout_s
                if attributes.visibility_timeout_s is not None
                else state.DEFAULT_VISIBILITY_TIMEOUT_S,
                dead_letter_enabled=attributes.dead_letter_enabled
                if attributes.dead_letter_enabled is not None
                else True,
                max_receive_count=attributes.max_receive_count or state.DEFAULT_MAX_RECEIVE_COUNT,
                tags=tuple(sorted(tags.items())),
                consumers_per_stream_max=config.consumers_per_stream_max,
            )
        )
        assert isinstance(result, QueueMeta)
        # CreateQueue answers CREATING as AWS does; the queue is ACTIVE once the command is
        # applied, which it is by now.
        return {"QueueDescription": queue_description(result, status="CREATING")}

    async def describe_queue(self, request: Request) -> Response:
        return {"QueueDescription": queue_description(self._queue(request["QueueARN"]))}

    async def list_queues(self, request: Request) -> Response:
        ctx = self._ctx
        now_ms = ctx.now_ms()
        image = ctx.image()
        namespace = ctx.namespace()
        queues = image.queues.listed(namespace.account_id, namespace.region)
        filters = request.get("StreamFilter")
        if filters is not None:
            wanted = [_filter_matches(f) for f in filters]
            queues = [q for q in queues if any(match(q) for match in wanted)]
        token = request.get("NextToken")
        if token is not None:
            payload = decode_token(token, secret=image.iterator_secret, now_ms=now_ms, expires=True)
            after = payload.get("after_queue")
            if not isinstance(after, str):
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT, error_messages.invalid_next_token(token)
                )
            queues = [q for q in queues if q.arn > after]
        limit = min(
            request.get("MaxResults", limits.list_queues_page_max), limits.list_queues_page_max
        )
        page = queues[:limit]
        response: Response = {"QueueSummaries": [_queue_summary(q) for q in page]}
        if len(queues) > limit:
            response["NextToken"] = encode_token(
                {"after_queue": page[-1].arn}, issued_ms=now_ms, secret=image.iterator_secret
            )
        return response

    async def update_queue(self, request: Request) -> Response:
        ctx = self._ctx
        arn: str = request["QueueARN"]
        self._queue(arn)
        attributes = _attributes(request["QueueAttributes"])
        result = await ctx.metadata.propose(
            commands.UpdateQueue(
                now_ms=ctx.now_ms(),
                arn=arn,
                visibility_timeout_s=attributes.visibility_timeout_s,
                dead_letter_enabled=attributes.dead_letter_enabled,
                max_receive_count=attributes.max_receive_count,
            )
        )
        assert isinstance(result, QueueMeta)
        return {"QueueDescription": queue_description(result, status="UPDATING")}

    async def delete_queue(self, request: Request) -> Response:
        ctx = self._ctx
        arn: str = request["QueueARN"]
        self._queue(arn)
        await ctx.metadata.propose(commands.DeleteQueue(now_ms=ctx.now_ms(), arn=arn))
        return {}

    # --- Tags (TagResource, UntagResource, ListTagsForResource on a queue ARN) ---------------

    async def tag_queue(self, request: Request) -> Response:
        queue = self._queue(request["ResourceARN"])
        tags: dict[str, str] = request["Tags"]
        self._check_tags(queue, [*tags, *tags.values()], verb=tag_rules.ADD)
        await self._ctx.metadata.propose(
            commands.ChangeQueueTags(
                now_ms=self._ctx.now_ms(),
                arn=queue.arn,
                added=tuple(sorted(tags.items())),
                tags_max=limits.tags_per_stream_max,
            )
        )
        return {}

    async def untag_queue(self, request: Request) -> Response:
        queue = self._queue(request["ResourceARN"])
        keys: list[str] = request["TagKeys"]
        self._check_tags(queue, keys, verb=tag_rules.REMOVE)
        await self._ctx.metadata.propose(
            commands.ChangeQueueTags(now_ms=self._ctx.now_ms(), arn=queue.arn, removed=tuple(keys))
        )
        return {}

    async def list_queue_tags(self, request: Request) -> Response:
        queue = self._queue(request["ResourceARN"])
        return {"Tags": [{"Key": key, "Value": value} for key, value in queue.tags]}

    def _check_tags(self, queue: QueueMeta, texts: list[str], *, verb: str) -> None:
        tag_rules.check_tag_characters(
            texts, verb=verb, stream_name=queue.stream_name, account_id=queue.account_id
        )

    # --- Receiving ------------------------------------------------------------------------

    async def receive(self, request: Request, *, dead_letter: bool) -> Response:
        queue = self._queue(request["QueueARN"])
        limit: int = request.get("Limit", limits.queue_receive_limit_max)
        wait_s: int = request.get("WaitTimeSeconds", limits.queue_receive_wait_s_default)
        visibility_s = request.get("VisibilityTimeoutSeconds")
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + wait_s
        while True:
            queue = self._queue(queue.arn)  # deleted meanwhile: ResourceNotFound
            visibility = queue.visibility_timeout_s if visibility_s is None else visibility_s
            records = await self._receive_once(
                queue, dead_letter=dead_letter, limit=limit, visibility_ms=visibility * 1000
            )
            remaining_s = give_up_at - loop.time()
            if records or remaining_s <= 0:
                return {"QueueRecords": records}
            await asyncio.sleep(min(remaining_s, limits.queue_poll_interval_ms / 1000))

    async def _receive_once(
        self, queue: QueueMeta, *, dead_letter: bool, limit: int, visibility_ms: int
    ) -> list[dict[str, Any]]:
        ctx = self._ctx
        now_ms = ctx.now_ms()
        stream = ctx.image().stream_by_uid(StreamUid(queue.stream_uid))
        if stream is None or stream.is_gone(now_ms=now_ms):
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.queue_not_found(queue.arn)
            )
        read: dict[str, _ReadRecord] = {}
        redeliveries: list[Redelivery] = []
        dropped: list[str] = []
        for held in queue.candidates(dead_letter=dead_letter, now_ms=now_ms, limit=limit):
            record_id = held.sequence_number
            redeliveries.append(Redelivery(record_id=record_id, token=held.token))
            if not dead_letter and queue.is_dead_letter(held, now_ms=now_ms):
                continue  # the claim moves it to the dead-letter path; no data needed
            found = await self._read_one(stream, held.shard_id, held.offset, now_ms=now_ms)
            if found is None:
                dropped.append(record_id)
                redeliveries.pop()
            else:
                read[record_id] = found
        advances: list[CursorAdvance] = []
        room = min(limit - len(read), queue.room())
        if not dead_letter and room > 0:
            advances = await self._take_new(queue, stream, room, read, now_ms=now_ms)
        if not redeliveries and not dropped and not advances:
            return []
        result = await ctx.metadata.propose(
            commands.ClaimQueueRecords(
                now_ms=now_ms,
                arn=queue.arn,
                dead_letter=dead_letter,
                advances=tuple(advances),
                redeliveries=tuple(redeliveries),
                dropped=tuple(dropped),
                token_seed=secrets.token_hex(6),
                visibility_ms=visibility_ms,
                limit=limit,
            )
        )
        assert isinstance(result, list)
        return [_queue_record(d, read[d.record_id]) for d in result if d.record_id in read]

    async def _read_one(
        self, stream: StreamMeta, shard_id: str, offset: int, *, now_ms: int
    ) -> _ReadRecord | None:
        """The record at `offset`, or None when the stream no longer has it."""
        shard = _shard(stream, shard_id)
        if shard is None:
            return None
        result = await read_routed(
            self._ctx,
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(offset),
                records_max=1,
                bytes_max=limits.get_records_bytes_max,
                arrival_ms_min=now_ms - stream.retention_hours * _HOUR_MS,
                throttle=ReadThrottle.NONE,
            ),
        )
        if not result.records or result.records[0].offset != offset:
            return None
        return _ReadRecord.of(shard, result.records[0])

    async def _take_new(
        self,
        queue: QueueMeta,
        stream: StreamMeta,
        room: int,
        read: dict[str, _ReadRecord],
        *,
        now_ms: int,
    ) -> list[CursorAdvance]:
        """Reads up to `room` records the queue has not taken yet, shard by shard (starting
        at a different shard each time, so one busy shard does not starve the others)."""
        advances: list[CursorAdvance] = []
        shards = [
            s
            for s in stream.shards
            if not s.is_expired(now_ms=now_ms, retention_hours=stream.retention_hours)
        ]
        if not shards:
            return advances
        first = secrets.randbelow(len(shards))
        for shard in shards[first:] + shards[:first]:
            if room <= 0:
                break
            expected = queue.cursors.get(shard.shard_id)
            start = expected
            if start is None:
                start = await self._starting_offset(queue, stream, shard, now_ms=now_ms)
            result = await read_routed(
                self._ctx,
                stream,
                shard,
                ReadRequest(
                    start_offset=Offset(start),
                    records_max=room,
                    bytes_max=limits.get_records_bytes_max,
                    arrival_ms_min=now_ms - stream.retention_hours * _HOUR_MS,
                    throttle=ReadThrottle.NONE,
                ),
            )
            taken = result.records[:room]
            through = taken[-1].offset + 1 if taken else max(start, int(result.next_offset))
            if expected is not None and through == expected:
                continue
            shaped = [_ReadRecord.of(shard, record) for record in taken]
            for record in shaped:
                read[record.sequence_number] = record
            advances.append(
                CursorAdvance(
                    shard_id=shard.shard_id,
                    expected=expected,
                    through=through,
                    records=tuple(
                        TakenRecord(
                            record_id=r.sequence_number,
                            sequence_number=r.sequence_number,
                            offset=r.offset,
                        )
                        for r in shaped
                    ),
                )
            )
            room -= len(taken)
        return advances

    async def _starting_offset(
        self, queue: QueueMeta, stream: StreamMeta, shard: ShardMeta, *, now_ms: int
    ) -> int:
        """Where a shard the queue has not read yet begins: its oldest retained record
        (TRIM_HORIZON), or the first that arrived at or after the start time."""
        if queue.start_timestamp_ms is None:
            return 0  # the read skips what is past retention
        result = await read_routed(
            self._ctx,
            stream,
            shard,
            ReadRequest(
                start_offset=Offset(0),
                records_max=0,
                bytes_max=1,
                at_timestamp_ms=queue.start_timestamp_ms,
                throttle=ReadThrottle.NONE,
            ),
        )
        found = result.timestamp_offset
        return int(result.readable_end if found is None else found)

    # --- Acknowledging, visibility, restoring -------------------------------------------------

    async def settle(self, request: Request, settlement: Settlement) -> Response:
        ctx = self._ctx
        arn: str = request["QueueARN"]
        self._queue(arn)
        entries = tuple(
            SettleEntry(
                receipt_handle=entry["ReceiptHandle"],
                visibility_timeout_s=entry.get("VisibilityTimeoutSeconds", 0),
            )
            for entry in request["Entries"]
        )
        result = await ctx.metadata.propose(
            commands.SettleQueueRecords(
                now_ms=ctx.now_ms(), arn=arn, settlement=settlement, entries=entries
            )
        )
        assert isinstance(result, tuple)
        succeeded: list[str] = result[0]
        failed: list[SettleFailure] = result[1]
        return {
            "Successful": [{"ReceiptHandle": handle} for handle in succeeded],
            "Failed": [_failure_shape(failure) for failure in failed],
        }


# --- Shapes and small helpers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ReadRecord:
    offset: int
    sequence_number: str
    partition_key: str
    data: bytes
    arrival_ms: int

    @staticmethod
    def of(shard: ShardMeta, record: StoredRecord) -> _ReadRecord:
        (shaped,) = records_shape(shard, [record])
        return _ReadRecord(
            offset=int(record.offset),
            sequence_number=shaped["SequenceNumber"],
            partition_key=record.partition_key,
            data=record.data,
            arrival_ms=record.arrival_ms,
        )


@dataclass(frozen=True, slots=True)
class _Attributes:
    visibility_timeout_s: int | None
    dead_letter_enabled: bool | None
    max_receive_count: int | None


def _attributes(attributes: Mapping[str, Any]) -> _Attributes:
    """QueueAttributes as given (None: not given), with the dead-letter rules AWS states."""
    dead_letter = attributes.get("DeadLetterConfiguration")
    enabled: bool | None = None
    max_count: int | None = None
    if dead_letter is not None:
        enabled = dead_letter["TargetType"] == "BUILT_IN"
        max_count = dead_letter.get("MaxReceiveCount")
        if enabled and max_count is None:
            raise ShoalError(ErrorCode.VALIDATION, error_messages.QUEUE_MAX_RECEIVE_COUNT_REQUIRED)
        if not enabled and max_count is not None:
            raise ShoalError(
                ErrorCode.VALIDATION, error_messages.QUEUE_MAX_RECEIVE_COUNT_NOT_ALLOWED
            )
    return _Attributes(
        visibility_timeout_s=attributes.get("VisibilityTimeoutSeconds"),
        dead_letter_enabled=enabled,
        max_receive_count=max_count,
    )


def _shard(stream: StreamMeta, shard_id: str) -> ShardMeta | None:
    for shard in stream.shards:
        if shard.shard_id == shard_id:
            return shard
    return None


def _filter_matches(stream_filter: Mapping[str, Any]) -> Any:
    arn: str = stream_filter["StreamARN"]
    created = stream_filter.get("StreamCreationTimestamp")
    created_s = None if created is None else ms_from_datetime(created) // 1000

    def matches(queue: QueueMeta) -> bool:
        if queue.stream_arn != arn:
            return False
        return created_s is None or queue.stream_created_ms // 1000 == created_s

    return matches


def queue_description(queue: QueueMeta, *, status: str = "ACTIVE") -> dict[str, Any]:
    position: dict[str, Any] = {"Type": queue.starting_position.value}
    if queue.starting_position is StartingPosition.AT_TIMESTAMP:
        assert queue.start_timestamp_ms is not None
        position["Timestamp"] = datetime_from_ms(queue.start_timestamp_ms)
    dead_letter: dict[str, Any] = {
        "TargetType": "BUILT_IN" if queue.dead_letter_enabled else "NONE"
    }
    if queue.dead_letter_enabled:
        dead_letter["MaxReceiveCount"] = queue.max_receive_count
    return {
        "QueueName": queue.name,
        "QueueARN": queue.arn,
        "QueueStatus": status,
        "QueueCreationTimestamp": datetime_from_ms(queue.created_ms),
        "StreamConfigurationList": [{"StreamARN": queue.stream_arn, "StartingPosition": position}],
        "QueueAttributes": {
            "VisibilityTimeoutSeconds": queue.visibility_timeout_s,
            "DeadLetterConfiguration": dead_letter,
        },
    }


def _queue_summary(queue: QueueMeta) -> dict[str, Any]:
    return {
        "QueueName": queue.name,
        "QueueARN": queue.arn,
        "QueueStatus": "ACTIVE",
        "QueueCreationTimestamp": datetime_from_ms(queue.created_ms),
        "Streams": [
            {
                "StreamARN": queue.stream_arn,
                "StreamCreationTimestamp": datetime_from_ms(queue.stream_created_ms),
            }
        ],
    }


def _queue_record(delivered: Delivered, record: _ReadRecord) -> dict[str, Any]:
    return {
        "ReceiptHandle": delivered.receipt_handle,
        "RecordId": delivered.record_id,
        "PartitionKey": record.partition_key,
        "Data": record.data,
        "ApproximateArrivalTimestamp": datetime_from_ms(record.arrival_ms),
        "FirstReceiveTimestamp": datetime_from_ms(delivered.first_receive_ms),
        "ReceiveCount": delivered.receive_count,
    }


def _failure_shape(failure: SettleFailure) -> dict[str, Any]:
    return {
        "ReceiptHandle": failure.receipt_handle,
        "ErrorCode": failure.error.code.kinesis_name,
        "ErrorMessage": failure.error.message,
    }
