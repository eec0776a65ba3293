"""The `LogStore` seam: every shard's log on this node, behind one synchronous protocol.

Implementations: `RocksLogStore` (production, `rocks_store.py`) and `MemoryLogStore` (the
reference, `memory_store.py`). `tests/log/conformance.py` holds the contract both pass.

Threading contract (both implementations):
- `append` is called from one writer thread (`group_commit.GroupCommitWriter`); it blocks until
  the batches are durable.
- `trim`, `truncate_suffix`, `delete_shard` and `compact` may run on another thread
  (retention, stream deletion, replication); mutations are serialized inside the store, so
  they never interleave with an `append`.
- `read`, `first_offset_at_or_after_time`, `log_start`, `log_end`, `last_arrival_ms`,
  `shard_uids` and `approximate_size_bytes` may run on any number of reader threads at once.
  Each sees the effect of a mutation entirely or not at all.
- `repair` and `rebuild_time_index` are mutations like `trim` (serialized inside the store);
  `verify` and `damaged_range` are reads.
- `close` runs last, after every other caller has stopped.

All methods block; none may be called on the asyncio loop except the cheap point lookups
(`log_end`, `last_arrival_ms`) used once per shard at recovery.

Semantics:
- A shard's offsets are dense from `log_start` to `log_end` (exclusive). An unknown shard has
  `log_start == log_end == 0`.
- `append` requires each batch to start at the shard's current `log_end` (later batches in the
  same call may extend earlier ones) and its arrival time not to go back; it asserts both.
- `trim` removes the oldest records by arrival time and moves `log_start`; `log_end` survives,
  even when every record is trimmed, so an offset is never reused.
- `truncate_suffix` removes the newest records (a replica's divergent, unacknowledged tail) and
  moves `log_end` back; it is the one way offsets get written twice, and only ones that no
  client was told about.
- Records of a control batch (`AppendBatch.control`) take offsets but are never returned by
  `read`; everything else (time lookup, trim, truncate) treats them like any record.
  `read_batches` (replication's catch-up read) returns them, with every batch's epoch.

Replica state (DESIGN §4, decisions/0002), persisted in the same atomic write as the records it
describes:
- The epoch history: `(epoch, start_offset)` pairs, epochs strictly increasing, start offsets
  non-decreasing. `append` opens an entry at a batch's first offset when the batch's epoch is
  above the last entry's (epoch 0, unreplicated, opens none); an epoch below it is refused by
  assertion (a log's epochs never go back). `truncate_suffix` drops the entries starting at or
  after the cut. `trim` keeps the history (an entry per leader change, so it stays small).
- The promised epoch: raised by `promise`, never lowered; 0 until the first promise.
- The high watermark: the last one `set_high_watermark` wrote; lazily durable (it rides on the
  next durable write), since a lower HW after a crash only delays reads.
- `reset_log` drops every record and restarts the log at a given offset (a follower whose log
  lies below the leader's trimmed start); the promised epoch survives, the history does not.
"""

from __future__ import annotations

import bisect
import itertools
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol

from broker.log.keys import ShardMeta
from broker.log.records import AppendBatch, RecordPage, StoredRecord
from broker.types import Offset, ShardUid


class LogStoreError(Exception):
    """The storage engine failed (I/O error, full disk, lock held by another process).

    Raised only at the `rocks_store.py` boundary, with the engine's exception as `__cause__`.
    Corruption we detect ourselves is `records.LogCorruptionError` instead.
    """


class LogStoreLostError(Exception):
    """The shard log can no longer be trusted as this node's replica state: RocksDB's repair
    dropped a file that held more than records (a replica's promise, log end, epochs, HW, or
    time index entries, whose loss nothing would notice), or a corrupt block that the repair
    could not drop. The log directory was moved aside (`<log>.lost-<UTC time>`); the node must
    stop and start again, and rejoins each replica as after a lost disk (decisions/0002).
    Not a `LogStoreError`: nothing retries it, it ends the node."""


