"""The gRPC door's mutual TLS identities with access control on: a client certificate whose
common name is mapped to a principal is that principal (policies decide), and a cluster-CA
certificate mapped to nobody is node-level trust, refused on the public services."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.api.iam.v1 import iam_pb2, iam_pb2_grpc
from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock, SystemClock
from broker.errors import ErrorCode, ShoalError
from broker.iam.grpc_signing import SigningKey
from broker.node import Node
from broker.tls import client_credentials, open_aio_channel
from tests.certificates import issue, make_authority
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

ROOT = SigningKey("AKIDROOT", "root-secret")


@pytest.fixture
async def tls_node(tmp_path: Path) -> AsyncIterator[tuple[Node, Path]]:
    pki = tmp_path / "pki"
    ca = make_authority(pki, "cluster-ca")
    node_leaf = issue(ca, pki, "node")
    for name in ("alice-cert", "unmapped"):
        issue(ca, pki / name, name)
    config = node_config(
        tmp_path / "node",
        settings={
            "tls_cert_file": node_leaf.cert_file,
            "tls_key_file": node_leaf.key_file,
            "tls_ca_file": ca.cert_file,
            "aws_credentials": ("AKIDROOT:root-secret",),
            "access_control": True,
        },
    )
    async with running_node(config, ManualClock(wall_ms=SystemClock().wall_ms())) as node:
        yield node, pki


def _credentials(pki: Path, name: str) -> object:
    return client_credentials(
        ca_file=pki / "cluster-ca.crt",
        cert_file=pki / name / f"{name}.crt",
        key_file=pki / name / f"{name}.key",
    )


async def test_mapped_certificate_is_its_principal(tls_node: tuple[Node, Path]) -> None:
    node, pki = tls_node
    target = f"127.0.0.1:{node.grpc_port}"
    channel = open_aio_channel(target, _credentials(pki, "unmapped"))  # type: ignore[arg-type]
    try:
        stub = iam_pb2_grpc.IamServiceStub(channel)

        async def call(method: str, request: object) -> object:
            metadata = ROOT.metadata(f"/broker.api.iam.v1.IamService/{method}")
            return await getattr(stub, method)(request, metadata=metadata, timeout=10)

        principal = await call(
            "CreatePrincipal",
            iam_pb2.CreatePrincipalRequest(
                account_id="000000000000", name="alice", certificate_subjects=["alice-cert"]
            ),
        )
        arn = principal.arn  # type: ignore[attr-defined]
        policy = {"Statement": {"Effect": "Allow", "Action": "kinesis:List*", "Resource": "*"}}
        await call(
            "AttachPolicy",
            iam_pb2.AttachPolicyRequest(
                principal_arn=arn, policy_name="list", document=json.dumps(policy)
            ),
        )
    finally:
        await channel.close()

    alice = AsyncShoalClient(target, credentials=_credentials(pki, "alice-cert"))  # type: ignore[arg-type]
    unmapped = AsyncShoalClient(target, credentials=_credentials(pki, "unmapped"))  # type: ignore[arg-type]
    try:
        assert (await alice.call("ListStreams", {}))["StreamNames"] == []
        with pytest.raises(ShoalError) as raised:
            await alice.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
        assert raised.value.code is ErrorCode.ACCESS_DENIED
        assert raised.value.message.startswith(f"User: {arn} is not authorized")
        with pytest.raises(ShoalError) as raised:
            await unmapped.call("ListStreams", {})
        assert raised.value.code is ErrorCode.ACCESS_DENIED
    finally:
        await alice.close()
        await unmapped.close()
