"""Transport security of the gRPC port (broker/tls.py), on one in-process node.

Goal: with a certificate and a CA configured, the gRPC port accepts only callers presenting a
certificate that CA signed (mutual TLS), the plaintext health port still answers probes, a
renewed certificate is served without a restart, and a node's outgoing credentials notice
renewed files. Method: certificates made with `cryptography` in tmp_path (tests/certificates.py),
a real node on 127.0.0.1, the public client (`ShoalClient` with `client_credentials`) and raw
gRPC health stubs. The cluster behaviour (replication and refusal of a wrongly signed peer)
is in tests/process/test_tls.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.config import Config, load_config
from broker.errors import ErrorCode, ShoalError
from broker.node import Node
from broker.tls import PeerCredentials, TlsFiles, client_credentials, open_aio_channel
from tests.certificates import Authority, Leaf, issue, make_authority
from tests.conftest import node_config, running_node
from tests.support import free_port

pytestmark = pytest.mark.integration


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = make_authority(directory / "ca", "cluster-ca")
        self.rogue = make_authority(directory / "rogue", "rogue-ca")
        self.node = issue(self.ca, directory / "ca", "node")
        self.client = issue(self.ca, directory / "ca", "client")
        self.impostor = issue(self.rogue, directory / "rogue", "impostor")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def tls_config(tmp_path: Path, pki: Pki, **settings: Any) -> Config:
    return node_config(
        tmp_path / "node",
        settings={
            "tls_cert_file": pki.node.cert_file,
            "tls_key_file": pki.node.key_file,
            "tls_ca_file": pki.ca.cert_file,
            "health_port": free_port(),
            **settings,
        },
    )


@pytest.fixture
async def tls_node(tmp_path: Path, pki: Pki, clock: ManualClock) -> AsyncIterator[Node]:
    async with running_node(tls_config(tmp_path, pki), clock) as node:
        yield node


def credentials(authority: Authority, leaf: Leaf | None) -> grpc.ChannelCredentials:
    return client_credentials(
        ca_file=authority.cert_file,
        cert_file=leaf.cert_file if leaf else None,
        key_file=leaf.key_file if leaf else None,
    )


async def list_streams(node: Node, creds: grpc.ChannelCredentials | None) -> dict[str, Any]:
    client = AsyncShoalClient(f"127.0.0.1:{node.grpc_port}", timeout_s=5, credentials=creds)
    try:
        return await client.call("ListStreams", {})
    finally:
        await client.close()


async def health_status(target: str, creds: grpc.ChannelCredentials | None, service: str) -> Any:
    channel = open_aio_channel(target, creds)
    try:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return response.status
    finally:
        await channel.close()


async def test_mutual_tls_client_is_served(tls_node: Node, pki: Pki) -> None:
    creds = credentials(pki.ca, pki.client)
    client = AsyncShoalClient(f"127.0.0.1:{tls_node.grpc_port}", credentials=creds)
    try:
        await client.call("CreateStream", {"StreamName": "secure", "ShardCount": 1})
        put = await client.call(
            "PutRecord", {"StreamName": "secure", "PartitionKey": "k", "Data": b"sealed"}
        )
        assert put["SequenceNumber"]
        assert (await client.call("ListStreams", {}))["StreamNames"] == ["secure"]
    finally:
        await client.close()


@pytest.mark.parametrize(
    "caller",
    ["plaintext", "no client certificate", "certificate from another CA", "trusts another CA"],
)
async def test_callers_without_a_cluster_certificate_are_refused(
    tls_node: Node, pki: Pki, caller: str
) -> None:
    creds = {
        "plaintext": None,
        "no client certificate": credentials(pki.ca, None),
        "certificate from another CA": credentials(pki.ca, pki.impostor),
        "trusts another CA": credentials(pki.rogue, pki.impostor),
    }[caller]
    with pytest.raises(ShoalError) as refused:
        await list_streams(tls_node, creds)
    assert refused.value.code is ErrorCode.UNAVAILABLE  # refused in the handshake: no RPC ran


async def test_health_port_answers_plaintext_probes(tls_node: Node, pki: Pki) -> None:
    """The kubelet's gRPC probe speaks no TLS: it gets the health service alone, in plaintext."""
    target = f"127.0.0.1:{tls_node.health_port}"
    serving = health_pb2.HealthCheckResponse.SERVING
    assert await health_status(target, None, "liveness") == serving
    assert await health_status(target, None, "readiness") == serving
    # The API itself is not on that port.
    channel = open_aio_channel(target, None)
    try:
        call: Any = channel.unary_unary("/broker.api.kinesis.v1.KinesisService/ListStreams")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(b"", timeout=5)
        assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await channel.close()
    # And the TLS port answers the same health service to a mutual TLS caller.
    secure = f"127.0.0.1:{tls_node.grpc_port}"
    assert await health_status(secure, credentials(pki.ca, pki.client), "liveness") == serving


