"""Opaque, tamper-proof pagination tokens (ListStreams, ListShards).

A token carries where the next page starts, which stream it belongs to and when it was issued,
signed with the cluster's secret so any node can check it. ListShards tokens expire after 300 s
(ExpiredNextTokenException), as on AWS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError

_MAC_BYTES = 16


def encode_token(payload: dict[str, Any], *, issued_ms: int, secret: bytes) -> str:
    body = json.dumps({"p": payload, "t": issued_ms}, separators=(",", ":")).encode()
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def decode_token(token: str, *, secret: bytes, now_ms: int, expires: bool) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.INVALID_NEXT_TOKEN) from exc
    mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    expected = hmac.new(secret, body, hashlib.sha256).digest()[:_MAC_BYTES]
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, expected):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.INVALID_NEXT_TOKEN)
    decoded = json.loads(body)
    issued_ms = int(decoded["t"])
    if expires and now_ms - issued_ms > limits.next_token_age_ms_max:
        raise ShoalError(
            ErrorCode.EXPIRED_NEXT_TOKEN,
            error_messages.NEXT_TOKEN_EXPIRED,
        )
    payload: dict[str, Any] = decoded["p"]
    return payload
