"""Disk faults for the chaos nemesis (issue 20): corrupt a byte range of a node's shard log,
wipe a node's data directory, fill a node's file system.

- Corruption overwrites 64 bytes inside one of the node's live SST files of the `records`
  column family (told apart by their 16-byte keys, listed through a read-only open of the
  node's RocksDB from this process), away from the file's footer: a damaged data block, as
  bit rot makes one. The node finds it on a read or a scrub and repairs it from a healthy
  replica.
- Wiping deletes everything in the node's data directory while it is down (a replaced disk).
- Filling needs each node's data directory on its own small file system: `DiskMounts` mounts a
  tmpfs per node (root only; `unusable_reason` says why not), and a filler file takes the free
  space down below the node's free-space minimum.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import rocksdict

from broker.log.records import LogCorruptionError
from broker.log.rocks_store import RocksLogStore, column_family_options, db_options
from broker.types import Offset, ShardUid
from tests.support import ClusterProcesses

RECORD_KEY_BYTES = 16
FILLER_NAME = "nemesis-filler"
MiB = 1 << 20


def record_ssts(data_dir: Path) -> list[tuple[Path, int]]:
    """(path, size) of the live SST files holding shard records, from a read-only open."""
    log_dir = data_dir / "log"
    if not (log_dir / "CURRENT").exists():
        return []
    db = rocksdict.Rdict(
        str(log_dir),
        options=db_options(),
        column_families=column_family_options(),
        access_type=rocksdict.AccessType.read_only(False),
    )
    try:
        files = db.live_files()
    finally:
        db.close()
    found = []
    for file in files:
        if len(file["start_key"]) == RECORD_KEY_BYTES and len(file["end_key"]) == RECORD_KEY_BYTES:
            path = log_dir / str(file["name"]).lstrip("/")
            if path.exists():
                found.append((path, int(file["size"])))
    return found


def corrupt_records(data_dir: Path, rng: random.Random) -> str | None:
    """Overwrites 64 random bytes inside one records SST (not its last 10 %, where the index
    and footer are); returns what was done, or None when the node has no such file yet."""
    ssts = [(path, size) for path, size in record_ssts(data_dir) if size >= 4096]
    if not ssts:
        return None
    path, size = rng.choice(sorted(ssts))
    offset = rng.randrange(size // 10, size * 8 // 10)
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(rng.randbytes(64))
    return f"{path.name} bytes {offset}..{offset + 63} of {size}"


def corrupt_block_of_two_shards(log_dir: Path, ends: dict[ShardUid, Offset]) -> str:
    """Overwrites 64 bytes of the largest SST under `log_dir` (a stopped store, its records'
    file) inside a data block holding the records of two shards of `ends` (shard -> log
    end): the end of one and the start of the next, as in a small first SST. Tries tenths of
    the file on copies until a reopened copy fails to read back exactly two shards; raises
    AssertionError if none does. Returns what was done."""
    sst = max(log_dir.glob("*.sst"), key=lambda f: f.stat().st_size)
    with tempfile.TemporaryDirectory(prefix="shoal-corrupt-") as tmp:
        for tenth in range(2, 9):
            at = sst.stat().st_size * tenth // 10
            copy = Path(tmp) / f"try-{tenth}"
            shutil.copytree(log_dir, copy)
            _overwrite(copy / sst.name, at)
            if len(_unreadable_shards(copy, ends)) == 2:
                _overwrite(sst, at)
                return f"{sst.name} bytes {at}..{at + 63} of {sst.stat().st_size}"
    raise AssertionError(f"no block of {sst} holds the records of two shards")


def _overwrite(sst: Path, at: int) -> None:
    with sst.open("r+b") as file:
        file.seek(at)
        file.write(b"\xaa" * 64)


def _unreadable_shards(log_dir: Path, ends: dict[ShardUid, Offset]) -> set[ShardUid]:
    store = RocksLogStore(log_dir)
    unreadable = set()
    try:
        for shard, end in ends.items():
            try:
                store.verify(shard, start_offset=Offset(0), end_offset=end, bytes_max=1 << 30)
            except LogCorruptionError:
                unreadable.add(shard)
    finally:
        store.close()
        gc.collect()  # the errors' frames hold iterators, which keep RocksDB's lock
    return unreadable


def wipe(data_dir: Path) -> None:
    """Deletes everything under the data directory (which may be a mount point)."""
    if not data_dir.exists():
        return
    for child in data_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def fill(data_dir: Path, *, leave_free_bytes: int) -> int:
    """Writes a filler file leaving about `leave_free_bytes` free; returns its size."""
    free = shutil.disk_usage(data_dir).free
    size = max(0, free - leave_free_bytes)
    with (data_dir / FILLER_NAME).open("wb") as file:
        chunk = bytes(MiB)
        for _ in range(size // MiB):
            file.write(chunk)
    return size


def unfill(data_dir: Path) -> None:
    (data_dir / FILLER_NAME).unlink(missing_ok=True)


def unusable_reason() -> str | None:
    """Why per-node file systems cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "filling a disk needs a tmpfs per node, which needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not found"
    return None


class DiskMounts:
    """A tmpfs of `size_bytes` at every node's data directory, for the cluster's lifetime.
    Use as a context manager around the cluster's start and stop (unmounted last)."""

    def __init__(self, cluster: ClusterProcesses, *, size_bytes: int) -> None:
        self.cluster = cluster
        self.size_bytes = size_bytes
        self._mounted: list[Path] = []

    def __enter__(self) -> DiskMounts:
        for node in self.cluster.nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_bytes}", "tmpfs", node.data_dir],
                check=True,
                capture_output=True,
            )
            self._mounted.append(node.data_dir)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for path in self._mounted:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self._mounted.clear()
