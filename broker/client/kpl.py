"""KPL record aggregation and KCL de-aggregation, byte-compatible with the AWS libraries.

The Kinesis Producer Library packs many small user records into one Kinesis record:

    F3 89 9A C2 | AggregatedRecord (proto2, proto/broker/api/kpl/v1/aggregation.proto) | MD5

where the MD5 (16 bytes) covers the protobuf bytes only (awslabs/amazon-kinesis-producer:
aggregation-format.md). Every user record inside shares the Kinesis record's sequence number and
is told apart by its sub-sequence number, its index in the aggregate. The Kinesis Client Library
de-aggregates (amazon-kinesis-client: AggregatorUtil.java); `deaggregate` does what it does:

* data without the magic, or too short to hold a digest, is a plain record (sub-sequence 0);
* an aggregate whose MD5 does not match, or whose protobuf does not parse (required fields
  included), is passed through whole as a plain record;
* with a shard's hash range, an aggregate holding any user record whose effective hash key (its
  explicit hash key, else MD5 of its partition key) lies outside the range is dropped **whole**.
  That is how the KCL discards the copy of an aggregate the KPL put into the wrong shard after a
  reshard (the KPL retries all of its user records, so the copy is a duplicate).

One deliberate difference: an aggregate whose key indices point outside its tables (or whose
explicit hash key is not a number) is passed through whole as a plain record. The KCL logs an
error and keeps the user records before the bad one; passing the blob through loses nothing.

`ExtendedSequenceNumber` is the KCL's (sequence number, sub-sequence number) checkpoint with its
ordering. Pure code: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from google.protobuf.message import DecodeError

from broker import limits
from broker.api.kpl.v1 import aggregation_pb2
from broker.streams.hash_keys import partition_key_hash

log = logging.getLogger(__name__)

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_BYTES = 16  # MD5
FIXED_OVERHEAD_BYTES = len(MAGIC) + DIGEST_BYTES
# What one aggregate may weigh by default: the Kinesis record limit (data + partition key).
AGGREGATION_BYTES_MAX_DEFAULT = limits.record_bytes_max_default
# The KPL's AggregationMaxCount default; in practice the byte bound binds long before it.
AGGREGATION_RECORDS_MAX_DEFAULT = 4_294_967_295

# A GetRecords record as boto3 and `broker.client.grpc_client` return it: SequenceNumber,
# Data (bytes), PartitionKey, and optionally ApproximateArrivalTimestamp.
KinesisRecordLike = Mapping[str, Any]

# Kinesis's HashKey pattern, ASCII digits only (str.isdigit accepts other scripts' digits).
_HASH_KEY_PATTERN = re.compile(r"0|[1-9][0-9]{0,38}")
# What the KCL's `new BigInteger(explicitHashKey)` accepts when it de-aggregates.
_LENIENT_INTEGER_PATTERN = re.compile(r"[+-]?[0-9]+")
_DIGITS_PATTERN = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """One user record: what a producer puts, or what `deaggregate` returns.

    `sequence_number`, `sub_sequence_number`, `aggregated` and `approximate_arrival_timestamp`
    are set on records read back from a stream; a plain (not aggregated) record has sub-sequence
    number 0, as in the KCL.
    """

    partition_key: str
    data: bytes
    explicit_hash_key: str | None = None
    sequence_number: str | None = None
    sub_sequence_number: int = 0
    aggregated: bool = False
    approximate_arrival_timestamp: datetime | None = None

    def __post_init__(self) -> None:
        assert self.sub_sequence_number >= 0
        if not self.aggregated:
            assert self.sub_sequence_number == 0

    @property
    def hash_key(self) -> int:
        """The effective hash key: the explicit one, else MD5 of the partition key."""
        if self.explicit_hash_key is not None:
            return int(self.explicit_hash_key)
        return partition_key_hash(self.partition_key)

    @property
    def extended_sequence_number(self) -> ExtendedSequenceNumber:
        """The checkpoint that marks this record processed."""
        assert self.sequence_number is not None, "only records read from a stream have one"
        return ExtendedSequenceNumber(self.sequence_number, self.sub_sequence_number)


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregatedBlob:
    """One Kinesis record carrying an aggregate, ready for PutRecord(s).

    `explicit_hash_key` is the first user record's effective hash key in decimal, which is how
    the KPL routes an aggregate to the shard it predicted for all of its user records.
    """

    partition_key: str  # the first user record's (the KPL sends "a": routing is by hash key)
    explicit_hash_key: str
    data: bytes
    record_count: int

    @property
    def size_bytes(self) -> int:
        """The Kinesis record's size as Kinesis counts it: data plus partition key."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))


