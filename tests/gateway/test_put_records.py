"""The gRPC door's PutRecords path (`put_records`): the one-loop reader gives the request (or the
error) the generic path gives (`message_to_dict` + `validate_request`), for well-formed and
broken requests alike; the answer's bytes are upb's serialization of the same dicts."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest

from broker.api.kinesis.v1 import kinesis_pb2
from broker.errors import ShoalError
from broker.gateway import put_records
from broker.gateway.aws_codec import WireFormat, decode_request
from broker.gateway.put_records import (
    put_records_from_body,
    put_records_from_json,
    put_records_output,
    put_records_request,
    read_common_json_body,
    validate_put_records,
)
from broker.gateway.validation import validate_request
from broker.service.records import WrittenRun
from broker.wire import put_entries
from broker.wire.codec import dict_to_message, message_to_dict
from broker.wire.put_entries import PutEntries
from broker.wire.put_results import written_entries

# Every test runs with the C entry reader (wire/put_entries.py) and without it.
pytestmark = pytest.mark.usefixtures("put_entries_both_ways")

_KEY = "k" * 16
_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
_DATA = b"d" * 1024


def _generic(message: kinesis_pb2.PutRecordsInput) -> dict[str, Any] | str:
    request = message_to_dict(message)
    try:
        validate_request("PutRecords", request)
    except ShoalError as error:
        return f"{error.code.kinesis_name}: {error.message}"
    return request


def _fast(message: kinesis_pb2.PutRecordsInput, raw: bytes) -> dict[str, Any] | str:
    try:
        return put_records_request(message, raw)
    except ShoalError as error:
        return f"{error.code.kinesis_name}: {error.message}"


def _entry(**fields: Any) -> kinesis_pb2.PutRecordsRequestEntry:
    return kinesis_pb2.PutRecordsRequestEntry(**fields)


def _input(entries: list[kinesis_pb2.PutRecordsRequestEntry], **top: Any) -> bytes:
    return kinesis_pb2.PutRecordsInput(records=entries, **top).SerializeToString()


def _same(raw: bytes) -> dict[str, Any] | str:
    """Both paths on the same wire bytes; each parses its own message (the fast one clears
    its records)."""
    generic = _generic(kinesis_pb2.PutRecordsInput.FromString(raw))
    fast = _fast(kinesis_pb2.PutRecordsInput.FromString(raw), raw)
    assert fast == generic
    if isinstance(fast, dict) and isinstance(generic, dict):
        assert list(fast) == list(generic)  # the members in the same order too
    return fast


def test_common_entries_read_as_the_generic_path_reads_them() -> None:
    entries = [_entry(data=_DATA, partition_key=f"{i:016x}") for i in range(500)]
    request = _same(_input(entries, stream_name="orders"))
    assert isinstance(request, dict)
    assert request["StreamName"] == "orders"
    assert request["Records"][7] == {"Data": _DATA, "PartitionKey": "0000000000000007"}
    assert list(request["Records"][0]) == ["Data", "PartitionKey"]  # the generic key order
    # Read as columns where the C reader runs, as dicts otherwise.
    assert isinstance(request["Records"], PutEntries) == put_entries.compiled_reader()


@pytest.mark.parametrize(
    "odd",
    [
        _entry(data=_DATA),  # no partition key (valid on an AUTO stream)
        _entry(data=_DATA, partition_key=""),  # present, too short
        _entry(data=_DATA, partition_key="x" * 257),  # too long
        _entry(data=_DATA, partition_key="鍵" * 256),  # at the limit in characters
        _entry(partition_key=_KEY),  # no data
        _entry(data=b"", partition_key=_KEY),  # empty data, present
        _entry(data=b"x" * (10 * 1024 * 1024 + 1), partition_key=_KEY),  # over the model's max
        _entry(data=_DATA, partition_key=_KEY, explicit_hash_key="12"),
        _entry(data=_DATA, partition_key=_KEY, explicit_hash_key=""),  # present, bad pattern
        _entry(data=_DATA, partition_key=_KEY, explicit_hash_key="0x1"),
    ],
)
def test_an_odd_entry_anywhere_gives_the_generic_answer(
    odd: kinesis_pb2.PutRecordsRequestEntry,
) -> None:
    big = len(odd.data) > 1024  # one position is enough for the 10 MiB case (its message)
    for position in (3,) if big else (0, 3):
        entries = [_entry(data=_DATA, partition_key=_KEY) for _ in range(4)]
        entries[position] = odd
        _same(_input(entries, stream_name="s"))


@pytest.mark.parametrize(
    "top",
    [
        {},  # no stream named: valid to the model (the service resolves it)
        {"stream_name": ""},
        {"stream_name": "bad name!"},
        {"stream_name": "s" * 129},
        {"stream_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"},
        {"stream_arn": "not-an-arn"},
        {"stream_name": "s", "stream_id": "nope"},
        {"stream_name": "", "stream_arn": "x", "dry_run": True},
    ],
)
def test_the_other_members_are_checked_by_the_model(top: dict[str, Any]) -> None:
    entries = [_entry(data=_DATA, partition_key=_KEY) for _ in range(3)]
    _same(_input(entries, **top))
    # With a bad entry as well, the messages list both, in the model's order.
    _same(_input([*entries, _entry(data=_DATA, partition_key="")], **top))


@pytest.mark.parametrize("count", [0, 1, 500, 501])
def test_the_entry_count_bounds(count: int) -> None:
    _same(_input([_entry(data=b"x", partition_key="k") for _ in range(count)], stream_name="s"))


def test_random_requests_agree() -> None:
    rng = random.Random(18)
    keys = ["", "k", "x" * 256, "x" * 257, "é" * 3, "鍵" * 200]
    datas = [b"", b"x", _DATA]
    hash_keys = [None, "", "0", "340282366920938463463374607431768211455", "01"]
    for _ in range(300):
        entries = []
        for _ in range(rng.randint(1, 6)):
            fields: dict[str, Any] = {}
            if rng.random() < 0.9:
                fields["partition_key"] = rng.choice(keys)
            if rng.random() < 0.9:
                fields["data"] = rng.choice(datas)
            hash_key = rng.choice(hash_keys) if rng.random() < 0.2 else None
            if hash_key is not None:
                fields["explicit_hash_key"] = hash_key
            entries.append(_entry(**fields))
        _same(_input(entries, stream_name=rng.choice(["s", "", "a b"])))


def _outcome(check: Any, request: dict[str, Any]) -> str:
    try:
        check(request)
    except ShoalError as error:
        return f"{error.code.kinesis_name}: {error.message}"
    return "ok"


def _dict_agrees(request: dict[str, Any]) -> str:
    generic = _outcome(lambda r: validate_request("PutRecords", r), request)
    before = repr(request)
    assert _outcome(validate_put_records, request) == generic
    assert repr(request) == before  # the stand-in is put back
    return generic


def test_the_aws_doors_check_agrees_with_the_model() -> None:
    common = {"Data": _DATA, "PartitionKey": _KEY}
    assert _dict_agrees({"StreamName": "s", "Records": [common] * 500}) == "ok"
    odd_entries: list[Any] = [
        {"Data": _DATA},
        {"PartitionKey": _KEY},
        {"Data": b"", "PartitionKey": _KEY},
        {"Data": bytearray(b"x"), "PartitionKey": _KEY},
        {"Data": "x", "PartitionKey": _KEY},
        {"Data": _DATA, "PartitionKey": ""},
        {"Data": _DATA, "PartitionKey": "鍵" * 257},
        {"Data": _DATA, "PartitionKey": 5},
        {"Data": _DATA, "PartitionKey": None},
        {"Data": _DATA, "PartitionKey": _KEY, "ExplicitHashKey": "1"},
        {"Data": _DATA, "PartitionKey": _KEY, "ExplicitHashKey": "x"},
        {"Data": _DATA, "Unknown": _KEY},
        "not an entry",
    ]
    for odd in odd_entries:
        for top in ({"StreamName": "s"}, {"StreamName": "bad name"}, {}):
            _dict_agrees({**top, "Records": [common, odd, common]})
    big = {"Data": b"x" * (10 * 1024 * 1024 + 1), "PartitionKey": _KEY}  # over the model's max
    _dict_agrees({"StreamName": "s", "Records": [common, big]})
    for records in ([], [common] * 501, None, "x", ({"Data": b"x", "PartitionKey": "k"},)):
        _dict_agrees({"StreamName": "s", "Records": records})
    for top in ({"StreamName": ""}, {"StreamARN": "nope"}, {"StreamName": "s", "DryRun": "x"}):
        _dict_agrees({**top, "Records": [common] * 3})


def _upb(response: dict[str, Any]) -> bytes:
    return dict_to_message(response, kinesis_pb2.PutRecordsOutput).SerializeToString()


def _written(number: int, shard: str = "shardId-000000000000") -> dict[str, str]:
    return {"ShardId": shard, "SequenceNumber": str(number)}


@pytest.mark.parametrize(
    "response",
    [
        {
            "FailedRecordCount": 0,
            "Records": [
                _written(49_600_000_000_000_000_000_000_000 * 10**29 + i) for i in range(500)
            ],
            "EncryptionType": "NONE",
        },
        {
            "FailedRecordCount": 2,
            "Records": [
                _written(1),
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "é" * 90},
                _written(2, "shardId-000000000001"),
                {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."},
                _written(3),
            ],
            "EncryptionType": "KMS",
        },
        {"FailedRecordCount": 300, "Records": []},  # a two-byte varint
        {"Records": [_written(10**130), _written(5, "鍵" * 3), _written(6, "s" * 200)]},
        {"FailedRecordCount": 0, "Records": [{"ShardId": "x", "SequenceNumber": None}]},
        {},
    ],
)
def test_the_answer_is_upbs_bytes(response: dict[str, Any]) -> None:
    assert put_records_output(response) == _upb(response)


def test_an_unknown_member_fails_as_upbs_path_does() -> None:
    with pytest.raises(AssertionError):
        put_records_output({"FailedRecordCount": 0, "Records": [], "Extra": 1})


def _from_body(read: Any, body: dict[str, Any]) -> dict[str, Any] | str:
    try:
        return dict(read(body))
    except ShoalError as error:
        return f"{error.code.kinesis_name}: {error.message}"


def _generic_body(body: dict[str, Any]) -> dict[str, Any]:
    request = decode_request("PutRecords", body, WireFormat.JSON)
    validate_put_records(request)
    return request


def _body_agrees(body: dict[str, Any]) -> dict[str, Any] | str:
    """The AWS door's reading of a JSON body (columns where the C reader runs) against
    `decode_request` + `validate_put_records`, each on its own copy of the parsed body; and
    the reading of its bytes before any parse (`read_common_json_body`) where that takes it."""
    generic = _from_body(_generic_body, orjson.loads(orjson.dumps(body)))
    fast = _from_body(lambda b: put_records_from_body(b, WireFormat.JSON), body)
    assert fast == generic
    if isinstance(fast, dict) and isinstance(generic, dict):
        assert list(fast) == list(generic)
    _bytes_agree(orjson.dumps(body), generic)
    return fast


def _bytes_agree(raw: bytes, generic: dict[str, Any] | str) -> bool:
    """When `read_common_json_body` takes `raw`, its request (or error) is `generic`'s, the
    members in the same order; whether it took it."""
    read = read_common_json_body(raw)
    if read is None:
        return False
    from_bytes = _from_body(lambda _: put_records_from_json(read), {})
    assert from_bytes == generic
    if isinstance(from_bytes, dict) and isinstance(generic, dict):
        assert list(from_bytes) == list(generic)
        assert isinstance(from_bytes["Records"], PutEntries)
        assert from_bytes["Records"].sizes == [
            len(key.encode()) + len(data)
            for key, data in zip(
                from_bytes["Records"].partition_keys, from_bytes["Records"].datas, strict=True
            )
        ]
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_aws_doors_json_body_reads_as_the_generic_path_reads_it() -> None:
    common = {"Data": _b64(_DATA), "PartitionKey": _KEY}
    request = _body_agrees({"StreamName": "s", "Records": [common] * 500})
    assert isinstance(request, dict)
    assert request["Records"][0] == {"Data": _DATA, "PartitionKey": _KEY}
    assert isinstance(request["Records"], PutEntries) == put_entries.compiled_reader()
    assert list(_body_agrees({"Records": [common], "StreamARN": _ARN, "StreamName": "s"})) == [
        "Records",
        "StreamARN",
        "StreamName",
    ]
    _body_agrees({"Records": [common], "StreamName": None, "Unknown": 1})
    odd_entries: list[Any] = [
        {"Data": _b64(_DATA)},
        {"PartitionKey": _KEY},
        {"Data": "", "PartitionKey": _KEY},  # empty data
        {"Data": "eHk", "PartitionKey": _KEY},  # not canonical base64
        {"Data": "eHl=", "PartitionKey": _KEY},  # nonzero bits before the padding
        {"Data": "e$k=", "PartitionKey": _KEY},
        {"Data": 5, "PartitionKey": _KEY},
        {"Data": None, "PartitionKey": _KEY},
        {"Data": _b64(_DATA), "PartitionKey": ""},
        {"Data": _b64(_DATA), "PartitionKey": "鍵" * 256},  # at the limit
        {"Data": _b64(_DATA), "PartitionKey": "鍵" * 257},
        {"Data": _b64(_DATA), "PartitionKey": 5},
        {"Data": _b64(_DATA), "PartitionKey": None},
        {"Data": _b64(_DATA), "PartitionKey": _KEY, "ExplicitHashKey": "1"},
        {"Data": _b64(_DATA), "PartitionKey": _KEY, "ExplicitHashKey": "x"},
        {"Data": _b64(_DATA), "Unknown": _KEY},
        {"Data": _b64(b"x" * (1024 * 1024 + 1)), "PartitionKey": _KEY},  # over the model's max
        [],
        "not an entry",
        None,
    ]
    for odd in odd_entries:
        for top in ({"StreamName": "s"}, {"StreamName": "bad name"}, {}):
            _body_agrees({**top, "Records": [common, odd, common]})
    for records in ([], [common] * 501, None, "x", {"Data": "eA=="}):
        _body_agrees({"StreamName": "s", "Records": records})
    for top in ({"StreamName": ""}, {"StreamARN": "nope"}, {"StreamName": "s", "DryRun": "x"}):
        _body_agrees({**top, "Records": [common] * 3})
        _body_agrees({"Records": [common] * 3, **top})


def test_random_json_bodies_agree() -> None:
    rng = random.Random(30)
    keys = ["", "k", "x" * 256, "x" * 257, "é" * 3, "鍵" * 200]
    datas = ["", "eA==", "eHk=", "eHl6", "eA", "e===", _b64(_DATA)]
    for _ in range(300):
        records = []
        for _ in range(rng.randint(1, 6)):
            entry: dict[str, Any] = {}
            if rng.random() < 0.95:
                entry["Data"] = rng.choice(datas)
            if rng.random() < 0.95:
                entry["PartitionKey"] = rng.choice(keys)
            if rng.random() < 0.05:
                entry["ExplicitHashKey"] = "1"
            records.append(entry)
        _body_agrees({"StreamName": rng.choice(["s", "", "a b"]), "Records": records})


def _generic_of_bytes(raw: bytes) -> dict[str, Any] | str:
    return _from_body(_generic_body, orjson.loads(raw))


def test_the_common_body_is_read_from_its_bytes() -> None:
    """The bytes an SDK sends, in any spacing and member order, are read without a parse where
    the C reader runs (and never without it), as the parsed body reads."""
    data = _b64(_DATA)
    bodies = [
        b'{"StreamName":"s","Records":[{"Data":"%s","PartitionKey":"k"}]}' % data.encode(),
        b' \r\n{ "Records" : [ { "PartitionKey" : "k 1" , "Data" : "eA==" } ,\t'
        b'{"Data":"eHk=","PartitionKey":"~!"} ] , "StreamARN" : "%s" }\n ' % _ARN.encode(),
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}],"StreamName":"a","StreamName":"s"}',
        b'{"StreamName":"","Records":[{"Data":"eA==","PartitionKey":"k"}]}',  # the model refuses
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}],"DryRun":"x"}',  # an unknown member
    ]
    for raw in bodies:
        assert _bytes_agree(raw, _generic_of_bytes(raw)) == put_entries.compiled_reader(), raw


@pytest.mark.parametrize(
    "raw",
    [
        b'{"Records":[{"Data":"Z\\/vYmE=","PartitionKey":"k"}]}',  # an escape in Data
        b'{"Records":[{"Data":"eA==","PartitionKey":"\\u006b"}]}',  # an escape in a key
        b'{"Records":[{"Data":"eA==","PartitionKey":"\xc3\xa9"}]}',  # not ASCII
        b'{"Records":[{"Data":"eA==","PartitionKey":"k\x01"}]}',  # a control character
        b'{"Records":[{"Data":"e\x01A=","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"e A=","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}],"StreamName":5}',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}],"StreamName":null}',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}],"Tags":{"a":"b"}}',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}],"Records":[]}',  # repeated
        b'{"Records":[{"Data":"eA==","PartitionKey":"k","Data":"eA=="}]}',
        b'{"Records":[{"Data":"eA==","Data":"eA=="}]}',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"},]}',  # not JSON
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}]}x',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}]',
        b'{"Records":[{"Data":"eA==","PartitionKey":"k"}]}}',
        b'{"Records":[]}',
        b'{"Records":[{"Data":"","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eA=A","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eA=A","PartitionKey":"k"},{"Data":"eA==","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"=AAA","PartitionKey":"k"},{"Data":"eHk=","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eA==eA==","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eHl=","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eA=","PartitionKey":"k"}]}',
        b'{"Records":[{"Data":"eA==","PartitionKey":""}]}',
        b'{"StreamName":"s"}',
        b"{}",
        b"[]",
        b"",
    ],
)
def test_a_body_that_is_not_the_common_one_is_left_to_the_parser(raw: bytes) -> None:
    assert read_common_json_body(raw) is None


def test_the_count_bounds_of_the_bytes() -> None:
    entry = b'{"Data":"eA==","PartitionKey":"k"}'
    for count, taken in ((1, True), (500, True), (501, False)):
        raw = b'{"Records":[%s]}' % b",".join([entry] * count)
        assert _bytes_agree(raw, _generic_of_bytes(raw)) == (
            taken and put_entries.compiled_reader()
        )


def test_the_data_size_bounds_of_the_bytes() -> None:
    """The C pass takes a Data of 1 byte up to the model's maximum (decoded), and counts each
    record's size (key + data) as it goes; an empty or a larger one is left to the parser."""
    data_max = put_records._DATA_MAX
    for size, taken in ((1, True), (data_max, True), (data_max + 1, False)):
        raw = (
            b'{"Records":[{"Data":"eA==","PartitionKey":"k"},{"Data":"%s","PartitionKey":"kk"}]}'
            % (base64.b64encode(bytes(size)))
        )
        read = read_common_json_body(raw)
        assert (read is not None) == (taken and put_entries.compiled_reader()), size
        if read is not None:
            assert read.entries.sizes == [2, 2 + size]
            assert [len(data) for data in read.entries.datas] == [1, size]


