"""Read-ahead (service/read_ahead.py): a read that stops short of the readable end reads the
next page at once, and the next read at that offset takes it; a page that is no longer what
the read would return (retention, other caps, a failure, a sealed stream) is read afresh.

Method: `ShardClient.serve_read` over a real RocksDB store behind a recorder of its page reads
(which can refuse a page, to show where an answer came from), and a stand-in for the local
replica's readable end."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.log.records import AppendBatch, LogCorruptionError, NewRecord, RecordPage, StoredRecord
from broker.log.rocks_store import RocksLogStore
from broker.meta.image import ShardMeta, ShardState
from broker.replication.driver import DamagedRange
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.service.read_ahead import ReadAhead
from broker.service.shards import ReadRequest, ReadResult, ReadThrottle, ShardClient
from broker.service.throughput import Throttles
from broker.types import NodeId, Offset, ShardIndex, ShardUid
from tests.log.test_encrypted_store import Keys
from tests.service.test_read_ends import UNLIMITED

UID = ShardUid(9)
_SHARD = ShardMeta(
    index=ShardIndex(0),
    uid=UID,
    hash_key_start=0,
    hash_key_end=2**128 - 1,
    parent_index=None,
    adjacent_parent_index=None,
    created_ms=1,
    state=ShardState.OPEN,
    leader=NodeId("node-1"),
)
BATCHES = 4
PER_BATCH = 10
ARRIVAL_MS = 1_000_000  # batch b arrived at ARRIVAL_MS + b
WAIT_S = 10.0  # bound on every wait for a worker thread


def _request(start: int, *, records_max: int = PER_BATCH, arrival_ms_min: int = 0) -> ReadRequest:
    return ReadRequest(
        start_offset=Offset(start),
        records_max=records_max,
        bytes_max=1 << 20,
        arrival_ms_min=arrival_ms_min,
        throttle=ReadThrottle.GET_RECORDS,
    )


class Recorder:
    """The store's page reads: their start offsets, a signal per start, and starts refused
    (reading one raises `refusal`)."""

    def __init__(self, store: RocksLogStore) -> None:
        self.store = store
        self.starts: list[int] = []
        self.refused: dict[int, Exception] = {}
        self._read = store.read_page
        self._signals: dict[int, threading.Event] = {}
        store.read_page = self.read_page  # type: ignore[method-assign]

    def read_page(self, shard_uid: ShardUid, **kwargs: int) -> RecordPage:
        start = kwargs["start_offset"]
        self.starts.append(start)
        try:
            if start in self.refused:
                raise self.refused[start]
            return self._read(shard_uid, **kwargs)  # type: ignore[arg-type]
        finally:
            self.signal(start).set()

    def signal(self, start: int) -> threading.Event:
        return self._signals.setdefault(start, threading.Event())

    async def read_at(self, start: int) -> None:
        """Until the page at `start` was read (the read ahead ran), at most WAIT_S."""
        assert await asyncio.to_thread(self.signal(start).wait, WAIT_S), start


class Replica:
    """This node leads the shard; everything stored is committed."""

    def __init__(self, hw: int) -> None:
        self.hw = Offset(hw)
        self.corruptions: list[LogCorruptionError] = []

    def readable_end(self, shard_uid: ShardUid) -> Offset | None:
        return self.hw

    def knows_committed_end(self, shard_uid: ShardUid) -> bool:
        return True

    async def wait_committed_end(self, shard_uid: ShardUid, *, timeout_s: float) -> bool:
        return True

    async def wait_readable(self, shard_uid: ShardUid, beyond: Offset, *, timeout_s: float) -> None:
        return None

    async def append(self, *_: Any, **__: Any) -> tuple[Offset, int]:
        raise AssertionError("no appends here")

    def damaged(self, shard_uid: ShardUid) -> DamagedRange | None:
        return None

    def report_corruption(self, error: LogCorruptionError) -> None:
        self.corruptions.append(error)


def _filled_store(path: Path, *, sealed: bool) -> RocksLogStore:
    rocks = RocksLogStore(path, keys=Keys() if sealed else None)
    rocks.append(
        [
            AppendBatch(
                shard_uid=UID,
                first_offset=Offset(b * PER_BATCH),
                arrival_ms=ARRIVAL_MS + b,
                records=[NewRecord(f"k{b}-{i}", b"d" * (i + 1)) for i in range(PER_BATCH)],
            )
            for b in range(BATCHES)
        ]
    )
    return rocks


@pytest.fixture(params=[False, True], ids=["clear", "sealed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RocksLogStore]:
    rocks = _filled_store(tmp_path / "log", sealed=request.param)
    yield rocks
    rocks.close()


@pytest.fixture
def clear_store(tmp_path: Path) -> Iterator[RocksLogStore]:
    """The tests of what a read ahead returns: sealed (encrypted) pages are not read ahead."""
    rocks = _filled_store(tmp_path / "log", sealed=False)
    yield rocks
    rocks.close()


def _client(store: RocksLogStore, replica: Replica) -> ShardClient:
    return ShardClient(
        node_id=NodeId("node-1"),
        clock=ManualClock(),
        store=store,
        local=replica,
        throttles=Throttles(UNLIMITED),
    )


def _sealed(store: RocksLogStore) -> bool:
    return isinstance(store._keys, Keys)


def _data(result: ReadResult) -> list[bytes]:
    return [record.data for record in result.records.records()]


async def _fresh(store: RocksLogStore, request: ReadRequest, hw: int) -> ReadResult:
    """What a client without read-ahead answers."""
    client = _client(store, Replica(hw))
    client.read_ahead = ReadAhead(pages_max=0, keep_ms=1_000)
    return await client.serve_read(UID, request)


async def test_the_next_page_is_read_ahead_and_the_next_read_takes_it(
    store: RocksLogStore,
) -> None:
    end = BATCHES * PER_BATCH
    expected = [await _fresh(store, _request(start), end) for start in range(0, end, PER_BATCH)]
    recorder = Recorder(store)
    client = _client(store, Replica(end))
    first = await client.serve_read(UID, _request(0))
    assert _data(first) == _data(expected[0])
    if _sealed(store):
        assert len(client.read_ahead) == 0  # a sealed page is never read ahead
        assert recorder.starts == [0]
        return
    await recorder.read_at(PER_BATCH)
    recorder.refused[PER_BATCH] = AssertionError("the page at 10 was read ahead already")
    second = await client.serve_read(UID, _request(PER_BATCH))
    assert _data(second) == _data(expected[1])
    assert second.next_offset == expected[1].next_offset
    assert second.readable_end == end and second.end_is_committed_end
    for start in range(2 * PER_BATCH, end, PER_BATCH):
        page = await client.serve_read(UID, _request(start))
        assert _data(page) == _data(expected[start // PER_BATCH])
    # Each page read once; none past the end (the last page reached it).
    assert sorted(recorder.starts) == list(range(0, end, PER_BATCH))
    assert len(client.read_ahead) == 0


async def test_a_page_read_ahead_comes_with_the_readers_prepare_of_it(
    clear_store: RocksLogStore,
) -> None:
    """`ReadRequest.prepare` (the gRPC door's records, written in the worker thread) runs on
    each page read ahead, and the read that takes the page gets its result; a page the reader
    waits on is answered without it (its door writes it as it answers)."""
    end = BATCHES * PER_BATCH
    recorder = Recorder(clear_store)
    client = _client(clear_store, Replica(end))
    prepared_in: list[str] = []

    def prepare(page: RecordPage) -> bytes:
        prepared_in.append(threading.current_thread().name)
        return b"|".join(record.data for record in page.records())

    first = await client.serve_read(UID, dataclasses.replace(_request(0), prepare=prepare))
    assert first.records and first.prepared is None
    await recorder.read_at(PER_BATCH)
    second = await client.serve_read(UID, dataclasses.replace(_request(PER_BATCH), prepare=prepare))
    assert _data(second) and second.prepared == b"|".join(_data(second))
    assert prepared_in and threading.main_thread().name not in prepared_in


async def test_a_readers_first_page_is_read_ahead_from_its_iterators_position(
    store: RocksLogStore,
) -> None:
    """`read_ahead_from` (GetShardIterator's position) reads the page there ahead, and the
    reader's first read takes it; a sealed page is not kept (read afresh), and nothing is read
    ahead at or past the readable end or where this node does not lead."""
    end = BATCHES * PER_BATCH
    expected = await _fresh(store, _request(PER_BATCH), end)
    recorder = Recorder(store)
    client = _client(store, Replica(end))
    client.read_ahead_from(_SHARD, _request(PER_BATCH))
    await recorder.read_at(PER_BATCH)
    if not _sealed(store):
        recorder.refused[PER_BATCH] = AssertionError("the page at 10 was read ahead already")
    page = await client.serve_read(UID, _request(PER_BATCH))
    assert _data(page) == _data(expected)
    assert recorder.starts.count(PER_BATCH) == (2 if _sealed(store) else 1)
    if not _sealed(store):
        # That read stopped short of the end: the next page's read ahead (never for a sealed
        # page) starts in a worker thread, maybe only now; it is not one of the reads that the
        # calls below must not start.
        await recorder.read_at(2 * PER_BATCH)
    before = len(recorder.starts)
    client.read_ahead_from(_SHARD, _request(end))
    client.read_ahead_from(dataclasses.replace(_SHARD, leader=NodeId("node-2")), _request(0))
    await asyncio.sleep(0)
    assert len(recorder.starts) == before and len(client.read_ahead) <= 1


async def test_a_page_read_ahead_that_passed_retention_or_other_caps_is_read_again(
    clear_store: RocksLogStore,
) -> None:
    end = BATCHES * PER_BATCH
    recorder = Recorder(clear_store)
    client = _client(clear_store, Replica(end))
    await client.serve_read(UID, _request(0))
    await recorder.read_at(PER_BATCH)
    # The read ahead's first record (batch 1) is now past retention: batch 2 on is returned.
    retained = _request(PER_BATCH, arrival_ms_min=ARRIVAL_MS + 2)
    page = await client.serve_read(UID, retained)
    assert page.records.first_arrival_ms() == ARRIVAL_MS + 2
    assert recorder.starts.count(PER_BATCH) == 2
    assert _data(page) == _data(await _fresh(clear_store, retained, end))

    await recorder.read_at(3 * PER_BATCH)  # read ahead after that page
    smaller = _request(3 * PER_BATCH, records_max=3)
    page = await client.serve_read(UID, smaller)
    assert _data(page) == _data(await _fresh(clear_store, smaller, end))
    assert len(page.records) == 3


async def test_a_read_ahead_that_fails_is_dropped_and_the_readers_own_read_reports(
    clear_store: RocksLogStore,
) -> None:
    end = BATCHES * PER_BATCH
    recorder = Recorder(clear_store)
    replica = Replica(end)
    client = _client(clear_store, replica)
    recorder.refused[PER_BATCH] = LogCorruptionError("a corrupt block")
    await client.serve_read(UID, _request(0))
    await recorder.read_at(PER_BATCH)
    assert replica.corruptions == []  # the read ahead reports nothing itself
    with pytest.raises(ShardRefusedError) as refused:
        await client.serve_read(UID, _request(PER_BATCH))
    assert refused.value.reason is RefusalReason.DAMAGED
    assert len(replica.corruptions) == 1
    del recorder.refused[PER_BATCH]  # repaired: read again, no read ahead left over
    page = await client.serve_read(UID, _request(PER_BATCH))
    assert _data(page) == _data(await _fresh(clear_store, _request(PER_BATCH), end))


async def test_a_page_read_ahead_past_the_end_a_read_is_served_with_is_not_taken(
    clear_store: RocksLogStore,
) -> None:
    """A read served with a lower end (another replica's view) never returns records past it."""
    end = BATCHES * PER_BATCH
    recorder = Recorder(clear_store)
    replica = Replica(end)
    client = _client(clear_store, replica)
    await client.serve_read(UID, _request(0, records_max=15))  # ahead: [15, 30)
    await recorder.read_at(15)
    replica.hw = Offset(20)
    page = await client.serve_read(UID, _request(15, records_max=15))
    assert [r.offset for r in page.records.records()] == list(range(15, 20))
    assert recorder.starts.count(15) == 2


async def test_pages_are_held_within_their_count_and_time() -> None:
    def answer(page: RecordPage) -> ReadResult:
        return ReadResult(
            records=page, log_start=Offset(0), readable_end=Offset(99), next_offset=Offset(99)
        )

    def start(ahead: ReadAhead, offset: int, page: RecordPage) -> None:
        ahead.start(
            UID,
            start_offset=Offset(offset),
            records_max=1,
            bytes_max=1,
            read=lambda: answer(page),
        )

    async def take(ahead: ReadAhead, offset: int) -> object:
        return await ahead.take(
            UID,
            start_offset=Offset(offset),
            records_max=1,
            bytes_max=1,
            readable_end=Offset(99),
            arrival_ms_min=0,
        )

    page = RecordPage.of([StoredRecord(Offset(5), 7, "k", b"")])
    sealed = RecordPage.of([StoredRecord(Offset(5), 7, "k", b"", encrypted=True)])
    for pages_max, keep_ms, held, taken in [
        (1, 1_000, page, True),
        (0, 1_000, page, False),  # read-ahead off
        (1, 0, page, False),  # past its time
        (1, 1_000, sealed, False),
    ]:
        ahead = ReadAhead(pages_max=pages_max, keep_ms=keep_ms)
        start(ahead, 5, held)
        assert (await take(ahead, 5) is not None) == taken
        assert await take(ahead, 5) is None  # taken once

    ahead = ReadAhead(pages_max=2, keep_ms=1_000)
    for offset in (1, 2, 3):
        start(ahead, offset, page)
    assert len(ahead) == 2
    assert await take(ahead, 1) is None  # the oldest went first
    assert await take(ahead, 2) is not None
    assert await take(ahead, 3) is not None
