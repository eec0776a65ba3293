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
into `LogStoreError` here, at the boundary (STYLE B.8). Our own asserts and
`LogCorruptionError` pass through untouched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import rocksdict

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
from broker.log.records import (
    AppendBatch,
    BatchHeader,
    LogCorruptionError,
    StoredRecord,
    decode_new_records,
    decode_records,
    encode_batch,
    truncate_batch,
)
from broker.log.store import (
    LogStoreError,
    advance_meta,
    check_history,
    check_read_arguments,
    check_truncate_suffix,
    cut_history,
    extend_history,
)
from broker.metrics import StorageView
from broker.types import Offset, ShardUid

RECORDS_CF = "records"
TIME_INDEX_CF = "tsidx"
SHARD_META_CF = "shardmeta"
COLUMN_FAMILIES = (RECORDS_CF, TIME_INDEX_CF, SHARD_META_CF)


@contextlib.contextmanager
def _engine_errors(operation: str) -> Iterator[None]:
    """Translates rocksdict's exceptions into `LogStoreError`, keeping our own."""
    try:
        yield
    except (AssertionError, LogCorruptionError, LogStoreError):
        raise
    except Exception as exc:  # rocksdict raises bare Exception for every RocksDB status
        raise LogStoreError(f"RocksDB {operation} failed: {exc}") from exc


