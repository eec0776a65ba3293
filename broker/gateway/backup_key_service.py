"""The gRPC BackupKeyService (proto/broker/api/backup/v1/backup.proto): the data keys `shoal
backup` seals an encrypted stream's segments with, made and opened by this node's master keys
under the stream's KeyId (`crypto/backup_keys.py`).

Thin: decode, look the stream up in the caller's namespace, call the master keys off the event
loop, encode. Errors leave through `error_mapping` (ErrorInfo.reason is the Kinesis error name).
With access control on, `grpc_auth` admits a call only if `shoal:<Method>` is allowed.

    server.add_generic_rpc_handlers((backup_key_handler(service_context),))
"""

from __future__ import annotations

import asyncio

import grpc

from broker import error_messages
from broker.api.backup.v1 import backup_pb2 as pb
from broker.caller import Caller
from broker.crypto import backup_keys
from broker.crypto.master_keys import MasterKeys
from broker.errors import ErrorCode, ShoalError
from broker.gateway.grpc_namespace import namespaced_rpc
from broker.gateway.unary_handlers import unary_service_handler
from broker.service.context import ServiceContext
from broker.wire.error_mapping import NativeMethod

_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["BackupKeyService"]
SERVICE_NAME = _DESCRIPTOR.full_name


def _to_message(wrapped: backup_keys.WrappedBackupKey) -> pb.WrappedBackupKey:
    return pb.WrappedBackupKey(
        key_id=wrapped.key_id,
        stream_arn=wrapped.stream_arn,
        wrapping=wrapped.wrapping,
        ciphertext=wrapped.ciphertext,
    )


class _BackupKeyServicer:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def _master(self) -> MasterKeys:
        if self._ctx.master_keys is None:
            raise ShoalError(ErrorCode.KMS_INVALID_STATE, error_messages.ENCRYPTION_NOT_CONFIGURED)
        return self._ctx.master_keys

    async def generate(self, request: pb.GenerateBackupKeyRequest) -> pb.GenerateBackupKeyResponse:
        if not request.stream_name:
            raise ShoalError(ErrorCode.VALIDATION, error_messages.STREAM_NAME_EMPTY)
        stream = self._ctx.stream_for({"StreamName": request.stream_name})
        if stream.encryption_type != "KMS" or stream.key_id is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.backup_stream_not_encrypted(stream=stream.display_name),
            )
        material, wrapped = await asyncio.to_thread(
            backup_keys.new_backup_key, self._master(), stream.key_id, stream.arn
        )
        return pb.GenerateBackupKeyResponse(plaintext=material, wrapped=_to_message(wrapped))

    async def open(self, request: pb.OpenBackupKeyRequest) -> pb.OpenBackupKeyResponse:
        given = request.wrapped
        if not (given.key_id and given.stream_arn and given.wrapping and given.ciphertext):
            raise ShoalError(ErrorCode.VALIDATION, error_messages.BACKUP_KEY_INCOMPLETE)
        wrapped = backup_keys.WrappedBackupKey(
            key_id=given.key_id,
            stream_arn=given.stream_arn,
            wrapping=given.wrapping,
            ciphertext=given.ciphertext,
        )
        material = await asyncio.to_thread(backup_keys.open_backup_key, self._master(), wrapped)
        return pb.OpenBackupKeyResponse(plaintext=material)


def backup_key_handler(ctx: ServiceContext) -> grpc.GenericRpcHandler:
    """The generic handler serving every BackupKeyService RPC of this node."""
    servicer = _BackupKeyServicer(ctx)
    methods: dict[str, NativeMethod] = {
        "GenerateBackupKey": servicer.generate,
        "OpenBackupKey": servicer.open,
    }
    node_caller = Caller(region=ctx.config.region, account_id=ctx.config.account_id)
    return unary_service_handler(
        _DESCRIPTOR,
        pb,
        {
            name: namespaced_rpc("backup", name, method, caller=node_caller)
            for name, method in methods.items()
        },
    )
