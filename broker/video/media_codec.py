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
    if segment_format is SegmentFormat.MPEG_TS:
        return _copy(source_mkv, "mpegts", {})
    return _copy(source_mkv, "mp4", _MP4_OPTIONS)


def clip_mp4(source_mkv: bytes) -> bytes:
    """GetClip: the fragments' packets as one MP4 file, timestamps from zero. (The index
    goes last: moving it first, `faststart`, needs a second pass over a named file.)"""
    return _copy(source_mkv, "mp4", {})


def _copy(source_mkv: bytes, container: str, options: dict[str, str]) -> bytes:
    """Every audio and video packet of `source_mkv` into a new `container`, not re-encoded."""
    output = io.BytesIO()
    try:
        with (
            av.open(io.BytesIO(source_mkv), mode="r", format="matroska") as source,
            av.open(output, mode="w", format=container, options=options) as target,
        ):
            streams = {
                stream.index: target.add_stream_from_template(stream)
                for stream in source.streams
                if stream.type in ("video", "audio")
            }
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


class ImageFormat(enum.Enum):
    JPEG = "JPEG"
    PNG = "PNG"


def images_at(
    source_mkv: bytes,
    times_ms: list[int],
    *,
    image_format: ImageFormat,
    width: int | None,
    height: int | None,
    jpeg_quality: int,
) -> list[bytes | None]:
    """GetImages: for each time (the fragment's own timeline, in ms), the first decoded video
    frame at or after it, encoded as JPEG or PNG (None: no frame there). A missing width or
    height follows the source's aspect ratio."""
    found: list[bytes | None] = [None] * len(times_ms)
    try:
        with av.open(io.BytesIO(source_mkv), mode="r", format="matroska") as source:
            if not source.streams.video:
                return found
            stream = source.streams.video[0]
            pending = sorted(range(len(times_ms)), key=lambda i: times_ms[i])
            for frame in source.decode(stream):
                if not pending:
                    break
                if frame.pts is None or frame.time_base is None:
                    continue
                at_ms = float(frame.pts * frame.time_base * 1000)
                while pending and times_ms[pending[0]] <= at_ms:
                    found[pending.pop(0)] = _encode_image(
                        frame, image_format, width, height, jpeg_quality
                    )
    except av.FFmpegError as error:
        raise MediaCodecError(str(error)) from error
    return found


def _encode_image(
    frame: av.VideoFrame,
    image_format: ImageFormat,
    width: int | None,
    height: int | None,
    jpeg_quality: int,
) -> bytes:
    if width is None and height is None:
        width, height = frame.width, frame.height
    elif width is None:
        assert height is not None
        width = max(2, round(frame.width * height / frame.height))
    elif height is None:
        height = max(2, round(frame.height * width / frame.width))
    assert width is not None
    assert height is not None
    if image_format is ImageFormat.JPEG:
        codec = av.CodecContext.create("mjpeg", "w")
        pixel_format = "yuvj420p"
        # FFmpeg's MJPEG scale: 2 (best) .. 31; AWS's quality: 1 .. 100 (best).
        codec.qmin = codec.qmax = max(2, min(31, round(31 - jpeg_quality * 29 / 100)))
    else:
        codec = av.CodecContext.create("png", "w")
        pixel_format = "rgb24"
    codec.width, codec.height, codec.pix_fmt = width, height, pixel_format
    converted = frame.reformat(width=width, height=height, format=pixel_format)
    packets = [*codec.encode(converted), *codec.encode(None)]
    return b"".join(bytes(packet) for packet in packets)
