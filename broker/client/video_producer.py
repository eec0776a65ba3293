"""A Kinesis Video Streams producer: PutMedia over HTTP/1.1 as the KVS producer SDKs speak it.

`put_media` sends an MKV byte stream (a file, a pipe from ffmpeg or GStreamer) as a chunked
`POST /putMedia` with the stream's name and the timecode headers, SigV4-signed with an
`UNSIGNED-PAYLOAD` body hash when credentials are given, and yields the acknowledgements the
node streams back while the body is still being sent (full duplex, which `h11` allows and
request-then-response clients do not). boto3 has no PutMedia, so `shoal video put` is built on
this.

`produce` is the producer a camera wants: it keeps every fragment until it is PERSISTED and,
when a node dies under the connection, resumes on another node from the first fragment not
acknowledged (the KVS SDKs' behaviour).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import h11
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.video import ebml, mkv
from broker.video.acks import Ack, AckErrorId, AckEventType, decode_acks
from broker.video.mkv import MkvFragment, MkvSplitter

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


@dataclass(slots=True)
class ProducerReport:
    received: int = 0  # RECEIVED acknowledgements, all sessions together
    persisted: int = 0  # fragments acknowledged PERSISTED (each counted once)
    sessions: int = 0  # PutMedia connections opened
    error: Ack | None = None  # the ERROR that ended the upload, if one did


_RETRYABLE_ERRORS = frozenset(
    {AckErrorId.INTERNAL_ERROR, AckErrorId.ARCHIVAL_ERROR, AckErrorId.STREAM_READ_ERROR}
)


class _Backlog:
    """The fragments read from the source and not acknowledged yet, numbered in read order."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[int, MkvFragment]] = collections.deque()
        self.source_done = False
        self.changed = asyncio.Condition()
        self._next = 0

    async def add(self, fragment: MkvFragment) -> None:
        async with self.changed:
            self.pending.append((self._next, fragment))
            self._next += 1
            self.changed.notify_all()

    async def finish(self) -> None:
        async with self.changed:
            self.source_done = True
            self.changed.notify_all()

    def ready_after(self, ordinal: int) -> bool:
        """Something to send after `ordinal`, or the end."""
        return bool(self.after(ordinal)) or self.source_done

    def after(self, ordinal: int) -> list[tuple[int, MkvFragment]]:
        return [(n, f) for n, f in self.pending if n > ordinal]

    def forget(self, timecode_ms: int | None) -> bool:
        """Drops the acknowledged fragment (and any before it); False if it is not here."""
        if timecode_ms is None or not any(f.timecode_ms == timecode_ms for _, f in self.pending):
            return False
        while self.pending and self.pending[0][1].timecode_ms <= timecode_ms:
            self.pending.popleft()
        return True

    def finished(self) -> bool:
        return self.source_done and not self.pending


async def _read_source(source: AsyncIterator[bytes], backlog: _Backlog) -> None:
    splitter = MkvSplitter()
    try:
        async for chunk in source:
            for event in splitter.feed(chunk):
                if isinstance(event, MkvFragment):
                    await backlog.add(event)
        for event in splitter.finish():
            if isinstance(event, MkvFragment):
                await backlog.add(event)
    finally:
        await backlog.finish()


async def _session_body(backlog: _Backlog) -> AsyncIterator[bytes]:
    """One session's body: the header, every fragment not acknowledged yet, then new ones as
    they are read, until the source ends."""
    last = -1
    started = False
    while True:  # ends when the source is done and every fragment was sent
        async with backlog.changed:
            await backlog.changed.wait_for(functools.partial(backlog.ready_after, last))
            batch = backlog.after(last)
            done = backlog.source_done
        for ordinal, fragment in batch:
            if not started:
                yield _stream_start(fragment.header)
                started = True
            yield fragment.cluster
            last = ordinal
        if done and not backlog.after(last):
            return


async def produce(
    targets: list[PutMediaTarget],
    source: AsyncIterator[bytes],
    *,
    attempts: int = 5,
    on_ack: Callable[[Ack], None] = lambda _: None,
    retry_pause_s: float = 0.5,
    keep_persisted: bool = True,
) -> ProducerReport:
    """Uploads an MKV byte stream and survives the loss of a node, as the KVS producer SDKs
    do: the input is cut into fragments here too (`MkvSplitter`), each kept until PERSISTED
    (or RECEIVED, for a stream that keeps no data: `keep_persisted=False`); when a
    connection fails or answers a retryable ERROR (5000, 5001, 4000), the next target is
    tried (round robin, up to `attempts` sessions in a row without progress) and the header
    and every fragment not yet acknowledged are sent again. A fragment whose acknowledgement
    was lost may be stored twice, as on AWS; none is lost."""
    assert targets
    report = ProducerReport()
    backlog = _Backlog()
    reader = asyncio.create_task(_read_source(source, backlog))
    failures = 0
    try:
        while True:  # one pass per session; bounded by `attempts` failures in a row
            async with backlog.changed:
                await backlog.changed.wait_for(lambda: bool(backlog.pending) or backlog.source_done)
            if backlog.finished():
                if reader.done() and (failure := reader.exception()) is not None:
                    raise failure
                return report
            target = targets[report.sessions % len(targets)]
            report.sessions += 1
            progressed = False
            try:
                async for ack in put_media(target, _session_body(backlog)):
                    on_ack(ack)
                    if ack.event_type is AckEventType.RECEIVED:
                        report.received += 1
                        if not keep_persisted:
                            progressed |= backlog.forget(ack.timecode_ms)
                    elif ack.event_type is AckEventType.PERSISTED:
                        report.persisted += 1
                        progressed |= backlog.forget(ack.timecode_ms)
                    elif ack.event_type is AckEventType.ERROR:
                        if ack.error_id not in _RETRYABLE_ERRORS:
                            report.error = ack
                            return report
                        break
            except (OSError, h11.ProtocolError, PutMediaRefused) as error:
                if isinstance(error, PutMediaRefused) and error.status < 500:
                    raise
            if backlog.finished():
                continue  # the loop's top returns
            failures = 0 if progressed else failures + 1
            if failures >= attempts:
                raise PutMediaRefused(503, "ServiceUnavailable", "no node took the upload")
            await asyncio.sleep(retry_pause_s)  # a pause before the next node, bounded
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _stream_start(header: bytes) -> bytes:
    """The producer's EBML header, a Segment of unknown size, its Info and Tracks."""
    first = ebml.read_header(header, 0)
    assert first is not None
    end = first.header_length + first.size
    return header[:end] + ebml.encode_id(mkv.SEGMENT) + ebml.unknown_size() + header[end:]
