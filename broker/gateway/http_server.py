"""Hypercorn, run inside the node's event loop: the one module that imports it.

One port speaks HTTP/1.1 and HTTP/2: cleartext h2 with prior knowledge (the JS SDK v3 and
Netty-based Java SDK v2 clients use HTTP/2 for every call) next to HTTP/1.1 (boto3, the AWS
CLI); with a certificate, TLS with ALPN offering h2 and http/1.1, re-read when the files
change (https_certificates.py). Every hypercorn option that
bounds something is set here explicitly, with its reason, so that a new hypercorn default cannot
change the node's behaviour (house style B.10).

Lifecycle: `start_http_server(...)` binds and listens before it returns (so `port` is usable at
once, and port 0 picks a free one), then serves from a task it owns; `stop()` ends it
gracefully (in-flight requests get `limits.http_shutdown_grace_s`) and awaits the task.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, cast

import h2.connection
import h2.errors
import h2.events
import h11
import hypercorn.protocol
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app
from hyperframe.frame import GoAwayFrame

from broker import limits
from broker.gateway.https_certificates import ReloadingServerContext

log = logging.getLogger(__name__)

_LISTEN_BACKLOG = 1024  # connections the kernel queues while the loop is busy


class _ReloadingTlsConfig(HypercornConfig):
    """Hypercorn's configuration, handing worker_serve a TLS context that follows renewed
    certificate files (broker/gateway/https_certificates.py) instead of a fresh one that
    would keep the start's certificate for the server's life."""

    reloading: ReloadingServerContext | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if self.reloading is None:
            return super().create_ssl_context()
        return self.reloading.template


def _server_context(host: str, port: int, certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """Hypercorn's own server context (ciphers, TLS 1.2+, ALPN) for these files."""
    context = HypercornConfig.create_ssl_context(_hypercorn_config(host, port, certfile, keyfile))
    assert context is not None, "a certificate was given"
    return context


