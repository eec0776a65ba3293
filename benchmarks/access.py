"""`scripts/bench --only access`: the cost of access control (issue 15) on the AWS door.

One run, one machine, two node configurations started in turn (off, on, off, on, ...:
`--rounds` pairs, medians reported, so drift and other load are seen by both), every other
setting equal (SigV4 is
checked in both: the configured key signs the baseline, a principal's key the other):

- access control off: boto3 signed with the configured (root) key;
- access control on: boto3 signed with a principal's key whose two identity policies (one
  Allow with a condition on aws:SourceIp, one Deny of other actions) decide every request,
  and the audit trail recording (control plane and refusals; data plane off, the default).

Figures: PutRecords throughput (500 records of 1 KiB per call, one boto3 client, `--seconds`)
and PutRecord latency p50/p99 (sequential calls), with the ratio on/off (goals: throughput at
least 85 %, p99 within +1 ms), and the authorizer's own cost per call measured in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import boto3
import botocore.config
import grpc

from benchmarks.bench import REPO, UNTHROTTLED, _stop, free_port, now_s
from broker.api.iam.v1 import iam_pb2, iam_pb2_grpc
from broker.iam.grpc_signing import SigningKey

ROOT_KEY, ROOT_SECRET = "BENCHROOT", "bench-root-secret"
RECORD = b"x" * 1024
BATCH = 500
ACCOUNT = "000000000000"


@dataclass
class Figures:
    records_per_s: float
    p50_ms: float
    p99_ms: float


def _client(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"mode": "standard"}),
    )


@contextmanager
def _node(workdir: Path, *, access_control: bool) -> Iterator[tuple[str, str]]:
    grpc_port, raft_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SHOAL_DATA_DIR": str(workdir / "node"),
        "SHOAL_GRPC_PORT": str(grpc_port),
        "SHOAL_RAFT_PORT": str(raft_port),
        "SHOAL_HTTP_PORT": str(http_port),
        "SHOAL_METRICS_PORT": "0",
        "SHOAL_REPLICATION_PORT": str(free_port()),
        "SHOAL_STREAM_CREATING_MS": "0",
        "SHOAL_AWS_CREDENTIALS": f"{ROOT_KEY}:{ROOT_SECRET}",
        "SHOAL_ACCESS_CONTROL": "true" if access_control else "false",
        **{f"SHOAL_SHARD_{name.upper()}_PER_SECOND": "0" for name in UNTHROTTLED},
    }
    log_path = workdir / "node.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve"], env=env, stdout=log,
            stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = now_s() + 60
        root = _client(url, ROOT_KEY, ROOT_SECRET)
        while True:
            try:
                root.list_streams()
                break
            except Exception:
                if process.poll() is not None or now_s() > deadline:
                    raise RuntimeError(log_path.read_text(errors="replace")[-3000:]) from None
                time.sleep(0.2)
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        _stop(process)


def _principal_key(target: str, stream_arn: str) -> tuple[str, str]:
    root = SigningKey(ROOT_KEY, ROOT_SECRET)
    with grpc.insecure_channel(target) as channel:
        stub = iam_pb2_grpc.IamServiceStub(channel)

        def call(method: str, request: Any) -> Any:
            metadata = root.metadata(f"/broker.api.iam.v1.IamService/{method}")
            return getattr(stub, method)(request, metadata=metadata, timeout=10)

        principal = call(
            "CreatePrincipal", iam_pb2.CreatePrincipalRequest(account_id=ACCOUNT, name="producer")
        )
        policies = {
            "write": {
                "Effect": "Allow",
                "Action": ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:Describe*"],
                "Resource": stream_arn,
                "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}},
            },
            "guard": {"Effect": "Deny", "NotAction": "kinesis:*", "Resource": "*"},
        }
        for name, statement in policies.items():
            call(
                "AttachPolicy",
                iam_pb2.AttachPolicyRequest(
                    principal_arn=principal.arn,
                    policy_name=name,
                    document=json.dumps({"Version": "2012-10-17", "Statement": statement}),
                ),
            )
        key = call("CreateAccessKey", iam_pb2.CreateAccessKeyRequest(principal_arn=principal.arn))
        return key.access_key_id, key.secret_access_key


def _measure(url: str, key: str, secret: str, stream: str, seconds: float) -> Figures:
    client = _client(url, key, secret)
    records = [{"Data": RECORD, "PartitionKey": str(i)} for i in range(BATCH)]
    client.put_records(StreamName=stream, Records=records)  # warm up
    sent, started = 0, now_s()
    while now_s() - started < seconds:
        answer = client.put_records(StreamName=stream, Records=records)
        sent += BATCH - answer["FailedRecordCount"]
    throughput = sent / (now_s() - started)
    latencies: list[float] = []
    started = now_s()
    while now_s() - started < seconds:
        began = time.perf_counter()
        client.put_record(StreamName=stream, Data=RECORD, PartitionKey="k")
        latencies.append((time.perf_counter() - began) * 1000)
    cuts = statistics.quantiles(latencies, n=100)
    return Figures(records_per_s=throughput, p50_ms=cuts[49], p99_ms=cuts[98])


def _run_one(workdir: Path, *, access_control: bool, seconds: float) -> Figures:
    with _node(workdir, access_control=access_control) as (url, target):
        root = _client(url, ROOT_KEY, ROOT_SECRET)
        root.create_stream(StreamName="bench", ShardCount=2)
        root.get_waiter("stream_exists").wait(StreamName="bench", WaiterConfig={"Delay": 0.2})
        key, secret = ROOT_KEY, ROOT_SECRET
        if access_control:
            arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/bench"
            key, secret = _principal_key(target, arn)
            time.sleep(0.5)  # the key reaches the node's image (one node: its own apply)
        return _measure(url, key, secret, "bench", seconds)


def authorize_cost_us(calls: int = 20_000) -> float:
    """The enforcement shell's own cost per PutRecord (in this process, so machine load
    from other work affects it less than the end-to-end figures): the same principal, two
    policies and IpAddress condition as the node runs above."""
    from broker.caller import Caller
    from broker.iam.directory import KeyDirectory
    from broker.iam.enforcer import Authorizer
    from broker.iam.identities import AttachedPolicy, IamTable, Principal, PrincipalKind
    from broker.iam.sealing import SecretBox

    arn = f"arn:aws:iam::{ACCOUNT}:user/producer"
    stream_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/bench"
    write = {
        "Effect": "Allow",
        "Action": ["kinesis:PutRecord", "kinesis:PutRecords"],
        "Resource": stream_arn,
        "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}},
    }
    guard = {"Effect": "Deny", "NotAction": "kinesis:*", "Resource": "*"}
    principal = Principal(
        arn=arn,
        account_id=ACCOUNT,
        kind=PrincipalKind.USER,
        name="producer",
        created_ms=0,
        policies=tuple(
            AttachedPolicy(name=name, document=json.dumps({"Statement": statement}))
            for name, statement in (("guard", guard), ("write", write))
        ),
    )
    table = IamTable(principals={arn: principal})
    authorizer = Authorizer(
        enabled=True,
        directory=KeyDirectory(
            static_keys={}, account_id=ACCOUNT, region="us-east-1", box=SecretBox(b"k" * 32),
            iam_table=lambda: table,
        ),
        resource_policy=lambda _: None,
        iterator_stream=lambda _: None,
        wall_ms=lambda: 1_700_000_000_000,
    )  # fmt: skip
    caller = Caller(
        region="us-east-1", account_id=ACCOUNT, principal_arn=arn,
        source_address="127.0.0.1", door="http",
    )  # fmt: skip
    request = {"StreamName": "bench", "Data": RECORD, "PartitionKey": "k"}
    for _ in range(1_000):
        authorizer.authorize("kinesis", "PutRecord", request, caller)
    started = time.perf_counter()
    for _ in range(calls):
        authorizer.authorize("kinesis", "PutRecord", request, caller)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only access")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs (medians reported)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs: dict[bool, list[Figures]] = {False: [], True: []}
    with TemporaryDirectory(prefix="shoal-bench-access-") as tmp:
        for round_index in range(args.rounds):
            for enabled in (False, True):
                workdir = Path(tmp) / f"{round_index}-{'on' if enabled else 'off'}"
                workdir.mkdir()
                figures = _run_one(workdir, access_control=enabled, seconds=args.seconds)
                runs[enabled].append(figures)
                print(
                    f"access control {'on ' if enabled else 'off'} round {round_index + 1}: "
                    f"{figures.records_per_s:,.0f} records/s, PutRecord p50 "
                    f"{figures.p50_ms:.2f} ms p99 {figures.p99_ms:.2f} ms",
                    file=sys.stderr,
                )
    mean = {
        enabled: Figures(
            records_per_s=statistics.median(f.records_per_s for f in figures),
            p50_ms=statistics.median(f.p50_ms for f in figures),
            p99_ms=statistics.median(f.p99_ms for f in figures),
        )
        for enabled, figures in runs.items()
    }
    off, on = mean[False], mean[True]
    report = {
        "put_records_per_s_off": round(off.records_per_s),
        "put_records_per_s_on": round(on.records_per_s),
        "throughput_ratio_on_off": round(on.records_per_s / off.records_per_s, 3),
        "put_record_p50_ms_off": round(off.p50_ms, 3),
        "put_record_p50_ms_on": round(on.p50_ms, 3),
        "put_record_p99_ms_off": round(off.p99_ms, 3),
        "put_record_p99_ms_on": round(on.p99_ms, 3),
        "p99_delta_ms": round(on.p99_ms - off.p99_ms, 3),
        "authorize_us_per_call": round(authorize_cost_us(), 1),
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
