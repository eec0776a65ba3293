"""`BackupKeyClient`: the BackupKeyService (proto/broker/api/backup/v1/backup.proto) for `shoal
backup` and `shoal restore`. Blocking; one channel to any node; signed like `LimitsClient`.

    with BackupKeyClient("127.0.0.1:50051") as keys:
        material, wrapped = keys.generate("orders")   # wrapped: a dict the backup keeps
        assert keys.open(wrapped) == material

Errors raise `ShoalError` with the Kinesis error name (KMSNotFoundException, ...).
"""

from __future__ import annotations

import base64
from typing import Any

import grpc
from google.protobuf.message import Message

from broker.api.backup.v1 import backup_pb2 as pb
from broker.iam.grpc_signing import SigningKey, call_metadata
from broker.tls import open_channel
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = pb.DESCRIPTOR.services_by_name["BackupKeyService"]
DEFAULT_TIMEOUT_S = 30.0  # one KMS call at most


class BackupKeyClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        signing_key: SigningKey | None = None,
        region: str | None = None,
    ) -> None:
        self._signing_key = signing_key
        self._region = region
        self._channel = open_channel(target, credentials)
        self._timeout_s = timeout_s

    def _call(self, method: str, request: Message) -> Any:
        descriptor = _SERVICE.methods_by_name[method]
        output_class = getattr(pb, descriptor.output_type.name)
        path = f"/{_SERVICE.full_name}/{method}"
        stub: Any = self._channel.unary_unary(
            path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=output_class.FromString,
        )
        try:
            return stub(
                request,
                timeout=self._timeout_s,
                metadata=call_metadata(path, region=self._region, key=self._signing_key),
            )
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc

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

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BackupKeyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
