"""A full disk degrades a node, it does not kill it (issue 20): a real `shoal serve` process with
its data directory on a small tmpfs the test mounts.

- Below `disk_free_bytes_min` the node refuses new records with a retryable InternalFailure
  that says why, keeps serving reads and metadata, reports it (`/metrics`), and takes records
  again by itself once space is freed.
- With the guard off, RocksDB meets the full disk itself (its WAL write fails): the node stays
  up, and once space is back it reopens the store and takes records again, losing nothing it
  acknowledged.
- DeleteStream gives the space back within the housekeeping interval plus a compaction.

Needs root and `mount -t tmpfs` (the build machines have both); skips saying so otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker import limits
from broker.client.grpc_client import ShoalClient
from tests.support import NodeProcess, read_shard, serving, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]

MiB = 1 << 20
FS_BYTES = 96 * MiB
MINIMUM_BYTES = 16 * MiB
STREAM = "filling"


def _mount_problem(path: Path) -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not found"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
    return None


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    problem = _mount_problem(mount_point)
    if problem is not None:
        pytest.skip(f"no small file system for the full-disk tests: {problem}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _wal_files(data_dir: Path) -> list[Path]:
    """The shard log's RocksDB WAL files, live or kept for reuse."""
    return [path for path in data_dir.rglob("*.log") if path.parent.name == "log"]


def _wal_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in _wal_files(data_dir))


def _fill_to(path: Path, free_bytes: int) -> Path:
    """A filler file that leaves about `free_bytes` free on the file system."""
    filler = path / "filler"
    size = max(0, _free(path) - free_bytes)
    with filler.open("wb") as file:
        for _ in range(size // MiB):
            file.write(bytes(MiB))
    return filler


def _put(client: ShoalClient, count: int = 50, size: int = 16 * 1024) -> dict[str, Any]:
    return client.call(
        "PutRecords",
        {
            "StreamName": STREAM,
            "Records": [{"PartitionKey": f"k{i}", "Data": os.urandom(size)} for i in range(count)],
        },
    )


def _metric(node: NodeProcess, name: str) -> float | None:
    port = _metrics_port(node)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _metrics_port(node: NodeProcess) -> int:
    for line in node.log_text().splitlines():
        if "node_started" in line and "metrics_port=" in line:
            return int(line.split("metrics_port=")[1].split()[0])
    raise AssertionError("the node did not log its metrics port")


def _node(fs: Path, **env: str) -> NodeProcess:
    node = NodeProcess(
        fs / "node",
        extra_env={
            "SHOAL_HOUSEKEEPING_INTERVAL_MS": "500",
            "SHOAL_DISK_CHECK_INTERVAL_MS": "100",
            "SHOAL_SCRUB_BYTES_PER_SECOND": "0",
            **env,
        },
    )
    node.log_path = fs.parent / "node.log"  # keep the log off the small file system
    node.start()
    wait_until(lambda: serving(node.endpoint), deadline_s=60, what="the node to serve")
    return node


def _create(client: ShoalClient, name: str = STREAM) -> None:
    client.call("CreateStream", {"StreamName": name, "ShardCount": 1})
    wait_until(
        lambda: (
            client.call("DescribeStreamSummary", {"StreamName": name})["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        deadline_s=30,
        what="stream ACTIVE",
    )


def test_below_the_minimum_records_are_refused_and_resume_by_themselves(small_fs: Path) -> None:
    node = _node(small_fs, SHOAL_DISK_FREE_BYTES_MIN=str(MINIMUM_BYTES))
    try:
        with ShoalClient(node.endpoint) as client:
            _create(client)
            assert _put(client)["FailedRecordCount"] == 0
            filler = _fill_to(small_fs, MINIMUM_BYTES - 4 * MiB)
            refused = wait_until(
                lambda: (answer := _put(client))["FailedRecordCount"] and answer,
                deadline_s=10,
                what="records refused below the free-space minimum",
            )
            failure = next(r for r in refused["Records"] if "ErrorCode" in r)
            assert failure["ErrorCode"] == "InternalFailure"  # retryable by every AWS SDK
            assert "low on disk space" in failure["ErrorMessage"]
            assert node.process is not None and node.process.poll() is None
            # Reads and metadata go on.
            assert read_shard(client, STREAM, "shardId-000000000000")
            _create(client, "metadata-still-works")
            assert _metric(node, "kinesis_storage_records_refused") == 1.0
            filler.unlink()
            wait_until(
                lambda: _put(client)["FailedRecordCount"] == 0,
                deadline_s=10,
                what="records taken again once space was freed",
            )
            assert _metric(node, "kinesis_storage_records_refused") == 0.0
        assert "disk_space_low_records_refused" in node.log_text()
    finally:
        node.terminate()


def test_a_disk_that_fills_under_rocksdb_does_not_kill_the_node(small_fs: Path) -> None:
    """The guard off (minimum 0): RocksDB's own WAL write fails. The node keeps running,
    reads still work, and once space is back it reopens the store and takes records again;
    nothing acknowledged is lost."""
    node = _node(small_fs, SHOAL_DISK_FREE_BYTES_MIN="0")
    try:
        acknowledged: list[bytes] = []
        with ShoalClient(node.endpoint, timeout_s=30) as client:
            _create(client)
            filler = _fill_to(small_fs, 4 * MiB)
            for _ in range(200):  # bounded: 200 x 800 KiB is far past 4 MiB
                answer = _put(client)
                if answer["FailedRecordCount"]:
                    break
            else:
                raise AssertionError("the disk never filled")
            assert node.process is not None and node.process.poll() is None
            read_before = read_shard(client, STREAM, "shardId-000000000000")
            acknowledged = [r["Data"] for r in read_before]
            filler.unlink()
            wait_until(
                lambda: _put(client)["FailedRecordCount"] == 0,
                deadline_s=30,
                what="records taken again once space was freed",
            )
            read_after = [r["Data"] for r in read_shard(client, STREAM, "shardId-000000000000")]
            assert read_after[: len(acknowledged)] == acknowledged
        assert node.process.poll() is None
        assert "log_store_reopened" in node.log_text()
    finally:
        node.terminate()


def test_delete_stream_gives_the_space_back(small_fs: Path) -> None:
    node = _node(small_fs, SHOAL_DISK_FREE_BYTES_MIN=str(MINIMUM_BYTES))
    try:
        with ShoalClient(node.endpoint) as client:
            _create(client)
            before = _free(small_fs)
            for _ in range(40):  # 40 x 800 KiB = 32 MiB of records
                assert _put(client)["FailedRecordCount"] == 0
            used = before - _free(small_fs)
            assert used > 24 * MiB
            client.call("DeleteStream", {"StreamName": STREAM})
            # Housekeeping (0.5 s here, 30 s by default) drops the shard and compacts its range.
            # The WAL file that held the records is spent then (the records left the
            # memtable), and RocksDB keeps it to overwrite (limits.rocksdb_wal_files_recycled):
            # the next WAL's space, not the stream's, so it is left out of the count.
            wait_until(
                lambda: (
                    before - _free(small_fs) - _wal_bytes(small_fs) < used // 4
                    and (_metric(node, "kinesis_rocksdb_memtable_bytes") or 0) < used // 4
                ),
                deadline_s=30,
                what="the deleted stream's space back",
            )
            assert len(_wal_files(small_fs)) <= limits.rocksdb_wal_files_recycled + 1
    finally:
        with contextlib.suppress(Exception):
            node.terminate()
