"""`scripts/bench --only firehose`: delivery streams end to end, against an S3-compatible
server (moto's, on loopback) and next to the same producer into a data stream.

What it measures, in one run on one node process:

1. Baseline: boto3 `kinesis.put_records`, 500 JSON records of 1 KiB per call, into a 2-shard
   data stream for `--seconds`: records/s and MiB/s acknowledged.
2. Firehose: the same producer with `firehose.put_record_batch` into a DirectPut delivery
   stream (GZIP, BufferingHints 5 MiB / 1 s) for `--seconds`, then until every acknowledged
   record is in S3: records/s and MiB/s from the first put to the last object visible, and the
   ratio to (1) (the issue's goal: at least 70 %).
3. The object store's own PUT ceiling for the same bytes: boto3 `put_object` of GZIP objects
   of 5 MiB of the same records, for `--seconds`, as MiB/s of records.
4. Freshness: a delivery stream with BufferingHints IntervalInSeconds `--freshness-interval`
   (5 s by default; the issue's goal is stated at 60 s) fed slowly for `--freshness-seconds`
   (30 s; 0 skips it): per record, PutRecordBatch acknowledged -> its object first listed in
   S3, and per object, its oldest record's put -> listed (Firehose's DataFreshness), p50/p99
   and as a ratio to the interval (goal: DataFreshness within 1.1 x).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from benchmarks.bench import now_s, shoal_node
from broker.clock import SystemClock

RECORD_BYTES = 1024
BATCH = 500
MIB = 1024 * 1024
KEY = "bench"
SECRET = "bench-secret"
REGION = "us-east-1"
DELIVERY_DEADLINE_S = 120.0
_WALL = SystemClock()  # the put time in each record, compared with S3's LastModified


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_s3() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = now_s() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if now_s() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=botocore.config.Config(
            s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5}
        ),
    )


def _records(start: int) -> list[bytes]:
    out = []
    for i in range(BATCH):
        head = json.dumps({"n": start + i, "t": _WALL.wall_ms() / 1000, "pad": ""}).encode()
        pad = RECORD_BYTES - len(head) - 1
        out.append(head[:-2] + b"x" * pad + b'"}' + b"\n")
    return out


def _baseline(http: str, seconds: float) -> tuple[float, float]:
    kinesis = _client("kinesis", http)
    kinesis.create_stream(StreamName="bench-baseline", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="bench-baseline")
    sent = 0
    started = now_s()
    while now_s() - started < seconds:
        batch = _records(sent)
        answer = kinesis.put_records(
            StreamName="bench-baseline",
            Records=[{"Data": data, "PartitionKey": str(sent + i)} for i, data in enumerate(batch)],
        )
        sent += BATCH - answer["FailedRecordCount"]
    elapsed = now_s() - started
    return sent / elapsed, sent * RECORD_BYTES / MIB / elapsed


_SEEN: dict[str, tuple[int, float]] = {}  # object key -> (records, freshness s), read once


def _delivered(s3: Any, bucket: str) -> tuple[int, list[float]]:
    """(records in the bucket, freshness of each object in seconds); each object is read
    once, so polling costs the store little more than a listing."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = f"{bucket}/{item['Key']}"
            if key in _SEEN:
                continue
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            lines = body.splitlines()
            oldest = min(json.loads(line)["t"] for line in lines)
            _SEEN[key] = (len(lines), item["LastModified"].timestamp() - oldest)
    mine = [value for key, value in _SEEN.items() if key.startswith(bucket + "/")]
    return sum(count for count, _ in mine), [freshness for _, freshness in mine]


def _delivery_stream(firehose: Any, s3: Any, name: str, interval_s: int) -> None:
    s3.create_bucket(Bucket=name)
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/bench",
            "BucketARN": f"arn:aws:s3:::{name}",
            "CompressionFormat": "GZIP",
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": interval_s},
        },
    )
    deadline = now_s() + 60
    while True:
        status = firehose.describe_delivery_stream(DeliveryStreamName=name)[
            "DeliveryStreamDescription"
        ]["DeliveryStreamStatus"]
        if status == "ACTIVE":
            return
        if now_s() > deadline:
            raise RuntimeError(f"{name} is {status}")
        time.sleep(0.1)


def _firehose(http: str, s3_url: str, seconds: float) -> tuple[float, float]:
    firehose, s3 = _client("firehose", http), _client("s3", s3_url)
    _delivery_stream(firehose, s3, "bench-throughput", 1)
    sent = 0
    started = now_s()
    while now_s() - started < seconds:
        answer = firehose.put_record_batch(
            DeliveryStreamName="bench-throughput",
            Records=[{"Data": data} for data in _records(sent)],
        )
        sent += BATCH - answer["FailedPutCount"]
    deadline = now_s() + DELIVERY_DEADLINE_S
    while _delivered(s3, "bench-throughput")[0] < sent:
        if now_s() > deadline:
            raise RuntimeError("the acknowledged records did not all reach S3")
        time.sleep(0.2)
    elapsed = now_s() - started
    return sent / elapsed, sent * RECORD_BYTES / MIB / elapsed


def _store_ceiling(s3_url: str, seconds: float) -> float:
    s3 = _client("s3", s3_url)
    s3.create_bucket(Bucket="bench-ceiling")
    records = b"".join(_records(0)) * (5 * MIB // (BATCH * RECORD_BYTES))
    body = gzip.compress(records, compresslevel=6)
    written = 0
    started = now_s()
    while now_s() - started < seconds:
        s3.put_object(Bucket="bench-ceiling", Key=f"o-{written}", Body=body)
        written += 1
    return written * len(records) / MIB / (now_s() - started)


@dataclass
class Freshness:
    """Per record: PutRecordBatch acknowledged -> its object first listed in S3; per object:
    its oldest record's put -> listed (Firehose's DataFreshness). Seconds, sorted."""

    records: list[float]
    objects: list[float]


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))]


