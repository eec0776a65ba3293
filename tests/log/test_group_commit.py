"""GroupCommitWriter: grouping, limits per group, backpressure, failures, stop."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.errors import ErrorCode, ShoalError
from broker.log.group_commit import GroupCommitWriter
from broker.log.records import AppendBatch
from broker.log.store import LogStore, LogStoreError
from broker.types import ShardUid
from tests.log.conformance import batch, read_all
from tests.log.helpers import FailingStore, GatedStore

WriterFactory = Callable[..., GroupCommitWriter]


@pytest.fixture
async def make_writer() -> AsyncIterator[WriterFactory]:
    started: list[GroupCommitWriter] = []

    def make(store: LogStore, **kwargs: Any) -> GroupCommitWriter:
        writer = GroupCommitWriter(store, **kwargs)
        writer.start()
        started.append(writer)
        return writer

    yield make
    for writer in started:
        writer.stop()


def const(value: AppendBatch) -> Callable[[], AppendBatch]:
    return lambda: value


def batches_for(shards: int, per_shard: int) -> list[AppendBatch]:
    return [batch(ShardUid(s), i, 1, arrival_ms=1) for i in range(per_shard) for s in range(shards)]


async def test_queued_appends_share_one_commit(make_writer: WriterFactory) -> None:
    """While the thread is held in the first commit, everything else queues; on release it
    all goes down in one more commit: 2 commits for 40 appends over 4 shards."""
    store = GatedStore()
    writer = make_writer(store)
    first, *rest = batches_for(shards=4, per_shard=10)
    first_done = await writer.submit(const(first))
    await store.wait_entered()
    futures = [await writer.submit(const(b)) for b in rest]
    assert writer.statistics().queued_batches == len(rest)
    store.release()
    await asyncio.gather(first_done, *futures)
    stats = writer.statistics()
    assert stats.commits == 2
    assert stats.batches == 40
    assert stats.records == 40
    assert stats.queued_batches == 0
    assert store.append_calls == [1, 39]
    for s in range(4):
        assert [r.offset for r in read_all(store, ShardUid(s))] == list(range(10))


async def test_groups_respect_record_and_byte_caps(make_writer: WriterFactory) -> None:
    store = GatedStore()
    # Each batch: 2 records of 3-byte keys + 3-byte data = 12 bytes.
    writer = make_writer(store, group_records_max=4, group_bytes_max=1_000)
    batches = [batch(ShardUid(1), 2 * i, 2, arrival_ms=1) for i in range(7)]
    held = await writer.submit(const(batches[0]))
    await store.wait_entered()
    futures = [await writer.submit(const(b)) for b in batches[1:]]
    store.release()
    await asyncio.gather(held, *futures)
    assert store.append_calls == [1, 2, 2, 2]

    bytes_capped = GatedStore()
    writer = make_writer(bytes_capped, group_records_max=1_000, group_bytes_max=30)
    held = await writer.submit(const(batches[0]))
    await bytes_capped.wait_entered()
    futures = [await writer.submit(const(b)) for b in batches[1:]]
    bytes_capped.release()
    await asyncio.gather(held, *futures)
    assert bytes_capped.append_calls == [1, 2, 2, 2]


async def test_concurrent_appends_all_become_durable(make_writer: WriterFactory) -> None:
    store = GatedStore()
    store.release()
    writer = make_writer(store)
    batches = batches_for(shards=5, per_shard=40)

    async def append_shard(s: int) -> None:
        for b in batches[s::5]:
            await writer.append(b)

    await asyncio.gather(*(append_shard(s) for s in range(5)))
    stats = writer.statistics()
    assert stats.batches == 200
    assert stats.commits <= 200
    assert all(store.log_end(ShardUid(s)) == 40 for s in range(5))


async def test_full_queue_makes_appends_wait(make_writer: WriterFactory) -> None:
    store = GatedStore()
    writer = make_writer(store, queue_batches_max=2)
    b0, b1, b2 = (batch(ShardUid(1), i, 1, arrival_ms=1) for i in range(3))
    assert writer.has_room(2) and not writer.has_room(3)
    f0 = await writer.submit(const(b0))
    await store.wait_entered()  # b0 is in the (held) commit: one slot taken
    assert writer.has_room(1) and not writer.has_room(2)
    f1 = await writer.submit(const(b1))  # queued: the second slot
    assert not writer.has_room(1)
    third = asyncio.create_task(writer.append(b2))
    for _ in range(20):  # give it every chance to get in; only the writer can free a slot
        await asyncio.sleep(0)
    assert not third.done()
    assert writer.statistics().queued_batches == 1  # b1; b2 is waiting for a slot
    store.release()
    await asyncio.gather(f0, f1, third)
    assert store.log_end(ShardUid(1)) == 3
    assert writer.has_room(2)


async def test_failed_commit_fails_its_group_and_the_writer_goes_on(
    make_writer: WriterFactory,
) -> None:
    store = FailingStore()
    store.fail_next = 1
    writer = make_writer(store)
    with pytest.raises(ShoalError) as raised:
        await writer.append(batch(ShardUid(1), 0, 1, arrival_ms=1))
    assert raised.value.code is ErrorCode.INTERNAL_FAILURE
    assert isinstance(raised.value.__cause__, LogStoreError)
    await writer.append(batch(ShardUid(2), 0, 1, arrival_ms=1))
    stats = writer.statistics()
    assert stats.failed_commits == 1
    assert stats.commits == 1
    assert store.log_end(ShardUid(1)) == 0
    assert store.log_end(ShardUid(2)) == 1


async def test_stop_drains_then_refuses(make_writer: WriterFactory) -> None:
    store = GatedStore()
    writer = make_writer(store)
    futures = [await writer.submit(const(b)) for b in batches_for(shards=1, per_shard=5)]
    await store.wait_entered()
    store.release()
    writer.stop()
    writer.stop()  # idempotent
    await asyncio.gather(*futures)
    assert store.log_end(ShardUid(0)) == 5
    with pytest.raises(ShoalError) as raised:
        await writer.append(batch(ShardUid(0), 5, 1, arrival_ms=1))
    assert raised.value.code is ErrorCode.UNAVAILABLE


_EXIT_WITHOUT_STOP = """
import asyncio
import contextvars
from broker.log.memory_store import MemoryLogStore
from broker.log.group_commit import GroupCommitWriter

