"""The AWS HTTP door serves renewed certificate files without a restart.

Goal: after the certificate and key files are replaced in place (as a Kubernetes Secret volume
or cert-manager does), the next TLS handshake on the HTTPS port presents the new certificate,
with ALPN h2 still offered, and AWS clients keep working; a file caught half-written keeps the
working certificate. Method: certificates made with `cryptography` (tests/certificates.py), a
real node on 127.0.0.1, raw TLS handshakes through asyncio (the served certificate's serial
and the negotiated ALPN protocol, with and without SNI) and boto3 over HTTPS.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from cryptography import x509

from broker.clock import ManualClock
from broker.gateway.https_certificates import ReloadingServerContext
from broker.node import Node
from tests.certificates import Authority, Leaf, issue, make_authority
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration


def client_context(authority: Authority) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(authority.cert_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


async def handshake(
    port: int, authority: Authority, server_hostname: str
) -> tuple[int, str | None]:
    """(serial of the certificate served, ALPN protocol chosen) for one new connection."""
    async with asyncio.timeout(10):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(authority), server_hostname=server_hostname
        )
    try:
        tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number, tls.selected_alpn_protocol()
    finally:
        writer.close()
        await writer.wait_closed()


def serial(leaf: Leaf) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_file.read_bytes()).serial_number


def list_streams_over_https(node: Node, authority: Authority) -> list[str]:
    client = boto3.client(
        "kinesis",
        endpoint_url=f"https://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="dummy",
        aws_secret_access_key="dummy",
        verify=str(authority.cert_file),
        config=BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=5),
    )
    names: list[str] = client.list_streams()["StreamNames"]
    return names


def replace(target: Leaf, source: Leaf) -> None:
    target.cert_file.write_bytes(source.cert_file.read_bytes())
    target.key_file.write_bytes(source.key_file.read_bytes())


async def test_renewed_certificate_is_served_without_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    ca = make_authority(tmp_path / "ca", "cluster-ca")
    served = issue(ca, tmp_path / "ca", "node")
    renewed = issue(ca, tmp_path / "renewed", "node")
    config = node_config(
        tmp_path / "node",
        settings={"tls_cert_file": served.cert_file, "tls_key_file": served.key_file},
    )
    first_serial = serial(served)
    async with running_node(config, clock) as node:
        assert await handshake(node.http_port, ca, "127.0.0.1") == (first_serial, "h2")
        assert await asyncio.to_thread(list_streams_over_https, node, ca) == []

        replace(served, renewed)  # in place, no restart
        for server_hostname in ("127.0.0.1", "localhost"):  # without SNI, and with it
            assert await handshake(node.http_port, ca, server_hostname) == (
                serial(renewed),
                "h2",
            )
        assert serial(renewed) != first_serial
        assert await asyncio.to_thread(list_streams_over_https, node, ca) == []

        served.key_file.write_text("half-written")  # unreadable: keep what works
        assert (await handshake(node.http_port, ca, "127.0.0.1"))[0] == serial(renewed)


def test_context_keeps_working_material_until_the_files_read_whole(tmp_path: Path) -> None:
    """The reload itself, without a server: a key that does not match its certificate yet
    (the certificate file swapped first) keeps the old pair; once both are swapped, the new
    pair is the current context, and the listening template is never changed."""
    ca = make_authority(tmp_path / "ca", "ca")
    served = issue(ca, tmp_path / "ca", "node")
    renewed = issue(ca, tmp_path / "renewed", "node")
    built: list[Path] = []

    def build(cert: Path, key: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        built.append(cert)
        return context

    reloading = ReloadingServerContext(served.cert_file, served.key_file, build)
    template = reloading.template
    assert reloading.current is template and len(built) == 1
    assert reloading.current is template and len(built) == 1  # unchanged files: no rebuild

    served.cert_file.write_bytes(renewed.cert_file.read_bytes())  # key not yet swapped
    assert reloading.current is template
    served.key_file.write_bytes(renewed.key_file.read_bytes())
    fresh = reloading.current
    assert fresh is not template and reloading.current is fresh
    assert reloading.template is template

    served.cert_file.unlink()  # a Secret volume's swap, caught mid-way
    assert reloading.current is fresh
