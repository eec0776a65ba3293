"""Encryption at rest: whether this node's master key still unwraps the cluster's data keys."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from broker.metrics.collectors import CallbackCollector, Series
from broker.metrics.families import declare

# --- Encryption at rest ---------------------------------------------------------------------
MASTER_KEY_USABLE = declare(
    "kinesis_encryption_master_key_usable",
    "gauge",
    "1 while this node's master key unwraps every data key of the cluster's encrypted "
    "streams (checked at start, every master_key_check_interval_ms and when the key file "
    "changes), 0 when one does not: the node can neither store nor serve those streams.",
)


class EncryptionProbe:
    """`master_key_checked(usable)` after each check; 1 until the first one says otherwise."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._usable = True
        registry.register(CallbackCollector((MASTER_KEY_USABLE,), self._series))

    def master_key_checked(self, *, usable: bool) -> None:
        self._usable = usable

    def _series(self) -> Series:
        yield MASTER_KEY_USABLE, (), 1.0 if self._usable else 0.0
