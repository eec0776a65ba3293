"""The AWS event-stream message format (`application/vnd.amazon.eventstream`), encoding only.

SubscribeToShard answers the AWS SDKs with a stream of these binary messages (REFERENCE.md
§1.1; botocore/eventstream.py is the decoder the tests check against):

    prelude:  total length (u32) | headers length (u32) | CRC32 of those 8 bytes (u32)
    headers:  name length (u8) | name (UTF-8) | value type (u8) | value
              (type 7, string: length (u16) | UTF-8 bytes); the only type Kinesis sends
    payload:  the event's members in the request's wire format (JSON 1.1 or CBOR)
    trailer:  CRC32 of everything before it (u32)

All integers are big-endian. Kinesis sends, in order: one `initial-response` event (an empty
document), `SubscribeToShardEvent` events, and, when the stream fails, one `exception` message
whose `:exception-type` is the Kinesis error name and whose payload is `{"message": ...}`
(botocore raises it as that modeled exception).

A small encoder rather than a library: the format is fixed and short, `awscrt` (the one
maintained implementation in Python) is a large native dependency Shoal does not otherwise
need, and `zlib.crc32` is the CRC the format uses. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

_PRELUDE = struct.Struct(">II")
_U32 = struct.Struct(">I")
_STRING_HEADER = 7  # botocore.eventstream's header type for a UTF-8 string
_HEADERS_BYTES_MAX = 128 * 1024  # the format's limits (botocore.eventstream)
PAYLOAD_BYTES_MAX = 24 * 1024 * 1024

INITIAL_RESPONSE = "initial-response"


def encode_message(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message with string `headers` (in order) and `payload`."""
    encoded_headers = b"".join(_header(name, value) for name, value in headers)
    assert len(encoded_headers) <= _HEADERS_BYTES_MAX
    assert len(payload) <= PAYLOAD_BYTES_MAX
    total = _PRELUDE.size + _U32.size + len(encoded_headers) + len(payload) + _U32.size
    prelude = _PRELUDE.pack(total, len(encoded_headers))
    head = prelude + _U32.pack(zlib.crc32(prelude))
    body = head + encoded_headers + payload
    return body + _U32.pack(zlib.crc32(body))


def event_message(event_type: str, payload: bytes, content_type: str) -> bytes:
    """An `event` message (`initial-response`, `SubscribeToShardEvent`, ...)."""
    return encode_message(
        (
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", content_type),
        ),
        payload,
    )


def exception_message(exception_type: str, payload: bytes, content_type: str) -> bytes:
    """An `exception` message: a modeled error (the Kinesis error name) ending the stream."""
    return encode_message(
        (
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", content_type),
        ),
        payload,
    )


def _header(name: str, value: str) -> bytes:
    name_bytes = name.encode("utf-8")
    value_bytes = value.encode("utf-8")
    assert 0 < len(name_bytes) < 256
    assert len(value_bytes) < 2**15
    return (
        bytes((len(name_bytes),))
        + name_bytes
        + bytes((_STRING_HEADER,))
        + struct.pack(">H", len(value_bytes))
        + value_bytes
    )