def validate_user_record(record: UserRecord) -> None:
    """Raise ValueError unless Kinesis would accept `record`'s partition key and hash key."""
    if not 1 <= len(record.partition_key) <= limits.partition_key_chars_max:
        raise ValueError(f"a partition key has 1 to {limits.partition_key_chars_max} characters")
    ehk = record.explicit_hash_key
    if ehk is not None and (
        _HASH_KEY_PATTERN.fullmatch(ehk) is None or int(ehk) > limits.hash_key_max
    ):
        raise ValueError(f"explicit hash key {ehk!r} is not a decimal in [0, 2^128-1]")


def _varint_bytes(value: int) -> int:
    """How many bytes protobuf's base-128 varint encoding of `value` takes."""
    assert value >= 0
    return max(1, (value.bit_length() + 6) // 7)


def _length_delimited_bytes(payload_bytes: int) -> int:
    """One length-delimited field (tag below 16: one byte): tag + length + payload."""
    return 1 + _varint_bytes(payload_bytes) + payload_bytes


class AggregateBuilder:
    """Packs user records into one aggregate, knowing its exact size after every record.

    Keys repeat across records in practice, so each distinct partition key and explicit hash key
    is stored once in its table, as the KPL does. Use: `fits`, then `add`, then `build` once.
    Single-task; not thread-safe.
    """

    def __init__(
        self,
        *,
        aggregation_bytes_max: int = AGGREGATION_BYTES_MAX_DEFAULT,
        aggregation_records_max: int = AGGREGATION_RECORDS_MAX_DEFAULT,
    ) -> None:
        assert FIXED_OVERHEAD_BYTES < aggregation_bytes_max <= limits.record_size_kib_max * 1024
        assert aggregation_records_max >= 1
        self.aggregation_bytes_max = aggregation_bytes_max
        self.aggregation_records_max = aggregation_records_max
        self._message = aggregation_pb2.AggregatedRecord()
        self._partition_keys: dict[str, int] = {}
        self._explicit_hash_keys: dict[str, int] = {}
        self._protobuf_bytes = 0
        self._first_partition_key_bytes = 0
        self._records: list[UserRecord] = []

    @property
    def record_count(self) -> int:
        return len(self._records)

    @property
    def size_bytes(self) -> int:
        """The Kinesis record's size if built now: magic + protobuf + MD5 + partition key."""
        return FIXED_OVERHEAD_BYTES + self._protobuf_bytes + self._first_partition_key_bytes

    def _protobuf_growth_bytes(self, record: UserRecord) -> int:
        """How many bytes adding `record` adds to the serialized AggregatedRecord."""
        added = 0
        partition_key_index = self._partition_keys.get(record.partition_key)
        if partition_key_index is None:
            partition_key_index = len(self._partition_keys)
            added += _length_delimited_bytes(len(record.partition_key.encode("utf-8")))
        inner = 1 + _varint_bytes(partition_key_index)
        if record.explicit_hash_key is not None:
            ehk_index = self._explicit_hash_keys.get(record.explicit_hash_key)
            if ehk_index is None:
                ehk_index = len(self._explicit_hash_keys)
                added += _length_delimited_bytes(len(record.explicit_hash_key))
            inner += 1 + _varint_bytes(ehk_index)
        inner += _length_delimited_bytes(len(record.data))
        return added + _length_delimited_bytes(inner)

    def fits(self, record: UserRecord) -> bool:
        """Whether `record` can join without breaking the byte or record bounds."""
        if len(self._records) >= self.aggregation_records_max:
            return False
        outer_key_bytes = (
            self._first_partition_key_bytes
            if self._records
            else len(record.partition_key.encode("utf-8"))
        )
        protobuf_bytes = self._protobuf_bytes + self._protobuf_growth_bytes(record)
        size_bytes = FIXED_OVERHEAD_BYTES + protobuf_bytes + outer_key_bytes
        return size_bytes <= self.aggregation_bytes_max

    def add(self, record: UserRecord) -> None:
        """Append `record` (its sub-sequence number is its position); it must `fit`."""
        assert self.fits(record)
        validate_user_record(record)
        self._protobuf_bytes += self._protobuf_growth_bytes(record)
        entry = self._message.records.add(data=record.data)
        entry.partition_key_index = self._index(
            self._partition_keys, self._message.partition_key_table, record.partition_key
        )
        if record.explicit_hash_key is not None:
            entry.explicit_hash_key_index = self._index(
                self._explicit_hash_keys,
                self._message.explicit_hash_key_table,
                record.explicit_hash_key,
            )
        if not self._records:
            self._first_partition_key_bytes = len(record.partition_key.encode("utf-8"))
        self._records.append(record)

    @staticmethod
    def _index(indices: dict[str, int], table: Any, key: str) -> int:
        index = indices.get(key)
        if index is None:
            index = len(indices)
            indices[key] = index
            table.append(key)
        assert len(table) == len(indices)
        return index

    def build(self) -> AggregatedBlob:
        assert self._records, "an aggregate holds at least one user record"
        body = self._message.SerializeToString(deterministic=True)
        assert len(body) == self._protobuf_bytes, "the size bookkeeping matches protobuf's"
        data = MAGIC + body + hashlib.md5(body).digest()
        first = self._records[0]
        blob = AggregatedBlob(
            partition_key=first.partition_key,
            explicit_hash_key=str(first.hash_key),
            data=data,
            record_count=len(self._records),
        )
        assert blob.size_bytes == self.size_bytes
        assert blob.size_bytes <= self.aggregation_bytes_max
        return blob


def aggregate(
    records: Sequence[UserRecord],
    *,
    aggregation_bytes_max: int = AGGREGATION_BYTES_MAX_DEFAULT,
    aggregation_records_max: int = AGGREGATION_RECORDS_MAX_DEFAULT,
) -> AggregatedBlob:
    """Pack `records`, in order, into one KPL aggregate.

    Raises ValueError when there are none, when a key is invalid, or when they do not fit in
    one aggregate of `aggregation_bytes_max` bytes (data plus partition key, as Kinesis counts a
    record) and `aggregation_records_max` records; `AggregateBuilder` packs incrementally.
    """
    if not records:
        raise ValueError("an aggregate holds at least one user record")
    builder = AggregateBuilder(
        aggregation_bytes_max=aggregation_bytes_max,
        aggregation_records_max=aggregation_records_max,
    )
    for record in records:
        validate_user_record(record)
        if not builder.fits(record):
            raise ValueError(
                f"the records do not fit in one aggregate ({aggregation_bytes_max} bytes, "
                f"{aggregation_records_max} records)"
            )
        builder.add(record)
    return builder.build()


def _aggregate_body(data: bytes) -> bytes | None:
    """The protobuf bytes of an aggregate with a valid magic and MD5, else None."""
    if not data.startswith(MAGIC) or len(data) - len(MAGIC) <= DIGEST_BYTES:
        return None
    body = data[len(MAGIC) : -DIGEST_BYTES]
    if hashlib.md5(body).digest() != data[-DIGEST_BYTES:]:
        return None
    return body


def is_aggregated(data: bytes) -> bool:
    """Whether `data` carries the KPL's magic and a matching MD5 (the protobuf is not parsed)."""
    return _aggregate_body(data) is not None


def _text(value: str | bytes) -> str:
    # proto2 strings are not UTF-8 checked; upb hands invalid ones back as bytes, where Java's
    # protobuf decodes them with replacement characters. Follow Java, as the KCL sees them.
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _parse(body: bytes) -> aggregation_pb2.AggregatedRecord | None:
    """The aggregate, or None when it does not parse or misses required fields (as Java's
    `parseFrom` refuses it)."""
    try:
        message = aggregation_pb2.AggregatedRecord.FromString(body)
    except DecodeError:
        return None
    return message if message.IsInitialized() else None


def _unpack(
    message: aggregation_pb2.AggregatedRecord,
) -> list[tuple[str, str | None, bytes]] | None:
    """(partition key, explicit hash key, data) per user record; None on a bad index or key."""
    partition_keys = [_text(key) for key in message.partition_key_table]
    explicit_hash_keys = [_text(key) for key in message.explicit_hash_key_table]
    unpacked: list[tuple[str, str | None, bytes]] = []
    for entry in message.records:
        if entry.partition_key_index >= len(partition_keys):
            return None
        explicit_hash_key: str | None = None
        if entry.HasField("explicit_hash_key_index"):
            if entry.explicit_hash_key_index >= len(explicit_hash_keys):
                return None
            explicit_hash_key = explicit_hash_keys[entry.explicit_hash_key_index]
            if _LENIENT_INTEGER_PATTERN.fullmatch(explicit_hash_key) is None:
                return None
        unpacked.append((partition_keys[entry.partition_key_index], explicit_hash_key, entry.data))
    return unpacked


def _effective_hash_key(partition_key: str, explicit_hash_key: str | None) -> int:
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return partition_key_hash(partition_key)


def deaggregate(
    record: KinesisRecordLike, *, shard_hash_range: tuple[int, int] | None = None
) -> list[UserRecord]:
    """The user records in one Kinesis record, as the KCL de-aggregates it (module docstring).

    `shard_hash_range` is the (starting, ending) hash key of the shard `record` was read from,
    both inclusive; with it, an aggregate holding a user record outside the range yields
    nothing. A non-aggregated record is one user record with sub-sequence number 0.
    """
    if shard_hash_range is not None:
        assert 0 <= shard_hash_range[0] <= shard_hash_range[1] <= limits.hash_key_max
    data: bytes = record["Data"]
    sequence_number: str = record["SequenceNumber"]
    arrival: datetime | None = record.get("ApproximateArrivalTimestamp")
    body = _aggregate_body(data)
    message = _parse(body) if body is not None else None
    unpacked = _unpack(message) if message is not None else None
    if unpacked is None:
        if body is not None:
            log.warning("kpl_aggregate_corrupt", extra={"sequence_number": sequence_number})
        return [
            UserRecord(
                partition_key=record["PartitionKey"],
                data=data,
                sequence_number=sequence_number,
                approximate_arrival_timestamp=arrival,
            )
        ]
    if shard_hash_range is not None:
        starting, ending = shard_hash_range
        for partition_key, explicit_hash_key, _ in unpacked:
            if not starting <= _effective_hash_key(partition_key, explicit_hash_key) <= ending:
                return []
    return [
        UserRecord(
            partition_key=partition_key,
            data=user_data,
            explicit_hash_key=explicit_hash_key,
            sequence_number=sequence_number,
            sub_sequence_number=index,
            aggregated=True,
            approximate_arrival_timestamp=arrival,
        )
        for index, (partition_key, explicit_hash_key, user_data) in enumerate(unpacked)
    ]


def deaggregate_batch(
    records: Sequence[KinesisRecordLike], *, shard_hash_range: tuple[int, int] | None = None
) -> list[UserRecord]:
    """`deaggregate` over a batch read from one shard, in order: what a consumer calls on each
    GetRecords page. A record that does not start with the KPL's magic (most streams hold no
    aggregates) becomes its user record directly, without the aggregate checks."""
    users: list[UserRecord] = []
    for record in records:
        data: bytes = record["Data"]
        if data.startswith(MAGIC):
            users += deaggregate(record, shard_hash_range=shard_hash_range)
            continue
        users.append(
            UserRecord(
                partition_key=record["PartitionKey"],
                data=data,
                sequence_number=record["SequenceNumber"],
                approximate_arrival_timestamp=record.get("ApproximateArrivalTimestamp"),
            )
        )
    return users


@dataclass(frozen=True, slots=True)
class ExtendedSequenceNumber:
    """A KCL checkpoint: a sequence number (or a sentinel) and a sub-sequence number.

    Ordering is the KCL's: SHARD_END above everything (and equal to itself whatever the
    sub-sequence number); AT_TIMESTAMP < TRIM_HORIZON < LATEST below every sequence number;
    sequence numbers by their integer value, then by sub-sequence number.
    """

    sequence_number: str
    sub_sequence_number: int = 0
    _sort_key: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    SENTINELS: ClassVar[dict[str, int]] = {"AT_TIMESTAMP": -3, "TRIM_HORIZON": -2, "LATEST": -1}
    SHARD_END_NAME: ClassVar[str] = "SHARD_END"

    def __post_init__(self) -> None:
        if self.sub_sequence_number < 0:
            raise ValueError("a sub-sequence number is not negative")
        name = self.sequence_number
        if name == self.SHARD_END_NAME:
            key = (1, 0, 0)
        elif name in self.SENTINELS:
            key = (0, self.SENTINELS[name], self.sub_sequence_number)
        elif _DIGITS_PATTERN.fullmatch(name) is not None:
            key = (0, int(name), self.sub_sequence_number)
        else:
            raise ValueError(f"expected a sequence number or a sentinel checkpoint, got {name!r}")
        object.__setattr__(self, "_sort_key", key)

    @property
    def is_sentinel(self) -> bool:
        return self.sequence_number == self.SHARD_END_NAME or self.sequence_number in self.SENTINELS

    def __lt__(self, other: ExtendedSequenceNumber) -> bool:
        return self._sort_key < other._sort_key

    def __le__(self, other: ExtendedSequenceNumber) -> bool:
        return self._sort_key <= other._sort_key

    def __gt__(self, other: ExtendedSequenceNumber) -> bool:
        return self._sort_key > other._sort_key

    def __ge__(self, other: ExtendedSequenceNumber) -> bool:
        return self._sort_key >= other._sort_key


TRIM_HORIZON = ExtendedSequenceNumber("TRIM_HORIZON")
LATEST = ExtendedSequenceNumber("LATEST")
AT_TIMESTAMP = ExtendedSequenceNumber("AT_TIMESTAMP")
SHARD_END = ExtendedSequenceNumber("SHARD_END")
