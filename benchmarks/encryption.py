"""`scripts/bench --only encryption`: what encryption at rest costs (issue 15, item 6).

One `shoal serve` process (a real node: gRPC door, group commit, RocksDB), three streams of one
shard each, two in the clear and one encrypted (StartStreamEncryption under the AWS-managed
key: every batch sealed with AES-256-GCM, `broker/log/encryption.py`), measured in the same
run, each call alternating between the streams so that load on the machine (shared with
other work) hits them alike. The second clear stream is an A/A control: its difference from
the first is the run's noise floor, printed next to the encrypted stream's difference (a p99
gap no larger than the A/A one is not the cipher's):

- PutRecords throughput: 500 records of 1 KiB per call, as fast as one producer goes;
- PutRecord latency: p50 and p99 of sequential single-record calls.

Printed as the encrypted stream's figure, the clear one's, and the ratio (goal: throughput
>= 0.85 x, p99 within +1 ms). Plus the log store alone (`RocksLogStore.append` and `read` of
the same batches with and without a data key), CPU seconds per GiB, which isolates the cipher's
own cost from the node's. `--seconds N` per round (default 3), `--rounds N` (default 4),
`--latency-calls N` (default 2,000), `--json PATH` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from broker.client.grpc_client import ShoalClient
from broker.log.encryption import DATA_KEY_BYTES, DataKey
from broker.log.records import AppendBatch, NewRecord
from broker.log.rocks_store import RocksLogStore
from broker.types import Offset, ShardUid
from tests.chaos.workload import create_stream
from tests.support import NodeProcess, serving, wait_until

RECORD = os.urandom(1024)
BATCH = 500
STREAMS = {"clear": False, "clear-again": False, "sealed": True}


def _alternating_put_records(client: ShoalClient, seconds: float) -> dict[str, float]:
    """Records per second of each stream, calls alternating between them (so drift in the
    machine's load, shared with other work, hits both alike): each stream's records over the
    time its own calls took."""
    records = [{"PartitionKey": f"k{i}", "Data": RECORD} for i in range(BATCH)]
    spent = dict.fromkeys(STREAMS, 0.0)
    done = dict.fromkeys(STREAMS, 0)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for name in STREAMS:
            began = time.perf_counter()
            answer = client.call("PutRecords", {"StreamName": name, "Records": records})
            spent[name] += time.perf_counter() - began
            assert answer["FailedRecordCount"] == 0, answer
            done[name] += BATCH
    return {name: done[name] / spent[name] for name in STREAMS}


def _alternating_put_record_ms(client: ShoalClient, calls: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {name: [] for name in STREAMS}
    for _ in range(calls):
        for name in STREAMS:
            request = {"StreamName": name, "PartitionKey": "k", "Data": RECORD}
            began = time.perf_counter()
            client.call("PutRecord", request)
            latencies[name].append((time.perf_counter() - began) * 1000)
    return latencies


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def node_figures(seconds: float, rounds: int, latency_calls: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-encryption-"))
    node = NodeProcess(directory / "node", extra_env={"SHOAL_SCRUB_BYTES_PER_SECOND": "0"})
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=60, what="the node to serve")
        with ShoalClient(node.endpoint, timeout_s=30) as client:
            for name, sealed in STREAMS.items():
                create_stream(node.endpoint, name, 1)
                if sealed:
                    client.call(
                        "StartStreamEncryption",
                        {"StreamName": name, "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
                    )
            _alternating_put_records(client, 1.0)  # warm up both paths
            rates: dict[str, list[float]] = {name: [] for name in STREAMS}
            latencies: dict[str, list[float]] = {name: [] for name in STREAMS}
            for _ in range(rounds):
                for name, rate in _alternating_put_records(client, seconds).items():
                    rates[name].append(rate)
                for name, taken in _alternating_put_record_ms(
                    client, latency_calls // rounds
                ).items():
                    latencies[name] += taken
    finally:
        node.terminate()
        shutil.rmtree(directory, ignore_errors=True)
    figures: dict[str, Any] = {}
    for name in STREAMS:
        figures[name] = {
            "put_records_per_s": round(statistics.median(rates[name])),
            "put_record_p50_ms": round(_p(latencies[name], 0.5), 3),
            "put_record_p99_ms": round(_p(latencies[name], 0.99), 3),
        }
    clear, sealed = figures["clear"], figures["sealed"]
    figures["throughput_ratio"] = round(sealed["put_records_per_s"] / clear["put_records_per_s"], 3)
    figures["p99_delta_ms"] = round(sealed["put_record_p99_ms"] - clear["put_record_p99_ms"], 3)
    again = figures["clear-again"]
    figures["aa_throughput_ratio"] = round(
        again["put_records_per_s"] / clear["put_records_per_s"], 3
    )
    figures["aa_p99_delta_ms"] = round(again["put_record_p99_ms"] - clear["put_record_p99_ms"], 3)
    return figures


class _OneKey:
    def __init__(self) -> None:
        self.key = DataKey.of(1, os.urandom(DATA_KEY_BYTES))

    def sealing_key(self, shard_uid: ShardUid) -> DataKey | None:
        return self.key

    def opening_key(self, shard_uid: ShardUid, version: int) -> DataKey:
        return self.key


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def store_figures(mib: int) -> dict[str, Any]:
    """CPU s/GiB of append and read through `RocksLogStore`, clear and sealed."""
    batches = mib * (1 << 20) // (len(RECORD) * BATCH)
    records = tuple(NewRecord(f"k{i}", RECORD) for i in range(BATCH))
    gib = batches * BATCH * len(RECORD) / (1 << 30)
    figures: dict[str, Any] = {}
    for name, keys in (("clear", None), ("sealed", _OneKey())):
        directory = Path(tempfile.mkdtemp(prefix="shoal-bench-seal-"))
        store = RocksLogStore(directory / "log", keys=keys)
        try:
            before = _cpu_s()
            for i in range(batches):
                batch = AppendBatch(
                    shard_uid=ShardUid(1),
                    first_offset=Offset(i * BATCH),
                    arrival_ms=i,
                    records=records,
                )
                store.append([batch])
            append_s = (_cpu_s() - before) / gib
            before = _cpu_s()
            start = Offset(0)
            while start < batches * BATCH:
                taken = store.read(
                    ShardUid(1),
                    start_offset=start,
                    end_offset=Offset(batches * BATCH),
                    records_max=10_000,
                    bytes_max=10 << 20,
                )
                start = Offset(taken[-1].offset + 1)
            read_s = (_cpu_s() - before) / gib
        finally:
            store.close()
            shutil.rmtree(directory, ignore_errors=True)
        figures[name] = {
            "append_cpu_s_per_gib": round(append_s, 2),
            "read_cpu_s_per_gib": round(read_s, 2),
        }
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only encryption", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency-calls", type=int, default=2_000)
    parser.add_argument("--mib", type=int, default=256, help="the log-store figures' size")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = {"store": store_figures(args.mib)}
    print(json.dumps(figures, indent=2), flush=True)
    figures["node"] = node_figures(args.seconds, args.rounds, args.latency_calls)
    node = figures["node"]
    print(json.dumps(node, indent=2), flush=True)
    print(
        f"encrypted vs clear: PutRecords {node['throughput_ratio']:.2f} x (goal >= 0.85), "
        f"PutRecord p99 {node['p99_delta_ms']:+.2f} ms (goal <= +1 ms); noise floor (clear vs "
        f"clear): {node['aa_throughput_ratio']:.2f} x, p99 {node['aa_p99_delta_ms']:+.2f} ms",
        flush=True,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
