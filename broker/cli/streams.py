"""The stream commands: create, delete, list, describe, put, read, reshard (KinesisService)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from broker.cli.common import jsonable, kinesis_client, print_response
from broker.client.grpc_client import ShoalClient

_FOLLOW_POLL_S = 1.0  # `shoal read --follow` polls like a KCL worker's default of about 1 s


def add_commands(commands: Any) -> None:
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
    delete.set_defaults(run=_delete_stream)

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

    for parser in (create, delete, listing, describe, put, read, scale):
        parser.set_defaults(connect=kinesis_client)


def _delete_stream(client: ShoalClient, args: argparse.Namespace) -> int:
    request = {"StreamName": args.stream, "EnforceConsumerDeletion": args.enforce_consumer_deletion}
    return print_response(args, client.call("DeleteStream", request))


def _create_stream(client: ShoalClient, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"StreamName": args.stream}
    if args.shard_count is not None:
        request["ShardCount"] = args.shard_count
    if args.on_demand:
        request["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
    elif args.shard_count is None:
        request["ShardCount"] = 1
    return print_response(
        args, client.call("CreateStream", request), f"created stream {args.stream}"
    )


def _list_streams(client: ShoalClient, args: argparse.Namespace) -> int:
    names: list[str] = []
    request: dict[str, Any] = {}
    while True:
        response = client.call("ListStreams", request)
        names.extend(response.get("StreamNames", []))
        if not response.get("HasMoreStreams"):
            break
        request = {"NextToken": response["NextToken"]}
    return print_response(
        args, {"StreamNames": names}, "\n".join(names) if names else "(no streams)"
    )


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
    return print_response(args, {"Summary": s, "Shards": shards}, "\n".join(lines))


def _put(client: ShoalClient, args: argparse.Namespace) -> int:
    data = args.data.encode() if args.data is not None else sys.stdin.buffer.read()
    response = client.call(
        "PutRecord", {"StreamName": args.stream, "PartitionKey": args.partition_key, "Data": data}
    )
    return print_response(args, response, f"{response['ShardId']} {response['SequenceNumber']}")


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
        print(json.dumps(jsonable({"ShardId": shard_id, **record})))
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
    return print_response(
        args,
        response,
        f"resharding {args.stream}: {response['CurrentShardCount']} -> {args.target}",
    )
