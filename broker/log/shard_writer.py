"""`ShardWriters`: the single-node write path of every shard, above the group commit.

Per shard it assigns offsets and arrival times, hands batches to the `GroupCommitWriter`, and
tracks the committed end: the offset below which every record is durable and readable. Later,
replication sits between the offset assignment and the committed end.

Everything runs on the asyncio loop (the writer's loop); none of it is thread-safe.

Invariants, per shard:
- Offsets are assigned synchronously, in the same loop step as the enqueue, so the order of
  appends on the loop is the log order and offsets are dense (no await between assigning and
  queueing can leave a hole).
- arrival_ms = max(now_ms, the shard's previous arrival): non-decreasing, which the time index
  and the store rely on (the store asserts it).
- committed_end <= next_offset; it advances in offset order only, so a reader of
  [start, committed_end) never sees a gap.
- Once an append fails, the shard is failed: its later appends fail, and no offset at or after
  the failed batch is acknowledged. Whether the failed batch reached the disk is unknown; the
  node recovers by restarting (or `forget()`), which re-reads the end from the store.

State is created lazily from `store.log_end` / `store.last_arrival_ms`, one point read per shard
per process lifetime, made on the loop because it is cheap and keeps assignment synchronous.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.errors import ErrorCode, ShoalError
from broker.log.group_commit import GroupCommitWriter
from broker.log.records import AppendBatch, NewRecord
from broker.log.store import LogStore
from broker.types import Offset, ShardUid


class ShardSealedError(Exception):
    """The shard no longer takes appends (it is being split, merged or closed).

    Internal, not a `ShoalError`: the router re-resolves the hash key to the child shards
    (`limits.route_retry_attempts_max`) rather than telling the client.
    """

    def __init__(self, shard_uid: ShardUid) -> None:
        self.shard_uid = shard_uid
        super().__init__(f"shard {shard_uid} is sealed")


@dataclass(slots=True, kw_only=True)
class _ShardState:
    next_offset: Offset  # the offset the next append gets
    committed_end: Offset  # every offset below is durable (what readers may see)
    last_arrival_ms: int
    sealed: bool = False
    failed: bool = False
    pending: int = 0  # appends with offsets assigned but not yet resolved
    # Durable batches above committed_end, first offset -> end offset; empty with one writer
    # thread, kept so that out-of-order completion could never expose a gap.
    durable_ahead: dict[Offset, Offset] = field(default_factory=dict)
    # Set and replaced on every change of committed_end, sealed, failed or pending.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class ShardWriters:
    """Appends to every shard this node leads. Loop-only; see the module docstring."""

    def __init__(self, *, store: LogStore, writer: GroupCommitWriter) -> None:
        self._store = store
        self._writer = writer
        self._shards: dict[ShardUid, _ShardState] = {}

    async def append(
        self, shard_uid: ShardUid, records: Sequence[NewRecord], *, now_ms: int
    ) -> tuple[Offset, int]:
        """Appends `records` in order; returns (first offset, arrival_ms) once durable.

        Raises `ShardSealedError` if the shard is sealed (before or while waiting for queue
        space), and `ShoalError(INTERNAL_FAILURE)` if the write failed.
        """
        assert records, "append of no records"
        assert now_ms >= 0
        state = self._state(shard_uid)
        if state.sealed:
            raise ShardSealedError(shard_uid)
        assigned: list[AppendBatch] = []

        def make_batch() -> AppendBatch:
            # Runs on the loop in the step that enqueues (GroupCommitWriter.submit).
            if state.sealed:
                raise ShardSealedError(shard_uid)
            if state.failed:
                raise _failed(shard_uid)
            batch = AppendBatch(
                shard_uid=shard_uid,
                first_offset=state.next_offset,
                arrival_ms=max(now_ms, state.last_arrival_ms),
                records=tuple(records),
            )
            state.next_offset = batch.end_offset
            state.last_arrival_ms = batch.arrival_ms
            state.pending += 1
            assigned.append(batch)
            return batch

        future = await self._writer.submit(make_batch)
        (batch,) = assigned
        # A done-callback, not code after the await: the committed end must advance even if
        # our caller is cancelled while the write is in flight.
        future.add_done_callback(lambda done: self._on_resolved(state, batch, done))
        await asyncio.shield(future)  # raises the writer's ShoalError if the write failed
        if state.committed_end < batch.end_offset:
            # Durable, but an earlier batch of this shard failed: not acknowledged (docstring).
            raise _failed(shard_uid)
        return batch.first_offset, batch.arrival_ms

    def committed_end(self, shard_uid: ShardUid) -> Offset:
        """Readers may read [log_start, committed_end)."""
        return self._state(shard_uid).committed_end

    async def seal(self, shard_uid: ShardUid) -> Offset:
        """Refuses further appends at once; returns the final end once all assigned are durable.

        Idempotent. Raises `ShoalError(INTERNAL_FAILURE)` if an append of the shard failed (its
        end is then unknown until recovery). Waits on the writer thread, which resolves every
        batch; callers wanting a deadline wrap it in `asyncio.timeout`.
        """
        state = self._state(shard_uid)
        if not state.sealed:
            state.sealed = True
            state.notify()  # wait_for_data callers stop waiting for data that cannot come
        while state.pending > 0:
            await state.changed.wait()
        if state.failed:
            raise _failed(shard_uid)
        assert state.committed_end == state.next_offset, (state.committed_end, state.next_offset)
        assert not state.durable_ahead
        return state.committed_end

    async def wait_for_data(self, shard_uid: ShardUid, after: Offset, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for the record at offset `after` to be readable.

        Returns whether it is (committed_end > after). Returns False early if the shard is
        sealed or failed with nothing at `after`, since then nothing will arrive there.
        """
        assert timeout_s >= 0
        state = self._state(shard_uid)
        try:
            async with asyncio.timeout(timeout_s):
                while state.committed_end <= after:
                    if state.failed or (state.sealed and state.pending == 0):
                        break
                    await state.changed.wait()
        except TimeoutError:
            pass
        return state.committed_end > after

    def forget(self, shard_uid: ShardUid) -> None:
        """Drops the shard's state (stream deleted, or recovery after a failed append).

        Call it only when no append of the shard is in flight (after `seal`, or once deleted
        streams are refused); the next use re-reads the end from the store.
        """
        self._shards.pop(shard_uid, None)

    def _state(self, shard_uid: ShardUid) -> _ShardState:
        state = self._shards.get(shard_uid)
        if state is None:
            end = self._store.log_end(shard_uid)
            state = _ShardState(
                next_offset=end,
                committed_end=end,
                last_arrival_ms=self._store.last_arrival_ms(shard_uid),
            )
            self._shards[shard_uid] = state
        return state

    @staticmethod
    def _on_resolved(state: _ShardState, batch: AppendBatch, done: asyncio.Future[None]) -> None:
        """On the loop, when the batch's group commit has resolved."""
        assert state.pending > 0
        state.pending -= 1
        if done.cancelled() or done.exception() is not None:
            state.failed = True
        else:
            assert batch.first_offset >= state.committed_end, (batch.first_offset, state)
            state.durable_ahead[batch.first_offset] = batch.end_offset
            while state.committed_end in state.durable_ahead:
                state.committed_end = state.durable_ahead.pop(state.committed_end)
            assert state.committed_end <= state.next_offset
        state.notify()


def _failed(shard_uid: ShardUid) -> ShoalError:
    return ShoalError(
        ErrorCode.INTERNAL_FAILURE, f"an earlier write to shard {shard_uid} failed; retry later"
    )
