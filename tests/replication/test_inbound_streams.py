"""A stopping node ends the Replicate streams its peers keep open to it with a status the peer
sees at once (gRPC server and channel on loopback, in-process).

Cancelling the handler's task instead (the old way) sent no status: the call stayed open until
the peer gave up or the server's grace period ended, 5 s of every SIGTERM of a node."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from broker.api.internal.v1 import internal_pb2 as pb
from broker.replication.messages import ReplicationMessage
from broker.rpc.channels import REPLICATION_SERVICE
from broker.rpc.transport import InboundStreams, replication_handler
from broker.types import NodeId


class _Endpoint:
    """Node b. The handler compares each envelope's addressee with `node_id`: reading it
    tells the test that the stream is being served."""

    def __init__(self) -> None:
        self.served = asyncio.Event()

    @property
    def node_id(self) -> NodeId:
        self.served.set()
        return NodeId("b")

    def deliver(self, message: ReplicationMessage) -> None:
        raise AssertionError("nothing is addressed to b")


async def test_closing_ends_open_replicate_streams_with_a_status() -> None:
    streams = InboundStreams()
    endpoint = _Endpoint()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (replication_handler(endpoint, inbound=streams),)  # type: ignore[arg-type]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def requests() -> Any:
        yield pb.ReplicationEnvelope(to_node="a")  # a stale address: skipped
        await asyncio.Event().wait()  # then nothing to send: the stream stays open

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            replicate = channel.stream_stream(
                f"/{REPLICATION_SERVICE}/Replicate",
                request_serializer=pb.ReplicationEnvelope.SerializeToString,
                response_deserializer=pb.ReplicationEnvelope.FromString,
            )
            call = replicate(requests())
            await asyncio.wait_for(endpoint.served.wait(), timeout=10)
            streams.close()
            # Bounded well below the 5 s grace: the status comes with the handler's return.
            assert await asyncio.wait_for(call.code(), timeout=3) == grpc.StatusCode.OK
            # A peer reconnecting meanwhile is answered at once, too.
            again = replicate(requests())
            assert await asyncio.wait_for(again.code(), timeout=3) == grpc.StatusCode.OK
    finally:
        await server.stop(None)
