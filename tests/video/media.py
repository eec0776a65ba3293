"""Real media for the video tests: an H.264 test pattern encoded with FFmpeg's libraries
(PyAV, installed by pyproject.toml), and decoding back to frame timestamps.

The pattern is `frames` frames at `fps` with a key frame every second; FFmpeg's Matroska
muxer starts a Cluster (a Kinesis Video fragment) at each key frame. `live=True` writes the
unknown-size Segment and Clusters that live producers (GStreamer, the KVS SDKs) send.
"""

from __future__ import annotations

import fractions
import io

import av


def h264_mkv(
    *,
    frames: int = 75,
    fps: int = 25,
    width: int = 160,
    height: int = 120,
    live: bool = False,
    first_frame: int = 0,  # a camera going on: its timecodes continue from here
) -> bytes:
    buffer = io.BytesIO()
    options = {"cluster_time_limit": "10000"}
    if live:
        options["live"] = "1"
    with av.open(buffer, mode="w", format="matroska", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "g": str(fps),
            "keyint_min": str(fps),
            "sc_threshold": "0",
            "bf": "0",
            "preset": "ultrafast",
        }
        for index in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for number, plane in enumerate(frame.planes):
                shade = (index * 7 + number * 50) % 256
                plane.update(bytes([shade]) * (plane.line_size * plane.height))
            frame.pts = first_frame + index
            frame.time_base = fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def decoded_frame_times_ms(mkv: bytes) -> list[int]:
    """The presentation time (ms) of every frame decoded from one MKV stream or chunk."""
    times: list[int] = []
    with av.open(io.BytesIO(mkv), mode="r", format="matroska") as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            assert frame.pts is not None
            assert frame.time_base is not None
            times.append(round(frame.pts * frame.time_base * 1000))
    return times
