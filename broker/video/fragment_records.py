"""How a fragment lives in the video stream's internal Kinesis stream: as one record, or as
several consecutive chunks when it is larger than a record. Pure encoding and reassembly.

Every record's data starts with a fixed header:

    magic "KVF1" | session id (16 bytes) | fragment ordinal in the session (u32)
    | chunk index (u16) | chunk count (u16)

followed by its slice of the fragment blob:

    u32 metadata length | metadata (JSON) | u32 header length | MKV header | Cluster

The session id names one PutMedia connection, so chunks of fragments from two producers that
write at once are told apart; `FragmentAssembler` joins them back whatever else lies between.
The fragment's number is the sequence number of its first record, which the log hands out:
unique in the stream, increasing in arrival order, and decodable to the record's position, so
a read can start at a fragment number without a scan.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass

MAGIC = b"KVF1"
_RECORD_HEADER = struct.Struct(">4s16sIHH")
_LENGTH = struct.Struct(">I")
PARTITION_KEY = "fragment"  # one shard: every fragment of a stream in one total order
# Partial fragments kept while reading (a producer that died between two chunks leaves one
# that never completes; it is dropped once this many others are pending).
_PENDING_MAX = 16


class FragmentRecordError(ValueError):
    """A record that is not a fragment chunk written by this module."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FragmentMetadata:
    producer_timestamp_ms: int
    server_timestamp_ms: int  # when the node started receiving the fragment
    timecode_ms: int  # the Cluster's timecode as the producer wrote it
    duration_ms: int
    frame_count: int
    # The producer's AWS_KINESISVIDEO_NOTIFICATION payload (name, value pairs in order): the
    # SNS notification owed once the fragment is persisted. Absent (None) in most fragments
    # and in every fragment stored before notifications were sent.
    notification: tuple[tuple[str, str], ...] | None = None

    def to_json(self) -> bytes:
        document: dict[str, object] = {
            "producer_timestamp_ms": self.producer_timestamp_ms,
            "server_timestamp_ms": self.server_timestamp_ms,
            "timecode_ms": self.timecode_ms,
            "duration_ms": self.duration_ms,
            "frame_count": self.frame_count,
        }
        if self.notification is not None:
            document["notification"] = [list(pair) for pair in self.notification]
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> FragmentMetadata:
        try:
            document = json.loads(data)
            fields = {name: int(document[name]) for name in _METADATA_FIELDS}
            pairs = document.get("notification")
            notification = (
                None if pairs is None else tuple((str(name), str(value)) for name, value in pairs)
            )
            return cls(**fields, notification=notification)
        except (ValueError, KeyError, TypeError) as error:
            raise FragmentRecordError(f"bad fragment metadata: {error}") from error


_METADATA_FIELDS = (
    "producer_timestamp_ms",
    "server_timestamp_ms",
    "timecode_ms",
    "duration_ms",
    "frame_count",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFragment:
    """A fragment read back: its number, metadata, the MKV header and the Cluster."""

    fragment_number: str
    metadata: FragmentMetadata
    header: bytes
    cluster: bytes

    @property
    def size_bytes(self) -> int:
        return len(self.header) + len(self.cluster)


def encode_fragment(
    *,
    session_id: uuid.UUID,
    ordinal: int,
    metadata: FragmentMetadata,
    header: bytes,
    cluster: bytes,
    chunk_bytes_max: int,
) -> list[bytes]:
    """The record data of one fragment, in the order they must be appended."""
    assert chunk_bytes_max > _RECORD_HEADER.size, chunk_bytes_max
    meta = metadata.to_json()
    blob = b"".join((_LENGTH.pack(len(meta)), meta, _LENGTH.pack(len(header)), header, cluster))
    room = chunk_bytes_max - _RECORD_HEADER.size
    count = max(1, -(-len(blob) // room))
    assert count <= 0xFFFF, "a fragment of at most 50 MiB takes far fewer chunks"
    return [
        _RECORD_HEADER.pack(MAGIC, session_id.bytes, ordinal, index, count)
        + blob[index * room : (index + 1) * room]
        for index in range(count)
    ]


@dataclass(slots=True)
class _Pending:
    fragment_number: str
    count: int
    parts: list[bytes]


class FragmentAssembler:
    """Joins chunk records, read in log order, back into fragments."""

    def __init__(self) -> None:
        self._pending: dict[tuple[bytes, int], _Pending] = {}

    def add(self, sequence_number: str, data: bytes) -> StoredFragment | None:
        """The fragment this record completes, if any. A chunk whose first part was not seen
        (a read that started inside a fragment) is skipped."""
        if len(data) < _RECORD_HEADER.size:
            raise FragmentRecordError("record too short for a fragment chunk")
        magic, session, ordinal, index, count = _RECORD_HEADER.unpack_from(data)
        if magic != MAGIC or count == 0 or index >= count:
            raise FragmentRecordError("record is not a fragment chunk")
        part = data[_RECORD_HEADER.size :]
        key = (session, ordinal)
        if index == 0:
            if len(self._pending) >= _PENDING_MAX:
                del self._pending[next(iter(self._pending))]
            self._pending[key] = _Pending(fragment_number=sequence_number, count=count, parts=[])
        pending = self._pending.get(key)
        if pending is None or len(pending.parts) != index:
            return None
        pending.parts.append(part)
        if len(pending.parts) < pending.count:
            return None
        del self._pending[key]
        return _decode_blob(pending.fragment_number, b"".join(pending.parts))


def _decode_blob(fragment_number: str, blob: bytes) -> StoredFragment:
    try:
        (meta_length,) = _LENGTH.unpack_from(blob, 0)
        meta_end = _LENGTH.size + meta_length
        metadata = FragmentMetadata.from_json(blob[_LENGTH.size : meta_end])
        (header_length,) = _LENGTH.unpack_from(blob, meta_end)
    except struct.error as error:
        raise FragmentRecordError("truncated fragment blob") from error
    header_start = meta_end + _LENGTH.size
    header_end = header_start + header_length
    if header_end > len(blob):
        raise FragmentRecordError("truncated fragment blob")
    return StoredFragment(
        fragment_number=fragment_number,
        metadata=metadata,
        header=blob[header_start:header_end],
        cluster=blob[header_end:],
    )
