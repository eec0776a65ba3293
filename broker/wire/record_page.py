"""A GetRecords answer (and a SubscribeToShard event) as protobuf bytes, its records written
straight to the wire format.

The generic path (`codec.dict_to_message`, then upb's `SerializeToString`) builds one upb
message per record from keyword arguments and serializes them again: about 2.5 ms of a
1,000-record page (issue 18's profile: the largest share of the gRPC drain after the store
read). A `Record` has five fields whose encoding is simple, so the page's `records` (field 1 of
`GetRecordsOutput`, repeated) is written here by joining byte strings, the arrival timestamp
once per batch, and the rest of the answer (iterator, MillisBehindLatest, ChildShards) is
serialized by upb and appended: protobuf parses a concatenation of encodings as one message.
The bytes are identical to upb's (tests/wire/test_record_page.py), since upb writes fields in
number order as this does. A record dict with other members than the five (or the four of a
clear record, which has no EncryptionType) goes through `dict_to_message`, so no shape is ever
dropped silently.

Pure: values in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from broker.api.kinesis.v1 import kinesis_pb2
from broker.wire.codec import dict_to_message

# The members a record written here has: a sealed one all five, a clear one (which AWS
# answers without EncryptionType) the first four.
_RECORD_KEYS = frozenset(
    ("SequenceNumber", "ApproximateArrivalTimestamp", "Data", "PartitionKey", "EncryptionType")
)
_CLEAR_RECORD_KEYS = _RECORD_KEYS - {"EncryptionType"}
# Tags (field number << 3 | wire type 2, length-delimited) of the fields written here.
_RECORDS = b"\x0a"  # GetRecordsOutput.records = 1
_SEQUENCE_NUMBER = b"\x0a"  # Record.sequence_number = 1
_ARRIVAL = b"\x12"  # Record.approximate_arrival_timestamp = 2
_DATA = b"\x1a"  # Record.data = 3
_PARTITION_KEY = b"\x22"  # Record.partition_key = 4
_ENCRYPTION_TYPE = b"\x2a"  # Record.encryption_type = 5
_EVENT = b"\x0a"  # SubscribeToShardEventStream.subscribe_to_shard_event = 1


def varint(value: int) -> bytes:
    """`value` (>= 0) as a protobuf base-128 varint."""
    assert value >= 0
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, value: bytes) -> bytes:
    return tag + varint(len(value)) + value


def arrival_field(moment: datetime) -> bytes:
    """A Record's approximate_arrival_timestamp field (tag, length, Timestamp), whole."""
    stamp = dict_to_message({"ApproximateArrivalTimestamp": moment}, kinesis_pb2.Record)
    return _field(_ARRIVAL, stamp.approximate_arrival_timestamp.SerializeToString())


def _records_bytes(records: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Straight-line on purpose (this runs once per record of every page): lengths of one
    and two varint bytes are written inline, `varint` is called only from 16 KiB up."""
    parts: list[bytes] = []
    append = parts.append
    moment: object = None
    arrival = b""
    encryption: dict[str | None, bytes] = {}
    for record in records:
        stamp = record.get("ApproximateArrivalTimestamp")
        keys = record.keys()
        if (keys != _CLEAR_RECORD_KEYS and keys != _RECORD_KEYS) or not isinstance(stamp, datetime):
            body = dict_to_message(record, kinesis_pb2.Record).SerializeToString()
            append(_RECORDS + varint(len(body)))
            append(body)
            continue
        if stamp != moment:
            moment = stamp
            arrival = arrival_field(stamp)
        kind = record.get("EncryptionType")
        encrypted = encryption.get(kind)
        if encrypted is None:
            encrypted = encryption[kind] = (
                b"" if kind is None else _field(_ENCRYPTION_TYPE, kind.encode())
            )
        number = record["SequenceNumber"].encode()
        key = record["PartitionKey"].encode()
        data: bytes = record["Data"]
        n_number, n_key, n_data = len(number), len(key), len(data)
        number_head = bytes((n_number,)) if n_number < 0x80 else varint(n_number)
        key_head = bytes((n_key,)) if n_key < 0x80 else varint(n_key)
        data_head = (
            bytes((n_data,))
            if n_data < 0x80
            else bytes(((n_data & 0x7F) | 0x80, n_data >> 7))
            if n_data < 0x4000
            else varint(n_data)
        )
        size = (
            3  # the three tags written below
            + len(number_head)
            + n_number
            + len(arrival)
            + len(data_head)
            + n_data
            + len(key_head)
            + n_key
            + len(encrypted)
        )
        append(
            b"".join(
                (
                    _RECORDS,
                    bytes((size,))
                    if size < 0x80
                    else bytes(((size & 0x7F) | 0x80, size >> 7))
                    if size < 0x4000
                    else varint(size),
                    _SEQUENCE_NUMBER,
                    number_head,
                    number,
                    arrival,
                    _DATA,
                    data_head,
                )
            )
        )
        append(data)  # the payload is copied once, into the answer
        append(b"".join((_PARTITION_KEY, key_head, key, encrypted)))
    return parts


def page_tail(response: Mapping[str, Any], message_class: type[Message]) -> bytes:
    """Every member of `response` but its Records, as `message_class` bytes (written after
    the records: protobuf parses a concatenation of encodings as one message)."""
    rest = {key: value for key, value in response.items() if key != "Records"}
    return dict_to_message(rest, message_class).SerializeToString()


def _page(response: Mapping[str, Any], message_class: type[Message]) -> bytes:
    """`response` as `message_class` bytes, its `Records` (field 1) written here."""
    records = response.get("Records") or ()
    return b"".join((*_records_bytes(records), page_tail(response, message_class)))


def get_records_output(response: Mapping[str, Any]) -> bytes:
    """The serialized `GetRecordsOutput` of the service's GetRecords answer (an AWS-shaped
    dict): the same bytes as `dict_to_message(response, GetRecordsOutput).SerializeToString()`."""
    return _page(response, kinesis_pb2.GetRecordsOutput)


def subscribe_to_shard_event_stream(event: Mapping[str, Any]) -> bytes:
    """One serialized `SubscribeToShardEventStream` message of SubscribeToShard: a
    SubscribeToShardEvent (its Records, field 1 as in GetRecordsOutput, written here) in
    field 1, or any other member of the union through `dict_to_message`. The same bytes as
    `dict_to_message(event, SubscribeToShardEventStream).SerializeToString()`."""
    inner = event.get("SubscribeToShardEvent")
    if len(event) != 1 or inner is None:
        message = dict_to_message(event, kinesis_pb2.SubscribeToShardEventStream)
        return message.SerializeToString()
    body = _page(inner, kinesis_pb2.SubscribeToShardEvent)
    return _EVENT + varint(len(body)) + body
