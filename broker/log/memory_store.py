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
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.log.keys import EMPTY_SHARD_META, ShardMeta
from broker.log.records import AppendBatch, StoredRecord
from broker.log.store import (
    advance_meta,
    check_read_arguments,
    check_truncate_suffix,
    read_budget_allows,
)
from broker.types import Offset, ShardUid


@dataclass(slots=True, kw_only=True)
class _Shard:
    """One shard's log; records[i] has offset meta.log_start + i, control[i] its batch's flag."""

    meta: ShardMeta
    records: list[StoredRecord] = field(default_factory=list)
    control: list[bool] = field(default_factory=list)


class MemoryLogStore:
    """A `LogStore` in memory. Thread-safe by one lock (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shards: dict[ShardUid, _Shard] = {}
        self._closed = False

    def append(self, batches: Sequence[AppendBatch]) -> None:
        with self._lock:
            assert not self._closed
            # Check every batch before changing anything, so the append is all or nothing.
            metas: dict[ShardUid, ShardMeta] = {}
            for batch in batches:
                uid = batch.shard_uid
                meta = metas[uid] if uid in metas else self._meta_locked(uid)
                metas[uid] = advance_meta(meta, batch)
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
            for uid, meta in metas.items():
                shard = self._shards[uid]
                shard.meta = meta
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
            shard.meta = ShardMeta(
                log_start=meta.log_start,
                log_end=from_offset,
                last_arrival_ms=shard.records[-1].arrival_ms if shard.records else 0,
            )

    def delete_shard(self, shard_uid: ShardUid) -> None:
        with self._lock:
            assert not self._closed
            self._shards.pop(shard_uid, None)

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
