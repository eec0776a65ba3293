"""`scripts/bench --only consumers`: KCL-style workers on a 3-node cluster (issue 5 item 6).

What one run measures, with real worker processes (`tests.consumers.worker_process`: one
`broker.client.worker.Worker` each, journaling what its processor is handed) on a 3-node cluster
(`tests.support.ClusterProcesses`, production liveness knobs as in benchmarks/cluster.py):

- End-to-end latency, put accepted -> record handed to the processor, p50/p99: a paced producer
  puts one small record every 20 ms (PutRecords of one, through node 1) and remembers when each
  put's response arrived; the worker journals when each batch reached `process_records`. Both
  stamps are CLOCK_MONOTONIC (`time.monotonic_ns`), one clock for every process of the machine.
  A record can reach the processor before its producer has read the response, so a latency can
  be slightly negative; it is kept as measured. The same figures from when the put was sent
  (the put's own latency, replication included, added) are printed next to them.
  * polling, at the worker's default idle interval (1,000 ms: the KCL's
    idleTimeBetweenReadsInMillis) and at a short one (100 ms), each on its own stream and
    worker, run side by side; reported with p99 / interval. Goal: consumers at their configured
    interval, i.e. p99 within the interval plus a GetRecords (ratio about 1).
  * enhanced fan-out through the worker (`WorkerConfig(retrieval="fanout")`), alone on the
    cluster. Goal: p99 under 50 ms. Skipped, with the reason printed, when the worker cannot
    build a fan-out record source (broker/client/fanout.py not there yet).
- Worker failover: `--kills` + 1 workers (default 4) share a 4-shard stream (failover 3 s and
  take interval 500 ms, or `--failover-ms` / `--take-interval-ms`; poll 50 ms) while the
  producer writes to every shard; `--kills` times (default 3), once the fleet is balanced,
  kill -9 a worker holding the most shards; for each of its shards, the time from the kill to
  the first batch of that shard handed to another worker's processor. p50/p99/max over all
  (kill, shard) pairs, and the ratio to the failover time. The survivors must first see the
  victim's counters stand still for the failover time on their own clocks, then notice it at a
  take scan: the expected figure is between failover - renew interval and failover + two take
  intervals (the worker's default take interval is failover/10: at most 1.2 failover times;
  the KCL's 2 x (failover + 25 ms) gave 2-4 failover times).

Three nodes, the producer and the workers share one machine; the report prints the CPU count.
Every wait is bounded; every child process is killed on the way out. About 30 s at the
default `--seconds 8 --kills 3`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.bench import create_stream, now_s
from benchmarks.cluster import PRODUCTION_LIVENESS
from broker.client.worker import WorkerConfig
from tests.cluster.helpers import formed
from tests.consumers.process_fleet import (
    PacedProducer,
    WorkerFleet,
    WorkerSettings,
    balanced,
    first_deliveries,
    list_leases,
    poll_until,
    taken_over,
)
from tests.support import ClusterProcesses

NODES = 3
FORMED_DEADLINE_S = 60.0
BALANCE_DEADLINE_S = 30.0  # plus four take intervals (a steal per take scan)
DELIVERY_DEADLINE_S = 30.0
TAKEOVER_DEADLINE_S = 30.0  # plus the failover time and two take intervals
PUT_INTERVAL_S = 0.02  # the latency producer: one record every 20 ms
WARMUP_S = 1.0  # records accepted in the first second after the first delivery are not counted
DEFAULT_POLL_MS = 1_000  # WorkerConfig.polling_idle_interval_ms's default
SHORT_POLL_MS = 100
FANOUT_P99_GOAL_MS = 50.0
# Polling p99 over the idle interval: a record put just after an empty GetRecords waits the
# whole interval, then one GetRecords; a quarter more allows that call on a busy machine.
POLL_RATIO_GOAL = 1.25
FAILOVER_MS = 3_000
TAKE_INTERVAL_MS = 500
FAILOVER_SHARDS = 4


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndToEnd:
    """Put accepted -> record handed to a processor, over `records` records."""

    name: str
    interval_ms: int | None  # the polling idle interval; None for fan-out
    records: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    # The same from when the put was sent: adds the put's own latency (replication included).
    sent_p50_ms: float
    sent_p99_ms: float

    @property
    def p99_to_interval(self) -> float | None:
        return self.p99_ms / self.interval_ms if self.interval_ms else None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerFailover:
    failover_ms: int
    take_interval_ms: int
    takeover_s: list[float]  # per (kill, shard of the victim)

    def quantile(self, q: int) -> float:
        values = sorted(self.takeover_s)
        if len(values) < 2:
            return values[0] if values else float("nan")
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass(slots=True, kw_only=True)
class ConsumerReport:
    command: str
    seconds: float
    nproc: int | None
    polling: list[EndToEnd] = field(default_factory=list)
    fanout: EndToEnd | None = None
    fanout_skipped: str | None = None
    failover: WorkerFailover | None = None
    wall_s: float = 0.0


def _quantiles(samples_ms: Sequence[float]) -> tuple[float, float]:
    assert len(samples_ms) >= 2, "too few records delivered to measure"
    cuts = statistics.quantiles(sorted(samples_ms), n=100, method="inclusive")
    return cuts[49], cuts[98]


def end_to_end(
    name: str, interval_ms: int | None, producer: PacedProducer, fleet: WorkerFleet
) -> EndToEnd:
    """The latency of every acknowledged record accepted after the warm-up."""
    first = first_deliveries(fleet.events())
    if not first:
        raise AssertionError(f"{name}: nothing was delivered")
    began_ns = min(t_ns for t_ns, _, _ in first.values()) + int(WARMUP_S * 1e9)
    counted = [
        data
        for data, accepted in producer.accepted_ns.items()
        if accepted >= began_ns and data in first
    ]
    samples = [(first[data][0] - producer.accepted_ns[data]) / 1e6 for data in counted]
    p50, p99 = _quantiles(samples)
    sent_p50, sent_p99 = _quantiles(
        [(first[data][0] - producer.sent_ns[data]) / 1e6 for data in counted]
    )
    return EndToEnd(
        name=name,
        interval_ms=interval_ms,
        records=len(samples),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=max(samples),
        sent_p50_ms=sent_p50,
        sent_p99_ms=sent_p99,
    )


# --- Scenarios ------------------------------------------------------------------------------


def _wait_formed(cluster: ClusterProcesses) -> None:
    for endpoint in cluster.endpoints:
        poll_until(
            partial(formed, endpoint, NODES), deadline_s=FORMED_DEADLINE_S, what="cluster formed"
        )


def _wait_delivered(fleet: WorkerFleet, records: set[str]) -> None:
    poll_until(
        lambda: records <= set(first_deliveries(fleet.events())),
        deadline_s=DELIVERY_DEADLINE_S,
        what=f"{fleet.stream}: every acknowledged record delivered",
    )


def _wait_consuming(fleet: WorkerFleet) -> None:
    poll_until(
        lambda: bool(first_deliveries(fleet.events())),
        deadline_s=DELIVERY_DEADLINE_S,
        what=f"{fleet.stream}: first delivery",
    )


def measure_polling(cluster: ClusterProcesses, workdir: Path, seconds: float) -> list[EndToEnd]:
    """Both polling intervals side by side (their latency is the interval's, not the CPU's)."""
    endpoint = cluster.endpoints[0]
    runs: list[tuple[str, int, WorkerFleet, PacedProducer]] = []
    try:
        for interval_ms in (DEFAULT_POLL_MS, SHORT_POLL_MS):
            stream = f"bench-poll-{interval_ms}"
            create_stream(endpoint, stream, 1)
            fleet = WorkerFleet(
                workdir / stream,
                application=f"app-{stream}",
                stream=stream,
                settings=WorkerSettings(poll_interval_ms=interval_ms),
            )
            fleet.start("w1", cluster.endpoints[1])
            producer = PacedProducer(
                [endpoint], stream, name=stream, batch_size=1, interval_s=PUT_INTERVAL_S
            )
            runs.append((f"polling, idle interval {interval_ms} ms", interval_ms, fleet, producer))
        for _, _, fleet, producer in runs:
            fleet.wait_started(["w1"])
            producer.start()
        for _, _, fleet, _ in runs:
            _wait_consuming(fleet)
        _say(f"polling: measuring for {WARMUP_S + seconds:g} s")
        time.sleep(WARMUP_S + seconds)
        for _, _, _, producer in runs:
            producer.stop()
        results = []
        for name, interval_ms, fleet, producer in runs:
            _wait_delivered(fleet, set(producer.acknowledged))
            results.append(end_to_end(name, interval_ms, producer, fleet))
        return results
    finally:
        for _, _, fleet, producer in runs:
            producer.stop()
            fleet.close()


def fanout_unavailable() -> str | None:
    """Why the worker cannot read with enhanced fan-out here, or None when it can."""
    if importlib.util.find_spec("broker.client.fanout") is None:
        return "no fan-out record source for the worker yet (broker/client/fanout.py)"
    return None


def measure_fanout(cluster: ClusterProcesses, workdir: Path, seconds: float) -> EndToEnd:
    endpoint = cluster.endpoints[0]
    stream = "bench-fanout"
    create_stream(endpoint, stream, 1)
    fleet = WorkerFleet(
        workdir / stream,
        application=f"app-{stream}",
        stream=stream,
        settings=WorkerSettings(retrieval="fanout"),
    )
    producer = PacedProducer(
        [endpoint], stream, name=stream, batch_size=1, interval_s=PUT_INTERVAL_S
    )
    try:
        fleet.start("w1", cluster.endpoints[1])
        fleet.wait_started(["w1"])
        producer.start()
        _wait_consuming(fleet)
        _say(f"fan-out: measuring for {WARMUP_S + seconds:g} s")
        time.sleep(WARMUP_S + seconds)
        producer.stop()
        _wait_delivered(fleet, set(producer.acknowledged))
        return end_to_end("enhanced fan-out", None, producer, fleet)
    finally:
        producer.stop()
        fleet.close()


def _balanced(fleet: WorkerFleet, endpoint: str) -> bool:
    leases = list_leases(endpoint, application=fleet.application, stream=fleet.stream)
    return balanced(leases, fleet.live)


def measure_failover(
    cluster: ClusterProcesses,
    workdir: Path,
    kills: int,
    *,
    failover_ms: int = FAILOVER_MS,
    take_interval_ms: int | None = TAKE_INTERVAL_MS,
) -> WorkerFailover:
    """`kills` kill -9s of a worker of `kills + 1` sharing a stream; `take_interval_ms` None
    is the worker's default (failover / 10)."""
    endpoint = cluster.endpoints[0]
    stream = "bench-worker-failover"
    create_stream(endpoint, stream, FAILOVER_SHARDS)
    fleet = WorkerFleet(
        workdir / stream,
        application=f"app-{stream}",
        stream=stream,
        settings=WorkerSettings(
            failover_ms=failover_ms, take_interval_ms=take_interval_ms, poll_interval_ms=50
        ),
    )
    producer = PacedProducer(cluster.endpoints, stream, name=stream, batch_size=8)
    workers = [f"w{i + 1}" for i in range(kills + 1)]
    takeovers: list[float] = []
    take_ms = take_interval_ms
    if take_ms is None:
        take_ms = WorkerConfig(failover_ms=failover_ms).take_interval_ms
    balance_deadline_s = BALANCE_DEADLINE_S + 4 * take_ms / 1000
    takeover_deadline_s = TAKEOVER_DEADLINE_S + (failover_ms + 2 * take_ms) / 1000
    try:
        for i, worker_id in enumerate(workers):
            fleet.start(worker_id, cluster.endpoints[i % NODES])
        fleet.wait_started(workers)
        producer.start()
        for kill in range(kills):
            poll_until(
                partial(_balanced, fleet, endpoint),
                deadline_s=balance_deadline_s,
                what="workers balanced",
            )
            owned: dict[str, set[str]] = {}
            for lease in list_leases(endpoint, application=fleet.application, stream=stream):
                if lease.lease_owner is not None:
                    owned.setdefault(lease.lease_owner, set()).add(lease.lease_key)
            victim = max(sorted(owned), key=lambda w: len(owned[w]))
            killed_ns = fleet.kill(victim)
            for shard in sorted(owned[victim]):
                event = poll_until(
                    partial(taken_over, fleet, shard, after_ns=killed_ns, not_by=victim),
                    deadline_s=takeover_deadline_s,
                    what=f"{shard} processed after {victim} was killed",
                )
                assert event is not None
                takeovers.append((int(event["t_ns"]) - killed_ns) / 1e9)
            recent = ", ".join(f"{s:.2f}" for s in takeovers[-len(owned[victim]) :])
            _say(f"worker failover {kill + 1}/{kills}: killed {victim}, taken over in {recent} s")
        return WorkerFailover(
            failover_ms=failover_ms, take_interval_ms=take_ms, takeover_s=takeovers
        )
    finally:
        producer.stop()
        fleet.close()


