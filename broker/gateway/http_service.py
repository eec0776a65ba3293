"""The AWS front door: the AWS wire protocols (JSON 1.1 and CBOR over HTTP), as an ASGI app.

Every JSON-protocol call is `POST /` with `X-Amz-Target: <prefix>.<Operation>`; the prefix
picks the service (`services.JsonService`: `Kinesis_20131202` for Data Streams, and one per
service of the family that the node serves). The app is as thin as the gRPC door: read the
body (bounded), parse it (`aws_codec`), check the operation, verify the SigV4 signature when
access keys are configured (`sigv4`, scoped to the service's signing name), convert it to the
AWS-shaped dict with the service's botocore model, `validate_request`, the service's `call`
with the request's `Caller`, encode the answer in the request's format. There is no second
implementation of any operation here. A request to a method and path that a REST-JSON
service claims (`services.RestService`, the Kinesis Video APIs) is handed to that service.

The order of the checks, and the answers to requests no SDK sends, follow AWS as recorded by
kinesalite (its `index.js` was written against the real service):

| request                                         | status | __type                        |
| ----------------------------------------------- | ------ | ----------------------------- |
| method other than POST                          | 403    | AccessDeniedException (XML)   |
| body over `limits.http_body_bytes_max`          | 413    | (no body; see `_read_body`)   |
| empty body, known operation                     | 400    | SerializationException        |
| empty body, unknown target                      | 400    | UnknownOperationException     |
| other Content-Type, no target                   | 403    | AccessDeniedException (XML)   |
| other Content-Type, some target                 | 404    | UnknownOperationException (XML) |
| body not a JSON/CBOR object                     | 400    | SerializationException        |
| unknown service prefix or operation             | 400    | UnknownOperationException     |
| unsigned / badly signed (keys configured)       | 400    | MissingAuthenticationToken... |
| member of the wrong type                        | 400    | SerializationException        |
| constraint broken                               | 400    | ValidationException           |
| anything unexpected (logged with a traceback)   | 500    | InternalFailure               |

An empty body is answered in JSON when the request said JSON, and in CBOR otherwise, as AWS
does. A successful operation whose model has no output shape (CreateStream, DeleteStream,
AddTagsToStream, ...) answers 200 with an empty body (Content-Length 0), as AWS and kinesalite
do. Every answer carries `x-amzn-RequestId`; errors also `x-amzn-ErrorType`.

Lifecycle: one instance per node, built by `node.py`, served by `http_server.py`. Loop-bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from broker import limits
from broker.caller import Caller
from broker.clock import Clock
from broker.error_messages import NO_MESSAGE
from broker.errors import ErrorCode, ShoalError
from broker.gateway import cors, event_stream
from broker.gateway.authentication import Authenticator
from broker.gateway.aws_codec import (
    WireFormat,
    decode_request,
    encode_body,
    parse_body,
    wire_format_for,
)
from broker.gateway.probe import GatewayProbe
from broker.gateway.put_records import (
    put_records_from_body,
    put_records_from_json,
    read_common_json_body,
)
from broker.gateway.services import JsonService, Receive, RestService, Scope, Send
from broker.gateway.sigv4 import (
    HttpRequest,
    SigV4Verifier,
    claimed_access_key_id,
    claimed_region,
)
from broker.gateway.validation import KINESIS, REGIONAL_MODELS, service_model, validate_request
from broker.service.subscriptions import Subscription
from broker.wire.error_mapping import to_aws_error

log = logging.getLogger(__name__)

_NO_OPERATION_MESSAGE = "Unable to determine service/operation name to be authorized"
_MISSING_TOKEN_MESSAGE = "Missing Authentication Token"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # Answered by AWS's front end before any service (its XML errors): it exposes fewer
    # headers to a page (cors.py).
    front_end: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class _Streaming:
    """A 200 whose body is an event stream (SubscribeToShard): `initial-response`, then one
    message per event, in the request's wire format (module docstring)."""

    events: Subscription
    wire: WireFormat


class _ClientGone(Exception):
    """The client disconnected before sending its whole body; there is nobody to answer."""


def _error_response(error: ShoalError, wire: WireFormat) -> _Response:
    status, document = to_aws_error(error)
    return _Response(
        status=status,
        headers=(
            ("content-type", wire.content_type),
            ("x-amzn-errortype", error.code.kinesis_name),
        ),
        body=encode_body(document, wire),
    )


