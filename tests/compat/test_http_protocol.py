"""The AWS wire protocol byte by byte: CBOR, HTTP/2 (h2c and TLS+ALPN), SigV4, and every
malformed request, sent with httpx and cbor2 so that nothing an SDK smooths over is hidden.

The answers to malformed requests follow AWS as kinesalite recorded it; the table is in
`broker/gateway/http_service.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import cbor2
import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker import limits
from broker.clock import ManualClock
from broker.gateway.http_service import AwsHttpApp
from broker.gateway.services import JsonService
from broker.node import Node
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config
from tests.conftest import running_node as running_configured_node

# One node for the module (its tests use distinct stream names), on the module's event loop;
# the tests that need a node of their own (TLS, signing, timeouts) start it themselves.
# The class AWS names for any JSON number in a SerializationException (Coral keeps numbers so).
NUMBER = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber"
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(wall_ms=1_790_000_000_000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(tmp_path_factory.mktemp("shared") / "node")
    async with running_configured_node(config, clock) as started:
        yield started


JSON = "application/x-amz-json-1.1"
CBOR = "application/x-amz-cbor-1.1"
TARGET = "Kinesis_20131202."
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def cbor_loads(body: bytes) -> Any:
    """CBOR as the Java SDK reads it: tag 1 holds epoch milliseconds."""
    return cbor2.loads(body, semantic_decoders={1: lambda value, _immutable: ("ms", value)})


def headers(operation: str | None, content_type: str | None = JSON) -> dict[str, str]:
    result: dict[str, str] = {}
    if operation is not None:
        result["x-amz-target"] = TARGET + operation
    if content_type is not None:
        result["content-type"] = content_type
    return result


async def post(
    client: httpx.AsyncClient, url: str, operation: str, body: Any, content_type: str = JSON
) -> httpx.Response:
    content = json.dumps(body).encode() if content_type == JSON else cbor2.dumps(body)
    return await client.post(url, headers=headers(operation, content_type), content=content)


@contextlib.asynccontextmanager
async def running_node(data_dir: Path, clock: ManualClock, **settings: Any) -> AsyncIterator[Node]:
    async with running_configured_node(node_config(data_dir, settings=settings), clock) as node:
        yield node


# --- CBOR ---------------------------------------------------------------------------------


async def test_cbor_blobs_and_millisecond_timestamps(endpoint: str, clock: ManualClock) -> None:
    """The Java SDK's format: byte strings for blobs, tag 1 with epoch *milliseconds*."""
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        created = await post(
            client, endpoint, "CreateStream", {"StreamName": "c", "ShardCount": 1}, CBOR
        )
        assert created.status_code == 200
        assert created.headers["content-type"] == CBOR
        summary = await post(client, endpoint, "DescribeStreamSummary", {"StreamName": "c"}, CBOR)
        created_at = cbor_loads(summary.content)["StreamDescriptionSummary"][
            "StreamCreationTimestamp"
        ]
        assert created_at == ("ms", clock.wall_ms())

        clock.advance(ms=1_234)
        put = await post(
            client,
            endpoint,
            "PutRecord",
            {"StreamName": "c", "PartitionKey": "k", "Data": b"\x00\x01binary\xff"},
            CBOR,
        )
        assert put.status_code == 200, put.content
        shard_id = cbor_loads(put.content)["ShardId"]
        # AT_TIMESTAMP with a tag-1 millisecond value, exactly one ms before the record.
        iterator = await post(
            client,
            endpoint,
            "GetShardIterator",
            {
                "StreamName": "c",
                "ShardId": shard_id,
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": cbor2.CBORTag(1, clock.wall_ms() - 1),
            },
            CBOR,
        )
        assert iterator.status_code == 200, iterator.content
        records = await post(
            client,
            endpoint,
            "GetRecords",
            {"ShardIterator": cbor_loads(iterator.content)["ShardIterator"]},
            CBOR,
        )
        record = cbor_loads(records.content)["Records"][0]
        assert record["Data"] == b"\x00\x01binary\xff"
        assert record["ApproximateArrivalTimestamp"] == ("ms", clock.wall_ms())

        # A plain number is read as milliseconds too; one past the record finds nothing.
        record_ms = clock.wall_ms()
        clock.advance(ms=1)  # (a timestamp in the future is refused)
        later = await post(
            client,
            endpoint,
            "GetShardIterator",
            {
                "StreamName": "c",
                "ShardId": shard_id,
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": record_ms + 1,
            },
            CBOR,
        )
        empty = await post(
            client,
            endpoint,
            "GetRecords",
            {"ShardIterator": cbor_loads(later.content)["ShardIterator"]},
            CBOR,
        )
        assert cbor_loads(empty.content)["Records"] == []


