"""Who made a request and where it is addressed: the caller of every operation.

The front doors build one `Caller` per request and pass it to the service's `call`: the AWS
door from the SigV4 signature (access key id) and the client's address, the gRPC door from its
signed metadata or client certificate (`gateway/grpc_auth.py`). When the request was
authenticated, `principal_arn` and `account_id` are the principal's (`broker/iam/directory.py`:
a configured static key is the root user of the node's account); otherwise the node's
account. Services use it for what depends on the caller: the region and account an ARN or a
resource name belongs to, and (with access control, `broker/iam/enforcer.py`) whether the
caller may act. `None` where a call has no outside caller
(the node's own background work) means the node's configured region and account.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    region: str  # the region the request is addressed to (SigV4 scope, or the node's)
    account_id: str  # the 12-digit account the caller acts in
    access_key_id: str | None = None  # the signing key, when the request was signed
    source_address: str | None = None  # the client's IP address, when known
    door: str = "internal"  # "http", "grpc" or "internal" (the node's own calls)
    # The authenticated principal (`arn:aws:iam::<account>:user/<name>`, `...:root`), None for
    # an unsigned request on a node without access control, or the node's own calls.
    principal_arn: str | None = None
    # Another account whose resource this call may address: set by the authorizer
    # (`broker/iam/enforcer.py`) only when access control is on and that account's resource
    # policy allowed this very call (cross-account access, as on AWS: by ARN only).
    granted_account: str | None = None

    @property
    def account(self) -> str:
        """The account the caller acts in (the same as `account_id`)."""
        return self.account_id