def run(
    seconds: float, kills: int, command: str, *, failover_ms: int, take_interval_ms: int | None
) -> ConsumerReport:
    report = ConsumerReport(command=command, seconds=seconds, nproc=os.cpu_count())
    started = now_s()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-consumers-") as tmp:
        workdir = Path(tmp)
        (workdir / "cluster").mkdir()
        cluster = ClusterProcesses(workdir / "cluster", size=NODES, extra_env=PRODUCTION_LIVENESS)
        cluster.start()
        try:
            _wait_formed(cluster)
            _say("polling: end-to-end latency at two idle intervals")
            report.polling = measure_polling(cluster, workdir, seconds)
            report.fanout_skipped = fanout_unavailable()
            if report.fanout_skipped is None:
                _say("fan-out: end-to-end latency")
                try:
                    report.fanout = measure_fanout(cluster, workdir, seconds)
                except AssertionError as error:  # a bounded wait gave up: report, go on
                    report.fanout_skipped = f"the fan-out worker failed: {error}"
            _say(f"worker failover: {kills} kill -9 of a worker")
            report.failover = measure_failover(
                cluster,
                workdir,
                kills,
                failover_ms=failover_ms,
                take_interval_ms=take_interval_ms,
            )
        except BaseException:
            print(cluster.logs(), file=sys.stderr)
            raise
        finally:
            cluster.stop()
    report.wall_s = now_s() - started
    return report


