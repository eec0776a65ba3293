"""`scripts/bench`: Shoal's write and read speed as ratios to raw ceilings measured in the same run.

What one run measures (each for `--seconds`, after a warm-up):

- PutRecords throughput: 500 records of 1 KiB per call, random partition keys, for 1 and 4
  shards x 1 and 4 concurrent producers (one stream per scenario). Records/s, MiB/s of record
  data, and for 4 producers each producer's share (slowest / fastest: does one starve?).
- PutRecord latency: one producer, one 1 KiB record per call, sequential; p50 and p99.
- GetRecords drain: every shard of the 4-shard, 4-producer stream from TRIM_HORIZON with
  Limit 10000; records/s and MiB/s. A drain lasts about a second, so it runs DRAIN_RUNS times,
  each right before its ceiling (the same number of pages from the do-nothing server): the
  better run of each is the figure, as for the storage ceilings, and every run is printed.

And the ceilings of the same stack, in the same run, on the same machine:

- storage: a rocksdict `WriteBatch` of 500 entries shaped like Shoal's (16-byte key, value =
  19-byte header + partition key + 1 KiB), `write(sync=False)` then `flush_wal(sync=True)` per
  batch, from one thread, in a RocksDB opened with the node's options (`db_options`: the same
  WAL work per sync); and reading those entries back with a raw iterator. Measured before and
  after the Shoal scenarios in a scratch DB that is then deleted (so its compactions do not
  slow the node); the better run is the ceiling, and both are printed.
- transport: a gRPC server (grpc.aio, like the node) that does nothing: raw bytes in, a canned
  reply out, on the same method paths. The same producer processes send it the same serialized
  PutRecordsInput / PutRecordInput; its GetRecords returns a prebuilt 10000 x 1 KiB reply.

Every Shoal figure is printed with its ratio to the matching ceiling (same call, same producer
count) and to the slower of the two. PutRecords also gets the node's CPU per call of 500 records
(its process, every thread, from /proc/<pid>/stat over the measured span) next to the storage
ceiling's CPU per WriteBatch of 500 (this process over its timed loop): on a machine shared with
other work, wall time stretches with the load while CPU per call moves much less. The goal
from the issue: PutRecords throughput at least 50% of the slower ceiling, and 4-producer runs
where no producer starves.

Producers are separate processes (multiprocessing "spawn": gRPC is not fork-safe once a channel
exists) that pre-serialize a small pool of requests, so client-side encoding stays out of the
figures for Shoal and the ceiling alike. The node runs with its per-shard throttles lifted: this
measures what it can carry, not AWS's quotas. Every wait has a deadline and every child process
is killed on the way out.

The AWS HTTP half (boto3 PutRecords and GetRecords against the node's HTTP door, each against
a discard server on the same HTTP stack as its ceiling) is in benchmarks/aws_http.py and runs on
the same node after the gRPC half; `--only grpc|http` runs one half. At the default 5 s per
scenario the whole run takes about two minutes, the gRPC half a little over one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import queue
import random
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc

from broker import limits
from broker.api.kinesis.v1 import kinesis_pb2

if TYPE_CHECKING:
    from benchmarks.aws_http import HttpReport

REPO = Path(__file__).resolve().parent.parent

RECORD_DATA_BYTES = 1024
BATCH_RECORDS = limits.put_records_count_max  # 500
GET_RECORDS_LIMIT = limits.get_records_count_max  # 10000
PARTITION_KEY_CHARS = 16  # 64 random bits in hex: spreads evenly over any shard count
STORED_VALUE_HEADER_BYTES = 19  # broker/log/records.py: version, arrival, epoch, pk len, crc
STORED_KEY = struct.Struct(">QQ")  # broker/log/keys.py: shard uid, offset
REQUEST_POOL = 8  # distinct pre-serialized requests each producer cycles through
LATENCY_POOL = 256
SERVICE_NAME = "broker.api.kinesis.v1.KinesisService"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
    ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
]

# Deadlines: every wait in this file is bounded by one of these.
CALL_TIMEOUT_S = 30.0
NODE_START_DEADLINE_S = 60.0
STREAM_ACTIVE_DEADLINE_S = 30.0
PRODUCERS_READY_DEADLINE_S = 60.0  # spawning 4 interpreters that import grpc, on a busy box
CHILD_EXIT_DEADLINE_S = 15.0
DRAIN_DEADLINE_S = 120.0
# A drain of the 4-shard stream takes about a second: one run is at the mercy of whatever else
# the machine does in that second, and so is its ceiling's. Drains alternate with ceilings.
DRAIN_RUNS = 3

UNTHROTTLED = ("write_bytes", "write_records", "read_calls", "read_bytes")
MiB = 1024 * 1024
Kind = Literal["PutRecords", "PutRecord"]


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user and system, every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def now_s() -> float:
    """Seconds on a monotonic clock (perf_counter is CLOCK_MONOTONIC on Linux)."""
    return time.perf_counter()


# --- Requests -------------------------------------------------------------------------------


def _partition_key(rng: random.Random) -> str:
    return f"{rng.getrandbits(4 * PARTITION_KEY_CHARS):0{PARTITION_KEY_CHARS}x}"


def put_records_request(stream_name: str, rng: random.Random) -> bytes:
    request = kinesis_pb2.PutRecordsInput(stream_name=stream_name)
    for _ in range(BATCH_RECORDS):
        request.records.add(
            data=rng.randbytes(RECORD_DATA_BYTES), partition_key=_partition_key(rng)
        )
    return request.SerializeToString()


def put_record_request(stream_name: str, rng: random.Random) -> bytes:
    request = kinesis_pb2.PutRecordInput(
        stream_name=stream_name,
        data=rng.randbytes(RECORD_DATA_BYTES),
        partition_key=_partition_key(rng),
    )
    return request.SerializeToString()


def raw_stub(channel: grpc.Channel, operation: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """A stub without serializers: bytes go out and come back as they are."""
    return channel.unary_unary(f"/{SERVICE_NAME}/{operation}")


def failed_put_records(response: bytes) -> int:
    return kinesis_pb2.PutRecordsOutput.FromString(response).failed_record_count


def _failed_put_record(response: bytes) -> int:
    kinesis_pb2.PutRecordOutput.FromString(response)  # parse it, as a real client would
    return 0


# --- Producer processes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerSpec:
    index: int
    target: str
    stream_name: str
    kind: Kind
    seed: int
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerResult:
    index: int
    calls: int
    records: int  # acknowledged (sent minus failed)
    failed_records: int
    elapsed_s: float
    latencies_s: list[float]

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _produce(
    spec: ProducerSpec, events: multiprocessing.Queue[Any], go: multiprocessing.synchronize.Event
) -> ProducerResult:
    rng = random.Random(spec.seed)
    if spec.kind == "PutRecords":
        payloads = [put_records_request(spec.stream_name, rng) for _ in range(REQUEST_POOL)]
        per_call, failed_in = BATCH_RECORDS, failed_put_records
    else:
        payloads = [put_record_request(spec.stream_name, rng) for _ in range(LATENCY_POOL)]
        per_call, failed_in = 1, _failed_put_record
    with grpc.insecure_channel(spec.target, options=CHANNEL_OPTIONS) as channel:
        stub = raw_stub(channel, spec.kind)

        def send(n: int) -> int:
            return failed_in(stub(payloads[n % len(payloads)], timeout=CALL_TIMEOUT_S))

        return drive_producer(spec, send, per_call, events, go)


def drive_producer(
    spec: ProducerSpec,
    send: Callable[[int], int],
    per_call: int,
    events: multiprocessing.Queue[Any],
    go: multiprocessing.synchronize.Event,
) -> ProducerResult:
    """One producer's run: `send(n)` makes the n-th call (cycling through pre-built requests)
    and returns its failed record count; reports ready after the first call, keeps calling
    until the parent says go, then times `spec.seconds` of calls."""
    send(0)  # connects; fails fast if the path is wrong
    events.put(("ready", spec.index, None))
    # Warm-up: keep both ends hot until the parent says go (bounded by its deadline).
    give_up = now_s() + PRODUCERS_READY_DEADLINE_S + 60
    sent = 1
    while not go.is_set():
        send(sent)
        sent += 1
        if now_s() > give_up:
            raise TimeoutError("the parent never said go")
    latencies: list[float] = []
    calls = failed = 0
    start = done = now_s()
    end = start + spec.seconds
    while done < end:
        before = now_s()
        failed += send(sent)
        done = now_s()
        latencies.append(done - before)
        calls += 1
        sent += 1
    return ProducerResult(
        index=spec.index,
        calls=calls,
        records=calls * per_call - failed,
        failed_records=failed,
        elapsed_s=done - start,
        latencies_s=latencies,
    )


def producer_main(
    spec: ProducerSpec,
    events: multiprocessing.Queue[Any],
    go: multiprocessing.synchronize.Event,
    produce: Callable[..., ProducerResult] = _produce,
) -> None:
    """Entry point of one producer process; reports ready, then its result or its error.
    `produce(spec, events, go)` runs it (raw gRPC to `spec.target` by default)."""
    try:
        result = produce(spec, events, go)
    except Exception as exc:  # any failure is reported to the parent, which stops the run
        events.put(("error", spec.index, repr(exc)))
        return
    events.put(("result", spec.index, result))


def _next_event(events: multiprocessing.Queue[Any], deadline: float, what: str) -> Any:
    remaining = deadline - now_s()
    try:
        event = events.get(timeout=max(remaining, 0.01))
    except queue.Empty:
        raise TimeoutError(f"timed out waiting for {what}") from None
    if event[0] == "error":
        raise RuntimeError(f"producer {event[1]} failed: {event[2]}")
    return event


def run_producers(
    *,
    target: str,
    stream_name: str,
    kind: Kind,
    count: int,
    seconds: float,
    warmup_s: float,
    entry: Callable[..., None] = producer_main,
    on_go: Callable[[], None] | None = None,
) -> list[ProducerResult]:
    """Runs `count` producer processes against `target` at once; returns their results.

    `entry(spec, events, go)` is the processes' main: gRPC producers by default. `on_go()` is
    called as the measured span starts (after the warm-up).
    """
    context = multiprocessing.get_context("spawn")
    events: multiprocessing.Queue[Any] = context.Queue()
    go = context.Event()
    processes = [
        context.Process(
            target=entry,
            args=(
                ProducerSpec(
                    index=index,
                    target=target,
                    stream_name=stream_name,
                    kind=kind,
                    seed=zlib.crc32(f"{stream_name}/{kind}/{index}".encode()),
                    seconds=seconds,
                ),
                events,
                go,
            ),
            daemon=True,
        )
        for index in range(count)
    ]
    try:
        for process in processes:
            process.start()
        deadline = now_s() + PRODUCERS_READY_DEADLINE_S
        for _ in range(count):
            _next_event(events, deadline, f"{count} producers to connect")
        time.sleep(warmup_s)
        if on_go is not None:
            on_go()
        go.set()
        results: list[ProducerResult] = []
        deadline = now_s() + seconds + CALL_TIMEOUT_S + CHILD_EXIT_DEADLINE_S
        while len(results) < count:
            event = _next_event(events, deadline, f"{count} producers to finish")
            if event[0] == "result":
                results.append(event[2])
        for process in processes:
            process.join(timeout=CHILD_EXIT_DEADLINE_S)
        return sorted(results, key=lambda result: result.index)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=CHILD_EXIT_DEADLINE_S)
        events.close()
        events.cancel_join_thread()


# --- Child servers: the Shoal node and the do-nothing gRPC server ---------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=CHILD_EXIT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=CHILD_EXIT_DEADLINE_S)


def _list_streams_works(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = raw_stub(channel, "ListStreams")
        try:
            stub(kinesis_pb2.ListStreamsInput().SerializeToString(), timeout=2.0)
        except grpc.RpcError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class NodeAddress:
    grpc_target: str  # host:port
    http_url: str  # the AWS door: http://host:port
    metrics_url: str = ""  # the Prometheus endpoint: http://host:port/metrics
    pid: int = 0  # the node's process (its CPU time: /proc/<pid>/stat)


@contextmanager
def shoal_node(workdir: Path) -> Iterator[NodeAddress]:
    """A `python -m broker serve` child on free ports; yields its gRPC and AWS HTTP addresses."""
    grpc_port, raft_port, http_port = free_port(), free_port(), free_port()
    metrics_port = free_port()
    env = {
        **os.environ,
        "SHOAL_DATA_DIR": str(workdir / "node"),
        "SHOAL_GRPC_PORT": str(grpc_port),
        "SHOAL_RAFT_PORT": str(raft_port),
        "SHOAL_HTTP_PORT": str(http_port),
        # Not the default 9464: other nodes on the machine (a second benchmark) may hold it.
        "SHOAL_METRICS_PORT": str(metrics_port),
        "SHOAL_REPLICATION_PORT": str(free_port()),  # on, as by default; not the default port
        "SHOAL_STREAM_CREATING_MS": "0",
        "SHOAL_STREAM_UPDATING_MS": "0",
        "SHOAL_STREAM_DELETING_MS": "0",
        # This measures what the node can carry, not AWS's per-shard quotas: 0 lifts them.
        **{f"SHOAL_SHARD_{name.upper()}_PER_SECOND": "0" for name in UNTHROTTLED},
    }
    log_path = workdir / "node.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    target = f"127.0.0.1:{grpc_port}"
    try:
        deadline = now_s() + NODE_START_DEADLINE_S
        while not (_list_streams_works(target) and _listening(http_port)):
            if process.poll() is not None or now_s() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the Shoal node did not start; its log ends:\n{tail}")
            time.sleep(0.1)
        _say(f"node pid {process.pid} (attach a profiler to it while a scenario runs)")
        yield NodeAddress(
            grpc_target=target,
            http_url=f"http://127.0.0.1:{http_port}",
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            pid=process.pid,
        )
    finally:
        _stop(process)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def canned_get_records_output() -> bytes:
    """A GetRecordsOutput as large as a full Shoal page: 10000 records of 1 KiB."""
    rng = random.Random(7)
    output = kinesis_pb2.GetRecordsOutput(next_shard_iterator="x" * 200, millis_behind_latest=0)
    data = rng.randbytes(RECORD_DATA_BYTES)
    for index in range(GET_RECORDS_LIMIT):
        record = output.records.add(
            sequence_number=f"{49_000_000_000_000_000_000_000_000_000_000_000_000_000_000 + index}",
            data=data,
            partition_key=_partition_key(rng),
        )
        record.approximate_arrival_timestamp.seconds = 1_700_000_000
    return output.SerializeToString()


async def _serve_nothing(ports: multiprocessing.Queue[Any]) -> None:
    get_records_reply = canned_get_records_output()

    async def nothing(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return b""  # an empty PutRecordsOutput / PutRecordOutput; the request is never parsed

    async def page(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return get_records_reply

    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "PutRecords": grpc.unary_unary_rpc_method_handler(nothing),
        "PutRecord": grpc.unary_unary_rpc_method_handler(nothing),
        "GetRecords": grpc.unary_unary_rpc_method_handler(page),
    }
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await server.wait_for_termination()  # until the parent kills this process


def nothing_server_main(ports: multiprocessing.Queue[Any]) -> None:
    asyncio.run(_serve_nothing(ports))


@contextmanager
def nothing_server() -> Iterator[str]:
    """The transport ceiling: a do-nothing grpc.aio server in a child process."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[Any] = context.Queue()
    process = context.Process(target=nothing_server_main, args=(ports,), daemon=True)
    process.start()
    try:
        try:
            port = ports.get(timeout=NODE_START_DEADLINE_S)
        except queue.Empty:
            raise TimeoutError("the do-nothing gRPC server did not start") from None
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.join(timeout=CHILD_EXIT_DEADLINE_S)
        ports.close()
        ports.cancel_join_thread()


