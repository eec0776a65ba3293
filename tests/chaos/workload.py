"""The chaos workload: producers of uniquely identifiable records, the read-back of every shard
through every node, and `run_chaos` tying them to the nemesis and the checker.

Each record's data is `<producer>:<counter>` (unique for the run) and its partition key
`<producer>/k<counter mod keys>`, so the checker can tell records apart and check order per
producer and key. A producer sends PutRecords calls one after another (so an acknowledged
call happened before the next one was sent) through one node, moving to the next node after a
failed call; a record not acknowledged (error, timeout, or a failed entry) is retried in the
next call with the same data, and every call carrying it is counted (an unknown outcome may
land it once per attempt).

`python -m tests.chaos.workload --seconds N --seed S` (what `scripts/chaos` runs) starts a
3-node cluster in a temporary directory, runs it, prints the fault schedule and the anomaly
report, and exits 1 on any anomaly.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from broker.api.internal.v1 import internal_pb2 as pb
from broker.client.grpc_client import ShoalClient
from broker.errors import ShoalError
from broker.streams.sequence_numbers import decode_sequence_number
from tests.chaos import disks
from tests.chaos.checker import Ack, Report, SourceRead, WriteHistory, check
from tests.chaos.nemesis import Event, Nemesis, Plan, kinds
from tests.chaos.network import Network, unusable_reason
from tests.cluster.helpers import (
    cluster_status,
    formed,
    replica_status,
    wait_applied_everywhere,
    wait_formed,
)
from tests.support import ClusterProcesses, wait_until

NODE_SERVICE = "broker.api.internal.v1.NodeService"
ADMIN_SERVICE = "broker.api.internal.v1.ClusterAdminService"
# Each node's data directory on its own tmpfs when disks can be filled; the nodes refuse new
# records below 64 MiB free, and FILL leaves 16 MiB.
DISK_BYTES = 512 << 20
DISK_FREE_MIN_BYTES = 64 << 20


def chaos_env(*, fills: bool) -> dict[str, str]:
    """Node settings of a chaos cluster: a scrubber fast enough to find a corruption within
    the run, and with per-node file systems a free-space minimum the nemesis can cross."""
    env = {"SHOAL_SCRUB_BYTES_PER_SECOND": str(32 << 20), "SHOAL_SCRUB_PASS_INTERVAL_MS": "1000"}
    if fills:
        env |= {
            "SHOAL_DISK_FREE_BYTES_MIN": str(DISK_FREE_MIN_BYTES),
            "SHOAL_DISK_CHECK_INTERVAL_MS": "100",
        }
    return env


CALL_TIMEOUT_S = 5.0  # a paused node holds a call this long, then the producer moves on
READ_TIMEOUT_S = 30.0
PAGES_MAX = 100_000  # bounds every read loop
CONVERGE_DEADLINE_S = 90.0
STREAM_ACTIVE_DEADLINE_S = 60.0
PRODUCER_STOP_DEADLINE_S = 60.0
RESUME_DEADLINE_S = 30.0


def offset_of(sequence_number: str) -> int:
    return decode_sequence_number(sequence_number).offset


# --- Producers --------------------------------------------------------------------------------


@dataclass
class ChaosProducer:
    endpoints: Sequence[str]
    stream: str
    name: str
    batch_size: int = 10
    keys: int = 4
    history: WriteHistory = field(default_factory=WriteHistory)
    calls: int = 0
    failed_calls: int = 0
    last_error: str = ""
    ack_times: list[float] = field(default_factory=list)  # monotonic, one per acknowledgement
    _counter: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self, first_endpoint: int = 0) -> ChaosProducer:
        self._thread = threading.Thread(
            target=self._run, args=(first_endpoint,), name=f"producer-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=PRODUCER_STOP_DEADLINE_S)
        assert not self._thread.is_alive(), f"producer {self.name} did not stop"
        if self._error is not None:
            raise RuntimeError(f"producer {self.name} crashed") from self._error

    def _new_record(self) -> tuple[bytes, str]:
        counter = self._counter
        self._counter += 1
        return f"{self.name}:{counter}".encode(), f"{self.name}/k{counter % self.keys}"

    def _run(self, target: int) -> None:
        clients = [ShoalClient(e, timeout_s=CALL_TIMEOUT_S) for e in self.endpoints]
        pending: list[tuple[bytes, str]] = []
        try:
            while not self._stop.is_set():
                while len(pending) < self.batch_size:
                    pending.append(self._new_record())
                call = self.calls
                self.calls += 1
                for data, _ in pending:
                    self.history.attempts[data] = self.history.attempts.get(data, 0) + 1
                try:
                    response = clients[target].call(
                        "PutRecords",
                        {
                            "StreamName": self.stream,
                            "Records": [{"PartitionKey": k, "Data": d} for d, k in pending],
                        },
                    )
                except (ShoalError, grpc.RpcError) as exc:
                    self.last_error = f"{time.monotonic():.1f} {exc!r}"[:200]
                    self.failed_calls += 1
                    target = (target + 1) % len(clients)
                    self._stop.wait(0.05)  # a client's backoff, as an SDK's
                    continue
                retry: list[tuple[bytes, str]] = []
                now = time.monotonic()
                for position, ((data, key), result) in enumerate(
                    zip(pending, response["Records"], strict=True)
                ):
                    if "SequenceNumber" in result:
                        self.history.acked[data] = Ack(
                            shard_id=result["ShardId"],
                            offset=offset_of(result["SequenceNumber"]),
                            producer=self.name,
                            partition_key=key,
                            call=call,
                            position=position,
                        )
                        self.ack_times.append(now)
                    else:
                        retry.append((data, key))
                        self.last_error = f"{now:.1f} {result.get('ErrorCode')}"
                if retry:
                    self.failed_calls += 1
                pending = retry
        except BaseException as exc:
            self._error = exc
        finally:
            for client in clients:
                client.close()


# --- Reading back -----------------------------------------------------------------------------


def _node_read(endpoint: str, shard_uid: int, start: int) -> pb.ShardReadResponse:
    with grpc.insecure_channel(endpoint) as channel:
        call: Any = channel.unary_unary(
            f"/{NODE_SERVICE}/ShardRead",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ShardReadResponse.FromString,
        )
        response: pb.ShardReadResponse = call(
            pb.ShardReadRequest(
                shard_uid=shard_uid,
                start_offset=start,
                records_max=10_000,
                bytes_max=10 * 1024 * 1024,
                throttle_kind=0,
            ),
            timeout=READ_TIMEOUT_S,
        )
        return response


def read_replica(endpoint: str, node_id: str, shard_id: str, shard_uid: int) -> SourceRead:
    """A node's own replica of a shard, from its log start to its high watermark."""
    records: list[tuple[int, bytes]] = []
    start = 0
    end = 0
    for _ in range(PAGES_MAX):
        response = _node_read(endpoint, shard_uid, start)
        end = response.readable_end
        if start == 0 and response.log_start > 0:
            start = response.log_start
        records += [(r.offset, r.data) for r in response.records]
        next_offset = max(response.next_offset, start)
        if next_offset >= end or (not response.records and next_offset == start):
            break
        start = next_offset
    return SourceRead(
        source=f"replica {node_id}",
        shard_id=shard_id,
        records=tuple(records),
        replica=True,
        end=end,
    )