async def test_json_timestamps_are_epoch_seconds(endpoint: str, clock: ManualClock) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        created = await post(client, endpoint, "CreateStream", {"StreamName": "j", "ShardCount": 1})
        # An operation with no output shape answers 200 with an empty body, as AWS does.
        assert (created.status_code, created.content) == (200, b"")
        assert created.headers["content-length"] == "0"
        summary = (
            await post(client, endpoint, "DescribeStreamSummary", {"StreamName": "j"})
        ).json()
        assert (
            summary["StreamDescriptionSummary"]["StreamCreationTimestamp"] == clock.wall_ms() / 1000
        )
        data = await post(
            client, endpoint, "PutRecord", {"StreamName": "j", "PartitionKey": "k", "Data": "aGk="}
        )
        assert data.status_code == 200
        iso = await post(
            client,
            endpoint,
            "GetShardIterator",
            {
                "StreamName": "j",
                "ShardId": "shardId-000000000000",
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": "2020-01-01T00:00:00Z",
            },
        )
        assert iso.status_code == 200, iso.text
        records = (await post(client, endpoint, "GetRecords", iso.json())).json()["Records"]
        assert records[0]["Data"] == "aGk="
        assert records[0]["ApproximateArrivalTimestamp"] == clock.wall_ms() / 1000


# --- HTTP/2 and TLS -----------------------------------------------------------------------


async def test_h2c_prior_knowledge(endpoint: str) -> None:
    """What the JS SDK v3 does on http://: HTTP/2 without an upgrade, on the same port."""
    async with httpx.AsyncClient(http1=False, http2=True, timeout=_TIMEOUT) as client:
        responses = await asyncio.gather(
            *(
                post(client, endpoint, "CreateStream", {"StreamName": f"h{i}", "ShardCount": 1})
                for i in range(5)
            )
        )
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert all(r.status_code == 200 for r in responses)
        listed = await post(client, endpoint, "ListStreams", {})
        names = listed.json()["StreamNames"]
        assert [name for name in names if name.startswith("h")] == [f"h{i}" for i in range(5)]
        bad = await post(client, endpoint, "DescribeStream", {"StreamName": "nope"})
        assert bad.status_code == 400
        assert bad.json()["__type"] == "ResourceNotFoundException"
    async with httpx.AsyncClient(timeout=_TIMEOUT) as http1:
        same_port = await post(http1, endpoint, "ListStreams", {})
        assert same_port.http_version == "HTTP/1.1"
        assert same_port.status_code == 200


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_with_alpn_h2_and_http11(tmp_path: Path, clock: ManualClock) -> None:
    cert, key = self_signed_certificate(tmp_path)
    async with running_node(tmp_path / "node", clock, tls_cert_file=cert, tls_key_file=key) as node:
        url = f"https://127.0.0.1:{node.http_port}/"
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(http2=True, verify=trust, timeout=_TIMEOUT) as client:
            created = await post(
                client, url, "CreateStream", {"StreamName": "tls", "ShardCount": 1}
            )
            assert created.http_version == "HTTP/2"  # ALPN chose h2
            assert created.status_code == 200
        kinesis = boto_client(url, verify=str(cert))
        try:
            names = (await call(kinesis.list_streams))["StreamNames"]
            assert names == ["tls"]
        finally:
            kinesis.close()
        async with httpx.AsyncClient(timeout=_TIMEOUT) as cleartext:
            with pytest.raises(httpx.HTTPError):
                await cleartext.post(f"http://127.0.0.1:{node.http_port}/", content=b"{}")