# --- Figures --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Throughput:
    records: int
    seconds: float
    producer_share: float | None = None  # slowest / fastest producer, with several producers
    failed_records: int = 0  # refused per record (not counted in `records`)
    # CPU seconds the measured side spent meanwhile (the node's process, or this process for a
    # storage ceiling): a figure the machine's other load disturbs far less than wall time.
    cpu_s: float | None = None

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_batch(self) -> float | None:
        """CPU milliseconds per BATCH_RECORDS records (one PutRecords call, one WriteBatch)."""
        if self.cpu_s is None or self.records <= 0:
            return None
        return self.cpu_s * 1000 * BATCH_RECORDS / self.records

    @property
    def mib_per_s(self) -> float:
        return self.records_per_s * RECORD_DATA_BYTES / MiB


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    calls: int
    p50_ms: float
    p99_ms: float


def throughput_of(results: Sequence[ProducerResult]) -> Throughput:
    assert results
    rates = [result.records_per_s for result in results]
    share = min(rates) / max(rates) if len(results) > 1 and max(rates) > 0 else None
    return Throughput(
        records=sum(result.records for result in results),
        seconds=max(result.elapsed_s for result in results),
        producer_share=share,
        failed_records=sum(result.failed_records for result in results),
    )


def throughput_with_cpu(server_pid: int | None, **producers: Any) -> Throughput:
    """`throughput_of(run_producers(**producers))`, with the CPU process `server_pid` spent over
    the measured span (`Throughput.cpu_s`; None without a pid)."""
    at_go: list[float] = []
    on_go = None if server_pid is None else (lambda: at_go.append(cpu_s(server_pid)))
    measured = throughput_of(run_producers(on_go=on_go, **producers))
    if server_pid is None:
        return measured
    return dataclasses.replace(measured, cpu_s=cpu_s(server_pid) - at_go[0])


