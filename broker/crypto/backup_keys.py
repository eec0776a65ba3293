"""Backup data keys: envelope encryption of a stream's backup under the stream's own KeyId.

`shoal backup` seals an encrypted stream's segments with AES-256 data keys it gets here
(`broker/backup/sealing.py`); the backup keeps each key only wrapped by the master key that
encrypts the stream at rest (the cluster key, a key file or KMS: `master_keys.py`), so a
backup opens only where that master key is. The wrapping's authenticated context names the
KeyId and the source stream's ARN, and starts with a label no stream ARN has: a backup key
cannot pass for a stream's data key (nor the reverse), nor for another stream's backup key.

Blocking (a KMS call, a key file read): the service runs these off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import error_messages
from broker.crypto.master_keys import MasterKeyError, MasterKeyMissingError, MasterKeys
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import StreamDataKey

_CONTEXT_LABEL = "shoal-backup"


@dataclass(frozen=True, slots=True)
class WrappedBackupKey:
    key_id: str  # the stream's KeyId when the key was made
    stream_arn: str  # the backed-up stream
    wrapping: str  # which master key wraps it (`MasterKeys` kinds: cluster:, local:, kms:)
    ciphertext: bytes


def context(key_id: str, stream_arn: str) -> str:
    """What the wrapping authenticates (KMS's encryption context, the AAD of the others)."""
    return f"{_CONTEXT_LABEL}|{key_id}|{stream_arn}"


def new_backup_key(
    master: MasterKeys, key_id: str, stream_arn: str
) -> tuple[bytes, WrappedBackupKey]:
    """A fresh data key under `key_id` for a backup of `stream_arn`; KMS* errors as
    `ShoalError` (as StartStreamEncryption reports them)."""
    material, wrapped = master.new_data_key(key_id, stream_arn=context(key_id, stream_arn))
    return material, WrappedBackupKey(
        key_id=key_id, stream_arn=stream_arn, wrapping=wrapped.wrapping, ciphertext=wrapped.wrapped
    )


def open_backup_key(master: MasterKeys, wrapped: WrappedBackupKey) -> bytes:
    """The data key, once its KeyId is usable here (KMSNotFoundException, KMSDisabledException
    ... otherwise) and the master key that wraps it opens it: KMSNotFoundException when that
    master key is not here (another cluster's key, another key file), KMSInvalidStateException
    when it does not open (a tampered key, or one bound to another KeyId or stream)."""
    master.check_key(wrapped.key_id)
    stored = StreamDataKey(
        version=0, wrapped=wrapped.ciphertext, wrapping=wrapped.wrapping, created_ms=0
    )
    try:
        return master.unwrap(stored, stream_arn=context(wrapped.key_id, wrapped.stream_arn))
    except MasterKeyMissingError as error:
        raise ShoalError(
            ErrorCode.KMS_NOT_FOUND,
            error_messages.backup_master_key_missing(
                stream_arn=wrapped.stream_arn, wrapping=wrapped.wrapping, error=error
            ),
        ) from error
    except MasterKeyError as error:
        raise ShoalError(
            ErrorCode.KMS_INVALID_STATE,
            error_messages.backup_key_unopenable(
                stream_arn=wrapped.stream_arn, key_id=wrapped.key_id, error=error
            ),
        ) from error
