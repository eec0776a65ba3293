"""Protobuf's wire format, the few pieces written by hand (issue 18): a message whose big bytes
field (an Append's stored batches, a forwarded append's request) the generated code would copy
in and serialize again is written as its small fields, serialized by the generated code, and
the big bytes as they are, joined once into the frame. The receiver decodes it with the
generated code (fields may come in any order; a field given twice is merged as the format
says), so tests compare decoded messages with the generated code's own.
"""

from __future__ import annotations

VARINT = 0
LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative integer (at most 64 bits, as the format allows)."""
    assert 0 <= value < 1 << 64, value
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    assert field >= 1
    assert wire_type in (VARINT, LENGTH_DELIMITED)
    return varint(field << 3 | wire_type)


def length_delimited_head(field: int, size: int) -> bytes:
    """What precedes `size` bytes of field `field` (bytes, string or a message)."""
    return tag(field, LENGTH_DELIMITED) + varint(size)


def varint_field(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value)