def _freshness(http: str, s3_url: str, seconds: float, interval_s: int) -> Freshness:
    """A delivery stream with `interval_s` as its buffering interval (the size hint never
    reached), fed 20 records every 0.25 s for `seconds` by one thread while this one lists the
    bucket every 0.1 s and reads each new object once."""
    firehose, s3 = _client("firehose", http), _client("s3", s3_url)
    name = "bench-freshness"
    _delivery_stream(firehose, s3, name, interval_s)
    acknowledged: dict[int, float] = {}  # record number -> when its batch was acknowledged
    done = threading.Event()

    def produce() -> None:
        sent = 0
        started = now_s()
        while now_s() - started < seconds:
            records = _records(sent)[:20]
            answer = firehose.put_record_batch(
                DeliveryStreamName=name, Records=[{"Data": data} for data in records]
            )
            at = now_s()
            for i, entry in enumerate(answer["RequestResponses"]):
                if "ErrorCode" not in entry:
                    acknowledged[sent + i] = at
            sent += 20
            time.sleep(0.25)
        done.set()

    producer = threading.Thread(target=produce, name="freshness-producer")
    producer.start()
    seen: dict[str, None] = {}
    per_record: dict[int, float] = {}
    per_object: list[float] = []
    deadline = now_s() + seconds + 3 * interval_s + 60
    while now_s() < deadline and not (done.is_set() and acknowledged.keys() <= per_record.keys()):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                if item["Key"] in seen:
                    continue
                listed = now_s()
                seen[item["Key"]] = None
                body = s3.get_object(Bucket=name, Key=item["Key"])["Body"].read()
                documents = [json.loads(line) for line in gzip.decompress(body).splitlines()]
                # The put time is the wall clock in the record; `listed` is monotonic: convert.
                wall_offset = _WALL.wall_ms() / 1000 - now_s()
                per_object.append(listed + wall_offset - min(d["t"] for d in documents))
                for document in documents:
                    per_record.setdefault(document["n"], listed)
        time.sleep(0.1)
    producer.join()
    latencies = sorted(per_record[n] - at for n, at in acknowledged.items() if n in per_record)
    if len(latencies) < len(acknowledged):
        raise RuntimeError(f"{len(acknowledged) - len(latencies)} acknowledged records not in S3")
    return Freshness(records=latencies, objects=sorted(per_object))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only firehose", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--freshness-seconds", type=float, default=30.0, help="0: skip the freshness run"
    )
    parser.add_argument("--freshness-interval", type=int, default=5, help="IntervalInSeconds")
    args, _ = parser.parse_known_args(argv)
    with moto_s3() as s3_url, tempfile.TemporaryDirectory(prefix="shoal-bench-firehose-") as tmp:
        os.environ.update(
            {
                "AWS_ENDPOINT_URL_S3": s3_url,
                "AWS_ACCESS_KEY_ID": KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "SHOAL_FIREHOSE_WRITE_BYTES_PER_SECOND": "0",
                "SHOAL_FIREHOSE_WRITE_RECORDS_PER_SECOND": "0",
            }
        )
        with shoal_node(Path(tmp)) as node:
            base_rps, base_mib = _baseline(node.http_url, args.seconds)
            fh_rps, fh_mib = _firehose(node.http_url, s3_url, args.seconds)
            ceiling_mib = _store_ceiling(s3_url, args.seconds)
            print(f"Firehose, boto3, {BATCH} x 1 KiB JSON per call ({os.cpu_count()} CPUs)")
            print(
                f"  data stream PutRecords (baseline)   {base_rps:9.0f} records/s "
                f"{base_mib:7.2f} MiB/s"
            )
            print(
                f"  delivery stream put -> S3 (GZIP)    {fh_rps:9.0f} records/s {fh_mib:7.2f} MiB/s"
                f"  = {fh_rps / base_rps:.2f} x baseline (goal >= 0.70)"
            )
            print(
                f"  object store PUT ceiling (GZIP)                       {ceiling_mib:7.2f} MiB/s"
                f"  (delivery = {fh_mib / ceiling_mib:.2f} x)"
            )
            if args.freshness_seconds > 0:
                interval = args.freshness_interval
                fresh = _freshness(node.http_url, s3_url, args.freshness_seconds, interval)
                p50, p99 = _percentile(fresh.records, 0.5), _percentile(fresh.records, 0.99)
                o50, o99 = _percentile(fresh.objects, 0.5), _percentile(fresh.objects, 0.99)
                print(
                    f"  freshness, BufferingHints IntervalInSeconds {interval} "
                    f"({len(fresh.records)} records, {len(fresh.objects)} objects):"
                )
                print(
                    f"    put acknowledged -> object in S3  p50 {p50:6.2f} s "
                    f"({p50 / interval:.2f} x)"
                    f"  p99 {p99:6.2f} s ({p99 / interval:.2f} x interval)"
                )
                print(
                    f"    oldest record of an object (DataFreshness)  p50 {o50:6.2f} s "
                    f"({o50 / interval:.2f} x)  p99 {o99:6.2f} s ({o99 / interval:.2f} x) "
                    "(goal <= 1.1 x)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
