"""EBML, the binary framing under Matroska: element ids, sizes and the few value types Shoal
reads or writes. Pure functions over bytes.

Shoal never decodes media here (PyAV does, `media_codec.py`); it only needs the container's
framing to cut a PutMedia body into fragments (one Cluster each, `mkv.py`) and to wrap stored
fragments in the tags GetMedia adds. That is a few dozen lines of the EBML specification
(RFC 8794): a variable-length integer (VINT) for the id, another for the size, the payload.

Ids are kept with their length marker bits, as the Matroska specification writes them
(Cluster is 0x1F43B675). A size whose value bits are all ones means "unknown" (`UNKNOWN_SIZE`):
live producers write Segments and Clusters that way, and their end is the next element of an
enclosing level.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from broker.video import messages

UNKNOWN_SIZE = -1
_VINT_LENGTH_MAX = 8


class EbmlError(ValueError):
    """Bytes that are not EBML (a VINT of length 0 or over 8, a value that does not fit)."""


@dataclass(frozen=True, slots=True)
class ElementHeader:
    """An element's id and payload size (`UNKNOWN_SIZE` for unknown) and how many bytes the
    id and size took (`header_length`): the payload starts at `offset + header_length`."""

    element_id: int
    size: int
    header_length: int


def _vint_length(first: int) -> int:
    for length in range(1, _VINT_LENGTH_MAX + 1):
        if first & (0x80 >> (length - 1)):
            return length
    raise EbmlError(messages.EBML_VINT_WITHOUT_MARKER)


def read_id(data: bytes | bytearray | memoryview, offset: int) -> tuple[int, int] | None:
    """(id with its marker bits, length) at `offset`, or None when `data` ends first."""
    if offset >= len(data):
        return None
    length = _vint_length(data[offset])
    if length > 4:
        raise EbmlError(messages.ebml_id_too_long(length=length))
    if offset + length > len(data):
        return None
    return int.from_bytes(data[offset : offset + length], "big"), length


def read_size(data: bytes | bytearray | memoryview, offset: int) -> tuple[int, int] | None:
    """(size, length) at `offset`, `UNKNOWN_SIZE` when every value bit is one; None when
    `data` ends first."""
    if offset >= len(data):
        return None
    length = _vint_length(data[offset])
    if offset + length > len(data):
        return None
    raw = int.from_bytes(data[offset : offset + length], "big")
    value = raw & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return UNKNOWN_SIZE, length
    return value, length


def read_header(data: bytes | bytearray | memoryview, offset: int) -> ElementHeader | None:
    """The element header at `offset`, or None when `data` ends before it does."""
    element_id = read_id(data, offset)
    if element_id is None:
        return None
    size = read_size(data, offset + element_id[1])
    if size is None:
        return None
    return ElementHeader(
        element_id=element_id[0], size=size[0], header_length=element_id[1] + size[1]
    )


def encode_id(element_id: int) -> bytes:
    assert 0 < element_id <= 0xFFFFFFFF, element_id
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def encode_size(size: int) -> bytes:
    """The shortest VINT for `size` (never the all-ones pattern, which means unknown)."""
    assert size >= 0, size
    for length in range(1, _VINT_LENGTH_MAX + 1):
        if size < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | size).to_bytes(length, "big")
    raise EbmlError(messages.ebml_size_too_large(size=size))


def unknown_size() -> bytes:
    """The 8-byte unknown size, as live muxers write it."""
    return b"\x01\xff\xff\xff\xff\xff\xff\xff"


def element(element_id: int, payload: bytes) -> bytes:
    return encode_id(element_id) + encode_size(len(payload)) + payload


def uint_element(element_id: int, value: int) -> bytes:
    assert value >= 0, value
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def string_element(element_id: int, value: str) -> bytes:
    return element(element_id, value.encode("utf-8"))


def read_uint(payload: bytes | bytearray | memoryview) -> int:
    if len(payload) > 8:
        raise EbmlError(messages.ebml_unsigned_size(size=len(payload)))
    return int.from_bytes(payload, "big")


def read_float(payload: bytes | bytearray | memoryview) -> float:
    if len(payload) == 4:
        value: float = struct.unpack(">f", payload)[0]
        return value
    if len(payload) == 8:
        value = struct.unpack(">d", payload)[0]
        return value
    if len(payload) == 0:
        return 0.0
    raise EbmlError(messages.ebml_float_size(size=len(payload)))


def children(payload: bytes | bytearray | memoryview) -> list[tuple[int, memoryview]]:
    """The (id, payload) of each child of a master element whose payload is complete; an
    unknown-size child or one that runs past the end is an EbmlError."""
    view = memoryview(payload)
    found: list[tuple[int, memoryview]] = []
    offset = 0
    while offset < len(view):  # bounded: every pass moves past one element
        header = read_header(view, offset)
        if header is None or header.size == UNKNOWN_SIZE:
            raise EbmlError(messages.EBML_CHILD_TRUNCATED)
        start = offset + header.header_length
        end = start + header.size
        if end > len(view):
            raise EbmlError(messages.EBML_CHILD_PAST_PARENT)
        found.append((header.element_id, view[start:end]))
        offset = end
    return found
