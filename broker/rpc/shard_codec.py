"""NodeService's values on the wire: the routing hash keys of a forwarded append, its records
as columns (over the framed connection; over gRPC they travel as replication's `NewRecord`s,
`replication_codec.records_to_proto`), and the records a forwarded read returns."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import NewRecords, StoredRecord
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


def put_columns(request: pb.ShardAppendRequest, records: NewRecords) -> None:
    """Sets `request`'s record columns (keys, key_sizes, datas, data_sizes) to `records`."""
    request.keys = b"".join(records.partition_keys_utf8)
    request.key_sizes.extend(map(len, records.partition_keys_utf8))
    request.datas = b"".join(records.datas)
    request.data_sizes.extend(map(len, records.datas))


def columns_of(request: pb.ShardAppendRequest) -> tuple[list[str], list[bytes], list[bytes]]:
    """The (partition keys, their UTF-8, data) `put_columns` set. Raises ValueError when the
    columns do not add up or a key is not UTF-8."""
    key_sizes, data_sizes = request.key_sizes, request.data_sizes
    if len(key_sizes) != len(data_sizes):
        raise ValueError(f"{len(key_sizes)} partition keys for {len(data_sizes)} records")
    keys_utf8 = _cut(request.keys, key_sizes, "partition keys")
    datas = _cut(request.datas, data_sizes, "data")
    try:
        keys = list(map(bytes.decode, keys_utf8))
    except UnicodeDecodeError as error:
        raise ValueError(f"a partition key that is not UTF-8: {error}") from error
    return keys, keys_utf8, datas


def _cut(joined: bytes, sizes: Sequence[int], what: str) -> list[bytes]:
    ends = list(itertools.accumulate(sizes))
    if (ends[-1] if ends else 0) != len(joined):
        raise ValueError(f"{len(joined)} bytes of {what} for sizes adding up to {sum(sizes)}")
    return [joined[start:end] for start, end in zip([0, *ends], ends, strict=False)]


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
