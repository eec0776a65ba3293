"""Shard iterators: signed, self-contained tokens that any node can verify.

A token carries the position a GetRecords call resumes from (stream and shard incarnation,
offset) and when it was issued. It is signed, not encrypted: the contents are not secret (a
client learns the offset from sequence numbers anyway), but they must not be forgeable, because
a forged uid or offset would read another stream's log or skip records. Every node shares the
HMAC key through the metadata image (`MetadataImage.iterator_secret`), so any gateway can check
any token without a lookup.

Layout before base64 (54 bytes, so the base64 text has no padding and no spare bits):

    version (1) | reserved, zero (1) | stream_uid (8) | shard_uid (8) | shard_index (4)
    | offset (8) | issued_ms (8) | HMAC-SHA256 tag, first 16 bytes (16)

The tag covers a domain label plus every byte before it, so a key reused elsewhere cannot mint
iterators, and a version or field change invalidates it. Tokens are 72 characters, well under
the model's 512.

Expiry follows AWS: a token is valid for `limits.iterator_age_ms_max` after issue, inclusive.
A token issued "in the future" is accepted: clocks differ between nodes, and the signature
already proves one of ours issued it. Pure code: time arrives as `now_ms`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import struct
from dataclasses import dataclass

from broker import limits
from broker.errors import ErrorCode, ShoalError

VERSION = 1
_DOMAIN = b"shoal/shard-iterator\x00"
_BODY = struct.Struct(">BBQQIQQ")  # version, reserved, stream_uid, shard_uid, index, offset, ms
_TAG_BYTES = 16  # 128-bit tags: forging one by guessing is hopeless
_TOKEN_BYTES = _BODY.size + _TAG_BYTES
assert _TOKEN_BYTES % 3 == 0  # base64 without padding or unused bits: one text per token
_TOKEN_CHARS = _TOKEN_BYTES // 3 * 4
assert limits.shard_iterator_chars_max >= _TOKEN_CHARS

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_INVALID_MESSAGE = "Invalid ShardIterator."
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class IteratorPosition:
    """Where a shard iterator points, and when it was issued."""

    stream_uid: int
    shard_uid: int
    shard_index: int
    offset: int  # the next record to return
    issued_ms: int


def _tag(body: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + body, hashlib.sha256).digest()[:_TAG_BYTES]


def encode_iterator(position: IteratorPosition, *, secret: bytes) -> str:
    assert secret  # an empty key would make every token forgeable
    assert 0 <= position.stream_uid <= _U64_MAX
    assert 0 <= position.shard_uid <= _U64_MAX
    assert 0 <= position.shard_index <= _U32_MAX
    assert 0 <= position.offset <= _U64_MAX
    assert 0 <= position.issued_ms <= _U64_MAX
    body = _BODY.pack(
        VERSION,
        0,
        position.stream_uid,
        position.shard_uid,
        position.shard_index,
        position.offset,
        position.issued_ms,
    )
    token = base64.urlsafe_b64encode(body + _tag(body, secret)).decode("ascii")
    assert len(token) == _TOKEN_CHARS
    assert "=" not in token
    return token


def decode_iterator(token: str, *, secret: bytes, now_ms: int) -> IteratorPosition:
    """The position a client-supplied token names.

    Raises InvalidArgumentException for anything malformed, tampered with or of another
    version, and ExpiredIteratorException once it is older than `limits.iterator_age_ms_max`.
    """
    assert secret
    raw = _token_bytes(token)
    body, tag = raw[: _BODY.size], raw[_BODY.size :]
    # Check the tag before looking at any field, in constant time.
    if not hmac.compare_digest(tag, _tag(body, secret)):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    version, reserved, stream_uid, shard_uid, shard_index, offset, issued_ms = _BODY.unpack(body)
    if version != VERSION or reserved != 0:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    if now_ms - issued_ms > limits.iterator_age_ms_max:
        raise ShoalError(
            ErrorCode.EXPIRED_ITERATOR,
            f"Iterator expired. The iterator was created at time {_iso(issued_ms)} while right "
            f"now it is {_iso(now_ms)} which is further in the future than the tolerated delay "
            f"of {limits.iterator_age_ms_max} milliseconds.",
        )
    return IteratorPosition(
        stream_uid=stream_uid,
        shard_uid=shard_uid,
        shard_index=shard_index,
        offset=offset,
        issued_ms=issued_ms,
    )


def _token_bytes(token: str) -> bytes:
    """The raw token, or InvalidArgumentException. Only the exact text we issue is accepted."""
    if len(token) != _TOKEN_CHARS or not token.isascii():
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    try:
        # validate=True rejects characters outside the alphabet instead of skipping them.
        raw = base64.b64decode(token, altchars=b"-_", validate=True)
    except binascii.Error as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE) from error
    # The standard alphabet's "+" and "/" pass validation too; insist on our exact spelling.
    if len(raw) != _TOKEN_BYTES or base64.urlsafe_b64encode(raw).decode("ascii") != token:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    return raw


def _iso(ms: int) -> str:
    """A UTC ISO-8601 time with milliseconds, for messages (no clock read: `ms` is given)."""
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)  # exact, unlike a float division
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def peek_stream_uid(token: str) -> int | None:
    """The stream uid a token claims, unverified (None when it is not one of our tokens).

    For access control only, which must name GetRecords' stream before the service checks
    the token; the service then verifies the tag, so a forged uid gains nothing."""
    try:
        raw = _token_bytes(token)
    except ShoalError:
        return None
    stream_uid: int = _BODY.unpack(raw[: _BODY.size])[2]
    return stream_uid
