"""The `LogStore` contract, as a test class every store's test module subclasses (STYLE B.11).

A subclass provides the `make_store` fixture: a zero-argument factory that opens the store under
test (for Rocks, at one tmp path, so calling it again after `close()` reopens the same data).
Everything here must hold for `MemoryLogStore` and `RocksLogStore` alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from broker.log.records import AppendBatch, NewRecord, StoredRecord
from broker.log.store import LogStore
from broker.types import Offset, ShardUid

StoreFactory = Callable[[], LogStore]

A = ShardUid(7)
B = ShardUid(8)
C = ShardUid(2**64 - 1)  # the largest uid: its key range ends at the top of the key space


def batch(
    shard_uid: ShardUid, first: int, count: int, *, arrival_ms: int, size: int = 3, tag: str = ""
) -> AppendBatch:
    return AppendBatch(
        shard_uid=shard_uid,
        first_offset=Offset(first),
        arrival_ms=arrival_ms,
        records=tuple(
            NewRecord(partition_key=f"pk{tag}{first + i}", data=bytes([i % 256]) * size)
            for i in range(count)
        ),
    )


def read_all(store: LogStore, shard_uid: ShardUid) -> list[StoredRecord]:
    return store.read(
        shard_uid,
        start_offset=Offset(0),
        end_offset=Offset(2**63),
        records_max=1_000_000,
        bytes_max=2**40,
    )


class LogStoreContract:
    """The contract; subclasses supply `make_store`."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError

    @pytest.fixture
    def store(self, make_store: StoreFactory) -> Iterator[LogStore]:
        opened = make_store()
        yield opened
        opened.close()

    def test_unknown_shard_is_empty(self, store: LogStore) -> None:
        assert store.log_start(A) == 0
        assert store.log_end(A) == 0
        assert store.last_arrival_ms(A) == 0
        assert read_all(store, A) == []
        assert store.first_offset_at_or_after_time(A, 0) is None
        assert store.shard_uids() == set()
        assert store.trim(A, arrival_ms_before=10**12) == 0

    def test_append_then_read_in_order(self, store: LogStore) -> None:
        store.append([batch(A, 0, 3, arrival_ms=100), batch(B, 0, 1, arrival_ms=50)])
        store.append([batch(A, 3, 2, arrival_ms=100), batch(A, 5, 1, arrival_ms=120)])
        records = read_all(store, A)
        assert [r.offset for r in records] == list(range(6))
        assert [r.arrival_ms for r in records] == [100] * 5 + [120]
        assert records[4] == StoredRecord(
            offset=Offset(4),
            arrival_ms=100,
            partition_key="pk4",
            data=b"\x01" * 3,
            encrypted=self.sealed,
        )
        assert store.log_start(A) == 0
        assert store.log_end(A) == 6
        assert store.last_arrival_ms(A) == 120
        assert [r.offset for r in read_all(store, B)] == [0]
        assert store.shard_uids() == {A, B}

    def test_unicode_and_empty_data_round_trip(self, store: LogStore) -> None:
        record = NewRecord(partition_key="ключ-🐟", data=b"")
        store.append(
            [AppendBatch(shard_uid=C, first_offset=Offset(0), arrival_ms=1, records=(record,))]
        )
        (stored,) = read_all(store, C)
        assert stored.partition_key == "ключ-🐟"
        assert stored.data == b""
        assert stored.size_bytes == len("ключ-🐟".encode())

    def test_append_must_continue_the_log_and_is_atomic(self, store: LogStore) -> None:
        store.append([batch(A, 0, 2, arrival_ms=10)])
        with pytest.raises(AssertionError):
            store.append([batch(B, 0, 1, arrival_ms=10), batch(A, 3, 1, arrival_ms=10)])
        with pytest.raises(AssertionError):  # arrival may not go back within a shard
            store.append([batch(A, 2, 1, arrival_ms=9)])
        assert store.log_end(A) == 2
        assert store.log_end(B) == 0  # the valid batch of the refused append was not written

    def test_read_range_is_half_open(self, store: LogStore) -> None:
        store.append([batch(A, 0, 10, arrival_ms=1)])

        def offsets(start: int, end: int) -> list[int]:
            return [
                r.offset
                for r in store.read(
                    A,
                    start_offset=Offset(start),
                    end_offset=Offset(end),
                    records_max=100,
                    bytes_max=10_000,
                )
            ]

        assert offsets(3, 6) == [3, 4, 5]
        assert offsets(8, 50) == [8, 9]
        assert offsets(5, 5) == []
        assert offsets(6, 3) == []
        assert offsets(10, 20) == []

    def test_read_stops_at_records_max(self, store: LogStore) -> None:
        store.append([batch(A, 0, 10, arrival_ms=1)])
        got = store.read(
            A, start_offset=Offset(2), end_offset=Offset(10), records_max=3, bytes_max=10_000
        )
        assert [r.offset for r in got] == [2, 3, 4]

    def test_read_stops_before_bytes_max_but_returns_at_least_one(self, store: LogStore) -> None:
        # Each record is 3 bytes of key ("pkN") + 10 bytes of data = 13 bytes.
        store.append([batch(A, 0, 5, arrival_ms=1, size=10)])

        def count(bytes_max: int) -> int:
            return len(
                store.read(
                    A,
                    start_offset=Offset(0),
                    end_offset=Offset(5),
                    records_max=100,
                    bytes_max=bytes_max,
                )
            )

        assert count(1) == 1  # the first record always comes back, even above the cap
        assert count(13) == 1
        assert count(25) == 1
        assert count(26) == 2  # exactly at the cap is allowed
        assert count(10_000) == 5

    def test_time_seek_uses_arrival(self, store: LogStore) -> None:
        store.append([batch(A, 0, 2, arrival_ms=100), batch(A, 2, 3, arrival_ms=100)])
        store.append([batch(A, 5, 2, arrival_ms=200)])
        store.append([batch(A, 7, 1, arrival_ms=300), batch(B, 0, 1, arrival_ms=1_000)])
        assert store.first_offset_at_or_after_time(A, 0) == 0
        assert store.first_offset_at_or_after_time(A, 100) == 0
        assert store.first_offset_at_or_after_time(A, 101) == 5
        assert store.first_offset_at_or_after_time(A, 200) == 5
        assert store.first_offset_at_or_after_time(A, 300) == 7
        assert store.first_offset_at_or_after_time(A, 301) is None  # not B's record
        assert store.first_offset_at_or_after_time(B, 301) == 0

    def test_trim_keeps_offsets(self, store: LogStore) -> None:
        store.append([batch(A, 0, 3, arrival_ms=100), batch(B, 0, 2, arrival_ms=100)])
        store.append([batch(A, 3, 2, arrival_ms=200)])
        store.append([batch(A, 5, 1, arrival_ms=300)])
        assert store.trim(A, arrival_ms_before=150) == 3
        assert store.log_start(A) == 3
        assert store.log_end(A) == 6
        assert [r.offset for r in read_all(store, A)] == [3, 4, 5]
        below = store.read(
            A, start_offset=Offset(0), end_offset=Offset(3), records_max=10, bytes_max=100
        )
        assert below == []
        assert store.first_offset_at_or_after_time(A, 0) == 3
        assert store.trim(A, arrival_ms_before=150) == 3  # nothing more to trim
        assert [r.offset for r in read_all(store, B)] == [0, 1]  # other shards untouched

        # Retention may remove everything; the end survives, so offsets are never reused.
        assert store.trim(A, arrival_ms_before=10_000) == 6
        assert store.log_start(A) == store.log_end(A) == 6
        assert store.last_arrival_ms(A) == 300
        assert read_all(store, A) == []
        assert store.first_offset_at_or_after_time(A, 0) is None
        assert A in store.shard_uids()
        store.append([batch(A, 6, 1, arrival_ms=400)])
        assert [r.offset for r in read_all(store, A)] == [6]
        assert store.first_offset_at_or_after_time(A, 0) == 6
        assert store.log_start(A) == 6

    def test_delete_shard(self, store: LogStore) -> None:
        store.append([batch(A, 0, 3, arrival_ms=1), batch(B, 0, 2, arrival_ms=1)])
        store.append([batch(C, 0, 2, arrival_ms=1)])
        store.delete_shard(A)
        store.delete_shard(C)
        assert store.shard_uids() == {B}
        assert read_all(store, A) == []
        assert read_all(store, C) == []
        assert store.log_end(A) == 0
        assert store.first_offset_at_or_after_time(A, 0) is None
        assert [r.offset for r in read_all(store, B)] == [0, 1]
        store.delete_shard(A)  # idempotent

    def test_size_and_compaction(self, store: LogStore) -> None:
        store.append([batch(A, 0, 100, arrival_ms=1, size=1_000)])
        assert store.approximate_size_bytes() > 0
        store.trim(A, arrival_ms_before=2)
        store.compact()
        assert read_all(store, A) == []
        assert store.log_end(A) == 100

    def test_readers_see_whole_appends_while_a_thread_writes(self, store: LogStore) -> None:
        """Reads on another thread always see a dense prefix made of whole appends."""
        appends = 200
        done = threading.Event()

        def write() -> None:
            for i in range(appends):
                store.append([batch(A, 2 * i, 2, arrival_ms=i)])
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            while not done.is_set():
                records = read_all(store, A)
                assert [r.offset for r in records] == list(range(len(records)))
                assert len(records) % 2 == 0
        finally:
            writer.join()
        assert store.log_end(A) == 2 * appends

    # --- Batch boundaries: stores may keep a batch as one unit; callers must not notice ----

    def test_reads_start_inside_a_batch_and_caps_cut_batches(self, store: LogStore) -> None:
        store.append([batch(A, 0, 5, arrival_ms=1), batch(A, 5, 5, arrival_ms=1)])
        store.append([batch(A, 10, 5, arrival_ms=2)])

        def offsets(
            start: int, end: int, records_max: int = 100, bytes_max: int = 10**6
        ) -> list[int]:
            got = store.read(
                A,
                start_offset=Offset(start),
                end_offset=Offset(end),
                records_max=records_max,
                bytes_max=bytes_max,
            )
            return [r.offset for r in got]

        assert offsets(7, 13) == [7, 8, 9, 10, 11, 12]
        assert offsets(3, 100, records_max=4) == [3, 4, 5, 6]
        assert offsets(9, 100, records_max=1) == [9]
        assert offsets(14, 100) == [14]
        assert offsets(4, 5) == [4]
        # Each record is "pkN"/"pkNN" + 3 bytes: 6 or 7 bytes; 3 records of 6 fit in 19.
        assert offsets(2, 100, bytes_max=19) == [2, 3, 4]
        assert offsets(8, 100, bytes_max=13) == [8, 9]  # 6 + 7
        # Paging with the caps walks every record exactly once, whatever the cut points.
        seen: list[int] = []
        while len(seen) < 15:
            page = offsets(len(seen), 100, records_max=4, bytes_max=15)
            assert page
            seen.extend(page)
        assert seen == list(range(15))

    def test_read_below_log_start_stays_in_its_shard(self, store: LogStore) -> None:
        """Seeking back to the batch holding an offset must never land in the shard before."""
        store.append([batch(A, 0, 3, arrival_ms=1), batch(B, 0, 3, arrival_ms=1)])
        store.append([batch(B, 3, 3, arrival_ms=5), batch(C, 0, 2, arrival_ms=1)])
        store.append([batch(C, 2, 2, arrival_ms=5)])
        assert store.trim(B, arrival_ms_before=5) == 3
        assert store.trim(C, arrival_ms_before=5) == 2
        assert [r.offset for r in read_all(store, B)] == [3, 4, 5]
        assert [r.offset for r in read_all(store, C)] == [2, 3]
        got = store.read(
            B, start_offset=Offset(1), end_offset=Offset(4), records_max=10, bytes_max=1_000
        )
        assert [(r.offset, r.partition_key) for r in got] == [(3, "pk3")]
        assert read_all(store, ShardUid(9)) == []
        assert read_all(store, ShardUid(6)) == []

    def test_control_batches_take_offsets_but_are_never_read(self, store: LogStore) -> None:
        marker = AppendBatch(
            shard_uid=A,
            first_offset=Offset(3),
            arrival_ms=20,
            records=(NewRecord(partition_key="epoch", data=b"\x00\x00\x00\x02"),) * 2,
            control=True,
        )
        store.append([batch(A, 0, 3, arrival_ms=10), marker])
        store.append([batch(A, 5, 2, arrival_ms=30)])
        assert store.log_end(A) == 7
        assert [r.offset for r in read_all(store, A)] == [0, 1, 2, 5, 6]

        def offsets(
            start: int, end: int, records_max: int = 100, bytes_max: int = 10**6
        ) -> list[int]:
            got = store.read(
                A,
                start_offset=Offset(start),
                end_offset=Offset(end),
                records_max=records_max,
                bytes_max=bytes_max,
            )
            return [r.offset for r in got]

        assert offsets(3, 5) == []
        assert offsets(4, 100, records_max=1) == [5]  # skipped records count against no cap
        assert offsets(2, 100, records_max=2) == [2, 5]
        assert offsets(3, 100, bytes_max=1) == [5]  # still "at least one record"
        assert store.first_offset_at_or_after_time(A, 11) == 3
        assert store.trim(A, arrival_ms_before=21) == 5
        assert [r.offset for r in read_all(store, A)] == [5, 6]

    def test_trim_removes_whole_batches_only(self, store: LogStore) -> None:
        store.append([batch(A, 0, 4, arrival_ms=100)])
        store.append([batch(A, 4, 4, arrival_ms=200)])
        assert store.trim(A, arrival_ms_before=100) == 0
        assert store.trim(A, arrival_ms_before=200) == 4
        assert store.first_offset_at_or_after_time(A, 150) == 4
        got = store.read(
            A, start_offset=Offset(2), end_offset=Offset(6), records_max=10, bytes_max=1_000
        )
        assert [r.offset for r in got] == [4, 5]

    def test_truncate_suffix_inside_a_batch(self, store: LogStore) -> None:
        store.append([batch(A, 0, 5, arrival_ms=100), batch(B, 0, 2, arrival_ms=1)])
        store.append([batch(A, 5, 5, arrival_ms=200), batch(A, 10, 2, arrival_ms=300)])
        store.truncate_suffix(A, from_offset=Offset(7))
        assert store.log_start(A) == 0
        assert store.log_end(A) == 7
        assert store.last_arrival_ms(A) == 200
        assert [r.offset for r in read_all(store, A)] == list(range(7))
        assert store.first_offset_at_or_after_time(A, 200) == 5
        assert store.first_offset_at_or_after_time(A, 201) is None
        assert [r.offset for r in read_all(store, B)] == [0, 1]  # other shards untouched

        # The cut batch takes new records after its kept prefix; offsets 7.. are rewritten.
        store.append([batch(A, 7, 2, arrival_ms=250, tag="new")])
        records = read_all(store, A)
        assert [r.offset for r in records] == list(range(9))
        assert [r.partition_key for r in records[5:]] == ["pk5", "pk6", "pknew7", "pknew8"]
        assert store.first_offset_at_or_after_time(A, 201) == 7

        store.truncate_suffix(A, from_offset=Offset(9))  # at the end: nothing to do
        assert store.log_end(A) == 9
        assert store.last_arrival_ms(A) == 250
        store.truncate_suffix(A, from_offset=Offset(5))  # on a batch boundary
        assert store.log_end(A) == 5
        assert store.last_arrival_ms(A) == 100
        assert [r.offset for r in read_all(store, A)] == list(range(5))
        assert store.first_offset_at_or_after_time(A, 101) is None
        store.truncate_suffix(A, from_offset=Offset(0))  # everything
        assert store.log_start(A) == store.log_end(A) == 0
        assert store.last_arrival_ms(A) == 0
        assert read_all(store, A) == []
        assert store.first_offset_at_or_after_time(A, 0) is None
        store.append([batch(A, 0, 1, arrival_ms=50)])
        assert [r.arrival_ms for r in read_all(store, A)] == [50]

    def test_truncate_suffix_bounds_and_trimmed_prefix(self, store: LogStore) -> None:
        store.append([batch(A, 0, 3, arrival_ms=100)])
        store.append([batch(A, 3, 3, arrival_ms=200)])
        store.append([batch(C, 0, 3, arrival_ms=100)])
        assert store.trim(A, arrival_ms_before=150) == 3
        with pytest.raises(AssertionError):  # below log_start
            store.truncate_suffix(A, from_offset=Offset(2))
        with pytest.raises(AssertionError):  # past log_end
            store.truncate_suffix(A, from_offset=Offset(7))
        store.truncate_suffix(A, from_offset=Offset(4))
        assert [r.offset for r in read_all(store, A)] == [3]
        assert store.last_arrival_ms(A) == 200
        store.truncate_suffix(A, from_offset=Offset(3))  # only trimmed records remain below
        assert store.log_start(A) == store.log_end(A) == 3
        assert store.last_arrival_ms(A) == 0
        store.truncate_suffix(C, from_offset=Offset(1))  # the top of the key space
        assert [r.offset for r in read_all(store, C)] == [0]
        store.truncate_suffix(ShardUid(9), from_offset=Offset(0))  # unknown shard: a no-op
        assert store.log_end(ShardUid(9)) == 0

    # --- Replica state (decisions/0002): epochs, history, promise, HW, catch-up reads -------

    persistent = False  # stores whose make_store reopens the same data set this
    sealed = False  # stores that seal every batch: their records read back as encrypted

    def test_append_keeps_each_batch_epoch_and_opens_history_entries(self, store: LogStore) -> None:
        assert store.epoch_history(A) == ()
        store.append([epoch_batch(A, 0, 2, epoch=0), epoch_batch(A, 2, 2, epoch=3)])
        store.append([epoch_batch(A, 4, 1, epoch=3), epoch_batch(B, 0, 1, epoch=1)])
        store.append([epoch_batch(A, 5, 1, epoch=5, control=True), epoch_batch(A, 6, 2, epoch=5)])
        assert store.epoch_history(A) == ((3, 2), (5, 5))
        assert store.epoch_history(B) == ((1, 0),)
        got = store.read_batches(A, start_offset=Offset(0), end_offset=Offset(100), bytes_max=10**6)
        # Stores may split or join batches of equal (arrival, epoch, control); compare per offset.
        per_offset = [
            (b.first_offset + i, b.epoch, b.control) for b in got for i in range(len(b.records))
        ]
        assert per_offset == [
            (0, 0, False),
            (1, 0, False),
            (2, 3, False),
            (3, 3, False),
            (4, 3, False),
            (5, 5, True),
            (6, 5, False),
            (7, 5, False),
        ]
        assert [r.offset for r in read_all(store, A)] == [0, 1, 2, 3, 4, 6, 7]
        with pytest.raises(AssertionError):  # a log's epochs never go back
            store.append([epoch_batch(A, 8, 1, epoch=4)])
        assert store.log_end(A) == 8
        assert store.epoch_history(A) == ((3, 2), (5, 5))

    def test_read_batches_cuts_to_the_range_and_caps_bytes(self, store: LogStore) -> None:
        store.append([epoch_batch(A, 0, 5, epoch=1), epoch_batch(A, 5, 5, epoch=2, arrival_ms=9)])
        got = store.read_batches(A, start_offset=Offset(3), end_offset=Offset(7), bytes_max=10**6)
        assert [(b.first_offset, len(b.records), b.epoch) for b in got] == [(3, 2, 1), (5, 2, 2)]
        assert got[0].records[0].partition_key == "pk3"
        assert got[1].arrival_ms == 9
        # The cap stops before a batch that would exceed it, but the first always comes (a
        # store may split batches, so how much of the first written batch that is may vary).
        first_only = store.read_batches(
            A, start_offset=Offset(0), end_offset=Offset(10), bytes_max=1
        )
        assert len(first_only) == 1
        assert first_only[0].first_offset == 0
        assert first_only[0].end_offset <= 5
        assert (
            store.read_batches(A, start_offset=Offset(10), end_offset=Offset(20), bytes_max=9) == []
        )
        assert (
            store.read_batches(
                ShardUid(9), start_offset=Offset(0), end_offset=Offset(9), bytes_max=9
            )
            == []
        )
        assert store.trim(A, arrival_ms_before=9) == 5
        got = store.read_batches(A, start_offset=Offset(0), end_offset=Offset(100), bytes_max=10**6)
        assert [(b.first_offset, b.end_offset) for b in got] == [(5, 10)]

    def test_truncate_suffix_drops_history_entries_at_or_after_the_cut(
        self, store: LogStore
    ) -> None:
        store.append([epoch_batch(A, 0, 3, epoch=1), epoch_batch(A, 3, 3, epoch=2)])
        store.append([epoch_batch(A, 6, 3, epoch=4)])
        store.truncate_suffix(A, from_offset=Offset(7))
        assert store.epoch_history(A) == ((1, 0), (2, 3), (4, 6))
        store.truncate_suffix(A, from_offset=Offset(6))
        assert store.epoch_history(A) == ((1, 0), (2, 3))
        store.truncate_suffix(A, from_offset=Offset(4))
        assert store.epoch_history(A) == ((1, 0), (2, 3))
        # A new leader's epoch at the cut; an older epoch than the last entry is refused.
        store.append([epoch_batch(A, 4, 1, epoch=3)])
        assert store.epoch_history(A) == ((1, 0), (2, 3), (3, 4))
        store.truncate_suffix(A, from_offset=Offset(0))
        assert store.epoch_history(A) == ()
        store.append([epoch_batch(A, 0, 1, epoch=1)])
        assert store.epoch_history(A) == ((1, 0),)

    def test_promise_and_high_watermark(self, store: LogStore) -> None:
        assert store.promised_epoch(A) == 0
        assert store.high_watermark(A) == 0
        store.promise(A, 3)
        store.promise(A, 3)  # idempotent
        assert store.promised_epoch(A) == 3
        with pytest.raises(AssertionError):  # never lowered
            store.promise(A, 2)
        assert store.promised_epoch(A) == 3
        store.append([epoch_batch(A, 0, 4, epoch=3)])
        store.set_high_watermark(A, Offset(2))
        assert store.high_watermark(A) == 2
        assert store.promised_epoch(B) == 0  # per shard
        store.truncate_suffix(A, from_offset=Offset(3))
        assert store.promised_epoch(A) == 3
        store.delete_shard(A)
        assert store.promised_epoch(A) == 0
        assert store.high_watermark(A) == 0
        assert store.epoch_history(A) == ()

    def test_reset_log_restarts_at_an_offset(self, store: LogStore) -> None:
        store.append([epoch_batch(A, 0, 4, epoch=1)])
        store.promise(A, 2)
        store.set_high_watermark(A, Offset(3))
        store.reset_log(A, log_start=Offset(10))
        assert store.log_start(A) == store.log_end(A) == 10
        assert store.last_arrival_ms(A) == 0
        assert store.epoch_history(A) == ()
        assert store.promised_epoch(A) == 2
        assert read_all(store, A) == []
        assert store.first_offset_at_or_after_time(A, 0) is None
        store.append([epoch_batch(A, 10, 2, epoch=2)])
        assert [r.offset for r in read_all(store, A)] == [10, 11]
        assert store.epoch_history(A) == ((2, 10),)
        with pytest.raises(AssertionError):  # below log_start
            store.reset_log(A, log_start=Offset(9))

    def test_replica_state_survives_reopen(self, make_store: StoreFactory) -> None:
        if not self.persistent:
            pytest.skip("the store does not persist across make_store() calls")
        store = make_store()
        store.append([epoch_batch(A, 0, 2, epoch=1), epoch_batch(A, 2, 2, epoch=2)])
        store.append([epoch_batch(A, 4, 2, epoch=4, control=True)])
        store.promise(A, 5)
        store.set_high_watermark(A, Offset(4))
        store.truncate_suffix(A, from_offset=Offset(5))
        store.reset_log(B, log_start=Offset(7))
        store.close()
        store = make_store()
        try:
            assert store.epoch_history(A) == ((1, 0), (2, 2), (4, 4))
            assert store.promised_epoch(A) == 5
            assert store.high_watermark(A) == 4
            got = store.read_batches(
                A, start_offset=Offset(0), end_offset=Offset(9), bytes_max=10**6
            )
            assert [(b.first_offset, b.end_offset, b.epoch, b.control) for b in got] == [
                (0, 2, 1, False),
                (2, 4, 2, False),
                (4, 5, 4, True),
            ]
            assert store.log_start(B) == store.log_end(B) == 7
            store.append([epoch_batch(A, 5, 1, epoch=4), epoch_batch(A, 6, 1, epoch=6)])
            assert store.epoch_history(A) == ((1, 0), (2, 2), (4, 4), (6, 6))
        finally:
            store.close()


def epoch_batch(
    shard_uid: ShardUid,
    first: int,
    count: int,
    *,
    epoch: int,
    control: bool = False,
    arrival_ms: int = 1,
) -> AppendBatch:
    return AppendBatch(
        shard_uid=shard_uid,
        first_offset=Offset(first),
        arrival_ms=arrival_ms,
        records=tuple(NewRecord(partition_key=f"pk{first + i}", data=b"d") for i in range(count)),
        control=control,
        epoch=epoch,
    )
