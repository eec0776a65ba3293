"""Hypercorn, run inside the node's event loop: the one module that imports it.

One port speaks HTTP/1.1 and HTTP/2: cleartext h2 with prior knowledge (the JS SDK v3 and
Netty-based Java SDK v2 clients use HTTP/2 for every call) next to HTTP/1.1 (boto3, the AWS
CLI); with a certificate, TLS with ALPN offering h2 and http/1.1. Every hypercorn option that
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
from pathlib import Path
from typing import Any, cast

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from broker import limits

log = logging.getLogger(__name__)

_LISTEN_BACKLOG = 1024  # connections the kernel queues while the loop is busy


def _hypercorn_config(
    host: str, port: int, certfile: Path | None, keyfile: Path | None
) -> HypercornConfig:
    config = HypercornConfig()
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
    config = _hypercorn_config(host, port, certfile, keyfile)
    config.create_ssl_context()  # a bad certificate or key fails the start, not the first call
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
