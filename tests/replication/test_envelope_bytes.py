"""Messages written by hand in protobuf's wire format (`rpc/protowire.py`, issue 18): an
Append's envelope (`replication_codec.envelope_pieces`) and a forwarded append's FramedAppend
(`framed.framed_append`). What the receiver decodes must be exactly the message the generated
code would have sent, whatever the batches, offsets and sizes; an Append's stored bytes go into
the frame as they are (no copy before the frame's join) and are put in wire form once for
every follower of one send.

Real parts: the codec, the generated protobuf code (the receiver's decoder), stored batches."""

from __future__ import annotations

import pytest

from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import (
    BATCH_FORMAT_VERSION,
    WRITTEN_BATCH_FORMAT_VERSION,
    AppendBatch,
    NewRecord,
)
from broker.replication.messages import Append, AppendAck, Envelope
from broker.rpc import protowire
from broker.rpc.framed import framed_append
from broker.rpc.frames import FrameKind, FrameReader, encode_frame_pieces
from broker.rpc.replication_codec import (
    AppendBatchesCache,
    envelope_bytes,
    envelope_from_proto,
    envelope_pieces,
    envelope_to_proto,
)
from broker.types import NodeId, Offset, ShardUid

SHARD = ShardUid(2**40 + 7)  # a uid past 32 bits: multi-byte varints everywhere
LEADER = NodeId("node-1")


def _batch(first_offset: int, count: int, *, data_bytes: int = 1024, version: int) -> AppendBatch:
    records = [
        NewRecord(partition_key=f"key-{i}", data=bytes([i % 256]) * data_bytes)
        for i in range(count)
    ]
    return AppendBatch(
        shard_uid=SHARD,
        first_offset=Offset(first_offset),
        arrival_ms=1_700_000_000_123,
        records=records,
        epoch=3,
        version=version,
    )


def _append(batches: tuple[AppendBatch, ...], *, first_offset: int) -> Append:
    return Append(
        shard_uid=SHARD,
        epoch=5,
        leader=LEADER,
        first_offset=Offset(first_offset),
        prev_epoch=3,
        batches=batches,
        leader_hw=Offset(max(0, first_offset - 1)),
        leader_log_start=Offset(0),
    )


def _stored_batches(first_offset: int, sizes: list[int]) -> tuple[AppendBatch, ...]:
    batches = []
    offset = first_offset
    for count in sizes:
        batches.append(_batch(offset, count, version=BATCH_FORMAT_VERSION))
        offset += count
    return tuple(batches)


CASES = {
    "one batch of 500 x 1 KiB": (1000, [500]),
    "several batches": (2**33, [1, 17, 300]),
    "from offset 0": (0, [3]),
    "a heartbeat (no batch)": (42, []),
}


@pytest.mark.parametrize(("first_offset", "sizes"), list(CASES.values()), ids=list(CASES))
def test_decodes_to_the_message_the_generated_code_sends(
    first_offset: int, sizes: list[int]
) -> None:
    append = _append(_stored_batches(first_offset, sizes), first_offset=first_offset)
    envelope = Envelope(to=NodeId("node-2"), message=append)

    written = envelope_bytes(envelope, sender=LEADER)

    decoded = pb.ReplicationEnvelope.FromString(written)
    assert decoded == envelope_to_proto(envelope, sender=LEADER)
    message = envelope_from_proto(decoded)
    assert isinstance(message, Append)
    assert message == append
    assert [b.value for b in message.batches] == [b.value for b in append.batches]


def test_a_frame_carries_the_stored_bytes_uncopied_and_each_follower_its_address() -> None:
    batches = _stored_batches(10, [500, 2])
    cache: AppendBatchesCache = {}
    frames = []
    for follower in (NodeId("node-2"), NodeId("node-3")):
        # The replica makes one Append per follower; the batch objects are the same ones.
        envelope = Envelope(to=follower, message=_append(batches, first_offset=10))
        pieces = envelope_pieces(envelope, sender=LEADER, batches_cache=cache)
        assert [p for p in pieces if len(p) > 1000] == [b.value for b in batches]
        assert all(any(p is b.value for p in pieces) for b in batches)  # not copied
        frames.append(encode_frame_pieces(FrameKind.ENVELOPE, pieces))
    assert len(cache) == 1  # put in wire form once for both followers

    reader = FrameReader(frame_bytes_max=64 * 2**20)
    received = [reader.feed(frame) for frame in frames]
    for to_node, ((kind, payload),) in zip(("node-2", "node-3"), received, strict=True):
        assert kind is FrameKind.ENVELOPE
        decoded = pb.ReplicationEnvelope.FromString(payload)
        assert (decoded.from_node, decoded.to_node) == (LEADER, to_node)
        message = envelope_from_proto(decoded)
        assert isinstance(message, Append)
        assert message.batches == batches


def test_older_batches_and_acks_go_through_the_generated_code() -> None:
    older = _append((_batch(5, 3, version=WRITTEN_BATCH_FORMAT_VERSION),), first_offset=5)
    ack = AppendAck(
        shard_uid=SHARD,
        epoch=5,
        sender=NodeId("node-2"),
        ok=True,
        log_end=Offset(8),
        last_epoch=5,
        promised_epoch=5,
        rejoining=False,
    )
    assert WRITTEN_BATCH_FORMAT_VERSION < BATCH_FORMAT_VERSION
    for message in (older, ack):
        envelope = Envelope(to=NodeId("node-2"), message=message)
        assert (
            envelope_bytes(envelope, sender=LEADER)
            == envelope_to_proto(envelope, sender=LEADER).SerializeToString()
        )


@pytest.mark.parametrize("call_id", [1, 127, 128, 2**40])
def test_a_forwarded_append_is_the_message_the_generated_code_sends(call_id: int) -> None:
    request = pb.ShardAppendRequest(
        stream_uid=3, shard_uid=SHARD, epoch=5, keys=b"abc", datas=b"x" * 300_000
    )
    request.key_sizes.extend([1, 2])
    request.data_sizes.extend([100_000, 200_000])

    pieces = framed_append(call_id, request)

    (kind, payload), *_ = FrameReader(frame_bytes_max=2**20).feed(
        encode_frame_pieces(FrameKind.APPEND, pieces)
    )
    assert kind is FrameKind.APPEND
    expected = pb.FramedAppend(call_id=call_id, request=request.SerializeToString())
    assert pb.FramedAppend.FromString(payload) == expected
    assert pb.ShardAppendRequest.FromString(expected.request) == request


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**64 - 1])
def test_varints_decode_as_protobuf_reads_them(value: int) -> None:
    written = protowire.varint_field(1, value)  # ShardAppendResponse.first_offset: uint64
    assert pb.ShardAppendResponse.FromString(written).first_offset == value