# --- Malformed requests -------------------------------------------------------------------


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.headers.get("x-amzn-errortype", "")


# (method, operation, content type, body) -> (status, __type, format of the answer); the
# cases share one node, since each starts in about a second.
MALFORMED = [
    ("GET", None, None, b"", 403, "MissingAuthenticationTokenException", None),
    ("PUT", "ListStreams", JSON, b"{}", 403, "MissingAuthenticationTokenException", None),
    ("POST", "ListStreams", JSON, b"", 400, "SerializationException", JSON),
    ("POST", "Nope", JSON, b"", 400, "UnknownOperationException", JSON),
    ("POST", "ListStreams", CBOR, b"", 400, "SerializationException", CBOR),
    ("POST", "ListStreams", None, b"", 403, "MissingAuthenticationTokenException", None),
    ("POST", None, "text/plain", b"{}", 403, "MissingAuthenticationTokenException", None),
    ("POST", "ListStreams", JSON, b"{not json", 400, "SerializationException", JSON),
    ("POST", "ListStreams", JSON, b"[1, 2]", 400, "SerializationException", JSON),
    ("POST", "ListStreams", JSON, b"\xff\xfe", 400, "SerializationException", JSON),
    ("POST", "ListStreams", JSON, b'{"Limit": NaN}', 400, "SerializationException", JSON),
    ("POST", "ListStreams", CBOR, b"\xff\x00garbage", 400, "SerializationException", CBOR),
    ("POST", "ListStreams", CBOR, cbor2.dumps([1]), 400, "SerializationException", CBOR),
    ("POST", "Nope", JSON, b"{}", 400, "UnknownOperationException", JSON),
    ("POST", "SubscribeToShard", JSON, b"{}", 400, "ValidationException", JSON),
    ("POST", "CreateStream", JSON, b"{}", 400, "ValidationException", JSON),
]


