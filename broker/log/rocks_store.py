"""`RocksLogStore`: every shard log of this node in one RocksDB, through rocksdict.

The only module that imports rocksdict (STYLE B.2). Layout and column families are in
`keys.py`; the batch codec is in `records.py`. Each `AppendBatch` is one RocksDB value, so an
append costs one `WriteBatch.put` per batch (plus its time-index entry), whatever its size.

Lifecycle: `RocksLogStore(path)` opens (creating the directory and column families if
missing); `close()` releases the RocksDB lock so the same path can be reopened in this process.

Durability: every mutation is one `WriteBatch` written with `sync=False` and followed by one
`flush_wal(sync=True)`. rocksdict holds the GIL during `write` but releases it during
`flush_wal`, so the fsync (the slow part) does not stall the asyncio loop (REFERENCE §5.2).
The group-commit thread makes one such call carry many producers' batches.

Threading: see `store.py`. Mutations take `_write_lock`, so an `append` and a `trim` never
compute shard meta from each other's stale view. `append` encodes its batches before taking the
lock (pure work on its own arguments). Reads take no lock: a RocksDB iterator reads
one consistent view, and every mutation is a single atomic WriteBatch.

Errors: rocksdict raises bare `Exception` for every RocksDB status; `_engine_errors` turns them
into `LogStoreError` here, at the boundary (STYLE B.8). Our own asserts, `LogCorruptionError`
and `LogStoreLostError` pass through untouched.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import rocksdict

from broker import limits
from broker.log.encryption import (
    BatchKeys,
    BatchTagError,
    NoKeys,
    opener_for,
    resealer_for,
    sealer_for,
)
from broker.log.keys import (
    EMPTY_SHARD_META,
    SHARD_PREFIX_BYTES,
    ShardMeta,
    decode_meta,
    decode_u64,
    encode_meta,
    encode_u64,
    epoch_key,
    epoch_key_prefix,
    epoch_key_prefix_end,
    high_watermark_key,
    meta_key,
    parse_epoch_key,
    parse_meta_key,
    parse_record_key,
    parse_time_key,
    promised_key,
    record_key,
    shard_prefix,
    shard_prefix_end,
    time_key,
)
from broker.log.probe import StorageView
from broker.log.records import (
    BATCH_HEADER_BYTES,
    AppendBatch,
    BatchHeader,
    LogCorruptionError,
    RecordPage,
    RecordRun,
    StoredRecord,
    check_layout,
    decode_new_records,
    page_run,
    plain_value,
    sealed_batch,
    truncate_batch,
)
from broker.log.store import (
    LogStoreError,
    LogStoreLostError,
    advance_meta,
    check_history,
    check_read_arguments,
    check_truncate_suffix,
    clear_frames,
    cut_history,
    epoch_of,
    extend_history,
)
from broker.types import Offset, ShardUid

log = logging.getLogger(__name__)

RECORDS_CF = "records"
TIME_INDEX_CF = "tsidx"
SHARD_META_CF = "shardmeta"
COLUMN_FAMILIES = (RECORDS_CF, TIME_INDEX_CF, SHARD_META_CF)


@contextlib.contextmanager
def _engine_errors(operation: str) -> Iterator[None]:
    """Translates rocksdict's exceptions into `LogStoreError`, or `LogCorruptionError` for a
    RocksDB `Corruption` status (a block checksum mismatch, a broken table), keeping our own;
    drops the locals of the failed call's finished frames either way."""
    try:
        yield
    except (AssertionError, LogCorruptionError, LogStoreError, LogStoreLostError) as error:
        clear_frames(error)  # see below
        raise
    except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
        # The finished frames of the call hold its iterators, which keep RocksDB open (and
        # its lock taken) for as long as the error lives: a failed read kept by the read-ahead
        # cache would stop the store from being reopened.
        clear_frames(exc)
        raise _translated(operation, exc) from exc


def _translated(operation: str, exc: Exception) -> Exception:
    if str(exc).startswith("Corruption"):
        return LogCorruptionError(f"RocksDB {operation}: {exc}")
    return LogStoreError(f"RocksDB {operation} failed: {exc}")


def _iterator_failure(iterator: rocksdict.RdictIter) -> Exception | None:
    """Why an iterator stopped being valid: None at the end of its range, else the RocksDB
    status (a corrupt block ends an iterator exactly like the end of the data does)."""
    try:
        iterator.status()
    except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
        return exc
    return None


def _check_iterator(iterator: rocksdict.RdictIter, operation: str) -> None:
    """After a loop over `iterator` ended: raise if it ended on an error, not at the end."""
    failure = _iterator_failure(iterator)
    if failure is not None:
        raise _translated(operation, failure) from failure


def db_options() -> rocksdict.Options:
    """Options of the database and its default column family (which we never write)."""
    options = rocksdict.Options(raw_mode=True)  # bytes in, bytes out; no pickling
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    # A torn WAL tail after a crash is cut at the last intact batch. Everything acknowledged
    # was fsynced before, so this loses nothing we promised (RocksDB's default, made explicit).
    options.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    # Not paranoid: with it, a compaction that reads a corrupt block puts the whole DB in a
    # read-only error state (every shard on the node stops taking writes until a restart, and
    # the same compaction stops it again). Corruption is found where it matters instead: every
    # read verifies RocksDB's block checksums and our per-batch CRC, the scrubber reads every
    # batch at a bounded rate, and a damaged range is repaired from a healthy replica
    # (decisions/0002, "Corruption"). A compaction that fails on a corrupt block is retried
    # and counted (`rocksdb.background-errors`, ShoalRocksDBBackgroundErrors).
    options.set_paranoid_checks(False)
    _recycle_wal_files(options)
    return options


def _recycle_wal_files(options: rocksdict.Options) -> None:
    """Spent WAL files are overwritten rather than deleted and created anew (limits.py says why:
    a sync of a recycled file changes no file size, so it waits for no filesystem journal commit,
    which every writer on the file system shares: a source of a WAL sync's latency and outliers).

    Crash safety is unchanged. A recycled file's records carry their log number (RocksDB's
    "recyclable" record format), so on recovery the stale tail of the file's previous life is
    recognised as the end of the log, not replayed and not taken for corruption; RocksDB 9.x
    accepts recycling with point-in-time recovery (it turns recycling off for the two recovery
    modes it cannot serve) and refuses writes that skip the WAL, which we never make. A synced
    write is in the file's data blocks, which fdatasync flushes as before; what no longer needs
    flushing is the size, which did not change.

    The cap on the WAL's total size makes RocksDB flush the column families that still hold
    data in the oldest WAL file, so that file is spent and can be recycled; it also bounds how
    much WAL a restart replays.
    """
    options.set_recycle_log_file_num(limits.rocksdb_wal_files_recycled)
    options.set_max_total_wal_size(limits.rocksdb_wal_bytes_max)


