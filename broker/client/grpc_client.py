"""ShoalClient (blocking) and AsyncShoalClient (asyncio) for the KinesisService gRPC API.

`call("PutRecord", {"StreamName": ..., "Data": b"...", "PartitionKey": ...})` takes and returns
the same AWS-shaped dicts boto3 uses (blobs as bytes, timestamps as datetimes), so code can move
between boto3 and the native API without reshaping data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.message import Message

from broker import limits
from broker.api.kinesis.v1 import kinesis_pb2
from broker.iam.grpc_signing import SigningKey, call_metadata
from broker.tls import open_aio_channel, open_channel
from broker.wire.codec import dict_to_message, message_to_dict
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = kinesis_pb2.DESCRIPTOR.services_by_name["KinesisService"]
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
    ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
    # gRPC shares a process's connections to one address between channels by default, with
    # their reconnect backoff (up to 120 s): a new client of a node that restarted failed at
    # once with the old "connection refused" while an older client of the same process was
    # still backing off. Each client connects on its own and retries a restarted node soon.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", limits.rpc_reconnect_backoff_ms_min),
    ("grpc.min_reconnect_backoff_ms", limits.rpc_reconnect_backoff_ms_min),
    ("grpc.max_reconnect_backoff_ms", limits.client_reconnect_backoff_ms_max),
]
DEFAULT_TIMEOUT_S = 30.0
# A subscription lasts 5 minutes on the server (its own timer ends it normally); the client's
# deadline only guards against a server that never ends it.
SUBSCRIBE_TIMEOUT_S = 330.0


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

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        signing_key: SigningKey | None = None,
        region: str | None = None,
    ) -> None:
        """`credentials`: TLS to a node that serves it (`broker.tls.client_credentials`);
        None: plaintext. `signing_key`: sign every call with this access key (a node with
        access control wants it, unless a client certificate is mapped to a principal).
        `region`: the region whose streams the calls address, and sign for (None: the node's)."""
        self._channel = open_channel(target, credentials, _CHANNEL_OPTIONS)
        self._timeout_s = timeout_s
        self._signing_key = signing_key
        self._region = region

    def _metadata(self, operation: str) -> tuple[tuple[str, str], ...] | None:
        return call_metadata(_path(operation), region=self._region, key=self._signing_key)

    def call(self, operation: str, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        input_class, output_class = _classes(operation)
        stub = self._channel.unary_unary(
            _path(operation),
            request_serializer=input_class.SerializeToString,
            response_deserializer=output_class.FromString,
        )
        try:
            response = stub(
                dict_to_message(request or {}, input_class),
                timeout=self._timeout_s,
                metadata=self._metadata(operation),
            )
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return message_to_dict(response, empty_lists=True)

    def subscribe_to_shard(
        self, request: Mapping[str, Any], *, timeout_s: float = SUBSCRIBE_TIMEOUT_S
    ) -> EventStream:
        """SubscribeToShard: the events, as boto3's `EventStream` yields them
        (`{"SubscribeToShardEvent": {...}}`), until the subscription ends. Errors (before or
        during the stream) raise ShoalError; `close()` ends it early."""
        input_class, output_class = _classes("SubscribeToShard")
        stub = self._channel.unary_stream(
            _path("SubscribeToShard"),
            request_serializer=input_class.SerializeToString,
            response_deserializer=output_class.FromString,
        )
        return EventStream(
            stub(
                dict_to_message(request, input_class),
                timeout=timeout_s,
                metadata=self._metadata("SubscribeToShard"),
            )
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ShoalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncShoalClient:
    """An asyncio client; create and use it on one event loop."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        signing_key: SigningKey | None = None,
        region: str | None = None,
    ) -> None:
        self._channel = open_aio_channel(target, credentials, _CHANNEL_OPTIONS)
        self._timeout_s = timeout_s
        self._signing_key = signing_key
        self._region = region

    def _metadata(self, operation: str) -> tuple[tuple[str, str], ...] | None:
        return call_metadata(_path(operation), region=self._region, key=self._signing_key)

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
                dict_to_message(request or {}, input_class),
                timeout=self._timeout_s,
                metadata=self._metadata(operation),
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return message_to_dict(response, empty_lists=True)

    def subscribe_to_shard(
        self, request: Mapping[str, Any], *, timeout_s: float = SUBSCRIBE_TIMEOUT_S
    ) -> AsyncEventStream:
        """SubscribeToShard, as `ShoalClient.subscribe_to_shard` (async iteration)."""
        input_class, output_class = _classes("SubscribeToShard")
        stub = self._channel.unary_stream(
            _path("SubscribeToShard"),
            request_serializer=input_class.SerializeToString,
            response_deserializer=output_class.FromString,
        )
        return AsyncEventStream(
            stub(
                dict_to_message(request, input_class),
                timeout=timeout_s,
                metadata=self._metadata("SubscribeToShard"),
            )
        )

    async def close(self) -> None:
        await self._channel.close()


class EventStream:
    """A subscription's events (blocking iteration); errors raise ShoalError."""

    def __init__(self, call: Any) -> None:
        self._call = call  # grpc's response iterator, also a grpc.Call (cancel)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for message in self._call:
                yield message_to_dict(message, empty_lists=True)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                return  # close() was called
            raise error_from_rpc_error(exc) from exc

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncEventStream:
    """A subscription's events: `async for`, or `next_event` one at a time (not both on one
    stream: gRPC's reader and iterator exclude each other). Errors raise ShoalError."""

    def __init__(self, call: Any) -> None:
        self._call = call  # grpc.aio.UnaryStreamCall

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for message in self._call:
                yield message_to_dict(message, empty_lists=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                return  # aclose() was called
            raise error_from_rpc_error(exc) from exc

    async def next_event(self, *, timeout_s: float) -> dict[str, Any] | None:
        """The next event within `timeout_s`; None at the end. Past the timeout it raises
        TimeoutError and the read is abandoned: close the stream then."""
        async with asyncio.timeout(timeout_s):
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.CANCELLED:
                    return None
                raise error_from_rpc_error(exc) from exc
        if message is grpc.aio.EOF:
            return None
        return message_to_dict(message, empty_lists=True)

    async def aclose(self) -> None:
        self._call.cancel()
