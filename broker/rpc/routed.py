"""The node's replication `Transport` (replication/network.py): each message goes to its peer
over the framed port when both nodes have one (this node's `replication_port` is set and the
peer advertised its address in its registration) and the connection to it is up, over the gRPC
Replicate stream otherwise, so a peer on an older release, or one with the port off, is reached
as before (rolling upgrades), and so is one whose framed port cannot be reached (a firewall
that lets only the gRPC port through, a connection being re-established): the framed side
keeps dialling it in the background (with its backoff) and takes over once connected.

The choice is made per message from the current metadata image, so a peer that re-registers
with or without the port moves to the other path at once. Neither path promises order or
delivery across the switch, and none is needed (the replica core resends). Repair reads
(`fetch_batches`) stay unary gRPC calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from broker.log.records import AppendBatch
from broker.replication.messages import Envelope
from broker.rpc.framed import FramedTransport
from broker.rpc.transport import GrpcTransport, TransportStatistics
from broker.types import NodeId, Offset, ShardUid


class RoutedTransport:
    """`Transport` over `framed` for the peers `framed_address` knows, `grpc` for the rest."""

    def __init__(
        self,
        *,
        grpc: GrpcTransport,
        framed: FramedTransport | None,
        framed_address: Callable[[NodeId], str | None],
    ) -> None:
        self._grpc = grpc
        self._framed = framed
        self._framed_address = framed_address

    def send(self, envelope: Envelope) -> None:
        framed = self._framed
        if framed is not None and self._framed_address(envelope.to):
            if framed.connected(envelope.to):
                framed.send(envelope)
                return
            framed.dial(envelope.to)  # gRPC carries this one; framed from the connection on
        self._grpc.send(envelope)

    def send_all(self, envelopes: Sequence[Envelope]) -> None:
        framed = self._framed
        if framed is None:
            self._grpc.send_all(envelopes)
            return
        by_frames: list[Envelope] = []
        for envelope in envelopes:
            if self._framed_address(envelope.to) and framed.connected(envelope.to):
                by_frames.append(envelope)
            else:
                self.send(envelope)  # gRPC, and the framed side dials meanwhile
        framed.send_all(by_frames)

    async def fetch_batches(
        self,
        peer: NodeId,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        bytes_max: int,
    ) -> list[AppendBatch]:
        return await self._grpc.fetch_batches(
            peer, shard_uid, start_offset=start_offset, end_offset=end_offset, bytes_max=bytes_max
        )

    def statistics(self) -> tuple[TransportStatistics, TransportStatistics | None]:
        """(gRPC, framed) counters."""
        return self._grpc.statistics(), None if self._framed is None else self._framed.statistics()

    async def run(self) -> None:
        """Runs both senders. Infinite on purpose: cancelled at node stop."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._grpc.run(), name="replication-grpc")
            if self._framed is not None:
                group.create_task(self._framed.run(), name="replication-framed")
