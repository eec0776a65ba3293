"""Cutting a Matroska byte stream into fragments, as PutMedia does: one Cluster, one fragment.

`MkvSplitter` is fed the request body as it arrives (`feed`) and told when it ended
(`finish`); it returns what happened in between, in order: `FragmentStarted` when a Cluster's
timecode has arrived (the BUFFERING acknowledgement) and `MkvFragment` when the Cluster is
complete (RECEIVED). A Cluster of unknown size, as live producers write them, is complete when
the next top-level element begins or the body ends. Pure: bytes in, values out; the limits and
AWS's error ids (`acks.AckErrorId`) of a bad stream are raised as `MkvError`.

What is kept per fragment is what GetMedia must give back: the producer's EBML header, its
Segment Info and Tracks (`header`, stored with every fragment so any fragment can be served
alone) and the Cluster re-encoded with its known size. Other top-level elements (SeekHead,
Cues, Void) are skipped, as AWS does, and so are the producer's Tags except one: a Tags
element holding a SimpleTag named AWS_KINESISVIDEO_NOTIFICATION asks for an SNS notification
of the fragment whose Cluster follows it (where the producer SDKs write fragment metadata:
before the next fragment starts). Its other SimpleTags (nested in that one or beside it, at
most 10, names of at most 128 bytes, values of at most 256: AWS's limits, else ERROR 4009)
become the notification's payload (`MkvFragment.notification`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker import limits
from broker.video import ebml, messages
from broker.video.acks import AckErrorId

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
INFO = 0x1549A966
TIMECODE_SCALE = 0x2AD7B1
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
DEFAULT_DURATION = 0x23E383
CLUSTER = 0x1F43B675
CLUSTER_TIMECODE = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
TAGS = 0x1254C367
TAG = 0x7373
SIMPLE_TAG = 0x67C8
TAG_NAME = 0x45A3
TAG_STRING = 0x4487
NOTIFICATION_TAG = "AWS_KINESISVIDEO_NOTIFICATION"
# Elements that can only sit at the Segment's level: one of them ends an unknown-size Cluster.
SEGMENT_LEVEL_IDS = frozenset(
    {
        CLUSTER,
        INFO,
        TRACKS,
        TAGS,
        0x114D9B74,  # SeekHead
        0x1C53BB6B,  # Cues
        0x1043A770,  # Chapters
        0x1941A469,  # Attachments
        EBML_HEADER,  # a new MKV stream on the same connection (a producer that restarted)
        SEGMENT,
    }
)
DEFAULT_TIMECODE_SCALE_NS = 1_000_000
_NS_PER_MS = 1_000_000


class MkvError(Exception):
    """The stream cannot be taken further; `error_id` is the ERROR acknowledgement's id."""

    def __init__(self, error_id: AckErrorId, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class FragmentStarted:
    """A Cluster's timecode arrived: the producer gets BUFFERING for it."""

    timecode_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MkvFragment:
    """One complete Cluster and the stream header it belongs to."""

    header: bytes  # the producer's EBML header, Segment Info and Tracks elements
    cluster: bytes  # the Cluster element, with its size known
    timecode_ms: int  # the Cluster's timecode, in milliseconds
    duration_ms: int  # from its first to past its last frame
    frame_count: int
    # The payload of an AWS_KINESISVIDEO_NOTIFICATION tag before the Cluster (name, value
    # pairs), None when the producer asked for no notification of this fragment.
    notification: tuple[tuple[str, str], ...] | None = None


MkvEvent = FragmentStarted | MkvFragment


@dataclass(slots=True)
class _Tracks:
    numbers: tuple[int, ...] = ()
    frame_duration_ns: dict[int, int] = field(default_factory=dict)


class MkvSplitter:
    """Incremental splitter for one PutMedia body (see the module docstring)."""

    def __init__(
        self,
        *,
        fragment_bytes_max: int = limits.video_fragment_bytes_max,
        fragment_duration_ms_max: int = limits.video_fragment_duration_ms_max,
        tracks_max: int = limits.video_tracks_max,
    ) -> None:
        self._fragment_bytes_max = fragment_bytes_max
        self._fragment_duration_ms_max = fragment_duration_ms_max
        self._tracks_max = tracks_max
        self._buffer = bytearray()
        self._pos = 0  # where the unread bytes of `_buffer` start (compacted once per feed)
        self._phase = "top"  # "top" (EBML header next), "segment", "cluster"
        self._ebml_header = b""
        self._info = b""
        self._tracks_element = b""
        self._tracks = _Tracks()
        self._timecode_scale_ns = DEFAULT_TIMECODE_SCALE_NS
        self._cluster = bytearray()
        self._cluster_remaining = ebml.UNKNOWN_SIZE  # payload bytes still to come, if known
        self._cluster_timecode: int | None = None
        self._previous_timecode_ms: int | None = None
        self._notification: tuple[tuple[str, str], ...] | None = None  # for the next Cluster

    def feed(self, data: bytes) -> list[MkvEvent]:
        del self._buffer[: self._pos]  # one move per feed, not one per element
        self._pos = 0
        self._buffer += data
        events: list[MkvEvent] = []
        try:
            while self._step(events):  # bounded: every step consumes bytes or returns False
                pass
        except ebml.EbmlError as error:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, str(error)) from error
        return events

    def finish(self) -> list[MkvEvent]:
        """The body ended: an unknown-size Cluster in progress is complete; anything else
        left over is a truncated stream."""
        events: list[MkvEvent] = []
        if self._phase == "cluster" and not self._unread():
            if self._cluster_remaining not in (ebml.UNKNOWN_SIZE, 0):
                raise MkvError(AckErrorId.STREAM_READ_ERROR, messages.MKV_BODY_ENDED_IN_CLUSTER)
            events.append(self._complete_cluster())
        elif self._unread():
            raise MkvError(AckErrorId.STREAM_READ_ERROR, messages.MKV_BODY_ENDED_IN_ELEMENT)
        return events

    def _unread(self) -> int:
        return len(self._buffer) - self._pos

    @property
    def has_header(self) -> bool:
        return bool(self._tracks_element)

    def _step(self, events: list[MkvEvent]) -> bool:
        if self._phase == "cluster":
            return self._cluster_step(events)
        header = ebml.read_header(self._buffer, self._pos)
        if header is None:
            return False
        if self._phase == "top":
            return self._top_step(header)
        if header.element_id == CLUSTER:
            if not self._tracks_element:
                raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_CLUSTER_BEFORE_TRACKS)
            self._pos += header.header_length
            self._phase = "cluster"
            self._cluster = bytearray()
            self._cluster_remaining = header.size
            self._cluster_timecode = None
            return True
        if header.element_id == EBML_HEADER:
            self._phase = "top"  # a new stream header follows; its Tracks replace these
            return True
        if header.element_id == SEGMENT:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_NESTED_SEGMENT)
        if header.size == ebml.UNKNOWN_SIZE:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_UNKNOWN_SIZE_IN_SEGMENT)
        whole = self._take_element(header)
        if whole is None:
            return False
        if header.element_id == INFO:
            self._info = whole
            self._timecode_scale_ns = _timecode_scale(whole[header.header_length :])
        elif header.element_id == TRACKS:
            self._tracks_element = whole
            self._tracks = self._read_tracks(whole[header.header_length :])
        elif header.element_id == TAGS:
            notification = notification_of(whole[header.header_length :])
            if notification is not None:
                self._notification = notification
        return True

    def _top_step(self, header: ebml.ElementHeader) -> bool:
        if header.element_id == EBML_HEADER:
            if header.size == ebml.UNKNOWN_SIZE:
                raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_UNKNOWN_SIZE_EBML_HEADER)
            whole = self._take_element(header)
            if whole is None:
                return False
            self._ebml_header = whole
            self._info = b""
            self._tracks_element = b""
            self._timecode_scale_ns = DEFAULT_TIMECODE_SCALE_NS
            return True
        if header.element_id == SEGMENT and self._ebml_header:
            self._pos += header.header_length  # its size is not needed: Clusters end it
            self._phase = "segment"
            return True
        raise MkvError(
            AckErrorId.INVALID_MKV_DATA,
            messages.mkv_unexpected_top_element(element_id=header.element_id),
        )

    def _take_element(self, header: ebml.ElementHeader) -> bytes | None:
        """The whole element at the buffer's start once it arrived (and removes it)."""
        end = header.header_length + header.size
        if end > limits.video_header_element_bytes_max:
            raise MkvError(
                AckErrorId.FRAGMENT_METADATA_LIMIT_REACHED,
                messages.mkv_element_outside_cluster(
                    element_id=header.element_id, size=header.size
                ),
            )
        if self._unread() < end:
            return None
        whole = bytes(self._buffer[self._pos : self._pos + end])
        self._pos += end
        return whole

    def _cluster_step(self, events: list[MkvEvent]) -> bool:
        if self._cluster_remaining == 0:
            events.append(self._complete_cluster())
            return True
        header = ebml.read_header(self._buffer, self._pos)
        if header is None:
            return False
        if self._cluster_remaining == ebml.UNKNOWN_SIZE and header.element_id in SEGMENT_LEVEL_IDS:
            events.append(self._complete_cluster())
            return True
        if header.size == ebml.UNKNOWN_SIZE:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_UNKNOWN_SIZE_IN_CLUSTER)
        end = header.header_length + header.size
        if len(self._cluster) + end > self._fragment_bytes_max:
            raise MkvError(
                AckErrorId.MAX_FRAGMENT_SIZE_REACHED,
                messages.mkv_fragment_too_large(maximum=self._fragment_bytes_max),
            )
        if self._cluster_remaining != ebml.UNKNOWN_SIZE and end > self._cluster_remaining:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_ELEMENT_PAST_CLUSTER)
        if self._unread() < end:
            return False
        child = bytes(self._buffer[self._pos : self._pos + end])
        self._pos += end
        self._cluster += child
        if self._cluster_remaining != ebml.UNKNOWN_SIZE:
            self._cluster_remaining -= end
        if header.element_id == CLUSTER_TIMECODE and self._cluster_timecode is None:
            self._cluster_timecode = ebml.read_uint(child[header.header_length :])
            events.append(FragmentStarted(timecode_ms=self._to_ms(self._cluster_timecode)))
        return True

    def _complete_cluster(self) -> MkvFragment:
        self._phase = "segment"
        payload = bytes(self._cluster)
        self._cluster = bytearray()
        if self._cluster_timecode is None:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_CLUSTER_WITHOUT_TIMECODE)
        timecode_ms = self._to_ms(self._cluster_timecode)
        if self._previous_timecode_ms is not None and timecode_ms < self._previous_timecode_ms:
            raise MkvError(
                AckErrorId.FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS,
                messages.MKV_TIMECODE_BACKWARDS,
            )
        self._previous_timecode_ms = timecode_ms
        frames, last_ns = self._read_blocks(payload)
        duration_ms = last_ns // _NS_PER_MS
        if duration_ms > self._fragment_duration_ms_max:
            raise MkvError(
                AckErrorId.MAX_FRAGMENT_DURATION_REACHED,
                messages.mkv_fragment_too_long(maximum=self._fragment_duration_ms_max // 1000),
            )
        notification, self._notification = self._notification, None
        return MkvFragment(
            header=self._ebml_header + self._info + self._tracks_element,
            cluster=ebml.element(CLUSTER, payload),
            timecode_ms=timecode_ms,
            duration_ms=duration_ms,
            frame_count=frames,
            notification=notification,
        )

    def _to_ms(self, timecode: int) -> int:
        return timecode * self._timecode_scale_ns // _NS_PER_MS

    def _read_tracks(self, payload: bytes) -> _Tracks:
        tracks = _Tracks()
        numbers: list[int] = []
        for element_id, entry in ebml.children(payload):
            if element_id != TRACK_ENTRY:
                continue
            number = None
            for child_id, value in ebml.children(entry):
                if child_id == TRACK_NUMBER:
                    number = ebml.read_uint(value)
            if number is None:
                raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_TRACK_ENTRY_WITHOUT_NUMBER)
            for child_id, value in ebml.children(entry):  # DefaultDuration may come first
                if child_id == DEFAULT_DURATION:
                    tracks.frame_duration_ns[number] = ebml.read_uint(value)
            numbers.append(number)
        if not numbers:
            raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_TRACKS_WITHOUT_ENTRY)
        if len(numbers) > self._tracks_max:
            raise MkvError(
                AckErrorId.MORE_THAN_ALLOWED_TRACKS_FOUND,
                messages.mkv_too_many_tracks(maximum=self._tracks_max),
            )
        tracks.numbers = tuple(numbers)
        return tracks

    def _read_blocks(self, payload: bytes) -> tuple[int, int]:
        """(frame count, nanoseconds from the Cluster's timecode to the end of its last
        frame), checking every frame's track against the header (AWS's 4010 and 4011)."""
        frames = 0
        end_ns = 0
        seen: dict[int, list[int]] = {}
        for element_id, value in ebml.children(payload):
            if element_id == SIMPLE_BLOCK:
                block = value
            elif element_id == BLOCK_GROUP:
                inner = [v for i, v in ebml.children(value) if i == BLOCK]
                if not inner:
                    continue
                block = inner[0]
            else:
                continue
            track, relative = _block_track_and_timecode(block)
            if track not in self._tracks.numbers:
                raise MkvError(
                    AckErrorId.TRACK_NUMBER_MISMATCH,
                    messages.mkv_frame_track_unknown(track=track),
                )
            frames += 1
            seen.setdefault(track, []).append(relative * self._timecode_scale_ns)
        for number in self._tracks.numbers:
            if number not in seen:
                raise MkvError(
                    AckErrorId.FRAMES_MISSING_FOR_TRACK,
                    messages.mkv_track_without_frame(number=number),
                )
        for track, times in seen.items():
            frame_ns = self._tracks.frame_duration_ns.get(track)
            if frame_ns is None:  # no DefaultDuration: the mean spacing of its frames
                span = max(times) - min(times)
                frame_ns = span // (len(times) - 1) if len(times) > 1 else 0
            end_ns = max(end_ns, max(times) + frame_ns)
        return frames, end_ns


