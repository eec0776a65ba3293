"""Read-ahead: a shard's next page is read while the reader is still taking in the last one.

A reader draining a shard asks for the page at the offset where the previous one stopped, and
only once it has received and decoded that page (10,000 records: several milliseconds of its
CPU). When a read stops short of the shard's readable end, the node knows what comes next, so
it reads that page in a worker thread at once (`ShardClient.serve_read`), while the answer goes
out and the reader decodes it; the next request at that offset takes the page already read.
The reader then waits for its own decoding and the transfer only, not for the storage read too
(issue 18: the GetRecords drain).

What is read ahead is committed records, which never change; only what a reader may see of them
does, and that is checked again when the page is taken (`take`): the page must lie below the
readable end the request is served with, and its first record must not have passed the
retention the request carries (else the page is read afresh). A page of a sealed (encrypted)
stream is never kept, so a key's state is always that of the moment of the read. A page not
taken within `limits.read_ahead_ms` is dropped, and at most `limits.read_ahead_pages_max` are
held at once (the oldest goes first), which bounds the memory to that many pages of
`limits.get_records_bytes_max` (twice that where a reader's `ReadRequest.prepare` keeps its
door's writing of the page too: the gRPC door's records fields, written in the same worker
thread so that the page's writing also leaves the reader's wait). A read ahead that fails (a
corrupt block) is dropped: the reader's own read then meets the failure and reports it as any
read does.

Loop only; the reads themselves run in worker threads.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol

from broker.log.records import RecordPage
from broker.types import Offset, ShardUid


class Ahead(Protocol):
    """What a read ahead answers (`shards.ReadResult`): its records and the next offset."""

    @property
    def records(self) -> RecordPage: ...

    @property
    def next_offset(self) -> Offset: ...


class _Key(NamedTuple):
    shard_uid: ShardUid
    start_offset: Offset
    records_max: int
    bytes_max: int


class _Entry(NamedTuple):
    read: asyncio.Future[Ahead]
    expires_at: float  # the loop's clock


class ReadAhead:
    """The pages read ahead, by shard, offset and caps. Loop only."""

    def __init__(self, *, pages_max: int, keep_ms: int) -> None:
        assert pages_max >= 0
        assert keep_ms >= 0
        self._pages_max = pages_max
        self._keep_s = keep_ms / 1000
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, shard_uid: ShardUid, start_offset: Offset) -> bool:
        """Whether a page of `shard_uid` starting at `start_offset` is held (any caps)."""
        return any(
            key.shard_uid == shard_uid and key.start_offset == start_offset for key in self._entries
        )

    def start(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        records_max: int,
        bytes_max: int,
        read: Callable[[], Ahead],
    ) -> None:
        """Runs `read` (blocking: a worker thread) for the page at `start_offset` with these
        caps, unless that page is being read ahead already. The thread starts on the loop's
        next turn (a task's first step), so the caller's answer is written and handed to the
        transport first, without the read's thread holding the GIL against it."""
        if self._pages_max == 0:
            return
        key = _Key(shard_uid, start_offset, records_max, bytes_max)
        if key in self._entries:
            return
        loop = asyncio.get_running_loop()
        while len(self._entries) >= self._pages_max:
            self._entries.popitem(last=False)
        future = asyncio.ensure_future(asyncio.to_thread(read))
        future.add_done_callback(_retrieve_failure)
        self._entries[key] = _Entry(future, loop.time() + self._keep_s)
        loop.call_later(self._keep_s, self._expire, key, future)

    async def take(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        records_max: int,
        bytes_max: int,
        readable_end: Offset,
        arrival_ms_min: int,
    ) -> Ahead | None:
        """The page read ahead for this read, if it is still what the read would return (see
        the module docstring); None otherwise. Taken once: a second read reads afresh."""
        entry = self._entries.pop(_Key(shard_uid, start_offset, records_max, bytes_max), None)
        if entry is None or asyncio.get_running_loop().time() >= entry.expires_at:
            return None
        try:
            ahead = await asyncio.shield(entry.read)
        except Exception:
            return None  # the reader's own read meets the failure and reports it
        page = ahead.records
        if (
            not page
            or ahead.next_offset > readable_end
            or page.first_arrival_ms() < arrival_ms_min
            or sealed(page)
        ):
            return None
        return ahead

    def _expire(self, key: _Key, future: asyncio.Future[Ahead]) -> None:
        """Drops the page of `key` (its memory) if it is still the one read as `future`."""
        entry = self._entries.get(key)
        if entry is not None and entry.read is future:
            del self._entries[key]


def sealed(page: RecordPage) -> bool:
    """Whether any record of `page` is of a sealed (encrypted) stream."""
    runs = page.runs
    if runs is not None:
        return any(run.encrypted for run in runs)
    return any(record.encrypted for record in page.records())


def _retrieve_failure(future: asyncio.Future[Ahead]) -> None:
    """A read ahead nobody takes may fail unseen; its failure is read here so asyncio does
    not log it as never retrieved (the reader's own read reports it)."""
    if not future.cancelled():
        future.exception()
