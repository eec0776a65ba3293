"""`shoal backup` and `shoal restore`: logical copies of streams (`broker/backup/`).

    shoal backup orders clicks --to s3://bucket/shoal      # or a directory; incremental
    shoal restore orders --from s3://bucket/shoal [--as orders-copy]

S3 is reached with boto3's usual configuration (AWS_* variables or files, and
AWS_ENDPOINT_URL_S3 for an S3-compatible server). An encrypted stream's backup is sealed with
data keys from the node's BackupKeyService (under the stream's KeyId), so restoring it needs a
cluster holding that master key. A restore prints how many records it wrote
and, with --sequence-map FILE, writes the old -> new sequence numbers as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from broker.backup.logical import BackupError
from broker.cli.common import kinesis_client, signing_key
from broker.cli.wait import wait_until
from broker.tls import credentials_from_arguments


def add_commands(commands: Any) -> None:
    backup = commands.add_parser("backup", help="copy streams to a directory or S3, incrementally")
    backup.add_argument("streams", nargs="+", metavar="stream")
    backup.add_argument("--to", required=True, help="a directory or s3://bucket/prefix")
    backup.set_defaults(run=_backup, connect=kinesis_client)
    restore = commands.add_parser("restore", help="recreate a backed-up stream on this cluster")
    restore.add_argument("stream")
    restore.add_argument("--from", dest="source", required=True, help="where the backup is")
    restore.add_argument("--as", dest="as_name", help="restore under another name")
    restore.add_argument("--sequence-map", type=Path, help="write old -> new sequence numbers")
    restore.add_argument("--timeout", type=float, default=300.0, help="per reshard step (300 s)")
    restore.set_defaults(run=_restore, connect=kinesis_client)


class _Leases:
    """`LeaseAccess` over the LeaseService (its client is asyncio: one loop per call)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._endpoint = args.endpoint
        self._credentials = credentials_from_arguments(args)
        self._signing_key = signing_key(args)
        self._region = args.region

    def _run(self, work: Any) -> Any:
        from broker.client.leases import GrpcLeaseClient

        async def run() -> Any:
            async with GrpcLeaseClient(
                self._endpoint,
                credentials=self._credentials,
                signing_key=self._signing_key,
                region=self._region,
            ) as client:
                return await work(client)

        return asyncio.run(run())

    def list_leases(self, stream: str) -> list[dict[str, Any]]:
        async def work(client: Any) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            for application in await client.list_applications():
                leases = await client.list_leases(application=application, stream_name=stream)
                rows.extend(
                    {
                        "application": application,
                        "lease_key": lease.lease_key,
                        "checkpoint": lease.checkpoint.sequence_number,
                        "sub_sequence": lease.checkpoint.sub_sequence_number,
                        "parents": list(lease.parent_shard_ids),
                    }
                    for lease in leases
                )
            return rows

        rows: list[dict[str, Any]] = self._run(work)
        return rows

    def create_leases(self, application: str, stream: str, leases: list[dict[str, Any]]) -> None:
        from broker.consumers.leases import Checkpoint, CreateLeases, LeaseError, NewLease

        new = [
            NewLease(
                shard_id=row["lease_key"],
                parent_shard_ids=tuple(row["parents"]),
                checkpoint=Checkpoint(row["checkpoint"], row["sub_sequence"]),
            )
            for row in leases
        ]

        async def work(client: Any) -> Any:
            return await client.create_leases(
                CreateLeases(application=application, stream_name=stream, leases=tuple(new))
            )

        answer = self._run(work)
        if isinstance(answer, LeaseError):
            raise BackupError(f"restoring {application}'s leases on {stream}: {answer}")


