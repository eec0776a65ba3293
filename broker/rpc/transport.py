"""The gRPC adapter of the node-to-node replication transport (`replication/network.py`).

`GrpcTransport` keeps one long-lived `ReplicationService.Replicate` stream per peer node, over
a channel from the shared `Channels` pool (the unary RPCs to that node use the same channel).
Each peer has a bounded send queue (`limits.replication_send_queue_max`): when a peer is slow,
paused or down the queue fills and further messages are dropped, never buffered without bound
and never blocking the driver. A broken stream is reopened with exponential backoff
(`replication_reconnect_ms_min` .. `_max`); messages queued meanwhile go out on the new stream.
Keepalive pings detect a silently dead peer (kill -9 of a host, SIGSTOP) within seconds.

`replication_handler` serves the other side: the Replicate stream (decoded messages go to the
endpoint's `deliver`) and the unary Prepare / Seal / ReplicaStatus RPCs.

Lifecycle: `await transport.run()` inside the node's TaskGroup (infinite on purpose: it ends
when cancelled at node stop); `Channels.close()` after that. Loop-bound; not thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from broker import limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import AppendBatch
from broker.replication.messages import Envelope, Promise, ReplicationMessage
from broker.replication.network import FetchRefused, SealAnswer
from broker.replication.replica import ReplicaStatistics
from broker.rpc.channels import REPLICATION_SERVICE, Channels, unary, unary_handler
from broker.rpc.replication_codec import (
    CorruptBatchError,
    batch_to_proto,
    batches_from_proto,
    envelope_from_proto,
    envelope_to_proto,
)
from broker.types import NodeId, Offset, ShardUid

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportStatistics:
    sent: int
    dropped: int  # send queue full, or no address known for the peer
    received: int
    reconnects: int


class _Peer:
    """The bounded send queue towards one node, and the event that wakes its stream."""

    def __init__(self, node_id: NodeId, queue_max: int) -> None:
        self.node_id = node_id
        self.queue: collections.deque[Envelope] = collections.deque()
        self.queue_max = queue_max
        self.ready = asyncio.Event()


class GrpcTransport:
    """`Transport` over one `Replicate` stream per peer (module docstring). Node view."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        channels: Channels,
        resolve: Callable[[NodeId], str | None],
        queue_max: int = limits.replication_send_queue_max,
    ) -> None:
        assert queue_max >= 1
        self._node_id = node_id
        self._channels = channels
        self._resolve = resolve
        self._queue_max = queue_max
        self._peers: dict[NodeId, _Peer] = {}
        self._new_peers: asyncio.Queue[_Peer] = asyncio.Queue()
        self._sent = 0
        self._dropped = 0
        self._reconnects = 0
        self.received = 0

    def send(self, envelope: Envelope) -> None:
        assert envelope.to != self._node_id, "a message to ourselves"
        peer = self._peers.get(envelope.to)
        if peer is None:
            peer = self._peers[envelope.to] = _Peer(envelope.to, self._queue_max)
            self._new_peers.put_nowait(peer)
        if len(peer.queue) >= peer.queue_max:
            self._dropped += 1  # the replica's resend timer recovers (module docstring)
            return
        peer.queue.append(envelope)
        peer.ready.set()

    def send_all(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.send(envelope)

    async def fetch_batches(
        self,
        peer: NodeId,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        bytes_max: int,
    ) -> list[AppendBatch]:
        address = self._resolve(peer)
        if address is None:
            raise FetchRefused(f"no address for {peer}")
        call = unary(
            self._channels.get(address),
            REPLICATION_SERVICE,
            "FetchBatches",
            pb.FetchBatchesResponse,
        )
        request = pb.FetchBatchesRequest(
            shard_uid=shard_uid,
            start_offset=start_offset,
            end_offset=end_offset,
            bytes_max=bytes_max,
        )
        try:
            answer = await call(request, timeout=limits.replication_fetch_timeout_ms / 1000)
        except grpc.aio.AioRpcError as exc:
            raise FetchRefused(f"{peer}: {exc.code()} {exc.details()}") from exc
        try:
            return list(batches_from_proto(shard_uid, answer.batches))
        except CorruptBatchError as error:
            raise FetchRefused(f"{peer}: {error}") from error

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            sent=self._sent,
            dropped=self._dropped,
            received=self.received,
            reconnects=self._reconnects,
        )

    async def run(self) -> None:
        """Owns one stream task per peer. Infinite on purpose: cancelled at node stop."""
        async with asyncio.TaskGroup() as group:
            while True:
                peer = await self._new_peers.get()
                group.create_task(self._run_peer(peer), name=f"replicate-to-{peer.node_id}")

    async def _run_peer(self, peer: _Peer) -> None:
        backoff_ms = limits.replication_reconnect_ms_min
        while True:  # infinite on purpose: one stream after another until cancelled
            await peer.ready.wait()
            address = self._resolve(peer.node_id)
            if address is None:
                self._dropped += len(peer.queue)
                peer.queue.clear()
                peer.ready.clear()
                continue
            stub = self._channels.get(address).stream_stream(
                f"/{REPLICATION_SERVICE}/Replicate",
                request_serializer=pb.ReplicationEnvelope.SerializeToString,
                response_deserializer=pb.ReplicationEnvelope.FromString,
            )
            call = stub(self._outgoing(peer))
            try:
                async for _ in call:  # the receiver answers nothing on this stream
                    pass
                backoff_ms = limits.replication_reconnect_ms_min
            except grpc.aio.AioRpcError as error:
                log.info(
                    "replication_stream_lost",
                    extra={"peer": peer.node_id, "code": str(error.code()), "retry_ms": backoff_ms},
                )
            finally:
                call.cancel()
            self._reconnects += 1
            await asyncio.sleep(backoff_ms / 1000)  # backoff between reconnects, not a sync
            backoff_ms = min(backoff_ms * 2, limits.replication_reconnect_ms_max)

    async def _outgoing(self, peer: _Peer) -> AsyncIterator[pb.ReplicationEnvelope]:
        while True:  # infinite on purpose: the stream lives until it breaks or is cancelled
            if not peer.queue:
                peer.ready.clear()
                await peer.ready.wait()
                continue
            envelope = peer.queue.popleft()
            self._sent += 1
            yield envelope_to_proto(envelope, sender=self._node_id)


