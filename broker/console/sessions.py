"""Console sign-in when the node checks SigV4 (access keys configured): an access key id and
its secret become a signed session cookie, valid on every node of the cluster (the signing key
is derived from the cluster's shared iterator secret), and a CSRF token bound to it.

Pure: HMAC over values, the clock reading passed in. Tokens are
`<access key id>.<expiry ms>.<hex HMAC-SHA256>`; the CSRF token is an HMAC of the session token
(signed in) or of a random per-browser value (signed out), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

SESSION_COOKIE = "shoal_console_session"
CSRF_COOKIE = "shoal_console_csrf"
SESSION_LIFETIME_MS = 8 * 3600 * 1000


def _key(cluster_secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(cluster_secret, b"shoal-console/" + purpose, hashlib.sha256).digest()


def sign_in(
    secret_for: Callable[[str], str | None],
    access_key_id: str,
    secret: str,
    *,
    cluster_secret: bytes,
    now_ms: int,
) -> str | None:
    """A session token for a matching key pair, or None. `secret_for` is the node's key
    directory (a configured key or an active key of the metadata quorum)."""
    expected = secret_for(access_key_id)
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        return None
    expiry = now_ms + SESSION_LIFETIME_MS
    payload = f"{access_key_id}.{expiry}"
    mac = hmac.new(_key(cluster_secret, b"session"), payload.encode(), hashlib.sha256)
    return f"{payload}.{mac.hexdigest()}"


def session_key(
    token: str,
    secret_for: Callable[[str], str | None],
    *,
    cluster_secret: bytes,
    now_ms: int,
) -> str | None:
    """The access key id a valid, unexpired session token was issued for (and that is still
    configured and active: deleting, deactivating or rotating a key ends its sessions), or
    None."""
    access_key_id, _, rest = token.partition(".")
    expiry_text, _, mac_text = rest.partition(".")
    if not expiry_text.isdigit() or secret_for(access_key_id) is None:
        return None
    payload = f"{access_key_id}.{expiry_text}"
    mac = hmac.new(_key(cluster_secret, b"session"), payload.encode(), hashlib.sha256)
    if not hmac.compare_digest(mac.hexdigest(), mac_text) or int(expiry_text) <= now_ms:
        return None
    return access_key_id


def csrf_token(binding: str, *, cluster_secret: bytes) -> str:
    """The token every form carries: bound to the session (or the browser's CSRF cookie)."""
    mac = hmac.new(_key(cluster_secret, b"csrf"), binding.encode(), hashlib.sha256)
    return mac.hexdigest()


def csrf_valid(token: str, binding: str, *, cluster_secret: bytes) -> bool:
    return bool(binding) and hmac.compare_digest(
        token, csrf_token(binding, cluster_secret=cluster_secret)
    )


PEER_HEADER = "x-shoal-console-peer"
_PEER_WINDOW_MS = 60_000


def peer_token(*, cluster_secret: bytes, now_ms: int) -> str:
    """What one node's console sends another's to read its node statistics: an HMAC of the
    current minute, so only members of the cluster (holding its secret) can ask."""
    window = now_ms // _PEER_WINDOW_MS
    mac = hmac.new(_key(cluster_secret, b"peer"), str(window).encode(), hashlib.sha256)
    return f"{window}.{mac.hexdigest()}"


def peer_token_valid(token: str, *, cluster_secret: bytes, now_ms: int) -> bool:
    """A peer token of this minute or the one before or after (clocks of nodes differ)."""
    window_text, _, _ = token.partition(".")
    if not window_text.isdigit() or abs(int(window_text) - now_ms // _PEER_WINDOW_MS) > 1:
        return False
    expected = hmac.new(_key(cluster_secret, b"peer"), window_text.encode(), hashlib.sha256)
    return hmac.compare_digest(token, f"{window_text}.{expected.hexdigest()}")