def latency_of(results: Sequence[ProducerResult]) -> Latency:
    samples = sorted(s for result in results for s in result.latencies_s)
    assert len(samples) >= 2
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Latency(calls=len(samples), p50_ms=cuts[49] * 1000, p99_ms=cuts[98] * 1000)


# --- Storage ceilings (in this process) -----------------------------------------------------


def storage_values(rng: random.Random) -> list[bytes]:
    """One batch of values the size Shoal stores for a 1 KiB record with a 16-char key."""
    return [
        rng.randbytes(STORED_VALUE_HEADER_BYTES + PARTITION_KEY_CHARS + RECORD_DATA_BYTES)
        for _ in range(BATCH_RECORDS)
    ]


def _write_durable_batch(db: Any, values: Sequence[bytes], first_offset: int) -> None:
    import rocksdict  # only the ceilings touch RocksDB directly

    batch = rocksdict.WriteBatch(raw_mode=True)
    for index, value in enumerate(values):
        batch.put(STORED_KEY.pack(1, first_offset + index), value)
    write_options = rocksdict.WriteOptions()
    write_options.sync = False  # as broker/log/rocks_store.py: write, then one flush_wal
    db.write(batch, write_options)
    db.flush_wal(sync=True)


def _read_all(db: Any, seconds_max: float) -> Throughput:
    import rocksdict

    iterator = db.iter(rocksdict.ReadOptions())
    iterator.seek_to_first()
    records = 0
    start = now_s()
    while iterator.valid():
        iterator.key()
        iterator.value()
        iterator.next()
        records += 1
        if records % 10_000 == 0 and now_s() - start > seconds_max:
            break
    seconds = now_s() - start
    del iterator  # a live iterator keeps the DB open
    return Throughput(records=records, seconds=seconds)


