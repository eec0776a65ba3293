"""Where a shard consumer's records come from: the `RecordSource` protocol, its batches, the
shards it reads, and the polling source (GetRecords in a loop; the enhanced fan-out source is
`fanout.py`). The worker (`worker.py`) picks one per shard through `WorkerConfig.retrieval`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from broker.client.worker_config import WorkerConfig
from broker.consumers.leases import Checkpoint
from broker.errors import ErrorCode, ShoalError

if TYPE_CHECKING:
    from broker.client.kpl import UserRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardInfo:
    """What the worker knows of one shard from ListShards or a parent's ChildShards."""

    shard_id: str
    parent_shard_ids: tuple[str, ...]
    hash_range: tuple[int, int]  # inclusive
    closed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordBatch:
    """One retrieval: Kinesis records as GetRecords returns them (AWS-shaped dicts, not yet
    de-aggregated), and at the shard's end its children (then no batch follows). A source that
    reads the log itself (a node's own consumers) may hand over its `users` already
    de-aggregated instead, in order, with `records` empty: the worker then skips its own
    de-aggregation."""

    records: Sequence[Mapping[str, Any]]
    millis_behind_latest: int
    child_shards: tuple[ShardInfo, ...] | None = None
    users: Sequence[UserRecord] | None = None

    @property
    def empty(self) -> bool:
        return not self.records and not self.users


class RecordSource(Protocol):
    """Where one shard consumer's records come from (polling or enhanced fan-out).

    `start` positions the source; `next_batch` returns the next batch, possibly empty, within a
    bounded time; after a batch with `child_shards` the source is finished. `idle_wait_ms` is
    how long the consumer pauses after an empty batch (a push source returns 0). `aclose`
    releases what the source holds (a subscription) when the lease period ends.
    """

    idle_wait_ms: int

    async def start(self, position: Checkpoint) -> None: ...

    async def next_batch(self) -> RecordBatch: ...

    async def aclose(self) -> None: ...


class KinesisCalls(Protocol):
    """What polling needs of a Kinesis client: `AsyncShoalClient`, or a node's own service
    (`broker.service.in_process.LocalKinesis`) for consumers that run inside a node."""

    async def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]: ...


class PollingRecordSource:
    """GetRecords in a loop (the KCL's PollingConfig). A checkpointed sequence number resumes
    AT_SEQUENCE_NUMBER (the consumer drops what is at or below the checkpoint); an expired
    iterator resumes AFTER_SEQUENCE_NUMBER of the last Kinesis record returned."""

    def __init__(
        self, kinesis: KinesisCalls, *, stream_name: str, shard_id: str, config: WorkerConfig
    ) -> None:
        self._kinesis = kinesis
        self._stream_name = stream_name
        self._shard_id = shard_id
        self._config = config
        self._iterator: str | None = None
        self._start_request: dict[str, Any] = {}
        self._last_sequence_number: str | None = None
        self.idle_wait_ms = config.polling_idle_interval_ms

    async def start(self, position: Checkpoint) -> None:
        request: dict[str, Any] = {"StreamName": self._stream_name, "ShardId": self._shard_id}
        if not position.is_sentinel:
            request["ShardIteratorType"] = "AT_SEQUENCE_NUMBER"
            request["StartingSequenceNumber"] = position.sequence_number
        elif position.sequence_number == "AT_TIMESTAMP":
            assert self._config.initial_timestamp is not None
            request["ShardIteratorType"] = "AT_TIMESTAMP"
            request["Timestamp"] = self._config.initial_timestamp
        else:
            assert not position.is_shard_end, "a finished shard is never read"
            request["ShardIteratorType"] = position.sequence_number
        self._start_request = request
        await self._get_iterator()

    async def aclose(self) -> None:
        """Nothing to release: an iterator is only a token."""

    async def _get_iterator(self) -> None:
        request = dict(self._start_request)
        if self._last_sequence_number is not None:
            request["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            request["StartingSequenceNumber"] = self._last_sequence_number
            request.pop("Timestamp", None)
        response = await self._kinesis.call("GetShardIterator", request)
        self._iterator = response["ShardIterator"]

    async def next_batch(self) -> RecordBatch:
        assert self._iterator is not None, "start first; nothing follows the shard's end"
        request = {"ShardIterator": self._iterator, "Limit": self._config.get_records_limit}
        try:
            response = await self._kinesis.call("GetRecords", request)
        except ShoalError as error:
            if error.code is not ErrorCode.EXPIRED_ITERATOR:
                raise
            await self._get_iterator()
            return RecordBatch(records=(), millis_behind_latest=0)
        records: list[dict[str, Any]] = response["Records"]
        if records:
            self._last_sequence_number = records[-1]["SequenceNumber"]
        self._iterator = response.get("NextShardIterator")
        children: tuple[ShardInfo, ...] | None = None
        if self._iterator is None:
            children = tuple(child_shard(child) for child in response.get("ChildShards", []))
        return RecordBatch(
            records=records,
            millis_behind_latest=response.get("MillisBehindLatest", 0),
            child_shards=children,
        )


def hash_range(shape: Mapping[str, str]) -> tuple[int, int]:
    return int(shape["StartingHashKey"]), int(shape["EndingHashKey"])


def child_shard(shape: Mapping[str, Any]) -> ShardInfo:
    return ShardInfo(
        shard_id=shape["ShardId"],
        parent_shard_ids=tuple(shape.get("ParentShards", ())),
        hash_range=hash_range(shape["HashKeyRange"]),
    )


RecordSourceFactory = Callable[[ShardInfo], RecordSource]