def _hypercorn_config(
    host: str, port: int, certfile: Path | None, keyfile: Path | None
) -> _ReloadingTlsConfig:
    config = _ReloadingTlsConfig()
    bind_host = f"[{host}]" if ":" in host else host
    config.bind = [f"{bind_host}:{port}"]  # TLS when a certificate is set, cleartext otherwise
    config.insecure_bind = []
    if certfile is not None:
        assert keyfile is not None, "Config.validate() requires both"
        config.certfile = str(certfile)
        config.keyfile = str(keyfile)
    config.alpn_protocols = ["h2", "http/1.1"]  # h2 first: the SDKs that can, use it
    config.backlog = _LISTEN_BACKLOG
    # Idle keep-alive longer than the SDKs' own idle pools, so the client closes first and
    # never reuses a connection the server has just dropped.
    config.keep_alive_timeout = limits.http_keep_alive_s
    config.keep_alive_max_requests = 100_000  # recycling connections buys nothing here
    config.h11_max_incomplete_size = limits.http_headers_bytes_max
    config.h2_max_concurrent_streams = limits.http_streams_per_connection_max
    config.h2_max_header_list_size = limits.http_headers_bytes_max
    # The app bounds request bodies itself (`http_body_bytes_max`, answered with 413); this
    # WSGI-only bound is set to the same value for consistency.
    config.wsgi_max_body_size = limits.http_body_bytes_max
    config.graceful_timeout = limits.http_shutdown_grace_s
    config.ssl_handshake_timeout = 10  # a TLS handshake takes milliseconds; 60 s ties up sockets
    config.startup_timeout = 10
    config.shutdown_timeout = 10
    config.include_server_header = False  # AWS sends none that names the software
    config.accesslog = None  # no per-request logging on the data path (house style B.10)
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class _GracefulGoAwayH2Protocol(H2Protocol):
    """Hypercorn's HTTP/2 connection, letting streams in flight finish after a client's
    GOAWAY with NO_ERROR, as RFC 9113 §6.8 intends.

    Why: the JS SDK v3 opens an HTTP/2 session per event stream (SubscribeToShard) and closes
    it gracefully (`session.close()`, a GOAWAY) as soon as the response headers arrive, then
    reads the events. h2 4.x treats any received GOAWAY as the connection's end (no more
    sending) and hypercorn 0.18 then drops the connection, so the subscriber got one event.
    Here a NO_ERROR GOAWAY only stops new streams; the connection closes once its last stream
    has ended. Any other GOAWAY (an error) closes at once, as before. Pinned to hypercorn 0.18
    and h2 4.x internals (`connection`, `streams`, `_frame_dispatch_table`); checked at start.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer_going_away = False
        connection: h2.connection.H2Connection = self.connection
        table: dict[type, Any] = connection._frame_dispatch_table
        close_at_once = table[GoAwayFrame]

        def receive_goaway(frame: GoAwayFrame) -> tuple[list[Any], list[h2.events.Event]]:
            if frame.error_code != h2.errors.ErrorCodes.NO_ERROR:
                result: tuple[list[Any], list[h2.events.Event]] = close_at_once(frame)
                return result
            event = h2.events.ConnectionTerminated()
            event.error_code = h2.errors.ErrorCodes.NO_ERROR
            event.last_stream_id = frame.last_stream_id
            event.additional_data = frame.additional_data or None
            return [], [event]

        table[GoAwayFrame] = receive_goaway

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        kept = []
        for event in events:
            graceful = (
                isinstance(event, h2.events.ConnectionTerminated)
                and event.error_code == h2.errors.ErrorCodes.NO_ERROR
            )
            if graceful and self.streams:
                self._peer_going_away = True  # closed by _close_stream after the last one
                continue
            kept.append(event)
        await super()._handle_events(kept)

    async def _close_stream(self, stream_id: int) -> None:
        await super()._close_stream(stream_id)
        if self._peer_going_away and not self.streams and not self.closed:
            await self.send(Closed())


def _install_graceful_goaway() -> None:
    """Makes hypercorn build `_GracefulGoAwayH2Protocol` for its HTTP/2 connections."""
    assert hasattr(h2.connection.H2Connection(), "_frame_dispatch_table"), "h2 changed"
    wrapper_module: Any = hypercorn.protocol
    assert wrapper_module.H2Protocol in (H2Protocol, _GracefulGoAwayH2Protocol), "hypercorn changed"
    wrapper_module.H2Protocol = _GracefulGoAwayH2Protocol


class _HeaderTimeoutH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 connection, closed when a request's headers do not arrive whole
    within `limits.http_header_read_s` of its first byte (slowloris). Hypercorn itself only
    bounds a connection without a whole request by the keep-alive time (75 s), however many
    bytes trickle in. The timer starts with the first byte of each request head and stops
    once h11 has parsed it; a connection that sends nothing stays under keep-alive's bound.
    Pinned to hypercorn 0.18's H11Protocol (`connection`, `send`), checked at start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None  # kept: a task needs a reference

    async def handle(self, event: Event) -> None:
        starts_a_head = isinstance(event, RawData) and event.data and self._waiting_for_head()
        if starts_a_head and self._header_deadline is None:
            loop = asyncio.get_running_loop()
            self._header_deadline = loop.call_later(
                limits.http_header_read_s, self._start_closing, loop
            )
        try:
            await super().handle(event)
        except BaseException:
            # Includes hypercorn handing the connection to HTTP/2 (H2ProtocolAssumedError):
            # this protocol is done with it, so is its timer.
            self._stop_header_deadline()
            raise
        if isinstance(event, Closed) or not self._waiting_for_head():
            self._stop_header_deadline()

    def _waiting_for_head(self) -> bool:
        connection = self.connection
        return isinstance(connection, h11.Connection) and connection.their_state is h11.IDLE

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _start_closing(self, loop: asyncio.AbstractEventLoop) -> None:
        self._header_deadline = None
        self._closing = loop.create_task(self._headers_too_slow())

    async def _headers_too_slow(self) -> None:
        if self._waiting_for_head():
            log.info("http_header_timeout", extra={"client": self.client})
            await self.send(Closed())


def _install_header_timeout() -> None:
    """Makes hypercorn build `_HeaderTimeoutH11Protocol` for its HTTP/1.1 connections."""
    wrapper_module: Any = hypercorn.protocol
    assert wrapper_module.H11Protocol in (H11Protocol, _HeaderTimeoutH11Protocol), (
        "hypercorn changed"
    )
    wrapper_module.H11Protocol = _HeaderTimeoutH11Protocol


class HttpServer:
    """A running hypercorn server. Loop-bound; `stop()` is idempotent."""

    def __init__(self, task: asyncio.Task[None], shutdown: asyncio.Event, port: int) -> None:
        self._task = task
        self._shutdown = shutdown
        self.port = port

    async def stop(self) -> None:
        self._shutdown.set()
        # Bounded by hypercorn's graceful timeout plus its lifespan shutdown; the extra margin
        # only guards against a bug there.
        async with asyncio.timeout(limits.http_shutdown_grace_s + 15):
            await self._task


async def start_http_server(
    app: Any,
    *,
    host: str,
    port: int,
    certfile: Path | None,
    keyfile: Path | None,
) -> HttpServer:
    """Listen on host:port (0: any free port) and serve `app` (an ASGI 3 callable)."""
    _install_graceful_goaway()
    _install_header_timeout()
    config = _hypercorn_config(host, port, certfile, keyfile)
    if certfile is not None and keyfile is not None:
        # Reads the files now: a bad certificate or key fails the start, not the first call.
        config.reloading = ReloadingServerContext(
            certfile, keyfile, lambda cert, key: _server_context(host, port, cert, key)
        )
    sockets = config.create_sockets()
    listening = [*sockets.secure_sockets, *sockets.insecure_sockets]
    assert len(listening) == 1, "one bind, either TLS or cleartext"
    sock: socket.socket = listening[0]
    # Listening now (asyncio.start_server listens again, harmlessly) means a client connecting
    # right after this returns is queued by the kernel rather than refused.
    sock.listen(_LISTEN_BACKLOG)
    bound_port: int = sock.getsockname()[1]
    shutdown = asyncio.Event()
    wrapped = wrap_app(cast("ASGIFramework", app), config.wsgi_max_body_size, "asgi")
    task = asyncio.create_task(
        worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=shutdown.wait),
        name=f"http-server-{bound_port}",
    )
    log.info(
        "http_server_started",
        extra={"port": bound_port, "tls": certfile is not None},
    )
    return HttpServer(task, shutdown, bound_port)
