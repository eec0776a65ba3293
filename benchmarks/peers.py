"""`scripts/bench --only peers`: Shoal replicated next to NATS JetStream replicated, in one run.

Issue 18 item 4. Both systems run as 3-node clusters on loopback on this machine, one after the
other, with 3 replicas of one log (a 1-shard Shoal stream with replication factor 3, a
JetStream stream with `num_replicas=3` and file storage), the same 1 KiB payloads, and each
with its best client here:

- Shoal: the native gRPC producers of `benchmarks.bench` (PutRecords of 500 records per call,
  `PRODUCERS` processes, sent to the shard's leader).
- JetStream: Debian's `nats-server` (three processes, a route mesh, JetStream file storage in a
  temporary directory) and the Python client `nats-py` with an asynchronous publish window
  (`js.publish_async`, `WINDOW` acknowledgements outstanding) in `PRODUCERS` processes, each
  to its own server. (The Go client is not installable here; the issue's earlier JetStream
  figures used it with a 1,000-message window.)

Figures: records (messages) acknowledged per second, and the acknowledgement latency of single
sequential writes (PutRecord to the leader; `js.publish`), p50/p99. Goals: Shoal's throughput
at least 1.5x JetStream's, and its p99 within 2x of JetStream's.

Durability differs and the report says so: Shoal acknowledges a record once a majority has it
fsynced; nats-server 2.9 acknowledges once a majority has it in its file store, and fsyncs on
its own schedule (`sync_interval`, 2 minutes by default, not settable before 2.10).

Without `nats-server` on the PATH (scripts/install puts it there as root) or without nats-py,
the JetStream half is skipped with a message saying which is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    RECORD_DATA_BYTES,
    Latency,
    Throughput,
    create_stream,
    free_port,
    now_s,
)
from benchmarks.cluster import (
    NODES,
    PRODUCERS,
    PRODUCTION_LIVENESS,
    _latency,
    _node_index,
    _node_pids,
    _shards,
    _throughput,
    _wait_formed,
)
from tests.support import ClusterProcesses

WINDOW = 1_000  # JetStream acknowledgements outstanding per producer
NATS_READY_DEADLINE_S = 30.0
THROUGHPUT_GOAL = 1.5  # Shoal / JetStream
P99_GOAL = 2.0  # Shoal's p99 at most this many times JetStream's


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- NATS JetStream --------------------------------------------------------------------------


class NatsCluster:
    """Three `nats-server` processes with JetStream in a route mesh on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.client_ports = [free_port() for _ in range(NODES)]
        self.route_ports = [free_port() for _ in range(NODES)]
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports]

    def start(self, binary: str) -> None:
        for index in range(NODES):
            routes = ", ".join(
                f"nats-route://127.0.0.1:{port}"
                for other, port in enumerate(self.route_ports)
                if other != index
            )
            store = self.workdir / f"n{index + 1}"
            store.mkdir(parents=True)
            config = store / "server.conf"
            config.write_text(
                f'server_name: "n{index + 1}"\n'
                f"listen: 127.0.0.1:{self.client_ports[index]}\n"
                f'jetstream {{ store_dir: "{store}" }}\n'
                f'cluster {{ name: "bench", listen: 127.0.0.1:{self.route_ports[index]}, '
                f"routes: [{routes}] }}\n"
            )
            log = (store / "server.log").open("wb")
            self.processes.append(
                subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
            )

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)


async def _quiet(error: Exception) -> None:
    """The client's error callback while the servers start: the deadline loop reports."""
    del error


