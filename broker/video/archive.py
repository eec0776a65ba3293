"""A video stream's fragments in the replicated log: one internal Kinesis stream per video
stream incarnation, written and read through the node's own KinesisService (`LocalKinesis`).

The internal stream (`internal_stream_name("video", "<account>.<region>.<name>.<creation
ms>")`) has one shard, so its fragments have one total order, and its retention follows the
video stream's (clamped to Kinesis' 24 hours to 365 days; a fragment is never kept for less
than the video stream asks). It is created when the first fragment arrives and deleted with
the video stream. Its per-shard rate limits are lifted: a video stream is limited by what its
producer sends, not by Kinesis' 1 MiB/s.

An append returns only once the log acknowledged it, which it does only once the records are
durable on a majority of the shard's replicas: that is when PutMedia may say PERSISTED.
Loop-bound.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.frontend import MetadataFrontend
from broker.meta.video_table import VideoStreamMeta
from broker.service.in_process import LocalKinesis
from broker.streams.internal_names import internal_stream_name
from broker.streams.throttling import StreamLimits
from broker.video.fragment_records import (
    PARTITION_KEY,
    FragmentAssembler,
    FragmentMetadata,
    StoredFragment,
    encode_fragment,
)

SHARD_ID = "shardId-000000000000"
_KINESIS_RETENTION_HOURS_MIN = 24
_KINESIS_RETENTION_HOURS_MAX = 8_760
_ACTIVE_WAIT_S = 30.0
_ACTIVE_POLL_S = 0.05


def internal_name(meta: VideoStreamMeta) -> str:
    return internal_stream_name(
        "video", f"{meta.account_id}.{meta.region}.{meta.name}.{meta.created_ms}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Where a read starts: a Kinesis iterator type and its argument."""

    iterator_type: str  # TRIM_HORIZON, LATEST, AT_/AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP
    sequence_number: str | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadFragment:
    fragment: StoredFragment
    millis_behind_latest: int


class FragmentArchive:
    def __init__(self, kinesis: LocalKinesis, metadata: MetadataFrontend) -> None:
        self._kinesis = kinesis
        self._metadata = metadata
        self._ready: set[str] = set()

    async def ensure(self, meta: VideoStreamMeta, *, now_ms: int) -> str:
        """The internal stream of `meta`, created (ACTIVE, retention, limits) if missing."""
        name = internal_name(meta)
        if name in self._ready:
            return name
        try:
            await self._kinesis.call("CreateStream", {"StreamName": name, "ShardCount": 1})
        except ShoalError as error:
            if error.code is not ErrorCode.RESOURCE_IN_USE:
                raise
        await self._wait_active(name)
        retention = min(
            max(meta.data_retention_hours, _KINESIS_RETENTION_HOURS_MIN),
            _KINESIS_RETENTION_HOURS_MAX,
        )
        described = await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
        current = described["StreamDescriptionSummary"]["RetentionPeriodHours"]
        if retention > current:
            await self._kinesis.call(
                "IncreaseStreamRetentionPeriod",
                {"StreamName": name, "RetentionPeriodHours": retention},
            )
            await self._wait_active(name)
        unlimited = StreamLimits(
            write_bytes_per_second=0,
            write_records_per_second=0,
            read_calls_per_second=0,
            read_bytes_per_second=0,
        )
        await self._metadata.propose(
            commands.UpdateStreamLimits(now_ms=now_ms, name=name, changes=unlimited)
        )
        self._ready.add(name)
        return name

    async def _wait_active(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _ACTIVE_WAIT_S
        while True:  # bounded by give_up
            described = await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
            if described["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            if loop.time() > give_up:
                raise ShoalError(ErrorCode.UNAVAILABLE, f"internal stream {name} not ACTIVE")
            await asyncio.sleep(_ACTIVE_POLL_S)  # a bounded poll of the stream's state timer

    async def delete(self, meta: VideoStreamMeta) -> None:
        name = internal_name(meta)
        self._ready.discard(name)
        try:
            await self._kinesis.call(
                "DeleteStream", {"StreamName": name, "EnforceConsumerDeletion": True}
            )
        except ShoalError as error:
            if error.code is not ErrorCode.RESOURCE_NOT_FOUND:
                raise

    async def append(
        self,
        meta: VideoStreamMeta,
        *,
        session_id: uuid.UUID,
        ordinal: int,
        metadata: FragmentMetadata,
        header: bytes,
        cluster: bytes,
    ) -> str:
        """Appends one fragment (its chunks in order); returns its fragment number once every
        chunk is durable."""
        name = await self.ensure(meta, now_ms=metadata.server_timestamp_ms)
        records = encode_fragment(
            session_id=session_id,
            ordinal=ordinal,
            metadata=metadata,
            header=header,
            cluster=cluster,
            chunk_bytes_max=limits.video_record_chunk_bytes_max,
        )
        first: str | None = None
        for data in records:
            answer = await self._kinesis.call(
                "PutRecord", {"StreamName": name, "PartitionKey": PARTITION_KEY, "Data": data}
            )
            first = first or answer["SequenceNumber"]
        assert first is not None
        return first

    async def exists(self, meta: VideoStreamMeta) -> bool:
        try:
            await self._kinesis.call("DescribeStreamSummary", {"StreamName": internal_name(meta)})
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                return False
            raise
        return True

    async def read(
        self, meta: VideoStreamMeta, position: Position, *, follow_s: float = 0.0
    ) -> AsyncIterator[ReadFragment]:
        """The fragments from `position` on, in log order. At the end of the log it waits up
        to `follow_s` for more (a live reader) and then stops; a stream that has no
        fragments yet (no internal stream) is waited for as long."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + follow_s
        while not await self.exists(meta):  # bounded by give_up
            if loop.time() >= give_up:
                return
            await asyncio.sleep(limits.video_get_media_poll_ms / 1000)  # live edge: poll
        name = internal_name(meta)
        request: dict[str, object] = {
            "StreamName": name,
            "ShardId": SHARD_ID,
            "ShardIteratorType": position.iterator_type,
        }
        if position.sequence_number is not None:
            request["StartingSequenceNumber"] = position.sequence_number
        if position.timestamp_ms is not None:
            request["Timestamp"] = datetime.fromtimestamp(max(0, position.timestamp_ms) / 1000, UTC)
        try:
            iterator = (await self._kinesis.call("GetShardIterator", request))["ShardIterator"]
        except ShoalError as error:
            if error.code is ErrorCode.INVALID_ARGUMENT:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT, "The fragment number is not of this stream."
                ) from error
            raise
        assembler = FragmentAssembler()
        idle_since = loop.time()
        while iterator is not None:  # bounded: ends at the log's end after `follow_s` idle
            page = await self._kinesis.call(
                "GetRecords", {"ShardIterator": iterator, "Limit": limits.video_read_records_max}
            )
            iterator = page.get("NextShardIterator")
            behind = int(page.get("MillisBehindLatest", 0))
            for record in page["Records"]:
                fragment = assembler.add(record["SequenceNumber"], record["Data"])
                if fragment is not None:
                    yield ReadFragment(fragment=fragment, millis_behind_latest=behind)
            if page["Records"] or behind > 0:
                idle_since = loop.time()
                continue
            if loop.time() - idle_since >= follow_s:
                return
            await asyncio.sleep(limits.video_get_media_poll_ms / 1000)  # live edge: poll
