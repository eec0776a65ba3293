"""ShardWriters: dense ordered offsets, arrival clamping, seal, failures, wait_for_data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from broker.errors import ErrorCode, ShoalError
from broker.log.group_commit import GroupCommitWriter
from broker.log.memory_store import MemoryLogStore
from broker.log.records import NewRecord
from broker.log.shard_writer import ShardSealedError, ShardWriters
from broker.log.store import LogStore
from broker.types import Offset, ShardUid
from tests.log.conformance import read_all
from tests.log.helpers import FailingStore, GatedStore

S1 = ShardUid(1)
S2 = ShardUid(2)


def records(count: int, tag: str = "") -> list[NewRecord]:
    return [NewRecord(partition_key=f"{tag}{i}", data=tag.encode()) for i in range(count)]


class Rig:
    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.writer = GroupCommitWriter(store)
        self.writer.start()
        self.shards = ShardWriters(store=store, writer=self.writer)


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        gate = rig.store
        if isinstance(gate, GatedStore):
            gate.release()
        rig.writer.stop()


@pytest.fixture
async def rig(rigs: list[Rig]) -> Rig:
    made = Rig(MemoryLogStore())
    rigs.append(made)
    return made


async def test_offsets_are_dense_and_in_call_order(rig: Rig) -> None:
    calls = [(S1 if i % 3 else S2, 1 + i % 4, f"c{i}-") for i in range(60)]
    results = await asyncio.gather(
        *(rig.shards.append(shard, records(n, tag), now_ms=1_000) for shard, n, tag in calls)
    )
    for shard in (S1, S2):
        expected: list[str] = []
        next_offset = 0
        for (call_shard, n, tag), (first, arrival) in zip(calls, results, strict=True):
            if call_shard != shard:
                continue
            assert first == next_offset  # call order on the loop is log order
            assert arrival == 1_000
            next_offset += n
            expected += [r.partition_key for r in records(n, tag)]
        stored = read_all(rig.store, shard)
        assert [r.partition_key for r in stored] == expected
        assert rig.shards.committed_end(shard) == next_offset == rig.store.log_end(shard)
    assert rig.writer.statistics().commits < len(calls)


async def test_arrival_is_clamped_and_survives_recovery(rigs: list[Rig]) -> None:
    store = MemoryLogStore()
    rig = Rig(store)
    rigs.append(rig)
    assert await rig.shards.append(S1, records(2), now_ms=1_000) == (0, 1_000)
    assert await rig.shards.append(S1, records(1), now_ms=500) == (2, 1_000)  # clock went back
    assert await rig.shards.append(S1, records(1), now_ms=2_000) == (3, 2_000)
    rig.writer.stop()

    again = Rig(store)  # a restarted node: state comes back from the store
    rigs.append(again)
    assert again.shards.committed_end(S1) == 4
    assert await again.shards.append(S1, records(1), now_ms=10) == (4, 2_000)


async def test_seal_waits_for_in_flight_appends_and_refuses_new_ones(rigs: list[Rig]) -> None:
    store = GatedStore()
    rig = Rig(store)
    rigs.append(rig)
    first = asyncio.create_task(rig.shards.append(S1, records(3), now_ms=1))
    await store.wait_entered()  # first is inside the held commit
    second = asyncio.create_task(rig.shards.append(S1, records(2), now_ms=1))
    other = asyncio.create_task(rig.shards.append(S2, records(1), now_ms=1))
    for _ in range(5):  # let second and other get their offsets and queue
        await asyncio.sleep(0)
    sealing = asyncio.create_task(rig.shards.seal(S1))
    await asyncio.sleep(0)
    with pytest.raises(ShardSealedError):
        await rig.shards.append(S1, records(1), now_ms=1)
    assert not sealing.done()
    store.release()
    assert await sealing == 5
    assert await first == (0, 1)
    assert await second == (3, 1)
    assert await other == (0, 1)
    assert await rig.shards.seal(S1) == 5  # idempotent
    with pytest.raises(ShardSealedError):
        await rig.shards.append(S1, records(1), now_ms=1)
    assert rig.shards.committed_end(S1) == 5
    assert store.log_end(S1) == 5


async def test_committed_end_advances_even_if_the_caller_is_cancelled(rigs: list[Rig]) -> None:
    store = GatedStore()
    rig = Rig(store)
    rigs.append(rig)
    task = asyncio.create_task(rig.shards.append(S1, records(4), now_ms=1))
    await store.wait_entered()
    task.cancel()
    store.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await rig.shards.seal(S1) == 4
    assert rig.shards.committed_end(S1) == 4


async def test_a_failed_write_fails_the_shard_until_forgotten(rigs: list[Rig]) -> None:
    store = FailingStore()
    rig = Rig(store)
    rigs.append(rig)
    store.fail_next = 1
    with pytest.raises(ShoalError) as raised:
        await rig.shards.append(S1, records(2), now_ms=1)
    assert raised.value.code is ErrorCode.INTERNAL_FAILURE
    with pytest.raises(ShoalError):
        await rig.shards.append(S1, records(1), now_ms=1)
    with pytest.raises(ShoalError):
        await rig.shards.seal(S1)
    assert rig.shards.committed_end(S1) == 0
    assert await rig.shards.append(S2, records(1), now_ms=1) == (0, 1)  # other shards go on

    rig.shards.forget(S1)  # recovery: the end comes back from the store
    assert await rig.shards.append(S1, records(1), now_ms=1) == (0, 1)


async def test_wait_for_data(rig: Rig) -> None:
    waiting = asyncio.create_task(rig.shards.wait_for_data(S1, Offset(0), timeout_s=10))
    await asyncio.sleep(0)
    assert not waiting.done()
    await rig.shards.append(S1, records(1), now_ms=1)
    assert await waiting is True
    assert await rig.shards.wait_for_data(S1, Offset(0), timeout_s=0) is True
    assert await rig.shards.wait_for_data(S1, Offset(1), timeout_s=0.01) is False

    sealed_wait = asyncio.create_task(rig.shards.wait_for_data(S1, Offset(1), timeout_s=10))
    await asyncio.sleep(0)
    assert await rig.shards.seal(S1) == 1
    assert await sealed_wait is False  # sealed: nothing will ever be at offset 1
