"""HttpEndpoint delivery in AWS's request/response format, to a real HTTPS server started by
the test (TLS from a test CA the node trusts through SSL_CERT_FILE), with the S3 backup on
moto's server: the request's headers and body, AWS's response check, retries, and failed
records written to the error prefix after RetryOptions.DurationInSeconds."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.clock import ManualClock
from tests.certificates import issue, make_authority
from tests.firehose.conftest import advance_until, call, wait_status
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


@dataclass
class Endpoint:
    """What the test's HTTPS endpoint received, and how it answers."""

    url: str = ""
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    answer_status: int = 200
    echo_request_id: bool = True


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            document = json.loads(body)
            endpoint.requests.append((dict(self.headers.items()), document))
            request_id = document["requestId"] if endpoint.echo_request_id else "another"
            answer = json.dumps({"requestId": request_id, "timestamp": 1}).encode()
            self.send_response(endpoint.answer_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def https_endpoint(tmp_path: Path) -> Iterator[tuple[Endpoint, Path]]:
    authority = make_authority(tmp_path / "ca", "test-ca")
    leaf = issue(authority, tmp_path / "server", "endpoint")
    endpoint = Endpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert_file, leaf.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    endpoint.url = f"https://127.0.0.1:{server.server_address[1]}/ingest"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint, authority.cert_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _configuration(url: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "EndpointConfiguration": {"Url": url, "Name": "test", "AccessKey": "secret-key"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        "RequestConfiguration": {
            "ContentEncoding": "GZIP",
            "CommonAttributes": [{"AttributeName": "env", "AttributeValue": "test"}],
        },
        "S3Configuration": {
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "backup/",
        },
        **extra,
    }


async def test_records_arrive_in_aws_format(
    firehose: Any,
    clock: ManualClock,
    s3_server: S3Server,
    https_endpoint: tuple[Endpoint, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, ca_file = https_endpoint
    s3_server.client().create_bucket(Bucket="http-ok")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # read at each request
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="to-http",
        HttpEndpointDestinationConfiguration=_configuration(endpoint.url, "http-ok"),
    )
    description = await wait_status(firehose, "to-http", "ACTIVE")
    http = description["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert http["EndpointConfiguration"] == {"Url": endpoint.url, "Name": "test"}
    records = [f"event-{i}\n".encode() for i in range(30)]
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="to-http",
        Records=[{"Data": data} for data in records],
    )

    async def all_received() -> bool:
        return sum(len(doc["records"]) for _, doc in endpoint.requests) >= 30

    await advance_until(clock, all_received, interval_ms=60_000)
    received = sorted(
        base64.b64decode(item["data"]) for _, doc in endpoint.requests for item in doc["records"]
    )
    assert received == sorted(records)
    headers, document = endpoint.requests[0]
    assert headers["X-Amz-Firehose-Access-Key"] == "secret-key"
    assert headers["X-Amz-Firehose-Request-Id"] == document["requestId"]
    assert headers["X-Amz-Firehose-Source-Arn"].endswith(":deliverystream/to-http")
    assert json.loads(headers["X-Amz-Firehose-Common-Attributes"]) == {
        "commonAttributes": {"env": "test"}
    }
    assert headers["Content-Encoding"] == "gzip"
    assert isinstance(document["timestamp"], int)
    firehose.close()


async def test_refused_records_go_to_the_error_prefix_after_the_retry_duration(
    firehose: Any,
    clock: ManualClock,
    s3_server: S3Server,
    https_endpoint: tuple[Endpoint, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, ca_file = https_endpoint
    endpoint.echo_request_id = False  # AWS's check: the response must name the request
    s3_server.client().create_bucket(Bucket="http-failed")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # read at each request
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="http-refused",
        HttpEndpointDestinationConfiguration=_configuration(
            endpoint.url, "http-failed", RetryOptions={"DurationInSeconds": 0}
        ),
    )
    await wait_status(firehose, "http-refused", "ACTIVE")
    await call(firehose.put_record, DeliveryStreamName="http-refused", Record={"Data": b"lost?\n"})
    objects: dict[str, bytes] = {}

    async def written_to_the_error_prefix() -> bool:
        nonlocal objects
        objects = await asyncio.to_thread(s3_server.objects, "http-failed")
        return bool(objects)

    await advance_until(clock, written_to_the_error_prefix, interval_ms=60_000)
    ((key, body),) = objects.items()
    assert key.startswith("backup/http-endpoint-failed/")
    (line,) = body.splitlines()
    failed = json.loads(line)
    assert base64.b64decode(failed["rawData"]) == b"lost?\n"
    assert failed["errorCode"] == "HttpEndpoint.InvalidResponseFromDestination"
    assert failed["attemptsMade"] == 1
    assert len(endpoint.requests) == 1
    firehose.close()
