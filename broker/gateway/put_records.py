"""PutRecords on the doors: its entries read and checked in one loop, its gRPC answer written
straight to bytes.

The generic door path reads every request into an AWS-shaped dict (`wire.codec`) and then
checks the dict against the botocore model (`validation`): for PutRecords' 500 entries that is
a generated reader and a compiled structure check per entry. Here the common entry (a partition
key of 1..256 characters, data of 1 byte up to the model's maximum, no explicit hash key) is
read and checked in one loop over the message; the rest of the request is checked by the model
as before, with one of those entries standing in for the list. Any other entry (an explicit
hash key, an empty or missing member) sends the whole request down the generic path from the
start, so every validation error keeps its words, its order and its count. The AWS door's
decoded request is checked the same way (`validate_put_records`).

The answer (`PutRecordsOutput`) is written as protobuf bytes from the service's dicts: a
written record's result entry is two length-prefixed ASCII strings (the shard id's made once
per answer), formatted as text and encoded once per run of such entries. The bytes are
identical to upb's serialization of the same dicts (tests/gateway/test_put_records.py); an entry
of another shape is serialized by upb.

Pure: values in, bytes or dicts out.
"""

from __future__ import annotations

import binascii
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import botocore.model
import pybase64

from broker.api.kinesis.v1 import kinesis_pb2
from broker.gateway.aws_codec import WireFormat, canonical_blobs, decode_request
from broker.gateway.validation import KINESIS, passes, service_model, validate_request
from broker.service.records import WrittenRun
from broker.wire.codec import dict_to_message, message_to_dict
from broker.wire.put_entries import (
    PutEntries,
    cut_blobs,
    read_json_body,
    read_json_entries,
    read_put_entries,
)
from broker.wire.put_results import ascii_field, written_entries
from broker.wire.record_page import varint


def _entry_limits() -> tuple[int, int, int, int, int]:
    """(partition key length min, max; data length max; entries min, max) from the model."""
    model = service_model(KINESIS)
    entry = model.shape_for("PutRecordsRequestEntry")
    assert isinstance(entry, botocore.model.StructureShape)
    records = model.operation_model("PutRecords").input_shape
    assert records is not None
    assert set(entry.required_members) <= {"Data", "PartitionKey"}
    key = entry.members["PartitionKey"].metadata
    data = entry.members["Data"].metadata
    count = records.members["Records"].metadata
    return key["min"], key["max"], data["max"], count["min"], count["max"]


_KEY_MIN, _KEY_MAX, _DATA_MAX, _RECORDS_MIN, _RECORDS_MAX = _entry_limits()
assert _KEY_MIN >= 1  # an empty key (present or not) therefore always takes the generic path


def put_records_request(message: kinesis_pb2.PutRecordsInput, raw: bytes) -> dict[str, Any]:
    """The validated AWS-shaped request of a parsed PutRecordsInput, `raw` its bytes (ShoalError
    VALIDATION, in the model's words, when it breaks the model). `message` is consumed: its
    records are cleared once read. Common records are read as columns straight from `raw`
    where the C reader was built (`wire.put_entries`: "Records" is then a `PutEntries`)."""
    columns = read_put_entries(
        raw,
        key_min=_KEY_MIN,
        key_max=_KEY_MAX,
        data_max=_DATA_MAX,
        count_min=_RECORDS_MIN,
        count_max=_RECORDS_MAX,
    )
    if columns is not None:
        return _request_with(message, columns)
    entries = message.records
    records: list[dict[str, Any]] = []
    if _RECORDS_MIN <= len(entries) <= _RECORDS_MAX:
        append = records.append
        for entry in entries:
            data = entry.data
            key = entry.partition_key
            if (
                not data
                or len(data) > _DATA_MAX
                or not _KEY_MIN <= len(key) <= _KEY_MAX
                or entry.explicit_hash_key
                or entry.HasField("explicit_hash_key")
            ):
                records = []
                break
            append({"Data": data, "PartitionKey": key})
    if not records:
        generic = message_to_dict(message)
        validate_request("PutRecords", generic)
        return generic
    return _request_with(message, records)


