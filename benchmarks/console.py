"""`scripts/bench --only console`: how fast the web console renders its pages at scale.

One node process holding `--streams` one-shard streams (default 1,000) and one stream of
`--shards` shards (default 1,000). Each page is fetched `--rounds` times (default 30) over one
keep-alive HTTP connection after two warm-up fetches; the report gives p50 and p99 in ms and,
as the ratio the figures are read by, p50 against the p50 of a static file (`console.css`)
served by the same console on the same connection in the same run (the cost of the HTTP stack
alone). The goal (issue 17): every page within 200 ms.

Pages: the cluster overview (which walks every shard of every stream), the streams list (page 1,
page 20 and a search), the 1,000-shard stream's page (every shard, its lineage drawing, leases)
and a record browser page (25 records). Throttles are lifted (tests.support.NodeProcess's
environment); every wait is bounded; the node is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config as BotoConfig

from tests.support import NodeProcess, serving, wait_until

GOAL_MS = 200.0
START_DEADLINE_S = 60.0


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _kinesis(node: NodeProcess) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=BotoConfig(retries={"max_attempts": 10, "mode": "standard"}),
    )


def _populate(node: NodeProcess, streams: int, shards: int) -> None:
    api = _kinesis(node)
    started = time.perf_counter()

    def create(index: int) -> None:
        api.create_stream(StreamName=f"bench-{index:05d}", ShardCount=1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(streams)))
    api.create_stream(StreamName="wide", ShardCount=shards)
    wait_until(
        lambda: (
            api.describe_stream_summary(StreamName="wide")["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        deadline_s=120,
        what="the wide stream to be ACTIVE",
    )
    api.put_records(
        StreamName="wide",
        Records=[
            {"PartitionKey": "k", "Data": b'{"n": %d}' % n, "ExplicitHashKey": "0"}
            for n in range(25)
        ],
    )
    took_s = time.perf_counter() - started
    _say(f"created {streams} streams and a {shards}-shard one in {took_s:.0f} s")


def _measure(web: httpx.Client, path: str, rounds: int) -> dict[str, float]:
    for _ in range(2):
        answer = web.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    times: list[float] = []
    for _ in range(rounds):
        began = time.perf_counter()
        answer = web.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "bytes": float(len(answer.content)),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only console")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-console-") as folder:
        node = NodeProcess(
            Path(folder) / "node",
            extra_env={"SHOAL_REPLICATION_FACTOR": "1"},
        )
        node.start()
        try:
            wait_until(lambda: serving(node.endpoint), deadline_s=START_DEADLINE_S, what="the node")
            _populate(node, args.streams, args.shards)
            pages = {
                "static console.css (baseline)": "/console/static/console.css",
                "cluster overview": "/console/",
                "streams list, page 1": "/console/streams",
                "streams list, page 20": "/console/streams?page=20",
                "streams search": "/console/streams?q=bench-009",
                f"stream page, {args.shards} shards": "/console/streams/wide",
                "record browser, 25 records": (
                    "/console/streams/wide/records?go=1&shard=shardId-000000000000"
                ),
            }
            figures: dict[str, dict[str, float]] = {}
            with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=60) as web:
                for name, path in pages.items():
                    figures[name] = _measure(web, path, args.rounds)
        finally:
            node.terminate()
    baseline = figures["static console.css (baseline)"]["p50_ms"]
    print(
        f"console pages, {args.streams} streams + a {args.shards}-shard stream, "
        f"{args.rounds} rounds each (goal: {GOAL_MS:.0f} ms)"
    )
    print(f"{'page':40} {'p50 ms':>8} {'p99 ms':>8} {'x static':>9} {'KiB':>7}  goal")
    failed = False
    for name, figure in figures.items():
        ratio = figure["p50_ms"] / baseline if baseline else 0.0
        within = figure["p99_ms"] <= GOAL_MS
        failed = failed or not within
        print(
            f"{name:40} {figure['p50_ms']:8.1f} {figure['p99_ms']:8.1f} {ratio:9.1f} "
            f"{figure['bytes'] / 1024:7.1f}  {'ok' if within else 'MISSED'}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if failed else 0
