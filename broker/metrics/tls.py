"""Transport security: when each configured certificate expires."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry

from broker.metrics.collectors import CallbackCollector, Series, Watched
from broker.metrics.families import declare

# --- Transport security -----------------------------------------------------------------------
TLS_CERTIFICATE_EXPIRY = declare(
    "kinesis_tls_certificate_expiry_timestamp_seconds",
    "gauge",
    "When the first certificate to expire in a configured PEM file expires (its notAfter, in "
    'Unix seconds): usage="certificate" is the node\'s own chain, usage="ca" the CA bundle.',
    ("file", "usage"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateExpiry:
    """When the certificate of one configured PEM file that expires first expires."""

    file: str
    usage: Literal["certificate", "ca"]
    not_after_s: float  # Unix seconds


class TlsProbe:
    """Certificate expiry of the node's TLS files: `watch(reader)` once when TLS is on; the
    reader is called at each scrape (`tls.CertificateExpiryReader` re-parses only changed
    files), so a renewed certificate shows its new date at the next scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._read: Watched[Iterable[CertificateExpiry]] = Watched("tls")
        registry.register(CallbackCollector((TLS_CERTIFICATE_EXPIRY,), self._series))

    def watch(self, read: Callable[[], Iterable[CertificateExpiry]]) -> None:
        self._read.set(read)

    def _series(self) -> Series:
        for expiry in self._read.read() or ():
            yield TLS_CERTIFICATE_EXPIRY, (expiry.file, expiry.usage), expiry.not_after_s
