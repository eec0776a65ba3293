"""ShoalClient (blocking) and AsyncShoalClient (asyncio) for the KinesisService gRPC API.

`call("PutRecord", {"StreamName": ..., "Data": b"...", "PartitionKey": ...})` takes and returns
the same AWS-shaped dicts boto3 uses (blobs as bytes, timestamps as datetimes), so code can move
between boto3 and the native API without reshaping data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.message import Message

from broker import limits
from broker.api.kinesis.v1 import kinesis_pb2
from broker.gateway.codec import dict_to_message, message_to_dict
from broker.gateway.error_mapping import error_from_rpc_error

_SERVICE = kinesis_pb2.DESCRIPTOR.services_by_name["KinesisService"]
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
    ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
]
DEFAULT_TIMEOUT_S = 30.0


def _classes(operation: str) -> tuple[type[Message], type[Message]]:
    method = _SERVICE.methods_by_name.get(operation)
    if method is None:
        raise ValueError(f"unknown operation {operation}")
    database = symbol_database.Default()
    return (
        database.GetSymbol(method.input_type.full_name),
        database.GetSymbol(method.output_type.full_name),
    )


def _path(operation: str) -> str:
    return f"/{_SERVICE.full_name}/{operation}"


class ShoalClient:
    """A blocking client; one channel, safe to share between threads (gRPC channels are)."""

    def __init__(self, target: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._timeout_s = timeout_s

    def call(self, operation: str, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        input_class, output_class = _classes(operation)
        stub = self._channel.unary_unary(
            _path(operation),
            request_serializer=input_class.SerializeToString,
            response_deserializer=output_class.FromString,
        )
        try:
            response = stub(dict_to_message(request or {}, input_class), timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return message_to_dict(response, empty_lists=True)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ShoalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncShoalClient:
    """An asyncio client; create and use it on one event loop."""

    def __init__(self, target: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._timeout_s = timeout_s

    async def call(
        self, operation: str, request: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        input_class, output_class = _classes(operation)
        stub = self._channel.unary_unary(
            _path(operation),
            request_serializer=input_class.SerializeToString,
            response_deserializer=output_class.FromString,
        )
        try:
            response = await stub(
                dict_to_message(request or {}, input_class), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return message_to_dict(response, empty_lists=True)

    async def close(self) -> None:
        await self._channel.close()