def read_replica_repaired(endpoint: str, node_id: str, shard_id: str, shard_uid: int) -> SourceRead:
    """`read_replica`, waiting (until CONVERGE_DEADLINE_S) for the repair of a damaged range the
    read itself found. A block corrupted while its node ran stays latent until something
    reads it, and this full read of every replica is often the first: the node refuses to
    serve it (FAILED_PRECONDITION, DAMAGED) and repairs it from another replica. A range that
    stays damaged past the deadline is reported unavailable."""
    give_up = time.monotonic() + CONVERGE_DEADLINE_S
    while True:
        try:
            return read_replica(endpoint, node_id, shard_id, shard_uid)
        except grpc.RpcError as exc:
            damaged = exc.code() is grpc.StatusCode.FAILED_PRECONDITION and (
                "DAMAGED" in (exc.details() or "")
            )
            if not damaged or time.monotonic() > give_up:
                raise
            time.sleep(0.2)  # the repair loop fetches the range from another replica


def read_gateway(endpoint: str, node_id: str, stream: str) -> list[SourceRead]:
    """Every shard of the stream through a node's public door, GetRecords from TRIM_HORIZON."""
    reads = []
    with ShoalClient(endpoint, timeout_s=READ_TIMEOUT_S) as client:
        shards = client.call("ListShards", {"StreamName": stream})["Shards"]
        for shard in shards:
            token = client.call(
                "GetShardIterator",
                {
                    "StreamName": stream,
                    "ShardId": shard["ShardId"],
                    "ShardIteratorType": "TRIM_HORIZON",
                },
            )["ShardIterator"]
            records: list[tuple[int, bytes]] = []
            for _ in range(PAGES_MAX):
                response = client.call("GetRecords", {"ShardIterator": token, "Limit": 10_000})
                records += [
                    (offset_of(r["SequenceNumber"]), r["Data"]) for r in response["Records"]
                ]
                token = response.get("NextShardIterator")
                if token is None or (
                    not response["Records"] and response["MillisBehindLatest"] == 0
                ):
                    break
            reads.append(
                SourceRead(
                    source=f"gateway {node_id}", shard_id=shard["ShardId"], records=tuple(records)
                )
            )
    return reads


