"""Shard iterators: opaque, authenticated tokens that any node can open.

A token carries the position a GetRecords call resumes from (stream and shard incarnation,
offset) and when it was issued. It is encrypted and authenticated (AES-256-GCM): a forged or
altered uid or offset would read another stream's log or skip records, and, as on AWS, clients
see an opaque string, not the position inside. Every node shares the key material through the
metadata image (`MetadataImage.iterator_secret`), so any gateway opens any token without a
lookup.

The shape is AWS's (as kinesalite recorded it): standard base64 of 8 bytes `00 .. 00 01`, then
16-byte-aligned ciphertext, `152 + 16 * ((len(stream name) + 2) // 16)` bytes in all (204 to
376 characters; the model allows 512). The bytes:

    prefix 00000000 00000001 (8) | nonce (12) | AES-256-GCM ciphertext (116 + 16k) | tag (16)

The plaintext is `version (1) | reserved, zero (1) | stream_uid (8) | shard_uid (8) |
shard_index (4) | offset (8) | issued_ms (8)`, then (version 3) the stream's metadata key (its
name, with its account and region outside the node's own, `streams/namespaces.py`),
`length (1) | ASCII`, and zero padding to the token's length; the padding always has room for
the key, since the length follows the name's. AWS's iterators name their stream:
an iterator of a stream deleted and created again under the same name reads the new stream
(kinesalite recorded AWS answering 200 with no records for a shard the new stream has, and
"Shard … in stream … does not exist" for one it lacks), which GetRecords needs the name for.
Version 2 tokens (no name) are still opened. The nonce is
derived from the plaintext with a separate HMAC key (the SIV construction): equal positions
give equal tokens, different ones never share a nonce, and the code needs no random source.
The prefix is authenticated as associated data.

Expiry follows AWS: a token is valid for `limits.iterator_age_ms_max` after issue, inclusive.
A token issued "in the future" is accepted: clocks differ between nodes, and the GCM tag
already proves one of ours issued it. Tokens of the previous format (72 URL-safe base64
characters, HMAC-signed) are still opened for one release, so a reader holding one across the
upgrade goes on; they expire within 5 minutes anyway. Pure code: time arrives as `now_ms`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError

VERSION = 3
_UNNAMED_VERSION = 2  # the previous version: no stream name; opened, issued only unnamed
_PREFIX = bytes([0, 0, 0, 0, 0, 0, 0, 1])  # what AWS's iterators start with
_KEY_LABEL = b"shoal/shard-iterator/aes-256-gcm\x00"
_NONCE_LABEL = b"shoal/shard-iterator/nonce\x00"
_BODY = struct.Struct(">BBQQIQQ")  # version, reserved, stream_uid, shard_uid, index, offset, ms
_NONCE_BYTES = 12
_GCM_TAG_BYTES = 16
_SHORTEST_TOKEN_BYTES = 152  # AWS's, for stream names of up to 13 characters
_LONGEST_TOKEN_BYTES = _SHORTEST_TOKEN_BYTES + 16 * ((limits.stream_name_chars_max + 2) // 16)
_SEALING_BYTES = len(_PREFIX) + _NONCE_BYTES + _GCM_TAG_BYTES
_SHORTEST_PLAINTEXT_BYTES = _SHORTEST_TOKEN_BYTES - _SEALING_BYTES
assert _BODY.size <= _SHORTEST_PLAINTEXT_BYTES
assert limits.shard_iterator_chars_max >= 4 * -(-_LONGEST_TOKEN_BYTES // 3)
# The characters of a token for a stream name of 14 to 29 characters (and of tokens issued
# before the length followed the name).
TOKEN_CHARS = 224


def token_bytes(stream_name_chars: int) -> int:
    """The length of AWS's iterators for a stream name of this length (kinesalite)."""
    return _SHORTEST_TOKEN_BYTES + 16 * ((stream_name_chars + 2) // 16)


assert token_bytes(20) // 3 * 4 == TOKEN_CHARS

# The previous format (HMAC-SHA256, URL-safe base64): opened, never issued.
_V1_DOMAIN = b"shoal/shard-iterator\x00"
_V1_TAG_BYTES = 16
_V1_TOKEN_BYTES = _BODY.size + _V1_TAG_BYTES
_V1_TOKEN_CHARS = _V1_TOKEN_BYTES // 3 * 4

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
    # The stream's metadata key (`StreamMeta.name`); None in tokens of the versions before 3.
    stream_key: str | None = None


@functools.lru_cache(maxsize=4)
def _keys(secret: bytes) -> tuple[AESGCM, bytes]:
    """The cipher and the nonce key derived from the cluster's iterator secret (one secret per
    cluster, so the cache holds one entry in practice)."""
    aes_key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
    nonce_key = hmac.new(secret, _NONCE_LABEL, hashlib.sha256).digest()
    return AESGCM(aes_key), nonce_key


def encode_iterator(
    position: IteratorPosition, *, secret: bytes, stream_name_chars: int = 20
) -> str:
    """The token of `position`, as long as AWS's for a stream name of `stream_name_chars`; a
    version 2 token when the position names no stream key."""
    assert secret  # an empty key would make every token forgeable
    name = position.stream_key
    assert 1 <= stream_name_chars <= limits.stream_name_chars_max
    assert 0 <= position.stream_uid <= _U64_MAX
    assert 0 <= position.shard_uid <= _U64_MAX
    assert 0 <= position.shard_index <= _U32_MAX
    assert 0 <= position.offset <= _U64_MAX
    assert 0 <= position.issued_ms <= _U64_MAX
    body = _BODY.pack(
        _UNNAMED_VERSION if name is None else VERSION,
        0,
        position.stream_uid,
        position.shard_uid,
        position.shard_index,
        position.offset,
        position.issued_ms,
    )
    total = token_bytes(stream_name_chars)
    if name is not None:
        assert name.isascii()
        # The key is the name, or the name behind an account and a region (some 35 more
        # characters); the padding holds at least 64 more than the name (token_bytes).
        assert 0 < len(name) <= min(255, total - _SEALING_BYTES - _BODY.size - 1), name
        body += bytes([len(name)]) + name.encode("ascii")
    plaintext = body.ljust(total - len(_PREFIX) - _NONCE_BYTES - _GCM_TAG_BYTES, b"\x00")
    cipher, nonce_key = _keys(secret)
    nonce = hmac.new(nonce_key, plaintext, hashlib.sha256).digest()[:_NONCE_BYTES]
    sealed = cipher.encrypt(nonce, plaintext, _PREFIX)
    raw = _PREFIX + nonce + sealed
    assert len(raw) == total
    return base64.b64encode(raw).decode("ascii")


def decode_iterator(token: str, *, secret: bytes, now_ms: int) -> IteratorPosition:
    """The position a client-supplied token names.

    Raises InvalidArgumentException for anything malformed, altered or of another version, and
    ExpiredIteratorException once it is older than `limits.iterator_age_ms_max`.
    """
    assert secret
    token = _unquoted(token)
    stream_key: str | None = None
    if len(token) == _V1_TOKEN_CHARS:
        body = _open_v1(token, secret)
        versions: tuple[int, ...] = (1,)
    else:
        body, stream_key = _open(token, secret)
        versions = (_UNNAMED_VERSION,) if stream_key is None else (VERSION,)
    version, reserved, stream_uid, shard_uid, shard_index, offset, issued_ms = _BODY.unpack(body)
    if version not in versions or reserved != 0:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    if now_ms - issued_ms > limits.iterator_age_ms_max:
        raise ShoalError(
            ErrorCode.EXPIRED_ITERATOR,
            error_messages.iterator_expired(
                issued_ms=_iso(issued_ms),
                now_ms=_iso(now_ms),
                iterator_age_ms_max=limits.iterator_age_ms_max,
            ),
        )
    return IteratorPosition(
        stream_uid=stream_uid,
        shard_uid=shard_uid,
        shard_index=shard_index,
        offset=offset,
        issued_ms=issued_ms,
        stream_key=stream_key,
    )


def _unquoted(token: str) -> str:
    """`token` without one pair of surrounding double quotes: AWS opens `"<iterator>"` as the
    iterator (localstack's `test_get_records_shard_iterator_with_surrounding_quotes`, validated
    against AWS), which a shell script passing a JSON string on gets."""
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def _open(token: str, secret: bytes) -> tuple[bytes, str | None]:
    """The plaintext body of a current token and the stream key it carries (None for version
    2), or InvalidArgumentException. The GCM tag is checked before any field is read; only the
    exact text we issue is accepted."""
    raw = _strict_b64decode(token, chars=None, altchars=None)
    if (
        not _SHORTEST_TOKEN_BYTES <= len(raw) <= _LONGEST_TOKEN_BYTES
        or (len(raw) - _SHORTEST_TOKEN_BYTES) % 16
        or raw[: len(_PREFIX)] != _PREFIX
    ):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    nonce = raw[len(_PREFIX) : len(_PREFIX) + _NONCE_BYTES]
    cipher, _ = _keys(secret)
    try:
        plaintext = cipher.decrypt(nonce, raw[len(_PREFIX) + _NONCE_BYTES :], _PREFIX)
    except InvalidTag as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE) from error
    body, rest = plaintext[: _BODY.size], plaintext[_BODY.size :]
    if body[0] == _UNNAMED_VERSION:
        if any(rest):
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
        return body, None
    length = rest[0]
    name, padding = rest[1 : 1 + length], rest[1 + length :]
    if not 0 < length == len(name) or not name.isascii() or any(padding):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    return body, name.decode("ascii")


