"""aws_codec on its own: the wire forms of blobs and timestamps, and what counts as malformed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cbor2
import pytest

from broker.errors import ShoalError
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
