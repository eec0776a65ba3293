"""The `LogStore` contract against `RocksLogStore`, plus what only a real disk can show:
reopening, corruption detection, and that range deletes stay in their column family."""

from __future__ import annotations

from pathlib import Path

import pytest
import rocksdict

from broker.log.keys import meta_key, record_key, time_key
from broker.log.records import AppendBatch, LogCorruptionError, NewRecord
from broker.log.rocks_store import (
    RECORDS_CF,
    SHARD_META_CF,
    TIME_INDEX_CF,
    RocksLogStore,
    column_family_options,
    db_options,
)
from broker.log.store import LogStoreError
from broker.types import Offset
from tests.log.conformance import A, B, LogStoreContract, StoreFactory, batch, read_all

pytestmark = pytest.mark.integration


class TestRocksLogStore(LogStoreContract):
    persistent = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        return lambda: RocksLogStore(tmp_path / "log")


class RawDb:
    """Opens the store's directory with rocksdict directly, to plant or inspect raw bytes."""

    def __init__(self, path: Path) -> None:
        self.db = rocksdict.Rdict(
            str(path), options=db_options(), column_families=column_family_options()
        )

    def cf(self, name: str) -> rocksdict.Rdict:
        return self.db.get_column_family(name)

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log"


def test_reopen_keeps_records_meta_and_index(path: Path) -> None:
    store = RocksLogStore(path)
    store.append([batch(A, 0, 3, arrival_ms=100), batch(B, 0, 1, arrival_ms=5)])
    store.append([batch(A, 3, 2, arrival_ms=200)])
    assert store.trim(A, arrival_ms_before=150) == 3
    before = read_all(store, A)
    store.close()
    store.close()  # idempotent

    reopened = RocksLogStore(path)
    try:
        assert read_all(reopened, A) == before
        assert reopened.log_start(A) == 3
        assert reopened.log_end(A) == 5
        assert reopened.last_arrival_ms(A) == 200
        assert reopened.first_offset_at_or_after_time(A, 0) == 3
        assert reopened.shard_uids() == {A, B}
        reopened.append([batch(A, 5, 1, arrival_ms=200)])
        assert reopened.log_end(A) == 6
    finally:
        reopened.close()


def test_second_open_of_a_locked_db_is_a_log_store_error(path: Path) -> None:
    store = RocksLogStore(path)
    try:
        with pytest.raises(LogStoreError) as raised:
            RocksLogStore(path)
        assert raised.value.__cause__ is not None
    finally:
        store.close()


def test_flipped_byte_is_detected_in_its_batch_only(path: Path) -> None:
    store = RocksLogStore(path)
    store.append([batch(A, 0, 3, arrival_ms=100, size=20)])
    store.append([batch(A, 3, 3, arrival_ms=100, size=20)])
    store.append([batch(A, 6, 3, arrival_ms=100, size=20)])
    store.close()

    raw = RawDb(path)
    records = raw.cf(RECORDS_CF)
    key = record_key(A, Offset(3))  # the middle batch
    stored = records[key]
    assert isinstance(stored, bytes)
    value = bytearray(stored)
    value[-5] ^= 0x01  # one bit of its last record's data
    records[key] = bytes(value)
    del records
    raw.close()

    store = RocksLogStore(path)
    try:

        def offsets(start: int, end: int) -> list[int]:
            got = store.read(
                A, start_offset=Offset(start), end_offset=Offset(end), records_max=9, bytes_max=999
            )
            return [r.offset for r in got]

        assert offsets(0, 3) == [0, 1, 2]
        assert offsets(6, 9) == [6, 7, 8]
        for start, end in ((0, 4), (3, 4), (4, 5), (5, 9)):
            with pytest.raises(LogCorruptionError):
                offsets(start, end)
        with pytest.raises(LogCorruptionError):
            read_all(store, A)
        with pytest.raises(LogCorruptionError):
            store.truncate_suffix(A, from_offset=Offset(4))
    finally:
        store.close()


