"""The AWS door serves several services: JSON services by `X-Amz-Target` prefix (each decoded,
validated and signed with its own botocore model), REST services by method and path.

Driven through httpx's ASGI transport with botocore's own signer, so the requests are the ones
an AWS SDK sends; the services are small fakes that record what reached them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import httpx
import pytest

from broker.caller import Caller
from broker.clock import ManualClock
from broker.gateway import aws_codec
from broker.gateway.aws_codec import WireFormat
from broker.gateway.http_service import AwsHttpApp
from broker.gateway.services import JsonService, Receive, Scope, Send
from broker.gateway.sigv4 import SigV4Verifier
from broker.wire import put_entries

ACCESS_KEY = "AKIDDOORTEST"
SECRET = "door-test-secret"
JSON = "application/x-amz-json-1.1"
PUT_RECORDS = "Kinesis_20131202.PutRecords"


class _Recorder:
    """A service that answers every operation with what it was given."""

    def __init__(self, operations: frozenset[str]) -> None:
        self.operations = operations
        self.calls: list[tuple[str, Mapping[str, Any], Caller | None]] = []

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        self.calls.append((operation, request, caller))
        return {}


class _Rest:
    """A REST service claiming `POST /describeStream` (as the Kinesis Video API does)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def handles(self, method: str, path: str) -> bool:
        return method == "POST" and path == "/describeStream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"rest":true}'})


def _app(clock: ManualClock, *services: JsonService, rest: _Rest | None = None) -> AwsHttpApp:
    verifiers = {
        service.signing_name: SigV4Verifier(
            secrets_by_access_key={ACCESS_KEY: SECRET},
            region="eu-west-1",
            service=service.signing_name,
        )
        for service in services
    }
    return AwsHttpApp(
        services,
        clock=clock,
        verifiers=verifiers,
        region="eu-west-1",
        account_id="123456789012",
        rest=() if rest is None else (rest,),
    )


def _signed(target: str, body: dict[str, Any], *, service: str) -> httpx.Request:
    request = botocore.awsrequest.AWSRequest(
        method="POST",
        url="http://door.test/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": JSON, "X-Amz-Target": target},
    )
    signer = botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(ACCESS_KEY, SECRET), service, "eu-west-1"
    )
    signer.add_auth(request)
    prepared = request.prepare()
    signed_body = prepared.body
    assert isinstance(signed_body, bytes)
    return httpx.Request("POST", prepared.url, headers=dict(prepared.headers), content=signed_body)


def _now() -> ManualClock:
    """The signer dates requests with the real clock; the verifier's clock agrees."""
    return ManualClock(wall_ms=int(time.time() * 1000))


async def _send(app: AwsHttpApp, request: httpx.Request) -> httpx.Response:
    transport = httpx.ASGITransport(app=cast("Any", app), client=("192.0.2.7", 5555))
    async with httpx.AsyncClient(transport=transport) as client:
        return await client.send(request)


async def test_each_target_prefix_reaches_its_own_service_with_its_model() -> None:
    clock = _now()
    kinesis = _Recorder(frozenset({"ListStreams"}))
    firehose = _Recorder(frozenset({"ListDeliveryStreams"}))
    app = _app(clock, JsonService("kinesis", kinesis), JsonService("firehose", firehose))

    answer = await _send(
        app,
        _signed(
            "Firehose_20150804.ListDeliveryStreams",
            {"Limit": 5, "DeliveryStreamType": "DirectPut"},
            service="firehose",
        ),
    )

    assert answer.status_code == 200, answer.text
    assert kinesis.calls == []
    operation, request, caller = firehose.calls[0]
    assert operation == "ListDeliveryStreams"
    assert request == {"Limit": 5, "DeliveryStreamType": "DirectPut"}
    assert caller == Caller(
        region="eu-west-1",
        account_id="123456789012",
        access_key_id=ACCESS_KEY,
        source_address="192.0.2.7",
        door="http",
    )


