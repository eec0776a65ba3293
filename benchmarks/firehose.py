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
4. With `--freshness-seconds N` (not by default: it takes minutes), a delivery stream with a
   60 s interval fed slowly for N seconds: data freshness p50/p99 (object LastModified minus
   the put time of its oldest record), as a ratio to the interval (goal: within 1.1 x).
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def _freshness(http: str, s3_url: str, seconds: float) -> tuple[float, float]:
    firehose, s3 = _client("firehose", http), _client("s3", s3_url)
    _delivery_stream(firehose, s3, "bench-freshness", 60)
    started = now_s()
    sent = 0
    while now_s() - started < seconds:
        firehose.put_record_batch(
            DeliveryStreamName="bench-freshness",
            Records=[{"Data": data} for data in _records(sent)[:20]],
        )
        sent += 20
        time.sleep(1.0)
    deadline = now_s() + 180
    while True:
        count, freshness = _delivered(s3, "bench-freshness")
        if count >= sent or now_s() > deadline:
            break
        time.sleep(1.0)
    freshness.sort()
    return freshness[len(freshness) // 2], freshness[
        min(len(freshness) - 1, int(len(freshness) * 0.99))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only firehose", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--freshness-seconds", type=float, default=0.0)
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
                p50, p99 = _freshness(node.http_url, s3_url, args.freshness_seconds)
                print(
                    f"  data freshness at a 60 s interval: p50 {p50:.1f} s ({p50 / 60:.2f} x), "
                    f"p99 {p99:.1f} s ({p99 / 60:.2f} x) (goal <= 1.1 x)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