async def test_malformed_requests(endpoint: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        for method, operation, content_type, body, status, error, answer_type in MALFORMED:
            case = f"{method} {operation} {content_type} {body[:16]!r}"
            response = await client.request(
                method, endpoint, headers=headers(operation, content_type), content=body
            )
            assert error_of(response) == (status, error), case
            assert response.headers["x-amzn-requestid"], case
            if answer_type == JSON:
                assert response.headers["content-type"] == JSON, case
                assert response.json()["__type"] == error, case
            elif answer_type == CBOR:
                assert response.headers["content-type"] == CBOR, case
                assert cbor2.loads(response.content)["__type"] == error, case
            else:
                assert response.text.startswith(f"<{error}"), case
        # AWS's front end (kinesalite's recordings): a request it cannot map to an operation
        # is AccessDenied once it carries a signature, whatever the target or the body, and
        # exposes only its request ids to a page.
        for method, operation, content_type in [
            ("GET", None, None),
            ("POST", "ListStreams", None),
            ("POST", "ListStream", None),
            ("POST", None, "application/x-amz-json-1.0"),
        ]:
            signed = headers(operation, content_type) | {"authorization": "X", "origin": "o"}
            response = await client.request(method, endpoint, headers=signed)
            assert error_of(response) == (403, "AccessDeniedException"), (method, operation)
            assert response.text == (
                "<AccessDeniedException>\n  <Message>Unable to determine service/operation name "
                "to be authorized</Message>\n</AccessDeniedException>\n"
            )
            assert response.headers["access-control-allow-origin"] == "*"
            exposed = response.headers["access-control-expose-headers"]
            assert exposed == "x-amz-request-id, x-amz-id-2"


async def test_errors_aws_sends_without_a_message(endpoint: str) -> None:
    """Empty bodies, bodies that are not an object, unknown operations: `__type` only."""
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        for operation, body in [
            ("ListStreams", b""),
            ("Nope", b""),
            ("ListStreams", b"[1]"),
            ("ListStreams", b"{not json"),
            ("Nope", b"{}"),
        ]:
            response = await client.post(endpoint, headers=headers(operation), content=body)
            assert set(response.json()) == {"__type"}, (operation, body)


async def test_not_found_names_the_shard_where_aws_names_it(endpoint: str) -> None:
    """The exact bodies of kinesalite's recordings of AWS for a stream that does not exist:
    SplitShard and MergeShards name a shard id they cannot read, raw; GetRecords on an
    iterator of a deleted stream names its shard; a readable id leaves the stream named."""
    account = "000000000000"

    async def not_found(operation: str, body: dict[str, Any]) -> str:
        response = await post(client, endpoint, operation, body)
        assert response.status_code == 400, (operation, body)
        answer = response.json()
        assert answer["__type"] == "ResourceNotFoundException", answer
        assert set(answer) == {"__type", "message"}, answer
        return str(answer["message"])

    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        assert await not_found(
            "SplitShard",
            {
                "StreamName": "void",
                "ShardToSplit": "shardId-002147483648",
                "NewStartingHashKey": "0",
            },
        ) == (f"Could not find shard shardId-002147483648 in stream void under account {account}.")
        assert await not_found(
            "MergeShards",
            {"StreamName": "void", "ShardToMerge": "s-0", "AdjacentShardToMerge": "2.14E4"},
        ) == (f"Could not find shard 2.14E4 in stream void under account {account}.")
        assert await not_found(
            "MergeShards",
            {"StreamName": "void", "ShardToMerge": "s-0", "AdjacentShardToMerge": "s-1"},
        ) == (f"Stream void under account {account} not found.")

        created = await post(
            client, endpoint, "CreateStream", {"StreamName": "brief", "ShardCount": 2}
        )
        assert created.status_code == 200
        issued = await post(
            client,
            endpoint,
            "GetShardIterator",
            {"StreamName": "brief", "ShardId": "shardId-1", "ShardIteratorType": "LATEST"},
        )
        iterator = issued.json()["ShardIterator"]
        deleted = await post(client, endpoint, "DeleteStream", {"StreamName": "brief"})
        assert deleted.status_code == 200
        assert await not_found("GetRecords", {"ShardIterator": iterator}) == (
            f"Shard shardId-000000000001 in stream brief under account {account} does not exist"
        )


async def test_application_json_is_answered_as_aws_answers_it(endpoint: str) -> None:
    """Not the JSON 1.1 protocol: Coral's generic 200 envelope, whatever the target."""
    plain = "application/json"
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        for body, error_type, key in [
            (b"{}", "UnknownOperationException", "message"),
            (b'{"StreamName": "x"}', "UnknownOperationException", "message"),
            (b"[1]", "SerializationException", "Message"),
            (b"nonsense", "SerializationException", "Message"),
        ]:
            response = await client.post(
                endpoint, headers=headers("ListStreams", plain), content=body
            )
            assert response.status_code == 200, body
            assert response.headers["content-type"] == plain
            assert response.json() == {
                "Output": {"__type": f"com.amazon.coral.service#{error_type}", key: None},
                "Version": "1.0",
            }
        # An empty body too, with or without a target (kinesalite's recordings).
        for operation in ("ListStreams", None):
            empty = await client.post(endpoint, headers=headers(operation, plain), content=b"")
            assert empty.status_code == 200
            assert empty.json() == {
                "Output": {
                    "__type": "com.amazon.coral.service#UnknownOperationException",
                    "message": None,
                },
                "Version": "1.0",
            }


async def test_cors_as_aws_serves_it(endpoint: str) -> None:
    page = "http://localhost:8080"
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        preflight = await client.options(
            endpoint,
            headers={
                "origin": page,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-amz-target,authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.content == b""
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert preflight.headers["access-control-allow-methods"] == "POST"
        assert preflight.headers["access-control-allow-headers"] == (
            "content-type,x-amz-target,authorization"
        )
        assert preflight.headers["access-control-max-age"] == "172800"
        assert preflight.headers["x-amzn-requestid"]
        assert "x-amz-id-2" not in preflight.headers

        listed = await client.post(
            endpoint, headers={**headers("ListStreams"), "origin": page}, content=b"{}"
        )
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == "*"
        exposed = listed.headers["access-control-expose-headers"].split(",")
        assert {"x-amzn-RequestId", "x-amzn-ErrorType", "x-amz-id-2"} <= set(exposed)
        failed = await client.post(
            endpoint, headers={**headers("DescribeStream"), "origin": page}, content=b"{}"
        )
        assert failed.status_code == 400
        assert failed.headers["access-control-allow-origin"] == "*"

        # Without Origin: no CORS headers, and OPTIONS is a method AWS refuses.
        bare = await client.post(endpoint, headers=headers("ListStreams"), content=b"{}")
        assert "access-control-allow-origin" not in bare.headers
        refused = await client.options(endpoint)
        assert refused.status_code == 403


async def test_every_answer_carries_x_amz_id_2(endpoint: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        answers = [
            await client.post(endpoint, headers=headers("ListStreams"), content=b"{}"),
            await client.post(endpoint, headers=headers("ListStreams"), content=b""),
            await client.get(endpoint),
        ]
    ids = [answer.headers["x-amz-id-2"] for answer in answers]
    assert all(len(base64.b64decode(value)) == 72 for value in ids)
    assert len(set(ids)) == len(ids)
    assert all(answer.headers["x-amzn-requestid"] for answer in answers)


async def test_unknown_service_prefix(endpoint: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.post(
            endpoint,
            headers={"x-amz-target": "DynamoDB_20120810.ListTables", "content-type": JSON},
            content=b"{}",
        )
    assert error_of(response) == (400, "UnknownOperationException")


# (operation, body) -> the SerializationException's message, worded as AWS words it.
WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    (
        "DescribeStream",
        {"StreamName": 1},
        NUMBER + " can not be converted to an String",
    ),
    (
        "DescribeStream",
        {"StreamName": True},
        "class java.lang.Boolean can not be converted to an String",
    ),
    ("DescribeStream", {"StreamName": ["a"]}, "Start of list found where not expected"),
    (
        "DescribeStream",
        {"StreamName": {}},
        "Start of structure or map found where not expected.",
    ),
    (
        "ListStreams",
        {"Limit": "1"},
        "class java.lang.String can not be converted to an Integer",
    ),
    (
        "ListStreams",
        {"Limit": True},
        "class java.lang.Boolean can not be converted to an Integer",
    ),
    (
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": "abc"},
        "'abc' can not be converted to a Blob: "
        "Base64 encoded length is expected a multiple of 4 bytes but found: 3",
    ),
    (
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": "ab!="},
        "'ab!=' can not be converted to a Blob: Invalid Base64 character: '!'",
    ),
    (  # kinesalite's recording: the padding cannot lead
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": "=+/="},
        "'=+/=' can not be converted to a Blob: Invalid Base64 character: '='",
    ),
    (
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": 12},
        NUMBER + " can not be converted to a Blob",
    ),
    (
        "PutRecords",
        {"StreamName": "s", "Records": {}},
        "Start of structure or map found where not expected.",
    ),
    ("PutRecords", {"StreamName": "s", "Records": "x"}, "Expected list or null"),
    ("PutRecords", {"StreamName": "s", "Records": ["x"]}, "Expected null"),
    (
        "AddTagsToStream",
        {"StreamName": "s", "Tags": []},
        "Start of list found where not expected",
    ),
    (
        "GetShardIterator",
        {
            "StreamName": "s",
            "ShardId": "0",
            "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": True,
        },
        "class java.lang.Boolean can not be converted to an Timestamp",
    ),
    (
        "GetShardIterator",
        {
            "StreamName": "s",
            "ShardId": "0",
            "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": "yesterday",
        },
        "'yesterday' can not be converted to an Timestamp",
    ),
]


async def test_wrong_member_types(endpoint: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        for operation, body, message in WRONG_TYPES:
            response = await post(client, endpoint, operation, body)
            assert error_of(response) == (400, "SerializationException"), body
            assert response.json() == {"__type": "SerializationException", "Message": message}


async def test_unknown_members_and_nulls_are_ignored(endpoint: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await post(client, endpoint, "ListStreams", {"Bogus": [1], "Limit": None})
        assert response.status_code == 200
        fractional = await post(client, endpoint, "ListStreams", {"Limit": 2.7})
        assert fractional.status_code == 200  # AWS truncates a fractional integer


async def test_body_over_the_bound_is_refused_before_it_is_read(endpoint: str) -> None:
    """413 from the declared length alone: the server answers without waiting for the body."""
    port = int(endpoint.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {JSON}\r\nX-Amz-Target: {TARGET}PutRecords\r\n"
                f"Content-Length: {limits.http_body_bytes_max + 1}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        assert status_line.split()[1] == b"413"
    finally:
        writer.close()


async def test_streamed_body_over_the_bound_is_refused(endpoint: str) -> None:
    """No Content-Length: the server counts, and answers 413 at the bound. Over HTTP/1.1 it may
    close while the client is still sending; over HTTP/2 the answer must arrive on the stream."""
    chunk = b" " * (1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(limits.http_body_bytes_max // len(chunk) + 2):
            yield chunk

    async with httpx.AsyncClient(http1=False, http2=True, timeout=_TIMEOUT) as client:
        response = await client.post(endpoint, headers=headers("ListStreams"), content=body())
        assert response.status_code == 413
        after = await post(client, endpoint, "ListStreams", {})  # the connection still works
        assert after.status_code == 200
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        try:
            response = await client.post(endpoint, headers=headers("ListStreams"), content=body())
        except httpx.HTTPError:
            return  # the server answered and closed while the client was still sending
    assert response.status_code == 413


async def test_largest_put_records_fits(endpoint: str) -> None:
    """500 records of 20 KiB base64-encoded (13.3 MiB of JSON) is under the body bound."""
    records = [
        {"PartitionKey": f"k{i}", "Data": "A" * (20 * 1024 * 4 // 3 // 4 * 4)} for i in range(500)
    ]
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        await post(client, endpoint, "CreateStream", {"StreamName": "big", "ShardCount": 1})
        response = await post(
            client, endpoint, "PutRecords", {"StreamName": "big", "Records": records}
        )
    assert response.status_code == 200, response.text
    assert response.json()["FailedRecordCount"] == 0


class _FailingService:
    """A stand-in service whose one operation fails unexpectedly (a fake, not a mock)."""

    operations = frozenset({"ListStreams"})

    async def call(self, operation: str, request: Any, caller: Any = None) -> dict[str, Any]:
        raise RuntimeError("boom")


async def test_unexpected_exception_is_internal_failure(caplog: pytest.LogCaptureFixture) -> None:
    app = AwsHttpApp(
        (JsonService("kinesis", _FailingService()),),
        clock=ManualClock(),
        verifiers={},
        region="us-east-1",
        account_id="000000000000",
    )
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [
            (b"content-type", JSON.encode()),
            (b"x-amz-target", b"Kinesis_20131202.ListStreams"),
        ],
    }
    with caplog.at_level(logging.ERROR, logger="broker.gateway.http_service"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"]) == {
        "__type": "InternalFailure",
        "message": "Internal Service Failure",
    }
    assert any(r.getMessage() == "http_request_failed" and r.exc_info for r in caplog.records)


# --- SigV4 --------------------------------------------------------------------------------

ACCESS_KEY = "AKIDSHOALTEST"
SECRET = "shoal-test-secret"


@pytest_asyncio.fixture(loop_scope="module")
async def signed_node(tmp_path: Path) -> AsyncIterator[tuple[Node, ManualClock]]:
    # Signatures carry the signer's real time, so this node's manual clock starts at it.
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    async with running_node(
        tmp_path / "signed", clock, aws_credentials=(f"{ACCESS_KEY}:{SECRET}",)
    ) as node:
        yield node, clock


async def expect_client_error(client: Any, operation: str, name: str, **kwargs: Any) -> str:
    with pytest.raises(client.exceptions.ClientError) as caught:
        await call(getattr(client, operation), **kwargs)
    error = caught.value.response["Error"]
    assert error["Code"] == name, error
    message: str = error["Message"]
    return message


async def test_sigv4_signed_requests_work_and_others_are_refused(
    signed_node: tuple[Node, ManualClock],
) -> None:
    node, clock = signed_node
    url = f"http://127.0.0.1:{node.http_port}"
    good = boto_client(url, access_key=ACCESS_KEY, secret_key=SECRET)
    wrong_secret = boto_client(url, access_key=ACCESS_KEY, secret_key="nope")
    unknown_key = boto_client(url, access_key="AKIDUNKNOWN", secret_key=SECRET)
    anonymous = boto_client(url, signature_version=botocore.UNSIGNED)
    try:
        await call(good.create_stream, StreamName="signed", ShardCount=1)
        assert (await call(good.list_streams))["StreamNames"] == ["signed"]
        await expect_client_error(wrong_secret, "list_streams", "InvalidSignatureException")
        await expect_client_error(unknown_key, "list_streams", "UnrecognizedClientException")
        await expect_client_error(anonymous, "list_streams", "MissingAuthenticationTokenException")
        clock.advance(ms=6 * 60 * 1000)  # the node is now 6 minutes ahead of the signer
        message = await expect_client_error(good, "list_streams", "InvalidSignatureException")
        assert message.startswith("Signature expired")
    finally:
        for client in (good, wrong_secret, unknown_key, anonymous):
            client.close()


async def test_sigv4_over_h2c(signed_node: tuple[Node, ManualClock]) -> None:
    """Over HTTP/2 the signed `host` is the `:authority` pseudo-header; it must verify."""
    node, _ = signed_node
    url = f"http://127.0.0.1:{node.http_port}/"
    body = b"{}"
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=url, data=body, headers={**headers("ListStreams")}
    )
    botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(ACCESS_KEY, SECRET), "kinesis", "us-east-1"
    ).add_auth(request)
    signed_headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    async with httpx.AsyncClient(http1=False, http2=True, timeout=_TIMEOUT) as client:
        response = await client.post(url, headers=signed_headers, content=body)
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200, response.text
        unsigned = await client.post(url, headers=headers("ListStreams"), content=body)
        assert error_of(unsigned) == (400, "MissingAuthenticationTokenException")


# The header-read time of test_headers_never_finished_are_cut_off.
HEADER_READ_S = 0.5


async def test_headers_never_finished_are_cut_off(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that trickles header lines and never ends them (slowloris) loses its
    connection after the header-read time (0.5 s here instead of 20 s), although it keeps
    sending bytes and the keep-alive time (75 s) is far away."""
    monkeypatch.setattr(limits, "http_header_read_s", HEADER_READ_S)
    async with running_node(tmp_path / "node", clock) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
        try:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()

            async def trickle() -> None:
                while True:  # ends when cancelled below
                    await asyncio.sleep(HEADER_READ_S / 5)
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()

            trickling = asyncio.create_task(trickle())
            started = time.monotonic()
            try:
                async with asyncio.timeout(10):
                    assert await reader.read() == b""  # closed without an answer
            finally:
                trickling.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await trickling
            assert time.monotonic() - started < 5
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        # A kept-alive connection that sends nothing between requests is not cut off by it.
        reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
        request = (
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}"
        )
        try:
            for _ in range(2):
                writer.write(request)
                await writer.drain()
                async with asyncio.timeout(10):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200"), head
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                await asyncio.sleep(1.5 * HEADER_READ_S)  # idle past the header-read time
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