def replicas_converged(cluster: ClusterProcesses, stream_uids: set[int]) -> bool:
    """Every replica of every shard reports the same log end and high watermark, and none a
    damaged range or a lost disk it is still copying back."""
    views: dict[int, set[tuple[int, int]]] = {}
    for node in cluster.nodes:
        try:
            replicas = replica_status(node.endpoint).replicas
        except grpc.RpcError:
            return False
        for state in replicas:
            if state.damaged or state.recovering:
                return False
            if state.shard_uid in stream_uids:
                views.setdefault(state.shard_uid, set()).add((state.log_end, state.high_watermark))
    return bool(views) and all(len(v) == 1 for v in views.values())


def _metadata_digest(endpoint: str, applied_commands: int | None) -> pb.MetadataDigestResponse:
    with grpc.insecure_channel(endpoint) as channel:
        call: Any = channel.unary_unary(
            f"/{ADMIN_SERVICE}/MetadataDigest",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.MetadataDigestResponse.FromString,
        )
        request = pb.MetadataDigestRequest()
        if applied_commands is not None:
            request.applied_commands = applied_commands
        response: pb.MetadataDigestResponse = call(request, timeout=READ_TIMEOUT_S)
        return response


def metadata_divergence(cluster: ClusterProcesses, *, deadline_s: float = 30.0) -> str | None:
    """Compares every node's metadata image after the same number of applied commands (the
    highest count all of them still keep); a description of a difference, else None. Issue
    20: pysyncobj's "truncating already-applied log entries" warning made this a question."""
    give_up = time.monotonic() + deadline_s
    last = "no common applied count"
    while time.monotonic() < give_up:
        try:
            counts = [_metadata_digest(n.endpoint, None).applied_commands for n in cluster.nodes]
            target = min(counts)
            answers = [_metadata_digest(n.endpoint, target) for n in cluster.nodes]
        except grpc.RpcError as exc:
            last = f"unreachable: {exc.code()}"
            time.sleep(0.2)  # a node restarting: ask again
            continue
        if all(a.found for a in answers):
            digests = {a.sha256 for a in answers}
            if len(digests) == 1:
                return None
            return "after {} commands: {}".format(
                target,
                ", ".join(
                    f"node-{i + 1} {a.sha256.hex()[:12]} (raft applied {a.raft_last_applied})"
                    for i, a in enumerate(answers)
                ),
            )
        last = f"not every node keeps the image after {target} commands"
        time.sleep(0.2)  # nodes apply at their own pace: ask again
    return f"could not compare: {last}"


def read_everything(cluster: ClusterProcesses, stream: str) -> tuple[list[SourceRead], list[str]]:
    reads: list[SourceRead] = []
    unavailable: list[str] = []
    status = cluster_status(cluster.endpoints[0])
    shards = [
        (s.shard_id, s.shard_uid, set(s.replicas)) for s in status.shards if s.stream_name == stream
    ]
    for i, node in enumerate(cluster.nodes):
        node_id = f"node-{i + 1}"
        try:
            reads += read_gateway(node.endpoint, node_id, stream)
        except (ShoalError, grpc.RpcError) as exc:
            unavailable.append(f"gateway {node_id}: {exc!r}"[:300])
        for shard_id, shard_uid, replicas in shards:
            if node_id not in replicas:
                continue
            try:
                reads.append(read_replica_repaired(node.endpoint, node_id, shard_id, shard_uid))
            except grpc.RpcError as exc:
                unavailable.append(f"replica {node_id} {shard_id}: {exc!r}"[:300])
    return reads, unavailable