def column_family_options() -> dict[str, rocksdict.Options]:
    """Options per column family; each must be raw too, or rocksdict pickles its keys."""
    records = rocksdict.Options(raw_mode=True)
    # Every read stays within one shard (8-byte prefix). The prefix extractor plus a memtable
    # prefix bloom lets a seek skip other shards' data; reads also set an upper bound, so no
    # iterator ever walks into a neighbour.
    records.set_prefix_extractor(rocksdict.SliceTransform.create_fixed_prefix(SHARD_PREFIX_BYTES))
    records.set_memtable_prefix_bloom_ratio(0.1)
    time_index = rocksdict.Options(raw_mode=True)
    time_index.set_prefix_extractor(
        rocksdict.SliceTransform.create_fixed_prefix(SHARD_PREFIX_BYTES)
    )
    # shardmeta is scanned across shards by shard_uids(), so it has no prefix extractor.
    shard_meta = rocksdict.Options(raw_mode=True)
    return {RECORDS_CF: records, TIME_INDEX_CF: time_index, SHARD_META_CF: shard_meta}


@dataclass(slots=True, kw_only=True)
class _Handles:
    """Every rocksdict object bound to the open DB; dropped as one so close() really closes."""

    db: rocksdict.Rdict
    records: rocksdict.Rdict  # column family views, for reads
    time_index: rocksdict.Rdict
    shard_meta: rocksdict.Rdict
    records_cf: rocksdict.ColumnFamily  # column family handles, for WriteBatch
    time_index_cf: rocksdict.ColumnFamily
    shard_meta_cf: rocksdict.ColumnFamily

    def release(self) -> None:
        """Drops every object, so whatever still holds this instance (the frames of an
        error's traceback, kept by a cached failed read) no longer keeps RocksDB open; a call
        still using it fails (`LogStoreError`, retryable)."""
        for name in self.__slots__:
            delattr(self, name)


_METRIC_PROPERTIES = (
    "rocksdb.total-sst-files-size",
    "rocksdb.estimate-live-data-size",
    "rocksdb.estimate-pending-compaction-bytes",
    "rocksdb.size-all-mem-tables",
    "rocksdb.num-running-compactions",
    "rocksdb.is-write-stopped",
)