async def _nats_stream(urls: list[str], name: str) -> None:
    """Creates the replicated stream once the cluster has a JetStream meta leader."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    deadline = now_s() + NATS_READY_DEADLINE_S
    while True:  # bounded by the deadline
        try:
            nc = await nats.connect(
                servers=urls, connect_timeout=2, allow_reconnect=False, error_cb=_quiet
            )
            try:
                js = nc.jetstream(timeout=5)
                await js.add_stream(
                    StreamConfig(
                        name=name, subjects=[name], storage=StorageType.FILE, num_replicas=3
                    )
                )
                await js.publish(name, b"ready")
                return
            finally:
                await nc.close()
        except Exception as error:  # not formed yet: retried until the deadline
            if now_s() > deadline:
                raise RuntimeError(f"JetStream not ready: {error!r}") from error
            await asyncio.sleep(0.5)


@dataclass
class _NatsResult:
    messages: int
    elapsed_s: float
    latencies_s: list[float]


async def _nats_produce(url: str, subject: str, seconds: float, warmup_s: float) -> _NatsResult:
    import nats

    payload = os.urandom(RECORD_DATA_BYTES)
    nc = await nats.connect(servers=[url])
    try:
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        end_warmup = now_s() + warmup_s
        while now_s() < end_warmup:
            await js.publish_async(subject, payload)
        await js.publish_async_completed()
        started = now_s()
        sent = 0
        while now_s() - started < seconds:
            for _ in range(100):
                await js.publish_async(subject, payload)  # waits while WINDOW are pending
            sent += 100
        await js.publish_async_completed()
        return _NatsResult(messages=sent, elapsed_s=now_s() - started, latencies_s=[])
    finally:
        await nc.close()


async def _nats_latency(url: str, subject: str, seconds: float, warmup_s: float) -> _NatsResult:
    import nats

    payload = os.urandom(RECORD_DATA_BYTES)
    nc = await nats.connect(servers=[url])
    try:
        js = nc.jetstream(timeout=5)
        end_warmup = now_s() + warmup_s
        while now_s() < end_warmup:
            await js.publish(subject, payload)
        latencies = []
        started = now_s()
        while now_s() - started < seconds:
            before = time.perf_counter()
            await js.publish(subject, payload)
            latencies.append(time.perf_counter() - before)
        return _NatsResult(
            messages=len(latencies), elapsed_s=now_s() - started, latencies_s=latencies
        )
    finally:
        await nc.close()


def _nats_producer_main(
    url: str,
    subject: str,
    seconds: float,
    warmup_s: float,
    results: multiprocessing.Queue[Any],
    go: multiprocessing.synchronize.Event,
) -> None:
    """One producer process (module level: a process entry point)."""
    go.wait(timeout=60)
    result = asyncio.run(_nats_produce(url, subject, seconds, warmup_s))
    results.put(asdict(result))


def _nats_throughput(
    urls: Sequence[str], subject: str, seconds: float, warmup_s: float
) -> Throughput:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    go = context.Event()
    processes = [
        context.Process(
            target=_nats_producer_main,
            args=(urls[i % len(urls)], subject, seconds, warmup_s, results, go),
        )
        for i in range(PRODUCERS)
    ]
    for process in processes:
        process.start()
    go.set()
    try:
        collected = [results.get(timeout=seconds + warmup_s + 60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    rates = [r["messages"] / r["elapsed_s"] for r in collected]
    return Throughput(
        records=sum(r["messages"] for r in collected),
        seconds=max(r["elapsed_s"] for r in collected),
        producer_share=min(rates) / max(rates) if max(rates) > 0 else None,
    )


def _nats_latency_of(url: str, subject: str, seconds: float, warmup_s: float) -> Latency:
    result = asyncio.run(_nats_latency(url, subject, seconds, warmup_s))
    cuts = statistics.quantiles(sorted(result.latencies_s), n=100, method="inclusive")
    return Latency(calls=len(result.latencies_s), p50_ms=cuts[49] * 1000, p99_ms=cuts[98] * 1000)


def _nats_missing() -> str | None:
    if shutil.which("nats-server") is None:
        return "nats-server is not installed (scripts/install installs Debian's as root)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py is not installed (scripts/install)"
    return None


# --- The run ---------------------------------------------------------------------------------


@dataclass
class PeersReport:
    command: str
    seconds: float
    nproc: int | None
    shoal: Throughput | None = None
    shoal_latency: Latency | None = None
    nats: Throughput | None = None
    nats_latency: Latency | None = None
    nats_skipped: str | None = None
    wall_s: float = 0.0
    replication: str = "framed"  # Shoal's node-to-node transport: framed (the default), or grpc


def run(
    seconds: float, warmup_s: float, command: str, *, replication: str = "framed"
) -> PeersReport:
    report = PeersReport(
        command=command, seconds=seconds, nproc=os.cpu_count(), replication=replication
    )
    latency_s = min(seconds, 3.0)
    started = now_s()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-peers-") as tmp:
        workdir = Path(tmp)
        (workdir / "shoal").mkdir()
        cluster = ClusterProcesses(workdir / "shoal", size=NODES, extra_env=PRODUCTION_LIVENESS)
        for node in cluster.nodes:
            node.framed = replication == "framed"
        cluster.start()
        try:
            _wait_formed(cluster)
            create_stream(cluster.endpoints[0], "peers", 1)
            (shard,) = _shards(cluster, "peers")
            assert len(shard.replicas) == 3, shard
            leader = cluster.nodes[_node_index(shard.leader)].endpoint
            _say(f"shoal: PutRecords, 1 shard, factor 3, {PRODUCERS} producers to the leader")
            report.shoal = _throughput(
                [leader], "peers", seconds, warmup_s, pids=_node_pids(cluster)
            )
            create_stream(cluster.endpoints[0], "peers-latency", 1)
            (shard,) = _shards(cluster, "peers-latency")
            leader = cluster.nodes[_node_index(shard.leader)].endpoint
            _say("shoal: PutRecord latency, factor 3, to the leader")
            report.shoal_latency = _latency(leader, "peers-latency", latency_s, warmup_s)
        except BaseException:
            print(cluster.logs(), file=sys.stderr)
            raise
        finally:
            cluster.stop()
        missing = _nats_missing()
        if missing is not None:
            report.nats_skipped = missing
            _say(f"JetStream skipped: {missing}")
        else:
            binary = shutil.which("nats-server")
            assert binary is not None
            nats_cluster = NatsCluster(workdir / "nats")
            nats_cluster.start(binary)
            try:
                asyncio.run(_nats_stream(nats_cluster.urls, "peers"))
                asyncio.run(_nats_stream(nats_cluster.urls, "peerslatency"))
                _say(f"jetstream: async publish, window {WINDOW}, {PRODUCERS} producers")
                report.nats = _nats_throughput(nats_cluster.urls, "peers", seconds, warmup_s)
                _say("jetstream: sequential publish latency")
                report.nats_latency = _nats_latency_of(
                    nats_cluster.urls[0], "peerslatency", latency_s, warmup_s
                )
            finally:
                nats_cluster.stop()
    report.wall_s = now_s() - started
    return report


def format_report(report: PeersReport) -> str:
    lines = [
        "",
        f"Peers: 3-node clusters, 3 replicas of one log, 1 KiB records, one after the other on "
        f"this machine (nproc={report.nproc}), {report.seconds:g} s per scenario, took "
        f"{report.wall_s:.0f} s; Shoal replicates over {report.replication}",
        f"reproduce: {report.command}",
    ]
    shoal, nats = report.shoal, report.nats
    if shoal is not None:
        lines.append(
            f"  shoal      PutRecords x500, {PRODUCERS} producers   "
            f"{shoal.records_per_s:>9,.0f} rec/s"
        )
    if nats is not None:
        lines.append(
            f"  jetstream  async publish, window {WINDOW}, {PRODUCERS} producers "
            f"{nats.records_per_s:>9,.0f} msg/s"
        )
    if report.shoal_latency is not None:
        s = report.shoal_latency
        lines.append(
            f"  shoal      PutRecord ack      p50 {s.p50_ms:6.2f} ms  p99 {s.p99_ms:6.2f} ms"
        )
    if report.nats_latency is not None:
        n = report.nats_latency
        lines.append(
            f"  jetstream  publish ack        p50 {n.p50_ms:6.2f} ms  p99 {n.p99_ms:6.2f} ms"
        )
    if report.nats_skipped is not None:
        lines.append(f"  jetstream  skipped: {report.nats_skipped}")
    if shoal is not None and nats is not None and nats.records_per_s > 0:
        ratio = shoal.records_per_s / nats.records_per_s
        verdict = "ok" if ratio >= THROUGHPUT_GOAL else "MISSED"
        lines.append(
            f"  throughput shoal / jetstream  {ratio:5.2f}x  goal >= {THROUGHPUT_GOAL}x: {verdict}"
        )
    if report.shoal_latency is not None and report.nats_latency is not None:
        ratio = report.shoal_latency.p99_ms / report.nats_latency.p99_ms
        verdict = "ok" if ratio <= P99_GOAL else "MISSED"
        lines.append(
            f"  p99 ack shoal / jetstream     {ratio:5.2f}x  goal <= {P99_GOAL}x: {verdict}"
        )
    lines.append(
        "note: Shoal acknowledges once a majority fsynced the record; nats-server 2.9 once a "
        "majority wrote it to its file store (it fsyncs every 2 minutes by default)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench --only peers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="before each (default 1)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--replication",
        choices=("grpc", "framed"),
        default="framed",
        help="Shoal's node-to-node replication: the framed port (default) or the gRPC stream",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be > 0, --warmup >= 0")
    command = shlex.join(["scripts/bench", "--only", "peers", *(argv or [])])
    report = run(args.seconds, args.warmup, command, replication=args.replication)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
