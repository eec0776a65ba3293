"""A Kinesis Video Streams producer: PutMedia over HTTP/1.1 as the KVS producer SDKs speak it.

`put_media` sends an MKV byte stream (a file, a pipe from ffmpeg or GStreamer) as a chunked
`POST /putMedia` with the stream's name and the timecode headers, SigV4-signed with an
`UNSIGNED-PAYLOAD` body hash when credentials are given, and yields the acknowledgements the
node streams back while the body is still being sent (full duplex, which `h11` allows and
request-then-response clients do not). boto3 has no PutMedia, so `shoal video put` is built on
this.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.video.acks import Ack, decode_acks

_READ_BYTES = 65_536


class PutMediaRefused(Exception):
    """The node answered PutMedia with an HTTP error before any acknowledgement."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class PutMediaTarget:
    endpoint: str  # "http(s)://host:port" (GetDataEndpoint's DataEndpoint)
    stream_name: str | None = None
    stream_arn: str | None = None
    timecode_type: str = "RELATIVE"
    producer_start_timestamp_s: float | None = None
    region: str = "us-east-1"
    credentials: Credentials | None = None
    ca_file: str | None = None  # the CA to trust for an https endpoint (default: the system's)


def _request_headers(target: PutMediaTarget, host: str) -> list[tuple[str, str]]:
    headers = {"host": host, "x-amzn-fragment-timecode-type": target.timecode_type}
    if target.stream_name is not None:
        headers["x-amzn-stream-name"] = target.stream_name
    if target.stream_arn is not None:
        headers["x-amzn-stream-arn"] = target.stream_arn
    if target.producer_start_timestamp_s is not None:
        headers["x-amzn-producer-start-timestamp"] = f"{target.producer_start_timestamp_s:.3f}"
    if target.credentials is not None:
        headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        request = AWSRequest(
            method="POST", url=f"{target.endpoint}/putMedia", headers=headers, data=b""
        )
        SigV4Auth(target.credentials, "kinesisvideo", target.region).add_auth(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
    return [*headers.items(), ("transfer-encoding", "chunked")]


async def put_media(target: PutMediaTarget, body: AsyncIterator[bytes]) -> AsyncIterator[Ack]:
    """Sends `body` and yields each acknowledgement as it arrives; ends when the node ends
    its answer. Raises PutMediaRefused for an HTTP error answer."""
    url = urllib.parse.urlsplit(target.endpoint)
    secure = url.scheme == "https"
    port = url.port or (443 if secure else 80)
    assert url.hostname is not None, target.endpoint
    reader, writer = await asyncio.open_connection(
        url.hostname,
        port,
        ssl=ssl.create_default_context(cafile=target.ca_file) if secure else None,
    )
    connection = h11.Connection(h11.CLIENT)
    host = url.netloc
    writer.write(
        connection.send(
            h11.Request(method="POST", target="/putMedia", headers=_request_headers(target, host))
        )
        or b""
    )

    async def send_body() -> None:
        async for chunk in body:
            if chunk and connection.our_state is h11.SEND_BODY:
                writer.write(connection.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
        if connection.our_state is h11.SEND_BODY:
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()

    sender = asyncio.create_task(send_body())
    try:
        async for ack in _read_acks(connection, reader):
            yield ack
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, h11.LocalProtocolError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_acks(
    connection: h11.Connection, reader: asyncio.StreamReader
) -> AsyncIterator[Ack]:
    pending = b""
    status = 0
    error_type = ""
    error_body = b""
    while True:  # ends with the answer's end or the connection's
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ_BYTES)
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            error_type = dict(event.headers).get(b"x-amzn-errortype", b"").decode()
        elif isinstance(event, h11.Data):
            if status != 200:
                error_body += event.data
                continue
            acks, pending = decode_acks(pending + bytes(event.data))
            for ack in acks:
                yield ack
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if status != 200:
                raise PutMediaRefused(status, error_type, error_body.decode("utf-8", "replace"))
            return
