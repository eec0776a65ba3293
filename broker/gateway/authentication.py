"""Who a request comes from, for both doors: signature checks throttled, callers identified.

`Authenticator.verify` runs a door's signature check (SigV4 on the AWS door, the signed
metadata on the gRPC door) behind the brute-force throttle (`broker/iam/throttle.py`): an
address that failed too often is refused before its signature is even looked at. `caller`
fills a request's `Caller` with the principal and account of the key that signed it
(`broker/iam/directory.py`).

Lifecycle: one per node (`node.py`), shared by the doors. Loop-bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.iam.directory import Identity, KeyDirectory
from broker.iam.enforcer import CallObserver
from broker.iam.throttle import FailureThrottle

Verified = TypeVar("Verified")  # what a signature check returns about the signer

THROTTLED_MESSAGE = "Too many failed authentication attempts from this address; retry later."
# The signature failures that count as a guess (a malformed request is not one).
_GUESSES = frozenset({ErrorCode.UNRECOGNIZED_CLIENT, ErrorCode.INVALID_SIGNATURE})


class Authenticator:
    def __init__(
        self,
        *,
        directory: KeyDirectory,
        clock: Clock,
        access_control: bool,
        throttle: FailureThrottle | None = None,
        observer: CallObserver | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.directory = directory
        self.access_control = access_control
        self.observer = observer  # told of every refused authentication (the audit trail)
        self._region = region
        self._clock = clock
        self._throttle = throttle or FailureThrottle()

    def verify(
        self,
        check: Callable[[], Verified],
        address: str | None,
        *,
        signing_name: str = "shoal",
        operation: str = "Unknown",
    ) -> Verified:
        """Runs `check` (returns what identifies the signer, or raises) unless `address` is
        throttled.
        A refusal is audited as a call of `operation` by nobody known."""
        now_ms = self._clock.monotonic_ms()
        where = address or "unknown"
        try:
            if self._throttle.blocked(where, now_ms=now_ms):
                raise ShoalError(ErrorCode.LIMIT_EXCEEDED, THROTTLED_MESSAGE)
            try:
                return check()
            except ShoalError as error:
                if error.code in _GUESSES:
                    self._throttle.failed(where, now_ms=now_ms)
                raise
        except ShoalError as refused:
            self.refused(signing_name, operation, address, refused)
            raise

    def refused(
        self, signing_name: str, operation: str, address: str | None, error: ShoalError
    ) -> None:
        """Audits a call refused before anyone was identified."""
        if self.observer is None:
            return
        caller = Caller(
            region=self._region,
            account_id=self.directory.account_id,
            source_address=address,
            door="http" if signing_name != "shoal" else "grpc",
        )
        self.observer.call_finished(
            signing_name=signing_name,
            operation=operation,
            request={},
            caller=caller,
            resource="*",
            error=error,
        )

    def failed(self, address: str | None) -> None:
        """A guess that did not go through `verify` (an unmapped client certificate)."""
        self._throttle.failed(address or "unknown", now_ms=self._clock.monotonic_ms())

    def caller(self, base: Caller, access_key_id: str | None) -> Caller:
        """`base` (region, address, door) with the signing key's principal and account."""
        if access_key_id is None:
            return base
        identity = self.directory.identity_for_key(access_key_id)
        if identity is None:  # the key was deleted between the signature check and now
            raise ShoalError(ErrorCode.UNRECOGNIZED_CLIENT)
        return with_identity(base, identity, access_key_id=access_key_id)


def with_identity(base: Caller, identity: Identity, *, access_key_id: str | None) -> Caller:
    return dataclasses.replace(
        base,
        account_id=identity.account_id,
        principal_arn=identity.principal_arn,
        access_key_id=access_key_id,
    )
