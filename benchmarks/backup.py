"""`scripts/bench --only backup`: what sealing an encrypted stream's backup costs (s28).

One `shoal serve` process (per-shard quotas lifted: this measures the backup, not AWS's
quotas), two streams of 2 shards holding the same records (`--records`, 1 KiB each): one in
the clear, one encrypted. Each round backs both up to a fresh directory (the clear one as JSON
lines, the encrypted one sealed: a data key from the BackupKeyService, AES-256-GCM segments)
reads each backup whole (the sealed one opening its keys and authenticating every segment: the
pass a restore makes before it creates anything, which isolates the cipher's cost), and
restores both under new names (the sealed one into an encrypted stream, so its figure also
holds that pass and the encrypted write path), in alternating order so that the machine's
load (shared with other work) hits both alike. Stream state timers are 0. Printed per step:
each side's median wall seconds and the client's CPU seconds (where segments are sealed and
opened) over the rounds, and sealed / clear as ratios. `--rounds N`
(default 3), `--json PATH` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from broker.backup import logical
from broker.backup.logical import back_up, restore
from broker.backup.store import DirectoryStore
from broker.client.backup_keys import BackupKeyClient
from broker.client.grpc_client import ShoalClient
from tests.support import NodeProcess, serving, wait_until

UNTHROTTLED = ("write_bytes", "write_records", "read_calls", "read_bytes")
RECORD = os.urandom(1024)
STREAMS = {"clear": False, "sealed": True}


def _active(client: ShoalClient, name: str) -> None:
    def check() -> bool:
        summary = client.call("DescribeStreamSummary", {"StreamName": name})
        return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")

    wait_until(check, deadline_s=60, what=f"{name} ACTIVE")


def _fill(client: ShoalClient, records: int) -> None:
    for name, encrypted in STREAMS.items():
        client.call("CreateStream", {"StreamName": name, "ShardCount": 2})
        _active(client, name)
        if encrypted:
            client.call(
                "StartStreamEncryption",
                {"StreamName": name, "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
            )
            _active(client, name)
    for start in range(0, records, 500):
        batch = [
            {"PartitionKey": f"k{i}", "Data": RECORD}
            for i in range(start, min(records, start + 500))
        ]
        for name in STREAMS:
            client.call("PutRecords", {"StreamName": name, "Records": batch})


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds, and this (client) process's CPU seconds: where segments are sealed and
    opened, and a figure the machine's load does not stretch."""
    began, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - began, time.process_time() - cpu


def _one(
    client: ShoalClient, keys: BackupKeyClient, directory: Path, name: str, round_: int
) -> dict[str, tuple[float, float]]:
    """One stream's backup, a read of the whole backup (opening its keys and authenticating
    each sealed segment: the pass a restore makes before creating anything), its restore."""
    store = DirectoryStore(directory / f"backup-{round_}-{name}")
    backup_s = _timed(lambda: back_up(client.call, store, name, keys=keys))

    def read_all() -> None:
        manifest = logical._load_manifest(store, name)  # the restore's own first pass
        assert manifest is not None
        seal_key = logical._check_manifest_seal(manifest, keys)
        opened = logical._open_data_keys(manifest, keys, seal_key)
        for entry in manifest["shards"]:
            for _ in logical._records(store, entry, opened):
                pass

    read_s = _timed(read_all)
    target = f"{name}-{round_}"
    restore_s = _timed(
        lambda: restore(
            client.call,
            store,
            name,
            as_name=target,
            wait_active=lambda stream: _active(client, stream),
            wait_keyed=lambda _: None,
            keys=keys,
        )
    )
    client.call("DeleteStream", {"StreamName": target})
    return {"backup": backup_s, "read": read_s, "restore": restore_s}


STEPS = ("backup", "read", "restore")


def figures(records: int, rounds: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-backup-"))
    settings = {f"SHOAL_SHARD_{name.upper()}_PER_SECOND": "0" for name in UNTHROTTLED}
    settings |= {f"SHOAL_STREAM_{state}_MS": "0" for state in ("CREATING", "UPDATING", "DELETING")}
    node = NodeProcess(directory / "node", extra_env=settings)
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=60, what="the node to serve")
        seconds: dict[str, dict[str, list[tuple[float, float]]]] = {
            step: {name: [] for name in STREAMS} for step in STEPS
        }
        with ShoalClient(node.endpoint) as client, BackupKeyClient(node.endpoint) as keys:
            _fill(client, records)
            for round_ in range(rounds):
                order = list(STREAMS) if round_ % 2 == 0 else list(reversed(STREAMS))
                for name in order:
                    for step, spent in _one(client, keys, directory, name, round_).items():
                        seconds[step][name].append(spent)
        result: dict[str, Any] = {"records": records, "record_bytes": len(RECORD), "rounds": rounds}
        for step, sides in seconds.items():
            row: dict[str, float] = {}
            for index, kind in enumerate(("s", "cpu_s")):
                clear = statistics.median(t[index] for t in sides["clear"])
                sealed = statistics.median(t[index] for t in sides["sealed"])
                row |= {f"clear_{kind}": clear, f"sealed_{kind}": sealed}
                row[f"ratio_{kind}"] = sealed / clear
            result[step] = row
        return result
    finally:
        node.terminate()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only backup", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    result = figures(args.records, args.rounds)
    for step in STEPS:
        row = result[step]
        print(
            f"{step:8} {args.records} records of 1 KiB: wall clear {row['clear_s']:.2f} s, "
            f"sealed {row['sealed_s']:.2f} s (x{row['ratio_s']:.2f}); client CPU clear "
            f"{row['clear_cpu_s']:.2f} s, sealed {row['sealed_cpu_s']:.2f} s "
            f"(x{row['ratio_cpu_s']:.2f})"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
