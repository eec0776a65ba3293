"""A read is answered as "the end of the shard" only by a replica that knows where it ends.

Goal: no GetRecords answer claims "no more records" (an empty page, MillisBehindLatest 0)
while records already acknowledged lie past it. Two replicas can hold a high watermark (HW)
short of the shard's committed end: a follower (it learns the leader's HW one Append later,
up to `replication_heartbeat_ms`) and a newly elected leader (it starts from the HW it had as
a follower, until its epoch's marker commits). Both used to answer from that HW: a reader
right after a write, or right after a leader change, stopped short of acknowledged records
(issue 16: the rolling upgrade's "11 acknowledged records missing" and
test_a_thousand_open_shards' `[] == [b'big-4/199']`; nothing was lost, every record was
stored and committed). Method: `ShardClient` over a real MemoryLogStore holding what such a
replica holds (the epoch marker and one acknowledged record, HW below it), a stand-in for the
local replica's HW and leadership, and a recording forwarder playing the leader's node.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, LogCorruptionError, NewRecord, RecordPage, StoredRecord
from broker.meta.image import MetadataImage, ShardMeta, ShardState
from broker.meta.state_machine import apply
from broker.replication.driver import DamagedRange
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.replication.replica import epoch_marker
from broker.service.records import RecordsApi
from broker.service.shards import ReadRequest, ReadResult, ReadThrottle, ShardClient
from broker.service.throughput import Throttles
from broker.streams.throttling import ThroughputLimits
from broker.types import NodeId, Offset, ShardUid, StreamName, StreamUid
from tests.meta.factories import create_stream, nodes_image

UNLIMITED = ThroughputLimits(
    write_bytes_per_second=0,
    write_records_per_second=0,
    read_calls_per_second=0,
    read_bytes_per_second=0,
)
READ = ReadRequest(
    start_offset=Offset(0), records_max=100, bytes_max=1 << 20, throttle=ReadThrottle.GET_RECORDS
)


class StaleReplica:
    """This node's replica of the shard: its HW, and whether that is the committed end (it
    leads and its marker committed); `commits_while_waiting` plays a new leader's marker
    committing during `wait_committed_end`."""

    def __init__(self, hw: int, *, knows: bool, commits_while_waiting: int | None = None):
        self.hw = Offset(hw)
        self.knows = knows
        self.commits_while_waiting = commits_while_waiting
        self.waited = 0

    def readable_end(self, shard_uid: ShardUid) -> Offset | None:
        return self.hw

    def knows_committed_end(self, shard_uid: ShardUid) -> bool:
        return self.knows

    async def wait_committed_end(self, shard_uid: ShardUid, *, timeout_s: float) -> bool:
        self.waited += 1
        if self.commits_while_waiting is not None:
            self.hw, self.knows = Offset(self.commits_while_waiting), True
        return self.knows

    async def wait_readable(self, shard_uid: ShardUid, beyond: Offset, *, timeout_s: float) -> None:
        return None

    async def append(self, *_: Any, **__: Any) -> tuple[Offset, int]:
        raise AssertionError("no appends here")

    def damaged(self, shard_uid: ShardUid) -> DamagedRange | None:
        return None

    def report_corruption(self, error: LogCorruptionError) -> None:
        raise AssertionError(error)


class LeaderNode:
    """The leader's node behind the forwarder: answers from the whole committed log."""

    def __init__(self, answer: ReadResult | Exception) -> None:
        self.answer = answer
        self.reads: list[ReadRequest] = []

    async def read(self, address: str, *, request: ReadRequest, **_: Any) -> ReadResult:
        self.reads.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def append(self, *_: Any, **__: Any) -> Any:
        raise AssertionError("no appends here")


def _image() -> tuple[MetadataImage, StreamUid, ShardMeta]:
    image = apply(nodes_image(3), create_stream("s", shard_count=1, replication_factor=3)).image
    stream = image.streams[StreamName("s")]
    shard = stream.shards[0]
    assert shard.leader is not None and len(shard.replicas) == 3
    return image, stream.uid, shard


def _stored(shard_uid: ShardUid) -> MemoryLogStore:
    """What every replica durably holds: epoch 1's marker at 0, an acknowledged record at 1."""
    store = MemoryLogStore()
    marker = epoch_marker(shard_uid, epoch=1, offset=Offset(0), arrival_ms=1_000)
    record = AppendBatch(
        shard_uid=shard_uid,
        first_offset=Offset(1),
        arrival_ms=1_000,
        records=[NewRecord("k", b"acknowledged")],
        epoch=1,
    )
    store.append([marker, record])
    return store


def _client(
    node_id: NodeId, shard_uid: ShardUid, local: StaleReplica, leader: LeaderNode
) -> ShardClient:
    return ShardClient(
        node_id=node_id,
        clock=ManualClock(),
        store=_stored(shard_uid),
        local=local,
        throttles=Throttles(UNLIMITED),
        forwarder=leader,
    )


