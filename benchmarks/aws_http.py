"""The AWS HTTP half of `scripts/bench`: boto3 against Shoal's AWS door and a discard server.

What it measures (each for `--seconds`, after a warm-up):

- PutRecords through boto3: 500 records of 1 KiB per call, random partition keys, 1 and 2
  producer processes, into a 1-shard stream (one per scenario). Each process owns one
  `boto3.client("kinesis", ...)` (standard retries) and calls `put_records` in a loop; records
  acknowledged (FailedRecordCount subtracted) per second.
- GetRecords drain through boto3: one consumer (this process) reading the 2-producer stream
  from TRIM_HORIZON with Limit 10000 until it has caught up; records/s.

The ceiling, in the same run: a discard server, i.e. the node's own HTTP stack
(`broker.gateway.http_server`: hypercorn, same config, in asyncio) serving a tiny ASGI app that
reads each request body to its end without looking at it and answers a canned, valid reply: for
PutRecords 500 successful entries, for GetRecords a full page of 10000 records of 1 KiB (what
Shoal returns for Limit 10000: 10000 x (1 KiB + 16-char key) fits the 10 MiB page bound), so
botocore parses a body as large as Shoal's. The same producer processes and the same consumer
run against it: that is what one boto3 process can send or receive at best on this machine.

The goal from the issue: Shoal at least 80% of that ceiling, for PutRecords and for the drain.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import multiprocessing.synchronize
import queue
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from benchmarks.bench import (
    BATCH_RECORDS,
    CALL_TIMEOUT_S,
    CHILD_EXIT_DEADLINE_S,
    DRAIN_DEADLINE_S,
    GET_RECORDS_LIMIT,
    NODE_START_DEADLINE_S,
    RECORD_DATA_BYTES,
    REQUEST_POOL,
    Drain,
    ProducerResult,
    ProducerSpec,
    Throughput,
    _partition_key,
    _pct,
    _rate,
    _say,
    create_stream,
    drive_producer,
    now_s,
    producer_main,
    throughput_with_cpu,
)

HTTP_SHARDS = 1
HTTP_PRODUCERS = (1, 2)
GOAL = 0.8  # Shoal / discard ceiling
POOL_CONNECTIONS = 2  # one call at a time per process; a spare for a retry racing a close
CANNED_ITERATOR_CHARS = 180  # about the length of Shoal's own shard iterators
TARGET_HEADER = b"x-amz-target"
JSON_CONTENT_TYPE = b"application/x-amz-json-1.1"


def boto3_client(endpoint_url: str) -> Any:
    """A boto3 Kinesis client as an application would build it, with standard retries."""
    import boto3  # imported where used: producer processes and the HTTP scenarios only
    import botocore.config

    return boto3.client(
        "kinesis",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            retries={"mode": "standard"},
            max_pool_connections=POOL_CONNECTIONS,
            connect_timeout=CALL_TIMEOUT_S,
            read_timeout=CALL_TIMEOUT_S,
        ),
    )


# --- Canned replies of the discard server ---------------------------------------------------


def _sequence_number(index: int) -> str:
    return f"{49_000_000_000_000_000_000_000_000_000_000_000_000_000_000 + index}"


def canned_put_records_body() -> bytes:
    """A PutRecords reply with 500 successful entries, shaped as Shoal's."""
    return json.dumps(
        {
            "FailedRecordCount": 0,
            "Records": [
                {"ShardId": "shardId-000000000000", "SequenceNumber": _sequence_number(index)}
                for index in range(BATCH_RECORDS)
            ],
            "EncryptionType": "NONE",
        },
        separators=(",", ":"),
    ).encode()