def notification_of(tags_payload: bytes) -> tuple[tuple[str, str], ...] | None:
    """The notification a Tags element asks for: the (name, value) pairs of the SimpleTags
    beside or inside the AWS_KINESISVIDEO_NOTIFICATION one, or None without that tag."""
    found = False
    payload: list[tuple[str, str]] = []
    for tag_id, tag in ebml.children(tags_payload):
        if tag_id != TAG:
            continue
        simple = _simple_tags(tag)
        if not any(name == NOTIFICATION_TAG for name, _ in simple):
            continue
        found = True
        payload += [(name, value) for name, value in simple if name != NOTIFICATION_TAG]
    if not found:
        return None
    if len(payload) > limits.video_notification_keys_max:
        raise MkvError(
            AckErrorId.FRAGMENT_METADATA_LIMIT_REACHED,
            messages.mkv_too_many_notification_tags(maximum=limits.video_notification_keys_max),
        )
    for name, value in payload:
        if (
            len(name.encode()) > limits.video_notification_key_bytes_max
            or len(value.encode()) > limits.video_notification_value_bytes_max
        ):
            raise MkvError(
                AckErrorId.FRAGMENT_METADATA_LIMIT_REACHED,
                messages.MKV_NOTIFICATION_TAG_TOO_LONG,
            )
    return tuple(payload)


