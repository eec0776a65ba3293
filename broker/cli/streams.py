"""The stream commands: create, delete, list, describe, put, read, reshard (KinesisService).

`create-stream`, `delete-stream`, `update-shard-count`, `split` and `merge` take `--wait`
(until the stream is ACTIVE again, or gone) with a progress line on a terminal and a
`--timeout` (`cli/wait.py`). `read --follow` keeps reading across reshards: a closed shard's
ChildShards are read from their start once every parent has been read to its end, so records
come out in order per partition key.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from broker import error_messages
from broker.cli.common import jsonable, kinesis_client, print_response
from broker.cli.wait import add_wait_arguments, wait_until
from broker.client.grpc_client import ShoalClient
from broker.errors import ErrorCode, ShoalError

_FOLLOW_POLL_S = 1.0  # `shoal read --follow` polls like a KCL worker's default of about 1 s


def add_commands(commands: Any) -> None:
    create = commands.add_parser("create-stream", help="create a stream")
    create.add_argument("stream")
    create.add_argument("--shard-count", type=int, default=None)
    create.add_argument("--on-demand", action="store_true", help="ON_DEMAND capacity mode")
    add_wait_arguments(create, what="the stream is ACTIVE")
    create.set_defaults(run=_create_stream)

    delete = commands.add_parser("delete-stream", help="delete a stream")
    delete.add_argument("stream")
    delete.add_argument(
        "--enforce-consumer-deletion",
        action="store_true",
        help="delete even with registered enhanced fan-out consumers (they go with it)",
    )
    add_wait_arguments(delete, what="the stream is gone")
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
    add_wait_arguments(scale, what="the stream is ACTIVE with the new shards")
    scale.set_defaults(run=_update_shard_count)

    split = commands.add_parser("split", help="split one shard in two (SplitShard)")
    split.add_argument("stream")
    split.add_argument("shard_id")
    split.add_argument(
        "--at",
        dest="new_starting_hash_key",
        help="the first hash key of the second child (default: the middle of the shard)",
    )
    add_wait_arguments(split, what="the stream is ACTIVE with the children")
    split.set_defaults(run=_split)

    merge = commands.add_parser("merge", help="merge two adjacent shards (MergeShards)")
    merge.add_argument("stream")
    merge.add_argument("shard_id")
    merge.add_argument("adjacent_shard_id")
    add_wait_arguments(merge, what="the stream is ACTIVE with the merged shard")
    merge.set_defaults(run=_merge)

    for parser in (create, delete, listing, describe, put, read, scale, split, merge):
        parser.set_defaults(connect=kinesis_client)


def _status(client: ShoalClient, stream: str) -> dict[str, Any]:
    summary: dict[str, Any] = client.call("DescribeStreamSummary", {"StreamName": stream})[
        "StreamDescriptionSummary"
    ]
    return summary


def _wait_active(
    client: ShoalClient, args: argparse.Namespace, *, what: str, open_shards: int | None = None
) -> None:
    """Until the stream is ACTIVE (with `open_shards` open shards, when given)."""

    def check() -> tuple[bool, str]:
        summary = _status(client, args.stream)
        state, count = summary["StreamStatus"], summary["OpenShardCount"]
        done = state == "ACTIVE" and (open_shards is None or count == open_shards)
        return done, f"{state}, {count} open shards"

    wait_until(check, timeout_s=args.timeout, what=what)


def _delete_stream(client: ShoalClient, args: argparse.Namespace) -> int:
    request = {"StreamName": args.stream, "EnforceConsumerDeletion": args.enforce_consumer_deletion}
    response = client.call("DeleteStream", request)
    if args.wait:

        def gone() -> tuple[bool, str]:
            try:
                return False, _status(client, args.stream)["StreamStatus"]
            except ShoalError as error:
                if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                    return True, "gone"
                raise

        wait_until(gone, timeout_s=args.timeout, what=f"deleting {args.stream}")
        text = f"deleted stream {args.stream}"
    else:
        text = f"deleting stream {args.stream} (DELETING; --wait to wait until it is gone)"
    return print_response(args, response, text)


def _create_stream(client: ShoalClient, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"StreamName": args.stream}
    if args.shard_count is not None:
        request["ShardCount"] = args.shard_count
    if args.on_demand:
        request["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
    elif args.shard_count is None:
        request["ShardCount"] = 1
    response = client.call("CreateStream", request)
    if args.wait:
        _wait_active(client, args, what=f"creating {args.stream}")
        return print_response(args, response, f"created stream {args.stream} (ACTIVE)")
    return print_response(args, response, f"created stream {args.stream}")


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
    """Reads every shard (or one); a child shard starts once all its parents were read to
    their end, so per partition key records come out in the order they were written."""
    listed = client.call("ListShards", {"StreamName": args.stream}).get("Shards", [])
    if args.shard_id is not None:
        listed = [shard for shard in listed if shard["ShardId"] == args.shard_id] or [
            {"ShardId": args.shard_id}
        ]
    kind = "TRIM_HORIZON" if args.start == "trim-horizon" else "LATEST"
    if kind == "LATEST":  # closed shards hold nothing newer
        listed = [
            s for s in listed if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
        ]
    known = {shard["ShardId"] for shard in listed}
    reader = _ShardReader(client, args)
    for shard in listed:
        parents = {shard.get("ParentShardId"), shard.get("AdjacentParentShardId")} & known
        reader.add(shard["ShardId"], parents=parents, kind=kind)
    while reader.active():
        caught_up = reader.read_round()
        if caught_up:
            if not args.follow:
                break
            time.sleep(_FOLLOW_POLL_S)
    return 0


class _ShardReader:
    """Shards being read (an iterator each) and shards waiting for their parents to end."""

    def __init__(self, client: ShoalClient, args: argparse.Namespace) -> None:
        self._client = client
        self._args = args
        self._iterators: dict[str, str] = {}
        self._waiting: dict[str, set[str]] = {}  # child -> parents not yet read to their end
        self._finished: set[str] = set()
        self._seen: set[str] = set()

    def add(self, shard_id: str, *, parents: set[Any], kind: str) -> None:
        if shard_id in self._seen:
            return
        self._seen.add(shard_id)
        pending = {p for p in parents if p is not None and p not in self._finished}
        if pending:
            self._waiting[shard_id] = pending
        else:
            self._start(shard_id, kind)

    def active(self) -> bool:
        return bool(self._iterators) or (self._args.follow and bool(self._waiting))

    def _start(self, shard_id: str, kind: str) -> None:
        self._iterators[shard_id] = self._client.call(
            "GetShardIterator",
            {"StreamName": self._args.stream, "ShardId": shard_id, "ShardIteratorType": kind},
        )["ShardIterator"]

    def read_round(self) -> bool:
        """One GetRecords per shard being read; whether every one of them is caught up."""
        caught_up = True
        for shard_id, iterator in list(self._iterators.items()):
            response = self._client.call(
                "GetRecords", {"ShardIterator": iterator, "Limit": self._args.limit}
            )
            for record in response.get("Records", []):
                _print_record(self._args, shard_id, record)
            if response.get("Records") or response.get("MillisBehindLatest", 0) > 0:
                caught_up = False
            next_iterator = response.get("NextShardIterator")
            if next_iterator is not None:
                self._iterators[shard_id] = next_iterator
                continue
            del self._iterators[shard_id]  # read to its end: its children may start
            self._finished.add(shard_id)
            caught_up = False
            for child in response.get("ChildShards", []):
                # Only parents this reader follows hold it back (an adjacent parent that was
                # closed before a LATEST read began is never read).
                parents = set(child["ParentShards"]) & self._seen
                self.add(child["ShardId"], parents=parents, kind="TRIM_HORIZON")
            for child, parents in list(self._waiting.items()):
                parents.discard(shard_id)
                if not parents:
                    del self._waiting[child]
                    self._start(child, "TRIM_HORIZON")
        return caught_up


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
    text = f"resharding {args.stream}: {response['CurrentShardCount']} -> {args.target}"
    if args.wait:
        _wait_active(client, args, what=f"resharding {args.stream}", open_shards=args.target)
        text = f"resharded {args.stream}: {args.target} open shards"
    return print_response(args, response, text)


def _account_of(client: ShoalClient, stream: str) -> str:
    """The account in the stream's ARN (arn:aws:kinesis:region:account:stream/name)."""
    summary = client.call("DescribeStreamSummary", {"StreamName": stream})
    return str(summary["StreamDescriptionSummary"]["StreamARN"].split(":")[4])


