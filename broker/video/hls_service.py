"""GetHLSStreamingSessionURL and the HLS session it opens: playlists and segments served by
the node under the session URL (`hls.py` for the tokens and playlists, `media_codec.py` for
the segments). Loop-bound; remuxing runs in a worker thread.

LIVE serves the newest `MaxMediaPlaylistFragmentResults` fragments (default 5) with no end
tag; players reload the playlist. LIVE_REPLAY starts at the selector's StartTimestamp and
lists fragments as the session's own clock reaches them (playback at real speed, running on
into fragments ingested after the session opened), the newest 5 at a time, and ends after
EndTimestamp when one is given. ON_DEMAND is a fixed list of the fragments in the selector's
timestamp range (at most 24 hours, `MaxMediaPlaylistFragmentResults` of them), with the end
tag. GetDASHStreamingSessionURL opens the same sessions with an MPD manifest
(`/dash/v1/getDASHManifest.mpd`, static for ON_DEMAND, dynamic for LIVE and LIVE_REPLAY) over
the same fragmented-MP4 segments.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from broker import limits
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.meta.frontend import MetadataFrontend
from broker.meta.video_table import VideoStreamMeta
from broker.streams.sequence_numbers import decode_sequence_number
from broker.video import hls, messages
from broker.video.archive import FragmentArchive, Position
from broker.video.fragment_records import StoredFragment
from broker.video.media_codec import (
    MediaCodecError,
    SegmentFormat,
    fragment_as_mkv,
    remux,
    split_mp4,
)

_RANGE_MS_MAX = 24 * 3_600_000  # AWS: an ON_DEMAND range covers at most 24 hours
_EXPIRES_S_DEFAULT = 300
_ON_DEMAND_FRAGMENTS_DEFAULT = 1000
_LIVE_FRAGMENTS_DEFAULT = 5  # AWS's default for LIVE playlists
_TYPICAL_FRAGMENT_MS = 2_000  # the first LIVE window assumes fragments this long or shorter


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


class HlsService:
    def __init__(
        self,
        *,
        archive: FragmentArchive,
        metadata: MetadataFrontend,
        clock: Clock,
        data_endpoint: Callable[[], str],
    ) -> None:
        self._archive = archive
        self._metadata = metadata
        self._clock = clock
        self._data_endpoint = data_endpoint

    def _key(self) -> bytes:
        secret = self._metadata.image().iterator_secret
        assert secret, "InitCluster sets the secret before the node serves"
        return secret

    async def session_url(
        self, stream: VideoStreamMeta, request: Mapping[str, Any], *, dash: bool = False
    ) -> str:
        """GetHLSStreamingSessionURL, or (`dash`) GetDASHStreamingSessionURL."""
        if stream.data_retention_hours == 0:
            raise ShoalError(ErrorCode.NO_DATA_RETENTION)
        mode = request.get("PlaybackMode", "LIVE")  # the model's enum: checked already
        selector = request.get("DASHFragmentSelector" if dash else "HLSFragmentSelector") or {}
        timestamps = selector.get("TimestampRange") or {}
        selector_type = selector.get("FragmentSelectorType", "SERVER_TIMESTAMP")
        live = mode != "ON_DEMAND"
        start_ms = end_ms = 0
        if mode == "LIVE" and timestamps:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.TIMESTAMP_RANGE_NOT_FOR_LIVE)
        if mode == "LIVE_REPLAY":
            if "StartTimestamp" not in timestamps:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    messages.LIVE_REPLAY_NEEDS_START,
                )
            start_ms = _ms(timestamps["StartTimestamp"])
            if "EndTimestamp" in timestamps:
                end_ms = _ms(timestamps["EndTimestamp"])
                if not 0 <= end_ms - start_ms <= _RANGE_MS_MAX:
                    raise ShoalError(
                        ErrorCode.INVALID_ARGUMENT,
                        messages.SESSION_RANGE_MAX,
                    )
        if mode == "ON_DEMAND":
            if "StartTimestamp" not in timestamps or "EndTimestamp" not in timestamps:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    messages.ON_DEMAND_NEEDS_RANGE,
                )
            start_ms, end_ms = _ms(timestamps["StartTimestamp"]), _ms(timestamps["EndTimestamp"])
            if not 0 <= end_ms - start_ms <= _RANGE_MS_MAX:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    messages.SESSION_RANGE_MAX,
                )
        limit_member = "MaxManifestFragmentResults" if dash else "MaxMediaPlaylistFragmentResults"
        default_limit = _LIVE_FRAGMENTS_DEFAULT if live else _ON_DEMAND_FRAGMENTS_DEFAULT
        default_discontinuity = "ALWAYS" if selector_type == "SERVER_TIMESTAMP" else "NEVER"
        if live:
            default_discontinuity = "NEVER"  # segments keep the producer's timestamps
        session = hls.HlsSession(
            stream_arn=stream.arn,
            playback_mode=mode,
            selector_type=selector_type,
            start_ms=start_ms,
            end_ms=end_ms,
            container="FRAGMENTED_MP4"
            if dash
            else request.get("ContainerFormat", "FRAGMENTED_MP4"),
            discontinuity=request.get("DiscontinuityMode", default_discontinuity),
            max_fragments=int(request.get(limit_member, default_limit)),
            expires_ms=self._clock.wall_ms() + 1000 * request.get("Expires", _EXPIRES_S_DEFAULT),
            created_ms=self._clock.wall_ms(),
        )
        edge = await self._segments(stream, session, limit=1)
        if not edge:
            raise ShoalError(
                ErrorCode.VIDEO_RESOURCE_NOT_FOUND,
                messages.NO_FRAGMENTS_FOR_SESSION,
            )
        newest = edge[0][0]  # LIVE: the newest fragment; LIVE_REPLAY: the first
        anchor = newest.timecode_ms + (newest.duration_ms if mode == "LIVE" else 0)
        shard_created_ms = decode_sequence_number(newest.fragment_number).shard_created_ms
        session = dataclasses.replace(session, anchor_ms=anchor, shard_created_ms=shard_created_ms)
        token = hls.encode_token(session, key=self._key())
        if dash:
            return (
                f"{self._data_endpoint()}{hls.DASH_PATH_PREFIX}{hls.DASH_MANIFEST}"
                f"?SessionToken={token}"
            )
        return f"{self._data_endpoint()}{hls.PATH_PREFIX}{hls.MASTER_PLAYLIST}?SessionToken={token}"

    async def _segments(
        self, stream: VideoStreamMeta, session: hls.HlsSession, *, limit: int
    ) -> list[tuple[hls.Segment, int]]:
        listed, _ = await self._listed(stream, session, limit=limit)
        return listed

    async def _listed(
        self, stream: VideoStreamMeta, session: hls.HlsSession, *, limit: int
    ) -> tuple[list[tuple[hls.Segment, int]], bool]:
        """The session's fragments (with their sizes), in log order, at most `limit`: the
        first ones of an ON_DEMAND range, the newest ones of a LIVE stream (read from the
        log's time index, a window back that `limit` fragments of the longest allowed
        duration fit in), the newest of a LIVE_REPLAY's; and whether a LIVE_REPLAY has
        listed its last fragment (its EndTimestamp passed)."""
        if session.playback_mode == "LIVE_REPLAY":
            return await self._replayed(stream, session, limit=limit)
        if session.playback_mode == "LIVE":
            # A window of typical fragments first, then one of the longest allowed: players
            # reload the playlist every target duration, and each read decodes whole
            # fragments, so the common case reads a few fragments, not a minute of them.
            newest: collections.deque[tuple[hls.Segment, int]] = collections.deque(maxlen=limit)
            for fragment_ms in (_TYPICAL_FRAGMENT_MS, limits.video_fragment_duration_ms_max):
                newest.clear()
                since = Position(
                    iterator_type="AT_TIMESTAMP",
                    timestamp_ms=self._clock.wall_ms() - limit * fragment_ms,
                )
                async for read in self._archive.read(stream, since):
                    newest.append((_segment(read.fragment, server=True), read.fragment.size_bytes))
                if len(newest) == limit:
                    break
            return list(newest), False
        server = session.selector_type == "SERVER_TIMESTAMP"
        position = (
            Position(iterator_type="AT_TIMESTAMP", timestamp_ms=session.start_ms)
            if server
            else Position(iterator_type="TRIM_HORIZON")
        )
        found: list[tuple[hls.Segment, int]] = []
        async for read in self._archive.read(stream, position):
            meta = read.fragment.metadata
            start = meta.server_timestamp_ms if server else meta.producer_timestamp_ms
            if not session.start_ms <= start <= session.end_ms:
                continue
            found.append((_segment(read.fragment, server=server), read.fragment.size_bytes))
            if len(found) >= limit:
                break
        return found, True

    async def _replayed(
        self, stream: VideoStreamMeta, session: hls.HlsSession, *, limit: int
    ) -> tuple[list[tuple[hls.Segment, int]], bool]:
        """LIVE_REPLAY, as AWS plays it: from StartTimestamp on, a fragment joins the
        playlist once the time since the session opened covers the media before it (so
        playback runs at real speed, into fragments not yet ingested when it opened); the
        newest `limit` are listed, and the playlist ends after EndTimestamp's last fragment."""
        server = session.selector_type == "SERVER_TIMESTAMP"
        position = (
            Position(iterator_type="AT_TIMESTAMP", timestamp_ms=session.start_ms)
            if server
            else Position(iterator_type="TRIM_HORIZON")
        )
        elapsed_ms = self._clock.wall_ms() - session.created_ms
        newest: collections.deque[tuple[hls.Segment, int]] = collections.deque(maxlen=limit)
        first_start: int | None = None
        async for read in self._archive.read(stream, position):
            segment = _segment(read.fragment, server=server)
            if segment.start_ms < session.start_ms:
                continue
            if session.end_ms and segment.start_ms > session.end_ms:
                return list(newest), True
            if first_start is None:
                first_start = segment.start_ms
            if segment.start_ms - first_start > elapsed_ms:
                return list(newest), False
            newest.append((segment, read.fragment.size_bytes))
        # Every fragment so far is listed: the replay ends once its clock passes EndTimestamp.
        ended = bool(session.end_ms) and (first_start or session.start_ms) + elapsed_ms > (
            session.end_ms
        )
        return list(newest), ended

    async def serve(self, name: str, query: Mapping[str, str]) -> tuple[str, bytes]:
        """(content type, body) of one request of a session."""
        token = query.get("SessionToken")
        if token is None:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.SESSION_TOKEN_REQUIRED)
        key = self._key()
        session, fragment_offset = hls.decode_token(token, key=key, now_ms=self._clock.wall_ms())
        stream = self._metadata.image().video.by_arn(session.stream_arn)
        if stream is None:
            raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND)
        if name == hls.DASH_MANIFEST:
            listed, ended = await self._listed(stream, session, limit=session.max_fragments)
            if not listed:
                raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.NO_FRAGMENTS)
            segments = [segment for segment, _ in listed]
            seconds = max(1, sum(s.duration_ms for s in segments)) / 1000
            bandwidth = round(sum(size for _, size in listed) * 8 / seconds)
            text = hls.dash_manifest(
                session,
                token,
                segments,
                bandwidth=bandwidth,
                now_ms=self._clock.wall_ms(),
                key=key,
                ended=ended and session.live,
            )
            return hls.DASH_CONTENT_TYPE, text.encode("utf-8")
        if name in (hls.MASTER_PLAYLIST, hls.MEDIA_PLAYLIST):
            listed, ended = await self._listed(stream, session, limit=session.max_fragments)
            segments = [segment for segment, _ in listed]
            if name == hls.MASTER_PLAYLIST:
                seconds = max(1, sum(s.duration_ms for s in segments)) / 1000
                bandwidth = round(sum(size for _, size in listed) * 8 / seconds)
                text = hls.master_playlist(token, bandwidth=bandwidth)
            else:
                text = hls.media_playlist(
                    session, token, segments, key=key, ended=ended and session.live
                )
            return hls.PLAYLIST_CONTENT_TYPE, text.encode("utf-8")
        if name == hls.MP4_INIT:
            listed = await self._segments(stream, session, limit=1)
            if not listed:
                raise ShoalError(ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.NO_FRAGMENTS)
            fragment = await self._fragment(stream, listed[0][0].fragment_number)
            init, _ = await self._remux(fragment, SegmentFormat.FRAGMENTED_MP4)
            return "video/mp4", init
        if name in (hls.MP4_MEDIA, hls.TS_MEDIA):
            if fragment_offset is None:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT, messages.SESSION_TOKEN_NAMES_NO_FRAGMENT
                )
            fragment = await self._fragment(stream, hls.fragment_number(session, fragment_offset))
            if name == hls.TS_MEDIA:
                _, segment = await self._remux(fragment, SegmentFormat.MPEG_TS)
                return "video/mp2t", segment
            _, segment = await self._remux(fragment, SegmentFormat.FRAGMENTED_MP4)
            return "video/mp4", segment
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.unknown_session_resource(name=name))

    async def _fragment(self, stream: VideoStreamMeta, number: str) -> StoredFragment:
        position = Position(iterator_type="AT_SEQUENCE_NUMBER", sequence_number=number)
        try:
            async for read in self._archive.read(stream, position):
                found = decode_sequence_number(read.fragment.fragment_number)
                if found.offset == decode_sequence_number(number).offset:
                    return read.fragment
                break
        except ShoalError as error:
            if error.code is not ErrorCode.INVALID_ARGUMENT:
                raise
        raise ShoalError(
            ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.fragment_not_found(number=number)
        )

    async def _remux(
        self, fragment: StoredFragment, segment_format: SegmentFormat
    ) -> tuple[bytes, bytes]:
        """(init, media) for fragmented MP4; (b"", the segment) for MPEG-TS."""
        source = fragment_as_mkv(fragment.header, fragment.cluster)
        try:
            data = await asyncio.to_thread(remux, source, segment_format)
            if segment_format is SegmentFormat.MPEG_TS:
                return b"", data
            return split_mp4(data)
        except MediaCodecError as error:
            raise ShoalError(ErrorCode.INVALID_MEDIA_FRAME, str(error)) from error


def _segment(fragment: StoredFragment, *, server: bool) -> hls.Segment:
    meta = fragment.metadata
    return hls.Segment(
        fragment_number=fragment.fragment_number,
        start_ms=meta.server_timestamp_ms if server else meta.producer_timestamp_ms,
        duration_ms=meta.duration_ms,
        timecode_ms=meta.timecode_ms,
    )