def _xml_error(status: int, name: str, message: str | None) -> _Response:
    """AWS's answer to a request it cannot even attribute to a protocol: XML, as kinesalite
    recorded it (with a message for 403, bare for 404)."""
    if message is None:
        body = f"<{name}/>\n"
    else:
        body = f"<{name}>\n  <Message>{message}</Message>\n</{name}>\n"
    return _Response(
        status=status,
        headers=(("x-amzn-errortype", name),),
        body=body.encode("utf-8"),
        front_end=True,
    )


_PLAIN_JSON = "application/json"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _no_operation(scope: Scope, by_name: dict[str, str]) -> _Response:
    """AWS's front end's answer to a request it cannot map to an operation (another method,
    another content type): 403 in XML, MissingAuthenticationToken when the request carries no
    signature at all, else AccessDenied."""
    query = bytes(scope.get("query_string", b""))
    if "authorization" not in by_name and b"X-Amz-Algorithm" not in query:
        return _xml_error(403, "MissingAuthenticationTokenException", _MISSING_TOKEN_MESSAGE)
    return _xml_error(403, "AccessDeniedException", _NO_OPERATION_MESSAGE)


def _plain_json_answer(body: bytes) -> _Response:
    """AWS's answer to a non-empty `application/json` body (not the JSON 1.1 protocol): 200
    with Coral's generic envelope, SerializationException for a body that is not a JSON object
    and UnknownOperationException otherwise, whatever the target (as kinesalite recorded)."""
    try:
        parsed = orjson.loads(body) if body else {}
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        output = {"__type": "com.amazon.coral.service#UnknownOperationException", "message": None}
    else:
        output = {"__type": "com.amazon.coral.service#SerializationException", "Message": None}
    return _Response(
        status=200,
        headers=(("content-type", _PLAIN_JSON),),
        body=orjson.dumps({"Output": output, "Version": "1.0"}),
    )


def _headers(scope: Scope) -> tuple[tuple[str, str], ...]:
    """The request's headers with lower-case names, decoded as HTTP/1.1 defines (latin-1)."""
    return tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in scope.get("headers", ())
    )


def _authority(scope: Scope, headers: dict[str, str]) -> str:
    """host[:port] the client addressed. Hypercorn turns HTTP/2's `:authority` into `host`."""
    host = headers.get("host")
    if host:
        return host
    server = scope.get("server")
    if server is None:
        return ""
    name, port = server
    return name if port is None else f"{name}:{port}"


