"""Access-key secrets sealed by the previous release (with the Raft password alone) keep
working on this one, which opens them with that derivation as a fallback and then re-seals
them with the cluster's derived IAM key (the master key's derivation under its own label,
`iam/sealing.py`). Real processes: a data directory made by main's code, then this code on it."""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import grpc
import pytest

from broker.api.iam.v1 import iam_pb2, iam_pb2_grpc
from broker.clock import SystemClock
from broker.iam import grpc_signing
from tests.support import REPO, NodeProcess, export_code, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]

# main when the derivation changed: its binaries seal access-key secrets with the Raft
# password alone and write metadata format 3.
MAIN = "a99cd8c"
ROOT_KEY, ROOT_SECRET = "AKIDROOT", "root-secret"


def _signed(method: str) -> Any:
    return grpc_signing.signed_metadata(
        access_key_id=ROOT_KEY, secret=ROOT_SECRET, region="us-east-1", method=method,
        wall_ms=SystemClock().wall_ms(),
    )  # fmt: skip


def _iam_call(endpoint: str, method: str, request: Any) -> Any:
    with grpc.insecure_channel(endpoint) as channel:
        stub = iam_pb2_grpc.IamServiceStub(channel)
        full = f"/broker.api.iam.v1.IamService/{method}"
        return getattr(stub, method)(request, metadata=_signed(full), timeout=10)


def _http_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _signature_accepted(node: NodeProcess, key: str, secret: str) -> bool:
    """The node opened the key's secret and the signature checked out: the call is allowed,
    or refused by policy (AccessDenied comes after authentication), never
    UnrecognizedClient / InvalidSignature."""
    client = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    try:
        client.list_streams()
    except botocore.exceptions.ClientError as error:
        return bool(error.response["Error"]["Code"] == "AccessDeniedException")
    finally:
        client.close()
    return True


def _serving(node: NodeProcess) -> None:
    wait_until(partial(_http_open, node.http_port), deadline_s=60, what="the AWS port")


def test_secrets_sealed_by_main_open_and_are_resealed(tmp_path: Path) -> None:
    main_code = export_code(MAIN, tmp_path / "main")
    node = NodeProcess(
        tmp_path / "node",
        extra_env={
            "SHOAL_ACCESS_CONTROL": "true",
            "SHOAL_AWS_CREDENTIALS": f"{ROOT_KEY}:{ROOT_SECRET}",
            "SHOAL_RAFT_PASSWORD": "a cluster password",
            "SHOAL_KEY_REWRAP_INTERVAL_MS": "300",
        },
    )
    try:
        node.code_dir = main_code
        node.start()
        _serving(node)
        principal = _iam_call(
            node.endpoint,
            "CreatePrincipal",
            iam_pb2.CreatePrincipalRequest(account_id="000000000000", name="ops"),
        )
        key = _iam_call(
            node.endpoint,
            "CreateAccessKey",
            iam_pb2.CreateAccessKeyRequest(principal_arn=principal.arn),
        )
        secret = key.secret_access_key
        assert _signature_accepted(node, key.access_key_id, secret)
        node.terminate()

        node.code_dir = REPO
        node.start()
        _serving(node)
        # Opened with the old derivation until the cluster's format allows the new one, then
        # re-sealed once by the controller's node.
        assert _signature_accepted(node, key.access_key_id, secret)
        wait_until(
            lambda: "access_keys_resealed" in node.log_text(),
            deadline_s=60,
            what="the secret re-sealed",
        )
        assert _signature_accepted(node, key.access_key_id, secret)
        assert not _signature_accepted(node, key.access_key_id, "a guess")
    except BaseException:
        print(node.log_text())
        raise
    finally:
        node.terminate()
