"""GetClip (one MP4 of a timestamp range) and GetImages (still images at a sampling interval)
from the archive; FFmpeg does the remuxing and the decoding (`media_codec.py`, in a worker
thread). Loop-bound operations.

Both select fragments by producer or server timestamp. A clip is the fragments whose start
lies in the range, joined under the first one's header, up to `video_clip_fragments_max`
fragments and `video_clip_bytes_max` bytes (past either, InvalidArgumentException, as AWS
refuses a clip over its size limit); it stops early where a fragment's tracks differ from the
first's. An image at time t comes from the fragment that covers t: its first frame at or
after t on the fragment's own timeline (NO_MEDIA where no fragment covers t).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.video_table import VideoStreamMeta
from broker.video import messages
from broker.video.archive import FragmentArchive, Position
from broker.video.fragment_records import StoredFragment
from broker.video.media_codec import (
    ImageFormat,
    MediaCodecError,
    clip_mp4,
    fragment_as_mkv,
    images_at,
)

IMAGES_RANGE_MS_MAX = 300_000  # AWS: at most 300 seconds between Start and EndTimestamp
SAMPLING_INTERVAL_MS_MIN = 200  # AWS's bounds for SamplingInterval
SAMPLING_INTERVAL_MS_MAX = 20_000
SAMPLING_INTERVAL_MS_DEFAULT = 3_000
IMAGES_PAGE_DEFAULT = 25
JPEG_QUALITY_DEFAULT = 80


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _start(fragment: StoredFragment, *, server: bool) -> int:
    meta = fragment.metadata
    return meta.server_timestamp_ms if server else meta.producer_timestamp_ms


async def fragments_in_range(
    archive: FragmentArchive,
    stream: VideoStreamMeta,
    *,
    server: bool,
    start_ms: int,
    end_ms: int,
    covering: bool = False,
) -> AsyncIterator[StoredFragment]:
    """The fragments that start in [start_ms, end_ms] (or, `covering`, that overlap it), in
    log order."""
    position = (
        Position(
            iterator_type="AT_TIMESTAMP",
            timestamp_ms=start_ms - limits.video_fragment_duration_ms_max,
        )
        if server
        else Position(iterator_type="TRIM_HORIZON")
    )
    async for read in archive.read(stream, position):
        begins = _start(read.fragment, server=server)
        ends = begins + read.fragment.metadata.duration_ms
        overlaps = begins <= end_ms and ends > start_ms
        if overlaps if covering else start_ms <= begins <= end_ms:
            yield read.fragment


async def get_clip(
    archive: FragmentArchive, stream: VideoStreamMeta, selector: Mapping[str, Any]
) -> AsyncIterator[bytes]:
    """GetClip's MP4, as a one-chunk body (the clip is muxed whole before it is sent)."""
    server = selector["FragmentSelectorType"] == "SERVER_TIMESTAMP"
    start_ms = _ms(selector["TimestampRange"]["StartTimestamp"])
    end_ms = _ms(selector["TimestampRange"]["EndTimestamp"])
    if start_ms > end_ms:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.START_BEFORE_END)
    header: bytes | None = None
    clusters: list[bytes] = []
    size = 0
    async for fragment in fragments_in_range(
        archive, stream, server=server, start_ms=start_ms, end_ms=end_ms
    ):
        if header is None:
            header = fragment.header
        elif fragment.header != header:
            break  # the tracks changed: the clip ends with the last fragment of the first ones
        clusters.append(fragment.cluster)
        size += len(fragment.cluster)
        if len(clusters) > limits.video_clip_fragments_max or size > limits.video_clip_bytes_max:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.clip_too_large(
                    fragments_max=limits.video_clip_fragments_max,
                    bytes_max=limits.video_clip_bytes_max,
                ),
            )
    if header is None:
        raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.NO_FRAGMENTS_IN_RANGE)
    try:
        clip = await asyncio.to_thread(clip_mp4, fragment_as_mkv(header, b"".join(clusters)))
    except MediaCodecError as error:
        raise ShoalError(ErrorCode.INVALID_MEDIA_FRAME, str(error)) from error
    return _one(clip)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _page_start(token: str | None) -> int:
    if token is None:
        return 0
    try:
        return int(base64.b64decode(token, validate=True).decode("ascii"))
    except (binascii.Error, ValueError, UnicodeError) as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.NEXT_TOKEN_INVALID) from error


async def get_images(
    archive: FragmentArchive, stream: VideoStreamMeta, request: Mapping[str, Any]
) -> dict[str, Any]:
    server = request["ImageSelectorType"] == "SERVER_TIMESTAMP"
    start_ms, end_ms = _ms(request["StartTimestamp"]), _ms(request["EndTimestamp"])
    if not 0 <= end_ms - start_ms <= IMAGES_RANGE_MS_MAX:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.IMAGES_RANGE_MAX)
    interval = request.get("SamplingInterval", SAMPLING_INTERVAL_MS_DEFAULT)
    if not SAMPLING_INTERVAL_MS_MIN <= interval <= SAMPLING_INTERVAL_MS_MAX:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.images_sampling_interval(
                minimum=SAMPLING_INTERVAL_MS_MIN, maximum=SAMPLING_INTERVAL_MS_MAX
            ),
        )
    first = _page_start(request.get("NextToken"))
    page_size = int(request.get("MaxResults", IMAGES_PAGE_DEFAULT))
    every = range(start_ms, end_ms + 1, interval)
    times = list(every[first : first + page_size])
    quality = int((request.get("FormatConfig") or {}).get("JPEGQuality", JPEG_QUALITY_DEFAULT))
    if not 1 <= quality <= 100:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.IMAGES_JPEG_QUALITY_RANGE)
    images: dict[int, bytes | None] = {}
    if times:
        async for fragment in fragments_in_range(
            archive, stream, server=server, start_ms=times[0], end_ms=times[-1], covering=True
        ):
            begins = _start(fragment, server=server)
            inside = [t for t in times if begins <= t < begins + fragment.metadata.duration_ms]
            if not inside:
                continue
            local = [fragment.metadata.timecode_ms + (t - begins) for t in inside]
            try:
                encoded = await asyncio.to_thread(
                    images_at,
                    fragment_as_mkv(fragment.header, fragment.cluster),
                    local,
                    image_format=ImageFormat(request["Format"]),
                    width=request.get("WidthPixels"),
                    height=request.get("HeightPixels"),
                    jpeg_quality=quality,
                )
            except MediaCodecError:
                encoded = [None] * len(inside)
            images.update(zip(inside, encoded, strict=True))
    shaped: list[dict[str, Any]] = []
    for t in times:
        entry: dict[str, Any] = {"TimeStamp": datetime.fromtimestamp(t / 1000, tz=UTC)}
        content = images.get(t)
        if content is None:
            entry["Error"] = "NO_MEDIA"
        else:
            entry["ImageContent"] = base64.b64encode(content).decode("ascii")
        shaped.append(entry)
    response: dict[str, Any] = {"Images": shaped}
    if first + page_size < len(every):
        response["NextToken"] = base64.b64encode(str(first + page_size).encode()).decode()
    return response
