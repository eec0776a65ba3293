"""AES-256-GCM for stored batches: the payload of an encrypted stream's batch, sealed with
the stream's data key (envelope encryption; the keys come from `broker/crypto/`).

A sealed payload is

    key_version u32 | nonce (12 bytes) | AES-256-GCM(records payload) | tag (16 bytes)

`key_version` names which of the stream's data keys sealed it (rotation adds keys, never
removes one while records may need it), so a batch written before a rotation still opens. The
nonce is random per batch (96 bits: well within GCM's bound for the batch counts one data key
seals before it is rotated). The associated data is the shard uid and the batch header before
its CRC (version, flags, arrival, epoch, count), so a batch cannot be moved to another shard or
have its header altered without the tag failing. The batch CRC still covers the stored
(sealed) bytes, so corruption is found without a key (scrubber, repair), exactly as for a
plaintext batch.

The log store asks a `BatchKeys` for the key to seal a shard's new batches with (None: the
stream is not encrypted, store plaintext) and for the key of a version to open one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.log.store import LogStoreError
from broker.types import ShardUid

DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_VERSION = struct.Struct(">I")
_SHARD_UID = struct.Struct(">Q")
SEALED_OVERHEAD_BYTES = _KEY_VERSION.size + NONCE_BYTES + TAG_BYTES


@dataclass(frozen=True, slots=True)
class DataKey:
    """One data key of a stream, ready to use: its version and its AEAD."""

    version: int
    aead: AESGCM

    @staticmethod
    def of(version: int, material: bytes) -> DataKey:
        assert len(material) == DATA_KEY_BYTES, len(material)
        assert 0 < version < 2**32
        return DataKey(version, AESGCM(material))


class KeyUnavailableError(LogStoreError):
    """The data key a batch names cannot be had on this node (its stream is not in this
    node's metadata image yet, or the master key that wraps it is not available here).

    A `LogStoreError`: the bytes are fine, this node cannot open them now; the caller retries
    or another replica answers. Never treated as corruption (that would trigger a repair)."""


class BatchKeys(Protocol):
    """Where the log store gets data keys (the node's keyring, `broker/crypto/keyring.py`)."""

    def sealing_key(self, shard_uid: ShardUid) -> DataKey | None:
        """The key new batches of this shard are sealed with; None: store them in the clear."""
        ...

    def opening_key(self, shard_uid: ShardUid, version: int) -> DataKey:
        """The key of `version` for this shard's stream; raises `KeyUnavailableError`."""
        ...


class NoKeys:
    """A log without encryption: every batch is stored in the clear, none can be opened."""

    def sealing_key(self, shard_uid: ShardUid) -> DataKey | None:
        return None

    def opening_key(self, shard_uid: ShardUid, version: int) -> DataKey:
        raise KeyUnavailableError(
            f"shard {shard_uid}: batch sealed with data key {version}, and this log store has "
            "no keys"
        )


def associated_data(shard_uid: ShardUid, header_before_crc: bytes) -> bytes:
    return _SHARD_UID.pack(shard_uid) + header_before_crc


def sealer_for(
    keys: BatchKeys, shard_uid: ShardUid
) -> Callable[[bytes | memoryview, bytes], bytes] | None:
    """What `records.encode_batch` seals this shard's new batches with; None: in the clear."""
    key = keys.sealing_key(shard_uid)
    if key is None:
        return None

    def sealer(payload: bytes | memoryview, header_before_crc: bytes) -> bytes:
        return seal(payload, key, associated_data(shard_uid, header_before_crc))

    return sealer


def resealer_for(
    keys: BatchKeys, shard_uid: ShardUid, sealed: bytes
) -> Callable[[bytes | memoryview, bytes], bytes]:
    """Seals a cut batch again with the data key version its `sealed` payload names."""
    key = keys.opening_key(shard_uid, sealed_key_version(sealed))

    def sealer(payload: bytes | memoryview, header_before_crc: bytes) -> bytes:
        return seal(payload, key, associated_data(shard_uid, header_before_crc))

    return sealer


def opener_for(keys: BatchKeys, shard_uid: ShardUid) -> Callable[[bytes, bytes], bytes]:
    """What `records.plain_value` opens this shard's sealed batches with."""

    def opener(sealed: bytes, header_before_crc: bytes) -> bytes:
        key = keys.opening_key(shard_uid, sealed_key_version(sealed))
        return open_sealed(sealed, key, associated_data(shard_uid, header_before_crc))

    return opener


def seal(payload: bytes | memoryview, key: DataKey, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return b"".join((_KEY_VERSION.pack(key.version), nonce, key.aead.encrypt(nonce, payload, aad)))


def sealed_key_version(sealed: bytes) -> int:
    """The data key version a sealed payload names."""
    if len(sealed) < SEALED_OVERHEAD_BYTES:
        raise BatchTagError(f"a sealed payload of {len(sealed)} bytes is too short")
    (version,) = _KEY_VERSION.unpack_from(sealed, 0)
    return int(version)


class BatchTagError(Exception):
    """The tag did not verify: the sealed bytes, their header or the key are not the ones
    that sealed them. The log store reports it as corruption (the CRC passed, so the bytes
    are what was written: a wrong key or a forged batch)."""


def open_sealed(sealed: bytes, key: DataKey, aad: bytes) -> bytes:
    if len(sealed) < SEALED_OVERHEAD_BYTES:
        raise BatchTagError(f"a sealed payload of {len(sealed)} bytes is too short")
    nonce = sealed[_KEY_VERSION.size : _KEY_VERSION.size + NONCE_BYTES]
    # A view, not a slice: copying a batch's ciphertext into a fresh bytes object cost several
    # times the cipher itself (the new pages' faults), measured on 512 KiB batches.
    ciphertext = memoryview(sealed)[_KEY_VERSION.size + NONCE_BYTES :]
    try:
        return key.aead.decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise BatchTagError(f"data key {key.version} does not open this batch") from exc
