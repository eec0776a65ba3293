"""`shoal consumers ...`: a stream's enhanced fan-out consumers (the consumer registry).

    shoal consumers list --stream S                 every registered consumer, oldest first
    shoal consumers register --stream S --name N    RegisterStreamConsumer; prints the ARN
    shoal consumers describe --stream S --name N    one consumer (or --arn ARN)
    shoal consumers deregister --stream S --name N  DeregisterStreamConsumer (or --arn ARN)

The Kinesis API names streams by ARN here; the CLI takes the stream's name and asks the node
for its ARN (DescribeStreamSummary), so the commands work whatever region and account the
cluster is configured with.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli.common import add_group, jsonable, kinesis_client


def add_commands(commands: Any) -> None:
    """Adds `consumers` and its subcommands to the CLI's subparsers (`args.run(client, args)`
    runs one with a `ShoalClient`)."""
    group = add_group(
        commands,
        "consumers",
        help_text="a stream's enhanced fan-out consumers (RegisterStreamConsumer & co.)",
    )

    listing = group.add_parser("list", help="a stream's consumers, oldest first")
    listing.add_argument("--stream", required=True)
    listing.set_defaults(run=_list, connect=kinesis_client)

    register = group.add_parser("register", help="register a consumer; prints its ARN")
    register.add_argument("--stream", required=True)
    register.add_argument("--name", required=True)
    register.set_defaults(run=_register, connect=kinesis_client)

    for name, run, text in (
        ("describe", _describe, "one consumer's ARN, status and creation time"),
        ("deregister", _deregister, "deregister a consumer (DELETING, then gone)"),
    ):
        command = group.add_parser(name, help=text)
        command.add_argument("--stream", help="the stream (with --name)")
        command.add_argument("--name", help="the consumer's name (with --stream)")
        command.add_argument("--arn", help="the consumer's ARN (instead of --stream/--name)")
        command.set_defaults(run=run, connect=kinesis_client)


def _stream_arn(client: Any, stream: str) -> str:
    summary = client.call("DescribeStreamSummary", {"StreamName": stream})
    arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
    return arn


def _target(client: Any, args: argparse.Namespace) -> dict[str, str]:
    """ConsumerARN, or StreamARN + ConsumerName, from --arn or --stream/--name."""
    if args.arn is not None:
        return {"ConsumerARN": args.arn}
    if args.stream is None or args.name is None:
        raise SystemExit("error: give --arn, or both --stream and --name")
    return {"StreamARN": _stream_arn(client, args.stream), "ConsumerName": args.name}


def _line(consumer: dict[str, Any]) -> str:
    created = consumer["ConsumerCreationTimestamp"]
    return (
        f"{consumer['ConsumerName']:<24} {consumer['ConsumerStatus']:<9} "
        f"{created:%Y-%m-%d %H:%M:%S}Z  {consumer['ConsumerARN']}"
    )


def _list(client: Any, args: argparse.Namespace) -> int:
    arn = _stream_arn(client, args.stream)
    consumers: list[dict[str, Any]] = []
    request: dict[str, Any] = {"StreamARN": arn}
    while True:
        page = client.call("ListStreamConsumers", request)
        consumers.extend(page.get("Consumers", []))
        token = page.get("NextToken")
        if not token:
            break
        request = {"StreamARN": arn, "NextToken": token}
    if args.json:
        print(json.dumps(jsonable({"Consumers": consumers}), indent=2))
    elif not consumers:
        print(f"(no consumers registered on {args.stream})")
    else:
        for consumer in consumers:
            print(_line(consumer))
    return 0


def _register(client: Any, args: argparse.Namespace) -> int:
    request = {"StreamARN": _stream_arn(client, args.stream), "ConsumerName": args.name}
    consumer = client.call("RegisterStreamConsumer", request)["Consumer"]
    if args.json:
        print(json.dumps(jsonable({"Consumer": consumer}), indent=2))
    else:
        print(consumer["ConsumerARN"])
    return 0


def _describe(client: Any, args: argparse.Namespace) -> int:
    description = client.call("DescribeStreamConsumer", _target(client, args))[
        "ConsumerDescription"
    ]
    if args.json:
        print(json.dumps(jsonable({"ConsumerDescription": description}), indent=2))
    else:
        print(_line(description))
    return 0


def _deregister(client: Any, args: argparse.Namespace) -> int:
    client.call("DeregisterStreamConsumer", _target(client, args))
    if args.json:
        print("{}")
    return 0
