"""Record value objects of the shard log, and the bytes a record is stored as.

`NewRecord` is what a producer hands in, `AppendBatch` is what the write path hands to a
`LogStore` (one shard, dense offsets, one arrival time), and `StoredRecord` is what a read gives
back. The value encoding lives here, next to the types it encodes, so that every store that
persists bytes uses one codec and one corruption check.

Value layout (all integers big-endian):

    version u8 | arrival_ms u64 | epoch u32 | pk_len u16 | crc32 u32 | partition key | data

The CRC32 covers everything except itself: the header fields before it, the partition key (as
UTF-8) and the data. RocksDB checksums its blocks too, but that does not catch a value that was
wrong before it reached RocksDB, or a bug in our own slicing; this check pairs the write-time
encode with the read-time decode (STYLE B.9). A mismatch is a broken invariant, so `decode_value`
raises `LogCorruptionError`, which nothing should catch and continue from.

`epoch` is the leader epoch that wrote the record. It is 0 until replication exists; it is in
the header now so that the on-disk format does not change when it arrives.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from broker.types import Offset, ShardUid

VALUE_FORMAT_VERSION = 1

# version, arrival_ms, epoch, pk_len; then the CRC32 of (these 15 bytes + pk + data).
_HEADER_BEFORE_CRC = struct.Struct(">BQIH")
_CRC = struct.Struct(">I")
VALUE_HEADER_BYTES = _HEADER_BEFORE_CRC.size + _CRC.size

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_U16_MAX = 2**16 - 1


class LogCorruptionError(Exception):
    """A stored value failed its checksum or its layout check.

    Not a `ShoalError`: the log is not what we wrote, so the process must stop (STYLE B.1 #4)
    rather than serve wrong data. Callers let it propagate.
    """


def record_size_bytes(*, partition_key: str, data: bytes) -> int:
    """The size AWS counts against record and GetRecords limits: data plus partition key."""
    return len(partition_key.encode("utf-8")) + len(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRecord:
    """A record as a producer sent it, before it has an offset or an arrival time."""

    partition_key: str
    data: bytes

    @property
    def size_bytes(self) -> int:
        return record_size_bytes(partition_key=self.partition_key, data=self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    """A record read back from a shard's log."""

    offset: Offset
    arrival_ms: int  # epoch milliseconds; non-decreasing along a shard's offsets
    partition_key: str
    data: bytes

    @property
    def size_bytes(self) -> int:
        return record_size_bytes(partition_key=self.partition_key, data=self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendBatch:
    """Records for one shard at offsets [first_offset, first_offset + len(records)).

    One arrival time covers the whole batch: the writer clamps it so that it never goes back
    within a shard, which is what lets the time index hold one entry per batch.
    """

    shard_uid: ShardUid
    first_offset: Offset
    arrival_ms: int
    records: tuple[NewRecord, ...]

    def __post_init__(self) -> None:
        assert self.records, "an empty batch has no offset to write"
        assert self.first_offset >= 0
        assert 0 <= self.arrival_ms <= _U64_MAX

    @property
    def end_offset(self) -> Offset:
        """The offset after the last record of this batch."""
        return Offset(self.first_offset + len(self.records))

    @property
    def size_bytes(self) -> int:
        return sum(record.size_bytes for record in self.records)


def encode_value(*, arrival_ms: int, epoch: int, partition_key: str, data: bytes) -> bytes:
    """The stored bytes of one record (layout in the module docstring)."""
    assert 0 <= arrival_ms <= _U64_MAX
    assert 0 <= epoch <= _U32_MAX
    pk = partition_key.encode("utf-8")
    assert len(pk) <= _U16_MAX
    header = _HEADER_BEFORE_CRC.pack(VALUE_FORMAT_VERSION, arrival_ms, epoch, len(pk))
    crc = zlib.crc32(data, zlib.crc32(pk, zlib.crc32(header)))
    return b"".join((header, _CRC.pack(crc), pk, data))


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedValue:
    """The fields of one stored value; the offset comes from the key."""

    arrival_ms: int
    epoch: int
    partition_key: str
    data: bytes


def decode_value(value: bytes) -> DecodedValue:
    """Parses and verifies `encode_value`'s bytes; raises `LogCorruptionError` on any mismatch."""
    if len(value) < VALUE_HEADER_BYTES:
        raise LogCorruptionError(f"record value of {len(value)} bytes is shorter than a header")
    version, arrival_ms, epoch, pk_len = _HEADER_BEFORE_CRC.unpack_from(value, 0)
    if version != VALUE_FORMAT_VERSION:
        raise LogCorruptionError(f"record value has unknown format version {version}")
    if VALUE_HEADER_BYTES + pk_len > len(value):
        raise LogCorruptionError(f"record value too short for its partition key of {pk_len} bytes")
    (crc_stored,) = _CRC.unpack_from(value, _HEADER_BEFORE_CRC.size)
    view = memoryview(value)
    crc = zlib.crc32(view[: _HEADER_BEFORE_CRC.size])
    crc = zlib.crc32(view[VALUE_HEADER_BYTES:], crc)
    if crc != crc_stored:
        raise LogCorruptionError(f"record value CRC32 {crc:#010x} != stored {crc_stored:#010x}")
    pk_end = VALUE_HEADER_BYTES + pk_len
    try:
        partition_key = value[VALUE_HEADER_BYTES:pk_end].decode("utf-8")
    except UnicodeDecodeError as exc:  # only reachable if the CRC collided
        raise LogCorruptionError("record partition key is not UTF-8") from exc
    return DecodedValue(
        arrival_ms=arrival_ms, epoch=epoch, partition_key=partition_key, data=value[pk_end:]
    )
