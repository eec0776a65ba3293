"""Worker processes against a cluster, a paced producer, and the checks over their journals.

Shared by tests/consumers/test_worker_processes.py and benchmarks/consumers.py. A `WorkerFleet`
starts `tests.consumers.worker_process` children (one journal file each), kills them (SIGKILL)
or stops them (SIGTERM: graceful shutdown); `read_journals` merges the journals into one list
ordered by CLOCK_MONOTONIC (one clock for every process of the machine). The checks are pure
functions over those events, so a failing one names the shard, the counters and the workers.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from broker.client.grpc_client import ShoalClient
from broker.client.leases import GrpcLeaseClient
from broker.consumers.leases import Lease
from broker.errors import ShoalError
from tests.support import REPO

Event = dict[str, Any]

STOP_DEADLINE_S = 30.0  # a graceful shutdown: checkpoints and releases, then exit
STARTED_DEADLINE_S = 30.0  # a worker process's interpreter start and imports, on a busy machine
POLL_INTERVAL_S = 0.2
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """The WorkerConfig knobs a worker process gets (worker_process's flags)."""

    failover_ms: int = 3_000
    take_interval_ms: int | None = 500
    poll_interval_ms: int = 50
    shard_sync_interval_ms: int = 1_000
    parent_poll_interval_ms: int = 200
    retrieval: str = "polling"

    def arguments(self) -> list[str]:
        arguments = [
            f"--failover-ms={self.failover_ms}",
            f"--poll-interval-ms={self.poll_interval_ms}",
            f"--shard-sync-interval-ms={self.shard_sync_interval_ms}",
            f"--parent-poll-interval-ms={self.parent_poll_interval_ms}",
            f"--retrieval={self.retrieval}",
        ]
        if self.take_interval_ms is not None:
            arguments.append(f"--take-interval-ms={self.take_interval_ms}")
        return arguments


class WorkerFleet:
    """Worker processes of one application on one stream, each with its journal in
    `directory`. Close it (kills whatever still runs)."""

    def __init__(
        self,
        directory: Path,
        *,
        application: str,
        stream: str,
        settings: WorkerSettings | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.application = application
        self.stream = stream
        self.settings = settings or WorkerSettings()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.killed_ns: dict[str, int] = {}

    def journal_path(self, worker_id: str) -> Path:
        return self.directory / f"{worker_id}.jsonl"

    def log_path(self, worker_id: str) -> Path:
        return self.directory / f"{worker_id}.log"

    @property
    def live(self) -> set[str]:
        return set(self.processes)

    def start(self, worker_id: str, endpoint: str) -> None:
        assert worker_id not in self.processes
        command = [
            sys.executable,
            "-m",
            "tests.consumers.worker_process",
            f"--endpoint={endpoint}",
            f"--stream={self.stream}",
            f"--application={self.application}",
            f"--worker-id={worker_id}",
            f"--journal={self.journal_path(worker_id)}",
            *self.settings.arguments(),
        ]
        with self.log_path(worker_id).open("ab") as log:
            self.processes[worker_id] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )

    def wait_started(self, worker_ids: Iterable[str]) -> None:
        for worker_id in worker_ids:
            poll_until(
                partial(self._started, worker_id),
                deadline_s=STARTED_DEADLINE_S,
                what=f"worker {worker_id} started",
            )

    def _started(self, worker_id: str) -> bool:
        process = self.processes[worker_id]
        assert process.poll() is None, f"{worker_id} exited: {self.logs()}"
        return any(e["ev"] == "started" for e in read_journal(self.journal_path(worker_id)))

    def kill(self, worker_id: str) -> int:
        """kill -9; returns the CLOCK_MONOTONIC nanoseconds of the kill."""
        process = self.processes.pop(worker_id)
        killed_ns = time.monotonic_ns()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=STOP_DEADLINE_S)
        self.killed_ns[worker_id] = killed_ns
        return killed_ns

    def stop(self, worker_id: str) -> int:
        """SIGTERM (graceful shutdown); returns the exit status."""
        process = self.processes.pop(worker_id)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_DEADLINE_S)
            raise AssertionError(f"{worker_id} did not stop within {STOP_DEADLINE_S} s") from None

    def close(self) -> None:
        for worker_id in list(self.processes):
            self.kill(worker_id)

    def events(self) -> list[Event]:
        return read_journals(sorted(self.directory.glob("*.jsonl")))

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.directory.glob("*.log"))
        )


