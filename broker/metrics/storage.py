"""Storage: group commits, fsync, bytes written, disk space and RocksDB's own properties."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from broker.log.probe import StorageView
from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare

# fsync: 100 µs on NVMe up to a second on a struggling network disk.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
# Records per group commit: 1 when idle, thousands when the writer thread batches hard.
GROUP_COMMIT_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384)

# --- Storage ----------------------------------------------------------------------------------
FSYNC_DURATION = declare(
    "kinesis_fsync_duration_seconds",
    "histogram",
    'Durable syncs by log: "shards" (RocksDB WAL, one per group commit) or "metadata" (the '
    "Raft journal).",
    ("log",),
    buckets=FSYNC_BUCKETS,
)
GROUP_COMMIT_RECORDS = declare(
    "kinesis_group_commit_records",
    "histogram",
    "Records made durable per group commit (one RocksDB WriteBatch and one fsync).",
    buckets=GROUP_COMMIT_BUCKETS,
)
LOG_WRITTEN_BYTES = declare(
    "kinesis_log_written_bytes_total",
    "counter",
    "Record bytes written to the shard log on this node (leader and follower replicas).",
)
DISK_FREE = declare(
    "kinesis_storage_disk_free_bytes",
    "gauge",
    "Bytes available to the node on the file system holding its data directory.",
)
DISK_CAPACITY = declare(
    "kinesis_storage_disk_capacity_bytes",
    "gauge",
    "Size of the file system holding the data directory.",
)
ROCKSDB_SST_BYTES = declare(
    "kinesis_rocksdb_sst_files_bytes", "gauge", "Size of all RocksDB SST files (every version)."
)
ROCKSDB_LIVE_BYTES = declare(
    "kinesis_rocksdb_live_data_bytes", "gauge", "RocksDB's estimate of its live data size."
)
ROCKSDB_PENDING_COMPACTION = declare(
    "kinesis_rocksdb_pending_compaction_bytes",
    "gauge",
    "Bytes RocksDB estimates compaction must rewrite; writes stall when this grows too large.",
)
ROCKSDB_MEMTABLE_BYTES = declare(
    "kinesis_rocksdb_memtable_bytes", "gauge", "Size of RocksDB's memtables."
)
ROCKSDB_RUNNING_COMPACTIONS = declare(
    "kinesis_rocksdb_running_compactions", "gauge", "Compactions running now."
)
ROCKSDB_WRITE_STOPPED = declare(
    "kinesis_rocksdb_write_stopped", "gauge", "1 while RocksDB stops writes (compaction debt)."
)
ROCKSDB_BACKGROUND_ERRORS = declare(
    "kinesis_rocksdb_background_errors",
    "gauge",
    "Flushes and compactions RocksDB failed since the node started (a compaction over a "
    "corrupt block keeps failing: rebuild the node's log, docs/operations.md).",
)
DISK_FREE_MINIMUM = declare(
    "kinesis_storage_disk_free_minimum_bytes",
    "gauge",
    "The free space below which this node refuses new records (disk_free_bytes_min).",
)
RECORDS_REFUSED = declare(
    "kinesis_storage_records_refused",
    "gauge",
    "1 while this node refuses new records because its data directory is short of space.",
)


class DiskGuardView(Protocol):
    """What the metrics read of the node's disk guard (`log.disk_guard.DiskGuard`)."""

    @property
    def minimum_bytes(self) -> int: ...

    @property
    def full(self) -> bool: ...


class StorageProbe:
    """The shard log's store: `watch(store.metrics_view)` and `watch_disk(data_dir)` once,
    `group_committed` per group commit (from the writer thread)."""

    def __init__(self, registry: CollectorRegistry, fsync: Histogram) -> None:
        self._view: Watched[StorageView] = Watched("storage")
        self._disk_path: Path | None = None
        self._guard: DiskGuardView | None = None
        self._fsync = fsync.labels("shards")
        self._group_records = Histogram(
            GROUP_COMMIT_RECORDS.name,
            GROUP_COMMIT_RECORDS.help,
            registry=registry,
            buckets=GROUP_COMMIT_RECORDS.buckets,
        )
        self._written = Counter(LOG_WRITTEN_BYTES.name, LOG_WRITTEN_BYTES.help, registry=registry)
        registry.register(
            CallbackCollector(
                (
                    DISK_FREE,
                    DISK_CAPACITY,
                    ROCKSDB_SST_BYTES,
                    ROCKSDB_LIVE_BYTES,
                    ROCKSDB_PENDING_COMPACTION,
                    ROCKSDB_MEMTABLE_BYTES,
                    ROCKSDB_RUNNING_COMPACTIONS,
                    ROCKSDB_WRITE_STOPPED,
                    ROCKSDB_BACKGROUND_ERRORS,
                    DISK_FREE_MINIMUM,
                    RECORDS_REFUSED,
                ),
                self._series,
            )
        )

    def watch(self, view: Callable[[], StorageView]) -> None:
        self._view.set(view)

    def watch_disk(self, data_dir: Path) -> None:
        """Report free and total space of the file system holding `data_dir`."""
        self._disk_path = data_dir

    def watch_disk_guard(self, guard: DiskGuardView) -> None:
        """Report the free-space minimum and whether records are refused (log/disk_guard)."""
        self._guard = guard

    def group_committed(self, records: int, bytes_: int, fsync_seconds: float) -> None:
        """One WriteBatch plus one WAL fsync made `records` durable."""
        assert records >= 0
        assert bytes_ >= 0
        assert fsync_seconds >= 0
        self._group_records.observe(records)
        self._written.inc(bytes_)
        self._fsync.observe(fsync_seconds)

    def _series(self) -> Series:
        if self._disk_path is not None:
            try:
                usage = shutil.disk_usage(self._disk_path)
            except OSError:
                pass  # data dir not created yet, or being removed
            else:
                yield DISK_FREE, (), float(usage.free)
                yield DISK_CAPACITY, (), float(usage.total)
        guard = self._guard
        if guard is not None and guard.minimum_bytes > 0:
            yield DISK_FREE_MINIMUM, (), float(guard.minimum_bytes)
            yield RECORDS_REFUSED, (), float(guard.full)
        view = self._view.read()
        if view is None:
            return
        yield ROCKSDB_SST_BYTES, (), float(view.sst_files_bytes)
        yield ROCKSDB_LIVE_BYTES, (), float(view.live_data_bytes)
        yield ROCKSDB_PENDING_COMPACTION, (), float(view.pending_compaction_bytes)
        yield ROCKSDB_MEMTABLE_BYTES, (), float(view.memtable_bytes)
        yield ROCKSDB_RUNNING_COMPACTIONS, (), float(view.running_compactions)
        yield ROCKSDB_WRITE_STOPPED, (), float(view.write_stopped)
        yield ROCKSDB_BACKGROUND_ERRORS, (), float(view.background_errors)