def canned_get_records_body(records: int = GET_RECORDS_LIMIT) -> bytes:
    """A GetRecords reply of `records` records of 1 KiB, shaped as Shoal's (one arrival time
    per batch, millisecond epoch seconds, base64 data)."""
    rng = random.Random(7)
    return json.dumps(
        {
            "Records": [
                {
                    "SequenceNumber": _sequence_number(index),
                    "ApproximateArrivalTimestamp": 1_700_000_000.123 + (index // BATCH_RECORDS),
                    "Data": base64.b64encode(rng.randbytes(RECORD_DATA_BYTES)).decode("ascii"),
                    "PartitionKey": _partition_key(rng),
                }
                for index in range(records)
            ],
            "MillisBehindLatest": 0,
            "NextShardIterator": "A" * CANNED_ITERATOR_CHARS,
        },
        separators=(",", ":"),
    ).encode()


# --- The discard server (a child process) ---------------------------------------------------


def _discard_app(put_records_body: bytes, get_records_body: bytes) -> Any:
    put_headers = _reply_headers(put_records_body)
    get_headers = _reply_headers(get_records_body)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        while True:  # read the body to its end, and drop it
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body", False):
                break
        target = next((v for k, v in scope["headers"] if k.lower() == TARGET_HEADER), b"")
        if target.endswith(b".GetRecords"):
            headers, body = get_headers, get_records_body
        else:  # PutRecords, and anything else (the producers send nothing else)
            headers, body = put_headers, put_records_body
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def _reply_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-amzn-requestid", b"00000000-0000-4000-8000-000000000000"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"content-type", JSON_CONTENT_TYPE),
    ]


async def _serve_discard(ports: multiprocessing.Queue[Any]) -> None:
    from broker.gateway.http_server import start_http_server  # the node's own HTTP stack

    app = _discard_app(canned_put_records_body(), canned_get_records_body())
    server = await start_http_server(app, host="127.0.0.1", port=0, certfile=None, keyfile=None)
    ports.put(server.port)
    await asyncio.Event().wait()  # until the parent kills this process


def discard_server_main(ports: multiprocessing.Queue[Any]) -> None:
    asyncio.run(_serve_discard(ports))


@contextmanager
def discard_server() -> Iterator[str]:
    """The boto3 ceiling: hypercorn + a discard ASGI app in a child process; yields its URL."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[Any] = context.Queue()
    process = context.Process(target=discard_server_main, args=(ports,), daemon=True)
    process.start()
    try:
        try:
            port = ports.get(timeout=NODE_START_DEADLINE_S)
        except queue.Empty:
            raise TimeoutError("the discard HTTP server did not start") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.join(timeout=CHILD_EXIT_DEADLINE_S)
        ports.close()
        ports.cancel_join_thread()


# --- boto3 producer processes ---------------------------------------------------------------


def _batches(spec: ProducerSpec) -> list[list[dict[str, Any]]]:
    rng = random.Random(spec.seed)
    return [
        [
            {"Data": rng.randbytes(RECORD_DATA_BYTES), "PartitionKey": _partition_key(rng)}
            for _ in range(BATCH_RECORDS)
        ]
        for _ in range(REQUEST_POOL)
    ]


def _produce_http(
    spec: ProducerSpec, events: multiprocessing.Queue[Any], go: multiprocessing.synchronize.Event
) -> ProducerResult:
    batches = _batches(spec)  # botocore still validates, base64-encodes and serializes each call
    client = boto3_client(spec.target)

    def send(n: int) -> int:
        response = client.put_records(
            StreamName=spec.stream_name, Records=batches[n % len(batches)]
        )
        return int(response["FailedRecordCount"])

    try:
        return drive_producer(spec, send, BATCH_RECORDS, events, go)
    finally:
        client.close()


# Entry point of one boto3 producer process; reports ready, then its result or its error.
http_producer_main = partial(producer_main, produce=_produce_http)


def run_http_producers(
    *,
    url: str,
    stream_name: str,
    count: int,
    seconds: float,
    warmup_s: float,
    server_pid: int | None = None,
) -> Throughput:
    """`count` boto3 producers; with `server_pid`, that process's CPU over the measured span
    too (`Throughput.cpu_s`)."""
    return throughput_with_cpu(
        server_pid,
        target=url,
        stream_name=stream_name,
        kind="PutRecords",
        count=count,
        seconds=seconds,
        warmup_s=warmup_s,
        entry=http_producer_main,
    )


# --- boto3 GetRecords consumer (this process) -----------------------------------------------


def drain_http(url: str, name: str) -> Drain:
    """Reads every shard of `name` from TRIM_HORIZON to its end through boto3."""
    client = boto3_client(url)
    try:
        shards = [s["ShardId"] for s in client.list_shards(StreamName=name)["Shards"]]
        iterators = {
            shard_id: client.get_shard_iterator(
                StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for shard_id in shards
        }
        per_shard: dict[str, int] = {}
        calls = 0
        start = now_s()
        for shard_id, first in iterators.items():
            per_shard[shard_id] = 0
            iterator: str | None = first
            while iterator:
                page = client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
                calls += 1
                per_shard[shard_id] += len(page["Records"])
                if not page["Records"] and page["MillisBehindLatest"] == 0:
                    break  # caught up with the shard's end
                iterator = page.get("NextShardIterator")
                if now_s() - start > DRAIN_DEADLINE_S:
                    raise TimeoutError(f"draining {name} took over {DRAIN_DEADLINE_S} s")
        seconds = now_s() - start
    finally:
        client.close()
    return Drain(
        throughput=Throughput(records=sum(per_shard.values()), seconds=seconds),
        calls=calls,
        records_per_shard=per_shard,
    )


def drain_http_ceiling(url: str, calls: int) -> Throughput:
    """The same number of GetRecords calls, answered by the discard server's full page."""
    client = boto3_client(url)
    try:
        iterator = "A" * CANNED_ITERATOR_CHARS
        client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)  # connect, warm up
        records = 0
        start = now_s()
        for _ in range(max(calls, 3)):
            page = client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            records += len(page["Records"])
        return Throughput(records=records, seconds=now_s() - start)
    finally:
        client.close()


