"""The console's Kinesis Video pages: the video streams list, a stream's archived fragments,
and an HLS session played in the page.

Every read is a Kinesis Video operation validated by its botocore model and run by the node's
`VideoService` exactly as its REST door runs it, as the visitor. The player is hls.js (vendored,
`static/hls.light.min.js`) fed with the session URL's path, so the browser fetches the playlist
and segments from the node that served the page (same origin, allowed by the page's CSP).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from broker.caller import Caller
from broker.console.visitor import Render, Visitor
from broker.console.web import Request, Response, url
from broker.errors import ErrorCode, ShoalError
from broker.gateway.validation import validate_request
from broker.video import messages

CONTROL_OPERATIONS = frozenset({"ListStreams", "DescribeStream"})
ARCHIVED_MEDIA = "kinesis-video-archived-media"
LIST_PAGES_MAX = 10
FRAGMENTS_PAGE = 25
PLAYBACK_MODES = ("ON_DEMAND", "LIVE")


class VideoCalls(Protocol):
    """The node's `VideoService` (authorized as the REST door authorizes it, with access
    control on)."""

    async def call(self, operation: str, request: Mapping[str, Any], caller: Caller) -> Any: ...


def parse_timestamp(text: str) -> datetime.datetime:
    """An ISO 8601 time (UTC when it names no zone) or epoch seconds, from a form field."""
    text = text.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.datetime.fromtimestamp(float(text), tz=datetime.UTC)
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.console_timestamp_unreadable(text=text),
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def player_source(session_url: str) -> str:
    """The session URL as a same-origin path for the in-page player."""
    parts = urlsplit(session_url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class VideoPages:
    """`/console/video...`: one per console."""

    def __init__(self, video: VideoCalls, render: Render) -> None:
        self._video = video
        self._render = render

    async def route(self, request: Request, visitor: Visitor, rest: str) -> Response | None:
        """The page for `rest` (the path below /video/), or None when there is none."""
        name, _, sub = rest.strip("/").partition("/") if rest.strip("/") else ("", "", "")
        if not name:
            return await self._streams(visitor)
        if sub == "":
            return await self._stream(request, visitor, name)
        if sub == "hls" and request.method == "POST":
            return await self._hls(request, visitor, name)
        return None

    async def _call(self, operation: str, request: dict[str, Any], visitor: Visitor) -> Any:
        """One Kinesis Video operation as its REST door runs it (validated by its model)."""
        model = "kinesisvideo" if operation in CONTROL_OPERATIONS else ARCHIVED_MEDIA
        validate_request(operation, request, model=model)
        return await self._video.call(operation, request, visitor.caller)

    async def _streams(self, visitor: Visitor) -> Response:
        listed: list[dict[str, Any]] = []
        request: dict[str, Any] = {"MaxResults": 1000}
        for _ in range(LIST_PAGES_MAX):
            answer = await self._call("ListStreams", request, visitor)
            listed.extend(answer.get("StreamInfoList", []))
            token = answer.get("NextToken")
            if not token:
                break
            request = {"MaxResults": 1000, "NextToken": token}
        return self._render("video.html", visitor, title="Video streams", streams=listed)

    async def _describe(self, name: str, visitor: Visitor) -> dict[str, Any]:
        answer = await self._call("DescribeStream", {"StreamName": name}, visitor)
        return dict(answer["StreamInfo"])

    async def _stream(self, request: Request, visitor: Visitor, name: str) -> Response:
        info = await self._describe(name, visitor)
        fragments: list[dict[str, Any]] = []
        next_token: str | None = None
        if info.get("DataRetentionInHours", 0) > 0:
            listing: dict[str, Any] = {"StreamName": name, "MaxResults": FRAGMENTS_PAGE}
            if request.arg("after"):
                listing["NextToken"] = request.arg("after")
            answer = await self._call("ListFragments", listing, visitor)
            fragments = sorted(
                answer.get("Fragments", []), key=lambda fragment: fragment["ProducerTimestamp"]
            )
            next_token = answer.get("NextToken")
        return self._render(
            "video_stream.html",
            visitor,
            title=name,
            info=info,
            fragments=fragments,
            next_token=next_token,
            session=None,
        )

    async def _hls(self, request: Request, visitor: Visitor, name: str) -> Response:
        """GetHLSStreamingSessionURL, played in the page: ON_DEMAND over the listed fragments'
        producer-time range, or LIVE from the newest fragment on."""
        mode = request.arg("mode", "ON_DEMAND")
        if mode not in PLAYBACK_MODES:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.console_playback_mode_invalid(playback_modes=PLAYBACK_MODES),
            )
        call: dict[str, Any] = {"StreamName": name, "PlaybackMode": mode}
        if mode == "ON_DEMAND":
            call["HLSFragmentSelector"] = {
                "FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {
                    "StartTimestamp": parse_timestamp(request.arg("start")),
                    "EndTimestamp": parse_timestamp(request.arg("end")),
                },
            }
        answer = await self._call("GetHLSStreamingSessionURL", call, visitor)
        session_url = str(answer["HLSStreamingSessionURL"])
        return self._render(
            "video_stream.html",
            visitor,
            title=name,
            info=await self._describe(name, visitor),
            fragments=[],
            next_token=None,
            session={"url": session_url, "src": player_source(session_url), "mode": mode},
            back=url(f"/video/{name}"),
        )
