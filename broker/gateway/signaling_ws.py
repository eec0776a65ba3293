"""The KVS WebRTC signaling WebSocket on the AWS door: what the KVS WebRTC SDKs open on the
endpoint GetSignalingChannelEndpoint returned for WSS.

A master connects with `?X-Amz-ChannelARN=<arn>`, a viewer with `X-Amz-ChannelARN` and
`X-Amz-ClientId`; with access keys configured the URL is presigned (SigV4 query string, service
`kinesisvideo`, the GET's empty payload), checked by the door's verifier before the upgrade is
accepted. Refusals before the upgrade are an HTTP status (403 for a bad signature, 404 for an
unknown channel, 400 for bad parameters or a channel served by another node, 429 for an 11th
viewer), as AWS's endpoint answers them. Once accepted, every text frame is one signaling
message relayed through the node's `SignalingHub` (`broker.video.signaling`); the socket
closes when the client leaves, a newer connection replaces it, or its channel is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from broker import error_messages
from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.gateway.services import Receive, Scope, Send
from broker.video.channels import ChannelControl
from broker.video.signaling import MASTER, Peer
from broker.video.signaling_rules import (
    SignalingMessageError,
    parse_client_message,
    status_response,
    valid_client_id,
)

log = logging.getLogger(__name__)

_REFUSAL_STATUS = {
    ErrorCode.VIDEO_RESOURCE_NOT_FOUND: 404,
    ErrorCode.CLIENT_LIMIT_EXCEEDED: 429,
}


async def serve_signaling(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    channels: ChannelControl,
    caller: Callable[[], Caller],
) -> None:
    """One WebSocket session (module docstring). `caller` verifies the signature (raising
    ShoalError) and gives the request's Caller."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        who = caller()
        arns = query.get("X-Amz-ChannelARN", [])
        if len(arns) != 1:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, error_messages.SIGNALING_CHANNEL_ARN_REQUIRED
            )
        meta = channels.find(who, name=None, arn=arns[0])
        client_ids = query.get("X-Amz-ClientId", [])
        client_id = client_ids[0] if client_ids else MASTER
        if client_ids and not valid_client_id(client_id):
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.SIGNALING_CLIENT_ID_INVALID)
        channels.require_home(meta)
        peer = channels.hub.connect(meta.arn, client_id)
    except ShoalError as error:
        status = _REFUSAL_STATUS.get(error.code, error.code.spec.http_status)
        log.info("signaling_refused", extra={"status": status, "reason": error.message})
        await _refuse(scope, send, status, error)
        return
    await send({"type": "websocket.accept"})
    try:
        await _relay(receive, send, channels, peer)
    finally:
        channels.hub.disconnect(peer)


async def _refuse(scope: Scope, send: Send, status: int, error: ShoalError) -> None:
    """An HTTP answer instead of the upgrade (ASGI's denial extension, which hypercorn has;
    a bare close, which servers answer 403, otherwise)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"x-amzn-errortype", error.code.kinesis_name.encode("ascii")),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": error.message.encode()})


async def _relay(receive: Receive, send: Send, channels: ChannelControl, peer: Peer) -> None:
    """Reads the client's frames and writes its outbox until either side ends."""

    async def write() -> None:
        while True:
            text = await peer.outbox.get()
            if text is None:
                await send({"type": "websocket.close", "code": 1000})
                return
            await send({"type": "websocket.send", "text": text})

    writer = asyncio.create_task(write())
    try:
        while not writer.done():
            reading = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({reading, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reading not in done:
                reading.cancel()
                return
            message: dict[str, Any] = reading.result()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            if text:
                _handle(channels, peer, text)
    finally:
        writer.cancel()


def _handle(channels: ChannelControl, peer: Peer, text: str) -> None:
    meta = channels.channel_of(peer.channel_arn)
    if meta is None:  # deleted while connected
        channels.hub.close_channel(peer.channel_arn)
        return
    try:
        message = parse_client_message(text)
        channels.hub.relay(peer, message, ttl_seconds=meta.message_ttl_seconds)
    except SignalingMessageError as error:
        if error.correlation_id is not None:
            peer.deliver(
                status_response(
                    error.correlation_id,
                    error_type="InvalidArgumentException",
                    status_code="400",
                    description=error.description,
                )
            )
