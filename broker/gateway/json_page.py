"""GetRecords' answer in JSON 1.1 (what boto3 reads), its page written from the stored batch
bytes.

orjson writes the answer's other members; each record is written here in the member order and
the forms orjson gives the same record dict (`records_shape`): the sequence number as digits,
the arrival in epoch seconds as orjson writes that float (once per batch), the data as
base64 (pybase64, in C), the partition key as the JSON string orjson makes of it (plain ASCII
keys, the usual case, are copied as they are), and EncryptionType for a sealed batch. The
bytes are identical to `aws_codec.encode_body` of the shaped answer
(tests/gateway/test_json_page.py).

Pure: values in, bytes out.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import pybase64

from broker.log.records import RECORD_HEADER_BYTES, RecordRun
from broker.service.records import ShardPage

_RECORD_HEADER = struct.Struct(">HI")  # the stored layout's pk_len, data_len (log/records.py)
assert _RECORD_HEADER.size == RECORD_HEADER_BYTES
_EMPTY_PAGE = b'{"Records":[]'
# A key JSON writes as it is: printable ASCII without the quote and the backslash.
_PLAIN_KEY = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def get_records_json(
    document: Mapping[str, Any], encode: Callable[[Mapping[str, Any]], bytes]
) -> bytes | None:
    """The JSON body of a GetRecords answer holding a `ShardPage` with runs (Records its
    first member), its other members written by `encode` (the door's JSON encoder); None for
    any other document (`encode_body` writes it)."""
    page = document.get("Records")
    if not isinstance(page, ShardPage) or page.page.runs is None:
        return None
    head = encode({**document, "Records": []})
    if not head.startswith(_EMPTY_PAGE):
        return None  # Records is not the first member: not an answer of records_shape's order
    records = runs_json(page.page.runs, page.number_base)
    if records:
        records[0] = records[0][1:]  # the first record's comma
    return b"".join((b'{"Records":[', *records, head[len(_EMPTY_PAGE) - 1 :]))


def runs_json(
    runs: Sequence[RecordRun], number_base: Callable[[int], tuple[int, int]]
) -> list[bytes]:
    """One JSON object per record of `runs`, each after a comma (the page joins them in one
    copy); `number_base(arrival_ms)` is (base, shift) of the run's sequence numbers.
    Straight-line on purpose: it runs once per record."""
    objects: list[bytes] = []
    append = objects.append
    unpack_from = _RECORD_HEADER.unpack_from
    encode_data = pybase64.b64encode
    plain_key = _PLAIN_KEY.fullmatch
    for run in runs:
        arrival = orjson.dumps(run.arrival_ms / 1000)
        tail = b'","EncryptionType":"KMS"}' if run.encrypted else b'"}'
        base, shift = number_base(run.arrival_ms)
        numbers = run.sequence_numbers(base, shift)
        value = run.value
        position = run.start
        for number in numbers:
            key_length, data_length = unpack_from(value, position)
            key_at = position + RECORD_HEADER_BYTES
            data_at = key_at + key_length
            position = data_at + data_length
            key = value[key_at:data_at]
            if plain_key(key) is None:
                key = orjson.dumps(key.decode("utf-8"))[1:-1]
            append(
                b',{"SequenceNumber":"%b","ApproximateArrivalTimestamp":%b,"Data":"%b",'
                b'"PartitionKey":"%b%b'
                % (number, arrival, encode_data(value[data_at:position]), key, tail)
            )
        assert position == run.end, (position, run.end)
    return objects
