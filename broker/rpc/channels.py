"""What every internal RPC shares: the service names, the per-address channel pool, the
channel and server options, and the unary call/handler helpers.

The channels are shared by the replication stream and every unary call to a node (Prepare,
Seal, ReplicaStatus, FetchBatches, Heartbeat, ShardAppend/ShardRead, the admin calls); gRPC
failures of a unary call become `ShoalError(UNAVAILABLE)` at this one boundary (STYLE B.8) or,
for the forwarder, routing refusals (`refusals.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.tls import PeerCredentials, open_aio_channel

REPLICATION_SERVICE = "broker.api.internal.v1.ReplicationService"
NODE_SERVICE = "broker.api.internal.v1.NodeService"
CLUSTER_ADMIN_SERVICE = "broker.api.internal.v1.ClusterAdminService"

# Client side: keepalive pings and quick reconnects (the bounds and why: limits.rpc_*).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
    ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
    ("grpc.keepalive_time_ms", limits.rpc_keepalive_ms),
    ("grpc.keepalive_timeout_ms", limits.rpc_keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", limits.rpc_reconnect_backoff_ms_min),
    ("grpc.max_reconnect_backoff_ms", limits.rpc_reconnect_backoff_ms_max),
    ("grpc.min_reconnect_backoff_ms", limits.rpc_reconnect_backoff_ms_min),
]
# Server side: accept those pings (the default policy answers them with GOAWAY).
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", limits.rpc_ping_interval_ms_min),
    ("grpc.http2.max_ping_strikes", 0),
]


class Channels:
    """One grpc.aio channel per peer address, shared by the stream and the unary RPCs.

    With `credentials` (broker/tls.py) the channels are mutual TLS; when the certificate files
    change, every channel is replaced by one with the new credentials and the old ones are
    closed after `limits.rpc_channel_retire_grace_ms` (calls on them end; the stream reconnects
    on a new one)."""

    def __init__(
        self,
        *,
        credentials: PeerCredentials | None = None,
        interceptors: tuple[grpc.aio.ClientInterceptor, ...] = (),
    ) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials = credentials
        self._interceptors = interceptors  # the node signature, with access control on
        self._generation = 0
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, address: str) -> grpc.aio.Channel:
        credentials = None
        if self._credentials is not None:
            generation, credentials = self._credentials.current()
            if generation != self._generation:
                self._generation = generation
                self._retire()
        channel = self._channels.get(address)
        if channel is None:
            channel = open_aio_channel(address, credentials, CHANNEL_OPTIONS, self._interceptors)
            self._channels[address] = channel
        return channel

    def _retire(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            task = asyncio.get_running_loop().create_task(
                channel.close(grace=limits.rpc_channel_retire_grace_ms / 1000)
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextmanager
def map_rpc_errors(what: str) -> Iterator[None]:
    """A failed internal RPC as ShoalError(UNAVAILABLE); the cause keeps the gRPC details."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise ShoalError(
            ErrorCode.UNAVAILABLE,
            error_messages.node_rpc_failed(what=what, code=exc.code(), details=exc.details()),
        ) from exc


def unary(channel: grpc.aio.Channel, service: str, method: str, response: Any) -> Any:
    """A unary call stub to `service`.`method` on `channel` (the caller sets its deadline)."""
    return channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response.FromString,
    )


def unary_handler(
    handler: Any, request_class: Any, response_class: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    """A unary gRPC server method of the internal API (shared by every internal servicer)."""
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )
