"""What the replication driver needs of the network (the seam, STYLE B.3).

`Transport.send(envelope)` never blocks and may drop; inbound messages reach the driver through
the callback given to the adapter. Like Kafka's NetworkChannel it assumes neither ordering across
streams, nor delivery, nor replies: the replica core resends what is not acknowledged
(`replication_resend_ms`) and heartbeats its HW. The gRPC adapter is `broker/rpc/transport.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.log.records import AppendBatch
from broker.replication.messages import Envelope
from broker.types import NodeId, Offset, ShardUid


class Transport(Protocol):
    """Sends replication messages to other nodes; never blocks, may drop."""

    def send(self, envelope: Envelope) -> None: ...

    def send_all(self, envelopes: Sequence[Envelope]) -> None:
        """Sends `envelopes` now, in order: a driver turn's Appends or acknowledgements, on
        the critical path of a commit. Those to one peer leave together where the transport
        can (framed: one socket write per peer in this call, where `send`'s small frames wait
        for the end of the loop turn)."""
        ...

    async def fetch_batches(
        self,
        peer: NodeId,
        shard_uid: ShardUid,
        *,
        start_offset: Offset,
        end_offset: Offset,
        bytes_max: int,
    ) -> list[AppendBatch]:
        """The peer's committed batches of [start_offset, end_offset), dense from the start
        (a repair's source, 0002 "Corruption"). Raises `FetchRefused` when the peer holds no
        healthy committed copy of the start, or cannot be reached in time."""
        ...


class FetchRefused(Exception):
    """A peer could not give the batches asked for (see `Transport.fetch_batches`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SealAnswer:
    end_offset: Offset | None  # None: not sealed yet
