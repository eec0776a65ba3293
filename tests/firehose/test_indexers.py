"""OpenSearch, Splunk and Snowflake destinations. Neither product can run here: OpenSearch's
`_bulk` and Splunk's HEC are served by a small HTTP server in the test that answers as they
document (one document refused, a token checked, the SigV4 signature of every `_bulk` request
verified with botocore's signer and the node's secret key, as OpenSearch Service and
Serverless verify it), so these prove Shoal's side of the protocol, not compatibility with the
products. A Snowflake destination whose PrivateKey cannot be read fails into the S3 backup
(delivery itself: test_snowflake.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import pytest

from broker.clock import ManualClock
from broker.firehose import indexers
from broker.firehose.aws_clients import RequestSigner
from broker.node import Node
from tests.certificates import issue, make_authority
from tests.firehose.conftest import call, s3_destination, wait_status
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support import LOOPBACK

pytestmark = pytest.mark.integration

TOKEN = "0b1c2d3e-hec-token"


def verify_sigv4(url: str, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """(service, region) of a POST's valid SigV4 signature by ACCESS_KEY; AssertionError
    naming what does not match otherwise. The server's side, recomputed with botocore."""
    lower = {name.lower(): value for name, value in headers.items()}  # names: any case
    algorithm, _, fields = lower["authorization"].partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256", algorithm
    parts = dict(item.strip().split("=", 1) for item in fields.split(","))
    access_key, date, region, service, terminal = parts["Credential"].split("/")
    assert (access_key, terminal) == (ACCESS_KEY, "aws4_request"), parts["Credential"]
    timestamp = lower["x-amz-date"]
    assert timestamp.startswith(date), (timestamp, date)
    assert lower["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest(), "payload hash"
    signed = parts["SignedHeaders"].split(";")
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=url, data=body, headers={name: lower[name] for name in signed}
    )
    request.context["timestamp"] = timestamp
    signer = botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), service, region
    )
    string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    assert signer.signature(string_to_sign, request) == parts["Signature"], "signature"
    return service, region


class _Received:
    def __init__(self) -> None:
        self.bulk: list[bytes] = []
        self.signed: list[tuple[str, str] | str] = []  # (service, region) or why refused
        self.hec: list[tuple[str, str, bytes]] = []  # path, authorization, body


@pytest.fixture
def indexer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, _Received]]:
    """An HTTPS server (a test CA the node trusts through SSL_CERT_FILE: AWS's patterns ask
    for https) answering `_bulk` and HEC requests."""
    received = _Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, document: Any) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/_bulk":
                url = f"https://{self.headers['Host']}{self.path}"
                try:
                    received.signed.append(verify_sigv4(url, dict(self.headers.items()), body))
                except (AssertionError, KeyError, ValueError) as refused:
                    received.signed.append(f"refused: {refused!r}")
                    mismatch = "The request signature we calculated does not match."
                    self._answer(403, {"message": mismatch})
                    return
                received.bulk.append(body)
                lines = body.splitlines()
                items = []
                for action, document in zip(lines[::2], lines[1::2], strict=True):
                    index = json.loads(action)["index"]["_index"]
                    if b"bad" in document:
                        error = {"type": "mapper_parsing_exception", "reason": "failed to parse"}
                        items.append({"index": {"_index": index, "status": 400, "error": error}})
                    else:
                        items.append({"index": {"_index": index, "status": 201}})
                errors = any(item["index"]["status"] >= 300 for item in items)
                self._answer(200, {"took": 1, "errors": errors, "items": items})
                return
            authorization = self.headers.get("Authorization", "")
            received.hec.append((self.path, authorization, body))
            if authorization != f"Splunk {TOKEN}":
                self._answer(403, {"text": "Invalid token", "code": 4})
                return
            self._answer(200, {"text": "Success", "code": 0})

    authority = make_authority(tmp_path / "ca", "test-ca")
    leaf = issue(authority, tmp_path / "server", "indexer")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.cert_file))
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert_file, leaf.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://{LOOPBACK}:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _objects(
    s3_server: S3Server, bucket: str, prefix: str, clock: ManualClock, *, lines: int = 1
) -> dict[str, bytes]:
    """The objects under `prefix` once they hold `lines` lines (or `}`-ended documents)."""
    async with asyncio.timeout(30):
        while True:
            found = await asyncio.to_thread(s3_server.objects, bucket, prefix)
            body = b"".join(found.values())
            if found and max(len(body.splitlines()), body.count(b"}")) >= lines:
                return found
            clock.advance(ms=200)
            await asyncio.sleep(0.1)


