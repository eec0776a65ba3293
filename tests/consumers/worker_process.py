"""A KCL-style worker as a process of its own, journaling everything it does as JSON lines.

    python -m tests.consumers.worker_process --endpoint 127.0.0.1:50051 --stream s \
        --application app --worker-id w1 --journal /tmp/w1.jsonl [--failover-ms 3000 ...]

Used by tests/consumers/test_worker_processes.py (invariants with real processes on a real
cluster) and benchmarks/consumers.py (end-to-end latency, failover time). It runs one
`broker.client.worker.Worker` with `JournalProcessor`, which checkpoints after every batch and
at SHARD_END and on shutdown, and with `JournalingLeaseClient` around the gRPC lease client, so
the journal holds every lease operation's outcome with its counters. SIGTERM is a graceful
shutdown (checkpoint, release, exit 0); SIGKILL is a crash.

Journal lines (one JSON object each; `t_ns` is `time.monotonic_ns()`, CLOCK_MONOTONIC, which is
one clock for every process of the machine, so lines of different workers can be ordered):

* `{"ev": "started", "worker", "pid"}` once the worker runs; `{"ev": "stopped"}` after a
  graceful shutdown.
* `{"ev": "lease", "op": take|steal|renew|release|checkpoint, "shard", "expected_counter",
  "ok": true|false|null, "counter", ...}`: one per lease call. `ok` false is a refusal (the
  compare-and-set failed), null an unknown outcome (the service did not answer); `counter` is
  the lease's counter after a success. Checkpoints carry `"checkpoint"` (the sequence number).
* `{"ev": "records", "shard", "records": [[data, sequence number, sub-sequence], ...]}`: one
  batch handed to the processor, stamped when `process_records` began.
* `{"ev": "initialize" | "lease_lost" | "shard_ended" | "shutdown_requested" |
  "checkpoint_lost", "shard"}`: the processor's lifecycle (`checkpoint_lost`: a checkpoint
  raised LeaseLostError).

Durability: each line is one `os.write` on an O_APPEND descriptor, unbuffered, made before the
processor returns (so before its checkpoint). kill -9 ends the process, not the kernel: every
line written is in the page cache and in the file, and no line is half written. fsync would only
add protection against a machine crash, which these checks do not simulate, at a cost on a
shared machine; `--fsync` turns it on per line anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

from broker.client.grpc_client import AsyncShoalClient
from broker.client.leases import GrpcLeaseClient
from broker.client.worker import (
    InitializationInput,
    LeaseLostError,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
    Worker,
    WorkerConfig,
)
from broker.consumers.leases import (
    CheckpointLease,
    CreateLeases,
    DeleteApplication,
    Lease,
    LeaseError,
    ReleaseLease,
    RenewLease,
    StealLease,
    TakeLease,
)
from broker.errors import ShoalError


class Journal:
    """An append-only JSON-lines file: one unbuffered write per line (module docstring)."""

    def __init__(self, path: str, *, worker_id: str, fsync: bool = False) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._worker_id = worker_id
        self._fsync = fsync

    def write(self, event: str, **fields: Any) -> None:
        line = {"ev": event, "worker": self._worker_id, "t_ns": time.monotonic_ns(), **fields}
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, data)
        assert written == len(data), "a short write to a regular file"
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class JournalingLeaseClient:
    """The worker's `LeaseClient`: a `GrpcLeaseClient` that journals each call's outcome."""

    def __init__(self, inner: GrpcLeaseClient, journal: Journal) -> None:
        self._inner = inner
        self._journal = journal

    def _record(self, op: str, lease_key: str, expected: int, result: Any, **extra: Any) -> None:
        if isinstance(result, Lease):
            self._journal.write(
                "lease",
                op=op,
                shard=lease_key,
                expected_counter=expected,
                ok=True,
                counter=result.lease_counter,
                owner=result.lease_owner,
                **extra,
            )
        else:
            assert isinstance(result, LeaseError)
            self._journal.write(
                "lease",
                op=op,
                shard=lease_key,
                expected_counter=expected,
                ok=False,
                why=result.message[:200],
                **extra,
            )

    async def _journaled(self, op: str, key: str, expected: int, call: Any, **extra: Any) -> Any:
        try:
            result = await call
        except ShoalError as error:
            self._journal.write(
                "lease",
                op=op,
                shard=key,
                expected_counter=expected,
                ok=None,
                error=str(error)[:200],
                **extra,
            )
            raise
        self._record(op, key, expected, result, **extra)
        return result

    async def create_leases(self, operation: CreateLeases) -> tuple[Lease, ...] | LeaseError:
        return await self._inner.create_leases(operation)

    async def list_leases(self, *, application: str, stream_name: str) -> tuple[Lease, ...]:
        return await self._inner.list_leases(application=application, stream_name=stream_name)

    async def take(self, operation: TakeLease) -> Lease | LeaseError:
        result: Lease | LeaseError = await self._journaled(
            "take", operation.lease_key, operation.expected_counter, self._inner.take(operation)
        )
        return result

    async def steal(self, operation: StealLease) -> Lease | LeaseError:
        result: Lease | LeaseError = await self._journaled(
            "steal", operation.lease_key, operation.expected_counter, self._inner.steal(operation)
        )
        return result

    async def renew(self, operation: RenewLease) -> Lease | LeaseError:
        result: Lease | LeaseError = await self._journaled(
            "renew", operation.lease_key, operation.expected_counter, self._inner.renew(operation)
        )
        return result

    async def release(self, operation: ReleaseLease) -> Lease | LeaseError:
        result: Lease | LeaseError = await self._journaled(
            "release",
            operation.lease_key,
            operation.expected_counter,
            self._inner.release(operation),
        )
        return result

    async def checkpoint(self, operation: CheckpointLease) -> Lease | LeaseError:
        value = operation.checkpoint
        result: Lease | LeaseError = await self._journaled(
            "checkpoint",
            operation.lease_key,
            operation.expected_counter,
            self._inner.checkpoint(operation),
            checkpoint=value.sequence_number,
            sub=value.sub_sequence_number,
            pending=operation.pending,
        )
        return result

    async def delete_application(self, operation: DeleteApplication) -> int | LeaseError:
        return await self._inner.delete_application(operation)


class JournalProcessor:
    """Journals every batch, then checkpoints it; checkpoints SHARD_END and on shutdown."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._shard_id = ""

    async def initialize(self, initialization_input: InitializationInput) -> None:
        self._shard_id = initialization_input.shard_id
        self._journal.write(
            "initialize",
            shard=self._shard_id,
            checkpoint=initialization_input.extended_sequence_number.sequence_number,
        )

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        records = [
            [r.data.decode(errors="backslashreplace"), r.sequence_number, r.sub_sequence_number]
            for r in process_records_input.records
        ]
        self._journal.write("records", shard=self._shard_id, records=records)
        await self._checkpoint(process_records_input.checkpointer.checkpoint())

    async def _checkpoint(self, call: Any) -> None:
        try:
            await call
        except LeaseLostError:
            self._journal.write("checkpoint_lost", shard=self._shard_id)
            raise

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        self._journal.write("lease_lost", shard=self._shard_id)

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        self._journal.write("shard_ended", shard=self._shard_id)
        await self._checkpoint(shard_ended_input.checkpointer.checkpoint())

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        self._journal.write("shutdown_requested", shard=self._shard_id)
        await self._checkpoint(shutdown_requested_input.checkpointer.checkpoint())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.consumers.worker_process")
    parser.add_argument("--endpoint", required=True, help="a node's gRPC host:port")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--application", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--journal", required=True, help="JSON-lines file to append to")
    parser.add_argument("--failover-ms", type=int, default=10_000)
    parser.add_argument("--take-interval-ms", type=int, default=None)
    parser.add_argument("--poll-interval-ms", type=int, default=1_000)
    parser.add_argument("--shard-sync-interval-ms", type=int, default=60_000)
    parser.add_argument("--parent-poll-interval-ms", type=int, default=10_000)
    parser.add_argument("--retrieval", choices=("polling", "fanout"), default="polling")
    parser.add_argument("--fsync", action="store_true", help="fsync after every journal line")
    return parser


