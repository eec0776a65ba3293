"""The shard log's WAL settings (rocks_store `db_options`): spent WAL files are recycled, with
point-in-time recovery still in force, and a recycled file loses no synced append to a kill -9."""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker import limits
from broker.log.rocks_store import RocksLogStore
from broker.types import Offset
from tests.log.conformance import A, batch, read_all

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0  # for the child's appends; they take well under a second
ACKS_BEFORE_KILL = 300

# Fills a WAL file, makes it spent (a flush of every column family), then appends into the
# file that replaces it (the recycled one, with stale records of its previous life after the
# new ones) and prints each append's end once `append` returned: from then on it is synced.
_CHILD = """
import sys
from pathlib import Path
from broker.log.rocks_store import RocksLogStore
from tests.log.conformance import A, batch

store = RocksLogStore(Path(sys.argv[1]))
offset = 0
for _ in range(2):
    for _ in range(20):  # ~2 MB per WAL file, so the recycled one has a long stale tail
        store.append([batch(A, offset, 100, arrival_ms=1, size=1000)])
        offset += 100
    store.compact()  # this file is spent: the next one reuses it
print("recycled", offset, flush=True)
while True:
    store.append([batch(A, offset, 1, arrival_ms=2, size=1000, tag="late")])
    offset += 1
    print(offset, flush=True)
"""


def _options_in_log(path: Path) -> dict[str, str]:
    """RocksDB's own record of the options it runs with, after it sanitized ours."""
    text = (path / "LOG").read_text()
    return dict(re.findall(r"Options\.(\w+): (\S+)", text))


def test_the_wal_is_recycled_and_capped_with_point_in_time_recovery(tmp_path: Path) -> None:
    path = tmp_path / "log"
    store = RocksLogStore(path)
    store.close()
    options = _options_in_log(path)
    # RocksDB turns recycling off silently for the recovery modes it cannot serve with it.
    assert options["recycle_log_file_num"] == str(limits.rocksdb_wal_files_recycled)
    assert options["max_total_wal_size"] == str(limits.rocksdb_wal_bytes_max)
    assert options["wal_recovery_mode"] == "2"  # kPointInTimeRecovery


def test_appends_synced_into_a_recycled_wal_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            lines = _read_lines(child, ACKS_BEFORE_KILL + 1)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=DEADLINE_S)
    assert lines[0].startswith("recycled "), lines[0]
    recycled_from = int(lines[0].split()[1])
    acknowledged = int(lines[-1])
    assert re.search(r"reusing log \d+ from recycle list", (path / "LOG").read_text())

    store = RocksLogStore(path)
    try:
        records = read_all(store, A)
        # Everything acknowledged is back, in order; what was written after the last
        # acknowledgement may or may not be; nothing of the file's previous life comes back.
        assert store.log_end(A) >= acknowledged
        assert [record.offset for record in records] == list(range(store.log_end(A)))
        late = [record for record in records if record.offset >= recycled_from]
        assert all(record.partition_key.startswith("pklate") for record in late)
        expected = batch(A, acknowledged - 1, 1, arrival_ms=2, size=1000, tag="late")
        assert records[acknowledged - 1].data == expected.records[0].data
        store.append([batch(A, store.log_end(A), 1, arrival_ms=3)])  # and it takes writes
        assert store.log_end(A) == Offset(len(records) + 1)
    finally:
        store.close()


def _read_lines(child: subprocess.Popen[str], count: int) -> list[str]:
    assert child.stdout is not None
    deadline = time.monotonic() + DEADLINE_S
    lines: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while len(lines) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the child acknowledged {len(lines)} appends in {DEADLINE_S} s"
            if selector.select(timeout=remaining):
                line = child.stdout.readline()
                assert line, f"the child ended (status {child.poll()}) after {lines[-3:]}"
                lines.append(line.strip())
    return lines
