"""NodeService's values on the wire: the routing hash keys of a forwarded append, and the
records a forwarded read returns (the appended records travel as replication's
`NewRecord`s, `replication_codec.records_to_proto`)."""

from __future__ import annotations

from collections.abc import Sequence

from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import StoredRecord
from broker.types import Offset

_HASH_KEY_BYTES = 16  # a Kinesis hash key is 128 bits


def hash_keys_to_wire(hash_keys: Sequence[int] | None) -> bytes:
    """`ShardAppendRequest.hash_keys`: 16 bytes big-endian per key, in order (b"": none)."""
    if hash_keys is None:
        return b""
    return b"".join([key.to_bytes(_HASH_KEY_BYTES, "big") for key in hash_keys])


def hash_keys_from_wire(packed: bytes, records: int) -> list[int] | None:
    """The keys `hash_keys_to_wire` packed for `records` records; None when none were sent.
    Raises ValueError when the length does not match the records."""
    if not packed:
        return None
    if len(packed) != records * _HASH_KEY_BYTES:
        raise ValueError(f"{len(packed)} bytes of hash keys for {records} records")
    from_bytes = int.from_bytes
    return [
        from_bytes(packed[i : i + _HASH_KEY_BYTES], "big")
        for i in range(0, len(packed), _HASH_KEY_BYTES)
    ]


def stored_to_proto(records: Sequence[StoredRecord]) -> list[pb.StoredRecord]:
    return [
        pb.StoredRecord(
            offset=r.offset,
            arrival_ms=r.arrival_ms,
            partition_key=r.partition_key,
            data=r.data,
            encrypted=r.encrypted,  # the serving replica stored it sealed: EncryptionType KMS
        )
        for r in records
    ]


def stored_from_proto(records: Sequence[pb.StoredRecord]) -> list[StoredRecord]:
    return [
        StoredRecord(Offset(r.offset), r.arrival_ms, r.partition_key, r.data, r.encrypted)
        for r in records
    ]
