"""aws_codec on its own: the wire forms of blobs and timestamps, and what counts as malformed."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import cbor2
import pybase64
import pytest

from broker.errors import ShoalError
from broker.gateway import aws_codec
from broker.gateway.aws_codec import (
    WireFormat,
    decode_request,
    encode_body,
    parse_body,
    wire_format_for,
)

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
MOMENT_MS = 1_767_323_045_678


def iterator_request(timestamp: object) -> dict[str, object]:
    return {
        "StreamName": "s",
        "ShardId": "shardId-000000000000",
        "ShardIteratorType": "AT_TIMESTAMP",
        "Timestamp": timestamp,
    }


def test_content_types() -> None:
    assert wire_format_for("application/x-amz-json-1.1") is WireFormat.JSON
    assert wire_format_for("Application/X-Amz-Cbor-1.1; charset=utf-8") is WireFormat.CBOR
    assert wire_format_for("application/json") is None
    assert wire_format_for("") is None


def test_json_timestamps_are_seconds_and_cbor_tag_1_is_milliseconds() -> None:
    as_json = parse_body(json.dumps(iterator_request(MOMENT_MS / 1000)).encode(), WireFormat.JSON)
    assert decode_request("GetShardIterator", as_json, WireFormat.JSON)["Timestamp"] == MOMENT
    tagged = cbor2.dumps(iterator_request(cbor2.CBORTag(1, MOMENT_MS)))
    as_cbor = parse_body(tagged, WireFormat.CBOR)
    assert decode_request("GetShardIterator", as_cbor, WireFormat.CBOR)["Timestamp"] == MOMENT
    untagged = parse_body(cbor2.dumps(iterator_request(MOMENT_MS)), WireFormat.CBOR)
    assert decode_request("GetShardIterator", untagged, WireFormat.CBOR)["Timestamp"] == MOMENT


def test_responses_encode_blobs_and_timestamps_per_format() -> None:
    response = {"Records": [{"Data": b"\x00\xff", "ApproximateArrivalTimestamp": MOMENT}]}
    as_json = json.loads(encode_body(response, WireFormat.JSON))
    assert as_json == {"Records": [{"Data": "AP8=", "ApproximateArrivalTimestamp": 1767323045.678}]}
    as_cbor = cbor2.loads(
        encode_body(response, WireFormat.CBOR), semantic_decoders={1: lambda v, _i: ("tag1", v)}
    )
    assert as_cbor == {
        "Records": [{"Data": b"\x00\xff", "ApproximateArrivalTimestamp": ("tag1", MOMENT_MS)}]
    }


def test_blobs_decode_from_base64_or_byte_strings() -> None:
    request = {"StreamName": "s", "PartitionKey": "k", "Data": "aGVsbG8="}
    assert decode_request("PutRecord", request, WireFormat.JSON)["Data"] == b"hello"
    raw: dict[str, object] = {"StreamName": "s", "PartitionKey": "k", "Data": b"hello"}
    assert decode_request("PutRecord", raw, WireFormat.CBOR)["Data"] == b"hello"


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (b"", WireFormat.JSON),
        (b"null", WireFormat.JSON),
        (b'"text"', WireFormat.JSON),
        (b"[" * 10_000 + b"]" * 10_000, WireFormat.JSON),
        (b"\x9f" * 100, WireFormat.CBOR),  # deeply nested indefinite arrays, never closed
        (cbor2.dumps({"a": float("nan")})[:-1], WireFormat.CBOR),  # truncated
    ],
)
def test_malformed_bodies(body: bytes, wire: WireFormat) -> None:
    with pytest.raises(ShoalError) as caught:
        parse_body(body, wire)
    assert caught.value.code.kinesis_name == "SerializationException"


@pytest.mark.parametrize("timestamp", [float("inf"), -1, 10**20, True, [1], cbor2.CBORTag(1, "x")])
def test_out_of_range_or_mistyped_timestamps(timestamp: object) -> None:
    body = parse_body(cbor2.dumps(iterator_request(timestamp)), WireFormat.CBOR)
    with pytest.raises(ShoalError) as caught:
        decode_request("GetShardIterator", body, WireFormat.CBOR)
    assert caught.value.code.kinesis_name == "SerializationException"


def put_records(records: object) -> dict[str, object]:
    return {"StreamName": "s", "Records": records}


GOOD = {"Data": "aGk=", "PartitionKey": "k"}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([GOOD, {"Data": "abc", "PartitionKey": "k"}], "Base64 encoded length is expected a"),
        ([GOOD, {"Data": "YR==", "PartitionKey": "k"}], "Invalid last non-pad Base64 character"),
        ([GOOD, {"Data": "aGl=", "PartitionKey": "k"}], "Invalid last non-pad Base64 character"),
        ([GOOD, {"Data": "a$==", "PartitionKey": "k"}], "Invalid Base64 character"),
        ([GOOD, {"Data": 5, "PartitionKey": "k"}], "TruncatingBigNumber can not be converted"),
        ([{"Data": "aGk=", "PartitionKey": 5}], "TruncatingBigNumber can not be converted"),
        ([{"Data": "aGk=", "PartitionKey": ["k"]}], "Start of list found where not expected"),
        ([GOOD, ["x"]], "Start of list found where not expected"),
        ([GOOD, "x"], "Expected null"),
        ({"a": GOOD}, "Start of structure or map found where not expected."),
    ],
)
def test_put_records_entries_refused_as_aws_words_it(records: object, message: str) -> None:
    """PutRecords' entries take a one-loop decoder; what it does not take falls back to the
    member-by-member one, whose messages are AWS's (the first bad entry is the one named)."""
    with pytest.raises(ShoalError) as caught:
        decode_request("PutRecords", put_records(records), WireFormat.JSON)
    assert caught.value.code.kinesis_name == "SerializationException"
    assert message in caught.value.message


