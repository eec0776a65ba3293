"""What every command group shares: the default endpoint, output helpers, how a command gets
its client.

Every subcommand sets two parser defaults: `run(client, args) -> int` and `connect`, a
function from the parsed arguments to a context manager yielding the client `run` needs (None
when the command opens nothing itself, like `serve`). A group given without a subcommand sets
`run=None` and `group_help` (its parser's help).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from broker.tls import credentials_from_arguments

DEFAULT_ENDPOINT = "127.0.0.1:50051"

Connect = Callable[[argparse.Namespace], AbstractContextManager[Any]]


REGION_HELP = (
    "the region whose streams the command acts on, and signs for (default: AWS_REGION, "
    "AWS_DEFAULT_REGION, the AWS config profile's region, else the node's region)"
)


class ProfileNotFound(Exception):
    """`--profile` (or AWS_PROFILE) names no profile of the AWS config files."""


def resolve_region(args: argparse.Namespace) -> str | None:
    """The region a command addresses, resolved as the AWS CLI resolves it: `--region`, then
    AWS_REGION, AWS_DEFAULT_REGION, then the `region` of the profile (`--profile`, else
    AWS_PROFILE, else `default`) in the AWS config file (AWS_CONFIG_FILE, ~/.aws/config).
    None: no rule names one, and the calls act in the node's own region."""
    explicit = (
        getattr(args, "region", None)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if explicit:
        return str(explicit)
    import botocore.exceptions
    import botocore.session

    try:
        config = botocore.session.Session(profile=getattr(args, "profile", None))
        region = config.get_scoped_config().get("region")
    except botocore.exceptions.ProfileNotFound as error:
        raise ProfileNotFound(str(error)) from None
    return str(region) if region else None


def signing_key(args: argparse.Namespace) -> Any:
    """The access key the CLI signs its gRPC calls with (a node with access control wants
    one): `--access-key-id`/`--secret-access-key` where a command has them, else
    SHOAL_ACCESS_KEY_ID / SHOAL_SECRET_ACCESS_KEY; None to send unsigned calls. Calls are
    signed for the region they address (`args.region`, as `resolve_region` resolved it)."""
    from broker.iam.grpc_signing import SigningKey

    key_id = getattr(args, "access_key_id", None) or os.environ.get("SHOAL_ACCESS_KEY_ID")
    secret = getattr(args, "secret_access_key", None) or os.environ.get("SHOAL_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        return None
    return SigningKey(key_id, secret)


def kinesis_client(args: argparse.Namespace) -> AbstractContextManager[Any]:
    """The public KinesisService over gRPC (`broker.client.grpc_client.ShoalClient`), in the
    region the command addresses."""
    from broker.client.grpc_client import ShoalClient

    return ShoalClient(
        args.endpoint,
        credentials=credentials_from_arguments(args),
        signing_key=signing_key(args),
        region=args.region,
    )


def add_group(commands: Any, name: str, *, help_text: str) -> Any:
    """A command group (`shoal NAME SUBCOMMAND`); returns its subparsers. Without a
    subcommand the group prints its help and exits 2."""
    group_parser = commands.add_parser(name, help=help_text)
    group_parser.set_defaults(run=None, connect=None, group_help=group_parser.print_help)
    return group_parser.add_subparsers(dest=f"{name.replace('-', '_')}_command")


def jsonable(value: Any) -> Any:
    """A response with bytes as base64 and datetimes as ISO 8601, ready for json.dumps."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_response(args: argparse.Namespace, response: Any, text: str | None = None) -> int:
    """`text` for a person, or the raw response as JSON with --json (or when no text)."""
    if args.json or text is None:
        print(json.dumps(jsonable(response), indent=2))
    else:
        print(text)
    return 0