class _Limits:
    """`LimitsAccess` over the LimitsService of the node the command talks to."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    def _client(self) -> Any:
        from broker.client.limits import LimitsClient

        return LimitsClient(
            self._args.endpoint,
            credentials=credentials_from_arguments(self._args),
            signing_key=signing_key(self._args),
            region=self._args.region,
        )

    def stream_overrides(self, stream: str) -> dict[str, int]:
        with self._client() as limits:
            overrides: dict[str, int] = limits.describe_stream(stream)["overrides"]
            return overrides

    def set_stream_overrides(self, stream: str, rates: dict[str, int]) -> None:
        with self._client() as limits:
            limits.update_stream(stream, rates)


class _Keys:
    """`BackupKeys` over the BackupKeyService of the node the command talks to."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    def _client(self) -> Any:
        from broker.client.backup_keys import BackupKeyClient

        return BackupKeyClient(
            self._args.endpoint,
            credentials=credentials_from_arguments(self._args),
            signing_key=signing_key(self._args),
            region=self._args.region,
        )

    def generate(self, stream: str) -> tuple[bytes, dict[str, str]]:
        with self._client() as keys:
            made: tuple[bytes, dict[str, str]] = keys.generate(stream)
            return made

    def open(self, wrapped: dict[str, str]) -> bytes:
        with self._client() as keys:
            material: bytes = keys.open(wrapped)
            return material


def _backup(client: Any, args: argparse.Namespace) -> int:
    from broker.backup.logical import back_up
    from broker.backup.store import open_store

    store = open_store(args.to)
    for stream in args.streams:
        report = back_up(
            client.call, store, stream, leases=_Leases(args), keys=_Keys(args), limits=_Limits(args)
        )
        print(
            f"backed up {stream}: {report.records_copied} new records, {report.shards} shards, "
            f"to {store.describe()}"
        )
    return 0


def _restore(client: Any, args: argparse.Namespace) -> int:
    from broker.backup.logical import restore
    from broker.backup.store import open_store

    def wait_active(name: str) -> None:
        def check() -> tuple[bool, str]:
            summary = client.call("DescribeStreamSummary", {"StreamName": name})
            state = summary["StreamDescriptionSummary"]["StreamStatus"]
            return state == "ACTIVE", state

        wait_until(check, timeout_s=args.timeout, what=f"restoring {name}")

    def wait_keyed(name: str) -> None:
        _wait_replica_nodes_applied(args, name)

    store = open_store(args.source)
    report = restore(
        client.call,
        store,
        args.stream,
        as_name=args.as_name,
        wait_active=wait_active,
        wait_keyed=wait_keyed,
        leases=_Leases(args),
        keys=_Keys(args),
        limits=_Limits(args),
    )
    if args.sequence_map is not None:
        args.sequence_map.write_text(json.dumps(report.sequence_map, indent=1))
    print(
        f"restored {report.stream}: {report.records_written} records in "
        f"{len(report.shard_ids)} shards from {store.describe()}"
    )
    return 0


def _wait_replica_nodes_applied(args: argparse.Namespace, stream: str) -> None:
    """Waits (bounded by --timeout) until every node holding a replica of `stream` has applied
    as many metadata commands as the node this command talks to (which answered the last
    change, so holds it). A stream of that name in any account counts: waiting on a node too
    many is harmless."""
    from broker.client.admin import ClusterAdminClient

    credentials = credentials_from_arguments(args)
    with ClusterAdminClient(args.endpoint, credentials=credentials) as here:
        wanted = here.applied_commands()
        status = here.cluster_status()
    holders = {
        node_id
        for shard in status.shards
        if shard.stream_name == stream or shard.stream_name.endswith(f"/{stream}")
        for node_id in shard.replicas
    }
    for node in status.nodes:
        if node.node_id not in holders:
            continue
        with ClusterAdminClient(node.api_address, credentials=credentials) as there:

            def check(there: ClusterAdminClient = there) -> tuple[bool, str]:
                applied = there.applied_commands()
                return applied >= wanted, f"{applied} of {wanted} metadata commands applied"

            wait_until(
                check, timeout_s=args.timeout, what=f"node {node.node_id} applying {stream}'s key"
            )
