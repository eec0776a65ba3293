"""Reading fragments back: GetMedia (`kinesis-video-media`), ListFragments and
GetMediaForFragmentList (`kinesis-video-archived-media`). Loop-bound operations over the
archive; the chunk format is `media_chunks.py`'s.

GetMedia's StartSelector maps onto a position in the internal stream's log: EARLIEST its start,
NOW its end, FRAGMENT_NUMBER and CONTINUATION_TOKEN just after that fragment's first record
(fragment numbers are sequence numbers), SERVER_TIMESTAMP the log's time index (then fragments
that ended before the timestamp are skipped), PRODUCER_TIMESTAMP a scan from the start. It
follows the live edge: at the end of the log it waits for new fragments and ends the response
after `limits.video_get_media_idle_ms` with none, as AWS ends an idle GetMedia.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.video_table import VideoStreamMeta
from broker.video import messages
from broker.video.archive import FragmentArchive, Position
from broker.video.fragment_records import StoredFragment
from broker.video.media_chunks import fragment_chunk


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _check_fragment_number(number: str, member: str) -> str:
    if not number.isascii() or not number.isdigit() or len(number) > 128:  # the model: 1..128
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.fragment_number_invalid(member=member, number=number),
        )
    return number


Skip = Callable[[StoredFragment], bool]


def start_position(selector: Mapping[str, Any]) -> tuple[Position, Skip]:
    """The log position a StartSelector names, and which fragments from there to skip."""
    kind = selector["StartSelectorType"]
    if kind == "EARLIEST":
        return Position(iterator_type="TRIM_HORIZON"), lambda _: False
    if kind == "NOW":
        return Position(iterator_type="LATEST"), lambda _: False
    if kind in ("FRAGMENT_NUMBER", "CONTINUATION_TOKEN"):
        member = "AfterFragmentNumber" if kind == "FRAGMENT_NUMBER" else "ContinuationToken"
        value = selector.get(member)
        if value is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.selector_member_required(member=member, kind=kind),
            )
        number = _check_fragment_number(value, member)
        return (
            Position(iterator_type="AFTER_SEQUENCE_NUMBER", sequence_number=number),
            lambda _: False,
        )
    start = selector.get("StartTimestamp")
    if start is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.selector_member_required(member="StartTimestamp", kind=kind),
        )
    start_ms = _ms(start)
    if kind == "SERVER_TIMESTAMP":

        def before_server(fragment: StoredFragment) -> bool:
            meta = fragment.metadata
            return meta.server_timestamp_ms + meta.duration_ms <= start_ms

        return Position(iterator_type="AT_TIMESTAMP", timestamp_ms=start_ms), before_server

    def before_producer(fragment: StoredFragment) -> bool:
        meta = fragment.metadata
        return meta.producer_timestamp_ms + meta.duration_ms <= start_ms

    return Position(iterator_type="TRIM_HORIZON"), before_producer


async def get_media(
    archive: FragmentArchive, stream: VideoStreamMeta, selector: Mapping[str, Any]
) -> AsyncIterator[bytes]:
    """GetMedia's body: a chunk per fragment from the selector on, following the live edge."""
    position, skip = start_position(selector)
    follow_s = limits.video_get_media_idle_ms / 1000
    async for read in archive.read(stream, position, follow_s=follow_s):
        if skip(read.fragment):
            continue
        yield fragment_chunk(
            read.fragment, millis_behind_now=read.millis_behind_latest, with_continuation=True
        )


def fragment_shape(fragment: StoredFragment) -> dict[str, Any]:
    """The archived-media model's Fragment."""
    meta = fragment.metadata
    return {
        "FragmentNumber": fragment.fragment_number,
        "FragmentSizeInBytes": fragment.size_bytes,
        "ProducerTimestamp": _datetime(meta.producer_timestamp_ms),
        "ServerTimestamp": _datetime(meta.server_timestamp_ms),
        "FragmentLengthInMilliseconds": meta.duration_ms,
    }


def _encode_next_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode("ascii")


def _decode_next_token(token: str) -> str:
    try:
        document = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        return _check_fragment_number(str(document["after"]), "NextToken")
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError) as error:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.NEXT_TOKEN_INVALID) from error


async def list_fragments(
    archive: FragmentArchive, stream: VideoStreamMeta, request: Mapping[str, Any]
) -> dict[str, Any]:
    """ListFragments: the stream's fragments in log order, within the selector's timestamp
    range (inclusive) if given, a page of `MaxResults` at a time."""
    page_size: int = request.get("MaxResults", 1000)
    selector = request.get("FragmentSelector")
    token = request.get("NextToken")
    position = Position(iterator_type="TRIM_HORIZON")
    start_ms, end_ms, server = 0, 2**63, False
    if selector is not None:
        start_ms = _ms(selector["TimestampRange"]["StartTimestamp"])
        end_ms = _ms(selector["TimestampRange"]["EndTimestamp"])
        if start_ms > end_ms:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.START_BEFORE_END)
        server = selector["FragmentSelectorType"] == "SERVER_TIMESTAMP"

    def in_range(fragment: StoredFragment) -> bool:
        meta = fragment.metadata
        value = meta.server_timestamp_ms if server else meta.producer_timestamp_ms
        return start_ms <= value <= end_ms

    if selector is not None and server:
        position = Position(iterator_type="AT_TIMESTAMP", timestamp_ms=start_ms)
    if token is not None:
        position = Position(
            iterator_type="AFTER_SEQUENCE_NUMBER", sequence_number=_decode_next_token(token)
        )
    fragments: list[dict[str, Any]] = []
    last: str | None = None
    async for read in archive.read(stream, position):
        if not in_range(read.fragment):
            continue
        if len(fragments) == page_size:
            return {"Fragments": fragments, "NextToken": _encode_next_token(last or "")}
        fragments.append(fragment_shape(read.fragment))
        last = read.fragment.fragment_number
    return {"Fragments": fragments}


async def get_media_for_fragment_list(
    archive: FragmentArchive, stream: VideoStreamMeta, numbers: list[str]
) -> AsyncIterator[bytes]:
    """The listed fragments as chunks, in the order asked. A number that names no fragment
    of the stream is ResourceNotFoundException, checked before the first byte is sent."""
    for number in numbers:
        _check_fragment_number(number, "Fragments")
    found: list[StoredFragment] = []
    for number in numbers:
        fragment = await _fragment_at(archive, stream, number)
        if fragment is None:
            raise ShoalError(
                ErrorCode.VIDEO_RESOURCE_NOT_FOUND, messages.fragment_not_found(number=number)
            )
        found.append(fragment)
    return _chunks(found)


async def _chunks(fragments: list[StoredFragment]) -> AsyncIterator[bytes]:
    for fragment in fragments:
        yield fragment_chunk(fragment, millis_behind_now=None, with_continuation=False)


async def _fragment_at(
    archive: FragmentArchive, stream: VideoStreamMeta, number: str
) -> StoredFragment | None:
    position = Position(iterator_type="AT_SEQUENCE_NUMBER", sequence_number=number)
    try:
        async for read in archive.read(stream, position):
            if read.fragment.fragment_number == number:
                return read.fragment
            return None
    except ShoalError as error:
        if error.code is ErrorCode.INVALID_ARGUMENT:
            return None
        raise
    return None
