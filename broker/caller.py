"""Who made a request and where it is addressed: the caller of every operation.

The front doors build one `Caller` per request and pass it to the service's `call`: the AWS
door from the SigV4 credential scope (region, access key id) and the client's address, the gRPC
door from the node's configuration (and later the client's identity). Services use it for
what depends on the caller: the region and account an ARN or a resource name belongs to, and
(with access control) whether the caller may act. `None` where a call has no outside caller
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