def storage_ceilings(path: Path, seconds: float, warmup_s: float) -> tuple[Throughput, Throughput]:
    """(write, read) speed of a scratch RocksDB at `path`, which is deleted afterwards.

    Writes: one thread, durable WriteBatches of 500 Shoal-shaped entries. Reads: one raw
    iterator over what was written. Closing and deleting the DB before Shoal runs keeps its
    flushes, compactions and dirty pages from slowing the node's scenarios.
    """
    import rocksdict

    from broker.log.rocks_store import db_options

    values = storage_values(random.Random(11))
    options = db_options()  # the node's own (WAL recycling and cap, recovery mode): same disk work
    db = rocksdict.Rdict(str(path), options=options)
    try:
        offset = 0
        warm_until = now_s() + warmup_s
        while now_s() < warm_until:
            _write_durable_batch(db, values, offset)
            offset += len(values)
        first = offset
        cpu_start = time.process_time()  # this process: the writes and RocksDB's own threads
        start = done = now_s()
        while done - start < seconds:
            _write_durable_batch(db, values, offset)
            offset += len(values)
            done = now_s()
        write = Throughput(
            records=offset - first,
            seconds=done - start,
            cpu_s=time.process_time() - cpu_start,
        )
        read = _read_all(db, seconds)
    finally:
        db.close()
        rocksdict.Rdict.destroy(str(path), options)
    return write, read