async def _run(args: argparse.Namespace) -> None:
    journal = Journal(args.journal, worker_id=args.worker_id, fsync=args.fsync)
    kinesis = AsyncShoalClient(args.endpoint)
    lease_client = GrpcLeaseClient(args.endpoint)
    retrieval: Literal["polling", "fanout"] = args.retrieval
    worker = Worker(
        application=args.application,
        stream_name=args.stream,
        processor_factory=lambda: JournalProcessor(journal),
        lease_client=JournalingLeaseClient(lease_client, journal),
        kinesis=kinesis,
        config=WorkerConfig(
            worker_id=args.worker_id,
            failover_ms=args.failover_ms,
            lease_take_interval_ms=args.take_interval_ms,
            polling_idle_interval_ms=args.poll_interval_ms,
            shard_sync_interval_ms=args.shard_sync_interval_ms,
            parent_poll_interval_ms=args.parent_poll_interval_ms,
            retry_backoff_ms_min=20,
            retry_backoff_ms_max=500,
            retrieval=retrieval,
        ),
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    loop.add_signal_handler(
        signal.SIGTERM, lambda: stopping.append(loop.create_task(worker.shutdown()))
    )
    journal.write("started", pid=os.getpid())
    try:
        await worker.run()
        journal.write("stopped", statistics=repr(worker.statistics()))
    finally:
        await lease_client.close()
        await kinesis.close()
        journal.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
