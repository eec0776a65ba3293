"""A video stream's fragments in the replicated log: one internal Kinesis stream per video
stream incarnation, written and read through the node's own KinesisService (`LocalKinesis`).

The internal stream (`internal_stream_name("video", "<account>.<region>.<name>.<creation
ms>")`) has one shard, so its fragments have one total order, and its retention follows the
video stream's (clamped to Kinesis' 24 hours to 365 days; a fragment is never kept for less
than the video stream asks), and follows UpdateDataRetention. It is created when the first
fragment arrives, already encrypted under the video stream's KmsKeyId (one metadata command
carries its first data key, so every replica's node knows the key before any fragment can
reach it), and deleted with the video stream. Its per-shard rate limits are lifted: a
video stream is limited by what its producer sends, not by Kinesis' 1 MiB/s.

An append returns only once the log acknowledged it, which it does only once the records are
durable on a majority of the shard's replicas: that is when PutMedia may say PERSISTED.
Fragments waiting together go in one PutRecords (one replicated, synced append), so a producer
ahead of the log costs one round trip per batch, not per fragment. A fragment larger than a
PutRecords request (over 10 MiB) takes requests of its own: its chunks stay in order because
a session appends one request at a time.
Loop-bound.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.frontend import MetadataFrontend
from broker.meta.metadata_format import ENCRYPTED_CREATION_LEVEL, FIRST_FORMAT, members_after
from broker.meta.video_table import VideoStreamMeta
from broker.service.control import CREATE_ENCRYPTED_UNDER
from broker.service.in_process import LocalKinesis
from broker.streams.internal_names import internal_stream_name
from broker.streams.iterators import decode_iterator
from broker.streams.sequence_numbers import sequence_number_for
from broker.streams.throttling import StreamLimits
from broker.video import messages
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


# The metadata format whose commands carry a stream's data keys (issue 15).
ENCRYPTION_FORMAT = members_after(FIRST_FORMAT, "SetStreamEncryption")["data_key"]


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

    @classmethod
    def after(cls, fragment_number: str) -> Position:
        """Just after the fragment `fragment_number` (a fragment number is its first record's
        sequence number)."""
        return cls(iterator_type="AFTER_SEQUENCE_NUMBER", sequence_number=fragment_number)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFragment:
    """A fragment to append: the PutMedia session it came in and its place there."""

    session_id: uuid.UUID
    ordinal: int
    metadata: FragmentMetadata
    header: bytes
    cluster: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResult:
    numbers: tuple[str, ...]  # the fragment numbers of the leading fragments now durable
    error: ShoalError | None  # why the next one is not, if any


def _requests(encoded: list[list[bytes]]) -> list[list[tuple[int, bytes]]]:
    """Every fragment's records, in order, cut into PutRecords requests within the request's
    record count and byte limits: (fragment index, record data) each."""
    requests: list[list[tuple[int, bytes]]] = []
    count = size = 0
    for index, chunks in enumerate(encoded):
        for data in chunks:
            cost = len(data) + len(PARTITION_KEY)
            if not requests or (
                count + 1 > limits.put_records_count_max
                or size + cost > limits.put_records_bytes_max
            ):
                requests.append([])
                count = size = 0
            requests[-1].append((index, data))
            count += 1
            size += cost
    return requests


def _leading(firsts: dict[int, str], complete: int) -> tuple[str, ...]:
    return tuple(firsts[index] for index in range(complete))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadFragment:
    fragment: StoredFragment
    millis_behind_latest: int


class FragmentArchive:
    def __init__(self, kinesis: LocalKinesis, metadata: MetadataFrontend) -> None:
        self._kinesis = kinesis
        self._metadata = metadata
        self._ready: set[str] = set()
        # Ready, but not encrypted yet: the cluster's metadata format was below the one that
        # carries data keys (a rolling upgrade); sealed once it is raised.
        self._unsealed: set[str] = set()

    async def _encrypt(self, name: str, kms_key_id: str) -> None:
        """Video streams are always encrypted at rest, under their KmsKeyId (by default the
        AWS-managed alias/aws/kinesisvideo key, as AWS does): the internal stream's records
        are sealed with a data key made under it (broker/crypto/). Last of the setup steps,
        since the stream shows UPDATING for a moment after. While a rolling upgrade holds the
        cluster below the metadata format that carries data keys, fragments are stored in the
        clear (as by the release before) and the stream is encrypted once the format rises."""
        if self._metadata.image().metadata_format < ENCRYPTION_FORMAT:
            self._unsealed.add(name)
            return
        self._unsealed.discard(name)
        summary = await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
        described = summary["StreamDescriptionSummary"]
        if described.get("EncryptionType") == "KMS" and described.get("KeyId") == kms_key_id:
            return
        await self._kinesis.call(
            "StartStreamEncryption",
            {"StreamName": name, "EncryptionType": "KMS", "KeyId": kms_key_id},
        )

    async def ensure(self, meta: VideoStreamMeta, *, now_ms: int) -> str:
        """The internal stream of `meta`, created (ACTIVE, retention, limits) if missing."""
        name = internal_name(meta)
        if name in self._ready:
            if name in self._unsealed:
                await self._encrypt(name, meta.kms_key_id)
            return name
        request: dict[str, object] = {"StreamName": name, "ShardCount": 1}
        if self._metadata.image().metadata_format >= ENCRYPTED_CREATION_LEVEL:
            # Created encrypted: no node ever holds a replica of it without its key, so no
            # replica can store a fragment in the clear (`_encrypt` below then finds it so).
            request[CREATE_ENCRYPTED_UNDER] = meta.kms_key_id
        try:
            await self._kinesis.call("CreateStream", request)
        except ShoalError as error:
            if error.code is not ErrorCode.RESOURCE_IN_USE:
                raise
        await self._wait_active(name)
        await self.follow_retention(meta)
        unlimited = StreamLimits(
            write_bytes_per_second=0,
            write_records_per_second=0,
            read_calls_per_second=0,
            read_bytes_per_second=0,
        )
        await self._metadata.propose(
            commands.UpdateStreamLimits(now_ms=now_ms, name=name, changes=unlimited)
        )
        await self._encrypt(name, meta.kms_key_id)
        self._ready.add(name)
        return name

    async def follow_retention(self, meta: VideoStreamMeta) -> None:
        """Sets the internal stream's retention to the video stream's (clamped to what a
        Kinesis stream allows), if the internal stream exists."""
        name = internal_name(meta)
        retention = min(
            max(meta.data_retention_hours, _KINESIS_RETENTION_HOURS_MIN),
            _KINESIS_RETENTION_HOURS_MAX,
        )
        try:
            described = await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                return  # no fragment yet: the first one creates it with this retention
            raise
        current = described["StreamDescriptionSummary"]["RetentionPeriodHours"]
        if retention == current:
            return
        operation = (
            "IncreaseStreamRetentionPeriod"
            if retention > current
            else "DecreaseStreamRetentionPeriod"
        )
        await self._kinesis.call(operation, {"StreamName": name, "RetentionPeriodHours": retention})
        await self._wait_active(name)

    async def _wait_active(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _ACTIVE_WAIT_S
        while True:  # bounded by give_up
            described = await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
            if described["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            if loop.time() > give_up:
                raise ShoalError(
                    ErrorCode.UNAVAILABLE, messages.internal_stream_not_active(name=name)
                )
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

    async def append(self, meta: VideoStreamMeta, fragments: Sequence[NewFragment]) -> AppendResult:
        """Appends fragments in order (their chunks in order) with as few log appends as fit
        in PutRecords' limits: one replicated, synced append carries several fragments when a
        producer is ahead of the log. Returns the numbers of the leading fragments that are
        whole and durable; a fragment with a refused chunk stops the count there (the ones
        after it may be stored too, and come twice if the producer sends them again: as on
        AWS, a retry may duplicate, never lose)."""
        assert fragments
        name = await self.ensure(meta, now_ms=fragments[0].metadata.server_timestamp_ms)
        encoded = [
            encode_fragment(
                session_id=f.session_id,
                ordinal=f.ordinal,
                metadata=f.metadata,
                header=f.header,
                cluster=f.cluster,
                chunk_bytes_max=limits.video_record_chunk_bytes_max,
            )
            for f in fragments
        ]
        firsts: dict[int, str] = {}  # fragment index -> its first record's sequence number
        complete = 0  # the leading fragments whose every chunk is durable
        for request in _requests(encoded):
            try:
                answer = await self._kinesis.call(
                    "PutRecords",
                    {
                        "StreamName": name,
                        "Records": [{"PartitionKey": PARTITION_KEY, "Data": d} for _, d in request],
                    },
                )
            except ShoalError as error:
                return AppendResult(numbers=_leading(firsts, complete), error=error)
            for (index, _), outcome in zip(request, answer["Records"], strict=True):
                if "ErrorCode" in outcome:
                    failure = ShoalError(
                        ErrorCode.INTERNAL_FAILURE,
                        messages.archive_append_failed(
                            code=outcome["ErrorCode"], message=outcome.get("ErrorMessage", "")
                        ),
                    )
                    return AppendResult(numbers=_leading(firsts, complete), error=failure)
                firsts.setdefault(index, outcome["SequenceNumber"])
            last_index = request[-1][0]
            # A fragment is whole once a later one started, or its last chunk was in here.
            complete = last_index + 1 if request[-1][1] is encoded[last_index][-1] else last_index
        assert complete == len(fragments)
        return AppendResult(numbers=_leading(firsts, complete), error=None)

    async def exists(self, meta: VideoStreamMeta) -> bool:
        try:
            await self._kinesis.call("DescribeStreamSummary", {"StreamName": internal_name(meta)})
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                return False
            raise
        return True

    async def last_record(self, meta: VideoStreamMeta, *, now_ms: int) -> str | None:
        """The sequence number of the newest record of the stream's log (None while it is
        empty): reading after it returns exactly what is appended from now on."""
        name = internal_name(meta)
        image = self._metadata.image()
        stream = image.stream(name, now_ms=now_ms)
        if stream is None:
            raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.STREAM_HAS_NO_LOG)
        request = {"StreamName": name, "ShardId": SHARD_ID, "ShardIteratorType": "LATEST"}
        token = (await self._kinesis.call("GetShardIterator", request))["ShardIterator"]
        end = decode_iterator(token, secret=image.iterator_secret, now_ms=now_ms).offset
        return None if end == 0 else sequence_number_for(stream.shards[0], end - 1)

    async def read_pass(
        self, meta: VideoStreamMeta, position: Position, *, limit: int
    ) -> AsyncIterator[StoredFragment]:
        """At most `limit` fragments from `position` on, in log order, without waiting at the
        log's end: one pass of a background follower (SNS notifications, image delivery),
        which resumes at `Position.after` the last fragment it handled."""
        count = 0
        async for read in self.read(meta, position):
            yield read.fragment
            count += 1
            if count >= limit:
                return

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
                    ErrorCode.INVALID_ARGUMENT, messages.FRAGMENT_NOT_OF_STREAM
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
