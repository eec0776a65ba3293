"""PutMedia's acknowledgements: the newline-separated JSON objects AWS streams back while a
producer uploads, as the KVS producer SDKs parse them. Pure values and their encoding.

Per fragment, in order: BUFFERING (its first bytes arrived), RECEIVED (all of it arrived),
PERSISTED (durable on a majority of its replicas), or ERROR with one of AWS's error ids
(`AckErrorId`), after which the connection ends. IDLE tells a producer that sends nothing for a
while that the session is still alive.

Shoal's fragment numbers are the sequence numbers its log gives the fragment's first record
(`fragment_records.py`), so a fragment has its number only once it is appended: RECEIVED
carries the timecode, PERSISTED the timecode and the number. The producer SDKs match
acknowledgements to fragments by timecode.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class AckEventType(enum.Enum):
    BUFFERING = "BUFFERING"
    RECEIVED = "RECEIVED"
    PERSISTED = "PERSISTED"
    ERROR = "ERROR"
    IDLE = "IDLE"


class AckErrorId(enum.IntEnum):
    """AWS's ERROR acknowledgement ids (PutMedia's documentation)."""

    STREAM_READ_ERROR = 4000
    MAX_FRAGMENT_SIZE_REACHED = 4001
    MAX_FRAGMENT_DURATION_REACHED = 4002
    MAX_CONNECTION_DURATION_REACHED = 4003
    FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS = 4004
    MORE_THAN_ALLOWED_TRACKS_FOUND_DEPRECATED = 4005
    INVALID_MKV_DATA = 4006
    INVALID_PRODUCER_TIMESTAMP = 4007
    STREAM_NOT_ACTIVE = 4008
    FRAGMENT_METADATA_LIMIT_REACHED = 4009
    TRACK_NUMBER_MISMATCH = 4010
    FRAMES_MISSING_FOR_TRACK = 4011
    MORE_THAN_ALLOWED_TRACKS_FOUND = 4012
    INTERNAL_ERROR = 5000
    ARCHIVAL_ERROR = 5001


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    event_type: AckEventType
    timecode_ms: int | None = None
    fragment_number: str | None = None
    error_id: AckErrorId | None = None
    error_message: str | None = None

    def encode(self) -> bytes:
        """One JSON object and a newline, members in AWS's order."""
        document: dict[str, object] = {"EventType": self.event_type.value}
        if self.timecode_ms is not None:
            document["FragmentTimecode"] = self.timecode_ms
        if self.fragment_number is not None:
            document["FragmentNumber"] = self.fragment_number
        if self.error_id is not None:
            document["ErrorId"] = int(self.error_id)
            document["ErrorCode"] = self.error_id.name
        if self.error_message is not None:
            document["Message"] = self.error_message
        return json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"


def decode_acks(data: bytes) -> tuple[list[Ack], bytes]:
    """The complete acknowledgements at the start of `data` and what is left after them (a
    partial line): the producer's side of the protocol (`shoal video put`)."""
    acks: list[Ack] = []
    *lines, rest = data.split(b"\n")
    for line in lines:
        if not line.strip():
            continue
        document = json.loads(line)
        error_id = document.get("ErrorId")
        acks.append(
            Ack(
                event_type=AckEventType(document["EventType"]),
                timecode_ms=document.get("FragmentTimecode"),
                fragment_number=document.get("FragmentNumber"),
                error_id=None if error_id is None else AckErrorId(int(error_id)),
                error_message=document.get("Message"),
            )
        )
    return acks, rest
