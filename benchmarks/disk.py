"""`scripts/bench --only disk`: what issue 20's disk-fault handling costs.

1. The scrubber: CPU seconds per GiB of `RocksLogStore.verify` (RocksDB block checksums, every
   batch's CRC32C and layout) over a log of 1 KiB records in 500-record batches, as a ratio to
   a raw RocksDB iteration of the same values (the floor: reading the bytes at all), next to
   `read_batches` (a catch-up read, which decodes records). With `scrub_bytes_per_second` at
   its default, a node spends about (CPU s/GiB x 4 MiB/s) of a core on scrubbing.
2. A wiped follower's rejoin on a 3-node cluster: the time from its restart with an empty data
   directory until every replica it holds caught up (records and MB per second), and the
   longest pause between two acknowledged writes of a producer that writes throughout, against
   the longest pause of the same producer over an equal time with no fault (the baseline).

`--mib N` sizes the scrub log (default 256), `--records N` the cluster's log before the wipe
(default 100,000), `--json PATH` keeps the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rocksdict

from broker.clock import SystemClock
from broker.log.records import AppendBatch, NewRecord
from broker.log.rocks_store import RocksLogStore
from broker.types import Offset, ShardUid
from tests.chaos.workload import create_stream
from tests.cluster.helpers import Producer, replica_status, wait_formed
from tests.support import ClusterProcesses, wait_until

GiB = 1 << 30
SHARD = ShardUid(1)


_CLOCK = SystemClock()


def _now_s() -> float:
    """The monotonic clock the producers stamp their acknowledgements with."""
    return _CLOCK.monotonic_ms() / 1000


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fill(store: RocksLogStore, mib: int) -> tuple[Offset, int]:
    record_bytes, per_batch = 1024, 500
    batches = mib * (1 << 20) // (record_bytes * per_batch)
    offset = 0
    payload = os.urandom(record_bytes - 8)
    for i in range(batches):
        records = tuple(NewRecord(f"k{j}", payload) for j in range(per_batch))
        store.append(
            [
                AppendBatch(
                    shard_uid=SHARD, first_offset=Offset(offset), arrival_ms=i, records=records
                )
            ]
        )
        offset += per_batch
    store.compact()
    return Offset(offset), batches * per_batch * record_bytes


def scrub_figures(mib: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-disk-"))
    try:
        store = RocksLogStore(directory / "log")
        end, stored = _fill(store, mib)
        gib = stored / GiB

        def timed(run: Any) -> float:
            before = _cpu_s()
            run()
            return (_cpu_s() - before) / gib

        def raw() -> None:
            view = store._open_handles().records  # the floor: values read, nothing checked
            iterator = view.iter(rocksdict.ReadOptions())
            iterator.seek_to_first()
            while iterator.valid():
                iterator.value()
                iterator.next()

        def verify() -> None:
            start = Offset(0)
            while start < end:
                start, _ = store.verify(
                    SHARD, start_offset=start, end_offset=end, bytes_max=1 << 20
                )

        def catch_up() -> None:
            start = Offset(0)
            while start < end:
                batches = store.read_batches(
                    SHARD, start_offset=start, end_offset=end, bytes_max=4 << 20
                )
                start = batches[-1].end_offset

        raw_s = min(timed(raw) for _ in range(2))
        verify_s = min(timed(verify) for _ in range(2))
        catch_up_s = timed(catch_up)
        store.close()
        default_rate = 4 << 20
        return {
            "log_mib": round(stored / (1 << 20)),
            "raw_iteration_cpu_s_per_gib": round(raw_s, 2),
            "scrub_verify_cpu_s_per_gib": round(verify_s, 2),
            "scrub_ratio_to_raw": round(verify_s / raw_s, 2),
            "read_batches_cpu_s_per_gib": round(catch_up_s, 2),
            "scrub_core_share_at_4_mib_s": round(verify_s * default_rate / GiB, 4),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _longest_gap(times: Sequence[float], start: float, end: float) -> float:
    inside = [start, *(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


def rejoin_figures(records: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-rejoin-"))
    cluster = ClusterProcesses(directory)
    cluster.start()
    try:
        wait_formed(cluster)
        create_stream(cluster.endpoints[0], "rejoin", 2)
        bulk = Producer(cluster.endpoints, "rejoin", name="bulk", batch_size=500).start()
        bulk.wait_acknowledged(records, deadline_s=600)
        bulk.stop()
        held = sum(r.log_end for r in replica_status(cluster.endpoints[2]).replicas)
        steady = Producer(cluster.endpoints[:2], "rejoin", name="steady", batch_size=10).start()
        steady.wait_acknowledged(200)
        baseline_start = _now_s()
        time.sleep(10)  # a fault-free window, measured the same way as the rejoin
        baseline_end = _now_s()
        victim = cluster.nodes[2]
        victim.kill()
        shutil.rmtree(victim.data_dir)
        restarted = _now_s()
        victim.start()

        def caught_up() -> bool:
            try:
                mine = replica_status(victim.endpoint).replicas
                others = replica_status(cluster.endpoints[0]).replicas
            except Exception:  # starting: not answering yet
                return False
            ends = {r.shard_uid: r.high_watermark for r in others}
            return bool(mine) and all(
                not r.recovering and r.log_end >= ends.get(r.shard_uid, 0) for r in mine
            )

        wait_until(caught_up, deadline_s=600, what="the wiped follower caught up")
        rejoined = _now_s()
        steady.stop()
        seconds = rejoined - restarted
        return {
            "records_copied": held,
            "rejoin_s": round(seconds, 2),
            "rejoin_records_per_s": round(held / seconds),
            "rejoin_mib_per_s": round(held * 1.1 / 1024 / seconds, 1),  # ~1.1 KiB per record
            "longest_ack_gap_during_rejoin_s": round(
                _longest_gap(steady.ack_times, restarted, rejoined), 3
            ),
            "longest_ack_gap_baseline_s": round(
                _longest_gap(steady.ack_times, baseline_start, baseline_end), 3
            ),
        }
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only disk", description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="the scrubbed log's size")
    parser.add_argument("--records", type=int, default=100_000, help="log before the wipe")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = {"scrub": scrub_figures(args.mib)}
    print(json.dumps(figures, indent=2), flush=True)
    figures["rejoin"] = rejoin_figures(args.records)
    print(json.dumps(figures["rejoin"], indent=2), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
