"""HLS and DASH for video streams: streaming-session tokens, HLS playlists and the DASH
manifest. Pure (key and time passed in).

GetHLSStreamingSessionURL hands out a URL under the node's AWS door,
`/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=...`, as AWS does. The token carries the whole
session (`HlsSession`: stream ARN, playback mode, selector, container, expiry) signed with
the cluster's HMAC secret, so any node can serve it and nobody can widen it; past its expiry
every request of the session is refused. The master playlist names one media playlist; the
media playlist lists one segment per fragment (`getMP4MediaFragment.mp4` after an
`EXT-X-MAP` of `getMP4InitFragment.mp4`, or `getTSFragment.ts`), with its duration from the
fragment's metadata.

A segment's URL names its fragment inside its own token, not with the 56-digit fragment
number: the token has a fixed-width fragment slot (the log offset of the fragment's first
record, 7 bytes; all ones in the session's own token), signed with the rest, and the node
turns the offset back into the fragment number (`HlsSession.shard_created_ms` and the
offset are all the number encodes for the one-shard internal stream). So every URL of a
session has the session URL's length give or take the resource name's. That matters to
players that size their URL buffers from the manifest's URL: FFmpeg's DASH demuxer (5.1)
allocates the manifest URL's length plus the Representation's id and bandwidth, rounded up
to 64, for every SegmentList URL, and truncates a longer one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
import urllib.parse
from dataclasses import asdict, dataclass
from xml.sax.saxutils import quoteattr

from broker.errors import ErrorCode, ShoalError
from broker.streams.sequence_numbers import (
    OFFSET_MAX,
    SequencePosition,
    decode_sequence_number,
    encode_sequence_number,
)
from broker.video import messages

MASTER_PLAYLIST = "getHLSMasterPlaylist.m3u8"
MEDIA_PLAYLIST = "getHLSMediaPlaylist.m3u8"
MP4_INIT = "getMP4InitFragment.mp4"
MP4_MEDIA = "getMP4MediaFragment.mp4"
TS_MEDIA = "getTSFragment.ts"
PATH_PREFIX = "/hls/v1/"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
DASH_MANIFEST = "getDASHManifest.mpd"
DASH_PATH_PREFIX = "/dash/v1/"
DASH_CONTENT_TYPE = "application/dash+xml"


@dataclass(frozen=True, slots=True, kw_only=True)
class HlsSession:
    stream_arn: str
    playback_mode: str  # ON_DEMAND, LIVE or LIVE_REPLAY
    selector_type: str  # PRODUCER_TIMESTAMP or SERVER_TIMESTAMP
    start_ms: int
    end_ms: int
    container: str  # FRAGMENTED_MP4 or MPEG_TS
    discontinuity: str  # ALWAYS, NEVER or ON_DISCONTINUITY
    max_fragments: int
    expires_ms: int
    created_ms: int = 0  # when the session was opened: LIVE_REPLAY's clock starts there
    # A dynamic (LIVE, LIVE_REPLAY) DASH manifest's availabilityStartTime is created_ms minus
    # this media time: the live edge at the session's start (LIVE: the end of the newest
    # fragment; LIVE_REPLAY: the start of the first), fixed for the session's life.
    anchor_ms: int = 0
    # The creation time of the internal stream's one shard: with a log offset, all a
    # fragment number encodes (segment URLs carry the offset).
    shard_created_ms: int = 0

    @property
    def live(self) -> bool:
        """LIVE and LIVE_REPLAY: a sliding window that players reload."""
        return self.playback_mode in ("LIVE", "LIVE_REPLAY")


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    fragment_number: str
    start_ms: int  # by the session's selector type
    duration_ms: int
    timecode_ms: int = 0  # the fragment's own media time (its Cluster's timecode)


_FRAGMENT_SLOT_BYTES = 7  # a 48-bit log offset or all ones: 10 base64 characters
_NO_FRAGMENT = 2 ** (8 * _FRAGMENT_SLOT_BYTES) - 1
assert OFFSET_MAX < _NO_FRAGMENT


def encode_token(session: HlsSession, *, key: bytes, fragment_offset: int | None = None) -> str:
    """The session's token, or (`fragment_offset`) the token of one of its segments: the
    same payload with the fragment slot filled, so both have the same length."""
    assert fragment_offset is None or 0 <= fragment_offset <= OFFSET_MAX
    payload = json.dumps(asdict(session), sort_keys=True, separators=(",", ":")).encode()
    slot = (_NO_FRAGMENT if fragment_offset is None else fragment_offset).to_bytes(
        _FRAGMENT_SLOT_BYTES, "big"
    )
    signature = hmac.new(key, payload + b"." + slot, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(slot)}.{_b64(signature)}"


def decode_token(token: str, *, key: bytes, now_ms: int) -> tuple[HlsSession, int | None]:
    """The session a token carries and the log offset of the fragment it names (None for
    the session's own token); NotAuthorizedException when it is not one this cluster
    signed or it expired."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three parts")
        payload, slot, signature = (_unb64(part) for part in parts)
        if len(slot) != _FRAGMENT_SLOT_BYTES:
            raise ValueError("the fragment slot is not 7 bytes")
    except (binascii.Error, ValueError) as error:
        raise ShoalError(ErrorCode.NOT_AUTHORIZED, messages.SESSION_TOKEN_INVALID) from error
    expected = hmac.new(key, payload + b"." + slot, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise ShoalError(ErrorCode.NOT_AUTHORIZED, messages.SESSION_TOKEN_INVALID)
    session = HlsSession(**json.loads(payload))
    if now_ms >= session.expires_ms:
        raise ShoalError(ErrorCode.NOT_AUTHORIZED, messages.SESSION_TOKEN_EXPIRED)
    offset = int.from_bytes(slot, "big")
    return session, None if offset == _NO_FRAGMENT else offset


def fragment_number(session: HlsSession, offset: int) -> str:
    """The fragment number of the fragment starting at `offset` of the session's stream."""
    return encode_sequence_number(
        SequencePosition(shard_created_ms=session.shard_created_ms, shard_index=0, offset=offset)
    )


def segment_token(session: HlsSession, segment: Segment, *, key: bytes) -> str:
    return encode_token(
        session, key=key, fragment_offset=decode_sequence_number(segment.fragment_number).offset
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _query(token: str, **more: str) -> str:
    return urllib.parse.urlencode({"SessionToken": token, **more})


def master_playlist(token: str, *, bandwidth: int) -> str:
    version = 7
    return (
        "#EXTM3U\n"
        f"#EXT-X-VERSION:{version}\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        f"#EXT-X-STREAM-INF:BANDWIDTH={max(1, bandwidth)}\n"
        f"{MEDIA_PLAYLIST}?{_query(token, TrackNumber='1')}\n"
    )


def media_sequence(fragment_number: str) -> int:
    """A LIVE playlist's media sequence number for a fragment: the log offset of its first
    record, which rises by one per fragment while fragments fit in one record each and come
    from one producer at a time (a fragment chunked over k records advances it by k)."""
    return decode_sequence_number(fragment_number).offset


def media_playlist(
    session: HlsSession,
    token: str,
    segments: list[Segment],
    *,
    key: bytes,
    ended: bool = False,
) -> str:
    """An ON_DEMAND media playlist (every segment, then the end), or a LIVE or LIVE_REPLAY
    one (the newest segments, numbered on from the stream's start, no end until `ended`, a
    LIVE_REPLAY past its EndTimestamp: players reload it)."""
    live = session.live
    target = max((math.ceil(s.duration_ms / 1000) for s in segments), default=1)
    sequence = media_sequence(segments[0].fragment_number) if live and segments else 0
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{7 if session.container == 'FRAGMENTED_MP4' else 3}",
        f"#EXT-X-TARGETDURATION:{max(1, target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{sequence}",
    ]
    if live and session.discontinuity == "ALWAYS":
        # Every boundary is a discontinuity: as many went by as segments did.
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{sequence}")
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    if session.container == "FRAGMENTED_MP4":
        lines.append(f'#EXT-X-MAP:URI="{MP4_INIT}?{_query(token)}"')
    media = MP4_MEDIA if session.container == "FRAGMENTED_MP4" else TS_MEDIA
    previous_end: int | None = None
    for segment in segments:
        if previous_end is not None and _discontinuous(session, segment, previous_end):
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{segment.duration_ms / 1000:.3f},")
        lines.append(f"{media}?{_query(segment_token(session, segment, key=key))}")
        previous_end = segment.start_ms + segment.duration_ms
    if not live or ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _discontinuous(session: HlsSession, segment: Segment, previous_end: int) -> bool:
    """Whether a discontinuity tag goes before `segment` (DiscontinuityMode): always, never,
    or where its start is more than a millisecond away from the previous segment's end."""
    if session.discontinuity == "ALWAYS":
        return True
    if session.discontinuity == "ON_DISCONTINUITY":
        return abs(segment.start_ms - previous_end) > 1
    return False


def dash_manifest(
    session: HlsSession,
    token: str,
    segments: list[Segment],
    *,
    bandwidth: int,
    now_ms: int,
    key: bytes,
    ended: bool = False,
) -> str:
    """The MPD of a session: one video representation, its fragmented-MP4 segments in a
    SegmentList with a SegmentTimeline on the fragments' own media time (millisecond
    timescale). ON_DEMAND (or a LIVE_REPLAY past its end) is static and starts at the first
    fragment; LIVE and LIVE_REPLAY are dynamic, reloaded every target duration, with an
    availabilityStartTime fixed at the session's start (`HlsSession.anchor_ms`) so that a
    segment is available once its media time has passed on the wall clock."""
    assert segments
    first = segments[0].timecode_ms
    total_ms = segments[-1].timecode_ms + segments[-1].duration_ms - first
    target_s = max(1, max(math.ceil(s.duration_ms / 1000) for s in segments))
    init = quoteattr(f"{MP4_INIT}?{_query(token)}")
    timeline = "".join(f'<S t="{s.timecode_ms}" d="{s.duration_ms}"/>' for s in segments)
    urls = "".join(
        "<SegmentURL media="
        + quoteattr(f"{MP4_MEDIA}?{_query(segment_token(session, s, key=key))}")
        + "/>"
        for s in segments
    )
    if session.live and not ended:
        available_from = session.created_ms - session.anchor_ms
        timing = (
            'type="dynamic" '
            f'availabilityStartTime="{_iso(available_from)}" publishTime="{_iso(now_ms)}" '
            f'minimumUpdatePeriod="PT{target_s}S" timeShiftBufferDepth="PT{total_ms / 1000:.3f}S" '
            f'suggestedPresentationDelay="PT{2 * target_s}S" minBufferTime="PT{target_s}S"'
        )
        offset = 0
        period_start = "PT0S"
    else:
        timing = (
            f'type="static" minBufferTime="PT{target_s}S" '
            f'mediaPresentationDuration="PT{total_ms / 1000:.3f}S"'
        )
        offset = first
        period_start = "PT0S"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" '
        f'profiles="urn:mpeg:dash:profile:isoff-live:2011" {timing}>'
        f'<Period id="0" start="{period_start}">'
        '<AdaptationSet mimeType="video/mp4" contentType="video" segmentAlignment="true" '
        'startWithSAP="1">'
        f'<Representation id="1" bandwidth="{max(1, bandwidth)}">'
        f'<SegmentList timescale="1000" presentationTimeOffset="{offset}">'
        f"<Initialization sourceURL={init}/>"
        f"<SegmentTimeline>{timeline}</SegmentTimeline>{urls}"
        "</SegmentList></Representation></AdaptationSet></Period></MPD>\n"
    )


def _iso(ms: int) -> str:
    """An xs:dateTime in UTC with milliseconds."""
    seconds, millis = divmod(ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{millis:03d}Z"
