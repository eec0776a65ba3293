"""The AWS SDK for JavaScript v3 against a real Shoal node, over HTTP/2.

Goal: the JS SDK with its default request handler (NodeHttp2Handler: HTTP/2 for every call,
h2c with prior knowledge on http://, ALPN on https://) runs a whole stream lifecycle against
Shoal's AWS port, and SigV4 verifies although the SDK signs `:authority` instead of `host`.
Method: a real `shoal serve` child process; `tests/compat/js/kinesis_smoke.mjs` (the SDK version
pinned in tests/compat/js/package-lock.json, installed by scripts/install) runs CreateStream ->
ACTIVE -> PutRecord/PutRecords -> ListShards -> GetShardIterator -> GetRecords (byte-exact
round trip) -> DescribeStream -> ListStreams -> DeleteStream and prints a JSON summary; it checks
the replies itself and exits non-zero on any mismatch. Cases: h2c without authentication; h2c
with SigV4 keys on the node (and a wrong secret refused); TLS with a self-signed certificate
(ALPN h2) with SigV4.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, NodeProcess, wait_until

pytestmark = [pytest.mark.process, pytest.mark.slow]

JS_DIR = REPO / "tests" / "compat" / "js"
SCRIPT = JS_DIR / "kinesis_smoke.mjs"
ACCESS_KEY = "AKIDEXAMPLE"
SECRET = "secret"

NODE = shutil.which("node")
NPM = shutil.which("npm")
if NODE is None or NPM is None:
    pytest.skip(
        "node and npm are needed to run the AWS SDK for JavaScript (not on PATH)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module", autouse=True)
def _sdk_installed() -> None:
    if not (JS_DIR / "node_modules" / "@aws-sdk" / "client-kinesis").is_dir():
        pytest.fail(f"{JS_DIR}/node_modules is missing: run scripts/install (it runs npm ci)")


def _http_answers(port: int, *, tls: bool) -> bool:
    """Any HTTP answer to a ListStreams POST (even 4xx for a missing signature) means the AWS
    port is serving."""
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(
            "POST",
            "/",
            body=b"{}",
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "Kinesis_20131202.ListStreams",
            },
        )
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _start(tmp_path: Path, env: dict[str, str], *, tls: bool = False) -> NodeProcess:
    node = NodeProcess(tmp_path / "node", extra_env=env)
    node.start()
    try:
        wait_until(
            lambda: _http_answers(node.http_port, tls=tls),
            deadline_s=120,
            what=f"the AWS HTTP port {node.http_port} to answer",
        )
    except BaseException as err:
        node.terminate()
        log = node.log_text()[-4000:]
        raise AssertionError(f"node did not serve HTTP; its log:\n{log}") from err
    return node


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[NodeProcess] = []

    def start(env: dict[str, str], *, tls: bool = False) -> NodeProcess:
        node = _start(tmp_path, env, tls=tls)
        started.append(node)
        return node

    yield start
    for node in started:
        node.terminate()


def _run_smoke(
    node: NodeProcess, endpoint: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    assert NODE is not None
    # The SDK must not pick up keys, a profile or an endpoint from the developer's environment.
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in {"SHOAL_ENDPOINT", "NODE_OPTIONS"}
    }
    result = subprocess.run(
        [NODE, str(SCRIPT), "--endpoint", endpoint, "--timeout-ms", "60000", *args],
        cwd=JS_DIR,
        env={
            **base,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        summary: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        summary = {}
    if result.returncode != 0 or not summary.get("ok"):
        raise AssertionError(
            f"kinesis_smoke.mjs exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-4000:]}\n"
            f"--- node log (tail) ---\n{node.log_text()[-4000:]}"
        )
    return summary


def _assert_lifecycle(summary: dict[str, Any], *, alpn: str) -> None:
    ops = [call["op"] for call in summary["calls"]]
    for op in (
        "CreateStream",
        "DescribeStreamSummary",
        "PutRecord",
        "PutRecords",
        "ListShards",
        "GetShardIterator",
        "GetRecords",
        "DescribeStream",
        "ListStreams",
        "DeleteStream",
    ):
        assert op in ops, f"{op} was not called: {ops}"
    assert summary["recordsRead"] == summary["recordsPut"] == 22
    assert summary["handler"] == "h2"
    assert summary["http2"]["sessions"] >= 1
    assert summary["http2"]["alpn"] == [alpn], summary["http2"]
    assert any(":authority" in signed.split(";") for signed in summary["signedHeaders"])


def test_h2c_without_authentication(node_factory: Any) -> None:
    node = node_factory({})
    summary = _run_smoke(node, f"http://127.0.0.1:{node.http_port}")
    _assert_lifecycle(summary, alpn="h2c")


def test_h2c_with_sigv4_signing_authority(node_factory: Any) -> None:
    node = node_factory({"SHOAL_AWS_CREDENTIALS": f"{ACCESS_KEY}:{SECRET}"})
    summary = _run_smoke(
        node,
        f"http://127.0.0.1:{node.http_port}",
        "--access-key",
        ACCESS_KEY,
        "--secret-key",
        SECRET,
        "--region",
        "us-east-1",
        "--check-bad-secret",
    )
    _assert_lifecycle(summary, alpn="h2c")
    assert summary["badSecretError"] in {"InvalidSignatureException", "UnrecognizedClientException"}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_alpn_h2_with_sigv4(node_factory: Any, tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    node = node_factory(
        {
            "SHOAL_AWS_CREDENTIALS": f"{ACCESS_KEY}:{SECRET}",
            "SHOAL_TLS_CERT_FILE": str(cert_file),
            "SHOAL_TLS_KEY_FILE": str(key_file),
        },
        tls=True,
    )
    # NODE_EXTRA_CA_CERTS trusts the certificate and leaves the client's default handler alone.
    summary = _run_smoke(
        node,
        f"https://127.0.0.1:{node.http_port}",
        "--access-key",
        ACCESS_KEY,
        "--secret-key",
        SECRET,
        env={"NODE_EXTRA_CA_CERTS": str(cert_file)},
    )
    _assert_lifecycle(summary, alpn="h2")


def test_subscribe_to_shard_event_stream_over_h2c(node_factory: Any) -> None:
    """Enhanced fan-out with the JS SDK: `SubscribeToShardCommand`'s event stream over HTTP/2
    delivers a stored record and one pushed while subscribed; a second subscription of the same
    consumer and shard is refused (tests/compat/js/subscribe_smoke.mjs)."""
    assert NODE is not None
    node = node_factory({"SHOAL_CONSUMER_CREATING_MS": "0"})
    result = subprocess.run(
        [
            NODE,
            str(JS_DIR / "subscribe_smoke.mjs"),
            "--endpoint",
            f"http://127.0.0.1:{node.http_port}",
            "--timeout-ms",
            "60000",
        ],
        cwd=JS_DIR,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = json.loads(result.stdout or "{}")
    assert result.returncode == 0 and summary.get("ok"), (
        f"stdout: {result.stdout}\nstderr: {result.stderr[-4000:]}\n"
        f"node log: {node.log_text()[-4000:]}"
    )
    assert summary["records"] == ["first", "pushed"]
    assert summary["secondSubscription"] == "ResourceInUseException"
    assert summary["http2Sessions"] >= 1
