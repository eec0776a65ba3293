"""`SimLogStore`: a `LogStore` whose writes become durable only when the simulated fsync runs.

Every mutation applies at once to the node's view (`_volatile`, what its reads see, like a page
cache) and is remembered; `sync()` replays the remembered mutations onto `_durable`. `crash()`
throws the volatile view away and restarts from the durable one, so a crash loses exactly the
writes not yet synced; `lose_disk()` loses everything (a replaced pod).

The durability promises of `store.py` ("durable when it returns") hold here only once the
simulated node calls `sync()`: the cluster persists a whole Ready, then syncs, then sends,
which is the order the real driver follows with one fsync per group commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch, RecordPage, StoredRecord
from broker.types import Offset, ShardUid

_Mutation = Callable[[MemoryLogStore], object]


class SimLogStore:
    """A `LogStore` with explicit durability. Single-threaded (the simulator)."""

    def __init__(self) -> None:
        self._durable = MemoryLogStore()
        self._volatile = MemoryLogStore()
        self._unsynced: list[_Mutation] = []

    # --- Simulation controls ----------------------------------------------------------------

    def sync(self) -> None:
        for mutation in self._unsynced:
            mutation(self._durable)
        self._unsynced.clear()

    def crash(self) -> None:
        self._unsynced.clear()
        self._volatile = self._durable.copy()

    def lose_disk(self) -> None:
        self._durable = MemoryLogStore()
        self._volatile = MemoryLogStore()
        self._unsynced.clear()

    def check_consistency(self, shard_uid: ShardUid) -> None:
        self._volatile.check_consistency(shard_uid)

    def _mutate(self, mutation: _Mutation) -> object:
        result = mutation(self._volatile)
        self._unsynced.append(mutation)
        return result

    def durable_record(self, shard_uid: ShardUid, offset: Offset) -> tuple[str, bytes] | None:
        """(partition key, data) of the record at `offset` as a crash would leave it: synced."""
        record = self._durable.data_record_at(shard_uid, offset)
        return None if record is None else (record.partition_key, record.data)

    # --- LogStore ------------------------------------------------------------------------

    def append(
        self, batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        frozen = tuple(batches)
        self._mutate(lambda store: store.append(frozen))
        if written is not None:
            written()  # written to the volatile view; durable at the next `sync()`

    def read(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> list[StoredRecord]:
        return self._volatile.read(
            shard_uid,
            start_offset=start_offset,
            end_offset=end_offset,
            records_max=records_max,
            bytes_max=bytes_max,
        )

    def read_page(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> RecordPage:
        return self._volatile.read_page(
            shard_uid,
            start_offset=start_offset,
            end_offset=end_offset,
            records_max=records_max,
            bytes_max=bytes_max,
        )

    def first_offset_at_or_after_time(self, shard_uid: ShardUid, arrival_ms: int) -> Offset | None:
        return self._volatile.first_offset_at_or_after_time(shard_uid, arrival_ms)

    def log_start(self, shard_uid: ShardUid) -> Offset:
        return self._volatile.log_start(shard_uid)

    def log_end(self, shard_uid: ShardUid) -> Offset:
        return self._volatile.log_end(shard_uid)

    def last_arrival_ms(self, shard_uid: ShardUid) -> int:
        return self._volatile.last_arrival_ms(shard_uid)

    def trim(self, shard_uid: ShardUid, *, arrival_ms_before: int) -> Offset:
        result = self._mutate(
            lambda store: store.trim(shard_uid, arrival_ms_before=arrival_ms_before)
        )
        assert isinstance(result, int)
        return Offset(result)

    def truncate_suffix(self, shard_uid: ShardUid, *, from_offset: Offset) -> None:
        self._mutate(lambda store: store.truncate_suffix(shard_uid, from_offset=from_offset))

    def delete_shard(self, shard_uid: ShardUid) -> None:
        self._mutate(lambda store: store.delete_shard(shard_uid))

    def read_batches(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        bytes_max: int,
    ) -> list[AppendBatch]:
        return self._volatile.read_batches(
            shard_uid, start_offset=start_offset, end_offset=end_offset, bytes_max=bytes_max
        )

    def epoch_history(self, shard_uid: ShardUid) -> tuple[tuple[int, Offset], ...]:
        return self._volatile.epoch_history(shard_uid)

    def promised_epoch(self, shard_uid: ShardUid) -> int:
        return self._volatile.promised_epoch(shard_uid)

    def promise(self, shard_uid: ShardUid, epoch: int) -> None:
        self._mutate(lambda store: store.promise(shard_uid, epoch))

    def high_watermark(self, shard_uid: ShardUid) -> Offset:
        return self._volatile.high_watermark(shard_uid)

    def set_high_watermark(self, shard_uid: ShardUid, offset: Offset) -> None:
        self._mutate(lambda store: store.set_high_watermark(shard_uid, offset))

    def reset_log(self, shard_uid: ShardUid, *, log_start: Offset) -> None:
        self._mutate(lambda store: store.reset_log(shard_uid, log_start=log_start))

    def shard_uids(self) -> set[ShardUid]:
        return self._volatile.shard_uids()

    def damaged_range(self, shard_uid: ShardUid, offset: Offset) -> tuple[Offset, Offset]:
        return self._volatile.damaged_range(shard_uid, offset)

    def repair(self, shard_uid: ShardUid, batches: Sequence[AppendBatch]) -> bool:
        frozen = tuple(batches)
        result = self._mutate(lambda store: store.repair(shard_uid, frozen))
        assert isinstance(result, bool)
        return result

    def rebuild_time_index(self, shard_uid: ShardUid) -> None:
        self._volatile.rebuild_time_index(shard_uid)

    def reopen(self) -> None:
        self._volatile.reopen()

    def verify(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> tuple[Offset, int]:
        return self._volatile.verify(
            shard_uid, start_offset=start_offset, end_offset=end_offset, bytes_max=bytes_max
        )

    def compact(self) -> None:
        self._volatile.compact()

    def approximate_size_bytes(self) -> int:
        return self._volatile.approximate_size_bytes()

    def close(self) -> None:
        self._volatile.close()
        self._durable.close()
