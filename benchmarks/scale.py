"""`scripts/bench --only scale`: a 3-node cluster holding 1,000 open shards (issue 6 point 5).

What one run measures:

- Idle cost with no stream: each node's CPU (% of one core, from /proc/<pid>/stat utime +
  stime over `--idle-seconds`, default 30) and resident memory (VmRSS).
- Creating 200-shard streams until the cluster holds `--shards` open shards (default 1,000,
  five streams): each CreateStream timed from the call until the stream is ACTIVE and
  writable, that is until one PutRecords holding one record for every shard (ExplicitHashKey
  at each shard's start) has succeeded entirely. The goal: under 5 s per stream.
- Idle cost with the shards open, the same way, after a settling pause; the report gives the
  difference per 1,000 shards.
- Pagination at that size: ListShards of one 200-shard stream with MaxResults 100 followed by
  NextToken to the end, and DescribeStream with Limit 100 and ExclusiveStartShardId (AWS's
  DescribeStream pages of at most 100 shards), each timed, with every shard seen once.

The cluster runs the production liveness knobs (as benchmarks/cluster.py) and replication
factor 3 (every node holds every shard: 1,000 shards are 3,000 replicas, 1,000 led here and
there). Throttles are lifted (tests.support.NodeProcess's environment). Every wait is bounded;
the node processes are killed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.bench import now_s
from broker.client.grpc_client import ShoalClient
from broker.limits import hash_key_max
from tests.cluster.helpers import formed
from tests.support import ClusterProcesses, wait_until

NODES = 3
STREAM_SHARDS = 200
FORMED_DEADLINE_S = 60.0
CREATE_DEADLINE_S = 120.0  # one stream until writable; the goal is 5 s
SETTLE_S = 10.0  # after the last stream, before the idle measurement (catch-up, rebalancing)
CREATE_GOAL_S = 5.0
PRODUCTION_LIVENESS = {
    "SHOAL_HEARTBEAT_INTERVAL_MS": "250",
    "SHOAL_SESSION_TIMEOUT_MS": "2000",
    "SHOAL_CONTROLLER_PASS_INTERVAL_MS": "100",
}
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Idle:
    cpu_percent: list[float]  # per node, % of one core
    rss_mib: list[float]

    @property
    def cpu_mean(self) -> float:
        return sum(self.cpu_percent) / len(self.cpu_percent)

    @property
    def rss_mean(self) -> float:
        return sum(self.rss_mib) / len(self.rss_mib)


def measure_idle(cluster: ClusterProcesses, seconds: float) -> Idle:
    pids = [node.process.pid for node in cluster.nodes if node.process is not None]
    assert len(pids) == NODES
    before = [cpu_seconds(pid) for pid in pids]
    started = now_s()
    time.sleep(seconds)  # the measurement itself: the nodes are left alone meanwhile
    elapsed = now_s() - started
    after = [cpu_seconds(pid) for pid in pids]
    return Idle(
        cpu_percent=[round((b - a) / elapsed * 100, 1) for a, b in zip(before, after, strict=True)],
        rss_mib=[round(rss_mib(pid), 1) for pid in pids],
    )


# --- Streams ----------------------------------------------------------------------------------


def _active(client: ShoalClient, name: str) -> bool:
    summary = client.call("DescribeStreamSummary", {"StreamName": name})
    return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")


def _one_record_per_shard(client: ShoalClient, name: str) -> bool:
    """One PutRecords with a record for every shard; True when all of them were stored."""
    space = hash_key_max + 1  # shard i starts at i * space // count (uniform_ranges)
    records = [
        {"PartitionKey": "k", "Data": b"x", "ExplicitHashKey": str(i * space // STREAM_SHARDS)}
        for i in range(STREAM_SHARDS)
    ]
    answer = client.call("PutRecords", {"StreamName": name, "Records": records})
    return bool(answer["FailedRecordCount"] == 0)


def create_writable(client: ShoalClient, name: str) -> float:
    """Seconds from CreateStream until the stream is ACTIVE and every shard took a record."""
    started = now_s()
    client.call("CreateStream", {"StreamName": name, "ShardCount": STREAM_SHARDS})
    wait_until(partial(_active, client, name), deadline_s=CREATE_DEADLINE_S, what="ACTIVE")
    wait_until(
        partial(_one_record_per_shard, client, name),
        deadline_s=CREATE_DEADLINE_S,
        what="every shard writable",
    )
    return now_s() - started


@dataclass(frozen=True, slots=True, kw_only=True)
class Pagination:
    list_shards_pages: int
    list_shards_s: float
    describe_stream_pages: int
    describe_stream_s: float


def paginate(client: ShoalClient, name: str) -> Pagination:
    started = now_s()
    seen: list[str] = []
    answer = client.call("ListShards", {"StreamName": name, "MaxResults": 100})
    pages = 1
    seen += [s["ShardId"] for s in answer["Shards"]]
    while "NextToken" in answer:
        answer = client.call("ListShards", {"NextToken": answer["NextToken"], "MaxResults": 100})
        pages += 1
        seen += [s["ShardId"] for s in answer["Shards"]]
    list_s = now_s() - started
    assert len(seen) == len(set(seen)) == STREAM_SHARDS, len(seen)
    started = now_s()
    described: list[str] = []
    request: dict[str, Any] = {"StreamName": name, "Limit": 100}
    describe_pages = 0
    while True:
        description = client.call("DescribeStream", request)["StreamDescription"]
        describe_pages += 1
        described += [s["ShardId"] for s in description["Shards"]]
        if not description["HasMoreShards"]:
            break
        request["ExclusiveStartShardId"] = described[-1]
    describe_s = now_s() - started
    assert described == seen
    return Pagination(
        list_shards_pages=pages,
        list_shards_s=round(list_s, 3),
        describe_stream_pages=describe_pages,
        describe_stream_s=round(describe_s, 3),
    )


# --- The run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleReport:
    cpus: int
    open_shards: int
    idle_empty: Idle
    idle_loaded: Idle
    create_s: list[float]  # per 200-shard stream, in creation order
    pagination: Pagination

    def per_thousand(self) -> tuple[float, float]:
        """(CPU % of a core, MiB) per node per 1,000 open shards, over the empty cluster."""
        scale = 1000 / self.open_shards
        return (
            round((self.idle_loaded.cpu_mean - self.idle_empty.cpu_mean) * scale, 1),
            round((self.idle_loaded.rss_mean - self.idle_empty.rss_mean) * scale, 1),
        )


def run(shards: int, idle_seconds: float, base_dir: Path) -> ScaleReport:
    assert shards > 0
    assert shards % STREAM_SHARDS == 0
    cluster = ClusterProcesses(base_dir, size=NODES, extra_env=PRODUCTION_LIVENESS)
    cluster.start()
    try:
        for endpoint in cluster.endpoints:
            wait_until(
                partial(formed, endpoint, NODES), deadline_s=FORMED_DEADLINE_S, what="formed"
            )
        _say(f"idle, no stream ({idle_seconds:.0f} s)")
        empty = measure_idle(cluster, idle_seconds)
        times: list[float] = []
        with ShoalClient(cluster.endpoints[0], timeout_s=60) as client:
            for i in range(shards // STREAM_SHARDS):
                times.append(round(create_writable(client, f"scale-{i}"), 3))
                _say(f"stream scale-{i}: {STREAM_SHARDS} shards writable in {times[-1]:.2f} s")
            pagination = paginate(client, "scale-0")
        time.sleep(SETTLE_S)  # let catch-up and rebalancing finish before measuring idle
        _say(f"idle, {shards} open shards ({idle_seconds:.0f} s)")
        loaded = measure_idle(cluster, idle_seconds)
        return ScaleReport(
            cpus=os.cpu_count() or 0,
            open_shards=shards,
            idle_empty=empty,
            idle_loaded=loaded,
            create_s=times,
            pagination=pagination,
        )
    except BaseException:
        print(cluster.logs(), file=sys.stderr)
        raise
    finally:
        cluster.stop()


def print_report(report: ScaleReport) -> None:
    cpu_k, rss_k = report.per_thousand()
    worst = max(report.create_s)
    verdict = "met" if worst < CREATE_GOAL_S else "MISSED"
    print(f"scale: {NODES} nodes, replication factor 3, {report.cpus} CPUs")
    for label, idle in (
        ("no stream", report.idle_empty),
        (f"{report.open_shards} shards", report.idle_loaded),
    ):
        cpu = ", ".join(f"{c:.1f}%" for c in idle.cpu_percent)
        rss = ", ".join(f"{r:.0f}" for r in idle.rss_mib)
        print(f"  idle, {label:<12} CPU per node {cpu} of a core; RSS {rss} MiB")
    print(f"  per 1,000 open shards, per node: +{cpu_k}% of a core, +{rss_k} MiB")
    times = ", ".join(f"{t:.2f}" for t in report.create_s)
    print(
        f"  CreateStream of {STREAM_SHARDS} shards to writable: {times} s "
        f"(goal < {CREATE_GOAL_S:.0f} s: {verdict})"
    )
    p = report.pagination
    print(
        f"  ListShards, {STREAM_SHARDS} shards by 100: {p.list_shards_pages} pages in "
        f"{p.list_shards_s * 1000:.0f} ms; DescribeStream: {p.describe_stream_pages} pages in "
        f"{p.describe_stream_s * 1000:.0f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench --only scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--shards", type=int, default=1000, help="open shards (multiple of 200)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="each idle measurement")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-scale-") as tmp:
        report = run(args.shards, args.idle_seconds, Path(tmp))
    print_report(report)
    if args.json is not None:
        document = asdict(report)
        document["per_thousand_shards"] = dict(
            zip(("cpu_percent", "rss_mib"), report.per_thousand(), strict=True)
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if max(report.create_s) < CREATE_GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
