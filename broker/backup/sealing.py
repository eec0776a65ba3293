"""Sealed segments: a backup segment of an encrypted stream, AES-256-GCM under a backup data key.

A sealed object is `MAGIC | nonce (12 bytes) | ciphertext+tag` of the segment's JSON lines. The
authenticated data binds it to its place: the source stream's ARN, the shard, the segment's
index in the shard, the sequence number it follows and its last one, its record count and which
data key seals it (`binding`). So a segment moved to another shard, stream or position, one
truncated or edited, or one sealed under another key does not open (`SegmentRefusedError`).
The data keys come wrapped by the stream's master key (`broker/crypto/backup_keys.py`,
through the BackupKeyService); this module sees only their material. Pure apart from the
random nonce.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"SHOALBK\x01"
_NONCE_BYTES = 12
_KEY_BYTES = 32


class SegmentRefusedError(Exception):
    """A sealed segment that does not authenticate where the manifest places it."""


def binding(
    *,
    stream_arn: str,
    shard_id: str,
    index: int,
    after: str | None,
    last: str,
    records: int,
    data_key: int,
) -> bytes:
    """The authenticated data of one segment (canonical JSON)."""
    return json.dumps(
        {
            "stream_arn": stream_arn,
            "shard_id": shard_id,
            "index": index,
            "after": after,
            "last": last,
            "records": records,
            "data_key": data_key,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def seal(key: bytes, body: bytes, bound: bytes) -> bytes:
    if len(key) != _KEY_BYTES:
        raise ValueError("a backup data key is 32 bytes (AES-256)")
    nonce = os.urandom(_NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, body, MAGIC + bound)


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def open_sealed(key: bytes, blob: bytes, bound: bytes, *, name: str) -> bytes:
    """The segment's JSON lines; `SegmentRefusedError` naming `name` when it does not open."""
    if not is_sealed(blob) or len(blob) < len(MAGIC) + _NONCE_BYTES + 16:
        raise SegmentRefusedError(f"segment {name} is not a sealed segment")
    nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + _NONCE_BYTES :], MAGIC + bound)
    except InvalidTag as exc:
        raise SegmentRefusedError(
            f"segment {name} does not authenticate as the manifest places it (edited, "
            "truncated, or another shard's, stream's or position's segment): refused"
        ) from exc
