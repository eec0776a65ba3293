"""The `shoal` command: `shoal serve` runs a node; other subcommands talk to one over gRPC.

Parsing only: `serve` builds a Config and hands it to `node.Node`; the others call the public API
through `client.grpc_client.ShoalClient` and print readable text (or JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from broker import cli_capacity, cli_consumers
from broker.client.grpc_client import ShoalClient
from broker.config import add_serve_arguments, config_from_environment
from broker.errors import ErrorCode, ShoalError
from broker.tls import add_client_arguments, credentials_from_arguments

DEFAULT_ENDPOINT = "127.0.0.1:50051"
_FOLLOW_POLL_S = 1.0  # `shoal read --follow` polls like a KCL worker's default of about 1 s


def main(argv: Sequence[str] | None = None) -> int:
    # Assertions guard invariants in production too (house style B.9): refuse `python -O`.
    if not __debug__:
        print("error: shoal must not run with python -O (assertions are required)", file=sys.stderr)
        return 2
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "serve":
        return _serve(args)
    try:
        if args.command == "cluster":
            if args.run is None:
                args.cluster_help()
                return 2
            from broker.client.admin import ClusterAdminClient  # only the cluster group needs it

            with ClusterAdminClient(
                args.endpoint, credentials=credentials_from_arguments(args)
            ) as admin:
                return int(args.run(admin, args))
        if args.command == "limits":
            from broker import cli_limits

            return cli_limits.run(args, credentials_from_arguments(args))
        if args.command in cli_capacity.COMMANDS:
            return cli_capacity.run(args, credentials_from_arguments(args))
        if args.command == "leases":
            if args.run is None:
                args.leases_help()
                return 2
            return asyncio.run(_run_leases(args))
        with ShoalClient(args.endpoint, credentials=credentials_from_arguments(args)) as client:
            return int(args.run(client, args))
    except ShoalError as error:
        if error.code is ErrorCode.UNAVAILABLE:
            print(
                f"error: cannot reach Shoal at {args.endpoint} (is `scripts/serve` running? "
                "a TLS node needs --tls-ca-file, and a client certificate unless it says "
                "tls_client_auth = none)",
                file=sys.stderr,
            )
            return 2
        print(f"error: {error.code.kinesis_name}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Shoal, a Kinesis-compatible broker")
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("SHOAL_ENDPOINT", DEFAULT_ENDPOINT),
        help="host:port of a node's gRPC API (env SHOAL_ENDPOINT)",
    )
    parser.add_argument("--json", action="store_true", help="print raw JSON responses")
    add_client_arguments(parser)
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run a node")
    add_serve_arguments(serve)

    create = commands.add_parser("create-stream", help="create a stream")
    create.add_argument("stream")
    create.add_argument("--shard-count", type=int, default=None)
    create.add_argument("--on-demand", action="store_true", help="ON_DEMAND capacity mode")
    create.set_defaults(run=_create_stream)

    delete = commands.add_parser("delete-stream", help="delete a stream")
    delete.add_argument("stream")
    delete.add_argument(
        "--enforce-consumer-deletion",
        action="store_true",
        help="delete even with registered enhanced fan-out consumers (they go with it)",
    )
    delete.set_defaults(
        run=lambda c, a: _print(
            a,
            c.call(
                "DeleteStream",
                {
                    "StreamName": a.stream,
                    "EnforceConsumerDeletion": a.enforce_consumer_deletion,
                },
            ),
        )
    )

    listing = commands.add_parser("list-streams", help="list streams")
    listing.set_defaults(run=_list_streams)

    describe = commands.add_parser("describe-stream", help="describe a stream and its shards")
    describe.add_argument("stream")
    describe.set_defaults(run=_describe_stream)

    put = commands.add_parser("put", help="write one record")
    put.add_argument("stream")
    put.add_argument("data", nargs="?", help="the record's data (default: read stdin)")
    put.add_argument("--partition-key", "-k", required=True)
    put.set_defaults(run=_put)

    read = commands.add_parser("read", help="read records from every shard (or one)")
    read.add_argument("stream")
    read.add_argument("--shard-id")
    read.add_argument(
        "--from", dest="start", choices=["trim-horizon", "latest"], default="trim-horizon"
    )
    read.add_argument("--follow", action="store_true", help="keep reading new records")
    read.add_argument("--limit", type=int, default=1000, help="records per GetRecords call")
    read.set_defaults(run=_read)

    _add_cluster_commands(commands)
    _add_lease_commands(commands)
    _add_limits_commands(commands)
    cli_capacity.add_commands(commands)
    cli_consumers.add_commands(commands)

    scale = commands.add_parser("update-shard-count", help="reshard uniformly")
    scale.add_argument("stream")
    scale.add_argument("target", type=int)
    scale.set_defaults(run=_update_shard_count)
    return parser


def _add_cluster_commands(commands: Any) -> None:
    """`shoal cluster status | add-node | remove-node | drain` (ClusterAdminService)."""
    cluster = commands.add_parser("cluster", help="inspect and change cluster membership")
    cluster.set_defaults(run=None, cluster_help=cluster.print_help)
    group = cluster.add_subparsers(dest="cluster_command")
    status = group.add_parser("status", help="nodes, their states and load, the quorum")
    status.add_argument("--shards", action="store_true", help="list every shard's placement")
    status.set_defaults(run=_cluster_status)
    add = group.add_parser(
        "add-node",
        help="make a Raft address a metadata voter (then start that node with --peers)",
    )
    add.add_argument("raft_address", help="host:raft_port of the new voter")
    add.set_defaults(run=lambda a, args: _done(args, a.add_voter(args.raft_address)))
    remove = group.add_parser(
        "remove-node",
        help="remove a metadata voter (drain the node first; stop it afterwards)",
    )
    remove.add_argument("raft_address", help="host:raft_port of the voter to remove")
    remove.set_defaults(run=lambda a, args: _done(args, a.remove_voter(args.raft_address)))
    drain = group.add_parser(
        "drain",
        help="mark a node DRAINING: its shard leaderships, then its replicas, move away",
    )
    drain.add_argument("node_id")
    drain.add_argument("--timeout-ms", type=int, default=30_000, help="how long to wait")
    drain.set_defaults(run=_cluster_drain)


def _add_limits_commands(commands: Any) -> None:
    from broker import cli_limits

    cli_limits.add_commands(commands)


def _add_lease_commands(commands: Any) -> None:
    """`shoal leases list | delete-application` (LeaseService): KCL-style consumer leases."""
    group_parser = commands.add_parser(
        "leases", help="list and delete consumer leases and checkpoints (KCL-style workers)"
    )
    group_parser.set_defaults(run=None, leases_help=group_parser.print_help)
    group = group_parser.add_subparsers(dest="leases_command")
    listing = group.add_parser(
        "list", help="leases with their owners, counters and checkpoints (all applications)"
    )
    listing.add_argument("--application", help="only this application (consumer group)")
    listing.add_argument("--stream", help="only leases on this stream")
    listing.set_defaults(run=_leases_list)
    delete = group.add_parser(
        "delete-application",
        help="forget every lease and checkpoint of an application (stop its workers first)",
    )
    delete.add_argument("application")
    delete.set_defaults(run=_leases_delete_application)


async def _run_leases(args: argparse.Namespace) -> int:
    from broker.client.leases import GrpcLeaseClient  # asyncio and the lease API: only here

    async with GrpcLeaseClient(
        args.endpoint, credentials=credentials_from_arguments(args)
    ) as client:
        return int(await args.run(client, args))


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
    from broker.consumers.leases import LeaseError

    result = await client.delete_application(application=args.application)
    if isinstance(result, LeaseError):
        print(f"error: {result.error_code.kinesis_name}: {result.message}", file=sys.stderr)
        return 1
    return _print(
        args,
        {"Application": args.application, "DeletedLeaseCount": result},
        f"deleted application {args.application} ({result} leases)",
    )


def _done(args: argparse.Namespace, _: None) -> int:
    return _print(args, {}, "ok")


def _cluster_status(admin: Any, args: argparse.Namespace) -> int:
    status = admin.cluster_status()
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(status), indent=2))
        return 0
    lines = [
        f"cluster      {status.cluster_id}",
        f"answered by  {status.answered_by}",
        f"quorum       leader {status.quorum_leader or '(none)'}, term {status.raft_term}, "
        f"commit index {status.raft_commit_index}",
        f"controller   {status.controller or '(none)'}",
        "",
        f"{'NODE':<16} {'STATE':<9} {'VOTER':<6} {'INC':>4} {'LEADS':>6} {'REPLICAS':>9}  API",
    ]
    lines.extend(
        f"{node.node_id:<16} {node.state:<9} {'yes' if node.voter else 'no':<6} "
        f"{node.incarnation:>4} {node.leader_count:>6} {node.replica_count:>9}  "
        f"{node.api_address}"
        for node in status.nodes
    )
    if args.shards:
        lines.append("")
        lines.extend(
            f"{shard.stream_name}/{shard.shard_id}  {shard.state:<8} epoch {shard.epoch:<4} "
            f"leader {shard.leader or '-':<12} replicas {','.join(shard.replicas)}"
            for shard in status.shards
        )
    print("\n".join(lines))
    return 0


def _cluster_drain(admin: Any, args: argparse.Namespace) -> int:
    left = admin.drain(args.node_id, timeout_ms=args.timeout_ms)
    if args.json:
        print(json.dumps({"LeadershipsLeft": left}))
    elif left:
        print(f"{args.node_id} is DRAINING; it still leads {left} shards (try again later)")
    else:
        print(f"{args.node_id} is DRAINING and leads no shard")
    return 0 if left == 0 else 1


_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class _EventFormatter(logging.Formatter):
    """Log lines as `event key=value ...`: our events are named, with their fields passed as
    `extra` (house style B.10), and the standard format would drop the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD_RECORD_FIELDS and key not in ("message", "asctime")
        }
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={value!r}" for key, value in sorted(fields.items()))