def _simple_tags(parent: memoryview) -> list[tuple[str, str]]:
    """Every SimpleTag under `parent` (nested ones too), as (TagName, TagString)."""
    found: list[tuple[str, str]] = []
    for element_id, value in ebml.children(parent):
        if element_id != SIMPLE_TAG:
            continue
        name = text = ""
        for child_id, child in ebml.children(value):
            if child_id == TAG_NAME:
                name = bytes(child).decode("utf-8", "replace")
            elif child_id == TAG_STRING:
                text = bytes(child).decode("utf-8", "replace")
        found.append((name, text))
        found += _simple_tags(value)
    return found


def _timecode_scale(info_payload: bytes) -> int:
    for element_id, value in ebml.children(info_payload):
        if element_id == TIMECODE_SCALE:
            scale = ebml.read_uint(value)
            if scale <= 0:
                raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_ZERO_TIMECODE_SCALE)
            return scale
    return DEFAULT_TIMECODE_SCALE_NS


def _block_track_and_timecode(block: memoryview) -> tuple[int, int]:
    """A (Simple)Block's track number and its timecode relative to the Cluster's."""
    size = ebml.read_size(block, 0)
    if size is None or size[0] == ebml.UNKNOWN_SIZE or len(block) < size[1] + 3:
        raise MkvError(AckErrorId.INVALID_MKV_DATA, messages.MKV_TRUNCATED_BLOCK)
    track, length = size
    relative = int.from_bytes(block[length : length + 2], "big", signed=True)
    return track, relative
