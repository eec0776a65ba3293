"""Shard iterators: round trip, AWS's shape, tamper detection, expiry at the exact boundary,
and tokens of the previous format."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.streams.iterators import (
    TOKEN_CHARS,
    IteratorPosition,
    decode_iterator,
    encode_iterator,
)
from tests.fast_tier import examples

SECRET = b"k" * 32
U64 = st.integers(min_value=0, max_value=2**64 - 1)

positions = st.builds(
    IteratorPosition,
    stream_uid=U64,
    shard_uid=U64,
    shard_index=st.integers(min_value=0, max_value=2**32 - 1),
    offset=U64,
    issued_ms=st.integers(min_value=0, max_value=2**50),
)


def _position(**changes: int) -> IteratorPosition:
    fields = {
        "stream_uid": 1,
        "shard_uid": 2,
        "shard_index": 3,
        "offset": 4,
        "issued_ms": 1_700_000_000_000,
    }
    fields.update(changes)
    return IteratorPosition(
        stream_uid=fields["stream_uid"],
        shard_uid=fields["shard_uid"],
        shard_index=fields["shard_index"],
        offset=fields["offset"],
        issued_ms=fields["issued_ms"],
    )


def _expect_invalid(token: str, *, secret: bytes = SECRET) -> None:
    with pytest.raises(ShoalError) as caught:
        decode_iterator(token, secret=secret, now_ms=1_700_000_000_000)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.message == "Invalid ShardIterator."


@given(positions)
def test_round_trip(position: IteratorPosition) -> None:
    token = encode_iterator(position, secret=SECRET)
    assert len(token) <= limits.shard_iterator_chars_max
    assert len(token) == TOKEN_CHARS == 224
    decoded = base64.b64decode(token, validate=True)  # standard base64, as AWS's
    assert decoded[:8] == bytes([0, 0, 0, 0, 0, 0, 0, 1])  # AWS's first eight bytes
    assert (len(decoded) - 8) % 16 == 0  # then 16-byte-aligned, as AWS's
    assert decode_iterator(token, secret=SECRET, now_ms=position.issued_ms) == position


@given(positions, st.integers(min_value=1, max_value=128))
def test_length_follows_the_stream_name_as_awss(
    position: IteratorPosition, name_chars: int
) -> None:
    """kinesalite's `assertShardIterator`: 152 + 16 * ((len(name) + 2) // 16) bytes, canonical
    standard base64, whatever the stream name's length."""
    token = encode_iterator(position, secret=SECRET, stream_name_chars=name_chars)
    raw = base64.b64decode(token, validate=True)
    assert len(raw) == 152 + 16 * ((name_chars + 2) // 16)
    assert base64.b64encode(raw).decode() == token
    assert len(token) <= limits.shard_iterator_chars_max
    assert decode_iterator(token, secret=SECRET, now_ms=position.issued_ms) == position


@given(positions, st.data())
def test_flipping_any_byte_is_rejected(position: IteratorPosition, data: st.DataObject) -> None:
    raw = bytearray(base64.b64decode(encode_iterator(position, secret=SECRET)))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    tampered = base64.b64encode(bytes(raw)).decode("ascii")
    with pytest.raises(ShoalError) as caught:
        decode_iterator(tampered, secret=SECRET, now_ms=position.issued_ms)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


@given(positions, st.data())
def test_changing_any_character_is_rejected(
    position: IteratorPosition, data: st.DataObject
) -> None:
    token = encode_iterator(position, secret=SECRET)
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=."
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != token[at]]))
    tampered = token[:at] + replacement + token[at + 1 :]
    with pytest.raises(ShoalError) as caught:
        decode_iterator(tampered, secret=SECRET, now_ms=position.issued_ms)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_wrong_secret_is_rejected() -> None:
    _expect_invalid(encode_iterator(_position(), secret=SECRET), secret=b"other secret")