# --- Shoal control plane and GetRecords -----------------------------------------------------


def _call(channel: grpc.Channel, operation: str, request: Any, response_class: Any) -> Any:
    stub = raw_stub(channel, operation)
    return response_class.FromString(stub(request.SerializeToString(), timeout=CALL_TIMEOUT_S))


def create_stream(target: str, name: str, shards: int) -> None:
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        _call(
            channel,
            "CreateStream",
            kinesis_pb2.CreateStreamInput(stream_name=name, shard_count=shards),
            kinesis_pb2.CreateStreamOutput,
        )
        deadline = now_s() + STREAM_ACTIVE_DEADLINE_S
        while True:
            summary = _call(
                channel,
                "DescribeStreamSummary",
                kinesis_pb2.DescribeStreamSummaryInput(stream_name=name),
                kinesis_pb2.DescribeStreamSummaryOutput,
            )
            if summary.stream_description_summary.stream_status == "ACTIVE":
                return
            if now_s() > deadline:
                raise TimeoutError(f"stream {name} did not become ACTIVE")
            time.sleep(0.05)


@dataclass(frozen=True, slots=True, kw_only=True)
class Drain:
    throughput: Throughput
    calls: int
    records_per_shard: dict[str, int]


def drain_stream(target: str, name: str) -> Drain:
    """Reads every shard of `name` from TRIM_HORIZON to its end, one shard after another."""
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        shards = _call(
            channel,
            "ListShards",
            kinesis_pb2.ListShardsInput(stream_name=name),
            kinesis_pb2.ListShardsOutput,
        ).shards
        iterators = {
            shard.shard_id: _call(
                channel,
                "GetShardIterator",
                kinesis_pb2.GetShardIteratorInput(
                    stream_name=name, shard_id=shard.shard_id, shard_iterator_type="TRIM_HORIZON"
                ),
                kinesis_pb2.GetShardIteratorOutput,
            ).shard_iterator
            for shard in shards
        }
        stub = raw_stub(channel, "GetRecords")
        per_shard: dict[str, int] = {}
        calls = 0
        start = now_s()
        for shard_id, iterator in iterators.items():
            per_shard[shard_id] = 0
            while iterator:
                request = kinesis_pb2.GetRecordsInput(
                    shard_iterator=iterator, limit=GET_RECORDS_LIMIT
                )
                page = kinesis_pb2.GetRecordsOutput.FromString(
                    stub(request.SerializeToString(), timeout=CALL_TIMEOUT_S)
                )
                calls += 1
                per_shard[shard_id] += len(page.records)
                if not page.records and page.millis_behind_latest == 0:
                    break  # caught up with the shard's end
                iterator = page.next_shard_iterator
                if now_s() - start > DRAIN_DEADLINE_S:
                    raise TimeoutError(f"draining {name} took over {DRAIN_DEADLINE_S} s")
        seconds = now_s() - start
    return Drain(
        throughput=Throughput(records=sum(per_shard.values()), seconds=seconds),
        calls=calls,
        records_per_shard=per_shard,
    )


