"""The event-stream encoder (broker/gateway/event_stream.py) against botocore's own decoder.

Goal: every message Shoal frames is one botocore's `EventStreamBuffer` accepts (prelude and
message CRCs verified by botocore), with the headers and payload put in, and a corrupted byte
is caught by those CRCs. Pure: no node.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from broker.gateway import event_stream


def decode(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages: list[Any] = list(buffer)
    return [(dict(message.headers), message.payload) for message in messages]


@pytest.mark.parametrize(
    "payload", [b"", b"{}", b'{"Records":[]}', bytes(range(256)) * 300, "é✓".encode()]
)
def test_event_messages_decode_with_botocore(payload: bytes) -> None:
    framed = event_stream.event_message("SubscribeToShardEvent", payload, "application/json")
    ((headers, decoded),) = decode(framed)
    assert headers == {
        ":message-type": "event",
        ":event-type": "SubscribeToShardEvent",
        ":content-type": "application/json",
    }
    assert decoded == payload


def test_a_stream_of_messages_splits_where_botocore_expects() -> None:
    stream = b"".join(
        [
            event_stream.event_message(event_stream.INITIAL_RESPONSE, b"{}", "x"),
            event_stream.event_message("SubscribeToShardEvent", b"1", "x"),
            event_stream.exception_message("ResourceInUseException", b'{"message":"m"}', "x"),
        ]
    )
    buffer = EventStreamBuffer()
    messages: list[Any] = []
    for i in range(0, len(stream), 7):  # arbitrary chunking, as the network delivers it
        buffer.add_data(stream[i : i + 7])
        messages.extend(buffer)
    assert [m.headers.get(":event-type") for m in messages[:2]] == [
        "initial-response",
        "SubscribeToShardEvent",
    ]
    assert messages[2].headers[":message-type"] == "exception"
    assert messages[2].headers[":exception-type"] == "ResourceInUseException"
    assert messages[2].payload == b'{"message":"m"}'


def test_a_corrupted_message_fails_its_checksum() -> None:
    framed = bytearray(event_stream.event_message("SubscribeToShardEvent", b"payload", "x"))
    framed[-6] ^= 0xFF  # inside the payload
    with pytest.raises(ChecksumMismatch):
        decode(bytes(framed))