@pytest.mark.parametrize(
    "token",
    ["", "x", "A" * 72, "A" * 224, "A" * 223 + "=", "é" * 224, "A" * 512, "AAAA" * 57],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    _expect_invalid(token)


def test_padded_or_truncated_tokens_are_rejected() -> None:
    token = encode_iterator(_position(), secret=SECRET)
    _expect_invalid(token[:-1])
    _expect_invalid(token + "A")
    _expect_invalid(token + "==")


def test_expiry_is_inclusive_at_the_boundary() -> None:
    position = _position()
    token = encode_iterator(position, secret=SECRET)
    at_limit = position.issued_ms + limits.iterator_age_ms_max
    assert decode_iterator(token, secret=SECRET, now_ms=at_limit) == position
    with pytest.raises(ShoalError) as caught:
        decode_iterator(token, secret=SECRET, now_ms=at_limit + 1)
    assert caught.value.code is ErrorCode.EXPIRED_ITERATOR
    assert caught.value.message == (
        "Iterator expired. The iterator was created at time 2023-11-14T22:13:20.000Z while "
        "right now it is 2023-11-14T22:18:20.001Z which is further in the future than the "
        "tolerated delay of 300000 milliseconds."
    )


def test_tokens_from_the_future_are_accepted() -> None:
    # Another node's clock may run ahead; the signature already proves we issued it.
    position = _position(issued_ms=1_700_000_000_000)
    token = encode_iterator(position, secret=SECRET)
    assert decode_iterator(token, secret=SECRET, now_ms=1_600_000_000_000) == position


def test_tampering_is_detected_before_expiry() -> None:
    # An expired and tampered token reports the tampering, never trusting its fields.
    raw = bytearray(base64.b64decode(encode_iterator(_position(), secret=SECRET)))
    raw[-1] ^= 1
    tampered = base64.b64encode(bytes(raw)).decode("ascii")
    with pytest.raises(ShoalError) as caught:
        decode_iterator(tampered, secret=SECRET, now_ms=2**62)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_the_token_is_opaque() -> None:
    # Nothing of the position shows through: two tokens one record apart share only the prefix.
    first = base64.b64decode(encode_iterator(_position(offset=4), secret=SECRET))
    second = base64.b64decode(encode_iterator(_position(offset=5), secret=SECRET))
    assert first[:8] == second[:8]
    assert sum(a == b for a, b in zip(first[8:], second[8:], strict=True)) < 20
    assert struct.pack(">Q", 1_700_000_000_000) not in first


def _previous_format_token(position: IteratorPosition, secret: bytes) -> str:
    """A token as the previous release minted it (HMAC-signed, URL-safe base64, 72 chars)."""
    body = struct.pack(
        ">BBQQIQQ",
        1,
        0,
        position.stream_uid,
        position.shard_uid,
        position.shard_index,
        position.offset,
        position.issued_ms,
    )
    tag = hmac.new(secret, b"shoal/shard-iterator\x00" + body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(body + tag).decode("ascii")


def test_tokens_of_the_previous_format_are_still_opened() -> None:
    # A reader holding one across the upgrade goes on (they expire within 5 minutes).
    position = _position()
    old = _previous_format_token(position, SECRET)
    assert len(old) == 72
    assert decode_iterator(old, secret=SECRET, now_ms=position.issued_ms) == position
    raw = bytearray(base64.urlsafe_b64decode(old))
    raw[20] ^= 1
    _expect_invalid(base64.urlsafe_b64encode(bytes(raw)).decode("ascii"))
    _expect_invalid(old, secret=b"other secret")


NAMES = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
    min_size=1,
    max_size=limits.stream_name_chars_max,
)


@settings(max_examples=examples(40))
@given(positions, NAMES)
def test_a_token_carries_its_streams_name_within_awss_length(
    position: IteratorPosition, name: str
) -> None:
    """Version 3 names the stream (AWS reads an iterator by its stream's name); its key, even
    behind an account and a region, fits in the padding of a token as long as AWS's for the
    name."""
    named = dataclasses.replace(position, stream_key=name)
    token = encode_iterator(named, secret=SECRET, stream_name_chars=len(name))
    unnamed = encode_iterator(position, secret=SECRET, stream_name_chars=len(name))
    assert len(token) == len(unnamed)
    assert decode_iterator(token, secret=SECRET, now_ms=position.issued_ms) == named
    # Version 2 tokens (no name) still open, as before.
    assert decode_iterator(unnamed, secret=SECRET, now_ms=position.issued_ms) == position
    assert decode_iterator(f'"{token}"', secret=SECRET, now_ms=position.issued_ms) == named
    key = f"123456789012/ap-southeast-2/{name}"
    token = encode_iterator(
        dataclasses.replace(position, stream_key=key), secret=SECRET, stream_name_chars=len(name)
    )
    assert len(token) == len(unnamed)
    assert decode_iterator(token, secret=SECRET, now_ms=position.issued_ms).stream_key == key