class LogStore(Protocol):
    """Every shard log on this node. Thread-safety: see the module docstring."""

    def append(
        self, batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        """Writes all batches in one atomic write; durable (WAL fsynced) when it returns.
        `written()`, when given, is called once they are written, before they are made
        durable: where the slow part that holds no GIL (the fsync) begins
        (`GroupCommitWriter.when_writing`). Not called when the write fails."""
        ...

    def read(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> list[StoredRecord]:
        """Retained records with offsets in [start_offset, end_offset), in offset order.

        Stops after `records_max` records, and before the record that would take the total of
        `record.size_bytes` above `bytes_max`, except that the first record in range is always
        returned (as AWS returns a record larger than the GetRecords byte cap on its own).
        Records of control batches are skipped and count against neither cap, so a range
        holding only control records reads as [].
        """
        ...

    def read_page(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> RecordPage:
        """`read`'s records as a page: a store that keeps batch bytes answers runs of them
        (`RecordPage.runs`, no object per record) for the doors to write out directly."""
        ...

    def first_offset_at_or_after_time(self, shard_uid: ShardUid, arrival_ms: int) -> Offset | None:
        """The first retained offset whose arrival is >= arrival_ms, or None if there is none."""
        ...

    def log_start(self, shard_uid: ShardUid) -> Offset:
        """The first retained offset; equal to `log_end` when nothing is retained."""
        ...

    def log_end(self, shard_uid: ShardUid) -> Offset:
        """The next offset to write; 0 for a shard never written."""
        ...

    def last_arrival_ms(self, shard_uid: ShardUid) -> int:
        """The arrival time of the last appended batch (kept across trims); 0 if none."""
        ...

    def trim(self, shard_uid: ShardUid, *, arrival_ms_before: int) -> Offset:
        """Deletes the records that arrived before `arrival_ms_before`; returns the new start."""
        ...

    def truncate_suffix(self, shard_uid: ShardUid, *, from_offset: Offset) -> None:
        """Deletes every record at offset >= from_offset; `log_end` becomes `from_offset`.

        Requires log_start <= from_offset <= log_end (asserted); from_offset == log_end is a
        no-op. `last_arrival_ms` becomes the arrival of the last record still retained below
        `from_offset`, or 0 if there is none: the new tail may come from a leader whose clock
        is behind the dropped one's, and what remains still has non-decreasing arrivals.
        """
        ...

    def delete_shard(self, shard_uid: ShardUid) -> None:
        """Deletes the shard's records, time index and meta; afterwards it is unknown."""
        ...

    def read_batches(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        bytes_max: int,
    ) -> list[AppendBatch]:
        """The retained records in [start_offset, end_offset) as batches, control ones included.

        For replication's catch-up: each batch carries its epoch, arrival and control flag, and
        the first and last may be cut to the range. Stops before the batch that would take the
        total of `AppendBatch.size_bytes` above `bytes_max`, except that the first is always
        returned. The result starts at max(start_offset, log_start) and is dense.
        """
        ...

    def epoch_history(self, shard_uid: ShardUid) -> tuple[tuple[int, Offset], ...]:
        """The `(epoch, start_offset)` entries, oldest first (see the module docstring)."""
        ...

    def promised_epoch(self, shard_uid: ShardUid) -> int:
        """The highest epoch promised; 0 if none."""
        ...

    def promise(self, shard_uid: ShardUid, epoch: int) -> None:
        """Raises the promised epoch to `epoch` (>= the current one, asserted); durable when it
        returns."""
        ...

    def high_watermark(self, shard_uid: ShardUid) -> Offset:
        """The last high watermark written; 0 if none."""
        ...

    def set_high_watermark(self, shard_uid: ShardUid, offset: Offset) -> None:
        """Records the high watermark; lazily durable (see the module docstring)."""
        ...

    def reset_log(self, shard_uid: ShardUid, *, log_start: Offset) -> None:
        """Drops every record and the epoch history; log_start = log_end = `log_start`, which
        must be at or above the current log_start (asserted); last_arrival_ms becomes 0; the
        promised epoch and the high watermark stay. Durable when it returns."""
        ...

    def shard_uids(self) -> set[ShardUid]:
        """Every shard with anything on disk (including fully trimmed shards)."""
        ...

    def compact(self) -> None:
        """Reclaims the space of trimmed and deleted data (slow; not on a hot path)."""
        ...

    # --- Damage (decisions/0002, "Corruption") --------------------------------------------
    # Every read above raises `LogCorruptionError` (with the shard and the first offset that
    # cannot be read) where stored data fails a check, never returning less as if the log
    # ended there.

    def verify(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> tuple[Offset, int]:
        """The scrubber's read: checks the records from `start_offset` up to `end_offset` (at
        most the log end), stopping after about `bytes_max` stored bytes; returns (where to
        continue, bytes checked). Raises `LogCorruptionError` where the log is damaged."""
        ...

    def damaged_range(self, shard_uid: ShardUid, offset: Offset) -> tuple[Offset, Offset]:
        """The range [start, end) around `offset` (where a read failed) that does not read
        back; start and end are batch boundaries, so `repair` can rewrite it whole."""
        ...

    def repair(self, shard_uid: ShardUid, batches: Sequence[AppendBatch]) -> bool:
        """Rewrites a damaged range (dense batches from a `damaged_range` start) with copies
        from another replica, if they hold this log's records there (the same epochs); False,
        writing nothing, if not or if the range left the log meanwhile. Durable."""
        ...

    def rebuild_time_index(self, shard_uid: ShardUid) -> None:
        """Derives the shard's time index anew from its records (when the index is damaged).
        Raises `LogCorruptionError` when the records do not all read back. Durable."""
        ...

    def approximate_size_bytes(self) -> int:
        """Roughly the bytes the logs take (files plus memory tables), for metrics."""
        ...

    def reopen(self) -> None:
        """Closes and opens the store again, after a write error it does not recover from by
        itself (RocksDB after a WAL write failed for lack of space). Raises LogStoreError
        when it cannot open yet (retry later); meanwhile calls raise LogStoreError."""
        ...

    def close(self) -> None:
        """Releases the store; no method may be called afterwards."""
        ...


def check_read_arguments(
    *, start_offset: Offset, end_offset: Offset, records_max: int, bytes_max: int
) -> None:
    """The argument contract of `LogStore.read`, shared so every store asserts the same."""
    assert start_offset >= 0
    assert end_offset >= 0
    assert records_max >= 1
    assert bytes_max >= 1


def read_budget_allows(
    *, taken_records: int, taken_bytes: int, next_bytes: int, bytes_max: int
) -> bool:
    """Whether a read may add a record of `next_bytes` (the first one is always allowed)."""
    if taken_records == 0:
        return True
    return taken_bytes + next_bytes <= bytes_max


def check_truncate_suffix(meta: ShardMeta, from_offset: Offset) -> None:
    """The argument contract of `LogStore.truncate_suffix`, shared by every store."""
    assert meta.log_start <= from_offset, (from_offset, meta)
    assert from_offset <= meta.log_end, (from_offset, meta)


def advance_meta(meta: ShardMeta, batch: AppendBatch) -> ShardMeta:
    """A shard's meta after appending `batch`; asserts the batch continues the log."""
    assert batch.first_offset == meta.log_end, (batch.shard_uid, batch.first_offset, meta)
    assert batch.arrival_ms >= meta.last_arrival_ms, (batch.shard_uid, batch.arrival_ms, meta)
    return ShardMeta(
        log_start=meta.log_start, log_end=batch.end_offset, last_arrival_ms=batch.arrival_ms
    )


EpochHistory = tuple[tuple[int, Offset], ...]


def extend_history(history: list[tuple[int, Offset]], batch: AppendBatch) -> bool:
    """Opens an epoch-history entry for `batch` if its epoch is new; returns whether it did.

    Asserts that the batch's epoch does not go back along the log.
    """
    last_epoch = history[-1][0] if history else 0
    assert batch.epoch >= last_epoch, (batch.shard_uid, batch.epoch, history[-1:])
    if batch.epoch == last_epoch:
        return False
    history.append((batch.epoch, batch.first_offset))
    return True


def cut_history(
    history: Sequence[tuple[int, Offset]], from_offset: Offset
) -> list[tuple[int, Offset]]:
    """The history after `truncate_suffix(from_offset)`: entries starting before the cut."""
    return [(epoch, start) for epoch, start in history if start < from_offset]


def epoch_of(history: Sequence[tuple[int, Offset]], offset: Offset) -> int:
    """The epoch of the record at `offset` by the history; 0 before every entry."""
    index = bisect.bisect_right(history, offset, key=lambda entry: entry[1]) - 1
    return history[index][0] if index >= 0 else 0


def check_history(history: Sequence[tuple[int, Offset]]) -> None:
    """Epochs strictly increase; start offsets do not decrease."""
    for (epoch_a, start_a), (epoch_b, start_b) in itertools.pairwise(history):
        assert epoch_a < epoch_b, history
        assert start_a <= start_b, history


def clear_frames(error: BaseException) -> None:
    """Drops the locals of every finished frame in the error's traceback chain: an error
    raised by a store call keeps the store's handles (iterators) alive through its frames,
    and RocksDB cannot be reopened while they live (`reopen`)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
