"""`shoal leases list | delete-application` (LeaseService): KCL-style consumer leases."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from broker.cli.common import add_group, print_response, signing_key
from broker.tls import credentials_from_arguments


def add_commands(commands: Any) -> None:
    """`shoal leases list | delete-application` (LeaseService): KCL-style consumer leases."""
    group = add_group(
        commands,
        "leases",
        help_text="list and delete consumer leases and checkpoints (KCL-style workers)",
    )
    listing = group.add_parser(
        "list", help="leases with their owners, counters and checkpoints (all applications)"
    )
    listing.add_argument("--application", help="only this application (consumer group)")
    listing.add_argument("--stream", help="only leases on this stream")
    listing.set_defaults(run=_sync(_leases_list), connect=None)
    delete = group.add_parser(
        "delete-application",
        help="forget every lease and checkpoint of an application (stop its workers first)",
    )
    delete.add_argument("application")
    delete.set_defaults(run=_sync(_leases_delete_application), connect=None)


def _sync(
    command: Callable[[Any, argparse.Namespace], Awaitable[int]],
) -> Callable[[None, argparse.Namespace], int]:
    """The lease client is asyncio: run `command` with one in a loop of its own."""

    def run(_client: None, args: argparse.Namespace) -> int:
        async def with_client() -> int:
            from broker.client.leases import GrpcLeaseClient  # asyncio and the lease API

            async with GrpcLeaseClient(
                args.endpoint,
                credentials=credentials_from_arguments(args),
                signing_key=signing_key(args),
                region=args.region,
            ) as client:
                return await command(client, args)

        return asyncio.run(with_client())

    return run


async def _leases_list(client: Any, args: argparse.Namespace) -> int:
    from broker.consumers.leases import lease_to_dict

    if args.application is not None:
        applications: tuple[str, ...] = (args.application,)
    else:
        applications = await client.list_applications()
    listed = [
        lease
        for application in applications
        for lease in await client.list_leases(application=application, stream_name=args.stream)
    ]
    if args.json:
        print(json.dumps([lease_to_dict(lease) for lease in listed], indent=2))
        return 0
    if not listed:
        print("(no leases)")
        return 0
    rows = [("APPLICATION", "STREAM", "SHARD", "OWNER", "COUNTER", "CHECKPOINT", "PARENTS")]
    for lease in listed:
        checkpoint = _checkpoint_text(lease.checkpoint)
        if lease.pending_checkpoint is not None:
            checkpoint += f" (pending {_checkpoint_text(lease.pending_checkpoint)})"
        rows.append(
            (
                lease.application,
                lease.stream_name,
                lease.lease_key,
                lease.lease_owner or "-",
                str(lease.lease_counter),
                checkpoint,
                ",".join(lease.parent_shard_ids) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        print("  ".join([*cells, row[-1]]))
    return 0


def _checkpoint_text(value: Any) -> str:
    if value.is_sentinel or value.sub_sequence_number == 0:
        return str(value.sequence_number)
    return f"{value.sequence_number}/{value.sub_sequence_number}"


async def _leases_delete_application(client: Any, args: argparse.Namespace) -> int:
    from broker.consumers.leases import DeleteApplication, LeaseError

    result = await client.delete_application(DeleteApplication(application=args.application))
    if isinstance(result, LeaseError):
        print(f"error: {result.error_code.kinesis_name}: {result.message}", file=sys.stderr)
        return 1
    return print_response(
        args,
        {"Application": args.application, "DeletedLeaseCount": result},
        f"deleted application {args.application} ({result} leases)",
    )
