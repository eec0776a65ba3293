"""`RocksLogStore` with encryption at rest: the whole `LogStore` contract with every batch
sealed, plus what sealing adds (nothing readable on disk, key versions, a broken tag is
corruption, a missing key is not)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import rocksdict

from broker.log import records as batch_format
from broker.log.encryption import DATA_KEY_BYTES, DataKey, KeyUnavailableError
from broker.log.keys import record_key
from broker.log.records import BATCH_HEADER_BYTES, FLAG_ENCRYPTED, LogCorruptionError
from broker.log.rocks_store import RECORDS_CF, RocksLogStore, column_family_options, db_options
from broker.log.store import LogStoreError
from broker.types import Offset, ShardUid
from tests.log.conformance import A, B, LogStoreContract, StoreFactory, batch, read_all

pytestmark = pytest.mark.integration


class Keys:
    """Seals every shard but `clear` with the newest of its keys; `rotate` adds one."""

    def __init__(self, *, clear: frozenset[ShardUid] = frozenset()) -> None:
        self.clear = clear
        self.keys = [DataKey.of(1, os.urandom(DATA_KEY_BYTES))]

    def rotate(self) -> None:
        self.keys.append(DataKey.of(len(self.keys) + 1, os.urandom(DATA_KEY_BYTES)))

    def sealing_key(self, shard_uid: ShardUid) -> DataKey | None:
        return None if shard_uid in self.clear else self.keys[-1]

    def opening_key(self, shard_uid: ShardUid, version: int) -> DataKey:
        if not 1 <= version <= len(self.keys):
            raise KeyUnavailableError(f"no key {version}")
        return self.keys[version - 1]


class TestEncryptedRocksLogStore(LogStoreContract):
    persistent = True
    sealed = True

    # Not re-run sealed: these exercise only batch headers, offsets and replica state, which
    # sealing leaves in the clear and unchanged (TestRocksLogStore runs them). Sealing is a
    # pure function of a batch's bytes, so the threaded-readers test adds nothing either.
    test_unknown_shard_is_empty = None  # type: ignore[assignment]
    test_time_seek_uses_arrival = None  # type: ignore[assignment]
    test_trim_keeps_offsets = None  # type: ignore[assignment]
    test_delete_shard = None  # type: ignore[assignment]
    test_size_and_compaction = None  # type: ignore[assignment]
    test_readers_see_whole_appends_while_a_thread_writes = None  # type: ignore[assignment]
    test_trim_removes_whole_batches_only = None  # type: ignore[assignment]
    test_truncate_suffix_bounds_and_trimmed_prefix = None  # type: ignore[assignment]
    test_append_keeps_each_batch_epoch_and_opens_history_entries = None  # type: ignore[assignment]
    test_truncate_suffix_drops_history_entries_at_or_after_the_cut = None  # type: ignore[assignment]
    test_promise_and_high_watermark = None  # type: ignore[assignment]
    test_reset_log_restarts_at_an_offset = None  # type: ignore[assignment]
    test_replica_state_survives_reopen = None  # type: ignore[assignment]

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        keys = Keys()
        return lambda: RocksLogStore(tmp_path / "log", keys=keys)


def raw_values(path: Path) -> dict[bytes, bytes]:
    db = rocksdict.Rdict(str(path), options=db_options(), column_families=column_family_options())
    try:
        values = {}
        for key, value in db.get_column_family(RECORDS_CF).items():
            assert isinstance(key, bytes) and isinstance(value, bytes)
            values[key] = value
        return values
    finally:
        db.close()


def test_batches_are_sealed_on_disk_and_key_versions_open(tmp_path: Path) -> None:
    keys = Keys(clear=frozenset({B}))
    store = RocksLogStore(tmp_path / "log", keys=keys)
    store.append([batch(A, 0, 3, arrival_ms=1, tag="secret"), batch(B, 0, 2, arrival_ms=1)])
    keys.rotate()
    store.append([batch(A, 3, 2, arrival_ms=2, tag="rotated")])
    expected = read_all(store, A)
    assert [r.offset for r in expected] == [0, 1, 2, 3, 4]
    # Each record read says whether its batch was stored sealed (GetRecords' EncryptionType).
    assert all(r.encrypted for r in expected)
    assert [r.encrypted for r in read_all(store, B)] == [False, False]
    assert [r.partition_key for r in expected] == [
        "pksecret0",
        "pksecret1",
        "pksecret2",
        "pkrotated3",
        "pkrotated4",
    ]
    # A suffix truncation inside a sealed batch re-seals the rest with the batch's own key.
    store.truncate_suffix(A, from_offset=Offset(1))
    assert read_all(store, A) == expected[:1]
    store.append([batch(A, 1, 1, arrival_ms=3, tag="again")])
    store.close()

    values = raw_values(tmp_path / "log")
    sealed = [values[record_key(A, Offset(0))], values[record_key(A, Offset(1))]]
    for value in sealed:
        assert value[1] & FLAG_ENCRYPTED
        assert b"secret" not in value and b"again" not in value
    for value in sealed:
        assert batch_format.BatchHeader.parse(value).encrypted
    # The key version (u32) opens the sealed payload: 1 before the rotation, 2 after.
    assert [value[BATCH_HEADER_BYTES + 3] for value in sealed] == [1, 2]
    assert not values[record_key(B, Offset(0))][1] & FLAG_ENCRYPTED

    reopened = RocksLogStore(tmp_path / "log", keys=keys)
    try:
        assert [r.partition_key for r in read_all(reopened, A)] == ["pksecret0", "pkagain1"]
        assert len(read_all(reopened, B)) == 2
        assert [
            b.first_offset
            for b in reopened.read_batches(
                A, start_offset=Offset(0), end_offset=Offset(9), bytes_max=2**20
            )
        ] == [0, 1]
    finally:
        reopened.close()


def test_a_forged_batch_is_corruption_and_a_missing_key_is_not(tmp_path: Path) -> None:
    keys = Keys()
    store = RocksLogStore(tmp_path / "log", keys=keys)
    store.append([batch(A, 0, 2, arrival_ms=1), batch(B, 0, 2, arrival_ms=1)])
    store.close()

    # A ciphertext bit flipped and the CRC made to match: only the tag can tell.
    db = rocksdict.Rdict(
        str(tmp_path / "log"), options=db_options(), column_families=column_family_options()
    )
    records = db.get_column_family(RECORDS_CF)
    stored = records[record_key(A, Offset(0))]
    assert isinstance(stored, bytes)
    value = bytearray(stored)
    value[-1] ^= 0x01
    version = value[0]
    value[18:22] = batch_format.batch_crc(bytes(value), version).to_bytes(4, "big")
    records[record_key(A, Offset(0))] = bytes(value)
    del records
    db.close()

    reopened = RocksLogStore(tmp_path / "log", keys=keys)
    try:
        with pytest.raises(LogCorruptionError) as corrupt:
            read_all(reopened, A)
        assert corrupt.value.offset == 0
        del corrupt  # its frames hold the store's handles, which keep RocksDB locked
        # The scrubber's check needs no key: the CRC passed, the layout is checked on open.
        assert reopened.verify(
            A, start_offset=Offset(0), end_offset=Offset(2), bytes_max=2**20
        ) == (2, len(value))
    finally:
        reopened.close()

    gc.collect()
    keyless = RocksLogStore(tmp_path / "log")
    try:
        with pytest.raises(KeyUnavailableError):
            read_all(keyless, B)
        assert issubclass(KeyUnavailableError, LogStoreError)
        assert not issubclass(KeyUnavailableError, LogCorruptionError)
    finally:
        keyless.close()