def db_options() -> rocksdict.Options:
    """Options of the database and its default column family (which we never write)."""
    options = rocksdict.Options(raw_mode=True)  # bytes in, bytes out; no pickling
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    # A torn WAL tail after a crash is cut at the last intact batch. Everything acknowledged
    # was fsynced before, so this loses nothing we promised (RocksDB's default, made explicit).
    options.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    options.set_paranoid_checks(True)  # refuse to open on detected corruption; do not guess
    return options


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

    def __init__(self, path: Path) -> None:
        self._path = path
        self._write_lock = threading.Lock()
        # Each shard's epoch history, loaded on first use under _write_lock and kept in step
        # with every mutation, so `append` decides on a new entry without a read.
        self._histories: dict[ShardUid, list[tuple[int, Offset]]] = {}
        with _engine_errors("open"):
            db = rocksdict.Rdict(
                str(path),
                options=db_options(),
                column_families=column_family_options(),
                access_type=rocksdict.AccessType.read_write(),
            )
            self._handles: _Handles | None = _Handles(
                db=db,
                records=db.get_column_family(RECORDS_CF),
                time_index=db.get_column_family(TIME_INDEX_CF),
                shard_meta=db.get_column_family(SHARD_META_CF),
                records_cf=db.get_column_family_handle(RECORDS_CF),
                time_index_cf=db.get_column_family_handle(TIME_INDEX_CF),
                shard_meta_cf=db.get_column_family_handle(SHARD_META_CF),
            )
        # sync=False on write, then one flush_wal(sync=True): see the module docstring.
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False
        # The WAL is our durability; never skip it. rocksdict 0.3.29's stub declares
        # disable_wal as a method, but at run time it is a bool property.
        self._write_options.disable_wal = False  # type: ignore[method-assign,assignment]

    # --- Mutations (serialized by _write_lock) --------------------------------------------

    def append(self, batches: Sequence[AppendBatch]) -> None:
        if not batches:
            return
        h = self._open_handles()
        values = [
            encode_batch(
                arrival_ms=batch.arrival_ms,
                epoch=batch.epoch,
                control=batch.control,
                records=batch.records,
            )
            for batch in batches
        ]
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
            self._write_durably(h, batch_write)
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
                kept = truncate_batch(value, header, keep=from_offset - first)
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

    def compact(self) -> None:
        h = self._open_handles()
        # No write lock: RocksDB compacts concurrently with writes, and the range tombstones
        # that trims leave behind are only dropped here.
        with _engine_errors("compact"):
            for view in (h.records, h.time_index, h.shard_meta):
                view.compact_range(None, None)

    def close(self) -> None:
        with self._write_lock:
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
        check_read_arguments(
            start_offset=start_offset,
            end_offset=end_offset,
            records_max=records_max,
            bytes_max=bytes_max,
        )
        if end_offset <= start_offset:
            return []
        h = self._open_handles()
        taken: list[StoredRecord] = []
        with _engine_errors("read"):
            target = record_key(shard_uid, start_offset)
            upper = _offset_bound(shard_uid, end_offset)
            # The options must outlive the iterator: RocksDB keeps a pointer to the bound.
            read_options = self._shard_read_options(upper)
            iterator = h.records.iter(read_options)
            self._seek_batch(iterator, shard_uid, target)
            taken_bytes = 0
            expected: Offset | None = (
                None  # the first offset the next batch must have (offsets are dense)
            )
            while iterator.valid():
                key = iterator.key()
                assert key < upper, (key, upper)
                key_uid, first = parse_record_key(key)
                assert key_uid == shard_uid, (key_uid, shard_uid)
                assert expected is None or first == expected, (shard_uid, first, expected)
                value = iterator.value()
                header = BatchHeader.parse(value)
                expected = Offset(first + header.count)
                if expected > start_offset and not header.control:
                    taken_bytes, capped = decode_records(
                        value,
                        header,
                        first_offset=first,
                        start_offset=max(first, start_offset),
                        end_offset=end_offset,
                        records_max=records_max,
                        bytes_max=bytes_max,
                        taken=taken,
                        taken_bytes=taken_bytes,
                    )
                    if capped:
                        break
                iterator.next()
            del iterator, read_options  # a live iterator keeps the DB open
        return taken

    def first_offset_at_or_after_time(self, shard_uid: ShardUid, arrival_ms: int) -> Offset | None:
        assert arrival_ms >= 0
        h = self._open_handles()
        with _engine_errors("first_offset_at_or_after_time"):
            offset = self._first_at_or_after(h, shard_uid, arrival_ms)
            if offset is None:
                return None
            # Pair the index with the log (STYLE B.9): the indexed batch exists and qualifies.
            value = h.records.get(record_key(shard_uid, offset))
            assert value is not None, (shard_uid, offset)
            assert BatchHeader.parse(value, verify_crc=False).arrival_ms >= arrival_ms
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
            upper = _offset_bound(shard_uid, end_offset)
            read_options = self._shard_read_options(upper)
            iterator = h.records.iter(read_options)
            self._seek_batch(iterator, shard_uid, record_key(shard_uid, start_offset))
            taken_bytes = 0
            while iterator.valid():
                _, first = parse_record_key(iterator.key())
                value = iterator.value()
                header = BatchHeader.parse(value)
                if batches:
                    assert first == batches[-1].end_offset, (shard_uid, first, batches[-1])
                begin = max(start_offset, first) - first
                stop = min(end_offset - first, header.count)
                if begin < stop:
                    records = decode_new_records(value, header, begin=begin, stop=stop)
                    size = sum(r.size_bytes for r in records)
                    if batches and taken_bytes + size > bytes_max:
                        break
                    batches.append(
                        AppendBatch(
                            shard_uid=shard_uid,
                            first_offset=Offset(first + begin),
                            arrival_ms=header.arrival_ms,
                            records=records,
                            control=header.control,
                            epoch=header.epoch,
                        )
                    )
                    taken_bytes += size
                iterator.next()
            del iterator, read_options  # a live iterator keeps the DB open
        return batches

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
        )

    # --- Helpers --------------------------------------------------------------------------

    def _open_handles(self) -> _Handles:
        handles = self._handles
        assert handles is not None, f"log store at {self._path} used after close()"
        return handles

    def _write_durably(self, h: _Handles, batch_write: rocksdict.WriteBatch) -> None:
        h.db.write(batch_write, self._write_options)
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
        del iterator, read_options  # a live iterator keeps the DB open
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
        del iterator, read_options  # a live iterator keeps the DB open
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


def _offset_bound(shard_uid: ShardUid, end_offset: Offset) -> bytes:
    """The exclusive upper key for offsets < end_offset (the shard's end if past u64)."""
    if end_offset > 2**64 - 1:
        return shard_prefix_end(shard_uid)
    return record_key(shard_uid, end_offset)
