"""`MemoryLogStore`: the reference `LogStore`, held in Python lists.

It defines the semantics `RocksLogStore` must match (both pass `tests/log/conformance.py`), and
it is the store unit tests and the simulator run on. It keeps `StoredRecord` objects directly,
so it exercises no codec, and it needs no notion of batch boundaries: every rule that
`RocksLogStore` applies per batch (trim, time lookup) follows from a batch's records sharing one
arrival time, and `truncate_suffix` may cut anywhere. Durability is trivially "immediate", and
`sim/disk.py` is where lost writes and corruption get simulated.

Thread-safety: one lock around every method, so it honours the threading contract of
`store.py` (one writer thread, other mutators, many readers) by plain serialization.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from broker.log.keys import EMPTY_SHARD_META, ShardMeta
from broker.log.records import (
    AppendBatch,
    LogCorruptionError,
    NewRecord,
    RecordPage,
    StoredRecord,
)
from broker.log.store import (
    advance_meta,
    check_history,
    check_read_arguments,
    check_truncate_suffix,
    cut_history,
    extend_history,
    read_budget_allows,
)
from broker.types import Offset, ShardUid


@dataclass(slots=True, kw_only=True)
class _Shard:
    """One shard's log; records[i] has offset meta.log_start + i, control[i] and epochs[i] its
    batch's flag and epoch; plus the replica state (store.py)."""

    meta: ShardMeta
    records: list[StoredRecord] = field(default_factory=list)
    control: list[bool] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    history: list[tuple[int, Offset]] = field(default_factory=list)
    promised_epoch: int = 0
    high_watermark: Offset = Offset(0)  # noqa: RUF009 (a NewType call is the int itself)

    def copy(self) -> _Shard:
        return _Shard(
            meta=self.meta,
            records=list(self.records),
            control=list(self.control),
            epochs=list(self.epochs),
            history=list(self.history),
            promised_epoch=self.promised_epoch,
            high_watermark=self.high_watermark,
        )