# --- The HTTP part of a run -----------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class HttpReport:
    boto3: str
    shards: int
    ceiling_put_records: dict[int, Throughput]  # by producer count
    put_records: dict[int, Throughput]
    drain: Drain
    ceiling_drain: Throughput


def run_http(
    *, grpc_target: str, http_url: str, seconds: float, warmup_s: float, node_pid: int | None = None
) -> HttpReport:
    import boto3

    ceiling_put: dict[int, Throughput] = {}
    shoal_put: dict[int, Throughput] = {}
    with discard_server() as discard:
        for producers in HTTP_PRODUCERS:
            _say(f"ceiling: boto3 PutRecords to the discard server, {producers} producer(s)")
            ceiling_put[producers] = run_http_producers(
                url=discard,
                stream_name="ceiling",
                count=producers,
                seconds=seconds,
                warmup_s=warmup_s,
            )
            name = f"http-{HTTP_SHARDS}s-{producers}p"
            _say(f"shoal: boto3 PutRecords, {HTTP_SHARDS} shard(s), {producers} producer(s)")
            create_stream(grpc_target, name, HTTP_SHARDS)
            shoal_put[producers] = run_http_producers(
                url=http_url,
                stream_name=name,
                count=producers,
                seconds=seconds,
                warmup_s=warmup_s,
                server_pid=node_pid,
            )
        drained = f"http-{HTTP_SHARDS}s-{HTTP_PRODUCERS[-1]}p"
        _say(f"shoal: boto3 GetRecords drain of {drained}")
        drain = drain_http(http_url, drained)
        _say("ceiling: boto3 GetRecords from the discard server")
        ceiling_drain = drain_http_ceiling(discard, drain.calls)
    return HttpReport(
        boto3=boto3.__version__,
        shards=HTTP_SHARDS,
        ceiling_put_records=ceiling_put,
        put_records=shoal_put,
        drain=drain,
        ceiling_drain=ceiling_drain,
    )


def _verdict(value: float, ceiling: float) -> str:
    return "ok" if ceiling > 0 and value >= GOAL * ceiling else f"BELOW {100 * GOAL:.0f}%"