def _leaders_answer(shard_uid: ShardUid) -> ReadResult:
    record = StoredRecord(
        offset=Offset(1), arrival_ms=1_000, partition_key="k", data=b"acknowledged"
    )
    return ReadResult(
        records=RecordPage.of([record]),
        log_start=Offset(0),
        readable_end=Offset(2),
        next_offset=Offset(2),
        end_is_committed_end=True,
    )


async def test_a_follower_that_holds_only_the_marker_below_its_hw_asks_the_leader() -> None:
    """test_a_thousand_open_shards' failure: a new shard's follower knew the marker committed
    (HW 1) but not yet the record after it; its read of [0, 1) found only the marker."""
    image, stream_uid, shard = _image()
    follower = next(n for n in shard.replicas if n != shard.leader)
    leader = LeaderNode(_leaders_answer(shard.uid))
    client = _client(follower, shard.uid, StaleReplica(1, knows=False), leader)
    result = await client.read(image, stream_uid, shard, READ)
    assert [r.data for r in result.records] == [b"acknowledged"]
    assert result.end_is_committed_end
    assert len(leader.reads) == 1


async def test_a_follower_page_with_records_is_served_here_but_never_at_the_tip() -> None:
    image, stream_uid, shard = _image()
    follower = next(n for n in shard.replicas if n != shard.leader)
    leader = LeaderNode(AssertionError("read here"))
    client = _client(follower, shard.uid, StaleReplica(2, knows=False), leader)
    result = await client.read(image, stream_uid, shard, READ)
    assert [r.data for r in result.records] == [b"acknowledged"]
    assert result.next_offset == result.readable_end == 2
    assert not result.end_is_committed_end  # the leader may hold more: not "caught up"
    behind = RecordsApi._millis_behind(
        result.records, 2, 2, 1_500, at_tip_possible=result.end_is_committed_end
    )
    assert behind == 500
    assert RecordsApi._millis_behind(result.records, 2, 2, 1_500, at_tip_possible=True) == 0


async def test_a_new_leader_answers_once_its_marker_commits_and_refuses_before() -> None:
    """The rolling upgrade's failure: the shard's new (preferred) leader had, as a follower,
    not yet learned that the last batch committed; read right after the change, its HW was
    the end of the shard, and the reader stopped before that batch."""
    image, stream_uid, shard = _image()
    assert shard.leader is not None
    nobody = LeaderNode(AssertionError("the leader is this node"))
    stale = StaleReplica(1, knows=False)
    with pytest.raises(ShardRefusedError) as refused:
        await _client(shard.leader, shard.uid, stale, nobody).read(image, stream_uid, shard, READ)
    assert refused.value.reason is RefusalReason.NOT_SHARD_LEADER  # the caller routes again
    assert stale.waited == 1

    committing = StaleReplica(1, knows=False, commits_while_waiting=3)
    client = _client(shard.leader, shard.uid, committing, nobody)
    result = await client.read(image, stream_uid, shard, READ)
    assert [r.data for r in result.records] == [b"acknowledged"]
    assert result.end_is_committed_end and result.readable_end == 3


async def test_an_answer_from_a_node_no_longer_leading_is_not_taken_for_the_end() -> None:
    image, stream_uid, shard = _image()
    follower = next(n for n in shard.replicas if n != shard.leader)
    lagging = dataclasses.replace(
        _leaders_answer(shard.uid),
        records=RecordPage(),
        readable_end=Offset(1),
        end_is_committed_end=False,
    )
    client = _client(follower, shard.uid, StaleReplica(0, knows=False), LeaderNode(lagging))
    with pytest.raises(ShardRefusedError) as refused:
        await client.read(image, stream_uid, shard, READ)
    assert refused.value.reason is RefusalReason.NOT_SHARD_LEADER


async def test_a_closed_shard_read_to_its_end_here_while_its_leader_is_away() -> None:
    """The fallback stays: a follower holding all of a closed shard answers its end itself."""
    image, stream_uid, shard = _image()
    closed = dataclasses.replace(shard, state=ShardState.CLOSED, end_offset=Offset(2))
    follower = next(n for n in shard.replicas if n != shard.leader)
    away = LeaderNode(ShardRefusedError(RefusalReason.UNAVAILABLE, shard_uid=shard.uid))
    client = _client(follower, shard.uid, StaleReplica(2, knows=False), away)
    at_end = dataclasses.replace(READ, start_offset=Offset(2))
    result = await client.read(image, stream_uid, closed, at_end)
    assert result.records == [] and result.end_is_committed_end

    # An open shard's end is the leader's to tell: the refusal stands.
    with pytest.raises(ShardRefusedError) as refused:
        await client.read(image, stream_uid, shard, at_end)
    assert refused.value.reason is RefusalReason.UNAVAILABLE