async def test_opensearch_splunk_and_snowflake_deliver_or_fail_into_the_backup(
    firehose: Any,
    fh_node: Node,
    s3_server: S3Server,
    clock: ManualClock,
    indexer: tuple[str, _Received],
) -> None:
    url, received = indexer
    s3_server.create_bucket("indexers")
    hints = {"SizeInMBs": 1, "IntervalInSeconds": 1}
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-search",
        AmazonopensearchserviceDestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "ClusterEndpoint": url,
            "IndexName": "logs",
            "BufferingHints": hints,
            "S3Configuration": s3_destination("indexers", Prefix="search/"),
        },
    )
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-collection",
        AmazonOpenSearchServerlessDestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "CollectionEndpoint": url,
            "IndexName": "events",
            "BufferingHints": hints,
            "S3Configuration": s3_destination("indexers", Prefix="collection/"),
        },
    )
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-splunk",
        SplunkDestinationConfiguration={
            "HECEndpoint": url,
            "HECEndpointType": "Event",
            "HECToken": TOKEN,
            "BufferingHints": hints,
            "S3BackupMode": "AllEvents",
            "S3Configuration": s3_destination("indexers", Prefix="splunk/"),
        },
    )
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-snowflake",
        SnowflakeDestinationConfiguration={
            "AccountUrl": "https://example.snowflakecomputing.com",
            "User": "loader",
            "PrivateKey": "A" * 300,
            "Database": "db",
            "Schema": "public",
            "Table": "events",
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "RetryOptions": {"DurationInSeconds": 0},
            "BufferingHints": hints,
            "S3Configuration": s3_destination("indexers", Prefix="snowflake/"),
        },
    )
    search = await wait_status(firehose, "to-search", "ACTIVE")
    described = search["Destinations"][0]["AmazonopensearchserviceDestinationDescription"]
    assert described["IndexName"] == "logs"
    assert described["S3BackupMode"] == "FailedDocumentsOnly"
    splunk = await wait_status(firehose, "to-splunk", "ACTIVE")
    splunk_described = splunk["Destinations"][0]["SplunkDestinationDescription"]
    assert splunk_described["HECEndpointType"] == "Event"
    snowflake = await wait_status(firehose, "to-snowflake", "ACTIVE")
    snowflake_described = snowflake["Destinations"][0]["SnowflakeDestinationDescription"]
    assert "PrivateKey" not in snowflake_described
    assert snowflake_described["S3BackupMode"] == "FailedDataOnly"
    documents = [b'{"n": 1}', b'{"n": "bad"}', b'{"n": 3}']
    for name in ("to-search", "to-collection", "to-splunk", "to-snowflake"):
        await call(
            firehose.put_record_batch,
            DeliveryStreamName=name,
            Records=[{"Data": data} for data in documents],
        )

    failed = await _objects(s3_server, "indexers", "search/AmazonOpenSearchService-failed/", clock)
    (line,) = b"".join(failed.values()).splitlines()
    refused = json.loads(line)
    assert refused["errorCode"] == "OS.mapper_parsing_exception"
    assert base64.b64decode(refused["rawData"]) == b'{"n": "bad"}'
    async with asyncio.timeout(10):
        while len(b"".join(received.bulk).splitlines()) < 4 * len(documents):
            clock.advance(ms=200)
            await asyncio.sleep(0.05)
    bulk = b"".join(received.bulk).splitlines()
    indices = {json.loads(action)["index"]["_index"] for action in bulk[::2]}
    assert {index.split("-")[0] for index in indices} == {"logs", "events"}
    assert any(index.startswith("logs-") for index in indices)  # OneDay rotation
    assert "events" in indices  # Serverless collections do not rotate
    assert sorted(bulk[1::2]) == sorted(documents * 2)
    # Every _bulk request was signed (SigV4, the node's key), for OpenSearch Service (es) and
    # Serverless (aoss), in the delivery stream's region (a loopback endpoint names none).
    assert set(received.signed) == {("es", "us-east-1"), ("aoss", "us-east-1")}

    backed_up = await _objects(s3_server, "indexers", "splunk/", clock, lines=len(documents))
    assert sorted(b"".join(backed_up.values()).split(b"}")) == sorted(
        b"".join(documents).split(b"}")
    )
    async with asyncio.timeout(10):
        while sum(len(body.splitlines()) for _, _, body in received.hec) < len(documents):
            clock.advance(ms=200)
            await asyncio.sleep(0.05)
    assert {(path, authorization) for path, authorization, _ in received.hec} == {
        ("/services/collector/event", f"Splunk {TOKEN}")
    }
    events = [
        json.loads(event)["event"] for _, _, body in received.hec for event in body.splitlines()
    ]
    assert sorted(events, key=str) == sorted((json.loads(data) for data in documents), key=str)

    snowflake_failed = await _objects(
        s3_server, "indexers", "snowflake/snowflake-failed/", clock, lines=len(documents)
    )
    lines = b"".join(snowflake_failed.values()).splitlines()
    assert {json.loads(line)["errorCode"] for line in lines} == {"Snowflake.InvalidPrivateKey"}
    assert len(lines) == 3