def test_put_records_entries_decode_alike_on_both_wires() -> None:
    json_records = [
        GOOD,
        None,  # dropped, as a null member is
        {"Data": "", "PartitionKey": "k", "ExplicitHashKey": "7"},
        {"Data": "aGVsbG8=", "PartitionKey": "k", "Unknown": 1, "ExplicitHashKey": None},
    ]
    expected = [
        {"Data": b"hi", "PartitionKey": "k"},
        {"Data": b"", "PartitionKey": "k", "ExplicitHashKey": "7"},
        {"Data": b"hello", "PartitionKey": "k"},
    ]
    decoded = decode_request("PutRecords", put_records(json_records), WireFormat.JSON)
    assert decoded["Records"] == expected
    cbor_records = [{"Data": b"hi", "PartitionKey": "k"}, {"Data": "aGk=", "PartitionKey": "k"}]
    decoded = decode_request("PutRecords", put_records(cbor_records), WireFormat.CBOR)
    assert decoded["Records"] == [{"Data": b"hi", "PartitionKey": "k"}] * 2


def _near_base64(rng: random.Random) -> str:
    alphabet = "AQgwEIMUYcko048Bz+/=-_ "
    if rng.random() < 0.5:
        text = list(pybase64.b64encode_as_string(rng.randbytes(rng.randrange(9))))
        if text and rng.random() < 0.7:
            text[rng.randrange(len(text))] = rng.choice(alphabet)
        return "".join(text)
    return "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 3, 4, 8))))


def _full_blob(text: str) -> bytes | None:
    try:
        return aws_codec._blob(text)
    except ShoalError:
        return None


@pytest.mark.usefixtures("put_entries_both_ways")
def test_the_fast_base64_check_agrees_with_the_full_one() -> None:
    """Random runs of near-base64 strings (padding anywhere, non-zero pad bits, other
    alphabets, odd lengths): `canonical_blobs` decodes a run exactly as `_blob` decodes each
    of its texts, and refuses the run when `_blob` refuses any one of them."""
    rng = random.Random(18)
    for _ in range(20_000):
        texts = [_near_base64(rng) for _ in range(rng.choice((1, 1, 2, 5)))]
        each = [_full_blob(text) for text in texts]
        expected = None if None in each else each
        assert aws_codec.canonical_blobs(texts) == expected, texts


@pytest.mark.usefixtures("put_entries_both_ways")
def test_a_run_of_blobs_keeps_each_texts_bytes() -> None:
    """Texts of every padding next to each other decode to their own bytes (the joined decode
    places each one's bytes after the zero bytes of the padding before it)."""
    rng = random.Random(7)
    datas = [rng.randbytes(size) for size in (1, 2, 3, 1024, 0, 5, 1023, 1)]
    texts = [pybase64.b64encode_as_string(data) for data in datas]
    assert aws_codec.canonical_blobs(texts) == datas
    assert aws_codec.canonical_blobs([]) == []


def test_cbor_responses_carry_millisecond_tags_at_any_depth() -> None:
    response = {
        "StreamDescription": {"StreamCreationTimestamp": MOMENT, "Shards": [], "Open": True},
        "Pairs": ("a", "b"),
        "Before1970": datetime(1960, 1, 1, tzinfo=UTC),
    }
    decoded = cbor2.loads(
        encode_body(response, WireFormat.CBOR), semantic_decoders={1: lambda v, _i: ("tag1", v)}
    )
    assert decoded == {
        "StreamDescription": {
            "StreamCreationTimestamp": ("tag1", MOMENT_MS),
            "Shards": [],
            "Open": True,
        },
        "Pairs": ["a", "b"],
        "Before1970": ("tag1", -315_619_200_000),
    }


def test_json_timestamps_of_alternating_moments() -> None:
    """Each record's timestamp is its own, when the moments of neighbours differ or repeat
    (the JSON encoder keeps the last moment's seconds)."""
    later = datetime(2026, 1, 2, 3, 4, 6, 1_000, tzinfo=UTC)
    moments = [MOMENT, MOMENT, later, MOMENT, later, later]
    response = {"Records": [{"ApproximateArrivalTimestamp": m, "Data": b"x"} for m in moments]}
    decoded = json.loads(encode_body(response, WireFormat.JSON))
    assert [r["ApproximateArrivalTimestamp"] for r in decoded["Records"]] == [
        m.timestamp() for m in moments
    ]
