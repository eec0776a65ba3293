"""The Kinesis Video Streams APIs on the AWS door: a `RestService` routing REST-JSON calls by
path (`/createStream`, `/describeStream`, ..., `/getMedia`, `/listFragments`,
`/getMediaForFragmentList`, and `/putMedia`, which no botocore model describes) to the node's
`VideoService`.

Thin, as every door: read the body (bounded; PutMedia's streams), verify the SigV4 signature
with the service name `kinesisvideo` when the node has access keys (PutMedia's body is not
hashed: its producers sign it `UNSIGNED-PAYLOAD`), decode the request from the operation's
botocore model (`rest_json`), validate it, call, and answer: a JSON document, a streamed MKV
body (GetMedia, GetMediaForFragmentList; its first chunk is read before the 200 goes out, so
a bad selector is still an HTTP error), or PutMedia's stream of acknowledgements. Errors are
the model's: status from the error table, `x-amzn-ErrorType` and `{"message": ...}`.

HLS and DASH sessions are served under `/hls/v1/` and `/dash/v1/` (GET, authorised by their
session token). The signaling channels' WebSocket is served on `/` (`signaling_ws`), and
their HTTPS operations (`kinesis-video-signaling`) under `/v1/`. A path of the four models
that Shoal does not serve (edge agents, stream storage, mapped resources) is answered
UnknownOperationException, so a client learns it at once instead of timing out. Loop-bound;
one instance per node.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from broker import error_messages, limits
from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.gateway import rest_json
from broker.gateway.authentication import Authenticator
from broker.gateway.probe import GatewayProbe
from broker.gateway.services import Receive, Scope, Send
from broker.gateway.signaling_ws import serve_signaling
from broker.gateway.sigv4 import HttpRequest, SigV4Verifier
from broker.gateway.validation import validate_request
from broker.iam.enforcer import AuthorizedService
from broker.video import hls
from broker.video.channels import SIGNALING_OPERATIONS
from broker.video.control import VideoControl
from broker.video.media_chunks import CONTENT_TYPE as MKV_CONTENT_TYPE
from broker.video.put_media import PutMediaSession
from broker.video.service import ARCHIVED_MEDIA_OPERATIONS, MEDIA_OPERATIONS, VideoService

log = logging.getLogger(__name__)

SIGNING_NAME = "kinesisvideo"
PUT_MEDIA_PATH = "/putMedia"
SIGNALING_PATH = "/"  # the WSS endpoint GetSignalingChannelEndpoint returns, with its query
_MODELS = {
    "kinesisvideo": VideoControl.OPERATIONS,
    "kinesis-video-media": MEDIA_OPERATIONS,
    "kinesis-video-archived-media": ARCHIVED_MEDIA_OPERATIONS,
    "kinesis-video-signaling": SIGNALING_OPERATIONS,
    # WebRTC ingestion's storage sessions need a WebRTC media server, which Shoal does not run:
    # their paths are claimed so that a call is refused (UnknownOperationException), not
    # answered by the Kinesis door's 200 envelope for an application/json body.
    "kinesis-video-webrtc-storage": frozenset(),
}


class _ClientGone(Exception):
    pass


def _headers(scope: Scope) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in scope.get("headers", ())
    ]


class VideoHttpService:
    def __init__(
        self,
        video: VideoService,
        *,
        clock: Clock,
        verifier: SigV4Verifier | None,
        region: str,
        account_id: str,
        probe: GatewayProbe | None = None,
        authenticator: Authenticator | None = None,
        authorized: AuthorizedService | None = None,
    ) -> None:
        self._probe = probe
        self._video = video
        # Access control (broker/iam): the signer's identity, and the operations behind the
        # authorization check (PutMedia is checked through `authorized`'s authorizer).
        self._authenticator = authenticator
        self._authorized = authorized
        self._clock = clock
        self._verifier = verifier
        self._region = region
        self._account_id = account_id
        self._routes: dict[str, tuple[str, str, bool]] = {}
        for model, served in _MODELS.items():
            for path, operation in rest_json.routes(model).items():
                self._routes[path] = (model, operation, operation in served)

    def handles(self, method: str, path: str) -> bool:
        if method == "WEBSOCKET":
            return path == SIGNALING_PATH
        if method == "GET":
            return path.startswith((hls.PATH_PREFIX, hls.DASH_PATH_PREFIX))
        return method == "POST" and (path in self._routes or path == PUT_MEDIA_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._signaling(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        path: str = scope.get("path", "/")
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 0, "code": ""}

        async def observed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-amzn-errortype":
                        answer["code"] = value.decode("latin-1")
            await send(message)

        try:
            if path == PUT_MEDIA_PATH:
                await self._put_media(scope, receive, observed, request_id)
            elif path.startswith((hls.PATH_PREFIX, hls.DASH_PATH_PREFIX)):
                await self._hls(scope, observed, request_id)
            else:
                await self._operation(scope, receive, observed, request_id)
        except _ClientGone:
            return
        finally:
            if self._probe is not None and answer["status"]:
                status = int(answer["status"])
                code = "OK" if status == 200 else str(answer["code"] or f"HTTP{status}")
                seconds = time.perf_counter() - started
                self._probe.request_finished(self._label(path), code, seconds)

    def _label(self, path: str) -> str:
        """The metrics label of a request: `kinesisvideo:<Operation>`, from a bounded set
        (the models' operations, PutMedia, the HLS and DASH session resources)."""
        if path == PUT_MEDIA_PATH:
            return f"{SIGNING_NAME}:PutMedia"
        if path.startswith(hls.PATH_PREFIX):
            return f"{SIGNING_NAME}:HLSSession"
        if path.startswith(hls.DASH_PATH_PREFIX):
            return f"{SIGNING_NAME}:DASHSession"
        route = self._routes.get(path)
        return f"{SIGNING_NAME}:{route[1] if route else 'Unknown'}"

    # --- Request/response plumbing -------------------------------------------------------------

    def _caller(self, scope: Scope, access_key_id: str | None) -> Caller:
        client = scope.get("client")
        caller = Caller(
            region=self._region,
            account_id=self._account_id,
            access_key_id=access_key_id,
            source_address=client[0] if client else None,
            door="http",
        )
        if self._authenticator is not None:
            caller = self._authenticator.caller(caller, access_key_id)
        return caller

    def _verify(self, scope: Scope, headers: list[tuple[str, str]], body: bytes) -> str | None:
        if self._verifier is None:
            return None
        by_name = dict(headers)
        raw: bytes | None = scope.get("raw_path")
        request = HttpRequest(
            method=scope.get("method", "GET"),  # a WebSocket upgrade is a GET
            path=raw.decode("latin-1") if raw else scope.get("path", "/"),
            query_string=scope.get("query_string", b""),
            headers=tuple(headers),
            authority=by_name.get("host", ""),
            body=body,
        )
        now_ms = self._clock.wall_ms()
        verifier = self._verifier
        if self._authenticator is None:
            return verifier.verify(request, now_ms=now_ms)
        client = scope.get("client")
        return self._authenticator.verify(
            lambda: verifier.verify(request, now_ms=now_ms),
            client[0] if client else None,
            signing_name="kinesisvideo",
            operation=self._label(scope.get("path", "/")).partition(":")[2],
        )

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:  # bounded by http_body_bytes_max
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limits.http_body_bytes_max:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _send_error(self, send: Send, error: ShoalError, request_id: str) -> None:
        body = rest_json.json_error(error.message)
        await _start(
            send,
            error.code.spec.http_status,
            [
                ("content-type", "application/json"),
                ("x-amzn-errortype", error.code.kinesis_name),
                ("content-length", str(len(body))),
            ],
            request_id,
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # --- JSON operations, GetMedia and GetMediaForFragmentList ---------------------------------

    async def _operation(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        model, operation, served = self._routes[scope.get("path", "/")]
        body = await self._read_body(receive)
        if body is None:
            await _start(send, 413, [("connection", "close"), ("content-length", "0")], request_id)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        headers = _headers(scope)
        try:
            if not served:
                raise ShoalError(
                    ErrorCode.UNKNOWN_OPERATION,
                    error_messages.video_operation_not_served(operation=operation),
                )
            access_key_id = self._verify(scope, headers, body)
            request = rest_json.decode_request(
                operation,
                model=model,
                headers=dict(headers),
                query_string=scope.get("query_string", b""),
                body=body,
            )
            validate_request(operation, request, model=model)
            target = self._authorized if self._authorized is not None else self._video
            result = await target.call(operation, request, self._caller(scope, access_key_id))
            if isinstance(result, Mapping):
                response_headers, document = rest_json.encode_response(
                    operation, result, model=model
                )
                response_headers.append(("content-length", str(len(document))))
                await _start(send, 200, response_headers, request_id)
                await send({"type": "http.response.body", "body": document, "more_body": False})
                return
            chunks: AsyncIterator[bytes] = result
            first = await anext(chunks, None)
        except ShoalError as error:
            await self._send_error(send, error, request_id)
            return
        except Exception:
            log.exception("video_request_failed", extra={"request_id": request_id})
            await self._send_error(send, ShoalError(ErrorCode.INTERNAL_FAILURE), request_id)
            return
        content_type = "video/mp4" if operation == "GetClip" else MKV_CONTENT_TYPE
        await self._stream(send, chunks, first, request_id, content_type)

    async def _stream(
        self,
        send: Send,
        chunks: AsyncIterator[bytes],
        first: bytes | None,
        request_id: str,
        content_type: str,
    ) -> None:
        await _start(send, 200, [("content-type", content_type)], request_id)
        try:
            if first is not None:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:
            # The 200 is out: the response just ends early, as AWS's does on a failure.
            log.exception("video_stream_failed", extra={"request_id": request_id})
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # --- HLS sessions -------------------------------------------------------------------------

    async def _hls(self, scope: Scope, send: Send, request_id: str) -> None:
        """A playlist, manifest or segment of an HLS or DASH session: authorised by its
        session token (the URL is the credential, as on AWS), not by SigV4, so any player can
        fetch it."""
        path: str = scope.get("path", "/")
        name = path.removeprefix(hls.PATH_PREFIX).removeprefix(hls.DASH_PATH_PREFIX)
        query = {
            key: values[0]
            for key, values in urllib.parse.parse_qs(
                scope.get("query_string", b"").decode("latin-1")
            ).items()
        }
        try:
            content_type, body = await self._video.hls.serve(name, query)
        except ShoalError as error:
            await self._send_error(send, error, request_id)
            return
        except Exception:
            log.exception("hls_request_failed", extra={"request_id": request_id})
            await self._send_error(send, ShoalError(ErrorCode.INTERNAL_FAILURE), request_id)
            return
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("access-control-allow-origin", "*"),  # browser players on other origins
        ]
        await _start(send, 200, headers, request_id)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # --- Signaling channels' WebSocket --------------------------------------------------------

    async def _signaling(self, scope: Scope, receive: Receive, send: Send) -> None:
        def caller() -> Caller:
            return self._caller(scope, self._verify(scope, _headers(scope), b""))

        started = time.perf_counter()
        try:
            await serve_signaling(
                scope, receive, send, channels=self._video.control.channels, caller=caller
            )
        finally:
            if self._probe is not None:
                self._probe.request_finished(
                    f"{SIGNING_NAME}:SignalingSession", "OK", time.perf_counter() - started
                )

    # --- PutMedia ------------------------------------------------------------------------------

    async def _put_media(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        headers = _headers(scope)
        by_name = dict(headers)
        try:
            access_key_id = self._verify(scope, headers, b"")
            caller = self._caller(scope, access_key_id)
            if self._authorized is not None:
                self._authorized.authorize(
                    "PutMedia",
                    {
                        "StreamName": by_name.get("x-amzn-stream-name"),
                        "StreamARN": by_name.get("x-amzn-stream-arn"),
                    },
                    caller,
                )
            session = self._video.put_media(
                caller,
                stream_name=by_name.get("x-amzn-stream-name"),
                stream_arn=by_name.get("x-amzn-stream-arn"),
                timecode_type=by_name.get("x-amzn-fragment-timecode-type"),
                producer_start=by_name.get("x-amzn-producer-start-timestamp"),
            )
        except ShoalError as error:
            await self._send_error(send, error, request_id)
            return
        await _start(send, 200, [("content-type", "application/json")], request_id)
        await _stream_acks(send, receive, session)


async def _stream_acks(send: Send, receive: Receive, session: PutMediaSession) -> None:
    async def body() -> AsyncIterator[bytes]:
        while True:  # ends with the body or the client
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    acks = session.run(body())
    try:
        async for ack in acks:
            await send({"type": "http.response.body", "body": ack.encode(), "more_body": True})
    finally:
        await acks.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _start(send: Send, status: int, headers: list[tuple[str, str]], request_id: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"x-amzn-requestid", request_id.encode("ascii")),
                *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
            ],
        }
    )