async def main() -> None:
    GroupCommitWriter(MemoryLogStore()).start()  # and never stopped: the loop "died"

asyncio.run(main())
"""


def test_a_process_that_never_stops_its_writer_still_exits() -> None:
    """The writer thread is not a daemon (queued writes finish at exit), but a process whose
    loop died without `stop()` must not wait for it forever (seen: pytest hanging after its
    summary when a driver crashed in a fixture)."""
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_STOP],
        cwd=Path(__file__).resolve().parents[2],
        timeout=30,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


async def test_when_writing_runs_on_the_loop_while_the_group_is_written(
    make_writer: WriterFactory,
) -> None:
    """A put prepares its answer during the write (issue 18): the callback runs on the loop
    while the store syncs the group (the gate after the write is shut), after the thread
    encoded it, and before the group is durable; one that raises costs the others nothing."""
    store = GatedStore(at_sync=True)
    writer = make_writer(store)
    loop = asyncio.get_running_loop()
    ran: list[tuple[str, bool]] = []
    written: asyncio.Future[None] = loop.create_future()
    first = batch(ShardUid(1), 0, 3, arrival_ms=1)

    def failing() -> None:
        raise RuntimeError("a bug in one callback")

    def last() -> None:
        ran.append(("b", durable.done()))
        written.set_result(None)

    writer.when_writing(lambda: ran.append(("a", durable.done())))
    writer.when_writing(failing)
    writer.when_writing(last)
    durable = await writer.submit(const(first))
    await store.wait_entered()
    await asyncio.wait_for(written, timeout=30)
    assert ran == [("a", False), ("b", False)]
    assert first._value is not None  # encoded by the thread before the store took it
    assert not durable.done()
    store.release()
    await asyncio.wait_for(durable, timeout=30)


async def test_when_writing_waits_for_the_next_group(make_writer: WriterFactory) -> None:
    """A callback given while a group is being written runs once, with the next group's
    write, not at the end of that one's (it would then run before the test, woken by the
    first group's answer, submits the second)."""
    loop = asyncio.get_running_loop()
    second_submitted = False
    seen: list[bool] = []  # whether the second group was submitted when the callback ran
    ran: asyncio.Future[None] = loop.create_future()

    def callback() -> None:
        seen.append(second_submitted)
        ran.set_result(None)

    store = GatedStore(at_sync=True)  # the callback is given while the first group syncs
    writer = make_writer(store)
    first = await writer.submit(const(batch(ShardUid(1), 0, 1, arrival_ms=1)))
    await store.wait_entered()
    writer.when_writing(callback)
    store.release()
    await asyncio.wait_for(first, timeout=30)
    second_submitted = True
    second = await writer.submit(const(batch(ShardUid(1), 1, 1, arrival_ms=1)))
    await asyncio.wait_for(ran, timeout=30)
    await asyncio.wait_for(second, timeout=30)
    assert seen == [True]


async def test_when_writing_waits_for_the_store_to_write(make_writer: WriterFactory) -> None:
    """The callbacks run once the store has written the group, not while it prepares the
    write (issue 18): the write holds the GIL, so a loop woken earlier only takes it from the
    writer thread; they run during the fsync, which holds none."""
    store = GatedStore()  # shut before the write
    writer = make_writer(store)
    ran: list[bool] = []
    writer.when_writing(lambda: ran.append(durable.done()))
    durable = await writer.submit(const(batch(ShardUid(1), 0, 2, arrival_ms=1)))
    await store.wait_entered()
    for _ in range(20):  # loop steps and a little time, for a callback that was announced
        await asyncio.sleep(0.005)
    assert ran == []
    store.release()
    await asyncio.wait_for(durable, timeout=30)
    assert ran == [False]


_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


async def test_when_writing_runs_in_the_context_it_was_given_in(make_writer: WriterFactory) -> None:
    """A put's answer names the caller's account (a context variable of the request): the
    callback sees the context of the code that gave it, not the writer thread's."""
    store = GatedStore()
    store.release()
    writer = make_writer(store)
    seen: list[str] = []
    token = _CALLER.set("account-1")
    try:
        writer.when_writing(lambda: seen.append(_CALLER.get()))
    finally:
        _CALLER.reset(token)
    durable = await writer.submit(const(batch(ShardUid(1), 0, 1, arrival_ms=1)))
    await asyncio.wait_for(durable, timeout=30)
    assert seen == ["account-1"]