# --- Output ---------------------------------------------------------------------------------


def _e2e(result: EndToEnd) -> str:
    return (
        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  max {result.max_ms:7.1f} ms"
        f"  (from sent: p50 {result.sent_p50_ms:7.1f} p99 {result.sent_p99_ms:7.1f}; "
        f"{result.records} records)"
    )


def format_report(report: ConsumerReport) -> str:
    assert report.failover is not None
    lines = [
        "",
        f"Consumer benchmark: {NODES} nodes, worker processes and the producer on one machine "
        f"(nproc={report.nproc}), {report.seconds:g} s per latency scenario, took "
        f"{report.wall_s:.0f} s",
        f"reproduce: {report.command}",
        "",
        "End-to-end latency, put accepted -> record handed to the processor (1 shard, one "
        f"record every {PUT_INTERVAL_S * 1000:.0f} ms)",
    ]
    for result in report.polling:
        ratio = result.p99_to_interval
        assert ratio is not None
        lines.append(f"  {result.name:<33} {_e2e(result)}")
        lines.append(
            f"  {'':<33} p99 / interval {ratio:4.2f}   goal about 1 (<= {POLL_RATIO_GOAL:g}): "
            f"{'ok' if ratio <= POLL_RATIO_GOAL else 'MISSED'}"
        )
    if report.fanout is not None:
        ok = report.fanout.p99_ms < FANOUT_P99_GOAL_MS
        lines.append(f"  {report.fanout.name:<33} {_e2e(report.fanout)}")
        lines.append(f"  {'':<33} goal p99 < {FANOUT_P99_GOAL_MS:g} ms: {'ok' if ok else 'MISSED'}")
    else:
        lines.append(f"  enhanced fan-out: not measured: {report.fanout_skipped}")
    failover = report.failover
    worst = max(failover.takeover_s)
    lines += [
        "",
        f"Worker failover: kill -9 of a worker -> its shard's next batch handed to another "
        f"worker (failover {failover.failover_ms} ms, take interval {failover.take_interval_ms} "
        f"ms; {len(failover.takeover_s)} shards taken over)",
        f"  p50 {failover.quantile(50):5.2f} s  p99 {failover.quantile(99):5.2f} s  "
        f"max {worst:5.2f} s   max / failover time {worst * 1000 / failover.failover_ms:4.2f}",
        "  each: " + ", ".join(f"{s:.2f}" for s in failover.takeover_s),
    ]
    if (report.nproc or 1) < 6:
        lines.append(
            f"note: {report.nproc} CPUs run three nodes, the workers and the producer; latency "
            "includes that contention"
        )
    return "\n".join(lines)