def poll_until(predicate: Callable[[], T], *, deadline_s: float, what: str) -> T:
    """`tests.support.wait_until` at a gentler pace (every 200 ms): these predicates read
    journals or list leases through a node, on a machine the cluster and workers share."""
    give_up = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def read_journal(path: Path) -> list[Event]:
    """A journal's complete lines (a line being written right now is left for later)."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]


def read_journals(paths: Iterable[Path]) -> list[Event]:
    events = [event for path in paths for event in read_journal(path)]
    events.sort(key=lambda event: int(event["t_ns"]))
    return events


def list_leases(endpoint: str, *, application: str, stream: str) -> tuple[Lease, ...]:
    async def listing() -> tuple[Lease, ...]:
        async with GrpcLeaseClient(endpoint) as client:
            return await client.list_leases(application=application, stream_name=stream)

    return asyncio.run(listing())


# --- A paced producer -----------------------------------------------------------------------


@dataclass
class PacedProducer:
    """A thread putting `batch_size` uniquely named records every `interval_s` through the
    given endpoints (the next one after a failure), retrying a failed record up to `attempts`
    times. Remembers each acknowledged record's position and the CLOCK_MONOTONIC nanoseconds
    its put was sent and accepted (the response arrived)."""

    endpoints: Sequence[str]
    stream: str
    name: str = "p"
    batch_size: int = 10
    interval_s: float = 0.05
    attempts: int = 20
    acknowledged: dict[str, tuple[str, str]] = field(default_factory=dict)
    sent_ns: dict[str, int] = field(default_factory=dict)
    accepted_ns: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PacedProducer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop putting and wait for the thread (idempotent; a no-op if never started)."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        clients = [ShoalClient(e, timeout_s=15) for e in self.endpoints]
        target = 0
        batch = 0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                pending = [f"{self.name}:{batch}:{i}" for i in range(self.batch_size)]
                batch += 1
                for _ in range(self.attempts):
                    if not pending:
                        break
                    target = self._put(clients, target, pending)
                    if pending and self._stop.wait(0.05):
                        break
                self.lost.extend(pending)
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at, time.monotonic() - self.interval_s)
        finally:
            for client in clients:
                client.close()

    def _put(self, clients: Sequence[ShoalClient], target: int, pending: list[str]) -> int:
        """One PutRecords of `pending`; removes what was acknowledged; returns the client
        to use next."""
        sent = time.monotonic_ns()
        try:
            response = clients[target].call(
                "PutRecords",
                {
                    "StreamName": self.stream,
                    "Records": [{"PartitionKey": data, "Data": data.encode()} for data in pending],
                },
            )
        except ShoalError:
            return (target + 1) % len(clients)
        accepted = time.monotonic_ns()
        retry = []
        for data, result in zip(pending, response["Records"], strict=True):
            if "SequenceNumber" in result:
                self.acknowledged[data] = (result["ShardId"], result["SequenceNumber"])
                self.sent_ns[data] = sent
                self.accepted_ns[data] = accepted
            else:
                retry.append(data)
        pending[:] = retry
        return target


# --- Reading the journals -------------------------------------------------------------------


def first_deliveries(events: Iterable[Event]) -> dict[str, tuple[int, str, str]]:
    """data -> (t_ns, worker, shard) of its first delivery to a processor."""
    first: dict[str, tuple[int, str, str]] = {}
    for event in events:
        if event["ev"] == "records":
            for data, _, _ in event["records"]:
                first.setdefault(data, (int(event["t_ns"]), event["worker"], event["shard"]))
    return first


def delivered_count(events: Iterable[Event]) -> int:
    return sum(len(e["records"]) for e in events if e["ev"] == "records")


def taken_over(fleet: WorkerFleet, shard: str, *, after_ns: int, not_by: str) -> Event | None:
    """`first_delivery_after` over the fleet's journals as they are now."""
    return first_delivery_after(fleet.events(), shard=shard, after_ns=after_ns, not_by=not_by)


