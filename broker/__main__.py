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

from broker.client.grpc_client import ShoalClient
from broker.config import add_serve_arguments, config_from_environment
from broker.errors import ErrorCode, ShoalError

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
        with ShoalClient(args.endpoint) as client:
            return int(args.run(client, args))
    except ShoalError as error:
        if error.code is ErrorCode.UNAVAILABLE:
            print(
                f"error: cannot reach Shoal at {args.endpoint} (is `scripts/serve` running?)",
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
    delete.set_defaults(
        run=lambda c, a: _print(a, c.call("DeleteStream", {"StreamName": a.stream}))
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

    scale = commands.add_parser("update-shard-count", help="reshard uniformly")
    scale.add_argument("stream")
    scale.add_argument("target", type=int)
    scale.set_defaults(run=_update_shard_count)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from broker.node import Node  # imported here: only `serve` needs RocksDB and pysyncobj

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = config_from_environment(vars(args), args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = Node(config)
    data_dir = Path(config.data_dir).resolve()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        await node.start()
        scheme = "https" if config.tls_cert_file is not None else "http"
        print(
            f"shoal: node {config.node_id} serving gRPC on {config.host}:{node.grpc_port}, "
            f"the AWS API on {scheme}://{config.host}:{node.http_port}, data in {data_dir}",
            flush=True,
        )
        await stopping.wait()
        await node.stop()

    asyncio.run(run())
    return 0


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