class MemoryLogStore:
    """A `LogStore` in memory. Thread-safe by one lock (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shards: dict[ShardUid, _Shard] = {}
        self._closed = False
        # Offsets that "do not read back" (`corrupt`, for tests of what detects and repairs
        # damage): reads over them raise LogCorruptionError, as RocksLogStore's would.
        self._damaged: dict[ShardUid, set[Offset]] = {}

    # --- Damage (test hooks and the repair contract) ----------------------------------------

    def corrupt(self, shard_uid: ShardUid, offset: Offset, count: int = 1) -> None:
        """Test hook: records [offset, offset + count) no longer read back."""
        with self._lock:
            self._damaged.setdefault(shard_uid, set()).update(
                Offset(offset + i) for i in range(count)
            )

    def _check_readable(self, shard_uid: ShardUid, start: int, end: int) -> None:
        """Raises at the first damaged offset in [start, end); call with the lock held."""
        damaged = self._damaged.get(shard_uid)
        if not damaged:
            return
        bad = [offset for offset in damaged if start <= offset < end]
        if bad:
            first = Offset(min(bad))
            raise LogCorruptionError(
                f"shard {shard_uid}: offset {first} does not read back",
                shard_uid=shard_uid,
                offset=first,
            )

    def damaged_range(self, shard_uid: ShardUid, offset: Offset) -> tuple[Offset, Offset]:
        with self._lock:
            damaged = self._damaged.get(shard_uid, set())
            start = end = offset
            while Offset(start - 1) in damaged:
                start = Offset(start - 1)
            while end in damaged:
                end = Offset(end + 1)
            return start, Offset(max(end, offset + 1))

    def repair(self, shard_uid: ShardUid, batches: Sequence[AppendBatch]) -> bool:
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            if shard is None:
                return False
            first, end = batches[0].first_offset, batches[-1].end_offset
            if first < shard.meta.log_start or end > shard.meta.log_end:
                return False
            offset = first
            for batch in batches:
                assert batch.first_offset == offset
                for _ in batch.records:
                    index = offset - shard.meta.log_start
                    if shard.epochs[index] != batch.epoch:
                        return False
                    offset = Offset(offset + 1)
            for batch in batches:
                for i, record in enumerate(batch.records):
                    index = batch.first_offset + i - shard.meta.log_start
                    shard.records[index] = StoredRecord(
                        offset=Offset(batch.first_offset + i),
                        arrival_ms=batch.arrival_ms,
                        partition_key=record.partition_key,
                        data=record.data,
                    )
            damaged = self._damaged.get(shard_uid, set())
            damaged.difference_update(Offset(o) for o in range(first, end))
            return True

    def rebuild_time_index(self, shard_uid: ShardUid) -> None:
        """Nothing to rebuild: time lookups bisect the records themselves."""

    def reopen(self) -> None:
        """Nothing to reopen: writes never fail here."""

    def verify(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> tuple[Offset, int]:
        assert bytes_max >= 1
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            if shard is None or end_offset <= start_offset:
                return start_offset, 0
            begin = max(start_offset, shard.meta.log_start)
            end = min(end_offset, shard.meta.log_end)
            self._check_readable(shard_uid, begin, end)
            checked = sum(
                shard.records[i - shard.meta.log_start].size_bytes for i in range(begin, end)
            )
            return Offset(max(start_offset, end)), checked

    def append(
        self, batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        self._append(batches)
        if written is not None:
            written()  # nothing to sync: durable as soon as it is written

    def _append(self, batches: Sequence[AppendBatch]) -> None:
        with self._lock:
            assert not self._closed
            # Check every batch before changing anything, so the append is all or nothing.
            metas: dict[ShardUid, ShardMeta] = {}
            histories: dict[ShardUid, list[tuple[int, Offset]]] = {}
            for batch in batches:
                uid = batch.shard_uid
                meta = metas[uid] if uid in metas else self._meta_locked(uid)
                metas[uid] = advance_meta(meta, batch)
                if uid not in histories:
                    known = self._shards.get(uid)
                    histories[uid] = list(known.history) if known is not None else []
                extend_history(histories[uid], batch)
            for batch in batches:
                shard = self._shards.setdefault(batch.shard_uid, _Shard(meta=EMPTY_SHARD_META))
                shard.records.extend(
                    StoredRecord(
                        offset=Offset(batch.first_offset + i),
                        arrival_ms=batch.arrival_ms,
                        partition_key=record.partition_key,
                        data=record.data,
                    )
                    for i, record in enumerate(batch.records)
                )
                shard.control.extend([batch.control] * len(batch.records))
                shard.epochs.extend([batch.epoch] * len(batch.records))
            for uid, meta in metas.items():
                shard = self._shards[uid]
                shard.meta = meta
                shard.history = histories[uid]
                assert meta.log_start + len(shard.records) == meta.log_end
                assert len(shard.control) == len(shard.records)

    def read(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> list[StoredRecord]:
        check_read_arguments(
            start_offset=start_offset,
            end_offset=end_offset,
            records_max=records_max,
            bytes_max=bytes_max,
        )
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            if shard is None:
                return []
            begin = max(start_offset, shard.meta.log_start) - shard.meta.log_start
            end = min(end_offset, shard.meta.log_end) - shard.meta.log_start
            self._check_readable(
                shard_uid, begin + shard.meta.log_start, end + shard.meta.log_start
            )
            taken: list[StoredRecord] = []
            taken_bytes = 0
            for index in range(begin, end):
                if len(taken) == records_max:
                    break
                if shard.control[index]:
                    continue
                record = shard.records[index]
                size = record.size_bytes
                if not read_budget_allows(
                    taken_records=len(taken),
                    taken_bytes=taken_bytes,
                    next_bytes=size,
                    bytes_max=bytes_max,
                ):
                    break
                taken.append(record)
                taken_bytes += size
            return taken

    def read_page(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> RecordPage:
        """`read`'s records (this store keeps no batch bytes: a page without runs)."""
        return RecordPage.of(
            self.read(
                shard_uid,
                start_offset=start_offset,
                end_offset=end_offset,
                records_max=records_max,
                bytes_max=bytes_max,
            )
        )

    def first_offset_at_or_after_time(self, shard_uid: ShardUid, arrival_ms: int) -> Offset | None:
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            if shard is None:
                return None
            # Arrival is non-decreasing along offsets (append asserts it), so bisect is exact.
            index = bisect.bisect_left(shard.records, arrival_ms, key=lambda r: r.arrival_ms)
            if index == len(shard.records):
                return None
            return shard.records[index].offset

    def log_start(self, shard_uid: ShardUid) -> Offset:
        return self._meta(shard_uid).log_start

    def log_end(self, shard_uid: ShardUid) -> Offset:
        return self._meta(shard_uid).log_end

    def data_record_at(self, shard_uid: ShardUid, offset: Offset) -> StoredRecord | None:
        """The data record at `offset`, or None (no such offset, or a control record). A
        direct look-up for checkers (the simulator's invariants); not part of `LogStore`."""
        with self._lock:
            shard = self._shards.get(shard_uid)
            if shard is None or not shard.meta.log_start <= offset < shard.meta.log_end:
                return None
            index = offset - shard.meta.log_start
            return None if shard.control[index] else shard.records[index]

    def last_arrival_ms(self, shard_uid: ShardUid) -> int:
        return self._meta(shard_uid).last_arrival_ms

    def trim(self, shard_uid: ShardUid, *, arrival_ms_before: int) -> Offset:
        assert arrival_ms_before >= 0
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            if shard is None:
                return Offset(0)
            drop = bisect.bisect_left(shard.records, arrival_ms_before, key=lambda r: r.arrival_ms)
            if drop > 0:
                del shard.records[:drop]
                del shard.control[:drop]
                del shard.epochs[:drop]
                shard.meta = ShardMeta(
                    log_start=Offset(shard.meta.log_start + drop),
                    log_end=shard.meta.log_end,
                    last_arrival_ms=shard.meta.last_arrival_ms,
                )
            return shard.meta.log_start

    def truncate_suffix(self, shard_uid: ShardUid, *, from_offset: Offset) -> None:
        with self._lock:
            assert not self._closed
            meta = self._meta_locked(shard_uid)
            check_truncate_suffix(meta, from_offset)
            shard = self._shards.get(shard_uid)
            if shard is None or from_offset == meta.log_end:
                return
            keep = from_offset - meta.log_start
            del shard.records[keep:]
            del shard.control[keep:]
            del shard.epochs[keep:]
            shard.history = cut_history(shard.history, from_offset)
            shard.meta = ShardMeta(
                log_start=meta.log_start,
                log_end=from_offset,
                last_arrival_ms=shard.records[-1].arrival_ms if shard.records else 0,
            )

    def delete_shard(self, shard_uid: ShardUid) -> None:
        with self._lock:
            assert not self._closed
            self._shards.pop(shard_uid, None)

    def read_batches(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        bytes_max: int,
    ) -> list[AppendBatch]:
        assert start_offset >= 0
        assert bytes_max >= 1
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            if shard is None:
                return []
            begin = max(start_offset, shard.meta.log_start) - shard.meta.log_start
            end = min(end_offset, shard.meta.log_end) - shard.meta.log_start
            self._check_readable(
                shard_uid, begin + shard.meta.log_start, end + shard.meta.log_start
            )
            batches: list[AppendBatch] = []
            taken_bytes = 0
            index = begin
            while index < end:
                # Consecutive records sharing (arrival, epoch, control) form one batch here.
                stop = index + 1
                group_bytes = shard.records[index].size_bytes
                while stop < end and self._same_batch(shard, index, stop):
                    group_bytes += shard.records[stop].size_bytes
                    if group_bytes > bytes_max:
                        break
                    stop += 1
                records = tuple(
                    NewRecord(partition_key=r.partition_key, data=r.data)
                    for r in shard.records[index:stop]
                )
                size = sum(r.size_bytes for r in records)
                if batches and taken_bytes + size > bytes_max:
                    break
                batches.append(
                    AppendBatch(
                        shard_uid=shard_uid,
                        first_offset=shard.records[index].offset,
                        arrival_ms=shard.records[index].arrival_ms,
                        records=records,
                        control=shard.control[index],
                        epoch=shard.epochs[index],
                    )
                )
                taken_bytes += size
                index = stop
            return batches

    @staticmethod
    def _same_batch(shard: _Shard, a: int, b: int) -> bool:
        return (
            shard.records[a].arrival_ms == shard.records[b].arrival_ms
            and shard.epochs[a] == shard.epochs[b]
            and shard.control[a] == shard.control[b]
        )

    def epoch_history(self, shard_uid: ShardUid) -> tuple[tuple[int, Offset], ...]:
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            return () if shard is None else tuple(shard.history)

    def promised_epoch(self, shard_uid: ShardUid) -> int:
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            return 0 if shard is None else shard.promised_epoch

    def promise(self, shard_uid: ShardUid, epoch: int) -> None:
        with self._lock:
            assert not self._closed
            shard = self._shards.setdefault(shard_uid, _Shard(meta=EMPTY_SHARD_META))
            assert epoch >= shard.promised_epoch, (shard_uid, epoch, shard.promised_epoch)
            shard.promised_epoch = epoch

    def high_watermark(self, shard_uid: ShardUid) -> Offset:
        with self._lock:
            assert not self._closed
            shard = self._shards.get(shard_uid)
            return Offset(0) if shard is None else shard.high_watermark

    def set_high_watermark(self, shard_uid: ShardUid, offset: Offset) -> None:
        assert offset >= 0
        with self._lock:
            assert not self._closed
            shard = self._shards.setdefault(shard_uid, _Shard(meta=EMPTY_SHARD_META))
            shard.high_watermark = offset

    def reset_log(self, shard_uid: ShardUid, *, log_start: Offset) -> None:
        with self._lock:
            assert not self._closed
            shard = self._shards.setdefault(shard_uid, _Shard(meta=EMPTY_SHARD_META))
            assert log_start >= shard.meta.log_start, (shard_uid, log_start, shard.meta)
            shard.records.clear()
            shard.control.clear()
            shard.epochs.clear()
            shard.history.clear()
            shard.meta = ShardMeta(log_start=log_start, log_end=log_start, last_arrival_ms=0)

    def copy(self) -> MemoryLogStore:
        """An independent store with the same contents (the simulator's "what was synced")."""
        with self._lock:
            assert not self._closed
            clone = MemoryLogStore()
            clone._shards = {uid: shard.copy() for uid, shard in self._shards.items()}
            return clone

    def check_consistency(self, shard_uid: ShardUid) -> None:
        """Expensive self-check (the simulator's paranoid mode): the history describes the
        records' epochs."""
        with self._lock:
            shard = self._shards.get(shard_uid)
            if shard is None:
                return
            check_history(shard.history)
            for index, record in enumerate(shard.records):
                epoch = 0
                for entry_epoch, start in shard.history:
                    if start <= record.offset:
                        epoch = entry_epoch
                assert shard.epochs[index] == epoch, (shard_uid, record.offset, shard.history)

    def shard_uids(self) -> set[ShardUid]:
        with self._lock:
            assert not self._closed
            return set(self._shards)

    def compact(self) -> None:
        with self._lock:
            assert not self._closed

    def approximate_size_bytes(self) -> int:
        with self._lock:
            assert not self._closed
            return sum(
                record.size_bytes for shard in self._shards.values() for record in shard.records
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _meta(self, shard_uid: ShardUid) -> ShardMeta:
        with self._lock:
            assert not self._closed
            return self._meta_locked(shard_uid)

    def _meta_locked(self, shard_uid: ShardUid) -> ShardMeta:
        shard = self._shards.get(shard_uid)
        return EMPTY_SHARD_META if shard is None else shard.meta
