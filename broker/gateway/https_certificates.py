"""The AWS HTTP door's TLS context, re-read when the certificate files change.

Why: the gRPC port re-reads renewed certificate files before each handshake (broker/tls.py), the
way Kubernetes Secret volumes and cert-manager rotate them; the HTTPS port must follow without
a restart too, or it serves the old certificate until it expires.

How: asyncio's server keeps the one `ssl.SSLContext` it was started with, and OpenSSL copies a
context's certificate into each connection when the connection is accepted. So the listening
context is a template whose `sni_callback` (OpenSSL's servername callback, which runs on every
ClientHello, with or without SNI) looks at the files' (mtime, size) and hands the handshake the
current context: rebuilt from the files when they changed, which OpenSSL then uses for this
handshake (`SSLObject.context = ...`: certificate, key and ALPN). A rebuild that fails (a file
caught half-written, a key that does not match its certificate yet) keeps the current context
and is retried at the next handshake. Connections already open keep their certificate.

Cost: two `stat` calls per TLS handshake; nothing per request.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int], ...]


def _stamp(paths: Sequence[Path]) -> Stamp:
    """(mtime_ns, size) of each file: changes when a Secret volume swaps its files."""
    stats = [os.stat(path) for path in paths]
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)


class ReloadingServerContext:
    """Server-side TLS for the HTTP door: `template` is what the listening socket gets.

    `build(certfile, keyfile)` makes a fully configured server context (hypercorn's ciphers,
    TLS 1.2+, ALPN) with the certificate loaded; it is called once here, so a bad certificate
    or key fails the node's start, and again whenever the files change.
    """

    def __init__(
        self,
        certfile: Path,
        keyfile: Path,
        build: Callable[[Path, Path], ssl.SSLContext],
    ) -> None:
        self._paths = (certfile, keyfile)
        self._build = build
        self._stamp = _stamp(self._paths)
        self._lock = threading.Lock()  # the callback runs on the loop; reloads must not race
        self.template = build(certfile, keyfile)  # raises: the node does not start
        self.template.sni_callback = self._on_client_hello
        self._current = self.template  # until the files change

    @property
    def current(self) -> ssl.SSLContext:
        """The context new handshakes get (after any reload this check triggers)."""
        self._reload_if_changed()
        return self._current

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: object
    ) -> None:
        context = self.current
        if connection.context is not context:
            connection.context = context
        return None

    def _reload_if_changed(self) -> None:
        with self._lock:
            try:
                stamp = _stamp(self._paths)
                if stamp == self._stamp:
                    return
                fresh = self._build(*self._paths)
            except (OSError, ssl.SSLError) as error:
                log.warning("https_certificate_reload_failed", extra={"error": str(error)})
                return
            self._current, self._stamp = fresh, stamp
        log.info("https_certificate_reloaded", extra={"file": str(self._paths[0])})
