"""`DiskGuard`: whether this node may take new records, from its data directory's free space.

Below `minimum_bytes` free the node refuses new records (producer appends where it leads, and
record batches from leaders where it follows) with a retryable error, and keeps serving reads,
metadata and leadership moves; it takes records again once the free space is back above the
minimum plus `resume_margin_bytes`, so a disk hovering at the line does not flap. The space
kept free is what RocksDB needs for its own flushes and compactions (it stops writing, and a
WAL write that fails leaves it failing until reopened), plus the metadata journal and the
small replication state writes (promises, high watermarks, epoch markers), which go on.
Redpanda's `storage_min_free_bytes` works the same way.

Pure: fed measurements (`observe`), it answers `full`. The node samples the file system every
`Knobs.disk_check_interval_ms` (a statvfs) and logs the transitions. Loop-bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.limits import MiB


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSpace:
    free_bytes: int  # available to this (unprivileged) process
    total_bytes: int

    def __post_init__(self) -> None:
        assert 0 <= self.free_bytes <= max(self.total_bytes, self.free_bytes)


def resume_margin(minimum_bytes: int) -> int:
    """The hysteresis above the minimum: an eighth of it, at most 64 MiB."""
    return min(minimum_bytes // 8, 64 * MiB)


class DiskGuard:
    """See the module docstring. `minimum_bytes` 0 turns the guard off."""

    def __init__(self, *, minimum_bytes: int) -> None:
        assert minimum_bytes >= 0
        self.minimum_bytes = minimum_bytes
        self.resume_margin_bytes = resume_margin(minimum_bytes)
        self.full = False
        self.last: DiskSpace | None = None

    def observe(self, space: DiskSpace) -> bool:
        """Takes a measurement; returns whether `full` changed."""
        self.last = space
        if self.minimum_bytes == 0:
            return False
        if self.full:
            full = space.free_bytes < self.minimum_bytes + self.resume_margin_bytes
        else:
            full = space.free_bytes < self.minimum_bytes
        changed = full != self.full
        self.full = full
        return changed

    def refusal(self, node_id: str, what: str) -> str:
        """The message a refused producer gets (it names the node, the space and the way out)."""
        free = self.last.free_bytes if self.last is not None else 0
        return (
            f"Node {node_id} is low on disk space ({free // MiB} MiB free, below its "
            f"{self.minimum_bytes // MiB} MiB minimum) and takes no new records for {what} "
            "until space is freed; reads go on. Retry later."
        )
