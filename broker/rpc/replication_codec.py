"""Replication messages ⇄ the internal protobuf (`proto/broker/api/internal/v1`).

The one place where replication's wire types are touched (STYLE B.7): the transport and the
RPC adapters call these, the replica core never sees a protobuf. A batch written in format 3
(the cluster is at `STORED_BATCHES_LEVEL`, broker/meta/metadata_format.py) travels as its
stored bytes: the receiver checks their CRC (end to end: the checksum the leader computed when
it encoded them) and keeps them as they are, without decoding a record; one that fails the
check is dropped like a lost message (`CorruptBatchError`; the leader resends). An older batch
travels as its records with its epoch and control flag, which every release reads.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence

from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import (
    BATCH_FORMAT_VERSION,
    AppendBatch,
    LogCorruptionError,
    NewRecord,
    new_record,
)
from broker.replication.messages import Append, AppendAck, Envelope, ReplicationMessage
from broker.rpc import protowire
from broker.types import NodeId, Offset, ShardUid


def records_to_proto(records: Iterable[NewRecord]) -> list[pb.Record]:
    return [pb.Record(partition_key=r.partition_key, data=r.data) for r in records]


def records_from_proto(records: Iterable[pb.Record]) -> tuple[NewRecord, ...]:
    return tuple(new_record(r.partition_key, r.data) for r in records)


class CorruptBatchError(Exception):
    """A batch received as stored bytes failed its CRC: damaged on the way (or by a bug)."""


def batch_to_proto(batch: AppendBatch) -> pb.Batch:
    if batch.version >= BATCH_FORMAT_VERSION:
        return pb.Batch(first_offset=batch.first_offset, value=batch.value)
    return pb.Batch(
        first_offset=batch.first_offset,
        arrival_ms=batch.arrival_ms,
        epoch=batch.epoch,
        control=batch.control,
        records=records_to_proto(batch.records),
    )


def batch_from_proto(shard_uid: ShardUid, b: pb.Batch) -> AppendBatch:
    """Raises `CorruptBatchError` when stored bytes fail their CRC or header checks."""
    value = b.value  # read once: each read of a bytes field copies it out of the message
    if value:
        try:
            return AppendBatch.from_value(
                shard_uid=shard_uid, first_offset=Offset(b.first_offset), value=value
            )
        except LogCorruptionError as error:
            raise CorruptBatchError(
                f"shard {shard_uid} batch at offset {b.first_offset}: {error}"
            ) from error
    return AppendBatch(
        shard_uid=shard_uid,
        first_offset=Offset(b.first_offset),
        arrival_ms=b.arrival_ms,
        records=records_from_proto(b.records),
        control=b.control,
        epoch=b.epoch,
    )


def batches_from_proto(shard_uid: ShardUid, batches: Sequence[pb.Batch]) -> tuple[AppendBatch, ...]:
    return tuple(batch_from_proto(shard_uid, b) for b in batches)


def envelope_to_proto(envelope: Envelope, *, sender: NodeId) -> pb.ReplicationEnvelope:
    """An Append or AppendAck on its way to `envelope.to` (Prepare/Promise are unary RPCs)."""
    message = envelope.message
    match message:
        case Append():
            # Built in place: a message given to a constructor is copied (deeply, its batches'
            # bytes too), so `append=pb.Append(batches=[pb.Batch(...)])` copied every batch
            # three times before the serialization's own copy (~0.1 ms per 125 KiB batch).
            proto = pb.ReplicationEnvelope(from_node=sender, to_node=envelope.to)
            append = proto.append
            append.shard_uid = message.shard_uid
            append.epoch = message.epoch
            append.leader = message.leader
            append.first_offset = message.first_offset
            append.prev_epoch = message.prev_epoch
            append.leader_hw = message.leader_hw
            append.leader_log_start = message.leader_log_start
            add_batch = append.batches.add
            for batch in message.batches:
                if batch.version >= BATCH_FORMAT_VERSION:
                    add_batch(first_offset=batch.first_offset, value=batch.value)
                else:
                    add_batch().CopyFrom(batch_to_proto(batch))
            return proto
        case AppendAck():
            return pb.ReplicationEnvelope(
                from_node=sender,
                to_node=envelope.to,
                append_ack=pb.AppendAck(
                    shard_uid=message.shard_uid,
                    epoch=message.epoch,
                    sender=message.sender,
                    ok=message.ok,
                    log_end=message.log_end,
                    last_epoch=message.last_epoch,
                    promised_epoch=message.promised_epoch,
                    rejoining=message.rejoining,
                ),
            )
        case _:
            raise AssertionError(f"{type(message).__name__} does not travel on the stream")


# Field numbers of internal.proto that `envelope_bytes` writes by hand (a test decodes what it
# writes with the generated code and compares).
_ENVELOPE_APPEND_FIELD = 3  # ReplicationEnvelope.append
_APPEND_BATCHES_FIELD = 6  # Append.batches
_BATCH_FIRST_OFFSET_FIELD = 1  # Batch.first_offset
_BATCH_VALUE_FIELD = 6  # Batch.value

# What `envelope_bytes` keeps between the envelopes of one send (the same Append to each
# follower): the wire pieces of the batches (their stored bytes, not copied), by the identity
# of the batch objects (which the caller holds meanwhile).
AppendBatchesCache = MutableMapping[tuple[int, ...], tuple[bytes, ...]]


def envelope_bytes(
    envelope: Envelope, *, sender: NodeId, batches_cache: AppendBatchesCache | None = None
) -> bytes:
    """`envelope_to_proto(envelope, sender=sender).SerializeToString()` (`envelope_pieces`)."""
    return b"".join(envelope_pieces(envelope, sender=sender, batches_cache=batches_cache))


def envelope_pieces(
    envelope: Envelope, *, sender: NodeId, batches_cache: AppendBatchesCache | None = None
) -> tuple[bytes, ...]:
    """`envelope_to_proto(envelope, sender=sender).SerializeToString()` in pieces to join (a
    frame's header in front: `frames.encode_frame_pieces`), in wire terms: what a
    receiver decodes is the same message (not necessarily the same bytes: the batches come
    after `leader_log_start`, as protobuf allows fields in any order).

    Why: an Append's stored batches (about 0.5 MB for 500 x 1 KiB) were copied into the
    message and serialized again by the generated code, ~0.4 ms of CPU per follower and
    Append at some sizes (measured; a copy of 0.5 MB is ~0.02 ms). Here the stored bytes go
    into the frame with one join (the frame's), and with `batches_cache` their pieces are
    made once for every follower they go to. Anything but an Append of stored-format batches
    (an AppendAck, an older batch's records) goes through the generated code."""
    message = envelope.message
    if not isinstance(message, Append) or any(
        batch.version < BATCH_FORMAT_VERSION for batch in message.batches
    ):
        return (envelope_to_proto(envelope, sender=sender).SerializeToString(),)
    key = tuple(id(batch) for batch in message.batches)
    batches = None if batches_cache is None else batches_cache.get(key)
    if batches is None:
        batches = tuple(piece for batch in message.batches for piece in _batch_pieces(batch))
        if batches_cache is not None:
            batches_cache[key] = batches
    head = pb.Append(
        shard_uid=message.shard_uid,
        epoch=message.epoch,
        leader=message.leader,
        first_offset=message.first_offset,
        prev_epoch=message.prev_epoch,
        leader_hw=message.leader_hw,
        leader_log_start=message.leader_log_start,
    ).SerializeToString()
    addressed = pb.ReplicationEnvelope(from_node=sender, to_node=envelope.to).SerializeToString()
    append_size = len(head) + sum(len(piece) for piece in batches)
    return (
        addressed + protowire.length_delimited_head(_ENVELOPE_APPEND_FIELD, append_size) + head,
        *batches,
    )


def _batch_pieces(batch: AppendBatch) -> tuple[bytes, ...]:
    """One `Append.batches` entry (a `Batch` with `first_offset` and `value`, its stored
    bytes), tag and length included, as pieces to join."""
    value = batch.value
    first_offset = protowire.varint_field(_BATCH_FIRST_OFFSET_FIELD, batch.first_offset)
    value_head = protowire.length_delimited_head(_BATCH_VALUE_FIELD, len(value))
    size = len(first_offset) + len(value_head) + len(value)
    entry_head = protowire.length_delimited_head(_APPEND_BATCHES_FIELD, size)
    return (entry_head + first_offset + value_head, value)


def envelope_from_proto(envelope: pb.ReplicationEnvelope) -> ReplicationMessage | None:
    """The message, or None for an envelope of a kind this node does not know (newer peer).
    Raises `CorruptBatchError` for an Append whose stored bytes fail their check."""
    kind = envelope.WhichOneof("message")
    if kind == "append":
        a = envelope.append
        shard_uid = ShardUid(a.shard_uid)
        return Append(
            shard_uid=shard_uid,
            epoch=a.epoch,
            leader=NodeId(a.leader),
            first_offset=Offset(a.first_offset),
            prev_epoch=a.prev_epoch,
            batches=batches_from_proto(shard_uid, a.batches),
            leader_hw=Offset(a.leader_hw),
            leader_log_start=Offset(a.leader_log_start),
        )
    if kind == "append_ack":
        k = envelope.append_ack
        return AppendAck(
            shard_uid=ShardUid(k.shard_uid),
            epoch=k.epoch,
            sender=NodeId(k.sender),
            ok=k.ok,
            log_end=Offset(k.log_end),
            last_epoch=k.last_epoch,
            promised_epoch=k.promised_epoch,
            rejoining=k.rejoining,
        )
    return None
