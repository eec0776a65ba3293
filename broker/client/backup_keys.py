"""`BackupKeyClient`: the BackupKeyService (proto/broker/api/backup/v1/backup.proto) for `shoal
backup` and `shoal restore`. Blocking; one channel to any node; signed like `LimitsClient`.

    with BackupKeyClient("127.0.0.1:50051") as keys:
        material, wrapped = keys.generate("orders")   # wrapped: a dict the backup keeps
        assert keys.open(wrapped) == material

Errors raise `ShoalError` with the Kinesis error name (KMSNotFoundException, ...).
"""

from __future__ import annotations

import base64

from broker.api.backup.v1 import backup_pb2 as pb
from broker.client.unary import UnaryServiceClient


class BackupKeyClient(UnaryServiceClient):
    _MODULE = pb
    _SERVICE_NAME = "BackupKeyService"
    DEFAULT_TIMEOUT_S = 30.0  # one KMS call at most

    def generate(self, stream_name: str) -> tuple[bytes, dict[str, str]]:
        """A new data key for a backup of the (encrypted) stream: the key, and its wrapped
        form as JSON-ready text {key_id, stream_arn, wrapping, ciphertext (base64)}."""
        answer = self._call(
            "GenerateBackupKey", pb.GenerateBackupKeyRequest(stream_name=stream_name)
        )
        wrapped = answer.wrapped
        return bytes(answer.plaintext), {
            "key_id": wrapped.key_id,
            "stream_arn": wrapped.stream_arn,
            "wrapping": wrapped.wrapping,
            "ciphertext": base64.b64encode(wrapped.ciphertext).decode("ascii"),
        }

    def open(self, wrapped: dict[str, str]) -> bytes:
        """The data key `generate` gave in `wrapped`'s form."""
        message = pb.WrappedBackupKey(
            key_id=wrapped["key_id"],
            stream_arn=wrapped["stream_arn"],
            wrapping=wrapped["wrapping"],
            ciphertext=base64.b64decode(wrapped["ciphertext"]),
        )
        answer = self._call("OpenBackupKey", pb.OpenBackupKeyRequest(wrapped=message))
        return bytes(answer.plaintext)