def report_json(report: ConsumerReport) -> dict[str, Any]:
    def e2e(result: EndToEnd) -> dict[str, Any]:
        return {**asdict(result), "p99_to_interval": result.p99_to_interval}

    return {
        "command": report.command,
        "nproc": report.nproc,
        "seconds_per_scenario": report.seconds,
        "wall_s": report.wall_s,
        "polling": [e2e(result) for result in report.polling],
        "fanout": e2e(report.fanout) if report.fanout else None,
        "fanout_skipped": report.fanout_skipped,
        "worker_failover": {
            **asdict(report.failover),
            "p50_s": report.failover.quantile(50),
            "p99_s": report.failover.quantile(99),
        }
        if report.failover
        else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench --only consumers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="per latency scenario")
    parser.add_argument("--kills", type=int, default=3, help="worker kills timed (default 3)")
    parser.add_argument(
        "--failover-ms", type=int, default=FAILOVER_MS, help="the workers' failover time"
    )
    parser.add_argument(
        "--take-interval-ms",
        type=int,
        default=TAKE_INTERVAL_MS,
        help="the workers' take interval (0: the worker's default, failover / 10)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or not 1 <= args.kills <= 5:
        parser.error("--seconds must be > 0 and --kills in 1..5")
    if args.failover_ms < 1_000 or args.take_interval_ms < 0:
        parser.error("--failover-ms must be >= 1000 and --take-interval-ms >= 0")
    command = shlex.join(["scripts/bench", "--only", "consumers", *(argv or [])])
    report = run(
        args.seconds,
        args.kills,
        command,
        failover_ms=args.failover_ms,
        take_interval_ms=args.take_interval_ms or None,
    )
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report_json(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