def test_damaged_bodies_are_read_as_parsed_or_left_to_the_parser() -> None:
    """Untrusted bytes: a body cut short, with bytes changed or inserted anywhere, never
    crashes the reader, and whatever it takes reads as the parsed body does."""
    rng = random.Random(33)
    entries = b",".join(
        b'{"Data":"%s","PartitionKey":"%s"}'
        % (_b64(rng.randbytes(rng.randint(1, 7))).encode(), str(i).encode())
        for i in range(4)
    )
    base = b'{"StreamName":"s","Records":[%s]}' % entries
    alphabet = b'{}[],:"\\ =Ae\x00\x7f\xc3/+'
    taken = 0
    for _ in range(3000):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw) + 1)
            if rng.random() < 0.5 and at < len(raw):
                raw[at] = rng.choice(alphabet)
            else:
                raw[at:at] = bytes([rng.choice(alphabet)])
        if rng.random() < 0.1:
            del raw[rng.randrange(len(raw)) :]
        damaged = bytes(raw)
        try:
            generic = _generic_of_bytes(damaged)
        except orjson.JSONDecodeError:
            assert read_common_json_body(damaged) is None
            continue
        taken += _bytes_agree(damaged, generic)
    assert taken > 0 or not put_entries.compiled_reader()


@pytest.mark.parametrize(
    ("shard_id", "numbers"),
    [
        ("shardId-000000000000", [str(49_600 * 10**51 + i) for i in range(500)]),
        ("shardId-000000000007", ["7"]),
        ("shardId-000000000001", ["12", "3"]),  # numbers of two lengths: one by one
        ("鍵" * 3, ["5", "6"]),  # not ASCII: one by one
        ("s" * 200, ["5"]),  # a two-byte length: upb's
        ("shardId-000000000000", [str(10**130)]),  # an entry past one-byte lengths: upb's
    ],
)
def test_a_put_written_whole_by_one_shard_is_upbs_bytes(shard_id: str, numbers: list[str]) -> None:
    """`WrittenRun` (every record written by one shard's append) is written from its columns
    in one join: the same bytes as its entries one by one, and as upb's."""
    entries = [{"ShardId": shard_id, "SequenceNumber": number} for number in numbers]
    run = WrittenRun(entries, shard_id, numbers)
    assert run == entries
    response = {"FailedRecordCount": 0, "Records": run, "EncryptionType": "NONE"}
    expected = _upb({**response, "Records": entries})
    assert put_records_output(response) == expected
    assert put_records_output({**response, "Records": entries}) == expected


def test_a_put_whose_entries_were_written_ahead_is_answered_with_them() -> None:
    """The service writes a whole gRPC put's result entries while it is fsynced
    (`WrittenRun.prepared`): the door answers with those bytes as they are."""
    numbers = [str(49_600 * 10**51 + i) for i in range(3)]
    entries = [{"ShardId": "shardId-000000000000", "SequenceNumber": n} for n in numbers]
    response = {"FailedRecordCount": 0, "EncryptionType": "NONE"}
    ahead = written_entries("shardId-000000000000", numbers)
    assert ahead is not None
    run = WrittenRun(entries, "shardId-000000000000", numbers, prepared=ahead)
    assert put_records_output({**response, "Records": run}) == _upb(
        {**response, "Records": entries}
    )
    marked = WrittenRun(entries, "shardId-000000000000", numbers, prepared=b"<ahead>")
    assert b"<ahead>" in put_records_output({**response, "Records": marked})
