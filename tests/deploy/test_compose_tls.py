"""deploy/compose.tls.yaml and deploy/make-tls-certs: the compose cluster's TLS variant.

Goal: the override file is valid Compose, turns TLS on for every node with settings the node
knows and files the mount provides, and moves the health check to the plaintext health port;
the script's certificates are what the nodes need (one node certificate naming every compose
host, server and client usages, chained to the CA; a client certificate) and a second run
renews them under the same CA. Method: check-jsonschema's Compose Spec schema, the node's own
config loader, and in-memory TLS handshakes (ssl.MemoryBIO) between contexts made from the
generated files. Nothing is built or run (no container engine here).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from broker.config import load_config
from tests.deploy.tools import load_yaml, run, tool, unknown_settings
from tests.support import REPO

OVERRIDE = REPO / "deploy/compose.tls.yaml"
BASE = REPO / "deploy/compose.yaml"
SCRIPT = REPO / "deploy/make-tls-certs"
NODES = ("shoal-0", "shoal-1", "shoal-2")


def test_override_matches_the_compose_spec() -> None:
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(OVERRIDE)])


def test_override_turns_tls_on_for_every_node(tmp_path: Path) -> None:
    override: dict[str, Any] = load_yaml(OVERRIDE.read_text())
    base: dict[str, Any] = load_yaml(BASE.read_text())
    assert override["name"] == base["name"]
    assert set(override["services"]) == set(NODES) <= set(base["services"])
    certificates = tmp_path / "certs"
    run([str(SCRIPT), str(certificates)])
    for name in NODES:
        node = override["services"][name]
        (mount,) = node["volumes"]
        source, target, mode = mount.split(":")
        assert (source, mode) == ("./secrets/tls", "ro")  # the script's default output
        environment = {**base["services"][name]["environment"], **node["environment"]}
        assert not unknown_settings(set(environment))
        for setting in ("SHOAL_TLS_CERT_FILE", "SHOAL_TLS_KEY_FILE", "SHOAL_TLS_CA_FILE"):
            assert environment[setting].startswith(target + "/"), setting
        health_port = environment["SHOAL_HEALTH_PORT"]
        assert f'":{health_port}"' in " ".join(node["healthcheck"]["test"])
        # What the node makes of it, with the files where the mount puts them.
        environ = {
            key: value.replace(target, str(certificates)) for key, value in environment.items()
        }
        config = load_config(flags={"data_dir": str(tmp_path / name)}, environ=environ)
        assert config.tls_cert_file == certificates / "node.crt"
        assert config.tls_client_auth == "require"
        assert config.health_port == int(health_port)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """A TLS handshake between two in-memory endpoints; the client's side, once done."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(from_server, from_client, server_hostname=hostname)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, name in ((client_side, "client"), (server_side, "server")):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        to_server.write(from_client.read())
        from_server.write(to_client.read())
        if all(done.values()):
            return client_side
    raise AssertionError("the handshake did not finish")


def test_script_issues_what_the_nodes_need_and_renews_under_the_same_ca(
    tmp_path: Path,
) -> None:
    run([str(SCRIPT), str(tmp_path)])
    assert (tmp_path / ".gitignore").read_text() == "*\n"
    ca = tmp_path / "ca.crt"
    node = x509.load_pem_x509_certificate((tmp_path / "node.crt").read_bytes())
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(NODES) <= set(names.get_values_for_type(x509.DNSName))

    # A node serving, another node (or the CLI) calling with its client certificate.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    server.load_cert_chain(tmp_path / "node.crt", tmp_path / "node.key")
    server.verify_mode = ssl.CERT_REQUIRED
    for certificate in ("node", "client"):
        client = ssl.create_default_context(cafile=str(ca))
        client.load_cert_chain(tmp_path / f"{certificate}.crt", tmp_path / f"{certificate}.key")
        for host in NODES:
            assert _handshake(server, client, host).getpeercert() is not None
    with pytest.raises(ssl.SSLCertVerificationError):  # names the compose hosts only
        _handshake(server, client, "elsewhere.example")
    without_certificate = ssl.create_default_context(cafile=str(ca))
    with pytest.raises(ssl.SSLError):  # the server requires one
        _handshake(server, without_certificate, "shoal-0")

    ca_before = ca.read_bytes()
    run([str(SCRIPT), str(tmp_path)])
    renewed = x509.load_pem_x509_certificate((tmp_path / "node.crt").read_bytes())
    assert ca.read_bytes() == ca_before
    assert renewed.serial_number != node.serial_number
