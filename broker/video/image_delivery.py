"""Continuous image generation (UpdateImageGenerationConfiguration): images of a stream's new
fragments delivered to its S3 destination, at the configured sampling interval, format and
size, by the stream's home node.

Each ENABLED configuration is served by one node, the ACTIVE node ranking first for the
stream's ARN (`signaling_rules.home_node`, as for signaling channels), so images are made
once. That node follows the stream's fragments from where it last delivered (held in memory;
a node that becomes home starts with the fragments of the last `_LOOKBACK_MS`) and, for each
fragment, encodes a frame at every multiple of SamplingInterval the fragment covers (on its
server or producer timeline, as ImageSelectorType says), through the same PyAV code as
GetImages. An image's key is fixed by the stream and the sampling time:

    <uri path>/<stream name>/<YYYY>/<MM>/<DD>/<HH>/<sampling time ms>.<jpg|png>

so a fragment delivered twice (a new home's look-back, a retry) overwrites its own images
instead of adding copies. A failed PutObject is retried on the next pass, from the same
fragment. The S3 client is injected (`ObjectStore`; the node passes the boto3 one Firehose
uses, `AWS_ENDPOINT_URL_S3` selecting an S3-compatible server). Loop-bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from broker.clock import Clock
from broker.meta.frontend import MetadataFrontend
from broker.meta.video_table import VideoStreamMeta
from broker.video.archive import FragmentArchive, Position
from broker.video.fragment_records import StoredFragment
from broker.video.media_codec import ImageFormat, MediaCodecError, fragment_as_mkv, images_at
from broker.video.signaling_rules import home_node

log = logging.getLogger(__name__)

_PASS_INTERVAL_S = 1.0  # how often new fragments are looked for
_LOOKBACK_MS = 10_000  # a new home starts with the fragments that arrived this long ago
_FRAGMENTS_PER_PASS = 50
_JPEG_QUALITY_DEFAULT = 80


class ObjectStore(Protocol):
    def put_object(self, *, bucket: str, key: str, body: bytes) -> None: ...


def image_key(prefix: str, stream_name: str, time_ms: int, image_format: str) -> str:
    stamp = time.strftime("%Y/%m/%d/%H", time.gmtime(time_ms / 1000))
    extension = "jpg" if image_format == "JPEG" else "png"
    parts = [part for part in (prefix.strip("/"), stream_name, stamp) if part]
    return "/".join(parts) + f"/{time_ms}.{extension}"


def sampling_times(begins_ms: int, duration_ms: int, interval_ms: int) -> list[int]:
    """The multiples of `interval_ms` in [begins, begins + duration)."""
    first = -(-begins_ms // interval_ms) * interval_ms
    return list(range(first, begins_ms + max(duration_ms, 1), interval_ms))


class ImageDelivery:
    def __init__(
        self,
        *,
        archive: FragmentArchive,
        metadata: MetadataFrontend,
        clock: Clock,
        node_id: str,
        store: Callable[[], ObjectStore],
    ) -> None:
        self._archive = archive
        self._metadata = metadata
        self._clock = clock
        self._node_id = node_id
        self._store = store
        # Per stream ARN: the configuration followed and where the next read starts.
        self._cursors: dict[str, tuple[str, Position]] = {}

    async def run(self) -> None:
        while True:  # until cancelled with the node
            try:
                await self.deliver_once()
            except Exception:
                log.exception("video_image_delivery_failed")
            await asyncio.sleep(_PASS_INTERVAL_S)

    async def deliver_once(self) -> int:
        """One pass over the streams this node is home to; the number of images delivered."""
        image = self._metadata.image()
        placeable = [node_id for node_id, node in image.nodes.items() if node.is_placeable()]
        delivered = 0
        for stream in list(image.video.streams.values()):
            document = stream.image_generation_json
            enabled = bool(document) and json.loads(document).get("Status") == "ENABLED"
            here = (home_node(stream.arn, placeable) or self._node_id) == self._node_id
            if not (enabled and here):
                self._cursors.pop(stream.arn, None)
                continue
            delivered += await self._deliver(stream, document)
        for arn in set(self._cursors) - set(image.video.streams):
            del self._cursors[arn]
        return delivered

    async def _deliver(self, stream: VideoStreamMeta, document: str) -> int:
        config: Mapping[str, Any] = json.loads(document)
        cursor = self._cursors.get(stream.arn)
        if cursor is None or cursor[0] != document:  # new here, or reconfigured
            since = self._clock.wall_ms() - _LOOKBACK_MS
            cursor = (document, Position(iterator_type="AT_TIMESTAMP", timestamp_ms=since))
            self._cursors[stream.arn] = cursor
        delivered = 0
        passing = self._archive.read_pass(stream, cursor[1], limit=_FRAGMENTS_PER_PASS)
        async for fragment in passing:
            delivered += await self._images_of(stream, config, fragment)
            position = Position.after(fragment.fragment_number)
            self._cursors[stream.arn] = (document, position)  # only once delivered
        return delivered

    async def _images_of(
        self, stream: VideoStreamMeta, config: Mapping[str, Any], fragment: StoredFragment
    ) -> int:
        meta = fragment.metadata
        server = config["ImageSelectorType"] == "SERVER_TIMESTAMP"
        begins = meta.server_timestamp_ms if server else meta.producer_timestamp_ms
        times = sampling_times(begins, meta.duration_ms, int(config["SamplingInterval"]))
        if not times:
            return 0
        quality = int((config.get("FormatConfig") or {}).get("JPEGQuality", _JPEG_QUALITY_DEFAULT))
        try:
            encoded = await asyncio.to_thread(
                images_at,
                fragment_as_mkv(fragment.header, fragment.cluster),
                [meta.timecode_ms + (t - begins) for t in times],
                image_format=ImageFormat(config["Format"]),
                width=config.get("WidthPixels"),
                height=config.get("HeightPixels"),
                jpeg_quality=quality,
            )
        except MediaCodecError:
            log.warning("video_image_undecodable", extra={"fragment": fragment.fragment_number})
            return 0
        bucket, _, prefix = config["DestinationConfig"]["Uri"].removeprefix("s3://").partition("/")
        store = self._store()
        delivered = 0
        for time_ms, body in zip(times, encoded, strict=True):
            if body is None:
                continue
            key = image_key(prefix, stream.name, time_ms, config["Format"])
            await asyncio.to_thread(store.put_object, bucket=bucket, key=key, body=body)
            delivered += 1
        return delivered
