"""Transport security of the gRPC port: server credentials, peer and client channel credentials.

One gRPC port carries both the public API (KinesisService, LeaseService, health) and the
internal services (replication, Prepare/Seal, heartbeats, forwarded appends and reads, cluster
admin), so one rule must protect both. The rule is mutual TLS at the transport:

- With `tls_cert_file` and `tls_key_file` the port serves TLS with that certificate (the same
  one the AWS HTTP door serves).
- With `tls_ca_file` too, and `tls_client_auth = "require"` (the default), the port also
  *requires* a client certificate signed by that CA from every caller, nodes and clients
  alike. gRPC's Python API has no "request but do not require" mode, and a request cannot
  tell the internal services from the public ones before the handshake, so the one sound
  choice on a shared port is to authenticate everyone. A plaintext caller, or one whose
  certificate another CA signed, is refused during the handshake: no RPC of any service runs.
- Nodes dial each other with their own certificate as the client certificate and verify the
  server against the same CA (`PeerCredentials`), so a node configured with another CA can
  neither reach the cluster nor be reached by it.
- `tls_client_auth = "none"` serves server-authenticated TLS only (clients need the CA, not a
  certificate). The internal services are then as open as on a plaintext port: meant for a
  single node, or a network that already limits who reaches the port (the node logs a warning
  when it has peers).

Certificates are re-read when their files change (size or modification time), which is how
Kubernetes Secret volumes and cert-manager rotate them: the server's fetcher runs before each
new handshake, and `PeerCredentials` checks at most every `check_interval_ms` so that
`rpc.channels.Channels` can rebuild its channels with the renewed client certificate.
Connections already open keep the certificate they were opened with.

The framed replication port (`replication_port`, broker/rpc/framed.py) uses the same files and
the same rule through Python's `ssl`: `SslContexts` gives its listener a context that requires
a client certificate signed by the CA (with `tls_client_auth = "require"`) and its dialler one
that presents the node's certificate and verifies the listener's against the CA and the
address it dialled, as gRPC does; both are rebuilt when the files change. The Raft port is not
covered here: pysyncobj speaks its own TCP protocol, protected by `raft_password` (Fernet:
AES-128-CBC and HMAC-SHA256 over every message), see docs/operations.md.

No I/O at import; reading files happens in the constructors and `current()`/fetchers.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from broker.clock import Clock

if TYPE_CHECKING:  # the client library imports this module; it needs no node configuration
    from broker.config import Config

log = logging.getLogger(__name__)

CLIENT_AUTH_MODES = ("require", "none")
# How often a node looks at its certificate files for its outgoing channels. Renewal happens
# days before expiry (cert-manager: a third of the lifetime), so a minute is plenty.
PEER_CHECK_INTERVAL_MS = 60_000


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Where a node's certificate material lives. `ca_file` None: no client authentication,
    and outgoing channels verify servers against the system's roots."""

    cert_file: Path  # PEM chain: the node's certificate first, then intermediates
    key_file: Path  # PEM private key of that certificate
    ca_file: Path | None  # PEM bundle of the CA(s) that sign the cluster's certificates
    require_client_auth: bool

    def __post_init__(self) -> None:
        assert not self.require_client_auth or self.ca_file is not None, "client auth needs a CA"


@dataclass(frozen=True, slots=True)
class _Material:
    """The bytes of the files, and the stamp they were read under."""

    stamp: tuple[tuple[int, int], ...]
    cert: bytes
    key: bytes
    ca: bytes | None


def _stamp(paths: Sequence[Path]) -> tuple[tuple[int, int], ...]:
    """(mtime_ns, size) of each file: changes when a Secret volume swaps its files."""
    stats = [os.stat(path) for path in paths]
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)


def _read(files: TlsFiles) -> _Material:
    paths = [files.cert_file, files.key_file] + ([files.ca_file] if files.ca_file else [])
    stamp = _stamp(paths)
    cert, key = files.cert_file.read_bytes(), files.key_file.read_bytes()
    ca = files.ca_file.read_bytes() if files.ca_file else None
    for path, data in ((files.cert_file, cert), (files.key_file, key), (files.ca_file, ca)):
        if data is not None and b"-----BEGIN " not in data:
            raise ValueError(f"{path} holds no PEM data")
    return _Material(stamp=stamp, cert=cert, key=key, ca=ca)


