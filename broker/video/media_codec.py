"""Remuxing fragments for players, with FFmpeg's libraries (PyAV): the one module that
imports `av`.

A stored fragment is a self-contained MKV (its producer's header and one Cluster). For HLS it
becomes an MPEG-TS segment, or a fragmented-MP4 media segment (`moof` + `mdat`) whose
initialization segment (`ftyp` + `moov`) is the same for every fragment of a stream with the
same tracks. Timestamps are kept as the producer wrote them (no shift to zero: the MP4 muxer's
`frag_discont` with `avoid_negative_ts` off writes each segment's `tfdt` at its real decode
time), so separately remuxed segments play back to back. Packets are copied, never re-encoded.

Blocking and CPU-bound: callers run it off the event loop (`asyncio.to_thread`).
"""

from __future__ import annotations

import enum
import io
import struct

import av

from broker.video import ebml, mkv


class SegmentFormat(enum.Enum):
    FRAGMENTED_MP4 = "FRAGMENTED_MP4"
    MPEG_TS = "MPEG_TS"


class MediaCodecError(Exception):
    """FFmpeg could not read or write a fragment (codec data missing, bad frames)."""


_MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+frag_discont",
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
}


def fragment_as_mkv(header: bytes, cluster: bytes) -> bytes:
    """A stored fragment as one playable MKV: the header, a Segment and the Cluster."""
    first = ebml.read_header(header, 0)
    assert first is not None
    end = first.header_length + first.size
    return header[:end] + ebml.encode_id(mkv.SEGMENT) + ebml.unknown_size() + header[end:] + cluster


def remux(source_mkv: bytes, segment_format: SegmentFormat) -> bytes:
    """The fragment's packets in `segment_format` (a whole file: for MP4, init + media)."""
    output = io.BytesIO()
    try:
        with av.open(io.BytesIO(source_mkv), mode="r", format="matroska") as source:
            if segment_format is SegmentFormat.MPEG_TS:
                target = av.open(output, mode="w", format="mpegts")
            else:
                target = av.open(output, mode="w", format="mp4", options=_MP4_OPTIONS)
            with target:
                streams = {}
                for stream in source.streams:
                    if stream.type in ("video", "audio"):
                        streams[stream.index] = target.add_stream_from_template(stream)
                if not streams:
                    raise MediaCodecError("the fragment has no audio or video track")
                for packet in source.demux(*[source.streams[i] for i in streams]):
                    if packet.dts is None:
                        continue  # the demuxer's end-of-stream marker
                    packet.stream = streams[packet.stream.index]
                    target.mux(packet)
    except av.FFmpegError as error:
        raise MediaCodecError(str(error)) from error
    return output.getvalue()


def split_mp4(data: bytes) -> tuple[bytes, bytes]:
    """(initialization segment, media segment) of a fragmented MP4: `ftyp` and `moov`, then
    every `moof`/`mdat` (the trailing `mfra` index is dropped)."""
    init: list[bytes] = []
    media: list[bytes] = []
    offset = 0
    while offset + 8 <= len(data):  # bounded: every pass moves past one box
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        if size < 8 or offset + size > len(data):
            raise MediaCodecError("a truncated MP4 box")
        box = data[offset : offset + size]
        if kind in (b"ftyp", b"moov"):
            init.append(box)
        elif kind in (b"moof", b"mdat", b"styp", b"sidx"):
            media.append(box)
        offset += size
    return b"".join(init), b"".join(media)