def drain_ceiling(target: str, calls: int) -> Throughput:
    """The same number of full GetRecords pages from the do-nothing server."""
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = raw_stub(channel, "GetRecords")
        request = kinesis_pb2.GetRecordsInput(shard_iterator="x", limit=GET_RECORDS_LIMIT)
        payload = request.SerializeToString()
        stub(payload, timeout=CALL_TIMEOUT_S)  # connect and warm up
        records = 0
        start = now_s()
        for _ in range(max(calls, 3)):
            page = kinesis_pb2.GetRecordsOutput.FromString(stub(payload, timeout=CALL_TIMEOUT_S))
            records += len(page.records)
        return Throughput(records=records, seconds=now_s() - start)


# --- The run --------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Report:
    machine: dict[str, Any]
    command: str
    seconds: float
    storage_write: Throughput | None = None  # the better of storage_write_runs
    storage_write_runs: list[Throughput] = field(default_factory=list)  # before, after Shoal
    storage_read: Throughput | None = None  # the better of storage_read_runs
    storage_read_runs: list[Throughput] = field(default_factory=list)
    transport_put_records: dict[int, Throughput] | None = None  # by producer count
    transport_put_record: Latency | None = None
    transport_get_records: Throughput | None = None  # the better of transport_get_records_runs
    transport_get_records_runs: list[Throughput] = field(default_factory=list)
    put_records: dict[tuple[int, int], Throughput] | None = None  # by (shards, producers)
    put_record: Latency | None = None
    drain: Drain | None = None  # the better of drain_runs
    drain_runs: list[Drain] = field(default_factory=list)
    http: HttpReport | None = None  # the AWS HTTP (boto3) half, see benchmarks/aws_http.py
    wall_s: float = 0.0


SCENARIOS = ((1, 1), (1, 4), (4, 1), (4, 4))  # (shards, producers)


Part = Literal["grpc", "http"]


def run(seconds: float, warmup_s: float, command: str, parts: Sequence[Part]) -> Report:
    from benchmarks import aws_http

    report = Report(
        machine={
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "grpc": grpc.__version__,
        },
        command=command,
        seconds=seconds,
    )
    started = now_s()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        workdir = Path(tmp)
        with shoal_node(workdir) as node:
            if "grpc" in parts:
                _run_grpc(report, workdir, node, seconds, warmup_s)
            if "http" in parts:
                report.http = aws_http.run_http(
                    grpc_target=node.grpc_target,
                    http_url=node.http_url,
                    seconds=seconds,
                    warmup_s=warmup_s,
                    node_pid=node.pid,
                )
    report.wall_s = now_s() - started
    return report


def _run_grpc(
    report: Report, workdir: Path, address: NodeAddress, seconds: float, warmup_s: float
) -> None:
    node = address.grpc_target
    latency_s = min(seconds, 3.0)
    with nothing_server() as nothing:
        _measure_storage(report, workdir / "ceiling-1", seconds, warmup_s)
        _say("ceiling: gRPC no-op PutRecords / PutRecord")
        report.transport_put_records = {
            producers: throughput_of(
                run_producers(
                    target=nothing,
                    stream_name="ceiling",
                    kind="PutRecords",
                    count=producers,
                    seconds=seconds,
                    warmup_s=warmup_s,
                )
            )
            for producers in (1, 4)
        }
        report.transport_put_record = latency_of(
            run_producers(
                target=nothing,
                stream_name="ceiling",
                kind="PutRecord",
                count=1,
                seconds=latency_s,
                warmup_s=warmup_s,
            )
        )
        report.put_records = {}
        for shards, producers in SCENARIOS:
            _say(f"shoal: PutRecords, {shards} shard(s), {producers} producer(s)")
            name = f"bench-{shards}s-{producers}p"
            create_stream(node, name, shards)
            report.put_records[(shards, producers)] = throughput_with_cpu(
                address.pid,
                target=node,
                stream_name=name,
                kind="PutRecords",
                count=producers,
                seconds=seconds,
                warmup_s=warmup_s,
            )
        _say("shoal: PutRecord latency")
        create_stream(node, "bench-latency", 1)
        report.put_record = latency_of(
            run_producers(
                target=node,
                stream_name="bench-latency",
                kind="PutRecord",
                count=1,
                seconds=latency_s,
                warmup_s=warmup_s,
            )
        )
        for run in range(DRAIN_RUNS):
            _say(f"shoal: GetRecords drain of the 4-shard, 4-producer stream ({run + 1})")
            report.drain_runs.append(drain_stream(node, "bench-4s-4p"))
            _say(f"ceiling: gRPC no-op GetRecords ({run + 1})")
            calls = report.drain_runs[-1].calls
            report.transport_get_records_runs.append(drain_ceiling(nothing, calls))
        report.drain = max(report.drain_runs, key=lambda drain: drain.throughput.records_per_s)
        report.transport_get_records = max(
            report.transport_get_records_runs, key=lambda ceiling: ceiling.records_per_s
        )
        # Disks drift (page cache, writeback): measure storage again and keep the best.
        _measure_storage(report, workdir / "ceiling-2", seconds, warmup_s)


