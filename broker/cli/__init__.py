"""The `shoal` command: `shoal serve` runs a node; the other commands talk to one over gRPC.

One module per command group (`GROUPS`); each adds its subcommands to the parser with two
defaults, `run(client, args)` and `connect(args)` (`common.py`). This module only parses,
opens the client the command asked for, and turns errors into one line and an exit code:
0 done, 1 the service refused (the Kinesis error name and message), 2 usage or unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from broker import __version__
from broker.backup.logical import BackupError
from broker.cli import (
    analytics,
    audit,
    backup,
    capacity,
    cluster,
    consumers,
    encryption,
    firehose,
    iam,
    leases,
    limits,
    recovery,
    serve,
    streams,
    video,
)
from broker.cli.common import DEFAULT_ENDPOINT, REGION_HELP, ProfileNotFound, resolve_region
from broker.cli.wait import WaitTimeout
from broker.errors import ErrorCode, ShoalError
from broker.tls import add_client_arguments

GROUPS = (
    serve,
    streams,
    cluster,
    leases,
    limits,
    capacity,
    consumers,
    backup,
    recovery,
    video,
    encryption,
    firehose,
    analytics,
    iam,
    audit,
)


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
    if args.run is None:
        args.group_help()
        return 2
    try:
        args.region = resolve_region(args)
    except ProfileNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.connect is None:
            return int(args.run(None, args))
        with args.connect(args) as client:
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
    except (WaitTimeout, BackupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Shoal, a Kinesis-compatible broker")
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("SHOAL_ENDPOINT", DEFAULT_ENDPOINT),
        help="host:port of a node's gRPC API (env SHOAL_ENDPOINT)",
    )
    parser.add_argument("--json", action="store_true", help="print raw JSON responses")
    parser.add_argument("--region", help=REGION_HELP)
    parser.add_argument("--profile", help="the AWS config profile whose region to use")
    add_client_arguments(parser)
    commands = parser.add_subparsers(dest="command")
    for group in GROUPS:
        group.add_commands(commands)
    return parser
