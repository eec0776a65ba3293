"""ShoalError -> wire errors, for both front doors. No other module builds wire errors.

gRPC: the status code comes from the error table; a `google.rpc.Status` in the trailing
metadata (`grpc-status-details-bin`, the gRPC rich error model) carries an `ErrorInfo` whose
`reason` is the Kinesis error name, so a client can branch on ResourceNotFoundException and not
only on NOT_FOUND. `broker/client/` decodes it back with `error_from_rpc_error`.

AWS JSON/CBOR: the HTTP status from the error table and a document `{"__type": name,
"message": text}` (botocore reads `__type`, and `message` or `Message`), which
`aws_codec.encode_body` writes in the request's format; the name also travels in the
`x-amzn-ErrorType` header.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from broker.errors import ErrorCode, ShoalError, error_code_by_name

log = logging.getLogger(__name__)

ERROR_DOMAIN = "kinesis.shoal.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"  # the rich error model's trailer


def grpc_status_code(code: ErrorCode) -> grpc.StatusCode:
    status: grpc.StatusCode = grpc.StatusCode[code.spec.grpc_status]
    return status


def to_grpc_status(error: ShoalError) -> grpc.Status:
    """The rich gRPC status for a Kinesis error."""
    info = error_details_pb2.ErrorInfo(reason=error.code.kinesis_name, domain=ERROR_DOMAIN)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc_status_code(error.code).value[0],
        message=_bounded(error.message),
        details=[detail],
    )
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


# gRPC refuses trailing metadata over 16 KiB (the status travels in it twice: as
# grpc-message and inside grpc-status-details-bin); an echoed request value must not make the
# error itself fail.
_GRPC_MESSAGE_CHARS_MAX = 4_096


def _bounded(message: str) -> str:
    if len(message) <= _GRPC_MESSAGE_CHARS_MAX:
        return message
    return message[: _GRPC_MESSAGE_CHARS_MAX - 3] + "..."


def error_from_rpc_error(exc: grpc.RpcError) -> ShoalError:
    """Decode a Kinesis error from a failed call; anything else becomes INTERNAL_FAILURE."""
    call: Any = exc  # every failed call is also a grpc.Call (sync) or an AioRpcError (aio)
    code = call.code()
    details = str(call.details())
    metadata: Any = call.trailing_metadata() or ()
    for key, value in metadata:
        if key != STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
                error_code = error_code_by_name(info.reason)
                if error_code is not None:
                    return ShoalError(error_code, status.message)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ShoalError(ErrorCode.UNAVAILABLE, details)
    return ShoalError(ErrorCode.INTERNAL_FAILURE, details)


# AWS's JSON protocol spells the key `Message` in the errors its deserializer raises and
# `message` in the others (botocore reads either).
_CAPITALISED_MESSAGE = frozenset({ErrorCode.SERIALIZATION})


def to_aws_error(error: ShoalError) -> tuple[int, dict[str, str]]:
    """The HTTP status and the error document of a Kinesis error on the AWS wire; an error
    AWS sends without a message (an empty `message`) has only `__type`."""
    document = {"__type": error.code.kinesis_name}
    if error.message:
        key = "Message" if error.code in _CAPITALISED_MESSAGE else "message"
        document[key] = error.message
    return error.code.spec.http_status, document


NativeMethod = Callable[[Any], Awaitable[Message]]


def native_rpc(
    service: str, name: str, method: NativeMethod
) -> Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
    """One unary RPC of a native (non-Kinesis) service: a ShoalError becomes the rich gRPC
    status, anything else INTERNAL_FAILURE (logged with the service and operation)."""

    async def handle(message: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            return await method(message)
        except ShoalError as error:
            await context.abort_with_status(to_grpc_status(error))
        except Exception:
            log.exception("native_operation_failed", extra={"service": service, "operation": name})
            await context.abort_with_status(to_grpc_status(ShoalError(ErrorCode.INTERNAL_FAILURE)))
        raise AssertionError("abort_with_status returns only by raising")

    return handle
