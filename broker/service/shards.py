"""`ShardClient`: where a shard's appends and reads go, on this node or another.

Every node serves every request (decision 0002, "Routing"). Once `records.py` has resolved a
record to its shard, it hands the append to `ShardClient.append`, which either serves it here,
when this node is the shard's leader in the metadata image, or forwards it to the leader's node
(`ShardForwarder`, the gRPC adapter in `broker/rpc/peers.py`). That node's
`NodeService.ShardAppend` handler calls `serve_append` on its own ShardClient, so the local and
the forwarded path run the same code: the shard's throttle, then the local replica.

Throttling therefore happens where the shard is written, on its leader, whichever gateway the
request came through, so a shard's limits hold across the cluster. (A new leader starts its
buckets from empty at the moment its leadership began: see `throughput.Throttles`.)

Reads: `GetRecords` is served by any replica on this node whose high watermark covers the
requested offset when read throttling is off; otherwise (or when this node holds nothing to
read) by the leader, which also owns the shard's read throttle. `GetShardIterator` positions
always come from the leader, so LATEST is never behind. A SubscribeToShard read carries its
subscription's `Claim` and always goes to the leader, which checks it against its `ClaimTable`
(`streams/subscription_claims.py`) before reading: one subscription per consumer and shard across
the cluster. Only when the leader is unreachable does a replica here serve it, unchecked.

Refusals (`ShardRefusedError`: not the leader, stale epoch, sealed, unreachable) are internal
(STYLE B.8): the caller waits for a newer metadata image and routes again, within
`limits.route_retry_attempts_max` and `limits.route_deadline_ms`; clients only see success or,
past the budget, InternalFailure.

A node view; loop only. Blocking store reads run in worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker import error_messages, limits
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.log.records import LogCorruptionError, NewRecords, RecordPage, records_size_bytes
from broker.log.store import LogStore
from broker.meta.image import MetadataImage, ShardMeta, ShardState
from broker.replication.driver import DamagedRange
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.service.read_ahead import ReadAhead, sealed
from broker.service.shard_load import ShardLoadRecorder
from broker.service.throughput import ShardMeter, Throttles
from broker.streams.subscription_claims import Claim, ClaimTable, Verdict
from broker.types import NodeId, Offset, ShardUid, StreamUid


def _placing(
    placed: Callable[[AppendResult], object] | None,
    throttled: tuple[int, ...],
    counted: Callable[[], object] | None,
) -> Callable[[Offset, int], None] | None:
    """The local replica's `placed(first offset, arrival_ms)`, run while the records are being
    written: the caller's `placed` with the append's result, then `counted()` (the load
    tracker's count of them). None when there is neither."""
    if placed is None and counted is None:
        return None

    def place(first_offset: Offset, arrival_ms: int) -> None:
        if placed is not None:
            result = AppendResult(
                first_offset=first_offset, arrival_ms=arrival_ms, throttled=throttled
            )
            placed(result)
        if counted is not None:
            counted()

    return place


class ReadThrottle(enum.IntEnum):
    """Which read budget of the shard a read counts against (the wire carries the number)."""

    NONE = 0
    GET_RECORDS = 1
    GET_SHARD_ITERATOR = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResult:
    """The admitted records got offsets [first_offset, first_offset + admitted count), in
    request order; `throttled` lists the request positions the shard's budget refused."""

    first_offset: Offset
    arrival_ms: int
    throttled: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    start_offset: Offset
    records_max: int  # 0: positions only (GetShardIterator)
    bytes_max: int
    arrival_ms_min: int = 0  # records that arrived earlier are past retention: skipped
    at_timestamp_ms: int | None = None  # also find the first offset at or after this time
    throttle: ReadThrottle = ReadThrottle.NONE
    # Long-poll (SubscribeToShard): when nothing is readable at `start_offset`, wait up to
    # this long for the high watermark to pass it before answering (0: answer at once).
    wait_ms: int = 0
    # SubscribeToShard: the subscription reading; the leader refuses the read with
    # ResourceInUseException while another one holds the (consumer, shard) slot.
    claim: Claim | None = None
    # What a door writes of a page read ahead for this reader, done in the read-ahead's worker
    # thread (service/read_ahead.py; the gRPC door's records fields): `ReadResult.prepared`.
    # Local only: never sent to another node (a forwarded read answers without it).
    prepare: Callable[[RecordPage], bytes | None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadResult:
    records: RecordPage
    log_start: Offset
    readable_end: Offset  # the HW the serving replica knows
    next_offset: Offset  # where the next read continues (past skipped control records)
    timestamp_offset: Offset | None = None
    throttled: bool = False
    # Whether `readable_end` is the shard's committed end: the serving replica leads and has
    # committed in its epoch. Only then does a read that reached it mean "nothing more now"
    # (MillisBehindLatest 0, LATEST): a follower's HW lags its leader's by up to an Append and
    # a new leader starts from its follower HW, both possibly short of acknowledged records.
    end_is_committed_end: bool = False
    # `ReadRequest.prepare` of `records`, when the page was read ahead for a request with one.
    prepared: bytes | None = None


class LocalReplicas(Protocol):
    """This node's side of its shard replicas (`replication.driver.ReplicationDriver`)."""

    def readable_end(self, shard_uid: ShardUid) -> Offset | None:
        """The high watermark of the local replica, or None when this node holds none."""
        ...

    def knows_committed_end(self, shard_uid: ShardUid) -> bool:
        """Whether the local replica's high watermark is the shard's committed end."""
        ...

    async def wait_committed_end(self, shard_uid: ShardUid, *, timeout_s: float) -> bool:
        """A new local leader: waits (bounded) until it has committed in its epoch; returns
        `knows_committed_end`."""
        ...

    async def append(
        self,
        shard_uid: ShardUid,
        *,
        epoch: int,
        records: NewRecords,
        now_ms: int,
        placed: Callable[[Offset, int], object] | None = None,
    ) -> tuple[Offset, int]:
        """(first offset, arrival_ms) once committed; raises ShardRefusedError or ShoalError.
        `placed(first offset, arrival_ms)` runs while the records are being written."""
        ...

    async def wait_readable(self, shard_uid: ShardUid, beyond: Offset, *, timeout_s: float) -> None:
        """Returns once the high watermark passes `beyond` (or no replica, or the timeout)."""
        ...

    def damaged(self, shard_uid: ShardUid) -> DamagedRange | None:
        """The local replica's damaged range, if any: read elsewhere there."""
        ...

    def report_corruption(self, error: LogCorruptionError) -> None:
        """A read of the local log failed a check: locate and repair the range."""
        ...


class ShardForwarder(Protocol):
    """Calls another node's `NodeService` (the gRPC adapter)."""

    async def append(
        self,
        address: str,
        *,
        stream_uid: StreamUid,
        shard_uid: ShardUid,
        epoch: int,
        records: NewRecords,
    ) -> AppendResult:
        """Raises ShardRefusedError (incl. UNAVAILABLE when the node does not answer in time)
        or the node's ShoalError. The records' hash keys (the keys they were routed by) travel
        with them for the leader's load tracker."""
        ...

    async def read(
        self,
        address: str,
        *,
        stream_uid: StreamUid,
        shard_uid: ShardUid,
        epoch: int,
        request: ReadRequest,
    ) -> ReadResult: ...


class ShardClient:
    """Appends and reads one shard wherever it lives. Node view; loop only."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        clock: Clock,
        store: LogStore,
        local: LocalReplicas,
        throttles: Throttles,
        forwarder: ShardForwarder | None = None,
        meter: ShardMeter | None = None,
        load: ShardLoadRecorder | None = None,
        claims: ClaimTable | None = None,
    ) -> None:
        self.node_id = node_id
        # SubscribeToShard's claims on the shards led here (streams/subscription_claims.py).
        self.claims = (
            claims
            if claims is not None  # not `or`: an empty table is falsy
            else ClaimTable(takeover_ms=limits.subscription_takeover_ms_default)
        )
        self.meter = meter
        self.load = load  # the leader's load trackers (shard_load.py): hot shards and keys
        self.throttles = throttles
        self._clock = clock
        self.store = store
        self._local = local
        self._forwarder = forwarder
        # The next page of a read that stopped short of the readable end (read_ahead.py).
        self.read_ahead = ReadAhead(
            pages_max=limits.read_ahead_pages_max, keep_ms=limits.read_ahead_ms
        )

    # --- The caller's side: route --------------------------------------------------------------

    @staticmethod
    def leader_of(shard: ShardMeta) -> NodeId | None:
        """The node that takes the shard's appends (None while the controller elects one)."""
        return shard.leader

    async def append(
        self,
        image: MetadataImage,
        stream_uid: StreamUid,
        shard: ShardMeta,
        records: NewRecords,
        placed: Callable[[AppendResult], object] | None = None,
    ) -> AppendResult:
        """Appends `records` (their AWS sizes count for the throttle, their hash keys for the
        load tracker when served here) to the shard's leader. Served here, `placed` gets the
        result the append will have if it succeeds, while its records are being written (so
        the caller prepares its answer meanwhile); a forwarded append never calls it."""
        leader = self.leader_of(shard)
        if leader is None:
            raise ShardRefusedError(RefusalReason.NOT_SHARD_LEADER, shard_uid=shard.uid)
        if leader == self.node_id:
            return await self.serve_append(
                shard.uid, epoch=shard.epoch, records=records, placed=placed
            )
        assert self._forwarder is not None, "a remote leader without a forwarder"
        return await self._forwarder.append(
            self._address(image, leader, shard),
            stream_uid=stream_uid,
            shard_uid=shard.uid,
            epoch=shard.epoch,
            records=records,
        )

    async def read(
        self,
        image: MetadataImage,
        stream_uid: StreamUid,
        shard: ShardMeta,
        request: ReadRequest,
    ) -> ReadResult:
        """One read of the shard, answered only when the answer is whole (`_whole`): a read
        that comes back empty from a replica whose HW may lag the shard's committed end goes
        to the leader, or is refused for the caller to route again, never answered as the end
        of the shard (a reader would stop short of records already acknowledged)."""
        leader = self.leader_of(shard)
        if leader == self.node_id or self._may_read_here(shard, request):
            try:
                result = _whole(shard, request, await self.serve_read(shard.uid, request))
            except ShardRefusedError as refusal:
                if refusal.reason is not RefusalReason.DAMAGED:
                    raise
                return await self._read_elsewhere(
                    image, stream_uid, shard, request, damaged_on=self.node_id
                )
            if result is not None:
                return result
            if leader == self.node_id or leader is None:
                # A new leader whose marker has not committed yet (serve_read waited for it).
                raise ShardRefusedError(
                    RefusalReason.NOT_SHARD_LEADER,
                    shard_uid=shard.uid,
                    detail="no record of this epoch committed yet",
                )
            # A follower's HW behind the leader's: the leader knows where the shard ends.
        if leader is None:
            raise ShardRefusedError(RefusalReason.NOT_SHARD_LEADER, shard_uid=shard.uid)
        assert self._forwarder is not None, "a remote leader without a forwarder"
        try:
            forwarded = await self._forwarder.read(
                self._address(image, leader, shard),
                stream_uid=stream_uid,
                shard_uid=shard.uid,
                epoch=shard.epoch,
                request=request,
            )
        except ShardRefusedError as refusal:
            if refusal.reason is RefusalReason.DAMAGED:
                return await self._read_elsewhere(
                    image, stream_uid, shard, request, damaged_on=leader
                )
            # The leader's node is away (until the controller moves the leadership, which may
            # not happen soon for a closed shard): what this node's replica has committed is
            # as good an answer as any, if it holds one and it is whole.
            if refusal.reason not in (RefusalReason.UNAVAILABLE, RefusalReason.OUTCOME_UNKNOWN):
                raise
            if self._local.readable_end(shard.uid) is None:
                raise
            # Unchecked: the claim table is the leader's (a window while it is away).
            local = await self.serve_read(shard.uid, dataclasses.replace(request, claim=None))
            result = _whole(shard, request, local)
            if result is None:
                raise
            return result
        result = _whole(shard, request, forwarded)
        if result is None:
            # The node named leader no longer leads, or does not know the end yet.
            raise ShardRefusedError(
                RefusalReason.NOT_SHARD_LEADER,
                shard_uid=shard.uid,
                leader=leader,
                detail="its high watermark may lag the shard's committed end",
            )
        return result

    async def _read_elsewhere(
        self,
        image: MetadataImage,
        stream_uid: StreamUid,
        shard: ShardMeta,
        request: ReadRequest,
        *,
        damaged_on: NodeId,
    ) -> ReadResult:
        """`damaged_on`'s replica cannot read this range back: any other replica that holds
        it committed answers (a follower serves below its own high watermark, so it may
        answer with fewer records). When none can, the read fails loudly: never an empty
        answer that a reader would take for the end of the shard."""
        unchecked = dataclasses.replace(request, claim=None)  # claims are the leader's
        for node_id in (n for n in shard.replicas if n != damaged_on):
            try:
                if node_id == self.node_id:
                    answer = await self.serve_read(shard.uid, unchecked)
                else:
                    assert self._forwarder is not None, "a remote replica without a forwarder"
                    answer = await self._forwarder.read(
                        self._address(image, node_id, shard),
                        stream_uid=stream_uid,
                        shard_uid=shard.uid,
                        epoch=shard.epoch,
                        request=unchecked,
                    )
            except ShardRefusedError:
                continue  # damaged there too, not committed there, or unreachable
            result = _whole(shard, request, answer)
            if result is not None:
                return result
        raise ShoalError(
            ErrorCode.INTERNAL_FAILURE,
            error_messages.damaged_replica_range(
                shard_id=shard.shard_id, start_offset=request.start_offset, damaged_on=damaged_on
            ),
        )

    def _may_read_here(self, shard: ShardMeta, request: ReadRequest) -> bool:
        if request.throttle is ReadThrottle.GET_SHARD_ITERATOR or request.records_max == 0:
            return False  # positions come from the leader (module docstring)
        if request.claim is not None:
            return False  # the leader checks the subscription's claim
        if request.throttle is not ReadThrottle.NONE and self.throttles.reads_limited_for(
            shard.uid
        ):
            return False  # the leader owns the read budget
        end = self._local.readable_end(shard.uid)
        damage = self._local.damaged(shard.uid)
        if damage is not None and damage.start <= request.start_offset < damage.end:
            return False
        return end is not None and end > request.start_offset

    def _address(self, image: MetadataImage, node_id: NodeId, shard: ShardMeta) -> str:
        node = image.nodes.get(node_id)
        if node is None:
            raise ShardRefusedError(
                RefusalReason.UNAVAILABLE, shard_uid=shard.uid, leader=node_id, detail="unknown"
            )
        return node.api_address

    # --- The serving side: this node's replica --------------------------------------------------

    async def serve_append(
        self,
        shard_uid: ShardUid,
        *,
        epoch: int,
        records: NewRecords,
        placed: Callable[[AppendResult], object] | None = None,
    ) -> AppendResult:
        """Throttle record by record, then append what was admitted to the local replica.
        `placed`: as for `append`."""
        assert records
        throttled: tuple[int, ...] = ()
        if self.throttles.writes_limited_for(shard_uid):
            now_ms = self._clock.monotonic_ms()
            throttle = self.throttles.write(shard_uid, now_ms=now_ms)
            admitted_positions = []
            refused = []
            for position, size in enumerate(records.sizes):
                if throttle.admit(record_bytes=size, now_ms=now_ms):
                    admitted_positions.append(position)
                else:
                    refused.append(position)
            if refused:
                throttled = tuple(refused)
                if self.meter is not None:
                    self.meter.write_throttled(shard_uid, len(refused))
                if not admitted_positions:
                    return AppendResult(first_offset=Offset(0), arrival_ms=0, throttled=throttled)
                records = records.take(admitted_positions)
        # The load trackers count the records while they are written (`placed`: on the loop
        # during the log writer's fsync, which the loop otherwise spends idle), neither on the
        # way to the disk nor after the answer, where a sequential producer's next call would
        # wait for it: about 0.4 ms per 500 records (issue 18). Their figures are rates over
        # seconds, so an append that then fails (the producer retries) may count twice.
        load = self.load
        counted = None if load is None else functools.partial(load.written, shard_uid, records)
        first_offset, arrival_ms = await self._local.append(
            shard_uid,
            epoch=epoch,
            records=records,
            now_ms=self._clock.wall_ms(),
            placed=_placing(placed, throttled, counted),
        )
        if self.meter is not None:
            self.meter.written(shard_uid, len(records), records.size_bytes)
        return AppendResult(first_offset=first_offset, arrival_ms=arrival_ms, throttled=throttled)

    async def serve_read(self, shard_uid: ShardUid, request: ReadRequest) -> ReadResult:
        """Reads the local replica below its high watermark (module docstring); with
        `wait_ms`, first waits (bounded) until there is something to read. With a `claim`,
        first checks it (ResourceInUseException while another subscription holds the slot)."""
        if request.claim is not None:
            if request.claim.release:
                self.claims.release(request.claim, shard_uid)
                return ReadResult(
                    records=RecordPage(),
                    log_start=Offset(0),
                    readable_end=Offset(0),
                    next_offset=request.start_offset,
                    end_is_committed_end=True,  # nothing was read: nothing to read elsewhere
                )
            self._check_claim(shard_uid, request.claim, wait_ms=request.wait_ms)
        if not self._local.knows_committed_end(shard_uid):
            # A new leader: a moment for its marker to commit (a follower returns at once).
            await self._local.wait_committed_end(
                shard_uid, timeout_s=limits.new_leader_read_wait_ms / 1000
            )
        end = self._local.readable_end(shard_uid)
        if request.wait_ms > 0 and end is not None and end <= request.start_offset:
            wait_s = min(request.wait_ms, limits.read_wait_ms_max) / 1000
            await self._local.wait_readable(shard_uid, request.start_offset, timeout_s=wait_s)
            end = self._local.readable_end(shard_uid)
        if end is None:
            raise ShardRefusedError(RefusalReason.NOT_SHARD_LEADER, shard_uid=shard_uid)
        end_is_committed_end = self._local.knows_committed_end(shard_uid)
        now_ms = self._clock.monotonic_ms()
        read_throttle = self.throttles.read(shard_uid, now_ms=now_ms)
        match request.throttle:
            case ReadThrottle.GET_RECORDS:
                admitted = read_throttle.admit_get_records(now_ms=now_ms)
            case ReadThrottle.GET_SHARD_ITERATOR:
                admitted = read_throttle.admit_get_shard_iterator(now_ms=now_ms)
            case ReadThrottle.NONE:
                admitted = True
        if not admitted:
            if self.meter is not None and request.throttle is ReadThrottle.GET_RECORDS:
                self.meter.read_throttled(shard_uid)
            return ReadResult(
                records=RecordPage(),
                log_start=Offset(0),
                readable_end=end,
                next_offset=request.start_offset,
                throttled=True,
            )
        read_end = end
        damage = self._local.damaged(shard_uid)
        if damage is not None and request.records_max > 0:
            if damage.start <= request.start_offset < damage.end:
                raise ShardRefusedError(
                    RefusalReason.DAMAGED, shard_uid=shard_uid, detail="being repaired"
                )
            if request.start_offset < damage.start:
                read_end = Offset(min(end, damage.start))  # the next read goes elsewhere
        try:
            result = await self._read_page(shard_uid, request, end, read_end)
        except LogCorruptionError as error:
            self._local.report_corruption(error)
            raise ShardRefusedError(
                RefusalReason.DAMAGED, shard_uid=shard_uid, detail=str(error)
            ) from error
        if end_is_committed_end:
            result = dataclasses.replace(result, end_is_committed_end=True)
        if request.throttle is ReadThrottle.GET_RECORDS:
            read_throttle.record_read(
                read_bytes=records_size_bytes(result.records),
                now_ms=self._clock.monotonic_ms(),
            )
        return result

    async def _read_page(
        self, shard_uid: ShardUid, request: ReadRequest, end: Offset, read_end: Offset
    ) -> ReadResult:
        """`_read_store` in a worker thread, or the page read ahead for it; a page that stops
        short of `read_end` starts reading the next one (service/read_ahead.py)."""
        if request.records_max == 0 or request.at_timestamp_ms is not None:
            return await asyncio.to_thread(
                _read_store, self.store, shard_uid, request, end, read_end
            )
        ahead = await self.read_ahead.take(
            shard_uid,
            start_offset=request.start_offset,
            records_max=request.records_max,
            bytes_max=request.bytes_max,
            readable_end=read_end,
            arrival_ms_min=request.arrival_ms_min,
        )
        if isinstance(ahead, ReadResult):
            result = dataclasses.replace(ahead, readable_end=end)
        else:
            result = await asyncio.to_thread(
                _read_store, self.store, shard_uid, request, end, read_end
            )
        if result.records and result.next_offset < read_end and not sealed(result.records):
            following = dataclasses.replace(request, start_offset=result.next_offset)
            self.read_ahead.start(
                shard_uid,
                start_offset=following.start_offset,
                records_max=following.records_max,
                bytes_max=following.bytes_max,
                read=functools.partial(
                    _read_ahead, self.store, shard_uid, following, end, read_end
                ),
            )
        return result

    def read_ahead_from(self, shard: ShardMeta, request: ReadRequest) -> None:
        """Starts reading ahead the page `request` asks for, for a reader about to ask for it
        (GetShardIterator's position: a reader takes an iterator to read from it at once). Only
        where this node leads the shard, knows its committed end, and the page lies below it
        with no damaged range; the page is then taken, checked, as any page read ahead."""
        uid = shard.uid
        if self.leader_of(shard) != self.node_id or not self._local.knows_committed_end(uid):
            return
        end = self._local.readable_end(uid)
        if end is None or request.start_offset >= end or self._local.damaged(uid) is not None:
            return
        self.read_ahead.start(
            uid,
            start_offset=request.start_offset,
            records_max=request.records_max,
            bytes_max=request.bytes_max,
            read=functools.partial(_read_ahead, self.store, uid, request, end, end),
        )

    def _check_claim(self, shard_uid: ShardUid, claim: Claim, *, wait_ms: int) -> None:
        verdict = self.claims.claim(
            claim, shard_uid, now_ms=self._clock.monotonic_ms(), wait_ms=wait_ms
        )
        if verdict is Verdict.REFUSED:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.subscription_exists_on_this_shard(consumer_arn=claim.consumer_arn),
            )


def _whole(shard: ShardMeta, request: ReadRequest, result: ReadResult) -> ReadResult | None:
    """`result` as a reader may see it, or None when it must be read elsewhere. It is whole
    when its end is the shard's committed end, when it carries records (the reader comes back
    for the rest, and its MillisBehindLatest is not 0: records.py), or when it reaches a
    closed shard's final end (which every replica holding it knows). Positions
    (GetShardIterator) are whole from any replica: a lagging end only starts LATEST before
    records the reader then also gets, never after one. A throttled answer is the caller's
    to handle."""
    if result.throttled or result.end_is_committed_end or request.records_max == 0:
        return result
    if (
        shard.state is ShardState.CLOSED
        and shard.end_offset is not None
        and result.readable_end >= shard.end_offset
    ):
        return dataclasses.replace(result, end_is_committed_end=True)
    if request.records_max > 0 and result.records:
        return result
    return None


def _read_store(
    store: LogStore, shard_uid: ShardUid, request: ReadRequest, end: Offset, read_end: Offset
) -> ReadResult:
    """In a worker thread: the records of [start, read_end) that are retained and not past
    retention, plus the positions a GetShardIterator needs; `end` is the readable end the
    answer reports (read_end is lower only before a damaged range, read elsewhere)."""
    log_start = store.log_start(shard_uid)
    timestamp_offset = None
    if request.at_timestamp_ms is not None:
        timestamp_offset = store.first_offset_at_or_after_time(shard_uid, request.at_timestamp_ms)
    records = RecordPage()
    start = request.start_offset
    next_offset = Offset(max(start, 0))
    if request.records_max > 0 and start < read_end:
        records, next_offset = _read_retained(store, shard_uid, request, read_end)
        if not records:
            next_offset = Offset(max(next_offset, log_start))
    return ReadResult(
        records=records,
        log_start=log_start,
        readable_end=end,
        next_offset=next_offset,
        timestamp_offset=timestamp_offset,
    )


def _read_ahead(
    store: LogStore, shard_uid: ShardUid, request: ReadRequest, end: Offset, read_end: Offset
) -> ReadResult:
    """In a worker thread: `_read_store`, then the request's `prepare` of the page (nobody
    waits on a page read ahead, so its door's writing is done here, off the reader's wait; a
    read the reader waits on is written by its door as it answers). A sealed page is dropped
    at once (its reader's `take` finds no page)."""
    result = _read_store(store, shard_uid, request, end, read_end)
    if sealed(result.records):
        # Never kept (read_ahead.py): the reader reads it afresh, with the key's state then.
        return dataclasses.replace(result, records=RecordPage())
    if request.prepare is None or not result.records:
        return result
    return dataclasses.replace(result, prepared=request.prepare(result.records))


def _read_retained(
    store: LogStore, shard_uid: ShardUid, request: ReadRequest, end: Offset
) -> tuple[RecordPage, Offset]:
    """Committed records in [start, end) without those past retention, and the next offset."""
    start = request.start_offset
    for _ in range(limits.read_retention_skips_max):
        records = store.read_page(
            shard_uid,
            start_offset=start,
            end_offset=end,
            records_max=request.records_max,
            bytes_max=request.bytes_max,
        )
        if not records:
            # Nothing readable in [start, end): only control records (epoch-start markers) or
            # trimmed ones. Readers continue at the end, or they could never pass a marker
            # that ends a closed shard.
            return RecordPage(), end
        if records.first_arrival_ms() >= request.arrival_ms_min:
            return records, records.next_offset()
        # Past retention but not trimmed yet: unreadable at once, as on AWS. Arrival times are
        # non-decreasing per shard, so the expired records are a prefix.
        first_live = store.first_offset_at_or_after_time(shard_uid, request.arrival_ms_min)
        if first_live is None or first_live >= end:
            return RecordPage(), request.start_offset
        live = records.from_offset(first_live)
        if live:
            return live, live.next_offset()
        start = first_live
    raise ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.EXPIRED_READ_DID_NOT_CONVERGE)
