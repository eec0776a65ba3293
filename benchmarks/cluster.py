"""`scripts/bench --only cluster`: a 3-node cluster's figures next to one node's, in one run.

What one run measures (issue 4 point 10):

- PutRecords throughput, 500 records of 1 KiB per call, random partition keys, a 4-shard stream
  and 3 producer processes (`benchmarks.bench` producers): on one node (`shoal_node`, the same
  child as the single-node benchmark), then on a 3-node cluster (`tests.support
  .ClusterProcesses`) with replication factor 3 and with replication factor 1. In the cluster
  producer i sends to node i (each node forwards what it does not lead: a client that does not
  route, the common case: the AWS SDKs). Factor 3 runs a second time on the same stream with
  the same records, the producers using Shoal's routing client (`broker.client.routing
  .RoutingShoalClient`'s shard map: each request is cut by leader node, the parts go to their
  leaders at once, as a Kafka producer does; no forwarding). The goal (issue 18): factor 3 keeps
  at least 60% of the single-node figure; the verdict is printed for both factor-3 rows.
- PutRecord latency p50/p99 (one producer, one 1 KiB record per call, sequential, 1 shard): one
  node; the cluster with factor 3 sent to the shard's leader and sent to another node (one
  forward more); factor 1 sent to the leader.
- Failover: a 1-shard stream with factor 3; `--kills` times (default 5): wait until every node
  is ACTIVE and every replica holds the same log, kill -9 the shard's leader, then send
  PutRecord through a surviving node until one succeeds; the time from the kill to that
  success, p50/p99 (and max) over the kills. The node restarts on its data dir before the next
  kill. The goal: writes resume within 3 s of a leader's death.

The replication factor comes from the node's `replication_factor` (SHOAL_REPLICATION_FACTOR),
read by the node that handles CreateStream (there is no per-stream option): node-3 runs with 1,
nodes 1 and 2 with the default 3, so the factor-3 stream is created through node-1 and the
factor-1 stream through node-3 in the same cluster. The cluster runs the production liveness
knobs (heartbeat 250 ms, session 2 s, controller pass 100 ms: `broker.config.Knobs`), not the
shortened ones of the cluster tests, so the failover figure is what a deployment would see.
Per-shard throttles are lifted on every node, as in the single-node benchmark.

Each throughput row also prints the CPU time the nodes' processes spent per 1,000 records
(/proc/<pid>/stat of every node over the measured span, summed): on a shared machine a figure
the other load disturbs far less than records/s, and what the cluster pays against one node.

Three nodes and the producers share one machine, so on few CPUs the cluster figures include
the contention of three interpreters for the cores one node had to itself; the report prints
the CPU count. Every wait is bounded; every child process is killed on the way out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import multiprocessing.synchronize
import os
import random
import shlex
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from benchmarks.bench import (
    BATCH_RECORDS,
    CALL_TIMEOUT_S,
    CHANNEL_OPTIONS,
    REQUEST_POOL,
    Latency,
    ProducerResult,
    ProducerSpec,
    Throughput,
    cpu_s,
    create_stream,
    drive_producer,
    failed_put_records,
    latency_of,
    now_s,
    producer_main,
    put_records_request,
    raw_stub,
    run_producers,
    shoal_node,
    throughput_of,
)
from broker.api.kinesis.v1 import kinesis_pb2
from broker.client.grpc_client import ShoalClient
from broker.client.routing import RoutingShoalClient
from broker.errors import ShoalError
from tests.cluster.helpers import cluster_status, formed, replica_status
from tests.support import ClusterProcesses, wait_until

SHARDS = 4
PRODUCERS = 3
NODES = 3
FORMED_DEADLINE_S = 60.0
CONVERGED_DEADLINE_S = 60.0
RESUME_DEADLINE_S = 30.0
PROBE_TIMEOUT_S = 15.0  # one PutRecord of the failover probe (the gateway retries inside it)
THROUGHPUT_GOAL = 0.60  # issue 18
RESUME_GOAL_S = 3.0
PRODUCTION_LIVENESS = {
    "SHOAL_HEARTBEAT_INTERVAL_MS": "250",
    "SHOAL_SESSION_TIMEOUT_MS": "2000",
    "SHOAL_CONTROLLER_PASS_INTERVAL_MS": "100",
}


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- Producers spread over the nodes --------------------------------------------------------


def spread_producer_main(
    spec: ProducerSpec, events: multiprocessing.Queue[Any], go: multiprocessing.synchronize.Event
) -> None:
    """`bench.producer_main`, with producer i sending to the i-th of the comma-separated
    targets in `spec.target` (a process entry point: module level, picklable)."""
    targets = spec.target.split(",")
    producer_main(dataclasses.replace(spec, target=targets[spec.index % len(targets)]), events, go)


def _split_by_leader(router: RoutingShoalClient, request: bytes, fallback: str) -> dict[str, bytes]:
    """One serialized PutRecords request cut into one request per leader node, as
    `RoutingShoalClient.call("PutRecords")` cuts it (records of a shard without a leader go to
    `fallback`, which forwards them)."""
    whole = kinesis_pb2.PutRecordsInput.FromString(request)
    parts: dict[str, kinesis_pb2.PutRecordsInput] = {}
    for record in whole.records:
        entry: dict[str, str] = {"PartitionKey": record.partition_key}
        if record.HasField("explicit_hash_key"):
            entry["ExplicitHashKey"] = record.explicit_hash_key
        address = router.leader_address(whole.stream_name, entry) or fallback
        part = parts.setdefault(address, kinesis_pb2.PutRecordsInput(stream_name=whole.stream_name))
        part.records.append(record)
    return {address: part.SerializeToString() for address, part in parts.items()}


def _produce_routed(
    spec: ProducerSpec, events: multiprocessing.Queue[Any], go: multiprocessing.synchronize.Event
) -> ProducerResult:
    """`bench._produce` for PutRecords with Shoal's routing client: the same pre-built requests
    (same seed), each cut once by leader node with `RoutingShoalClient`'s map, then every call
    sends its parts to their leaders concurrently and waits for all of them (what
    `RoutingShoalClient.call` does per call, minus re-serializing the records each time, which
    the non-routing producers do not pay either)."""
    rng = random.Random(spec.seed)
    requests = [put_records_request(spec.stream_name, rng) for _ in range(REQUEST_POOL)]
    endpoints = spec.target.split(",")
    with RoutingShoalClient(endpoints, timeout_s=CALL_TIMEOUT_S) as router:
        split = [_split_by_leader(router, request, endpoints[0]) for request in requests]
    addresses = sorted({address for parts in split for address in parts})
    channels = {a: grpc.insecure_channel(a, options=CHANNEL_OPTIONS) for a in addresses}
    try:
        stubs = {address: raw_stub(channel, "PutRecords") for address, channel in channels.items()}
        with ThreadPoolExecutor(max_workers=len(addresses)) as pool:

            def send(n: int) -> int:
                calls = [
                    pool.submit(stubs[address], body, timeout=CALL_TIMEOUT_S)
                    for address, body in split[n % len(split)].items()
                ]
                return sum(failed_put_records(call.result()) for call in calls)

            return drive_producer(spec, send, BATCH_RECORDS, events, go)
    finally:
        for channel in channels.values():
            channel.close()


routed_producer_main = partial(producer_main, produce=_produce_routed)


def _throughput(
    targets: Sequence[str],
    stream: str,
    seconds: float,
    warmup_s: float,
    *,
    pids: Sequence[int],
    routed: bool = False,
) -> Throughput:
    """Records/s of the producers, with the CPU the processes `pids` (the nodes) spent over
    the measured span (`Throughput.cpu_s`, summed)."""
    at_go: list[float] = []
    measured = throughput_of(
        run_producers(
            target=",".join(targets),
            stream_name=stream,
            kind="PutRecords",
            count=PRODUCERS,
            seconds=seconds,
            warmup_s=warmup_s,
            entry=routed_producer_main if routed else spread_producer_main,
            on_go=lambda: at_go.append(_cpu_of(pids)),
        )
    )
    return dataclasses.replace(measured, cpu_s=_cpu_of(pids) - at_go[0])


def _cpu_of(pids: Sequence[int]) -> float:
    return sum(cpu_s(pid) for pid in pids)


def _node_pids(cluster: ClusterProcesses) -> list[int]:
    pids = [node.process.pid for node in cluster.nodes if node.process is not None]
    assert len(pids) == len(cluster.nodes), "a node is not running"
    return pids


def _latency(target: str, stream: str, seconds: float, warmup_s: float) -> Latency:
    return latency_of(
        run_producers(
            target=target,
            stream_name=stream,
            kind="PutRecord",
            count=1,
            seconds=seconds,
            warmup_s=warmup_s,
        )
    )


# --- The cluster ----------------------------------------------------------------------------


def _wait_formed(cluster: ClusterProcesses) -> None:
    for endpoint in cluster.endpoints:
        wait_until(
            partial(formed, endpoint, NODES), deadline_s=FORMED_DEADLINE_S, what="cluster formed"
        )


def _shards(cluster: ClusterProcesses, stream: str) -> list[Any]:
    return [s for s in cluster_status(cluster.endpoints[0]).shards if s.stream_name == stream]


def _converged(cluster: ClusterProcesses, shard_uid: int) -> bool:
    """Every node holds the shard with the same log end and high watermark."""
    views = set()
    for node in cluster.nodes:
        try:
            states = [s for s in replica_status(node.endpoint).replicas if s.shard_uid == shard_uid]
        except grpc.RpcError:
            return False
        if len(states) != 1:
            return False
        views.add((states[0].log_end, states[0].high_watermark))
    return len(views) == 1


def _node_index(node_id: str) -> int:
    return int(node_id.rsplit("-", 1)[1]) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Failover:
    resume_s: list[float]  # per kill: kill -9 -> first successful PutRecord after it
    failed_probes: int  # PutRecord calls that failed meanwhile
    probe_errors: list[str]  # the first few of their errors

    def quantile(self, q: int) -> float:
        if len(self.resume_s) < 2:
            return self.resume_s[0] if self.resume_s else float("nan")
        return statistics.quantiles(sorted(self.resume_s), n=100, method="inclusive")[q - 1]


def measure_failover(cluster: ClusterProcesses, kills: int) -> Failover:
    stream = "bench-failover"
    create_stream(cluster.endpoints[0], stream, 1)
    (shard,) = _shards(cluster, stream)
    resumes: list[float] = []
    failed = 0
    errors: list[str] = []
    for kill in range(kills):
        _wait_formed(cluster)
        with ShoalClient(cluster.endpoints[0], timeout_s=PROBE_TIMEOUT_S) as client:
            client.call("PutRecord", {"StreamName": stream, "PartitionKey": "k", "Data": b"warm"})
        wait_until(
            partial(_converged, cluster, shard.shard_uid),
            deadline_s=CONVERGED_DEADLINE_S,
            what="replicas converged",
        )
        leader = next(s.leader for s in _shards(cluster, stream))
        victim = cluster.nodes[_node_index(leader)]
        survivor = next(n for n in cluster.nodes if n is not victim)
        with ShoalClient(survivor.endpoint, timeout_s=PROBE_TIMEOUT_S) as client:
            assert victim.process is not None
            killed_at = now_s()
            victim.process.send_signal(signal.SIGKILL)
            give_up = killed_at + RESUME_DEADLINE_S
            while True:
                try:
                    client.call(
                        "PutRecord",
                        {"StreamName": stream, "PartitionKey": "k", "Data": b"after-%d" % kill},
                    )
                except ShoalError as exc:
                    failed += 1
                    if len(errors) < 10:
                        errors.append(f"{now_s() - killed_at:.2f} s: {exc}"[:160])
                    if now_s() > give_up:
                        raise TimeoutError(
                            f"no write succeeded {RESUME_DEADLINE_S:g} s after killing {leader}"
                        ) from None
                    continue
                resumes.append(now_s() - killed_at)
                break
        victim.process.wait(timeout=30)
        victim.process = None
        _say(f"failover {kill + 1}/{kills}: killed {leader}, writes resumed in {resumes[-1]:.2f} s")
        victim.start()
    _wait_formed(cluster)
    return Failover(resume_s=resumes, failed_probes=failed, probe_errors=errors)


# --- The run --------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ClusterReport:
    command: str
    seconds: float
    nproc: int | None
    single: Throughput | None = None
    rf3: Throughput | None = None  # producer i -> node i: the nodes forward what they do not lead
    rf3_routed: Throughput | None = None  # RoutingShoalClient: each record to its shard's leader
    rf1: Throughput | None = None
    single_latency: Latency | None = None
    rf3_latency_leader: Latency | None = None
    rf3_latency_forwarded: Latency | None = None
    rf1_latency_leader: Latency | None = None
    failover: Failover | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def run(seconds: float, warmup_s: float, kills: int, command: str) -> ClusterReport:
    report = ClusterReport(command=command, seconds=seconds, nproc=os.cpu_count())
    latency_s = min(seconds, 3.0)
    started = now_s()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-cluster-") as tmp:
        workdir = Path(tmp)
        (workdir / "single").mkdir()
        with shoal_node(workdir / "single") as node:
            _say(f"one node: PutRecords, {SHARDS} shards, {PRODUCERS} producers")
            create_stream(node.grpc_target, "bench-single", SHARDS)
            report.single = _throughput(
                [node.grpc_target], "bench-single", seconds, warmup_s, pids=[node.pid]
            )
            _say("one node: PutRecord latency")
            create_stream(node.grpc_target, "bench-single-latency", 1)
            report.single_latency = _latency(
                node.grpc_target, "bench-single-latency", latency_s, warmup_s
            )
        (workdir / "cluster").mkdir()
        cluster = ClusterProcesses(workdir / "cluster", size=NODES, extra_env=PRODUCTION_LIVENESS)
        cluster.nodes[2].extra_env["SHOAL_REPLICATION_FACTOR"] = "1"
        cluster.start()
        try:
            _wait_formed(cluster)
            endpoints = cluster.endpoints
            for name, via, factor in (("bench-rf3", 0, 3), ("bench-rf1", 2, 1)):
                create_stream(endpoints[via], name, SHARDS)
                shards = _shards(cluster, name)
                assert all(len(s.replicas) == factor for s in shards), (name, shards)
                _say(f"cluster: PutRecords, replication factor {factor}")
                pids = _node_pids(cluster)
                throughput = _throughput(endpoints, name, seconds, warmup_s, pids=pids)
                if factor == 3:
                    report.rf3 = throughput
                    _say("cluster: PutRecords, replication factor 3, routing client")
                    report.rf3_routed = _throughput(
                        endpoints, name, seconds, warmup_s, pids=pids, routed=True
                    )
                else:
                    report.rf1 = throughput
            for name, via, factor in (("bench-rf3-latency", 0, 3), ("bench-rf1-latency", 2, 1)):
                create_stream(endpoints[via], name, 1)
                (shard,) = _shards(cluster, name)
                leader = cluster.nodes[_node_index(shard.leader)].endpoint
                _say(f"cluster: PutRecord latency, replication factor {factor}, to the leader")
                latency = _latency(leader, name, latency_s, warmup_s)
                if factor == 3:
                    report.rf3_latency_leader = latency
                    other = next(e for e in endpoints if e != leader)
                    _say("cluster: PutRecord latency, replication factor 3, forwarded")
                    report.rf3_latency_forwarded = _latency(other, name, latency_s, warmup_s)
                else:
                    report.rf1_latency_leader = latency
            _say(f"cluster: failover, {kills} kill -9 of the shard leader")
            report.failover = measure_failover(cluster, kills)
        except BaseException:
            print(cluster.logs(), file=sys.stderr)
            raise
        finally:
            cluster.stop()
    report.wall_s = now_s() - started
    return report


# --- Output ---------------------------------------------------------------------------------


def _rate(t: Throughput) -> str:
    return f"{t.records_per_s:>10,.0f} rec/s {t.mib_per_s:>7.1f} MiB/s"


def _cpu(t: Throughput) -> str:
    """The nodes' CPU per 1,000 records (`_throughput`)."""
    if t.cpu_s is None or t.records <= 0:
        return ""
    return f"  nodes' CPU {t.cpu_s * 1e6 / t.records:5.2f} ms per 1k records"