async def test_their_configurations_are_validated(firehose: Any) -> None:
    backup = s3_destination("any")
    refused: list[tuple[str, dict[str, Any], str]] = [
        (
            "ElasticsearchDestinationConfiguration",
            {
                "RoleARN": "arn:aws:iam::000000000000:role/firehose",
                "DomainARN": "arn:aws:es:us-east-1:000000000000:domain/logs",
                "ClusterEndpoint": "https://search.example.com",
                "IndexName": "logs",
                "S3Configuration": backup,
            },
            "Exactly one of DomainARN and ClusterEndpoint",
        ),
        (
            "SplunkDestinationConfiguration",
            {
                "HECEndpoint": "https://splunk.example.com",
                "HECEndpointType": "Raw",
                "S3Configuration": backup,
            },
            "HECToken is required",
        ),
        (
            "SnowflakeDestinationConfiguration",
            {
                "AccountUrl": "https://a.snowflakecomputing.com",
                "Database": "d",
                "Schema": "s",
                "Table": "t",
                "RoleARN": "arn:aws:iam::000000000000:role/firehose",
                "S3Configuration": backup,
            },
            "User and PrivateKey",
        ),
    ]
    for member, configuration, message in refused:
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            await call(
                firehose.create_delivery_stream,
                DeliveryStreamName="refused",
                **{member: configuration},
            )
        assert raised.value.response["Error"]["Code"] == "InvalidArgumentException", member
        assert message in raised.value.response["Error"]["Message"], member


def test_the_signature_is_botocores_and_covers_the_body() -> None:
    """The signer's requests verify as AWS verifies them; a changed body or another secret
    does not (so the server above can refuse)."""
    import os

    url = "https://search-logs-abc.eu-west-1.es.amazonaws.com/_bulk"
    service, region = indexers.signing_scope("Amazonopensearchservice", url, "us-east-1")
    assert (service, region) == ("es", "eu-west-1")
    serverless = "https://abc123.us-west-2.aoss.amazonaws.com/_bulk"
    assert indexers.signing_scope("AmazonOpenSearchServerless", serverless, "us-east-1") == (
        "aoss",
        "us-west-2",
    )
    body = b'{"index":{}}\n{"n":1}\n'
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        headers = RequestSigner().sign(
            service=service,
            region=region,
            method="POST",
            url=url,
            headers={"Content-Type": "application/x-ndjson"},
            body=body,
        )
        assert os.environ["AWS_ACCESS_KEY_ID"] == ACCESS_KEY
    headers["Host"] = "search-logs-abc.eu-west-1.es.amazonaws.com"
    assert verify_sigv4(url, headers, body) == ("es", "eu-west-1")
    with pytest.raises(AssertionError, match="payload hash"):
        verify_sigv4(url, headers, body + b" ")
    forged = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(body + b" ").hexdigest()}
    with pytest.raises(AssertionError, match="signature"):
        verify_sigv4(url, forged, body + b" ")
