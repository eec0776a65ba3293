"""Corruption in a real RocksDB (issue 20): bytes overwritten inside an SST file must read as
an error at a known offset, never as the end of the shard; the damaged range is found, reads
after it still work, and a repair with the same records makes the whole log read back.

Method: one shard of 2,000 five-record batches, flushed and compacted into one SST; the store
closed; 64 bytes in the middle of that file overwritten (a data block); the store reopened.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.log.records import (
    BATCH_HEADER_BYTES,
    AppendBatch,
    BatchHeader,
    LogCorruptionError,
    NewRecord,
    decode_new_records,
    encode_batch,
)
from broker.log.rocks_store import RocksLogStore
from broker.types import Offset, ShardUid
from tests.chaos import disks

pytestmark = pytest.mark.integration

SHARD = ShardUid(3)
BATCHES = 2_000
PER_BATCH = 5
END = Offset(BATCHES * PER_BATCH)


def _batches() -> list[AppendBatch]:
    noise = random.Random(20)  # incompressible data: the middle of the SST is a data block
    return [
        AppendBatch(
            shard_uid=SHARD,
            first_offset=Offset(i * PER_BATCH),
            arrival_ms=1_000 + i,
            records=tuple(
                NewRecord(f"k{j}", f"{i}:{j}:".encode() + noise.randbytes(100))
                for j in range(PER_BATCH)
            ),
            epoch=1,
        )
        for i in range(BATCHES)
    ]


def _read_all(store: RocksLogStore, start: int = 0) -> list[bytes]:
    return [
        r.data
        for r in store.read(
            SHARD,
            start_offset=Offset(start),
            end_offset=END,
            records_max=100_000,
            bytes_max=1 << 30,
        )
    ]


@pytest.fixture
def damaged(tmp_path: Path) -> Iterator[tuple[RocksLogStore, list[AppendBatch]]]:
    batches = _batches()
    store = RocksLogStore(tmp_path / "log")
    store.append(batches)
    store.compact(bottommost=True)
    store.close()
    sst = max((tmp_path / "log").glob("*.sst"), key=lambda f: f.stat().st_size)
    with sst.open("r+b") as file:
        file.seek(sst.stat().st_size // 2)
        file.write(b"\xaa" * 64)
    reopened = RocksLogStore(tmp_path / "log")
    try:
        yield reopened, batches
    finally:
        reopened.close()


def test_a_corrupt_block_is_an_error_at_an_offset_never_the_end_of_the_shard(
    damaged: tuple[RocksLogStore, list[AppendBatch]],
) -> None:
    store, batches = damaged
    with pytest.raises(LogCorruptionError) as read:
        _read_all(store)
    offset = read.value.offset
    assert read.value.shard_uid == SHARD
    assert offset is not None
    assert 0 < offset < END
    with pytest.raises(LogCorruptionError):
        store.read_batches(SHARD, start_offset=Offset(0), end_offset=END, bytes_max=1 << 30)
    with pytest.raises(LogCorruptionError) as verified:
        store.verify(SHARD, start_offset=Offset(0), end_offset=END, bytes_max=1 << 30)
    assert verified.value.offset == offset
    start, end = store.damaged_range(SHARD, offset)
    assert start % PER_BATCH == 0  # batch-aligned, so a repair rewrites whole batches
    assert start <= offset < end < END
    # Outside the damaged range the log still reads.
    assert len(_read_all(store, end)) == END - end
    # A repair with the same records (what another replica sends) makes it whole again.
    copies = [b for b in batches if start <= b.first_offset < end]
    assert store.repair(SHARD, copies)
    assert _read_all(store) == [r.data for b in batches for r in b.records]
    # The time index names the rewritten batches (a time lookup lands inside the range).
    assert store.first_offset_at_or_after_time(SHARD, copies[0].arrival_ms) == start
    store.verify(SHARD, start_offset=Offset(0), end_offset=END, bytes_max=1 << 30)


def test_a_repair_with_other_records_is_refused(
    damaged: tuple[RocksLogStore, list[AppendBatch]],
) -> None:
    store, batches = damaged
    with pytest.raises(LogCorruptionError) as read:
        _read_all(store)
    assert read.value.offset is not None
    start, end = store.damaged_range(SHARD, read.value.offset)
    other_epoch = [
        AppendBatch(
            shard_uid=SHARD,
            first_offset=b.first_offset,
            arrival_ms=b.arrival_ms,
            records=b.records,
            epoch=2,  # another leader's records at those offsets: not this log's
        )
        for b in batches
        if start <= b.first_offset < end
    ]
    assert not store.repair(SHARD, other_epoch)
    with pytest.raises(LogCorruptionError):
        _read_all(store)


def test_a_compaction_over_a_corrupt_block_does_not_stop_writes(
    damaged: tuple[RocksLogStore, list[AppendBatch]],
) -> None:
    """Not paranoid (rocks_store.db_options): the failed compaction is counted, and the node
    keeps writing every other shard, and this one past the damage."""
    store, _ = damaged
    more = AppendBatch(
        shard_uid=SHARD,
        first_offset=END,
        arrival_ms=1_000 + BATCHES,
        records=(NewRecord("k", b"after"),),
        epoch=1,
    )
    store.append([more])
    store.compact(bottommost=True)
    assert store.metrics_view().background_errors >= 1
    other = AppendBatch(
        shard_uid=ShardUid(4), first_offset=Offset(0), arrival_ms=1, records=(NewRecord("k", b"x"),)
    )
    store.append([other])
    assert (
        store.read(
            SHARD, start_offset=END, end_offset=Offset(END + 1), records_max=1, bytes_max=99
        )[0].data
        == b"after"
    )


def test_kept_read_errors_do_not_stop_the_store_from_reopening(
    damaged: tuple[RocksLogStore, list[AppendBatch]],
) -> None:
    """A failed read's error, kept (the read-ahead cache keeps a failed page until it
    expires), held the read's handles and iterators through its frames, and with them
    RocksDB's lock: the store could not be reopened (nor its corrupt files dropped) while it
    lived. Both ways a read fails here: a forward step, and a seek into the damage."""
    store, batches = damaged
    kept: list[LogCorruptionError] = []
    with pytest.raises(LogCorruptionError) as stepped:
        _read_all(store)
    kept.append(stepped.value)
    offset = stepped.value.offset
    assert offset is not None
    with pytest.raises(LogCorruptionError) as sought:
        _read_all(store, offset + 1)
    kept.append(sought.value)
    del stepped, sought
    store.reopen(attempts=3, pause_s=0.05)
    start, end = store.damaged_range(SHARD, offset)
    assert store.repair(SHARD, [b for b in batches if start <= b.first_offset < end])
    assert len(_read_all(store)) == END
    assert len(kept) == 2


def test_a_batch_written_before_crc32c_still_reads() -> None:
    """Format version 2 (zlib's CRC32), from data directories written before version 3: read
    as is, no migration step (records.py)."""
    value = bytearray(
        encode_batch(arrival_ms=5, epoch=1, control=False, records=[NewRecord("k", b"old")])
    )
    value[0] = 2
    crc = zlib.crc32(bytes(value[BATCH_HEADER_BYTES:]), zlib.crc32(bytes(value[:18])))
    struct.pack_into(">I", value, 18, crc)
    header = BatchHeader.parse(bytes(value))
    assert decode_new_records(bytes(value), header, begin=0, stop=1)[0].data == b"old"
    value[-1] ^= 0xFF
    with pytest.raises(LogCorruptionError):
        BatchHeader.parse(bytes(value))


# --- A corrupt block shared by two shards -------------------------------------------------

SHARDS = [ShardUid(uid) for uid in range(1, 6)]
SMALL_BATCHES = 40  # per shard: the five shards' first records make one small SST


def _small_batches(
    shard: ShardUid, first: int, count: int, noise: random.Random
) -> list[AppendBatch]:
    return [
        AppendBatch(
            shard_uid=shard,
            first_offset=Offset(first + i),
            arrival_ms=1_000 + first + i,
            records=(NewRecord("k", f"{shard}:{first + i}:".encode() + noise.randbytes(30)),),
            epoch=1,
        )
        for i in range(count)
    ]


def _failing_shards(store: RocksLogStore, ends: dict[ShardUid, Offset]) -> dict[ShardUid, Offset]:
    """Each shard whose log does not read back, with the offset the check names."""
    failing = {}
    for shard in SHARDS:
        try:
            store.verify(shard, start_offset=Offset(0), end_offset=ends[shard], bytes_max=1 << 30)
        except LogCorruptionError as error:
            failing[shard] = Offset(error.offset or 0)  # every read names the offset
    return failing


def test_a_corrupt_block_holding_two_shards_records_is_repaired_for_good(tmp_path: Path) -> None:
    """Seen in the chaos test (seed 855155360): a block holding the end of one shard's records
    and the start of the next one's. After both ranges were repaired, every seek into the rest
    of the first shard still read the corrupt block (the repair's range tombstone ends where
    the shard's records in it end, and the block's next keys are the other shard's), so the
    same range was found damaged again at once, and repaired, forever. Now the repair that
    does not fence the block off drops the file; the batches it held are found missing and
    repaired in turn, and the log reads back whole, also what was written after the damage."""
    noise = random.Random(21)
    batches = {shard: _small_batches(shard, 0, SMALL_BATCHES, noise) for shard in SHARDS}
    path = tmp_path / "log"
    store = RocksLogStore(path)
    for shard in SHARDS:
        store.append(batches[shard])
    store.close()  # flushes the memtables: one small records SST with every shard's
    disks.corrupt_block_of_two_shards(path, {shard: Offset(SMALL_BATCHES) for shard in SHARDS})
    store = RocksLogStore(path)
    try:
        for shard in SHARDS:  # newer records, above the damage, in the memtable
            later = _small_batches(shard, SMALL_BATCHES, 5, noise)
            store.append(later)
            batches[shard] += later
        ends = {shard: batches[shard][-1].end_offset for shard in SHARDS}
        rounds = 0
        while failing := _failing_shards(store, ends):
            rounds += 1
            assert rounds <= 4, f"the damage is found again after every repair: {failing}"
            for shard, offset in failing.items():
                start, end = store.damaged_range(shard, offset)
                assert store.repair(
                    shard, [b for b in batches[shard] if start <= b.first_offset < end]
                )
        assert list((path / "lost").glob("**/*.sst")), "the corrupt file was dropped"
        for shard in SHARDS:
            read = store.read(
                shard,
                start_offset=Offset(0),
                end_offset=ends[shard],
                records_max=1_000,
                bytes_max=1 << 30,
            )
            assert [r.data for r in read] == [r.data for b in batches[shard] for r in b.records]
    finally:
        store.close()
