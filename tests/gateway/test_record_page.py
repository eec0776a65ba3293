"""`wire.record_page`: a GetRecords page (and a SubscribeToShard event) written straight to
protobuf bytes is byte for byte what upb writes for the same answer (the gRPC door sends it
as the GetRecordsOutput or SubscribeToShardEventStream), for
every shape a record can take: empty and large payloads (multi-byte varint lengths), long and
non-ASCII partition keys, both encryption types, several arrival times in one page, records
of another shape (the generic path), and the rest of the answer (ChildShards)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.api.kinesis.v1 import kinesis_pb2
from broker.wire.codec import dict_to_message
from broker.wire.record_page import (
    get_records_output,
    subscribe_to_shard_event_stream,
    varint,
)

_T0 = datetime(2026, 12, 7, 0, 0, 0, 123_000, tzinfo=UTC)


def _record(
    i: int, *, data: bytes, key: str, at: datetime, kms: bool = False, clear: bool = False
) -> dict[str, Any]:
    record = {
        "SequenceNumber": f"{49_600_000_000_000_000_000_000_000_000_000_000_000_000_000 + i}",
        "ApproximateArrivalTimestamp": at,
        "Data": data,
        "PartitionKey": key,
        "EncryptionType": "KMS" if kms else "NONE",
    }
    if clear:  # as the service answers a clear record: no EncryptionType
        del record["EncryptionType"]
    return record


def _upb(response: dict[str, Any]) -> bytes:
    return dict_to_message(response, kinesis_pb2.GetRecordsOutput).SerializeToString()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 20, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    message = kinesis_pb2.GetRecordsOutput(millis_behind_latest=value)
    assert message.SerializeToString() == b"\x18" + varint(value)


def test_a_page_is_byte_for_byte_what_upb_writes() -> None:
    later = _T0 + timedelta(milliseconds=1_234)
    records = [
        _record(0, data=b"", key="k", at=_T0),
        _record(1, data=b"x" * 127, key="k" * 256, at=_T0),
        _record(2, data=b"y" * 128, key="ключ-🔑", at=_T0, kms=True),
        _record(3, data=bytes(range(256)) * 4_096, key="big", at=later),  # 1 MiB
        _record(4, data=b"z", key="k", at=later),
        {"SequenceNumber": "5", "Data": b"no arrival", "PartitionKey": "k"},  # another shape
        _record(6, data=b"after", key="k", at=_T0 + timedelta(seconds=-5)),
        _record(7, data=b"clear", key="k", at=_T0, clear=True),
        _record(8, data=b"sealed", key="k", at=_T0, kms=True),
        _record(9, data=b"clear again", key="k", at=_T0, clear=True),
    ]
    response = {
        "Records": records,
        "NextShardIterator": "AAAA" * 50,
        "MillisBehindLatest": 1_500,
        "ChildShards": [
            {
                "ShardId": "shardId-000000000001",
                "ParentShards": ["shardId-000000000000"],
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
            }
        ],
    }
    written = get_records_output(response)
    assert written == _upb(response)
    parsed = kinesis_pb2.GetRecordsOutput.FromString(written)
    assert [r.data for r in parsed.records][3] == records[3]["Data"]
    assert parsed.records[2].partition_key == "ключ-🔑"
    assert parsed.records[2].encryption_type == "KMS"
    assert not parsed.records[7].HasField("encryption_type")


def test_clear_and_sealed_records_are_written_here_not_through_upb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the page's tail goes through `dict_to_message`: records as the service shapes
    them (a clear one without EncryptionType) take the direct path."""
    from broker.wire import record_page

    records = [
        _record(i, data=b"d", key="k", at=_T0, clear=i % 2 == 0, kms=i % 2 == 1) for i in range(6)
    ]
    response = {"Records": records, "NextShardIterator": "it", "MillisBehindLatest": 0}
    expected = _upb(response)
    generic = []

    def counting(value: Any, message_class: Any) -> Any:
        generic.append(message_class)
        return dict_to_message(value, message_class)

    monkeypatch.setattr(record_page, "dict_to_message", counting)
    assert get_records_output(response) == expected
    assert generic.count(kinesis_pb2.Record) == 1  # the arrival timestamp, once per page


@pytest.mark.parametrize(
    "response",
    [
        {"Records": [], "MillisBehindLatest": 0},
        {"Records": [], "NextShardIterator": "it", "MillisBehindLatest": 0},
        {"MillisBehindLatest": 7},
    ],
)
def test_an_empty_page_is_what_upb_writes(response: dict[str, Any]) -> None:
    assert get_records_output(response) == _upb(response)


def _event_upb(event: dict[str, Any]) -> bytes:
    message = dict_to_message(event, kinesis_pb2.SubscribeToShardEventStream)
    return message.SerializeToString()


@pytest.mark.parametrize(
    "event",
    [
        {
            "SubscribeToShardEvent": {
                "Records": [
                    _record(0, data=b"a" * 200, key="k", at=_T0),
                    _record(1, data=b"", key="ключ", at=_T0, kms=True),
                ],
                "ContinuationSequenceNumber": "49600000000000000000000000000000000000000000000001",
                "MillisBehindLatest": 0,
            }
        },
        {"SubscribeToShardEvent": {"Records": [], "MillisBehindLatest": 12}},
        {  # the last event of a closed shard: no continuation, its children
            "SubscribeToShardEvent": {
                "Records": [_record(2, data=b"x" * 20_000, key="k", at=_T0)],
                "MillisBehindLatest": 0,
                "ChildShards": [
                    {
                        "ShardId": "shardId-000000000002",
                        "ParentShards": ["shardId-000000000000"],
                        "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"},
                    }
                ],
            }
        },
    ],
)
def test_a_subscribe_to_shard_event_is_what_upb_writes(event: dict[str, Any]) -> None:
    written = subscribe_to_shard_event_stream(event)
    assert written == _event_upb(event)
    parsed = kinesis_pb2.SubscribeToShardEventStream.FromString(written)
    assert len(parsed.subscribe_to_shard_event.records) == len(
        event["SubscribeToShardEvent"]["Records"]
    )