# --- The receiving side ----------------------------------------------------------------------


class ReplicationEndpoint(Protocol):
    """What the ReplicationService handlers need from the node's replication driver."""

    def deliver(self, message: ReplicationMessage) -> None:
        """Queue an inbound Append/AppendAck (bounded; dropped when full)."""
        ...

    async def prepare(self, shard_uid: ShardUid, epoch: int) -> Promise | None:
        """The durable promise, or None when this node holds no replica of the shard."""
        ...

    async def seal(self, shard_uid: ShardUid, epoch: int, *, wait_ms: int) -> SealAnswer: ...

    def replica_statistics(self, shard_uids: frozenset[ShardUid]) -> list[ReplicaStatistics]:
        """Snapshots of the local replicas (all of them for an empty set)."""
        ...

    async def serve_fetch(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> list[AppendBatch]:
        """This node's committed batches for another replica's repair; raises FetchRefused
        when it holds no healthy committed copy of `start_offset`."""
        ...

    def repair_pending(self, shard_uid: ShardUid) -> bool:
        """Corruption found in the local replica and not repaired yet."""
        ...

    @property
    def node_id(self) -> NodeId: ...


class InboundStreams:
    """The Replicate streams other nodes keep open to this one. They never end by themselves,
    so a stopping node ends them (`close`) before the gRPC server's grace period, which would
    otherwise wait the whole grace for them.

    Each stream's handler returns when they close, so gRPC ends the call with a status the
    peer sees at once. Cancelling the handler's task instead would not: gRPC then sends no
    status, and the call stays open until the peer gives up or the grace period ends (5 s of
    every SIGTERM). Peers reconnect with backoff and are refused until this node is back."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def serve(self, receiving: Coroutine[Any, Any, None]) -> None:
        """Runs one stream's `receiving` until it ends (its exception propagates) or the
        streams close (it is cancelled and this returns normally)."""
        receiver = asyncio.ensure_future(receiving)
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait((receiver, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiver.cancel()
            closing.cancel()
            await asyncio.gather(receiver, closing, return_exceptions=True)
        if not receiver.cancelled():
            receiver.result()

    def close(self) -> None:
        self._closed.set()


def replication_handler(
    endpoint: ReplicationEndpoint,
    *,
    inbound: InboundStreams | None = None,
    on_received: Callable[[], None] | None = None,
) -> grpc.GenericRpcHandler:
    """The ReplicationService of this node, served on the node's gRPC port."""
    streams = inbound if inbound is not None else InboundStreams()

    async def replicate(
        requests: AsyncIterator[pb.ReplicationEnvelope], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        if not streams.closed:
            await streams.serve(_receive(requests))

    async def _receive(requests: AsyncIterator[pb.ReplicationEnvelope]) -> None:
        async for envelope in requests:
            if envelope.to_node != endpoint.node_id:
                continue  # a stale address: that node moved; its sender re-resolves
            try:
                message = envelope_from_proto(envelope)
            except CorruptBatchError as error:
                # Damaged on the way: dropped like a lost message (the leader resends).
                log.error("replication_batch_corrupt", extra={"error": str(error)})
                continue
            if message is not None:
                if on_received is not None:
                    on_received()
                endpoint.deliver(message)

    async def prepare(
        request: pb.PrepareRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PrepareResponse:
        promise = await endpoint.prepare(ShardUid(request.shard_uid), request.epoch)
        if promise is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no replica of this shard here")
            raise AssertionError("abort raises")
        return pb.PrepareResponse(
            shard_uid=promise.shard_uid,
            epoch=promise.epoch,
            sender=promise.sender,
            ok=promise.ok,
            last_epoch=promise.last_epoch,
            log_end=promise.log_end,
            promised_epoch=promise.promised_epoch,
        )

    async def seal(
        request: pb.SealRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SealResponse:
        wait_ms = min(request.wait_ms, limits.replication_seal_wait_ms_max)
        answer = await endpoint.seal(ShardUid(request.shard_uid), request.epoch, wait_ms=wait_ms)
        if answer.end_offset is None:
            return pb.SealResponse(sealed=False)
        return pb.SealResponse(sealed=True, end_offset=answer.end_offset)

    async def fetch_batches(
        request: pb.FetchBatchesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchBatchesResponse:
        try:
            batches = await endpoint.serve_fetch(
                ShardUid(request.shard_uid),
                start_offset=Offset(request.start_offset),
                end_offset=Offset(request.end_offset),
                bytes_max=max(1, min(request.bytes_max, limits.replication_read_bytes_max)),
            )
        except FetchRefused as refused:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(refused))
            raise AssertionError("abort raises") from refused
        return pb.FetchBatchesResponse(batches=[batch_to_proto(b) for b in batches])

    async def replica_status(
        request: pb.ReplicaStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReplicaStatusResponse:
        uids = frozenset(ShardUid(uid) for uid in request.shard_uids)
        return pb.ReplicaStatusResponse(
            node_id=endpoint.node_id,
            replicas=[
                replica_state(s, damaged=endpoint.repair_pending(s.shard_uid))
                for s in endpoint.replica_statistics(uids)
            ],
        )

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Replicate": grpc.stream_stream_rpc_method_handler(
            replicate,
            request_deserializer=pb.ReplicationEnvelope.FromString,
            response_serializer=pb.ReplicationEnvelope.SerializeToString,
        ),
        "Prepare": unary_handler(prepare, pb.PrepareRequest, pb.PrepareResponse),
        "FetchBatches": unary_handler(
            fetch_batches, pb.FetchBatchesRequest, pb.FetchBatchesResponse
        ),
        "Seal": unary_handler(seal, pb.SealRequest, pb.SealResponse),
        "ReplicaStatus": unary_handler(
            replica_status, pb.ReplicaStatusRequest, pb.ReplicaStatusResponse
        ),
    }
    return grpc.method_handlers_generic_handler(REPLICATION_SERVICE, handlers)


def replica_state(statistics: ReplicaStatistics, *, damaged: bool) -> pb.ReplicaState:
    return pb.ReplicaState(
        shard_uid=statistics.shard_uid,
        role=statistics.role.value,
        epoch=statistics.epoch,
        leader=statistics.leader or "",
        promised_epoch=statistics.promised_epoch,
        log_start=statistics.log_start,
        log_end=statistics.durable_end,
        high_watermark=statistics.high_watermark,
        last_epoch=statistics.durable_last_epoch,  # of the log below log_end: both durable
        sealed=statistics.sealing,
        recovering=statistics.recovering,
        damaged=damaged,
    )
