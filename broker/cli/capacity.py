"""`shoal hot-shards / hot-keys / scaling-events`: where a stream's load is (CapacityService).

    shoal hot-shards STREAM [--limit N]            open shards, busiest first, with rates
    shoal hot-keys STREAM [--shard ID] [--limit N] the busiest partition keys (approximate)
    shoal scaling-events STREAM [--limit N]        what the on-demand autoscaler did, and why

Figures are what the shard leaders last reported (every few seconds, averaged over about a
minute). Key rates are upper bounds: the true rate lies within "±" below the figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
from contextlib import AbstractContextManager
from typing import Any

from broker.tls import credentials_from_arguments


def add_commands(commands: Any) -> None:
    """Adds the three commands to the CLI's subparsers (`args.run(client, args)` runs one)."""
    shards = commands.add_parser("hot-shards", help="a stream's open shards, busiest first")
    shards.add_argument("stream")
    shards.add_argument("--limit", type=int, default=None, help="at most this many (1..1000)")
    shards.set_defaults(connect=_capacity_client, run=_hot_shards)
    keys = commands.add_parser("hot-keys", help="a stream's busiest partition keys")
    keys.add_argument("stream")
    keys.add_argument("--shard", dest="shard_id", help="only this shard's keys")
    keys.add_argument("--limit", type=int, default=None, help="at most this many (1..1000)")
    keys.set_defaults(connect=_capacity_client, run=_hot_keys)
    events = commands.add_parser(
        "scaling-events", help="the on-demand autoscaler's decisions for a stream, oldest first"
    )
    events.add_argument("stream")
    events.add_argument("--limit", type=int, default=None, help="only the newest this many")
    events.set_defaults(connect=_capacity_client, run=_scaling_events)


def _capacity_client(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from broker.client.capacity import CapacityClient  # the gRPC stubs: only for these

    return CapacityClient(args.endpoint, credentials=credentials_from_arguments(args))


def _rate(value: float) -> str:
    return f"{value:,.1f}"


def _bytes(value: float) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def _hot_shards(client: Any, args: argparse.Namespace) -> int:
    answer = client.describe_hot_shards(args.stream, limit=args.limit)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(
        f"stream {answer['stream_name']} ({answer['stream_mode']}, "
        f"{answer['open_shard_count']} open shards)"
    )
    print(f"{'SHARD':<22} {'RECORDS/S':>10} {'BYTES/S':>12} {'USE':>6}  LEADER / NOTES")
    for shard in answer["shards"]:
        notes = [shard["leader"] or "-"]
        if not shard["reported"]:
            notes.append("no current report (idle)")
        if "hot_partition_key" in shard:
            notes.append(f"hot key {shard['hot_partition_key']!r} ({shard['hot_key_share']:.0%})")
        elif "split_hash_key" in shard:
            notes.append(f"traffic halves at hash key {shard['split_hash_key']}")
        print(
            f"{shard['shard_id']:<22} {_rate(shard['records_per_second']):>10} "
            f"{_bytes(shard['bytes_per_second']) + '/s':>12} {shard['utilization']:>6.0%}  "
            + "; ".join(notes)
        )
    return 0


def _hot_keys(client: Any, args: argparse.Namespace) -> int:
    answer = client.describe_hot_keys(args.stream, shard_id=args.shard_id, limit=args.limit)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    if not answer["keys"]:
        print("(no reported traffic)")
        return 0
    print(f"{'PARTITION KEY':<32} {'SHARD':<22} {'RECORDS/S':>16} {'BYTES/S':>22} {'SHARE':>6}")
    for key in answer["keys"]:
        records = f"{_rate(key['records_per_second'])} ±{_rate(key['records_per_second_error'])}"
        size = f"{_bytes(key['bytes_per_second'])}/s ±{_bytes(key['bytes_per_second_error'])}"
        print(
            f"{key['partition_key'][:32]:<32} {key['shard_id']:<22} {records:>16} "
            f"{size:>22} {key['shard_share']:>6.0%}"
        )
    return 0


def _scaling_events(client: Any, args: argparse.Namespace) -> int:
    answer = client.list_scaling_events(args.stream, limit=args.limit)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    if not answer["events"]:
        print(f"(no scaling events for {answer['stream_name']}, {answer['stream_mode']})")
        return 0
    for event in answer["events"]:
        when = datetime.datetime.fromtimestamp(int(event["time_ms"]) / 1000, tz=datetime.UTC)
        print(
            f"{when:%Y-%m-%d %H:%M:%S}Z {event['kind']:<8} {','.join(event['shard_ids'])}: "
            f"{event['reason']}"
        )
    return 0
