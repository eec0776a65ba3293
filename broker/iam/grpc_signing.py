"""The gRPC door's request signature: SigV4's key derivation over the method and time (pure).

A client signs each call with its access key (the same keys as the AWS door) in metadata:

    x-shoal-access-key-id: AKIA...
    x-shoal-date:          20260101T120000Z
    x-shoal-signature:     hex HMAC-SHA256(signing key, "SHOAL-HMAC-SHA256\n<method>\n<date>")

The signing key is SigV4's chain secret -> date -> region -> "shoal-grpc" -> "aws4_request",
so a signature is only good for that key, day, region, method and instant. The region is the
one the call addresses (`x-shoal-region`, which a signed call sends whenever it names a region:
the signing region and the namespace region are one, as SigV4's credential scope is on the AWS
door); a call that names none is for the node's own region and is signed for the empty region
`""` (the client need not know the node's region), or for the node's region by name.

The node refuses a date more than 5 minutes away from its clock (SigV4's window): a captured
signature replays for one method for at most that long, and over TLS it cannot be captured.
The request body is not covered; TLS protects it, as it does the body of an `UNSIGNED-PAYLOAD`
SigV4 request.

Nodes sign the internal calls they make to each other with a key derived from the Raft
password (`node_signature`), the cluster secret every node already holds.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from broker import limits

ALGORITHM = "SHOAL-HMAC-SHA256"
SERVICE = "shoal-grpc"
ACCESS_KEY_HEADER = "x-shoal-access-key-id"
DATE_HEADER = "x-shoal-date"
SIGNATURE_HEADER = "x-shoal-signature"
NODE_SIGNATURE_HEADER = "x-shoal-node-signature"
REGION_HEADER = "x-shoal-region"  # the region a call addresses (`gateway/grpc_namespace.py`)
NODE_REGION_SCOPE = ""  # the signing region of a call that names no region: the node's
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def amz_date(wall_ms: int) -> str:
    return datetime.fromtimestamp(wall_ms / 1000, tz=UTC).strftime(_DATE_FORMAT)


def date_ms(text: str) -> int | None:
    try:
        parsed = datetime.strptime(text, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(parsed.timestamp() * 1000)


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (day, region, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def signature(*, secret: str, region: str, method: str, date: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{method}\n{date}"
    key = _signing_key(secret, date[:8], region)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_metadata(
    *, access_key_id: str, secret: str, region: str, method: str, wall_ms: int
) -> tuple[tuple[str, str], ...]:
    date = amz_date(wall_ms)
    return (
        (ACCESS_KEY_HEADER, access_key_id),
        (DATE_HEADER, date),
        (SIGNATURE_HEADER, signature(secret=secret, region=region, method=method, date=date)),
    )


def node_signature(*, raft_password: str, method: str, date: str) -> str:
    key = hashlib.sha256(b"shoal/node-rpc/v1\x00" + raft_password.encode("utf-8")).digest()
    return hmac.new(key, f"{method}\n{date}".encode(), hashlib.sha256).hexdigest()


def fresh(date: str, *, now_ms: int) -> bool:
    """Is `date` within the replay window of `now_ms`?"""
    stamp = date_ms(date)
    return stamp is not None and abs(now_ms - stamp) <= limits.signature_clock_skew_ms_max


class SigningKey:
    """A client's access key: `metadata(method, region)` signs one call at the current wall
    time, for `region` (sent in `x-shoal-region`), or for the node's region when None."""

    def __init__(self, access_key_id: str, secret: str, *, wall_ms: Any = None) -> None:
        self.access_key_id = access_key_id
        self._secret = secret
        self._wall_ms = wall_ms or _system_wall_ms

    def metadata(self, method: str, region: str | None = None) -> tuple[tuple[str, str], ...]:
        signed = signed_metadata(
            access_key_id=self.access_key_id,
            secret=self._secret,
            region=NODE_REGION_SCOPE if region is None else region,
            method=method,
            wall_ms=self._wall_ms(),
        )
        return signed if region is None else ((REGION_HEADER, region), *signed)

    def __repr__(self) -> str:  # never the secret
        return f"SigningKey({self.access_key_id!r})"


def call_metadata(
    method: str, *, region: str | None, key: SigningKey | None
) -> tuple[tuple[str, str], ...] | None:
    """The metadata of one call addressed to `region` (None: the node's) and signed with `key`
    (None: unsigned); None when there is nothing to send."""
    if key is not None:
        return key.metadata(method, region)
    return None if region is None else ((REGION_HEADER, region),)


def _system_wall_ms() -> int:
    from broker.clock import SystemClock

    return SystemClock().wall_ms()