def first_delivery_after(
    events: Iterable[Event], *, shard: str, after_ns: int, not_by: str
) -> Event | None:
    """The first batch of `shard` handed to a processor of another worker than `not_by`
    after `after_ns`."""
    for event in events:
        if (
            event["ev"] == "records"
            and event["shard"] == shard
            and event["worker"] != not_by
            and int(event["t_ns"]) > after_ns
        ):
            return event
    return None


# --- The invariants -------------------------------------------------------------------------


def check_one_owner_per_lease_period(events: Iterable[Event]) -> dict[str, int]:
    """No two workers both successfully checkpoint a shard in one lease period.

    A lease period starts with a successful take or steal (its resulting counter) and lasts
    until the next one. Every successful checkpoint, renew and release names the counter it
    expected; the period containing that counter must be the caller's own. Counters moved by
    take, steal, renew and release are compare-and-sets, so each value is reached once.
    Returns, per shard, how many periods had successful checkpoints (so a caller can check
    that handovers were exercised)."""
    ops: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event["ev"] == "lease" and event["ok"] is True:
            ops[event["shard"]].append(event)
    periods_checkpointed: dict[str, int] = {}
    for shard, shard_ops in ops.items():
        moved = [e for e in shard_ops if e["op"] != "checkpoint"]
        counters = [int(e["counter"]) for e in moved]
        assert len(counters) == len(set(counters)), f"{shard}: a counter value reached twice"
        starts = sorted((int(e["counter"]), e["worker"]) for e in moved if e["op"] in _TAKES)
        start_counters = [counter for counter, _ in starts]
        checkpointed: set[int] = set()
        for event in shard_ops:
            if event["op"] in _TAKES:
                continue
            expected = int(event["expected_counter"])
            at = bisect.bisect_right(start_counters, expected) - 1
            assert at >= 0, f"{shard}: {event['op']} at counter {expected} before any take"
            counter, owner = starts[at]
            assert owner == event["worker"], (
                f"{shard}: {event['worker']} {event['op']} at counter {expected} succeeded in "
                f"the lease period {owner} started at counter {counter}"
            )
            if event["op"] == "checkpoint":
                checkpointed.add(counter)
        periods_checkpointed[shard] = len(checkpointed)
    return periods_checkpointed


_TAKES = ("take", "steal")


def check_all_delivered(events: Iterable[Event], stored: Iterable[str]) -> None:
    """Every record in `stored` was handed to a processor (at least once)."""
    delivered = set(first_deliveries(events))
    missing = sorted(set(stored) - delivered)
    assert not missing, f"{len(missing)} records never delivered: {missing[:5]}"


def check_parents_before_children(
    events: Sequence[Event],
    *,
    lineage: Mapping[str, Sequence[str]],
    stored: Mapping[str, Iterable[str]],
) -> None:
    """No record of a child shard is delivered before every record of each of its parents
    (`stored`: shard -> the data of its records) was delivered at least once."""
    first = first_deliveries(events)
    for child, parents in lineage.items():
        child_times = [
            int(e["t_ns"]) for e in events if e["ev"] == "records" and e["shard"] == child
        ]
        assert child_times, f"{child} was never consumed"
        child_first = min(child_times)
        for parent in parents:
            for data in stored[parent]:
                assert data in first, f"{parent}'s record {data} was never delivered"
                assert first[data][0] < child_first, (
                    f"{child}'s first record came before {parent}'s record {data}"
                )


def balanced(leases: Sequence[Lease], live: set[str]) -> bool:
    """Some unfinished lease exists (before the first shard sync there are none), every one
    is held by a live worker, and every live worker holds within one lease of the average."""
    workable = [lease for lease in leases if not lease.checkpoint.is_shard_end]
    if not live or not workable or any(lease.lease_owner not in live for lease in workable):
        return False
    counts = dict.fromkeys(live, 0)
    for lease in workable:
        assert lease.lease_owner is not None
        counts[lease.lease_owner] += 1
    average = len(workable) / len(live)
    return all(abs(count - average) < 1 for count in counts.values())
