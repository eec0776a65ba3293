"""GetRecords' answer on the gRPC door: its page written from the stored batch bytes.

The service answers a page of records as a `ShardPage` (runs of the stored batches' bytes,
`log.records.RecordRun`). Each record's partition key and data are copied from the batch
straight into its `Record` fields: no `StoredRecord`, dict or message per record. The
arrival timestamp and the EncryptionType field are written once per batch. Sequence numbers
are `str(base | (offset << shift))`, with base and shift found once per batch.

The rest of the answer (NextShardIterator, MillisBehindLatest, ChildShards) is serialized by
upb after the records, as `wire.record_page` does. The bytes are identical to upb's
serialization of the same answer as record dicts (tests/gateway/test_grpc_page.py). A page
without runs (read from a remote replica or the memory store) is shaped into record dicts and
written by `wire.record_page`, as is an answer that holds dicts already.

Pure: values in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker.api.kinesis.v1 import kinesis_pb2
from broker.log.records import RECORD_HEADER_BYTES, RecordRun
from broker.service.records import ShardPage
from broker.timestamps import datetime_from_ms
from broker.wire import record_page
from broker.wire.record_page import arrival_field, page_tail, varint

_RECORD_HEADER = struct.Struct(">HI")  # the stored layout's pk_len, data_len (log/records.py)
assert _RECORD_HEADER.size == RECORD_HEADER_BYTES
# The tags (field number << 3 | wire type 2) in `runs_bytes`' format: GetRecordsOutput.records
# = 1 (0x0a), then Record's sequence_number = 1 (0x0a), data = 3 (0x1a), partition_key = 4
# (0x22); a sealed record's encryption_type = 5 (0x2a) is this whole field.
_KMS = b"\x2a\x03KMS"


def get_records_output(response: Mapping[str, Any]) -> bytes:
    """The serialized `GetRecordsOutput` of the service's GetRecords answer."""
    page = response.get("Records")
    if not isinstance(page, ShardPage):
        return record_page.get_records_output(response)
    runs = page.page.runs
    if runs is None:
        return record_page.get_records_output({**response, "Records": page.shaped()})
    parts = runs_bytes(runs, page.number_base)
    parts.append(page_tail(response, kinesis_pb2.GetRecordsOutput))
    return b"".join(parts)


class _Heads(dict[int, bytes]):
    """Varint length heads by length, made on first use (a page repeats a few lengths)."""

    def __missing__(self, length: int) -> bytes:
        head = self[length] = varint(length)
        return head


def runs_bytes(
    runs: Sequence[RecordRun], number_base: Callable[[int], tuple[int, int]]
) -> list[bytes]:
    """The `records` fields (GetRecordsOutput field 1, repeated) of `runs`, one byte string
    per record; `number_base(arrival_ms)` is (base, shift) of the run's sequence numbers.

    Straight-line on purpose (it runs once per record of every page): one `%` format per
    record writes its field tags, length heads, number, arrival, data, key and encryption in
    field order; the data and key are copied from the batch bytes once, into that string."""
    parts: list[bytes] = []
    append = parts.append
    unpack_from = _RECORD_HEADER.unpack_from
    heads = _Heads()
    arrivals: dict[int, bytes] = {}
    for run in runs:
        arrival = arrivals.get(run.arrival_ms)
        if arrival is None:
            arrival = arrivals[run.arrival_ms] = arrival_field(datetime_from_ms(run.arrival_ms))
        encryption = _KMS if run.encrypted else b""
        base, shift = number_base(run.arrival_ms)
        numbers = run.sequence_numbers(base, shift)
        # Per record: three tags and the number's one length byte (under 128 digits), the
        # arrival and encryption fields, then what varies.
        fixed = 4 + len(arrival) + len(encryption)
        value = run.value
        position = run.start
        for number in numbers:
            key_length, data_length = unpack_from(value, position)
            key_at = position + RECORD_HEADER_BYTES
            data_at = key_at + key_length
            position = data_at + data_length
            data_head = heads[data_length]
            key_head = heads[key_length]
            size = fixed + len(number) + len(data_head) + data_length + len(key_head) + key_length
            append(
                b"\x0a%b\x0a%b%b%b\x1a%b%b\x22%b%b%b"
                % (
                    heads[size],
                    heads[len(number)],
                    number,
                    arrival,
                    data_head,
                    value[data_at:position],
                    key_head,
                    value[key_at:data_at],
                    encryption,
                )
            )
        assert position == run.end, (position, run.end)
    return parts
