"""Forwarded appends over the framed replication connection (broker/rpc/frames.py step 5,
broker/rpc/framed.py, broker/rpc/forwarder.py), in process on loopback: a real listener and a
real dialler.

Goal: a forwarded append rides the connection and gets its own answer (call ids, several in
flight answered in any order); the listener's refusals and Kinesis errors come back as the
same exceptions a gRPC ShardAppend gives; a listener that does not serve them (an older
release: an ACCEPT without the flag) gets none, and the forwarder uses gRPC instead, nothing
sent; a connection lost or a deadline passed before the answer is an unknown outcome, and a
late answer is ignored."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from broker.api.internal.v1 import internal_pb2 as pb
from broker.clock import SystemClock
from broker.errors import ErrorCode, ShoalError
from broker.log.records import NewRecords, new_record
from broker.replication.messages import ReplicationMessage
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.rpc import frames
from broker.rpc.channels import Channels
from broker.rpc.forwarder import GrpcShardForwarder
from broker.rpc.framed import AppendServer, FramedListener, FramedSettings, FramedTransport
from broker.rpc.frames import FrameKind, encode_frame
from broker.rpc.refusals import (
    error_from_wire_status,
    refusal_from_rpc_error,
    refusal_status,
    status_to_wire,
)
from broker.rpc.shard_codec import columns_of, hash_keys_from_wire, put_columns
from broker.service.shards import AppendResult
from broker.types import NodeId, ShardUid, StreamUid
from broker.wire.error_mapping import to_grpc_status

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")
SHARD = ShardUid(3)
PASSWORD = "cluster-secret"
CLOCK = SystemClock()
DEADLINE_S = 10
B_ADDRESS = "127.0.0.1:1"  # B's gRPC address: never dialled, every append here goes framed


class _Inbox:
    node_id = B

    def __init__(self) -> None:
        self.delivered: list[ReplicationMessage] = []

    def deliver(self, message: ReplicationMessage) -> None:
        self.delivered.append(message)


class _Leader:
    """The listener's side: answers each append with the response or status it is told, once
    released (so a test picks the order answers leave in)."""

    def __init__(self) -> None:
        self.requests: list[pb.ShardAppendRequest] = []
        self.answers: dict[int, pb.ShardAppendResponse | grpc.Status] = {}  # by shard uid
        self.release: dict[int, asyncio.Event] = {}
        self.arrived = asyncio.Event()

    async def serve(self, request: pb.ShardAppendRequest) -> pb.ShardAppendResponse | grpc.Status:
        self.requests.append(request)
        self.arrived.set()
        gate = self.release.get(request.shard_uid)
        if gate is not None:
            await gate.wait()
        return self.answers.get(request.shard_uid) or pb.ShardAppendResponse(
            first_offset=request.shard_uid * 100, arrival_ms=5
        )


@contextlib.asynccontextmanager
async def _pair(
    appends: AppendServer | None,
) -> AsyncIterator[tuple[FramedListener, FramedTransport]]:
    listener = FramedListener(
        _Inbox(), settings=FramedSettings(raft_password=PASSWORD), clock=CLOCK, appends=appends
    )
    bound = await listener.start("127.0.0.1", 0)
    transport = FramedTransport(
        node_id=A,
        resolve=lambda node: f"127.0.0.1:{bound}" if node == B else None,
        settings=FramedSettings(raft_password=PASSWORD),
        clock=CLOCK,
    )
    runner = asyncio.create_task(transport.run())
    try:
        transport.dial(B)
        async with asyncio.timeout(DEADLINE_S):
            while True:  # polled: the transport has no event for it
                if transport.connected(B):
                    break
                await asyncio.sleep(0.01)
        yield listener, transport
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await listener.close()


def _request(shard: int, records: int = 2) -> pb.ShardAppendRequest:
    return pb.ShardAppendRequest(
        stream_uid=1,
        shard_uid=shard,
        epoch=4,
        records=[pb.Record(partition_key=f"k{i}", data=b"x" * 10) for i in range(records)],
    )


def _forwarder(transport: FramedTransport) -> GrpcShardForwarder:
    return GrpcShardForwarder(
        Channels(credentials=None),
        framed=transport,
        node_at=lambda address: B if address == B_ADDRESS else None,
        timeout_ms=2_000,
    )


async def _forward(forwarder: GrpcShardForwarder) -> AppendResult:
    return await forwarder.append(
        B_ADDRESS,
        stream_uid=StreamUid(1),
        shard_uid=SHARD,
        epoch=4,
        records=NewRecords.of((new_record("k", b"data"),), None),
    )


async def test_appends_in_flight_each_get_their_own_answer() -> None:
    leader = _Leader()
    async with _pair(leader.serve) as (_, transport):
        for shard in (1, 2, 3):
            leader.release[shard] = asyncio.Event()
        calls = [
            asyncio.ensure_future(transport.append(B, _request(s), timeout_s=DEADLINE_S))
            for s in (1, 2, 3)
        ]
        async with asyncio.timeout(DEADLINE_S):
            while len(leader.requests) < 3:
                leader.arrived.clear()
                await leader.arrived.wait()
        for shard in (3, 1, 2):  # answered out of order
            leader.release[shard].set()
        answers = await asyncio.gather(*calls)
        assert [a.response.first_offset if a else None for a in answers] == [100, 200, 300]
        assert [r.shard_uid for r in leader.requests] == [1, 2, 3]
        assert leader.requests[0] == _request(1)
        assert transport.appends == 3


async def test_a_refusal_or_an_error_comes_back_as_a_grpc_call_would_give_it() -> None:
    refusal = ShardRefusedError(RefusalReason.NOT_SHARD_LEADER, shard_uid=SHARD, leader=C, epoch=9)
    throttled = ShoalError(ErrorCode.THROUGHPUT_EXCEEDED, "Rate exceeded for shard")
    leader = _Leader()
    async with _pair(leader.serve) as (_, transport):
        forwarder = _forwarder(transport)
        leader.answers[SHARD] = refusal_status(refusal)
        with pytest.raises(ShardRefusedError) as refused:
            await _forward(forwarder)
        assert (refused.value.reason, refused.value.leader, refused.value.epoch) == (
            RefusalReason.NOT_SHARD_LEADER,
            C,
            9,
        )
        leader.answers[SHARD] = to_grpc_status(throttled)
        with pytest.raises(ShoalError) as failed:
            await _forward(forwarder)
        assert (failed.value.code, failed.value.message) == (throttled.code, throttled.message)
        leader.answers[SHARD] = pb.ShardAppendResponse(first_offset=41, arrival_ms=7, throttled=[0])
        result = await _forward(forwarder)
        assert (result.first_offset, result.arrival_ms, result.throttled) == (41, 7, (0,))


@pytest.mark.parametrize(
    "status",
    [
        refusal_status(ShardRefusedError(RefusalReason.SHARD_SEALED, shard_uid=SHARD, epoch=2)),
        to_grpc_status(ShoalError(ErrorCode.RESOURCE_NOT_FOUND, "Stream s not found")),
        to_grpc_status(ShoalError(ErrorCode.UNAVAILABLE, "writer stopping")),
    ],
)
def test_a_status_on_the_framed_wire_decodes_as_the_failed_grpc_call(status: grpc.Status) -> None:
    failed_call = grpc.aio.AioRpcError(
        status.code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )
    via_grpc = refusal_from_rpc_error(failed_call, SHARD)
    via_frames = error_from_wire_status(status_to_wire(status), SHARD)
    assert type(via_frames) is type(via_grpc)
    assert str(via_frames) == str(via_grpc)


async def test_a_listener_that_does_not_serve_appends_gets_none() -> None:
    """An older listener's ACCEPT (no flag): nothing is sent, the caller uses gRPC, and the
    connection carries envelopes as before."""
    async with _pair(None) as (listener, transport):
        assert await transport.append(B, _request(1), timeout_s=DEADLINE_S) is None
        assert transport.appends == 0
        assert transport.connected(B)
        assert listener.connections and all(c.admitted for c in listener.connections)


async def test_an_append_without_its_answer_is_an_unknown_outcome() -> None:
    leader = _Leader()
    async with _pair(leader.serve) as (listener, transport):
        leader.release[SHARD] = asyncio.Event()  # never answered
        forwarder = GrpcShardForwarder(
            Channels(credentials=None), framed=transport, node_at=lambda _: B, timeout_ms=200
        )
        with pytest.raises(ShardRefusedError) as late:
            await _forward(forwarder)
        assert late.value.reason is RefusalReason.OUTCOME_UNKNOWN
        leader.release[SHARD].set()  # the late answer arrives and is ignored
        leader.release[SHARD] = asyncio.Event()
        call = asyncio.ensure_future(_forward(forwarder))
        async with asyncio.timeout(DEADLINE_S):
            while len(leader.requests) < 2:
                leader.arrived.clear()
                await leader.arrived.wait()
        for connection in list(listener.connections):
            connection.abort()  # lost before the answer
        with pytest.raises(ShardRefusedError) as lost:
            await call
        assert lost.value.reason is RefusalReason.OUTCOME_UNKNOWN


async def test_an_append_frame_to_a_listener_without_the_flag_is_refused() -> None:
    """What an older listener does with an APPEND (an unknown kind there; out of turn here):
    it closes the connection, which is why the dialler sends one only after the flag."""
    async with _pair(None) as (listener, _):
        port = listener.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        header = await reader.readexactly(frames.HEADER.size)
        length, _kind = frames.HEADER.unpack(header)
        challenge = await reader.readexactly(length)
        hello = frames.make_hello(
            challenge=challenge,
            sender=A,
            receiver=B,
            raft_password=PASSWORD,
            wall_ms=CLOCK.wall_ms(),
        )
        writer.write(encode_frame(FrameKind.HELLO, frames.encode_hello(hello)))
        assert await reader.readexactly(frames.HEADER.size) == encode_frame(FrameKind.ACCEPT)
        call = pb.FramedAppend(call_id=1, request=_request(1).SerializeToString())
        writer.write(encode_frame(FrameKind.APPEND, call.SerializeToString()))
        async with asyncio.timeout(DEADLINE_S):
            assert await reader.read() == b""  # closed, no answer
        writer.close()


async def test_a_forwarded_append_carries_its_records_as_columns() -> None:
    leader = _Leader()
    records = NewRecords.of(
        (new_record("k", b"data"), new_record("ключ-é", b""), new_record("k", b"\x00" * 3000)),
        (1, 2**128 - 1, 7),
    )
    async with _pair(leader.serve) as (_, transport):
        await _forwarder(transport).append(
            B_ADDRESS, stream_uid=StreamUid(1), shard_uid=SHARD, epoch=4, records=records
        )
    (request,) = leader.requests
    assert not request.records  # no message per record
    keys, keys_utf8, datas = columns_of(request)
    assert (keys, keys_utf8, datas) == (
        list(records.partition_keys),
        list(records.partition_keys_utf8),
        list(records.datas),
    )
    assert hash_keys_from_wire(request.hash_keys, 3) == [1, 2**128 - 1, 7]


def test_columns_that_do_not_add_up_are_refused() -> None:
    request = pb.ShardAppendRequest()
    put_columns(request, NewRecords.of((new_record("ab", b"xyz"), new_record("c", b"")), None))
    assert columns_of(request) == (["ab", "c"], [b"ab", b"c"], [b"xyz", b""])
    for damage in (
        lambda r: r.key_sizes.append(1),
        lambda r: setattr(r, "datas", r.datas + b"!"),
        lambda r: r.data_sizes.__setitem__(0, 2),
        lambda r: setattr(r, "keys", b"\xff\xfe" + r.keys[2:]),
    ):
        damaged = pb.ShardAppendRequest()
        damaged.CopyFrom(request)
        damage(damaged)
        with pytest.raises(ValueError, match=r"partition keys|data|UTF-8"):
            columns_of(damaged)