async def test_a_service_validates_against_its_own_model() -> None:
    clock = _now()
    firehose = _Recorder(frozenset({"ListDeliveryStreams"}))
    app = _app(clock, JsonService("firehose", firehose))

    answer = await _send(
        app,
        _signed(
            "Firehose_20150804.ListDeliveryStreams",
            {"Limit": 0, "DeliveryStreamType": "Elsewhere"},
            service="firehose",
        ),
    )

    assert answer.status_code == 400
    assert answer.json()["__type"] == "ValidationException"
    assert "2 validation errors detected" in answer.json()["message"]
    assert firehose.calls == []


async def test_a_signature_scoped_to_another_service_is_refused() -> None:
    clock = _now()
    firehose = _Recorder(frozenset({"ListDeliveryStreams"}))
    app = _app(
        clock, JsonService("kinesis", _Recorder(frozenset())), JsonService("firehose", firehose)
    )

    answer = await _send(
        app,
        _signed("Firehose_20150804.ListDeliveryStreams", {}, service="kinesis"),
    )

    assert answer.status_code == 400
    assert answer.json()["__type"] == "InvalidSignatureException"
    assert "firehose" in answer.json()["message"]
    assert firehose.calls == []


async def test_an_unknown_prefix_is_an_unknown_operation() -> None:
    clock = _now()
    app = _app(clock, JsonService("kinesis", _Recorder(frozenset({"ListStreams"}))))

    answer = await _send(
        app, _signed("Firehose_20150804.ListDeliveryStreams", {}, service="firehose")
    )

    assert answer.status_code == 400
    assert answer.json()["__type"] == "UnknownOperationException"


async def test_rest_paths_go_to_the_rest_service_and_post_slash_stays_json() -> None:
    clock = _now()
    kinesis = _Recorder(frozenset({"ListStreams"}))
    rest = _Rest()
    app = _app(clock, JsonService("kinesis", kinesis), rest=rest)

    answer = await _send(
        app, httpx.Request("POST", "http://door.test/describeStream", content=b"{}")
    )
    assert answer.status_code == 200
    assert answer.json() == {"rest": True}
    assert rest.paths == ["/describeStream"]

    answer = await _send(app, _signed("Kinesis_20131202.ListStreams", {}, service="kinesis"))
    assert answer.status_code == 200
    assert kinesis.calls[0][0] == "ListStreams"


async def test_a_common_put_records_body_is_read_from_its_bytes_after_the_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDKs' PutRecords body is read by the C reader without a JSON parse where it was
    built (`put_records.read_common_json_body`); the signature is still checked first and the
    rest of the request by the model, with the parsed path's answers."""
    parsed: list[bytes] = []
    parse = aws_codec.parse_body

    def counted(body: bytes, wire: WireFormat) -> dict[str, Any]:
        parsed.append(body)
        return parse(body, wire)

    monkeypatch.setattr("broker.gateway.http_service.parse_body", counted)
    clock = _now()
    kinesis = _Recorder(frozenset({"PutRecords"}))
    app = _app(clock, JsonService("kinesis", kinesis))
    records = [{"Data": "eA==", "PartitionKey": "k"}, {"PartitionKey": "j", "Data": "eXk="}]

    answer = await _send(
        app, _signed(PUT_RECORDS, {"StreamName": "s", "Records": records}, service="kinesis")
    )

    assert answer.status_code == 200, answer.text
    operation, request, _ = kinesis.calls[0]
    assert operation == "PutRecords"
    assert list(request) == ["StreamName", "Records"]
    assert request["StreamName"] == "s"
    assert list(request["Records"]) == [
        {"Data": b"x", "PartitionKey": "k"},
        {"Data": b"yy", "PartitionKey": "j"},
    ]
    assert len(parsed) == (0 if put_entries.compiled_reader() else 1)

    tampered = _signed(PUT_RECORDS, {"StreamName": "s", "Records": records}, service="kinesis")
    tampered.headers["Authorization"] = tampered.headers["Authorization"][:-4] + "0000"
    refused = await _send(app, tampered)
    assert refused.status_code == 400
    assert refused.json()["__type"] == "InvalidSignatureException"

    invalid = await _send(
        app, _signed(PUT_RECORDS, {"StreamName": "", "Records": records}, service="kinesis")
    )
    assert invalid.status_code == 400
    assert invalid.json()["__type"] == "ValidationException"
    assert len(kinesis.calls) == 1