def _changed(files: TlsFiles, current: _Material) -> _Material | None:
    """Freshly read material when a file changed and reads whole, else None. A file caught
    half-written (or missing for a moment) keeps the current material: the next check
    retries."""
    paths = [files.cert_file, files.key_file] + ([files.ca_file] if files.ca_file else [])
    try:
        if _stamp(paths) == current.stamp:
            return None
        return _read(files)
    except (OSError, ValueError) as error:
        log.warning("tls_reload_failed", extra={"error": str(error)})
        return None


class ServerCertificates:
    """The gRPC server's credentials, re-read when the files change (module docstring)."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._material = _read(files)  # raises OSError / ValueError: the node does not start
        self._lock = threading.Lock()  # the fetcher runs on gRPC's threads

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._material),
            self._fetch,
            require_client_authentication=self._files.require_client_auth,
        )

    def _configuration(self, material: _Material) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.ca
        )

    def _fetch(self) -> Any:
        """gRPC calls this before every handshake: a new configuration, or None (unchanged)."""
        with self._lock:
            fresh = _changed(self._files, self._material)
            if fresh is None:
                return None
            self._material = fresh
        log.info("tls_server_certificate_reloaded", extra={"file": str(self._files.cert_file)})
        return self._configuration(fresh)


class PeerCredentials:
    """A node's credentials for its channels to other nodes: its own certificate as the client
    certificate, the cluster CA (or the system roots) to verify theirs. `current()` says when
    the files changed, so that channels can be rebuilt. Loop-bound like `Channels`."""

    def __init__(
        self,
        files: TlsFiles,
        *,
        clock: Clock,
        check_interval_ms: int = PEER_CHECK_INTERVAL_MS,
    ) -> None:
        assert check_interval_ms >= 0
        self._files = files
        self._clock = clock
        self._check_interval_ms = check_interval_ms
        self._material = _read(files)
        self._credentials = self._make(self._material)
        self._generation = 0
        self._checked_ms = clock.monotonic_ms()

    @staticmethod
    def _make(material: _Material) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca,
            private_key=material.key,
            certificate_chain=material.cert,
        )

    def current(self) -> tuple[int, grpc.ChannelCredentials]:
        """(generation, credentials); the generation grows each time the files change."""
        now_ms = self._clock.monotonic_ms()
        if now_ms - self._checked_ms >= self._check_interval_ms:
            self._checked_ms = now_ms
            fresh = _changed(self._files, self._material)
            if fresh is not None:
                self._material = fresh
                self._credentials = self._make(fresh)
                self._generation += 1
                log.info("tls_peer_certificate_reloaded", extra={"generation": self._generation})
        return self._generation, self._credentials


class SslContexts:
    """`ssl` contexts of the framed replication port from the node's TLS files, rebuilt when
    the files change (looked at most every `check_interval_ms`). A listener's context keeps
    serving: each handshake switches to the newest server context (`sni_callback` runs for
    every handshake, with or without a server name). Loop-bound."""

    def __init__(
        self,
        files: TlsFiles,
        *,
        clock: Clock,
        check_interval_ms: int = PEER_CHECK_INTERVAL_MS,
    ) -> None:
        self._files = files
        self._clock = clock
        self._check_interval_ms = check_interval_ms
        self._material = _read(files)  # raises OSError / ValueError: the node does not start
        self._server = self._server_context()
        self._client = self._client_context()
        self._checked_ms = clock.monotonic_ms()

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._files.cert_file, self._files.key_file)
        if self._material.ca is not None:
            context.load_verify_locations(cadata=self._material.ca.decode("ascii"))
        context.verify_mode = (
            ssl.CERT_REQUIRED if self._files.require_client_auth else ssl.CERT_NONE
        )
        return context

    def _client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._material.ca is not None:
            context.load_verify_locations(cadata=self._material.ca.decode("ascii"))
        else:
            context.load_default_certs()
        context.load_cert_chain(self._files.cert_file, self._files.key_file)
        return context

    def _refresh(self) -> None:
        now_ms = self._clock.monotonic_ms()
        if now_ms - self._checked_ms < self._check_interval_ms:
            return
        self._checked_ms = now_ms
        fresh = _changed(self._files, self._material)
        if fresh is None:
            return
        try:
            self._material = fresh
            self._server, self._client = self._server_context(), self._client_context()
        except (OSError, ValueError, ssl.SSLError) as error:
            log.warning("tls_reload_failed", extra={"error": str(error)})
            return
        log.info("tls_replication_certificate_reloaded", extra={"file": str(self._files.cert_file)})

    def listener(self) -> ssl.SSLContext:
        """The context to listen with: it hands each handshake to the newest server context."""
        base = self._server_context()

        def newest(connection: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
            self._refresh()
            connection.context = self._server

        base.sni_callback = newest
        return base

    def dialler(self) -> ssl.SSLContext:
        self._refresh()
        return self._client


def node_files(config: Config) -> TlsFiles | None:
    """The node's TLS files from its configuration; None when TLS is off (no certificate)."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    return TlsFiles(
        cert_file=config.tls_cert_file,
        key_file=config.tls_key_file,
        ca_file=config.tls_ca_file,
        require_client_auth=config.tls_ca_file is not None and config.tls_client_auth == "require",
    )