def poll_until(predicate: Callable[[], bool], deadline_s: float) -> bool:
    """Like `wait_until`, but answers False at the deadline instead of failing."""
    try:
        wait_until(predicate, deadline_s=deadline_s, what="")
    except AssertionError:
        return False
    return True


def diagnostics(cluster: ClusterProcesses, stream: str) -> list[str]:
    """Each node's view of the stream's shards and of its own replicas, for a report."""
    lines: list[str] = []
    for i, node in enumerate(cluster.nodes):
        name = f"node-{i + 1}"
        try:
            status = cluster_status(node.endpoint)
            replicas = replica_status(node.endpoint).replicas
        except grpc.RpcError as exc:
            lines.append(f"{name}: no answer ({exc.code()})")
            continue
        nodes = " ".join(f"{n.node_id}={n.state}" for n in status.nodes)
        lines.append(f"{name} sees controller={status.controller or '-'} nodes: {nodes}")
        uids = set()
        for s in status.shards:
            if s.stream_name == stream:
                uids.add(s.shard_uid)
                lines.append(
                    f"  image {s.shard_id} uid {s.shard_uid}: leader={s.leader or '-'} "
                    f"epoch={s.epoch} replicas={','.join(s.replicas)} state={s.state}"
                )
        lines.extend(
            f"  replica uid {r.shard_uid}: role={r.role} epoch={r.epoch} "
            f"leader={r.leader or '-'} promised={r.promised_epoch} last_epoch={r.last_epoch} "
            f"log=[{r.log_start},{r.log_end}) hw={r.high_watermark}"
            for r in replicas
            if r.shard_uid in uids
        )
    return lines


# --- One run ----------------------------------------------------------------------------------


@dataclass
class ChaosResult:
    seed: int
    seconds: float
    report: Report
    events: list[Event]
    faults: int
    calls: int
    failed_calls: int
    acks_during_faults: int
    converged: bool
    diagnostics: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [
            f"chaos run: seed {self.seed}, {self.seconds:g} s of faults, {self.faults} faults, "
            f"{self.calls} PutRecords calls ({self.failed_calls} failed or partly failed), "
            f"{self.acks_during_faults} records acknowledged while the nemesis ran",
            *(f"  [{e.at_s:7.2f} s] {e.what}" for e in self.events),
            self.report.format(),
            *(["cluster state after the run:"] if self.diagnostics else []),
            *self.diagnostics,
            f"replay: scripts/chaos --seconds {self.seconds:g} --seed {self.seed}",
        ]
        return "\n".join(lines)


def create_stream(endpoint: str, stream: str, shards: int) -> None:
    with ShoalClient(endpoint) as client:
        client.call("CreateStream", {"StreamName": stream, "ShardCount": shards})
        wait_until(
            lambda: (
                client.call("DescribeStreamSummary", {"StreamName": stream})[
                    "StreamDescriptionSummary"
                ]["StreamStatus"]
                == "ACTIVE"
            ),
            deadline_s=STREAM_ACTIVE_DEADLINE_S,
            what="stream ACTIVE",
        )


