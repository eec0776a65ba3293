"""The framed replication stream's wire format (pure: no I/O, clock passed in).

A frame is a 5-byte header, the payload's length (4 bytes, big-endian, the header excluded)
and its kind (1 byte), then the payload. `FrameReader` turns the bytes of a connection, in
whatever pieces they arrive, into whole frames, and refuses a frame longer than its limit
from its header alone, before buffering any of it.

The conversation (broker/rpc/framed.py runs it):

1. The listener sends CHALLENGE: `CHALLENGE_BYTES` random bytes, new for each connection.
2. The dialler answers HELLO: its node id, the node id it means to reach, a date and the
   node signature (`iam.grpc_signing.node_signature`, the key every node derives from
   `raft_password`, as on the internal gRPC calls) over the challenge and both ids. The
   challenge makes each HELLO good for one connection only: a recorded one cannot be
   replayed, and the date bounds how long one can be held back.
3. The listener checks it and answers ACCEPT, or closes the connection.
4. Then ENVELOPE frames (a `ReplicationEnvelope` protobuf, exactly what the gRPC `Replicate`
   stream carries) flow from the dialler to the listener, and PING/PONG both ways keep the
   two sides sure the other is alive.
5. APPEND frames (a `FramedAppend`: a forwarded ShardAppend with a call id) flow from the
   dialler to the listener, and ANSWER frames (a `FramedAppendAnswer`, the same call id) back,
   when the listener's ACCEPT said it serves them (`ACCEPT_SERVES_APPENDS`). An older listener
   sends an empty ACCEPT (and would close the connection on an APPEND, an unknown kind): the
   dialler then forwards over gRPC as before. An older dialler ignores ACCEPT's payload and
   never sends an APPEND. So a mixed-version cluster forwards over gRPC between an old and a
   new node and over the framed connection between two new ones.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from broker.iam import grpc_signing

HEADER = struct.Struct(">IB")
CHALLENGE_BYTES = 32
# The "method" the node signature of a HELLO covers (with the challenge and both node ids).
HELLO_METHOD = "/shoal.replication.framed.v1/Hello"


class FrameKind(enum.IntEnum):
    CHALLENGE = 1
    HELLO = 2
    ACCEPT = 3
    ENVELOPE = 4
    PING = 5
    PONG = 6
    APPEND = 7
    ANSWER = 8


# ACCEPT's payload: one byte of flags (empty from an older listener, which has none).
ACCEPT_SERVES_APPENDS = 0x01  # the listener answers APPEND frames


def accept_payload(*, serves_appends: bool) -> bytes:
    return bytes([ACCEPT_SERVES_APPENDS]) if serves_appends else b""


def serves_appends(accept: bytes) -> bool:
    """Whether an ACCEPT with this payload promises ANSWERs to APPEND frames."""
    return bool(accept) and bool(accept[0] & ACCEPT_SERVES_APPENDS)


class FrameError(Exception):
    """Bytes that are not a frame this side accepts: the connection must be closed."""


class FrameTooLarge(FrameError):
    pass


def encode_frame(kind: FrameKind, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def encode_frame_pieces(kind: FrameKind, pieces: Sequence[bytes]) -> bytes:
    """`encode_frame(kind, b"".join(pieces))` with one copy of the pieces rather than two."""
    return b"".join((HEADER.pack(sum(len(piece) for piece in pieces), kind), *pieces))


class FrameReader:
    """Whole frames out of the pieces a connection delivers. Holds at most one frame's bytes
    beyond what it has returned (plus the piece being fed)."""

    def __init__(self, *, frame_bytes_max: int) -> None:
        assert frame_bytes_max >= 1
        self.frame_bytes_max = frame_bytes_max  # may change between feeds (after a HELLO)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[FrameKind, bytes]]:
        """The frames `data` completes, in order. Raises `FrameTooLarge` for a header that
        announces more than the limit, `FrameError` for an unknown kind."""
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            source = data  # the usual case: frames parsed from the piece itself, one copy each
        frames: list[tuple[FrameKind, bytes]] = []
        start = 0
        end = len(source)
        with memoryview(source) as view:
            while end - start >= HEADER.size:
                length, kind = HEADER.unpack_from(view, start)
                if length > self.frame_bytes_max:
                    raise FrameTooLarge(f"a frame of {length} bytes (limit {self.frame_bytes_max})")
                if end - start - HEADER.size < length:
                    break
                try:
                    frame_kind = FrameKind(kind)
                except ValueError as error:
                    raise FrameError(f"a frame of unknown kind {kind}") from error
                body = start + HEADER.size
                frames.append((frame_kind, bytes(view[body : body + length])))
                start = body + length
            rest = bytes(view[start:]) if source is data and start < end else b""
        if source is data:
            self._buffer += rest
        elif start:
            del self._buffer[:start]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not complete yet."""
        return len(self._buffer)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    sender: str  # the dialling node's id
    receiver: str  # the node id it means to reach (a stale address reaches another node)
    date: str  # grpc_signing.amz_date of the dialler's wall clock
    signature: str


def _signed_text(challenge: bytes, sender: str, receiver: str) -> str:
    return f"{HELLO_METHOD}\n{challenge.hex()}\n{sender}\n{receiver}"


def make_hello(
    *, challenge: bytes, sender: str, receiver: str, raft_password: str, wall_ms: int
) -> Hello:
    date = grpc_signing.amz_date(wall_ms)
    signature = grpc_signing.node_signature(
        raft_password=raft_password, method=_signed_text(challenge, sender, receiver), date=date
    )
    return Hello(sender=sender, receiver=receiver, date=date, signature=signature)


def encode_hello(hello: Hello) -> bytes:
    return "\n".join((hello.sender, hello.receiver, hello.date, hello.signature)).encode("utf-8")


def decode_hello(payload: bytes) -> Hello:
    try:
        parts = payload.decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise FrameError("a HELLO that is not UTF-8") from error
    if len(parts) != 4:
        raise FrameError("a HELLO without its four fields")
    sender, receiver, date, signature = parts
    return Hello(sender=sender, receiver=receiver, date=date, signature=signature)


def hello_refusal(
    hello: Hello, *, challenge: bytes, node_id: str, raft_password: str, now_ms: int
) -> str | None:
    """Why the listener `node_id` refuses `hello` to the connection it sent `challenge` on,
    or None when it is admitted."""
    if hello.receiver != node_id:
        return f"addressed to {hello.receiver!r}, this is {node_id!r}"
    if not grpc_signing.fresh(hello.date, now_ms=now_ms):
        return "a date outside the allowed clock skew"
    expected = grpc_signing.node_signature(
        raft_password=raft_password,
        method=_signed_text(challenge, hello.sender, hello.receiver),
        date=hello.date,
    )
    if not hmac.compare_digest(hello.signature.encode("utf-8"), expected.encode("utf-8")):
        return "a node signature that does not match this cluster's"
    return None
