"""What the shard log reports to the node's metrics (the probe protocol this layer owns;
`metrics.storage.StorageProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StorageProbe(Protocol):
    """Events of the group commit."""

    def group_committed(self, records: int, bytes_: int, fsync_seconds: float) -> None:
        """One WriteBatch plus one WAL fsync made `records` durable."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageView:
    """RocksDB properties of the node's store (`rocksdb.total-sst-files-size` etc.)."""

    sst_files_bytes: int = 0
    live_data_bytes: int = 0
    pending_compaction_bytes: int = 0
    memtable_bytes: int = 0
    running_compactions: int = 0
    write_stopped: bool = False
    background_errors: int = 0  # failed flushes and compactions since the store opened