def _open_v1(token: str, secret: bytes) -> bytes:
    """The body of a previous-format token (HMAC-signed), or InvalidArgumentException."""
    raw = _strict_b64decode(token, chars=_V1_TOKEN_CHARS, altchars=b"-_")
    body, tag = raw[: _BODY.size], raw[_BODY.size :]
    expected = hmac.new(secret, _V1_DOMAIN + body, hashlib.sha256).digest()[:_V1_TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    return body


def _strict_b64decode(token: str, *, chars: int | None, altchars: bytes | None) -> bytes:
    """`token`'s bytes if it is exactly `chars` characters (any length the model allows when
    None) of the given alphabet, spelled as we spell it; InvalidArgumentException otherwise."""
    too_long = len(token) > limits.shard_iterator_chars_max
    if (too_long if chars is None else len(token) != chars) or not token.isascii():
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    try:
        # validate=True rejects characters outside the alphabet instead of skipping them.
        raw = base64.b64decode(token, altchars=altchars, validate=True)
    except binascii.Error as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE) from error
    # The other alphabet's two characters pass validation too; insist on our exact spelling.
    respelled = base64.b64encode(raw, altchars=altchars).decode("ascii")
    if respelled != token:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, _INVALID_MESSAGE)
    return raw


def _iso(ms: int) -> str:
    """A UTC ISO-8601 time with milliseconds, for messages (no clock read: `ms` is given)."""
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)  # exact, unlike a float division
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def peek_stream_uid(token: str, *, secret: bytes) -> tuple[int, str | None] | None:
    """The stream uid and key a token names, whatever its age (None when it is not one of
    ours; no key in the tokens before version 3).

    For access control, which must name GetRecords' stream before the service reads the
    token; the tag is checked here too, so a forged token names nothing."""
    token = _unquoted(token)
    key: str | None = None
    try:
        if len(token) == _V1_TOKEN_CHARS:
            body = _open_v1(token, secret)
        else:
            body, key = _open(token, secret)
    except ShoalError:
        return None
    stream_uid: int = _BODY.unpack(body)[2]
    return stream_uid, key
