"""`GroupCommitWriter`: the one thread that writes shard logs, one WriteBatch per group.

Why a thread: rocksdict holds the GIL during `write` and blocks during the WAL fsync, so neither
may run on the asyncio loop (STYLE B.12). Why groups: an fsync costs the same for one record as
for thousands, so the thread takes everything queued (up to `limits.group_commit_bytes_max` and
`limits.group_commit_records_max`) and makes it durable with one `LogStore.append` (DESIGN §5).
Concurrent puts to one or many shards therefore share a WriteBatch and an fsync.

Lifecycle: `start()` on the loop thread; `append()` / `submit()` from that loop only; `stop()`
drains what is queued, then joins the thread. After `stop()`, appends fail with UNAVAILABLE.
The thread is not a daemon, so an exiting interpreter waits for what is queued; if the process
exits without `stop()` (its loop died of an exception), the idle thread notices the main thread
has ended and returns instead of keeping the process alive forever.

Backpressure: at most `queue_batches_max` batches wait for (or are in) a group commit; further
appends wait for a slot on the loop, so a slow disk slows producers instead of growing memory.

While a group is written: `when_writing` runs a callback on the loop once the store has written
the thread's next group and syncs it (`LogStore.append`'s `written`: after RocksDB's write, which
holds the GIL, before its WAL fsync, which does not), so that loop work which waits for nothing
but durability (a put's answer: sequence numbers, result entries; the load tracker's count) is
done during the fsync rather than after it, and never takes the GIL from the writer before the
write (announced earlier, the woken loop ran the callbacks ahead of RocksDB's write in a fifth
of the puts, issue 18).

Failure: if `store.append` raises, every batch of that group fails with
`ShoalError(INTERNAL_FAILURE)` (the store's exception as `__cause__`), an error event is logged,
and the thread keeps serving later groups. Whether those batches reached the disk is unknown;
callers treat them as not acknowledged (producers retry; Kinesis allows the duplicates).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.log.probe import StorageProbe
from broker.log.records import AppendBatch
from broker.log.store import LogStore

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupCommitStatistics:
    """Counters since start (an immutable snapshot)."""

    commits: int  # successful store.append calls
    failed_commits: int  # store.append calls that raised
    batches: int  # batches made durable
    records: int
    bytes: int  # record bytes (data + partition key), as AWS counts them
    queued_batches: int  # waiting for the writer thread right now


_Callback = tuple[contextvars.Context, Callable[[], object]]


@dataclass(slots=True, kw_only=True)
class _Pending:
    batch: AppendBatch
    size_bytes: int
    future: asyncio.Future[None]


class GroupCommitWriter:
    """Batches appends from the asyncio loop into group commits on a dedicated thread."""

    def __init__(
        self,
        store: LogStore,
        *,
        queue_batches_max: int = limits.append_queue_batches_max,
        group_bytes_max: int = limits.group_commit_bytes_max,
        group_records_max: int = limits.group_commit_records_max,
        probe: StorageProbe | None = None,
    ) -> None:
        assert queue_batches_max >= 1
        assert group_bytes_max >= 1
        assert group_records_max >= 1
        self._store = store
        self._probe = probe
        self._group_bytes_max = group_bytes_max
        self._group_records_max = group_records_max
        self._slots = asyncio.Semaphore(queue_batches_max)
        self._free_slots = queue_batches_max  # what `_slots` holds (`has_room`)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Guards _queue, _stopping and the counters; shared by the loop and the writer thread.
        self._condition = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        # Callbacks for the next group's write (`when_writing`), each with the context it was
        # given in: the loop appends, the thread pops (a deque's append and popleft are atomic).
        self._on_writing: collections.deque[_Callback] = collections.deque()
        self._stopping = False
        self._commits = 0
        self._failed_commits = 0
        self._batches = 0
        self._records = 0
        self._bytes = 0

    def start(self) -> None:
        """Starts the writer thread; call on the asyncio loop that will call `append`."""
        assert self._thread is None, "GroupCommitWriter.start() called twice"
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="shoal-log-writer", daemon=False)
        self._thread.start()

    async def append(self, batch: AppendBatch) -> None:
        """Returns once `batch` is durable. Waits for a queue slot first (backpressure)."""
        future = await self.submit(lambda: batch)
        # If our caller is cancelled, the write still goes ahead and nobody awaits its outcome;
        # retrieving it here keeps asyncio from reporting a never-retrieved exception.
        future.add_done_callback(_retrieve_outcome)
        await asyncio.shield(future)

    async def submit(self, make_batch: Callable[[], AppendBatch]) -> asyncio.Future[None]:
        """Waits for a queue slot, then calls `make_batch()` and queues its batch.

        `make_batch` runs on the loop in the same step as the enqueue, after the wait; so a
        caller that assigns offsets inside it gets log order == queue order, and a cancelled
        wait leaves no hole. If it raises, nothing is queued and the exception propagates.
        The returned future resolves when the batch is durable (or fails, see the docstring).
        """
        loop = self._loop
        assert loop is not None, "GroupCommitWriter.submit() before start()"
        assert asyncio.get_running_loop() is loop, "submit() only from the loop that started us"
        await self._slots.acquire()
        self._free_slots -= 1
        try:
            batch = make_batch()
            size_bytes = batch.size_bytes
            # limits.py guarantees the largest PutRecords fits one group commit.
            assert size_bytes <= self._group_bytes_max, size_bytes
            assert batch.count <= self._group_records_max, batch.count
            future: asyncio.Future[None] = loop.create_future()
            with self._condition:
                if self._stopping:
                    raise ShoalError(ErrorCode.UNAVAILABLE, error_messages.LOG_WRITER_STOPPING)
                self._queue.append(_Pending(batch=batch, size_bytes=size_bytes, future=future))
                self._condition.notify()
        except BaseException:
            self._slots.release()
            self._free_slots += 1
            raise
        return future

    def when_writing(self, callback: Callable[[], object]) -> None:
        """Runs `callback` on the loop once the store has written the thread's next group and
        syncs it (module docstring): at most once, and never when no group is written after
        this call (a write that fails leaves it to the next group). For work whose result is
        used only once the write is durable; it must not raise (an error is logged). It runs
        in the context it was given in (context variables: the caller's, as `call_soon`
        would). Loop only."""
        self._on_writing.append((contextvars.copy_context(), callback))

    def has_room(self, batches: int) -> bool:
        """Whether `batches` more can be submitted now without waiting for a slot."""
        return self._free_slots >= batches and not self._slots.locked()

    def stop(self) -> None:
        """Lets the thread finish what is queued, then joins it. Idempotent; blocks."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()

    def statistics(self) -> GroupCommitStatistics:
        with self._condition:
            return GroupCommitStatistics(
                commits=self._commits,
                failed_commits=self._failed_commits,
                batches=self._batches,
                records=self._records,
                bytes=self._bytes,
                queued_batches=len(self._queue),
            )

    # --- The writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        # Infinite on purpose: ends when stop() has been called and the queue is empty.
        while True:
            group = self._take_group()
            if group is None:
                return
            self._commit(group)

    def _take_group(self) -> list[_Pending] | None:
        """Blocks until something is queued; takes as much as one group may hold."""
        with self._condition:
            while not self._queue and not self._stopping:
                if not threading.main_thread().is_alive():  # exiting without stop()
                    return None
                self._condition.wait(timeout=limits.log_writer_idle_check_s)
            if not self._queue:
                return None
            group = [self._queue.popleft()]
            group_bytes = group[0].size_bytes
            group_records = group[0].batch.count
            while self._queue:
                head = self._queue[0]
                if group_bytes + head.size_bytes > self._group_bytes_max:
                    break
                if group_records + head.batch.count > self._group_records_max:
                    break
                group.append(self._queue.popleft())
                group_bytes += head.size_bytes
                group_records += head.batch.count
            return group

    def _commit(self, group: list[_Pending]) -> None:
        error: Exception | None = None
        started = time.perf_counter()
        try:
            batches = [pending.batch for pending in group]
            for batch in batches:
                batch.value  # noqa: B018 - encoded here (kept on the batch), before the hand-off
            self._store.append(batches, written=self._announce_writing)
        except Exception as exc:  # any failure: fail this group, keep serving (module docstring)
            _log.error(
                "log_group_commit_failed",
                extra={"batches": len(group), "error": repr(exc)},
                exc_info=True,
            )
            error = exc
        # The store's write plus its WAL fsync (flush_wal): what the fsync histogram shows.
        seconds = time.perf_counter() - started
        records = sum(pending.batch.count for pending in group)
        size_bytes = sum(pending.size_bytes for pending in group)
        if error is None and self._probe is not None:
            self._probe.group_committed(records, size_bytes, seconds)
        with self._condition:
            if error is None:
                self._commits += 1
                self._batches += len(group)
                self._records += records
                self._bytes += size_bytes
            else:
                self._failed_commits += 1
        loop = self._loop
        assert loop is not None
        # A loop closed under us has nobody left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._resolve, group, error)

    def _announce_writing(self) -> None:
        """On the thread, once the store wrote a group: hands the loop the callbacks that
        wait for a write (they run while it is synced)."""
        waiting = self._on_writing
        if not waiting:
            return
        callbacks: list[_Callback] = []
        with contextlib.suppress(IndexError):  # the loop only appends
            while waiting:
                callbacks.append(waiting.popleft())
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to tell
            loop.call_soon_threadsafe(_run_each, callbacks)

    def _resolve(self, group: list[_Pending], error: Exception | None) -> None:
        """On the loop: settle the group's futures (in queue order) and free their slots."""
        for pending in group:
            self._slots.release()
            self._free_slots += 1
            if pending.future.done():  # cancelled by its owner; the write happened anyway
                continue
            if error is None:
                pending.future.set_result(None)
            else:
                # One exception object per future: each awaiter adds its own traceback.
                failure = ShoalError(
                    ErrorCode.INTERNAL_FAILURE, error_messages.SHARD_LOG_WRITE_FAILED
                )
                failure.__cause__ = error
                pending.future.set_exception(failure)


def _run_each(callbacks: list[_Callback]) -> None:
    for context, callback in callbacks:
        try:
            context.run(callback)
        except Exception:  # one callback's bug must not cost the others their turn
            _log.exception("log_when_writing_callback_failed")


def _retrieve_outcome(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