def run_chaos(
    cluster: ClusterProcesses,
    *,
    seconds: float,
    seed: int,
    producers: int = 3,
    shards: int = 4,
    plan: Plan | None = None,
    log: Callable[[str], None] | None = None,
    network: Network | None = None,
    disk_faults: bool = False,
    fills: bool = False,
) -> ChaosResult:
    """The cluster is started and formed; returns the checker's verdict on one run. With a
    `network` (an opened `Network` of this cluster) the default plan partitions nodes too;
    `disk_faults` adds corruption and wiped disks, `fills` full disks (each node on its own
    `disks.DiskMounts`)."""
    stream = f"chaos-{seed}"
    create_stream(cluster.endpoints[0], stream, shards)
    wait_applied_everywhere(cluster.endpoints)  # producers start on every node
    workers = [
        ChaosProducer(cluster.endpoints, stream, name=f"p{i}").start(first_endpoint=i)
        for i in range(producers)
    ]
    plan = plan or Plan(
        seed=seed, kinds=kinds(partitions=network is not None, disks=disk_faults, fills=fills)
    )
    nemesis = Nemesis(cluster, plan, stream=stream, seconds=seconds, log=log, network=network)
    try:
        wait_until(
            lambda: all(len(w.history.acked) > 0 for w in workers),
            deadline_s=60,
            what="every producer's first acknowledgement",
        )
        started = time.monotonic()
        nemesis.start()
        nemesis.wait()
        ended = time.monotonic()
        # Writes on the healed cluster, so the end of the run is checked too.
        resumed = poll_until(
            lambda: all(w.ack_times and w.ack_times[-1] > ended + 1 for w in workers),
            RESUME_DEADLINE_S,
        )
    finally:
        nemesis.stop()
        for worker in workers:
            worker.stop()
    history = WriteHistory()
    for worker in workers:
        history.merge(worker.history)
    acks_during = sum(sum(1 for t in w.ack_times if started <= t <= ended) for w in workers)
    size = len(cluster.nodes)
    healed = poll_until(
        lambda: all(formed(endpoint, size) for endpoint in cluster.endpoints),
        CONVERGE_DEADLINE_S,
    )
    uids = {
        s.shard_uid for s in cluster_status(cluster.endpoints[0]).shards if s.stream_name == stream
    }
    converged = healed and poll_until(
        partial(replicas_converged, cluster, uids), CONVERGE_DEADLINE_S
    )
    state = [] if resumed and converged else diagnostics(cluster, stream)
    reads, unavailable = read_everything(cluster, stream)
    if not resumed:
        unavailable.append(
            f"writes had not resumed {RESUME_DEADLINE_S:g} s after healing (at {ended:.1f}): "
            + "; ".join(
                f"{w.name} last ack {w.ack_times[-1] - ended:+.1f} s after the faults, "
                f"last error {w.last_error}"
                for w in workers
            )
        )
    report = check(history, reads, unavailable=unavailable)
    diverged = metadata_divergence(cluster)
    if diverged is not None:
        report.add("metadata-diverged", diverged)
    if not healed:
        report.add("unavailable", f"not every node ACTIVE {CONVERGE_DEADLINE_S:g} s after healing")
    if not converged:
        report.notes.append(f"replicas had not converged {CONVERGE_DEADLINE_S:g} s after healing")
    return ChaosResult(
        seed=seed,
        seconds=seconds,
        report=report,
        events=nemesis.events,
        faults=nemesis.faults_done,
        calls=sum(w.calls for w in workers),
        failed_calls=sum(w.failed_calls for w in workers),
        acks_during_faults=acks_during,
        converged=converged,
        diagnostics=state,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="time under faults")
    parser.add_argument("--seed", type=int, help="replays a run's fault schedule (default: random)")
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="keep node data and logs under this directory")
    parser.add_argument(
        "--no-partitions",
        action="store_true",
        help="no network partitions (default: on where iptables can make them; needs root)",
    )
    parser.add_argument(
        "--no-disk-faults",
        action="store_true",
        help="no corrupted, wiped or filled disks (default: on; filling needs root)",
    )
    args = parser.parse_args(argv)
    why_not = "--no-partitions" if args.no_partitions else unusable_reason()
    print(f"partitions: {'on' if why_not is None else f'off ({why_not})'}", flush=True)
    disk_faults = not args.no_disk_faults
    no_fills = "--no-disk-faults" if args.no_disk_faults else disks.unusable_reason()
    print(
        f"disk faults: {'on' if disk_faults else 'off'}; full disks: "
        f"{'on' if no_fills is None else f'off ({no_fills})'}",
        flush=True,
    )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"seed {seed}", flush=True)

    def say(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="shoal-chaos-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        cluster = ClusterProcesses(
            base,
            distinct_hosts=why_not is None,
            extra_env=chaos_env(fills=no_fills is None),
        )
        with contextlib.ExitStack() as stack:
            network: Network | None = None
            if why_not is None:
                network = stack.enter_context(Network(cluster))
            if no_fills is None:
                stack.enter_context(disks.DiskMounts(cluster, size_bytes=DISK_BYTES))
            cluster.start()
            stack.callback(cluster.stop)  # before the network closes: rules go last
            try:
                wait_formed(cluster)
                result = run_chaos(
                    cluster,
                    seconds=args.seconds,
                    seed=seed,
                    producers=args.producers,
                    shards=args.shards,
                    log=say,
                    network=network,
                    disk_faults=disk_faults,
                    fills=no_fills is None,
                )
            except BaseException:
                print(cluster.logs(), file=sys.stderr)
                raise
        print(result.format())
        if not result.report.ok:
            print(f"node logs: {base}" if args.keep else "rerun with --keep DIR to keep node logs")
    return 0 if result.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
