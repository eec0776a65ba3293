"""Retention: trims every shard's log to its stream's retention period.

The caller (the node, from a background thread, since trims block on RocksDB) passes each
shard's retention in hours from the metadata image, and the wall clock. Records that arrived
before `now_ms - retention` go; `log_end` stays (see `store.py`), so offsets are never reused.

Later, with replication, the shard leader picks the trim offset and replicates it so every
replica agrees on TRIM_HORIZON (REFERENCE §5.3); this function is then what each replica runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker import limits
from broker.log.store import LogStore
from broker.types import Offset, ShardUid

_MS_PER_HOUR = 3_600_000


def retention_cutoff_ms(*, retention_hours: int, now_ms: int) -> int:
    """The arrival time before which records are expired (never negative)."""
    assert limits.retention_hours_min <= retention_hours <= limits.retention_hours_max
    assert now_ms >= 0
    return max(0, now_ms - retention_hours * _MS_PER_HOUR)


def trim_expired(
    store: LogStore, shards: Mapping[ShardUid, int], *, now_ms: int
) -> dict[ShardUid, Offset]:
    """Trims each shard (uid -> retention hours); returns each shard's new log start."""
    return {
        shard_uid: store.trim(
            shard_uid,
            arrival_ms_before=retention_cutoff_ms(retention_hours=hours, now_ms=now_ms),
        )
        for shard_uid, hours in shards.items()
    }