def _split(client: ShoalClient, args: argparse.Namespace) -> int:
    key = args.new_starting_hash_key
    if key is None:
        shards = client.call("ListShards", {"StreamName": args.stream})["Shards"]
        ranges = {s["ShardId"]: s["HashKeyRange"] for s in shards}
        if args.shard_id not in ranges:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.reshard_shard_not_found(
                    args.shard_id, args.stream, _account_of(client, args.stream)
                ),
            )
        low = int(ranges[args.shard_id]["StartingHashKey"])
        high = int(ranges[args.shard_id]["EndingHashKey"])
        key = str((low + high + 1) // 2)
    before = _status(client, args.stream)["OpenShardCount"]
    response = client.call(
        "SplitShard",
        {"StreamName": args.stream, "ShardToSplit": args.shard_id, "NewStartingHashKey": key},
    )
    text = f"splitting {args.shard_id} of {args.stream} at hash key {key}"
    if args.wait:
        _wait_active(client, args, what=f"splitting {args.shard_id}", open_shards=before + 1)
        text = f"split {args.shard_id} of {args.stream} at hash key {key}"
    return print_response(args, response, text)


def _merge(client: ShoalClient, args: argparse.Namespace) -> int:
    before = _status(client, args.stream)["OpenShardCount"]
    response = client.call(
        "MergeShards",
        {
            "StreamName": args.stream,
            "ShardToMerge": args.shard_id,
            "AdjacentShardToMerge": args.adjacent_shard_id,
        },
    )
    pair = f"{args.shard_id} and {args.adjacent_shard_id}"
    text = f"merging {pair} of {args.stream}"
    if args.wait:
        _wait_active(client, args, what=f"merging {pair}", open_shards=before - 1)
        text = f"merged {pair} of {args.stream}"
    return print_response(args, response, text)