class RocksLogStore:
    """A `LogStore` on RocksDB. Thread-safety: see the module docstring and `store.py`."""

    def __init__(self, path: Path, *, keys: BatchKeys | None = None) -> None:
        self._path = path
        # Data keys of encrypted streams (log/encryption.py): new batches of a shard whose
        # stream is encrypted are sealed with its current key; sealed batches are opened on
        # every read that decodes records.
        self._keys: BatchKeys = keys if keys is not None else NoKeys()
        self._write_lock = threading.Lock()
        # Each shard's epoch history, loaded on first use under _write_lock and kept in step
        # with every mutation, so `append` decides on a new entry without a read.
        self._histories: dict[ShardUid, list[tuple[int, Offset]]] = {}
        self._closed = False
        self._lost: str | None = None  # why the log was given up (`_lose_log`), and where it went
        self._handles: _Handles | None = self._open()
        # sync=False on write, then one flush_wal(sync=True): see the module docstring.
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False
        # The WAL is our durability; never skip it. rocksdict 0.3.29's stub declares
        # disable_wal as a method, but at run time it is a bool property.
        self._write_options.disable_wal = False  # type: ignore[method-assign,assignment]

    def _open(self) -> _Handles:
        with _engine_errors("open"):
            db = rocksdict.Rdict(
                str(self._path),
                options=db_options(),
                column_families=column_family_options(),
                access_type=rocksdict.AccessType.read_write(),
            )
            return _Handles(
                db=db,
                records=db.get_column_family(RECORDS_CF),
                time_index=db.get_column_family(TIME_INDEX_CF),
                shard_meta=db.get_column_family(SHARD_META_CF),
                records_cf=db.get_column_family_handle(RECORDS_CF),
                time_index_cf=db.get_column_family_handle(TIME_INDEX_CF),
                shard_meta_cf=db.get_column_family_handle(SHARD_META_CF),
            )

    # --- Mutations (serialized by _write_lock) --------------------------------------------

    def append(
        self, batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        if not batches:
            return
        h = self._open_handles()
        # Each batch's stored bytes, encoded once (by the leader that proposed it, or kept as
        # the leader sent them): what the followers got is byte for byte what is stored here.
        # An encrypted stream's batch is sealed here, with this node's key for the stream.
        values = [self._stored_value(batch) for batch in batches]
        with self._write_lock, _engine_errors("append"):
            metas: dict[ShardUid, ShardMeta] = {}
            histories: dict[ShardUid, list[tuple[int, Offset]]] = {}
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            for batch, value in zip(batches, values, strict=True):
                uid = batch.shard_uid
                meta = metas[uid] if uid in metas else self._meta(h, uid)
                metas[uid] = advance_meta(meta, batch)
                batch_write.put(record_key(uid, batch.first_offset), value, h.records_cf)
                # One index entry per batch is exact: the batch shares one arrival time.
                key = time_key(uid, batch.arrival_ms, batch.first_offset)
                batch_write.put(key, b"", h.time_index_cf)
                if uid not in histories:
                    histories[uid] = list(self._history(h, uid))
                if extend_history(histories[uid], batch):
                    batch_write.put(
                        epoch_key(uid, batch.epoch),
                        encode_u64(batch.first_offset),
                        h.shard_meta_cf,
                    )
            for uid, meta in metas.items():
                batch_write.put(meta_key(uid), encode_meta(meta), h.shard_meta_cf)
            self._write_durably(h, batch_write, written)
            self._histories.update(histories)

    def trim(self, shard_uid: ShardUid, *, arrival_ms_before: int) -> Offset:
        assert arrival_ms_before >= 0
        h = self._open_handles()
        with self._write_lock, _engine_errors("trim"):
            meta = self._meta(h, shard_uid)
            found = self._first_at_or_after(h, shard_uid, arrival_ms_before)
            new_start = meta.log_end if found is None else found
            if new_start <= meta.log_start:
                return meta.log_start
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            # new_start is the first offset of a batch (an index entry) or log_end, so this
            # deletes whole batches. delete_range ignores the batch's default column family
            # (REFERENCE §5.2), so each call names its column family explicitly.
            batch_write.delete_range(
                record_key(shard_uid, Offset(0)), record_key(shard_uid, new_start), h.records_cf
            )
            batch_write.delete_range(
                time_key(shard_uid, 0, Offset(0)),
                time_key(shard_uid, arrival_ms_before, Offset(0)),
                h.time_index_cf,
            )
            new_meta = ShardMeta(
                log_start=new_start, log_end=meta.log_end, last_arrival_ms=meta.last_arrival_ms
            )
            batch_write.put(meta_key(shard_uid), encode_meta(new_meta), h.shard_meta_cf)
            self._write_durably(h, batch_write)
            return new_start

    def truncate_suffix(self, shard_uid: ShardUid, *, from_offset: Offset) -> None:
        h = self._open_handles()
        with self._write_lock, _engine_errors("truncate_suffix"):
            meta = self._meta(h, shard_uid)
            check_truncate_suffix(meta, from_offset)
            if from_offset == meta.log_end:
                return
            # from_offset < log_end, so a retained batch holds it.
            found = self._batch_at(h, shard_uid, from_offset)
            assert found is not None, (shard_uid, from_offset, meta)
            first, value = found
            header = BatchHeader.parse(value)
            assert first <= from_offset < first + header.count, (first, header, from_offset)
            # A sealed batch is cut in the clear and sealed again with the key it had.
            value = self._plain(shard_uid, first, value, header)
            sealer = (
                resealer_for(self._keys, shard_uid, found[1][BATCH_HEADER_BYTES:])
                if header.encrypted
                else None
            )
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            end = shard_prefix_end(shard_uid)
            # Every later batch starts above from_offset, and arrives no earlier than this one,
            # so its index entries sort after (arrival, first) of this batch (keys.py).
            kept_arrival_ms = header.arrival_ms
            if first == from_offset:
                batch_write.delete_range(record_key(shard_uid, first), end, h.records_cf)
                batch_write.delete_range(
                    time_key(shard_uid, header.arrival_ms, first), end, h.time_index_cf
                )
                kept_arrival_ms = self._arrival_before(h, shard_uid, first)
            else:
                batch_write.delete_range(record_key(shard_uid, from_offset), end, h.records_cf)
                batch_write.delete_range(
                    time_key(shard_uid, header.arrival_ms, Offset(first + 1)),
                    end,
                    h.time_index_cf,
                )
                kept = truncate_batch(value, header, keep=from_offset - first, sealer=sealer)
                batch_write.put(record_key(shard_uid, first), kept, h.records_cf)
            new_meta = ShardMeta(
                log_start=meta.log_start, log_end=from_offset, last_arrival_ms=kept_arrival_ms
            )
            batch_write.put(meta_key(shard_uid), encode_meta(new_meta), h.shard_meta_cf)
            history = self._history(h, shard_uid)
            kept_history = cut_history(history, from_offset)
            for epoch, _ in history[len(kept_history) :]:
                batch_write.delete(epoch_key(shard_uid, epoch), h.shard_meta_cf)
            self._write_durably(h, batch_write)
            self._histories[shard_uid] = kept_history

    def delete_shard(self, shard_uid: ShardUid) -> None:
        h = self._open_handles()
        with self._write_lock, _engine_errors("delete_shard"):
            begin, end = shard_prefix(shard_uid), shard_prefix_end(shard_uid)
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            batch_write.delete_range(begin, end, h.records_cf)
            batch_write.delete_range(begin, end, h.time_index_cf)
            # A range, so the replica-state keys replication will add go too (keys.py).
            batch_write.delete_range(begin, end, h.shard_meta_cf)
            self._write_durably(h, batch_write)
            self._histories.pop(shard_uid, None)

    def promise(self, shard_uid: ShardUid, epoch: int) -> None:
        h = self._open_handles()
        with self._write_lock, _engine_errors("promise"):
            current = self._u64(h, promised_key(shard_uid))
            assert epoch >= current, (shard_uid, epoch, current)
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            batch_write.put(promised_key(shard_uid), encode_u64(epoch), h.shard_meta_cf)
            self._write_durably(h, batch_write)

    def set_high_watermark(self, shard_uid: ShardUid, offset: Offset) -> None:
        h = self._open_handles()
        with self._write_lock, _engine_errors("set_high_watermark"):
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            batch_write.put(high_watermark_key(shard_uid), encode_u64(offset), h.shard_meta_cf)
            # Lazily durable (store.py): the next durable write's WAL flush carries it.
            h.db.write(batch_write, self._write_options)

    def reset_log(self, shard_uid: ShardUid, *, log_start: Offset) -> None:
        h = self._open_handles()
        with self._write_lock, _engine_errors("reset_log"):
            meta = self._meta(h, shard_uid)
            assert log_start >= meta.log_start, (shard_uid, log_start, meta)
            begin, end = shard_prefix(shard_uid), shard_prefix_end(shard_uid)
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            batch_write.delete_range(begin, end, h.records_cf)
            batch_write.delete_range(begin, end, h.time_index_cf)
            batch_write.delete_range(
                epoch_key_prefix(shard_uid), epoch_key_prefix_end(shard_uid), h.shard_meta_cf
            )
            new_meta = ShardMeta(log_start=log_start, log_end=log_start, last_arrival_ms=0)
            batch_write.put(meta_key(shard_uid), encode_meta(new_meta), h.shard_meta_cf)
            self._write_durably(h, batch_write)
            self._histories[shard_uid] = []

    def compact(self, *, bottommost: bool = False) -> None:
        """Flushes the memtables and compacts every column family (which drops what range
        tombstones cover). `bottommost` also rewrites the last level's files when nothing
        above overlaps them (an operator's or a test's full rewrite)."""
        h = self._open_handles()
        options = rocksdict.CompactOptions()
        if bottommost:
            options.set_bottommost_level_compaction(rocksdict.BottommostLevelCompaction.force())
        # No write lock: RocksDB compacts concurrently with writes, and the range tombstones
        # that trims leave behind are only dropped here.
        with _engine_errors("compact"):
            for view in (h.records, h.time_index, h.shard_meta):
                view.compact_range(None, None, options)

    def compact_shards(self, shard_uids: Sequence[ShardUid]) -> None:
        """Compacts the key ranges of these shards in every column family: what their trims
        and deletions left as range tombstones is dropped, and the space comes back, without
        rewriting the rest of the database (RocksDB flushes the memtables overlapping them
        first, so the WAL files behind them go too)."""
        h = self._open_handles()
        options = rocksdict.CompactOptions()
        # The shards' data may sit alone in the last level, under no tombstone-holding file.
        options.set_bottommost_level_compaction(rocksdict.BottommostLevelCompaction.force())
        with _engine_errors("compact_shards"):
            for uid in sorted(set(shard_uids)):
                begin, end = shard_prefix(uid), shard_prefix_end(uid)
                for view in (h.records, h.time_index, h.shard_meta):
                    view.compact_range(begin, end, options)

    def reopen(self, *, attempts: int = 50, pause_s: float = 0.1) -> None:
        """Closes RocksDB and opens it again (replaying its WAL): after a WAL write failed
        (no space left), RocksDB refuses every later write until it is reopened.

        RocksDB releases its lock only once every Python object bound to the old database is
        gone (readers finish within a call; exceptions raised by a failed write keep their
        frames, and so the old handles, alive until the caller clears them). So it tries
        `attempts` times, `pause_s` apart, and raises `LogStoreError` if it still cannot
        open; calls meanwhile raise `LogStoreError` (retryable) and the caller tries again."""
        assert attempts >= 1
        with self._write_lock:
            if self._lost is not None:  # never a new, empty log in its place
                raise LogStoreLostError(f"the shard log in {self._path} was given up: {self._lost}")
            self._close_handles()
            self._open_retrying(attempts, pause_s)
        log.warning("log_store_reopened", extra={"path": str(self._path)})

    def _close_handles(self) -> None:
        """Drops the handles and closes RocksDB (errors ignored: a reopen follows); call with
        _write_lock held. Calls meanwhile raise `LogStoreError` (retryable)."""
        assert not self._closed, "reopen after close()"
        handles, self._handles = self._handles, None
        self._histories.clear()
        if handles is not None:
            db = handles.db
            handles.release()  # every view and handle first, or the close does not close
            del handles
            with contextlib.suppress(Exception):  # its error is the one we reopen for
                db.close()
            del db

    def _open_retrying(self, attempts: int, pause_s: float) -> None:
        """Opens RocksDB, `attempts` times `pause_s` apart while the old handles still hold
        its lock; call with _write_lock held."""
        self._handles = _while_locked(self._open, attempts, pause_s, retried=LogStoreError)

    def close(self) -> None:
        with self._write_lock:
            self._closed = True
            if self._handles is None:
                return
            db = self._handles.db
            # RocksDB stays open while any column family view or handle lives (REFERENCE §5.2),
            # so drop them all before closing.
            self._handles = None
            with _engine_errors("close"):
                db.close()

    # --- Reads (any thread, no lock) ------------------------------------------------------

    def read(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> list[StoredRecord]:
        return self.read_page(
            shard_uid,
            start_offset=start_offset,
            end_offset=end_offset,
            records_max=records_max,
            bytes_max=bytes_max,
        ).records()

    def read_page(
        self,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        records_max: int,
        bytes_max: int,
    ) -> RecordPage:
        check_read_arguments(
            start_offset=start_offset,
            end_offset=end_offset,
            records_max=records_max,
            bytes_max=bytes_max,
        )
        if end_offset <= start_offset:
            return RecordPage()
        h = self._open_handles()
        runs: list[RecordRun] = []
        taken_records = taken_bytes = 0
        with _engine_errors("read"):
            for first, value, header in self._scan(h, shard_uid, start_offset, end_offset):
                if first + header.count <= start_offset or header.control:
                    continue
                value = self._plain(shard_uid, first, value, header)
                try:
                    run, taken_bytes, capped = page_run(
                        value,
                        header,
                        first_offset=first,
                        start_offset=max(first, start_offset),
                        end_offset=end_offset,
                        records_max=records_max,
                        bytes_max=bytes_max,
                        taken_records=taken_records,
                        taken_bytes=taken_bytes,
                    )
                except LogCorruptionError as error:
                    raise error.at(shard_uid, first) from error
                if run is not None:
                    runs.append(run)
                    taken_records += run.record_count
                if capped:
                    break
        return RecordPage(runs)

    def _scan(
        self, h: _Handles, shard_uid: ShardUid, start_offset: Offset, end_offset: Offset
    ) -> Iterator[tuple[Offset, bytes, BatchHeader]]:
        """The stored batches overlapping [start_offset, end_offset), in order, each with its
        verified header (CRC checked); the caller may stop early.

        Every way the log can fail to read back raises `LogCorruptionError` at the first
        offset that cannot be read, instead of ending early (which a reader would take for
        the end of the data): an iterator stopped by a RocksDB error (a corrupt block), a
        batch failing its CRC, and a hole in the offsets (a batch missing below log_end). A
        corrupt block that a repair's range tombstone covers is skipped by seeking past it
        (RocksDB's forward step reads it; a seek does not), so a repaired range reads back."""
        meta_before = self._meta(h, shard_uid)
        upper = _offset_bound(shard_uid, end_offset)
        # The options must outlive the iterator: RocksDB keeps a pointer to the bound.
        read_options = self._shard_read_options(upper)
        iterator = h.records.iter(read_options)
        try:
            expected = Offset(max(start_offset, meta_before.log_start))  # the next batch's first
            try:
                self._seek_batch(iterator, shard_uid, record_key(shard_uid, start_offset))
            except LogCorruptionError as error:
                raise error.at(shard_uid, expected) from error
            started = False
            while True:
                if not iterator.valid():
                    failure = _iterator_failure(iterator)
                    if failure is None:
                        break
                    iterator.seek(record_key(shard_uid, expected))
                    if iterator.valid() and iterator.key() == record_key(shard_uid, expected):
                        continue  # a repaired range: its corrupt original is out of the way
                    raise LogCorruptionError(
                        f"shard {shard_uid}: the log cannot be read at offset {expected}: "
                        f"{failure}",
                        shard_uid=shard_uid,
                        offset=expected,
                    ) from failure
                key = iterator.key()
                assert key < upper, (key, upper)
                key_uid, first = parse_record_key(key)
                assert key_uid == shard_uid, (key_uid, shard_uid)
                if (started and first != expected) or (not started and first > expected):
                    self._check_gap(h, shard_uid, expected, first)
                value = iterator.value()
                try:
                    header = BatchHeader.parse(value)
                except LogCorruptionError as error:
                    raise error.at(shard_uid, first) from error
                started = True
                expected = Offset(max(expected, first + header.count))
                yield first, value, header
                iterator.next()
            self._check_end(h, shard_uid, expected, min(end_offset, meta_before.log_end))
        finally:
            del iterator, read_options  # a live iterator keeps the DB open

    def _check_gap(self, h: _Handles, shard_uid: ShardUid, expected: Offset, found: Offset) -> None:
        """Offsets [expected, found) are missing between two batches: corruption, unless a
        trim or reset that ran meanwhile removed them (they are then below log_start)."""
        if found < expected:
            raise LogCorruptionError(
                f"shard {shard_uid}: batches overlap at offset {found} (expected {expected})",
                shard_uid=shard_uid,
                offset=found,
            )
        if self._meta(h, shard_uid).log_start < found:
            raise LogCorruptionError(
                f"shard {shard_uid}: offsets {expected}..{found - 1} are missing from the log",
                shard_uid=shard_uid,
                offset=expected,
            )

    def _check_end(self, h: _Handles, shard_uid: ShardUid, reached: Offset, due: Offset) -> None:
        """The scan ended at `reached`, though batches below `due` (the end asked for, at most
        the log end when it began) exist: they are missing, unless a trim, reset or suffix
        truncation that ran meanwhile removed them."""
        if reached >= due:
            return
        meta = self._meta(h, shard_uid)
        if reached < meta.log_start or reached >= meta.log_end:
            return
        raise LogCorruptionError(
            f"shard {shard_uid}: offsets from {reached} are missing from the log "
            f"(log end {meta.log_end})",
            shard_uid=shard_uid,
            offset=reached,
        )

    def first_offset_at_or_after_time(self, shard_uid: ShardUid, arrival_ms: int) -> Offset | None:
        assert arrival_ms >= 0
        h = self._open_handles()
        with _engine_errors("first_offset_at_or_after_time"):
            offset = self._first_at_or_after(h, shard_uid, arrival_ms)
            if offset is None:
                return None
            # Pair the index with the log (STYLE B.9): the indexed batch exists and qualifies.
            value = h.records.get(record_key(shard_uid, offset))
            if value is None:
                if offset < self._meta(h, shard_uid).log_start:
                    return self._first_at_or_after(h, shard_uid, arrival_ms)  # trimmed meanwhile
                raise LogCorruptionError(
                    f"shard {shard_uid}: the time index names offset {offset}, not in the log",
                    shard_uid=shard_uid,
                    offset=offset,
                )
            try:
                header = BatchHeader.parse(value)
            except LogCorruptionError as error:
                raise error.at(shard_uid, offset) from error
            assert header.arrival_ms >= arrival_ms
            return offset

    def log_start(self, shard_uid: ShardUid) -> Offset:
        with _engine_errors("log_start"):
            return self._meta(self._open_handles(), shard_uid).log_start

    def log_end(self, shard_uid: ShardUid) -> Offset:
        with _engine_errors("log_end"):
            return self._meta(self._open_handles(), shard_uid).log_end

    def last_arrival_ms(self, shard_uid: ShardUid) -> int:
        with _engine_errors("last_arrival_ms"):
            return self._meta(self._open_handles(), shard_uid).last_arrival_ms

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
        if end_offset <= start_offset:
            return []
        h = self._open_handles()
        batches: list[AppendBatch] = []
        with _engine_errors("read_batches"):
            taken_bytes = 0
            for first, value, header in self._scan(h, shard_uid, start_offset, end_offset):
                begin = max(start_offset, first) - first
                stop = min(end_offset - first, header.count)
                if begin >= stop:
                    continue
                value = self._plain(shard_uid, first, value, header)
                try:
                    if begin == 0 and stop == header.count and not header.encrypted:
                        # A whole batch travels as it is stored (its CRC checked by _scan);
                        # an encrypted one in the clear, as records (sealed by the receiver).
                        check_layout(value, header)
                        batch = AppendBatch.from_value(
                            shard_uid=shard_uid, first_offset=first, value=value, header=header
                        )
                    else:
                        batch = AppendBatch(
                            shard_uid=shard_uid,
                            first_offset=Offset(first + begin),
                            arrival_ms=header.arrival_ms,
                            records=decode_new_records(value, header, begin=begin, stop=stop),
                            control=header.control,
                            epoch=header.epoch,
                            version=header.version,
                        )
                except LogCorruptionError as error:
                    raise error.at(shard_uid, first) from error
                if batches and taken_bytes + batch.size_bytes > bytes_max:
                    break
                batches.append(batch)
                taken_bytes += batch.size_bytes
        return batches

    def verify(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> tuple[Offset, int]:
        """The scrubber's read: checks the batches from `start_offset` (RocksDB's block
        checksums, each batch's CRC and layout, dense offsets) without building records, and
        stops after the batch that takes it past `bytes_max` of stored bytes. Returns (where
        to continue, bytes checked); raises `LogCorruptionError` where the log is damaged."""
        assert bytes_max >= 1
        if end_offset <= start_offset:
            return start_offset, 0
        h = self._open_handles()
        checked = 0
        reached = start_offset
        with _engine_errors("verify"):
            for first, value, header in self._scan(h, shard_uid, start_offset, end_offset):
                try:
                    check_layout(value, header)
                except LogCorruptionError as error:
                    raise error.at(shard_uid, first) from error
                checked += len(value)
                reached = Offset(max(reached, min(first + header.count, end_offset)))
                if checked >= bytes_max:
                    break
            else:
                reached = Offset(max(reached, end_offset))
        return reached, checked

    def damaged_range(self, shard_uid: ShardUid, offset: Offset) -> tuple[Offset, Offset]:
        """The batch-aligned range [start, end) that does not read back around `offset`, where
        a read failed: from the first offset of the batch holding it to the first offset of
        the next batch that reads back whole (or the log end). Batch boundaries come from the
        time index, which names every batch's first offset; if it cannot be read either, the
        range runs from `offset` to the log end."""
        h = self._open_handles()
        with _engine_errors("damaged_range"):
            meta = self._meta(h, shard_uid)
            offset = Offset(min(max(offset, meta.log_start), meta.log_end))
            try:
                starts = self._indexed_starts(h, shard_uid)
            except LogCorruptionError:
                return offset, meta.log_end
            before = [first for first in starts if first <= offset]
            start = Offset(max(before[-1] if before else meta.log_start, meta.log_start))
            for first in (first for first in starts if first > offset):
                if self._batch_reads_back(h, shard_uid, first):
                    return start, first
            return start, meta.log_end

    def _indexed_starts(self, h: _Handles, shard_uid: ShardUid) -> list[Offset]:
        """Every batch's first offset named by the shard's time index, in order."""
        read_options = self._shard_read_options(shard_prefix_end(shard_uid))
        iterator = h.time_index.iter(read_options)
        iterator.seek(shard_prefix(shard_uid))
        starts: list[Offset] = []
        while iterator.valid():
            starts.append(parse_time_key(iterator.key())[2])
            iterator.next()
        failure = _iterator_failure(iterator)
        del iterator, read_options  # a live iterator keeps the DB open
        if failure is not None:
            raise LogCorruptionError(
                f"shard {shard_uid}: its time index cannot be read: {failure}",
                shard_uid=shard_uid,
            ) from failure
        return starts

    def _batch_reads_back(self, h: _Handles, shard_uid: ShardUid, first: Offset) -> bool:
        try:
            value = h.records.get(record_key(shard_uid, first))
            if value is None:
                return False
            check_layout(value, BatchHeader.parse(value))
        except LogCorruptionError:
            return False
        except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
            if isinstance(_translated("get", exc), LogCorruptionError):
                return False
            raise
        return True

    def repair(self, shard_uid: ShardUid, batches: Sequence[AppendBatch]) -> bool:
        """Rewrites the damaged range the batches cover (dense, from a `damaged_range` start
        to at most its end) with these copies from a healthy replica; durable when it returns.

        Checks that they are this log's records first: the range is still in the log, and the
        epoch history gives every offset of it the batch's epoch (two replicas hold the same
        record at an offset in an epoch). False, with nothing written, when they are not (a
        truncation or trim moved the log meanwhile, or the copy came from a diverged log).
        The new values shadow the damaged ones; a range tombstone over them keeps reads
        from touching the corrupt blocks again (`_scan`), unless a corrupt block also holds
        keys past the range (the next shard's first batches, in a small file): every seek
        into the rest of this shard still reads it, so the same range would be found damaged
        again at once, and repaired, forever. Then the files that do not read back whole go
        (`_drop_corrupt_files`); what else they held is found missing like any damage and
        repaired from the other replicas in turn. Raises `LogStoreLostError` when that drop
        would take more than records, or dropped nothing and the range still fails."""
        assert batches
        first = batches[0].first_offset
        end = batches[-1].end_offset
        for before, after in itertools.pairwise(batches):
            assert after.first_offset == before.end_offset, (before, after)
        values = [self._stored_value(batch) for batch in batches]  # the healthy copy's bytes
        h = self._open_handles()
        with self._write_lock, _engine_errors("repair"):
            meta = self._meta(h, shard_uid)
            if first < meta.log_start or end > meta.log_end:
                return False
            history = self._history(h, shard_uid)
            if any(
                epoch_of(history, batch.first_offset) != batch.epoch
                or epoch_of(history, Offset(batch.end_offset - 1)) != batch.epoch
                for batch in batches
            ):
                return False
            stale_index = self._index_keys_between(
                h, shard_uid, batches[0].arrival_ms, batches[-1].arrival_ms, first, end
            )
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            batch_write.delete_range(
                record_key(shard_uid, first), _offset_bound(shard_uid, end), h.records_cf
            )
            for key in stale_index:
                batch_write.delete(key, h.time_index_cf)
            for batch, value in zip(batches, values, strict=True):
                batch_write.put(record_key(shard_uid, batch.first_offset), value, h.records_cf)
                batch_write.put(
                    time_key(shard_uid, batch.arrival_ms, batch.first_offset),
                    b"",
                    h.time_index_cf,
                )
            self._write_durably(h, batch_write)
        del h
        size = sum(len(v) for v in values)
        # Still unreadable after RepairDB dropped nothing: the next repair would only run it
        # again, and again, so the log is given up instead.
        if (
            self._still_damaged(shard_uid, first, end, size)
            and not self._drop_corrupt_files()
            and self._still_damaged(shard_uid, first, end, size)
        ):
            self._lose(
                f"shard {shard_uid} offsets {first}..{end} do not read back after a repair "
                "and RocksDB's repair found no file to drop"
            )
        return True

    def _still_damaged(self, shard_uid: ShardUid, first: Offset, end: Offset, size: int) -> bool:
        """Whether a read of the just repaired range (and of the batch after it) still fails
        in it or right at its end: a corrupt block the range tombstone does not fence off."""
        try:
            log_end = self.log_end(shard_uid)
            self.verify(shard_uid, start_offset=first, end_offset=log_end, bytes_max=size + 1)
        except LogCorruptionError as error:
            where = error.offset
            # The error's frames hold iterators, which keep RocksDB open (`reopen`).
            clear_frames(error)
            del error
            return where is None or first <= where <= end
        return False

    def _drop_corrupt_files(self, *, attempts: int = 50, pause_s: float = 0.1) -> list[str]:
        """Closes RocksDB, runs its repair (RepairDB: every SST file that does not read back
        whole is moved to `lost/` under the log directory, the WAL is kept) and opens it
        again; returns the names of the files dropped. The blocks a range tombstone cannot
        fence off are gone with their files; so are the healthy batches those files held,
        which every read then finds missing (an error at their offsets, never the end of the
        log) and the replication driver repairs from the other replicas like any damaged
        range. Retries while old handles still hold RocksDB's lock, as `reopen` does.

        Only records files may go: a dropped shard-meta file would silently take a replica's
        promise, log end or epochs back to older values (it could then promise an epoch
        again, or take Appends from a fenced leader), and a dropped time-index file would
        silently skip records in a lookup by time. So if RepairDB drops any other file (or
        fails), the log is no longer this node's replica state: `_lose_log` moves it aside and
        raises `LogStoreLostError`. The repair runs on the directory renamed to
        `<log>.repairing`, so a crash meanwhile also leaves the node without its log (a lost
        disk), never with a half-repaired one."""
        with self._write_lock:
            h = self._open_handles()
            with _engine_errors("drop_corrupt_files"):
                droppable = sst_numbers(h.records)
            del h
            lost_before = _lost_ssts(self._path)
            self._close_handles()
            repairing = self._path.with_name(f"{self._path.name}.repairing")
            _rename_durably(self._path, repairing)
            try:
                _repair_db(repairing, attempts, pause_s)
            except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
                clear_frames(exc)
                if "lock" not in str(exc).lower():
                    self._lose_log(repairing, f"RocksDB's repair failed: {exc}")
                # Old handles still hold the lock: RepairDB changed nothing. Back as it was.
                _rename_durably(repairing, self._path)
                self._open_retrying(attempts, pause_s)
                raise LogStoreError(f"RocksDB drop_corrupt_files failed: {exc}") from None
            dropped = sorted(_lost_ssts(repairing) - lost_before)
            log.error(
                "log_store_corrupt_files_dropped", extra={"path": str(self._path), "lost": dropped}
            )
            kept_state = [name for name in dropped if _sst_number(name) not in droppable]
            if kept_state:
                self._lose_log(
                    repairing,
                    f"RocksDB's repair dropped {', '.join(kept_state)}, which held replica "
                    "state or time index entries, not only records",
                )
            _rename_durably(repairing, self._path)
            self._open_retrying(attempts, pause_s)
        return dropped

    def _lose(self, reason: str) -> None:
        """Closes RocksDB and gives up this log (`_lose_log`)."""
        with self._write_lock:
            self._close_handles()
            self._lose_log(self._path, reason)

    def _lose_log(self, directory: Path, reason: str) -> None:
        """Moves the (closed) log `directory` aside to `<log>.lost-<UTC time>` and raises
        `LogStoreLostError`; every later call raises it too. Call with _write_lock held. The
        node stops on it; started again without a log, it rejoins every replica it holds as
        after a lost disk (empty, with a floor: no vote, no leadership until caught up)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self._path.with_name(f"{self._path.name}.lost-{stamp}")
        _rename_durably(directory, aside)
        self._lost = f"{reason}; moved to {aside}"
        log.error(
            "log_store_lost", extra={"path": str(self._path), "moved_to": str(aside), "why": reason}
        )
        raise LogStoreLostError(
            f"the shard log in {self._path} can no longer be trusted ({reason}): moved to "
            f"{aside}; this node stops and rejoins its replicas as after a lost disk"
        )

    def _index_keys_between(
        self,
        h: _Handles,
        shard_uid: ShardUid,
        arrival_first: int,
        arrival_last: int,
        first: Offset,
        end: Offset,
    ) -> list[bytes]:
        """The time-index keys of batches starting in [first, end): their arrivals lie
        between those of the range's first and last records (arrivals follow offsets)."""
        read_options = self._shard_read_options(shard_prefix_end(shard_uid))
        iterator = h.time_index.iter(read_options)
        iterator.seek(time_key(shard_uid, arrival_first, Offset(0)))
        keys: list[bytes] = []
        while iterator.valid():
            key: bytes = iterator.key()
            _, arrival_ms, offset = parse_time_key(key)
            if arrival_ms > arrival_last:
                break
            if first <= offset < end:
                keys.append(key)
            iterator.next()
        else:
            _check_iterator(iterator, "repair")
        del iterator, read_options  # a live iterator keeps the DB open
        return keys

    def rebuild_time_index(self, shard_uid: ShardUid) -> None:
        """Writes the shard's time index anew from its batches (when the index itself is
        damaged: it is derived data, one entry per batch); durable when it returns. Raises
        `LogCorruptionError` if the batches do not all read back."""
        h = self._open_handles()
        with self._write_lock, _engine_errors("rebuild_time_index"):
            meta = self._meta(h, shard_uid)
            entries = [
                time_key(shard_uid, header.arrival_ms, first)
                for first, _, header in self._scan(h, shard_uid, meta.log_start, meta.log_end)
            ]
            batch_write = rocksdict.WriteBatch(raw_mode=True)
            batch_write.delete_range(
                shard_prefix(shard_uid), shard_prefix_end(shard_uid), h.time_index_cf
            )
            for key in entries:
                batch_write.put(key, b"", h.time_index_cf)
            self._write_durably(h, batch_write)

    def epoch_history(self, shard_uid: ShardUid) -> tuple[tuple[int, Offset], ...]:
        h = self._open_handles()
        with self._write_lock, _engine_errors("epoch_history"):
            return tuple(self._history(h, shard_uid))

    def promised_epoch(self, shard_uid: ShardUid) -> int:
        with _engine_errors("promised_epoch"):
            return self._u64(self._open_handles(), promised_key(shard_uid))

    def high_watermark(self, shard_uid: ShardUid) -> Offset:
        with _engine_errors("high_watermark"):
            return Offset(self._u64(self._open_handles(), high_watermark_key(shard_uid)))

    def shard_uids(self) -> set[ShardUid]:
        h = self._open_handles()
        with _engine_errors("shard_uids"):
            # Every shard with records or index entries has a meta entry (written in the same
            # batch), so the meta column family lists them all.
            uids: set[ShardUid] = set()
            iterator = h.shard_meta.iter(rocksdict.ReadOptions())
            iterator.seek_to_first()
            while iterator.valid():
                uids.add(parse_meta_key(iterator.key()))
                iterator.next()
            _check_iterator(iterator, "shard_uids")
            del iterator  # a live iterator keeps the DB open
            return uids

    def approximate_size_bytes(self) -> int:
        h = self._open_handles()
        total = 0
        with _engine_errors("approximate_size_bytes"):
            for view in (h.records, h.time_index, h.shard_meta):
                for prop in ("rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables"):
                    total += view.property_int_value(prop) or 0
        return total

    def metrics_view(self) -> StorageView:
        """RocksDB's own properties summed over the column families, for `/metrics`."""
        h = self._open_handles()
        totals = dict.fromkeys(_METRIC_PROPERTIES, 0)
        with _engine_errors("metrics_view"):
            for view in (h.records, h.time_index, h.shard_meta):
                for prop in _METRIC_PROPERTIES:
                    totals[prop] += view.property_int_value(prop) or 0
        return StorageView(
            sst_files_bytes=totals["rocksdb.total-sst-files-size"],
            live_data_bytes=totals["rocksdb.estimate-live-data-size"],
            pending_compaction_bytes=totals["rocksdb.estimate-pending-compaction-bytes"],
            memtable_bytes=totals["rocksdb.size-all-mem-tables"],
            # DB-wide properties, reported alike by every column family: count them once.
            running_compactions=totals["rocksdb.num-running-compactions"] // 3,
            write_stopped=totals["rocksdb.is-write-stopped"] > 0,
            # DB-wide, read on the DB itself (the column families do not report it).
            background_errors=h.db.property_int_value("rocksdb.background-errors") or 0,
        )

    # --- Helpers --------------------------------------------------------------------------

    def _stored_value(self, batch: AppendBatch) -> bytes:
        """What is stored for `batch`: its own bytes (encoded once, or the leader's as they
        came), unless its stream is encrypted here: then the records sealed with this node's
        key for the stream (what travels between nodes is the batch in the clear)."""
        sealer = None if batch.control else sealer_for(self._keys, batch.shard_uid)
        if sealer is None:
            return batch.value
        # The clear bytes' payload sealed as it is: no record is decoded or encoded again (a
        # follower's batch arrives as bytes; decoding its records cost more than the cipher).
        return sealed_batch(batch.value, sealer)

    def _plain(
        self, shard_uid: ShardUid, first: Offset, value: bytes, header: BatchHeader
    ) -> bytes:
        """The batch in the clear (`records.plain_value`); a tag that does not verify (its CRC
        passed: a wrong key or a forged batch) is corruption at the batch's first offset."""
        if not header.encrypted:
            return value
        try:
            return plain_value(value, header, opener_for(self._keys, shard_uid))
        except BatchTagError as error:
            raise LogCorruptionError(
                f"shard {shard_uid}: batch at offset {first} does not open: {error}",
                shard_uid=shard_uid,
                offset=first,
            ) from error

    def _open_handles(self) -> _Handles:
        handles = self._handles
        if handles is None:
            if self._lost is not None:
                raise LogStoreLostError(f"the shard log in {self._path} was given up: {self._lost}")
            assert not self._closed, f"log store at {self._path} used after close()"
            raise LogStoreError(f"the log store at {self._path} is being reopened")
        return handles

    def _write_durably(
        self,
        h: _Handles,
        batch_write: rocksdict.WriteBatch,
        written: Callable[[], object] | None = None,
    ) -> None:
        h.db.write(batch_write, self._write_options)
        if written is not None:
            # After the write, which holds the GIL (the loop could not run a callback during
            # it anyway), so the loop wakes while the fsync runs without it.
            written()
        h.db.flush_wal(sync=True)

    def _history(self, h: _Handles, shard_uid: ShardUid) -> list[tuple[int, Offset]]:
        """The shard's epoch history (cached); call with _write_lock held."""
        cached = self._histories.get(shard_uid)
        if cached is not None:
            return cached
        read_options = rocksdict.ReadOptions()
        read_options.set_iterate_upper_bound(epoch_key_prefix_end(shard_uid))
        iterator = h.shard_meta.iter(read_options)
        iterator.seek(epoch_key_prefix(shard_uid))
        history: list[tuple[int, Offset]] = []
        while iterator.valid():
            key_uid, epoch = parse_epoch_key(iterator.key())
            assert key_uid == shard_uid, (key_uid, shard_uid)
            start = decode_u64(iterator.value())
            if start is None:
                raise LogCorruptionError(f"shard {shard_uid} epoch {epoch} entry is not a u64")
            history.append((epoch, Offset(start)))
            iterator.next()
        failure = _iterator_failure(iterator)
        del iterator, read_options  # a live iterator keeps the DB open
        if failure is not None:
            raise LogCorruptionError(
                f"shard {shard_uid}: its epoch history cannot be read: {failure}",
                shard_uid=shard_uid,
            ) from failure
        check_history(history)
        self._histories[shard_uid] = history
        return history

    @staticmethod
    def _u64(h: _Handles, key: bytes) -> int:
        value = h.shard_meta.get(key)
        if value is None:
            return 0
        number = decode_u64(value)
        if number is None:
            raise LogCorruptionError(f"shardmeta value at {key!r} is not a u64: {value!r}")
        return number

    @staticmethod
    def _meta(h: _Handles, shard_uid: ShardUid) -> ShardMeta:
        value = h.shard_meta.get(meta_key(shard_uid))
        if value is None:
            return EMPTY_SHARD_META
        meta = decode_meta(value)
        if meta is None:
            raise LogCorruptionError(f"shard {shard_uid} meta is not a meta value: {value!r}")
        return meta

    def _first_at_or_after(
        self, h: _Handles, shard_uid: ShardUid, arrival_ms: int
    ) -> Offset | None:
        """The offset of the first index entry with arrival >= arrival_ms (see keys.py)."""
        lower = time_key(shard_uid, arrival_ms, Offset(0))
        # The options must outlive the iterator: RocksDB keeps a pointer to the bound.
        read_options = self._shard_read_options(shard_prefix_end(shard_uid))
        iterator = h.time_index.iter(read_options)
        iterator.seek(lower)
        found: Offset | None = None
        if iterator.valid():
            key_uid, key_arrival_ms, found = parse_time_key(iterator.key())
            assert key_uid == shard_uid, (key_uid, shard_uid)
            assert key_arrival_ms >= arrival_ms
        failure = None if found is not None else _iterator_failure(iterator)
        del iterator, read_options  # a live iterator keeps the DB open
        if failure is not None:
            raise LogCorruptionError(
                f"shard {shard_uid}: its time index cannot be read: {failure}",
                shard_uid=shard_uid,
            ) from failure
        return found

    def _batch_at(
        self, h: _Handles, shard_uid: ShardUid, offset: Offset
    ) -> tuple[Offset, bytes] | None:
        """(first offset, value) of the retained batch holding `offset`, or None."""
        read_options = self._shard_read_options(shard_prefix_end(shard_uid))
        iterator = h.records.iter(read_options)
        found: tuple[Offset, bytes] | None = None
        if self._seek_for_prev_in_shard(iterator, shard_uid, record_key(shard_uid, offset)):
            _, first = parse_record_key(iterator.key())
            found = (first, iterator.value())
        del iterator, read_options  # a live iterator keeps the DB open
        return found

    def _arrival_before(self, h: _Handles, shard_uid: ShardUid, offset: Offset) -> int:
        """The arrival of the retained batch before `offset`, or 0 if there is none."""
        if offset == 0:
            return 0
        found = self._batch_at(h, shard_uid, Offset(offset - 1))
        if found is None:
            return 0
        return BatchHeader.parse(found[1], verify_crc=False).arrival_ms

    @classmethod
    def _seek_batch(cls, iterator: rocksdict.RdictIter, shard_uid: ShardUid, target: bytes) -> None:
        """Positions `iterator` on the batch holding `target`'s offset, else the first after.

        The batch holding offset N is the last key <= shard|N (keys.py). If there is none in
        this shard (N is below log_start), the first batch at or above N is where reading
        starts.
        """
        # A batch starting exactly there first: seek_for_prev may step back into the block
        # before (a damaged one, read for nothing) when `target` opens a block.
        iterator.seek(target)
        if iterator.valid() and iterator.key() == target:
            return
        if not cls._seek_for_prev_in_shard(iterator, shard_uid, target):
            iterator.seek(target)

    @staticmethod
    def _seek_for_prev_in_shard(
        iterator: rocksdict.RdictIter, shard_uid: ShardUid, target: bytes
    ) -> bool:
        """seek_for_prev(target), and whether it landed on a key of this shard.

        With prefix_same_as_start RocksDB should leave the iterator invalid rather than step
        into the previous shard, but we check the prefix ourselves instead of relying on it.
        """
        iterator.seek_for_prev(target)
        if not iterator.valid():
            _check_iterator(iterator, "seek")
            return False
        key: bytes = iterator.key()
        return key[:SHARD_PREFIX_BYTES] == shard_prefix(shard_uid)

    @staticmethod
    def _shard_read_options(upper: bytes) -> rocksdict.ReadOptions:
        # No lower bound: in rocksdict 0.3.29 set_iterate_lower_bound sets the *upper* bound
        # (verified). We iterate forward from an explicit seek or seek_for_prev, and check the
        # shard prefix of where seek_for_prev lands, so none is needed.
        options = rocksdict.ReadOptions()
        options.set_iterate_upper_bound(upper)  # never walk into the next shard
        options.set_prefix_same_as_start(True)  # with the 8-byte prefix extractor
        options.set_verify_checksums(True)  # RocksDB's block checksums, besides our CRC
        return options


def sst_numbers(view: rocksdict.Rdict) -> set[int]:
    """The numbers of a column family's live SST files, from its `rocksdb.sstables` property
    (a line per file: ` 12:4970[...]`, number and size); live_files() does not say which
    column family a file is in."""
    listing = view.property_value("rocksdb.sstables") or ""
    return {int(number) for number in re.findall(r"^\s*(\d+):", listing, re.MULTILINE)}


def _sst_number(name: str) -> int:
    return int(Path(name).stem)


def _lost_ssts(log_dir: Path) -> set[str]:
    """The SST files RocksDB's repairs moved to `lost/` (any repair, any earlier one too)."""
    return {path.name for path in (log_dir / "lost").glob("**/*.sst")}


_T = TypeVar("_T")


def _repair_db(log_dir: Path, attempts: int, pause_s: float) -> None:
    """RepairDB on a closed log, `attempts` times `pause_s` apart while old handles still
    hold its lock; raises rocksdict's last error."""
    _while_locked(
        lambda: rocksdict.Rdict.repair(str(log_dir), db_options()),
        attempts,
        pause_s,
        retried=Exception,  # rocksdict raises bare Exception: the lock, mostly
    )


def _while_locked(
    call: Callable[[], _T],
    attempts: int,
    pause_s: float,
    *,
    retried: type[Exception],
) -> _T:
    """`call()`, tried `attempts` times `pause_s` apart while it raises `retried` (old handles
    still holding RocksDB's lock); the last error when none succeeds."""
    assert attempts >= 1
    for _ in range(attempts - 1):
        try:
            return call()
        except retried:
            gc.collect()  # old handles caught in reference cycles
            time.sleep(pause_s)  # a worker thread's wait for the lock, bounded
    return call()


def _rename_durably(source: Path, target: Path) -> None:
    """Renames a directory and syncs its parent, so a crash keeps the new name."""
    source.rename(target)
    parent = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(parent)
    finally:
        os.close(parent)


def _offset_bound(shard_uid: ShardUid, end_offset: Offset) -> bytes:
    """The exclusive upper key for offsets < end_offset (the shard's end if past u64)."""
    if end_offset > 2**64 - 1:
        return shard_prefix_end(shard_uid)
    return record_key(shard_uid, end_offset)