class CertificateExpiryReader:
    """When each configured certificate file's first certificate to expire does (notAfter, in
    Unix seconds), for the `kinesis_tls_certificate_expiry_timestamp_seconds` gauge and the
    alert that fires before a renewal is missed. `read()` runs at each scrape: a file is
    parsed again only when its stamp changed, and a file that cannot be read or parsed is left
    out (with one warning) rather than failing the scrape."""

    def __init__(self, files: TlsFiles) -> None:
        usages: list[tuple[Path, str]] = [(files.cert_file, "certificate")]
        if files.ca_file is not None:
            usages.append((files.ca_file, "ca"))
        self._usages = tuple(usages)
        self._lock = threading.Lock()  # scrapes run on the metrics server's threads
        self._parsed: dict[Path, tuple[tuple[int, int], float]] = {}  # stamp, not-after
        self._failing: set[Path] = set()

    def read(self) -> tuple[tuple[Path, str, float], ...]:
        """(file, "certificate" or "ca", not-after seconds) for each readable file."""
        with self._lock:
            return tuple(
                (path, usage, not_after)
                for path, usage in self._usages
                if (not_after := self._not_after(path)) is not None
            )

    def _not_after(self, path: Path) -> float | None:
        from cryptography import x509  # only nodes with TLS need it at run time

        try:
            (stamp,) = _stamp([path])
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            certificates = x509.load_pem_x509_certificates(path.read_bytes())
            not_after = min(c.not_valid_after_utc for c in certificates).timestamp()
        except (OSError, ValueError) as error:
            if path not in self._failing:
                log.warning("tls_expiry_unreadable", extra={"file": str(path), "error": str(error)})
            self._failing.add(path)
            return None
        self._failing.discard(path)
        self._parsed[path] = (stamp, not_after)
        return not_after


def add_port(server: grpc.aio.Server, address: str, files: TlsFiles | None) -> int:
    """Listen on `address`: TLS (mutual when required) with `files`, plaintext without. The
    bound port (0 when it could not be bound). Reads the files now: a missing or unreadable
    certificate stops the node at start rather than at the first handshake."""
    if files is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, ServerCertificates(files).credentials())


def client_credentials(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for a client of a TLS node: the CA that signed the node's certificate (None:
    the system's roots), plus a client certificate and key when the node requires one."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file else None,
        private_key=key_file.read_bytes() if key_file else None,
        certificate_chain=cert_file.read_bytes() if cert_file else None,
    )


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A blocking channel: TLS with `credentials`, plaintext without."""
    if credentials is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, credentials, options=list(options))


def open_aio_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An asyncio channel: TLS with `credentials`, plaintext without; `interceptors` add
    metadata to every call (the gRPC door's request signatures, `broker/iam/grpc_signing.py`)."""
    chain = list(interceptors) or None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=chain)
    return grpc.aio.secure_channel(target, credentials, options=list(options), interceptors=chain)


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLI's TLS flags. The environment defaults are the node's own settings, so that
    `shoal cluster status` inside a node's container uses that node's CA and certificate."""
    parser.add_argument(
        "--tls", action="store_true", help="TLS with the system's roots (no --tls-ca-file)"
    )
    for name, what in (
        ("ca_file", "CA bundle that signed the node's certificate"),
        ("cert_file", "client certificate, when the node requires one"),
        ("key_file", "the client certificate's key"),
    ):
        env = f"SHOAL_TLS_{name.upper()}"
        parser.add_argument(
            "--tls-" + name.replace("_", "-"),
            dest=f"tls_{name}",
            type=Path,
            default=os.environ.get(env) or None,
            help=f"{what} (env {env})",
        )


def credentials_from_arguments(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from `add_client_arguments`' flags; None (plaintext) when none is set."""
    if not (args.tls or args.tls_ca_file or args.tls_cert_file or args.tls_key_file):
        return None
    return client_credentials(
        ca_file=args.tls_ca_file and Path(args.tls_ca_file),
        cert_file=args.tls_cert_file and Path(args.tls_cert_file),
        key_file=args.tls_key_file and Path(args.tls_key_file),
    )