def _measure_storage(report: Report, path: Path, seconds: float, warmup_s: float) -> None:
    _say("ceiling: rocksdict WriteBatch + flush_wal, then a raw iterator")
    write, read = storage_ceilings(path, seconds, warmup_s)
    report.storage_write_runs.append(write)
    report.storage_read_runs.append(read)
    report.storage_write = max(report.storage_write_runs, key=lambda t: t.records_per_s)
    report.storage_read = max(report.storage_read_runs, key=lambda t: t.records_per_s)


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- Output ---------------------------------------------------------------------------------


def _pct(value: float, ceiling: float) -> str:
    return f"{100 * value / ceiling:5.1f}%" if ceiling > 0 else "    -"


def _rate(throughput: Throughput) -> str:
    return f"{throughput.records_per_s:>10,.0f} rec/s {throughput.mib_per_s:>8.1f} MiB/s"


def _crowding_note(report: Report) -> list[str]:
    cpus = report.machine["nproc"] or 1
    if cpus >= 6:
        return []
    return [
        f"note: {cpus} CPUs run the node (or the no-op server) and up to 4 producer processes, "
        "so 4-producer figures include client-side CPU contention for Shoal and ceiling alike"
    ]


def format_report(report: Report) -> str:
    from benchmarks import aws_http

    lines = [
        f"Shoal benchmark: nproc={report.machine['nproc']}, python {report.machine['python']}, "
        f"grpc {report.machine['grpc']}, {report.seconds:g} s per scenario, "
        f"took {report.wall_s:.0f} s",
        f"reproduce: {report.command}",
        "node: one `python -m broker serve`, per-shard throttles lifted "
        "(SHOAL_SHARD_*_PER_SECOND=0), stream state timers 0",
        *_crowding_note(report),
    ]
    if report.put_records is not None:
        lines += _format_grpc(report)
    if report.http is not None:
        lines += aws_http.format_http(report.http)
    return "\n".join(lines)


def _format_grpc(report: Report) -> list[str]:
    assert report.storage_write is not None
    assert report.storage_read is not None
    assert report.transport_put_records is not None
    assert report.transport_put_record is not None
    assert report.transport_get_records is not None
    assert report.put_records is not None
    assert report.put_record is not None
    assert report.drain is not None
    storage = report.storage_write
    lines = [
        "",
        "Ceilings (same machine, same run)",
        f"  storage   rocksdict WriteBatch(500) + flush_wal(sync)  {_rate(storage)}"
        f"   (runs: {' / '.join(f'{t.records_per_s:,.0f}' for t in report.storage_write_runs)})",
    ]
    for producers, ceiling in report.transport_put_records.items():
        lines.append(
            f"  transport gRPC no-op PutRecords, {producers} producer(s)       {_rate(ceiling)}"
        )
    t_lat = report.transport_put_record
    lines += [
        f"  transport gRPC no-op PutRecord                 p50 {t_lat.p50_ms:6.2f} ms  "
        f"p99 {t_lat.p99_ms:6.2f} ms",
        f"  storage   raw RocksDB iterator read            {_rate(report.storage_read)}"
        f"   (runs: {' / '.join(f'{t.records_per_s:,.0f}' for t in report.storage_read_runs)})",
        f"  transport gRPC no-op GetRecords (10000/page)   {_rate(report.transport_get_records)}"
        f"   (runs: {_runs(report.transport_get_records_runs)})",
        "",
        "PutRecords, 500 x 1 KiB per call (ratios: to the transport ceiling with the same "
        "producer count, to storage, to the slower of the two)",
        f"  {'shards':>6} {'prod':>4} {'records/s':>10} {'MiB/s':>8}  "
        f"{'/transport':>10} {'/storage':>8} {'/slower':>8}  {'share min/max':>13}  goal",
    ]
    for (shards, producers), shoal in report.put_records.items():
        transport = report.transport_put_records[producers]
        slower = min(transport.records_per_s, storage.records_per_s)
        share = "" if shoal.producer_share is None else f"{shoal.producer_share:.2f}"
        meets = shoal.records_per_s >= 0.5 * slower
        lines.append(
            f"  {shards:>6} {producers:>4} {shoal.records_per_s:>10,.0f} {shoal.mib_per_s:>8.1f}  "
            f"{_pct(shoal.records_per_s, transport.records_per_s):>10} "
            f"{_pct(shoal.records_per_s, storage.records_per_s):>8} "
            f"{_pct(shoal.records_per_s, slower):>8}  {share:>13}  "
            f"{'ok' if meets else 'BELOW 50%'}"
        )
    lines += _cpu_lines(report.put_records, storage)
    failed = sum(t.failed_records for t in report.put_records.values())
    if failed:
        lines.append(f"  WARNING: {failed:,} records were refused (FailedRecordCount); not counted")
    lat = report.put_record
    lines += [
        "",
        f"PutRecord latency, 1 KiB, sequential ({lat.calls} calls; ratio = Shoal / ceiling)",
        f"  p50 {lat.p50_ms:7.2f} ms  (x{lat.p50_ms / t_lat.p50_ms:.1f} the no-op call)",
        f"  p99 {lat.p99_ms:7.2f} ms  (x{lat.p99_ms / t_lat.p99_ms:.1f} the no-op call)",
    ]
    drain = report.drain.throughput
    slower_read = min(report.storage_read.records_per_s, report.transport_get_records.records_per_s)
    per_shard = ", ".join(f"{n:,}" for n in report.drain.records_per_shard.values())
    lines += [
        "",
        f"GetRecords drain, 4 shards from TRIM_HORIZON ({drain.records:,} records in "
        f"{report.drain.calls} calls; per shard {per_shard})",
        f"  {_rate(drain)}   /transport "
        f"{_pct(drain.records_per_s, report.transport_get_records.records_per_s)}  "
        f"/storage {_pct(drain.records_per_s, report.storage_read.records_per_s)}  "
        f"/slower {_pct(drain.records_per_s, slower_read)}"
        f"   (runs: {_runs([run.throughput for run in report.drain_runs])})",
    ]
    return lines