def _lat(latency: Latency) -> str:
    return f"p50 {latency.p50_ms:7.2f} ms  p99 {latency.p99_ms:7.2f} ms  ({latency.calls} calls)"


def format_report(report: ClusterReport) -> str:
    assert report.single is not None
    assert report.rf3 is not None
    assert report.rf3_routed is not None
    assert report.rf1 is not None
    assert report.failover is not None
    assert report.single_latency is not None
    assert report.rf3_latency_leader is not None
    assert report.rf3_latency_forwarded is not None
    assert report.rf1_latency_leader is not None
    single = report.single.records_per_s
    ratio3 = report.rf3.records_per_s / single if single else 0.0
    ratio3_routed = report.rf3_routed.records_per_s / single if single else 0.0
    ratio1 = report.rf1.records_per_s / single if single else 0.0

    def goal(ratio: float) -> str:
        verdict = "ok" if ratio >= THROUGHPUT_GOAL else "MISSED"
        return f"{100 * ratio:5.1f}% of one node  goal >= {100 * THROUGHPUT_GOAL:.0f}%: {verdict}"

    failover = report.failover
    p50, p99 = failover.quantile(50), failover.quantile(99)
    worst = max(failover.resume_s)
    lines = [
        "",
        f"Cluster benchmark: {NODES} nodes and the producers on one machine "
        f"(nproc={report.nproc}), {report.seconds:g} s per scenario, took {report.wall_s:.0f} s",
        f"reproduce: {report.command}",
        "nodes: `python -m broker serve` x3 (tests.support.ClusterProcesses), throttles lifted, "
        "production liveness knobs (heartbeat 250 ms, session 2 s)",
        "",
        f"PutRecords, 500 x 1 KiB per call, {SHARDS} shards, {PRODUCERS} producers "
        "(both factor-3 rows send the same records)",
        f"  one node                                   {_rate(report.single)}"
        f"{' ' * 40}{_cpu(report.single)}",
        f"  factor 3, producer i -> node i (forwards)  {_rate(report.rf3)}  {goal(ratio3)}"
        f"{_cpu(report.rf3)}",
        f"  factor 3, routing client (to the leaders)  {_rate(report.rf3_routed)}  "
        f"{goal(ratio3_routed)}{_cpu(report.rf3_routed)}",
        f"  factor 1, producer i -> node i (forwards)  {_rate(report.rf1)}  "
        f"{100 * ratio1:5.1f}% of one node{' ' * 21}{_cpu(report.rf1)}",
    ]
    failed = sum(
        t.failed_records for t in (report.single, report.rf3, report.rf3_routed, report.rf1)
    )
    if failed:
        lines.append(f"  WARNING: {failed:,} records were refused (FailedRecordCount); not counted")
    lines += [
        "",
        "PutRecord latency, 1 KiB, sequential, 1 shard",
        f"  one node                              {_lat(report.single_latency)}",
        f"  cluster, factor 3, to the leader      {_lat(report.rf3_latency_leader)}",
        f"  cluster, factor 3, via another node   {_lat(report.rf3_latency_forwarded)}",
        f"  cluster, factor 1, to the leader      {_lat(report.rf1_latency_leader)}",
        "",
        f"Failover: kill -9 of a 1-shard stream's leader -> first successful PutRecord through "
        f"a survivor ({len(failover.resume_s)} kills, {failover.failed_probes} failed probes)",
        f"  p50 {p50:5.2f} s  p99 {p99:5.2f} s  max {worst:5.2f} s   "
        f"goal <= {RESUME_GOAL_S:g} s: {'ok' if worst <= RESUME_GOAL_S else 'MISSED'}",
        "  each: " + ", ".join(f"{s:.2f}" for s in failover.resume_s),
        *(f"  failed probe at {error}" for error in failover.probe_errors),
    ]
    if (report.nproc or 1) < 6:
        lines.append(
            f"note: {report.nproc} CPUs run three nodes and up to {PRODUCERS} producer "
            "processes; the cluster figures include that contention, the one-node figure less so"
        )
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def report_json(report: ClusterReport) -> dict[str, Any]:
    def throughput(t: Throughput | None) -> dict[str, Any] | None:
        if t is None:
            return None
        return {
            **asdict(t),
            "records_per_s": t.records_per_s,
            "mib_per_s": t.mib_per_s,
            "nodes_cpu_ms_per_1k_records": t.cpu_s * 1e6 / t.records
            if t.cpu_s is not None and t.records > 0
            else None,
        }

    return {
        "command": report.command,
        "nproc": report.nproc,
        "seconds_per_scenario": report.seconds,
        "wall_s": report.wall_s,
        "put_records": {
            "single_node": throughput(report.single),
            "cluster_rf3": throughput(report.rf3),
            "cluster_rf3_routed": throughput(report.rf3_routed),
            "cluster_rf1": throughput(report.rf1),
        },
        "put_record_latency": {
            name: asdict(value) if value else None
            for name, value in (
                ("single_node", report.single_latency),
                ("cluster_rf3_leader", report.rf3_latency_leader),
                ("cluster_rf3_forwarded", report.rf3_latency_forwarded),
                ("cluster_rf1_leader", report.rf1_latency_leader),
            )
        },
        "failover": {
            **asdict(report.failover),
            "p50_s": report.failover.quantile(50),
            "p99_s": report.failover.quantile(99),
        }
        if report.failover
        else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench --only cluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="before each (default 1)")
    parser.add_argument("--kills", type=int, default=5, help="leader kills timed (default 5)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.kills < 1:
        parser.error("--seconds must be > 0, --warmup >= 0, --kills >= 1")
    command = shlex.join(["scripts/bench", "--only", "cluster", *(argv or [])])
    report = run(args.seconds, args.warmup, args.kills, command)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report_json(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