def format_http(http: HttpReport) -> list[str]:
    lines = [
        "",
        f"AWS HTTP (boto3 {http.boto3}, JSON 1.1 over HTTP/1.1; ceiling = the same boto3 "
        "processes against a discard server on the node's hypercorn stack)",
        f"  PutRecords, 500 x 1 KiB per call, {http.shards}-shard stream",
        f"  {'prod':>6} {'ceiling rec/s':>13} {'shoal rec/s':>11} {'MiB/s':>7} {'/ceiling':>8}"
        f"  {'share min/max':>13}  goal >= {100 * GOAL:.0f}%",
    ]
    for producers, shoal in http.put_records.items():
        ceiling = http.ceiling_put_records[producers]
        share = "" if shoal.producer_share is None else f"{shoal.producer_share:.2f}"
        lines.append(
            f"  {producers:>6} {ceiling.records_per_s:>13,.0f} {shoal.records_per_s:>11,.0f} "
            f"{shoal.mib_per_s:>7.1f} {_pct(shoal.records_per_s, ceiling.records_per_s):>8}"
            f"  {share:>13}  {_verdict(shoal.records_per_s, ceiling.records_per_s)}"
        )
    one, one_ceiling = http.put_records.get(1), http.ceiling_put_records.get(1)
    if one is not None and one_ceiling is not None and one.records and one_ceiling.records:
        # One producer waits for each answer, so the node's time per call adds to the client's.
        client_ms = 1000 * BATCH_RECORDS / one_ceiling.records_per_s
        shoal_ms = 1000 * BATCH_RECORDS / one.records_per_s
        lines.append(
            f"  one producer, per call: {client_ms:.1f} ms against the discard server, "
            f"{shoal_ms:.1f} ms against Shoal: the node adds {shoal_ms - client_ms:.1f} ms "
            f"(80% needs <= {client_ms * (1 / GOAL - 1):.1f} ms)"
        )
        node_cpu_ms = one.cpu_ms_per_batch
        if node_cpu_ms is not None:
            lines.append(
                f"  the node's CPU per call (its process, every thread): {node_cpu_ms:.2f} ms"
            )
    failed = sum(t.failed_records for t in http.put_records.values())
    if failed:
        lines.append(f"  WARNING: {failed:,} records were refused (FailedRecordCount); not counted")
    drain, ceiling = http.drain.throughput, http.ceiling_drain
    per_call = drain.records / http.drain.calls if http.drain.calls else 0.0
    lines += [
        f"  GetRecords drain, Limit 10000, one consumer ({drain.records:,} records in "
        f"{http.drain.calls} calls, {per_call:,.0f}/call)",
        f"    shoal   {_rate(drain)}",
        f"    ceiling {_rate(ceiling)}   (discard server, {GET_RECORDS_LIMIT:,}-record page)",
        f"    /ceiling {_pct(drain.records_per_s, ceiling.records_per_s)}  "
        f"goal >= {100 * GOAL:.0f}%: {_verdict(drain.records_per_s, ceiling.records_per_s)}",
    ]
    return lines


def http_json(http: HttpReport) -> dict[str, Any]:
    def throughput(value: Throughput) -> dict[str, Any]:
        return {
            "records": value.records,
            "seconds": value.seconds,
            "producer_share": value.producer_share,
            "failed_records": value.failed_records,
            "records_per_s": value.records_per_s,
            "mib_per_s": value.mib_per_s,
        }

    def ratio(value: Throughput, ceiling: Throughput) -> float | None:
        return value.records_per_s / ceiling.records_per_s if ceiling.records_per_s else None

    return {
        "boto3": http.boto3,
        "goal_ratio": GOAL,
        "put_records": [
            {
                "shards": http.shards,
                "producers": producers,
                "shoal": throughput(shoal),
                "ceiling": throughput(http.ceiling_put_records[producers]),
                "ratio": ratio(shoal, http.ceiling_put_records[producers]),
            }
            for producers, shoal in http.put_records.items()
        ],
        "get_records_drain": {
            "shoal": throughput(http.drain.throughput),
            "calls": http.drain.calls,
            "records_per_shard": http.drain.records_per_shard,
            "ceiling": throughput(http.ceiling_drain),
            "ratio": ratio(http.drain.throughput, http.ceiling_drain),
        },
    }