def _runs(runs: Sequence[Throughput]) -> str:
    return " / ".join(f"{t.records_per_s:,.0f}" for t in runs)


def _cpu_lines(put_records: dict[tuple[int, int], Throughput], storage: Throughput) -> list[str]:
    """The node's CPU per PutRecords call of 500 records next to the storage ceiling's CPU per
    WriteBatch of 500: the same comparison as the table's, in the figure a shared machine's
    other load disturbs least (wall time stretches with it, CPU per call much less)."""
    ceiling = storage.cpu_ms_per_batch
    if ceiling is None or ceiling <= 0:
        return []
    lines = [
        f"  CPU per 500 records (node process, all threads; storage: this process, {ceiling:.2f} ms"
        " per WriteBatch + flush_wal):"
    ]
    for (shards, producers), shoal in put_records.items():
        node = shoal.cpu_ms_per_batch
        if node is not None:
            lines.append(
                f"  {shards:>6} {producers:>4}  node {node:6.2f} ms  = "
                f"x{node / ceiling:.2f} storage's"
            )
    return lines


def report_json(report: Report) -> dict[str, Any]:
    from benchmarks import aws_http

    def throughput(value: Throughput | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {
            **asdict(value),
            "records_per_s": value.records_per_s,
            "mib_per_s": value.mib_per_s,
            "cpu_ms_per_batch": value.cpu_ms_per_batch,
        }

    return {
        "machine": report.machine,
        "command": report.command,
        "seconds_per_scenario": report.seconds,
        "wall_s": report.wall_s,
        "ceilings": {
            "storage_write": throughput(report.storage_write),
            "storage_write_runs": [throughput(t) for t in report.storage_write_runs],
            "storage_read": throughput(report.storage_read),
            "storage_read_runs": [throughput(t) for t in report.storage_read_runs],
            "transport_put_records": {
                str(p): throughput(t) for p, t in (report.transport_put_records or {}).items()
            },
            "transport_put_record": asdict(report.transport_put_record)
            if report.transport_put_record
            else None,
            "transport_get_records": throughput(report.transport_get_records),
            "transport_get_records_runs": [
                throughput(t) for t in report.transport_get_records_runs
            ],
        },
        "shoal": {
            "put_records": [
                {"shards": s, "producers": p, **(throughput(t) or {})}
                for (s, p), t in (report.put_records or {}).items()
            ],
            "put_record": asdict(report.put_record) if report.put_record else None,
            "get_records_drain": {
                **(throughput(report.drain.throughput) or {}),
                "calls": report.drain.calls,
                "records_per_shard": report.drain.records_per_shard,
                "runs": [throughput(run.throughput) for run in report.drain_runs],
            }
            if report.drain
            else None,
        },
        "aws_http": aws_http.http_json(report.http) if report.http else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured time per scenario (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up before each scenario (default 1)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--only",
        choices=("grpc", "http"),
        help="run only the gRPC scenarios or only the AWS HTTP (boto3) ones (default: both)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be > 0 and --warmup >= 0")
    command = shlex.join(["scripts/bench", *(sys.argv[1:] if argv is None else argv)])
    parts: tuple[Part, ...] = (args.only,) if args.only else ("grpc", "http")
    report = run(args.seconds, args.warmup, command, parts)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report_json(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