def _declared_length(headers: dict[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None  # h11 and h2 refuse a malformed length before the app sees it


async def _read_body(receive: Receive, *, http2: bool) -> bytes | None:
    """The whole body, or None once it passes `http_body_bytes_max` (the rest is not kept).

    HTTP/1.1 stops reading there: the 413 goes out with `connection: close`. HTTP/2 cannot
    close just one stream from ASGI, and hypercorn 0.18 drops the whole connection when DATA
    arrives for a stream already answered; so on HTTP/2 the rest of the body is received and
    discarded, up to `http2_body_discard_bytes_max`, before the 413 is sent.
    """
    chunks: list[bytes] = []
    size = 0
    while True:  # bounded: every pass adds bytes, and the total is capped below
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size > limits.http_body_bytes_max:
            if http2 and more:
                await _discard_body(receive, size)
            return None
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


async def _discard_body(receive: Receive, size: int) -> None:
    while size <= limits.http2_body_discard_bytes_max:  # bounded by the discard cap
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class AwsHttpApp:
    """The ASGI app serving every operation of `services` (and `rest`) over the AWS protocols.

    `verifiers` holds one SigV4 verifier per signing name ("kinesis", "firehose", ...); it is
    empty when the node has no access keys (authentication off). `clock` gives the wall time a
    signature's date is checked against; `region` and `account_id` are the node's, for the
    `Caller` of each request.
    """

    def __init__(
        self,
        services: Sequence[JsonService],
        *,
        clock: Clock,
        verifiers: Mapping[str, SigV4Verifier],
        region: str,
        account_id: str,
        rest: Sequence[RestService] = (),
        probe: GatewayProbe | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self._services = {service.target_prefix: service for service in services}
        self._authenticator = authenticator
        self._rest = tuple(rest)
        self._clock = clock
        self._verifiers = dict(verifiers)
        self._region = region
        self._account_id = account_id
        self._probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _serve_lifespan(receive, send)
            return
        if kind == "websocket":  # a REST service's (signaling channels); else refused
            for rest in self._rest:
                if rest.handles("WEBSOCKET", scope.get("path", "/")):
                    await rest(scope, receive, send)
                    return
            return  # the server refuses the upgrade when the app does not accept
        if kind != "http":
            return
        for rest in self._rest:
            if rest.handles(scope["method"], scope.get("path", "/")):
                await rest(scope, receive, send)
                return
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        headers = _headers(scope)
        request_headers = dict(headers)
        if cors.is_preflight(scope["method"], request_headers):
            await _send_response(
                send,
                _Response(status=200, headers=tuple(cors.preflight_headers(request_headers))),
                request_id,
            )
            return
        try:
            response = await self._respond(scope, receive, headers, request_headers)
        except _ClientGone:
            return
        except Exception:
            log.exception("http_request_failed", extra={"request_id": request_id})
            wire = wire_format_for(request_headers.get("content-type", ""))
            response = _error_response(
                ShoalError(ErrorCode.INTERNAL_FAILURE), wire or WireFormat.JSON
            )
        extra = cors.answer_headers(
            request_headers, front_end=isinstance(response, _Response) and response.front_end
        )
        if isinstance(response, _Streaming):
            if self._probe is not None:
                self._report(scope, _Response(status=200), time.perf_counter() - started)
            await _send_event_stream(send, receive, response, request_id, extra)
            return
        await _send_response(send, response, request_id, extra)
        if self._probe is not None:
            self._report(scope, response, time.perf_counter() - started)

    def _report(self, scope: Scope, response: _Response, seconds: float) -> None:
        """Count the answer: by operation ("Unknown" for a target the service does not
        serve, keeping the label set bounded) and result ("OK", the Kinesis error name, or
        HTTP<status> for answers without one such as 413)."""
        assert self._probe is not None
        target = b""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"x-amz-target":
                target = value
                break
        prefix, _, operation = target.decode("latin-1").partition(".")
        service = self._services.get(prefix)
        if service is None or operation not in service.operations:
            operation = "Unknown"
        elif service.model != KINESIS:
            operation = f"{service.signing_name}:{operation}"
        if response.status == 200:
            code = "OK"
        else:
            code = next(
                (v for n, v in response.headers if n == "x-amzn-errortype"),
                f"HTTP{response.status}",
            )
        self._probe.request_finished(operation, code, seconds)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        headers: tuple[tuple[str, str], ...],
        by_name: dict[str, str],
    ) -> _Response | _Streaming:
        """The answer to a request whose `headers` (`_headers`) are also `by_name`, a dict."""
        if scope["method"] != "POST":
            return _no_operation(scope, by_name)
        http2 = scope.get("http_version") == "2"
        declared = _declared_length(by_name)
        if declared is not None and declared > limits.http_body_bytes_max and not http2:
            return _Response(status=413, headers=(("connection", "close"),))
        body = await _read_body(receive, http2=http2)
        if body is None:
            return _Response(status=413, headers=() if http2 else (("connection", "close"),))
        wire = wire_format_for(by_name.get("content-type", ""))
        service_name, _, operation = by_name.get("x-amz-target", "").partition(".")
        service = self._services.get(service_name)
        known = service is not None and operation in service.operations
        if wire is None and _media_type(by_name.get("content-type", "")) == _PLAIN_JSON:
            return _plain_json_answer(body)
        if wire is None:
            # Not a protocol AWS's front end serves: it cannot name the operation, whatever
            # the target or the body (kinesalite's recordings of AWS).
            return _no_operation(scope, by_name)
        if not body:
            code = ErrorCode.SERIALIZATION if known else ErrorCode.UNKNOWN_OPERATION
            return _error_response(ShoalError(code, NO_MESSAGE), wire)
        try:
            document = await self._call(scope, headers, by_name, body, wire, operation, service)
        except ShoalError as error:
            return _error_response(error, wire)
        if isinstance(document, Subscription):
            return _Streaming(events=document, wire=wire)
        return _Response(status=200, headers=(("content-type", wire.content_type),), body=document)

    async def _call(
        self,
        scope: Scope,
        headers: tuple[tuple[str, str], ...],
        by_name: dict[str, str],
        body: bytes,
        wire: WireFormat,
        operation: str,
        service: JsonService | None,
    ) -> bytes | Subscription:
        if service is None or operation not in service.operations:
            parse_body(body, wire)  # a body that is not an object is refused first, as AWS does
            raise ShoalError(ErrorCode.UNKNOWN_OPERATION)
        # The common JSON PutRecords body is read in one C pass instead of being parsed; any
        # other body is parsed here, before the signature, as before.
        kinesis_put = operation == "PutRecords" and service.model == KINESIS
        common = read_common_json_body(body) if kinesis_put and wire is WireFormat.JSON else None
        parsed = parse_body(body, wire) if common is None else {}
        access_key_id = None
        claimed_key_id = None
        request = HttpRequest(
            method=scope["method"],
            path=_raw_path(scope),
            query_string=scope.get("query_string", b""),
            headers=headers,
            authority=_authority(scope, by_name),
            body=body,
        )
        if self._verifiers:
            verifier = self._verifiers[service.signing_name]
            now_ms = self._clock.wall_ms()
            if self._authenticator is None:
                access_key_id, region = verifier.verify_scoped(request, now_ms=now_ms)
            else:
                access_key_id, region = self._authenticator.verify(
                    lambda: verifier.verify_scoped(request, now_ms=now_ms),
                    _client_address(scope),
                    signing_name=service.signing_name,
                    operation=operation,
                )
        else:
            # No signatures checked: the scope still names the region the client addresses,
            # and the key it claims is what the audit trail records (unverified).
            region = claimed_region(request) or self._region
            claimed_key_id = claimed_access_key_id(request)
        if region != self._region and service.model not in REGIONAL_MODELS:
            region = self._region  # the rest of the family serves the node's region
        if common is not None:
            aws_request = put_records_from_json(common)
        elif kinesis_put:
            aws_request = put_records_from_body(parsed, wire)  # its entries read in one loop
        else:
            aws_request = decode_request(operation, parsed, wire, model=service.model)
            validate_request(operation, aws_request, model=service.model)
        caller = Caller(
            region=region,
            account_id=self._account_id,
            access_key_id=access_key_id or claimed_key_id,
            source_address=_client_address(scope),
            door="http",
        )
        if self._authenticator is not None:
            caller = self._authenticator.caller(caller, access_key_id)
        response = await service.service.call(operation, aws_request, caller)
        events = response.get("EventStream")
        if isinstance(events, Subscription):
            return events
        if (
            not response
            and service_model(service.model).operation_model(operation).output_shape is None
        ):
            return b""  # AWS answers an operation with no output shape with an empty body
        return encode_body(response, wire)


def _client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host: str = client[0]
    return host


def _raw_path(scope: Scope) -> str:
    raw: bytes | None = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1")
    path: str = scope.get("path", "/")
    return path


async def _send_response(
    send: Send, response: _Response, request_id: str, extra: cors.HeaderPairs = ()
) -> None:
    headers = [
        (b"x-amzn-requestid", request_id.encode("ascii")),
        (b"content-length", str(len(response.body)).encode("ascii")),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in extra),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _send_event_stream(
    send: Send, receive: Receive, response: _Streaming, request_id: str, extra: cors.HeaderPairs
) -> None:
    """Streams `initial-response` and every event, then ends the body. A failure of the
    subscription is sent as an event-stream exception message (the HTTP status is already
    200). A client that goes away ends the subscription: a task watches `receive` for
    `http.disconnect` (the body was read, so that is all it can still bring)."""

    async def watch_disconnect() -> None:
        while True:  # ends with the disconnect (or is cancelled when the stream ends)
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    streaming = asyncio.create_task(_stream_events(send, response, request_id, extra))
    watcher = asyncio.create_task(watch_disconnect())
    client_gone = False
    try:
        await asyncio.wait((streaming, watcher), return_when=asyncio.FIRST_COMPLETED)
        client_gone = watcher.done()
    finally:
        for task in (streaming, watcher):
            task.cancel()
        await asyncio.gather(streaming, watcher, return_exceptions=True)
        await response.events.aclose()
    if not client_gone and not streaming.cancelled():
        failure = streaming.exception()
        if failure is not None:
            raise failure  # a send that failed with the client still there: hypercorn logs it


async def _stream_events(
    send: Send, response: _Streaming, request_id: str, extra: cors.HeaderPairs
) -> None:
    events, wire = response.events, response.wire
    content_type = wire.content_type
    headers = [
        (b"x-amzn-requestid", request_id.encode("ascii")),
        (b"content-type", b"application/vnd.amazon.eventstream"),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in extra),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    initial = event_stream.event_message(
        event_stream.INITIAL_RESPONSE, encode_body({}, wire), content_type
    )
    await send({"type": "http.response.body", "body": initial, "more_body": True})
    try:
        async for event in events:
            for event_type, body in event.items():
                message = event_stream.event_message(
                    event_type, encode_body(body, wire), content_type
                )
                await send({"type": "http.response.body", "body": message, "more_body": True})
    except ShoalError as error:
        _, document = to_aws_error(error)
        message = event_stream.exception_message(
            error.code.kinesis_name, encode_body(document, wire), content_type
        )
        await send({"type": "http.response.body", "body": message, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _serve_lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up or tear down: the node owns the service's lifecycle."""
    while True:  # ends with the server's lifespan.shutdown message
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
