"""`shoal limits ...`: per-stream throughput limits and account limits (LimitsService).

    shoal limits get STREAM                       the stream's overrides and effective rates
    shoal limits set STREAM --write-bytes-per-second 4194304 --read-calls-per-second 0
    shoal limits set STREAM --write-bytes-per-second default    back to the cluster default
    shoal limits account                          account limits in force and usage
    shoal limits account --shard-limit 5000 --on-demand-stream-limit default

A rate of 0 lifts the limit; `default` follows the cluster's configuration again.
"""

from __future__ import annotations

import argparse
import json
from contextlib import AbstractContextManager
from typing import Any

from broker.cli.common import signing_key
from broker.streams.throttling import RATE_NAMES
from broker.tls import credentials_from_arguments

DEFAULT = "default"
_ACCOUNT_LIMITS = ("shard_limit", "on_demand_stream_limit")


def _value(raw: str) -> int | str:
    """A non-negative integer, or `default`."""
    if raw == DEFAULT:
        return DEFAULT
    try:
        value = int(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number or '{DEFAULT}', got {raw!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (unlimited) or positive")
    return value


def add_commands(commands: Any) -> None:
    """Adds the `limits` group to the CLI's subparsers (`args.run(client, args)` runs it)."""
    group_parser = commands.add_parser(
        "limits", help="per-stream throughput limits and account limits"
    )
    group_parser.set_defaults(run=None, connect=None, group_help=group_parser.print_help)
    group = group_parser.add_subparsers(dest="limits_command")
    get = group.add_parser("get", help="a stream's rate overrides and the rates its shards get")
    get.add_argument("stream")
    get.set_defaults(connect=_limits_client, run=_get)
    put = group.add_parser(
        "set", help="set a stream's per-shard rates (0: unlimited; 'default': cluster default)"
    )
    put.add_argument("stream")
    for name in RATE_NAMES:
        put.add_argument("--" + name.replace("_", "-"), type=_value, metavar="N|default")
    put.set_defaults(connect=_limits_client, run=_set)
    account = group.add_parser(
        "account", help="show account limits; with flags, set them for the whole cluster"
    )
    for name in _ACCOUNT_LIMITS:
        account.add_argument("--" + name.replace("_", "-"), type=_value, metavar="N|default")
    account.set_defaults(connect=_limits_client, run=_account)


def _limits_client(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from broker.client.limits import LimitsClient  # the gRPC stubs: only for this group

    return LimitsClient(
        args.endpoint,
        credentials=credentials_from_arguments(args),
        signing_key=signing_key(args),
        region=args.region,
    )


def _print_stream(answer: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    print(f"stream {answer['stream_name']} (per shard; 0 = unlimited)")
    for name in RATE_NAMES:
        source = "stream" if name in answer["overrides"] else "cluster default"
        print(f"  {name:<26} {answer['effective'][name]:>14}  ({source})")


def _get(client: Any, args: argparse.Namespace) -> int:
    _print_stream(client.describe_stream(args.stream), as_json=args.json)
    return 0


def _set(client: Any, args: argparse.Namespace) -> int:
    rates = {n: getattr(args, n) for n in RATE_NAMES if isinstance(getattr(args, n), int)}
    reset = [n for n in RATE_NAMES if getattr(args, n) == DEFAULT]
    if not rates and not reset:
        print("error: give at least one rate (see `shoal limits set --help`)")
        return 2
    _print_stream(client.update_stream(args.stream, rates, reset=reset), as_json=args.json)
    return 0


def _account(client: Any, args: argparse.Namespace) -> int:
    values = {n: getattr(args, n) for n in _ACCOUNT_LIMITS}
    if all(value is None for value in values.values()):
        answer = client.describe_account()
    else:
        answer = client.update_account(
            **{n: v for n, v in values.items() if isinstance(v, int)},
            reset=[n for n, v in values.items() if v == DEFAULT],
        )
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    for name, usage in (("shard_limit", "open_shard_count"), ("on_demand_stream_limit", None)):
        source = "runtime" if answer[f"{name}_override"] is not None else "configuration"
        print(f"{name:<24} {answer[name]:>8}  ({source})")
        if usage is not None:
            print(f"{usage:<24} {answer[usage]:>8}")
    print(f"{'on_demand_stream_count':<24} {answer['on_demand_stream_count']:>8}")
    return 0