def _request_with(
    message: kinesis_pb2.PutRecordsInput, records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The request of `message` whose common `records` were read (and checked) already: the
    rest of it read and checked by the model."""
    message.ClearField("records")
    request: dict[str, Any] = {"Records": records}  # first, as the generic reader orders it
    request.update(message_to_dict(message))
    _check_with_stand_in(request, records)
    return request


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonPutRecords:
    """A common JSON PutRecords body read by `read_common_json_body`: its top-level members in
    the body's order ("Records" mapped to None) and its entries."""

    members: dict[str, str | None]
    entries: PutEntries


def read_common_json_body(body: bytes) -> JsonPutRecords | None:
    """A JSON PutRecords `body` (unparsed) read in one C pass when it is the common one (every
    entry exactly Data in canonical base64 of 1 byte up to the model's maximum and a
    PartitionKey of 1..256 printable ASCII characters, the other members strings): its members
    and its entries as columns (each record's size counted in the same pass), with every Data
    decoded in one base64 call. None otherwise, and always without the compiled module: the
    caller then parses the body (`parse_body`) and takes `put_records_from_body`, which says
    what is wrong, if anything."""
    columns = read_json_body(
        body,
        key_min=_KEY_MIN,
        key_max=_KEY_MAX,
        data_max=_DATA_MAX,
        count_min=_RECORDS_MIN,
        count_max=_RECORDS_MAX,
    )
    if columns is None:
        return None
    try:
        decoded: bytes = pybase64.b64decode(columns.base64, validate=True)
    except (binascii.Error, ValueError):
        # What checks the Data strings' characters (read_json_body only found their ends): an
        # escape, a control or non-ASCII character, a "=" before the final padding (valid only
        # at the very end of `base64`, which never ends with one) is a body for the parser.
        return None
    datas = cut_blobs(decoded, columns.data_sizes)
    if datas is None:
        return None
    entries = PutEntries(columns.partition_keys, columns.partition_keys_utf8, datas, columns.sizes)
    return JsonPutRecords(members=columns.members, entries=entries)


def put_records_from_json(read: JsonPutRecords) -> dict[str, Any]:
    """The AWS door's validated PutRecords request from a body `read_common_json_body` read:
    the same request `put_records_from_body` makes of the parsed body ("Records" a
    `PutEntries`), the rest of the body decoded and checked by the model as there."""
    return _request_around(read.members, read.entries, WireFormat.JSON)


def put_records_from_body(body: dict[str, Any], wire: WireFormat) -> dict[str, Any]:
    """The AWS door's validated PutRecords request from its parsed `body`: `decode_request` and
    `validate_put_records`, except that a JSON body whose records are all the common one (a
    Data string in canonical base64 of 1 byte up to the model's maximum, a PartitionKey of
    1..256 characters, nothing else) has them read as columns (`wire.put_entries`: "Records" is
    then a `PutEntries`), the rest of the body decoded and checked as before."""
    records = body.get("Records")
    entries = _json_entries(records) if wire is WireFormat.JSON and type(records) is list else None
    if entries is None:
        request = decode_request("PutRecords", body, wire)
        validate_put_records(request)
        return request
    return _request_around(body, entries, wire)


def _request_around(
    body: Mapping[str, Any], entries: PutEntries, wire: WireFormat
) -> dict[str, Any]:
    """The request of a body whose "Records" were read as `entries`: the other members decoded
    and everything checked by the model, the members in the body's order, as the generic
    decoder puts them."""
    rest = decode_request("PutRecords", {k: v for k, v in body.items() if k != "Records"}, wire)
    request = {
        name: entries if name == "Records" else rest[name]
        for name in body
        if name == "Records" or name in rest
    }
    _check_with_stand_in(request, entries)
    return request


def _json_entries(records: list[Any]) -> PutEntries | None:
    columns = read_json_entries(
        records,
        key_min=_KEY_MIN,
        key_max=_KEY_MAX,
        count_min=_RECORDS_MIN,
        count_max=_RECORDS_MAX,
    )
    if columns is None:
        return None
    keys, keys_utf8, texts = columns
    datas = canonical_blobs(texts)
    if datas is None:
        return None
    data_sizes = list(map(len, datas))
    if min(data_sizes) < 1 or max(data_sizes) > _DATA_MAX:
        return None
    sizes = list(map(operator.add, map(len, keys_utf8), data_sizes))
    return PutEntries(keys, keys_utf8, datas, sizes)


def validate_put_records(request: dict[str, Any]) -> None:
    """`validate_request("PutRecords", request)` for a request decoded by the AWS door: its
    common entries (exactly Data, bytes of 1 byte up to the model's maximum, and PartitionKey,
    a string of 1..256 characters) checked in one loop, any other takes the model's check."""
    records = request.get("Records")
    if type(records) is list and _RECORDS_MIN <= len(records) <= _RECORDS_MAX:
        for entry in records:
            if type(entry) is not dict or len(entry) != 2:
                break
            data = entry.get("Data")
            key = entry.get("PartitionKey")
            if (
                type(data) is not bytes
                or type(key) is not str
                or not 0 < len(data) <= _DATA_MAX
                or not _KEY_MIN <= len(key) <= _KEY_MAX
            ):
                break
        else:
            _check_with_stand_in(request, records)
            return
    validate_request("PutRecords", request)


def _check_with_stand_in(request: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """The rest of a request whose `records` passed the entry checks, by the model: one entry
    stands in for the list (whose length is within the model's bounds). A request whose other
    members fail is checked again whole, so its messages are the model's for it as it came."""
    request["Records"] = records[:1]
    try:
        passed = passes("PutRecords", request)
    finally:
        request["Records"] = records
    if not passed:  # the model's messages for the request as it came (a list of records)
        validate_request("PutRecords", {**request, "Records": list(records)})


# PutRecordsOutput: failed_record_count = 1 (varint, tag 0x08), records = 2 (0x12),
# encryption_type = 3 (0x1a); PutRecordsResultEntry: sequence_number = 1 (0x0a), shard_id = 2
# (0x12).
_WRITTEN_KEYS: Final = frozenset(("ShardId", "SequenceNumber"))
_OUTPUT_KEYS: Final = frozenset(("FailedRecordCount", "Records", "EncryptionType"))


def put_records_output(response: Mapping[str, Any]) -> bytes:
    """The serialized `PutRecordsOutput` of the service's PutRecords answer."""
    if not response.keys() <= _OUTPUT_KEYS:
        return _upb(response, kinesis_pb2.PutRecordsOutput)  # fails loudly, as upb's path does
    parts: list[bytes] = []
    failed = response.get("FailedRecordCount")
    if failed is not None:
        if failed < 0:  # negative int32s take ten bytes; never answered, left to upb
            return _upb(response, kinesis_pb2.PutRecordsOutput)
        parts.append(b"\x08" + varint(failed))
    records = response.get("Records") or ()
    whole = None
    if type(records) is WrittenRun:  # its bytes written ahead, or now
        whole = records.prepared or written_entries(records.shard_id, records.numbers)
    if whole is not None:
        records = ()
        parts.append(whole)
    # A written record's entry is all ASCII with one-byte lengths: made as text, and the run
    # of such entries encoded once (one format per record). Any other entry is upb's.
    run: list[str] = []
    add = run.append
    shard_fields: dict[str, str | None] = {}
    for entry in records:
        shard_id = entry.get("ShardId")
        number = entry.get("SequenceNumber")
        if len(entry) == 2 and type(shard_id) is str and type(number) is str and number.isascii():
            shard_field = shard_fields.get(shard_id, "")
            if shard_field == "":
                shard_field = shard_fields[shard_id] = ascii_field("\x12", shard_id)
            if shard_field is not None:
                size = len(number)
                body_size = size + 2 + len(shard_field)
                if body_size < 0x80:
                    add(f"\x12{chr(body_size)}\x0a{chr(size)}{number}{shard_field}")
                    continue
        if run:
            parts.append("".join(run).encode())
            run.clear()
        body = dict_to_message(entry, kinesis_pb2.PutRecordsResultEntry).SerializeToString()
        parts.append(b"\x12" + varint(len(body)) + body)
    if run:
        parts.append("".join(run).encode())
    encryption = response.get("EncryptionType")
    if encryption is not None:
        raw = encryption.encode()
        parts.append(b"\x1a" + varint(len(raw)) + raw)
    return b"".join(parts)


def _upb(response: Mapping[str, Any], output: type[kinesis_pb2.PutRecordsOutput]) -> bytes:
    return dict_to_message(response, output).SerializeToString()