def _serve(args: argparse.Namespace) -> int:
    from broker.node import Node  # imported here: only `serve` needs RocksDB and pysyncobj

    handler = logging.StreamHandler()
    handler.setFormatter(_EventFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        config = config_from_environment(vars(args), args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = Node(config)
    data_dir = Path(config.data_dir).resolve()

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        drain_first = False

        def on_signal(signum: int) -> None:
            nonlocal drain_first
            # SIGTERM (Kubernetes, systemd, `scripts/cluster` stopping one node) drains first;
            # SIGINT (Ctrl-C) stops at once, as when a whole local cluster goes down together.
            drain_first = drain_first or signum == signal.SIGTERM
            stopping.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await node.start()
        except BaseException:
            # A failed start (an unreadable certificate, a port taken...) leaves the writer and
            # quorum threads running: stop them, or the process would never exit (and never
            # be restarted).
            await node.stop()
            raise
        scheme = "https" if config.tls_cert_file is not None else "http"
        print(
            f"shoal: node {config.node_id} serving gRPC on {config.host}:{node.grpc_port}, "
            f"the AWS API on {scheme}://{config.host}:{node.http_port}, data in {data_dir}",
            flush=True,
        )
        stop_waiter = asyncio.create_task(stopping.wait())
        failure_waiter = asyncio.create_task(node.failed.wait())
        await asyncio.wait((stop_waiter, failure_waiter), return_when=asyncio.FIRST_COMPLETED)
        stop_waiter.cancel()
        failure_waiter.cancel()
        if drain_first:
            # Hand shard and quorum leaderships to other nodes first (bounded), so producers
            # see a planned move instead of a failover.
            await node.drain_for_shutdown()
        await node.stop()
        return 0 if stopping.is_set() else 1  # a background task failed: let it restart us

    return asyncio.run(run())


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _print(args: argparse.Namespace, response: dict[str, Any], text: str | None = None) -> int:
    if args.json or text is None:
        print(json.dumps(_jsonable(response), indent=2))
    else:
        print(text)
    return 0


def _create_stream(client: ShoalClient, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"StreamName": args.stream}
    if args.shard_count is not None:
        request["ShardCount"] = args.shard_count
    if args.on_demand:
        request["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
    elif args.shard_count is None:
        request["ShardCount"] = 1
    return _print(args, client.call("CreateStream", request), f"created stream {args.stream}")


def _list_streams(client: ShoalClient, args: argparse.Namespace) -> int:
    names: list[str] = []
    request: dict[str, Any] = {}
    while True:
        response = client.call("ListStreams", request)
        names.extend(response.get("StreamNames", []))
        if not response.get("HasMoreStreams"):
            break
        request = {"NextToken": response["NextToken"]}
    return _print(args, {"StreamNames": names}, "\n".join(names) if names else "(no streams)")


def _describe_stream(client: ShoalClient, args: argparse.Namespace) -> int:
    summary = client.call("DescribeStreamSummary", {"StreamName": args.stream})
    shards: list[dict[str, Any]] = []
    request: dict[str, Any] = {"StreamName": args.stream}
    while True:
        page = client.call("ListShards", request)
        shards.extend(page.get("Shards", []))
        if "NextToken" not in page:
            break
        request = {"NextToken": page["NextToken"]}
    s = summary["StreamDescriptionSummary"]
    lines = [
        f"stream     {s['StreamName']} ({s['StreamStatus']}, "
        f"{s['StreamModeDetails']['StreamMode']})",
        f"arn        {s['StreamARN']}",
        f"retention  {s['RetentionPeriodHours']} h",
        f"shards     {s['OpenShardCount']} open, {len(shards)} listed",
    ]
    for shard in shards:
        closed = "closed" if "EndingSequenceNumber" in shard["SequenceNumberRange"] else "open"
        lineage = shard.get("ParentShardId", "")
        if "AdjacentParentShardId" in shard:
            lineage += "+" + shard["AdjacentParentShardId"]
        lines.append(
            f"  {shard['ShardId']}  {closed:6}  "
            f"hash {shard['HashKeyRange']['StartingHashKey']}.."
            f"{shard['HashKeyRange']['EndingHashKey']}" + (f"  parent {lineage}" if lineage else "")
        )
    return _print(args, {"Summary": s, "Shards": shards}, "\n".join(lines))


def _put(client: ShoalClient, args: argparse.Namespace) -> int:
    data = args.data.encode() if args.data is not None else sys.stdin.buffer.read()
    response = client.call(
        "PutRecord", {"StreamName": args.stream, "PartitionKey": args.partition_key, "Data": data}
    )
    return _print(args, response, f"{response['ShardId']} {response['SequenceNumber']}")


def _read(client: ShoalClient, args: argparse.Namespace) -> int:
    if args.shard_id is not None:
        shard_ids = [args.shard_id]
    else:
        shards = client.call("ListShards", {"StreamName": args.stream}).get("Shards", [])
        shard_ids = [shard["ShardId"] for shard in shards]
    kind = "TRIM_HORIZON" if args.start == "trim-horizon" else "LATEST"
    iterators: dict[str, str | None] = {
        shard_id: client.call(
            "GetShardIterator",
            {"StreamName": args.stream, "ShardId": shard_id, "ShardIteratorType": kind},
        )["ShardIterator"]
        for shard_id in shard_ids
    }
    while any(iterators.values()):
        caught_up = True
        for shard_id, iterator in list(iterators.items()):
            if iterator is None:
                continue
            response = client.call("GetRecords", {"ShardIterator": iterator, "Limit": args.limit})
            for record in response.get("Records", []):
                _print_record(args, shard_id, record)
            iterators[shard_id] = response.get("NextShardIterator")
            if response.get("Records") or response.get("MillisBehindLatest", 0) > 0:
                caught_up = False
        if caught_up:
            if not args.follow:
                break
            time.sleep(_FOLLOW_POLL_S)
    return 0


def _print_record(args: argparse.Namespace, shard_id: str, record: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(_jsonable({"ShardId": shard_id, **record})))
        return
    data = record["Data"]
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = "base64:" + base64.b64encode(data).decode()
    print(f"{shard_id} {record['SequenceNumber']} {record.get('PartitionKey', '')} {text}")


def _update_shard_count(client: ShoalClient, args: argparse.Namespace) -> int:
    response = client.call(
        "UpdateShardCount",
        {
            "StreamName": args.stream,
            "TargetShardCount": args.target,
            "ScalingType": "UNIFORM_SCALING",
        },
    )
    return _print(
        args,
        response,
        f"resharding {args.stream}: {response['CurrentShardCount']} -> {args.target}",
    )


if __name__ == "__main__":
    sys.exit(main())