async def test_client_auth_none_serves_server_side_tls_only(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    config = tls_config(tmp_path, pki, tls_client_auth="none")
    async with running_node(config, clock) as node:
        assert (await list_streams(node, credentials(pki.ca, None)))["StreamNames"] == []
        with pytest.raises(ShoalError):
            await list_streams(node, None)  # still TLS: plaintext is refused


async def test_renewed_certificate_is_served_without_restart(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    """A Secret volume swaps the files in place; the next handshake uses the new ones."""
    renewal = make_authority(tmp_path / "renewal", "renewed-ca")
    renewed = issue(renewal, tmp_path / "renewal", "node")
    async with running_node(tls_config(tmp_path, pki), clock) as node:
        renewed_client = issue(renewal, tmp_path / "renewal", "client")
        old_client = credentials(pki.ca, pki.client)  # reads the files now
        assert (await list_streams(node, old_client))["StreamNames"] == []
        with pytest.raises(ShoalError):
            await list_streams(node, credentials(renewal, renewed_client))
        pki.node.cert_file.write_bytes(renewed.cert_file.read_bytes())
        pki.node.key_file.write_bytes(renewed.key_file.read_bytes())
        pki.ca.cert_file.write_bytes(renewal.cert_file.read_bytes())
        answer = await list_streams(node, credentials(renewal, renewed_client))
        assert answer["StreamNames"] == []
        with pytest.raises(ShoalError):  # the old CA's clients are now refused
            await list_streams(node, old_client)


def test_peer_credentials_notice_renewed_files(tmp_path: Path, pki: Pki) -> None:
    clock = ManualClock()
    files = TlsFiles(
        cert_file=pki.node.cert_file,
        key_file=pki.node.key_file,
        ca_file=pki.ca.cert_file,
        require_client_auth=True,
    )
    peer = PeerCredentials(files, clock=clock, check_interval_ms=1_000)
    generation, first = peer.current()
    renewed = issue(pki.ca, tmp_path / "renewed", "node")
    pki.node.cert_file.write_bytes(renewed.cert_file.read_bytes() + b"\n")
    pki.node.key_file.write_bytes(renewed.key_file.read_bytes())
    assert peer.current() == (generation, first)  # not checked again before the interval
    clock.advance(ms=1_000)
    assert peer.current()[0] == generation + 1
    pki.node.key_file.write_text("half-written")  # unreadable: keep what works
    clock.advance(ms=1_000)
    assert peer.current()[0] == generation + 1


def test_config_validation_and_sources(tmp_path: Path, pki: Pki) -> None:
    base = {"data_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="tls_ca_file needs"):
        load_config(flags={**base, "tls_ca_file": str(pki.ca.cert_file)}, environ={})
    with pytest.raises(ValueError, match="tls_client_auth"):
        load_config(
            flags=base,
            environ={
                "SHOAL_TLS_CERT_FILE": str(pki.node.cert_file),
                "SHOAL_TLS_KEY_FILE": str(pki.node.key_file),
                "SHOAL_TLS_CLIENT_AUTH": "optional",
            },
        )
    config = load_config(
        flags=base,
        environ={
            "SHOAL_TLS_CERT_FILE": str(pki.node.cert_file),
            "SHOAL_TLS_KEY_FILE": str(pki.node.key_file),
            "SHOAL_TLS_CA_FILE": str(pki.ca.cert_file),
            "SHOAL_HEALTH_PORT": "50053",
        },
    )
    assert config.tls_ca_file == pki.ca.cert_file
    assert config.tls_client_auth == "require"
    assert config.health_port == 50053


async def test_missing_certificate_stops_the_start(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    config = tls_config(tmp_path, pki, tls_ca_file=tmp_path / "absent.crt")
    node = Node(config, clock=clock)
    with pytest.raises(FileNotFoundError, match="absent"):
        await asyncio.wait_for(node.start(), timeout=60)
    await node.stop()