def test_reopen_after_truncate_and_control_batches(path: Path) -> None:
    store = RocksLogStore(path)
    marker = AppendBatch(
        shard_uid=A,
        first_offset=Offset(4),
        arrival_ms=150,
        records=(NewRecord(partition_key="epoch", data=b"2"),),
        control=True,
    )
    store.append([batch(A, 0, 4, arrival_ms=100), marker, batch(A, 5, 4, arrival_ms=200)])
    store.truncate_suffix(A, from_offset=Offset(7))
    before = read_all(store, A)
    store.close()

    reopened = RocksLogStore(path)
    try:
        assert read_all(reopened, A) == before
        assert [r.offset for r in before] == [0, 1, 2, 3, 5, 6]
        assert reopened.log_end(A) == 7
        assert reopened.last_arrival_ms(A) == 200
        assert reopened.first_offset_at_or_after_time(A, 101) == 4
        reopened.append([batch(A, 7, 1, arrival_ms=200)])
        assert [r.offset for r in read_all(reopened, A)][-3:] == [5, 6, 7]
    finally:
        reopened.close()


def test_one_value_per_batch_on_disk(path: Path) -> None:
    """The layout itself: one records key and one index key per batch, at its first offset."""
    store = RocksLogStore(path)
    store.append([batch(A, 0, 500, arrival_ms=100), batch(A, 500, 3, arrival_ms=100)])
    store.truncate_suffix(A, from_offset=Offset(502))
    store.close()
    raw = RawDb(path)
    try:
        records, time_index = raw.cf(RECORDS_CF), raw.cf(TIME_INDEX_CF)
        assert list(records.keys()) == [record_key(A, Offset(0)), record_key(A, Offset(500))]
        assert list(time_index.keys()) == [
            time_key(A, 100, Offset(0)),
            time_key(A, 100, Offset(500)),
        ]
        del records, time_index
    finally:
        raw.close()


def test_replica_state_keys_in_shardmeta_are_tolerated_and_deleted(path: Path) -> None:
    """keys.py leaves room for replica state under longer shardmeta keys; check it is real."""
    store = RocksLogStore(path)
    store.append([batch(A, 0, 1, arrival_ms=1), batch(B, 0, 1, arrival_ms=1)])
    store.close()
    raw = RawDb(path)
    shard_meta = raw.cf(SHARD_META_CF)
    shard_meta[meta_key(A) + b"\x01"] = b"promised epoch"
    shard_meta[meta_key(B) + b"\x02"] = b"epoch history"
    del shard_meta
    raw.close()

    store = RocksLogStore(path)
    try:
        assert store.shard_uids() == {A, B}
        store.delete_shard(A)
        assert store.shard_uids() == {B}
    finally:
        store.close()


def test_range_deletes_touch_only_their_column_family_and_shard(path: Path) -> None:
    """Guards REFERENCE §5.2: WriteBatch.delete_range falls back to the default column family
    unless given a handle. Sentinels in the default family sit at keys inside the deleted ranges."""
    sentinels = {
        record_key(A, Offset(0)): b"records-range",
        time_key(A, 100, Offset(0)): b"tsidx-range",
        meta_key(B): b"meta-key",
    }
    raw = RawDb(path)
    for key, value in sentinels.items():
        raw.db[key] = value
    raw.close()

    store = RocksLogStore(path)
    store.append([batch(A, 0, 2, arrival_ms=100), batch(B, 0, 2, arrival_ms=100)])
    store.append([batch(A, 2, 1, arrival_ms=300)])
    assert store.trim(A, arrival_ms_before=200) == 2
    store.delete_shard(B)
    store.close()

    raw = RawDb(path)
    try:
        for key, value in sentinels.items():
            assert raw.db[key] == value
        records = raw.cf(RECORDS_CF)
        time_index = raw.cf(TIME_INDEX_CF)
        shard_meta = raw.cf(SHARD_META_CF)
        assert records.get(record_key(A, Offset(0))) is None
        assert records.get(record_key(A, Offset(2))) is not None
        assert records.get(record_key(B, Offset(0))) is None
        assert time_index.get(time_key(A, 100, Offset(0))) is None
        assert time_index.get(time_key(A, 300, Offset(2))) == b""
        assert shard_meta.get(meta_key(A)) is not None
        assert shard_meta.get(meta_key(B)) is None
        del records, time_index, shard_meta
    finally:
        raw.close()
