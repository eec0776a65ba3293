"""`shoal iam ...`: principals, access keys, identity policies and the simulator (IamService).

    shoal iam create-principal 111122223333 alice [--role] [--certificate-cn CN]
    shoal iam list-principals [--account 111122223333]
    shoal iam delete-principal arn:aws:iam::111122223333:user/alice
    shoal iam create-key ARN          prints the new key id and secret (shown once)
    shoal iam list-keys ARN
    shoal iam rotate-key AKIA...      a new key replaces it; prints the new secret
    shoal iam delete-key AKIA...
    shoal iam set-key-status AKIA... Inactive       (or Active)
    shoal iam attach-policy ARN NAME policy.json     (or - for stdin)
    shoal iam detach-policy ARN NAME
    shoal iam simulate ARN kinesis:PutRecord arn:aws:kinesis:us-east-1:111122223333:stream/s

With access control on, the node wants signed calls: `--access-key-id`/`--secret-access-key`
(or SHOAL_ACCESS_KEY_ID / SHOAL_SECRET_ACCESS_KEY) sign every call (`iam/grpc_signing.py`), or a
client certificate mapped to a principal (the TLS flags).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from broker.cli.common import REGION_HELP, add_group
from broker.errors import ErrorCode, ShoalError, error_code_by_name
from broker.tls import credentials_from_arguments, open_channel


def add_commands(commands: Any) -> None:
    group = add_group(commands, "iam", help_text="principals, access keys and policies")

    def command(name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="print the raw answer as JSON")
        parser.add_argument("--access-key-id", default=os.environ.get("SHOAL_ACCESS_KEY_ID"))
        parser.add_argument(
            "--secret-access-key", default=os.environ.get("SHOAL_SECRET_ACCESS_KEY")
        )
        parser.add_argument("--region", default=argparse.SUPPRESS, help=REGION_HELP)
        parser.set_defaults(connect=iam_client, run=run)
        return parser

    create = command("create-principal", "create a user (or role) of an account", _create)
    create.add_argument("account")
    create.add_argument("name")
    create.add_argument("--role", action="store_true", help="a role instead of a user")
    create.add_argument("--certificate-cn", action="append", default=[], metavar="CN")
    listing = command("list-principals", "every principal (of one account)", _list)
    listing.add_argument("--account", default="")
    command("delete-principal", "delete a principal, its keys and policies", _delete).add_argument(
        "arn"
    )
    command("create-key", "a new access key (the secret is shown once)", _create_key).add_argument(
        "arn"
    )
    command("list-keys", "a principal's access keys (never secrets)", _list_keys).add_argument(
        "arn"
    )
    command("rotate-key", "replace an access key by a new one", _rotate).add_argument("key_id")
    command("delete-key", "delete an access key", _delete_key).add_argument("key_id")
    status = command("set-key-status", "deactivate or reactivate an access key", _set_status)
    status.add_argument("key_id")
    status.add_argument("status", choices=("Active", "Inactive"))
    attach = command("attach-policy", "attach (or replace) a named identity policy", _attach)
    attach.add_argument("arn")
    attach.add_argument("name")
    attach.add_argument("document", help="a JSON policy file, or - for standard input")
    detach = command("detach-policy", "detach a named identity policy", _detach)
    detach.add_argument("arn")
    detach.add_argument("name")
    simulate = command("simulate", "would ARN be allowed ACTION on RESOURCE, and why", _simulate)
    simulate.add_argument("arn")
    simulate.add_argument("action")
    simulate.add_argument("resource", nargs="?", default="*")
    simulate.add_argument("--source-ip", default="")


class IamClient:
    """The blocking IamService stub, each call signed when a key was given."""

    def __init__(self, stub: Any, signer: Any) -> None:
        self._stub = stub
        self._signer = signer

    def call(self, method: str, request: Any) -> Any:
        metadata = self._signer(f"/broker.api.iam.v1.IamService/{method}")
        try:
            return getattr(self._stub, method)(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            raise _shoal_error(error) from None


def _shoal_error(error: Any) -> ShoalError:
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                code = error_code_by_name(info.reason)
                if code is not None:
                    return ShoalError(code, status.message)
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return ShoalError(ErrorCode.UNAVAILABLE, str(error.details()))
    return ShoalError(ErrorCode.INTERNAL_FAILURE, str(error.details()))


@contextmanager
def iam_client(args: argparse.Namespace) -> Iterator[IamClient]:
    from broker.api.iam.v1 import iam_pb2_grpc
    from broker.clock import SystemClock
    from broker.iam import grpc_signing

    channel = open_channel(args.endpoint, credentials_from_arguments(args))
    clock = SystemClock()

    key = None
    if args.access_key_id and args.secret_access_key:
        key = grpc_signing.SigningKey(
            args.access_key_id, args.secret_access_key, wall_ms=clock.wall_ms
        )

    def signer(method: str) -> tuple[tuple[str, str], ...]:
        return grpc_signing.call_metadata(method, region=args.region, key=key) or ()

    try:
        yield IamClient(iam_pb2_grpc.IamServiceStub(channel), signer)
    finally:
        channel.close()


def _show(args: argparse.Namespace, message: Any, text: str) -> int:
    if args.json:
        print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))
    else:
        print(text)
    return 0


def _pb() -> Any:
    from broker.api.iam.v1 import iam_pb2

    return iam_pb2


def _create(client: IamClient, args: argparse.Namespace) -> int:
    request = _pb().CreatePrincipalRequest(
        account_id=args.account,
        name=args.name,
        kind="role" if args.role else "user",
        certificate_subjects=args.certificate_cn,
    )
    answer = client.call("CreatePrincipal", request)
    return _show(args, answer, answer.arn)


def _list(client: IamClient, args: argparse.Namespace) -> int:
    answer = client.call("ListPrincipals", _pb().ListPrincipalsRequest(account_id=args.account))
    lines = [
        f"{p.arn}  policies: {', '.join(x.name for x in p.policies) or '-'}"
        for p in answer.principals
    ]
    return _show(args, answer, "\n".join(lines) or "(no principals)")


def _delete(client: IamClient, args: argparse.Namespace) -> int:
    answer = client.call("DeletePrincipal", _pb().DeletePrincipalRequest(arn=args.arn))
    return _show(args, answer, f"deleted {args.arn}")


def _new_key_text(answer: Any) -> str:
    return (
        f"access key id:     {answer.access_key_id}\n"
        f"secret access key: {answer.secret_access_key}\n"
        "(the secret is shown this once)"
    )


def _create_key(client: IamClient, args: argparse.Namespace) -> int:
    answer = client.call("CreateAccessKey", _pb().CreateAccessKeyRequest(principal_arn=args.arn))
    return _show(args, answer, _new_key_text(answer))


def _list_keys(client: IamClient, args: argparse.Namespace) -> int:
    answer = client.call("ListAccessKeys", _pb().ListAccessKeysRequest(principal_arn=args.arn))
    lines = [f"{k.access_key_id}  {k.status}" for k in answer.keys]
    return _show(args, answer, "\n".join(lines) or "(no keys)")


def _rotate(client: IamClient, args: argparse.Namespace) -> int:
    answer = client.call("RotateAccessKey", _pb().RotateAccessKeyRequest(access_key_id=args.key_id))
    return _show(args, answer, _new_key_text(answer))


def _delete_key(client: IamClient, args: argparse.Namespace) -> int:
    answer = client.call("DeleteAccessKey", _pb().DeleteAccessKeyRequest(access_key_id=args.key_id))
    return _show(args, answer, f"deleted {args.key_id}")


def _set_status(client: IamClient, args: argparse.Namespace) -> int:
    request = _pb().UpdateAccessKeyRequest(access_key_id=args.key_id, status=args.status)
    answer = client.call("UpdateAccessKey", request)
    return _show(args, answer, f"{answer.access_key_id}  {answer.status}")


def _attach(client: IamClient, args: argparse.Namespace) -> int:
    if args.document == "-":
        document = sys.stdin.read()
    else:
        with open(args.document, encoding="utf-8") as file:
            document = file.read()
    request = _pb().AttachPolicyRequest(
        principal_arn=args.arn, policy_name=args.name, document=document
    )
    answer = client.call("AttachPolicy", request)
    return _show(args, answer, f"attached {args.name} to {args.arn}")


def _detach(client: IamClient, args: argparse.Namespace) -> int:
    request = _pb().DetachPolicyRequest(principal_arn=args.arn, policy_name=args.name)
    answer = client.call("DetachPolicy", request)
    return _show(args, answer, f"detached {args.name} from {args.arn}")


def _simulate(client: IamClient, args: argparse.Namespace) -> int:
    request = _pb().SimulateRequest(
        principal_arn=args.arn,
        action=args.action,
        resource=args.resource,
        source_ip=args.source_ip,
    )
    answer = client.call("Simulate", request)
    text = f"{answer.decision}: {answer.reason}"
    if answer.matched_statements:
        text += "\nmatched: " + ", ".join(answer.matched_statements)
    if answer.message:
        text += "\n" + answer.message
    return _show(args, answer, text)
