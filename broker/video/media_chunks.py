"""GetMedia's output: each stored fragment as a self-contained MKV chunk with AWS's tags.

A chunk is the producer's EBML header, a Segment of unknown size holding its Info and Tracks,
the fragment's Cluster, and a Tags element with what AWS adds (`TAG_*`): the fragment number,
the server and producer timestamps (seconds, millisecond precision, as AWS writes them), how
far behind the newest fragment it is, and the continuation token a reader passes back to go on
after it (`StartSelectorType CONTINUATION_TOKEN`). A client that reads the response splits it
at each EBML header, as AWS's parser library does. Pure.
"""

from __future__ import annotations

from broker.video import ebml
from broker.video.fragment_records import StoredFragment

SEGMENT = 0x18538067
TAGS = 0x1254C367
TAG = 0x7373
TARGETS = 0x63C0
SIMPLE_TAG = 0x67C8
TAG_NAME = 0x45A3
TAG_STRING = 0x4487

TAG_FRAGMENT_NUMBER = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
TAG_SERVER_TIMESTAMP = "AWS_KINESISVIDEO_SERVER_TIMESTAMP"
TAG_PRODUCER_TIMESTAMP = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"
TAG_MILLIS_BEHIND_NOW = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"
TAG_CONTINUATION_TOKEN = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
TAG_ERROR_CODE = "AWS_KINESISVIDEO_ERROR_CODE"
TAG_ERROR_ID = "AWS_KINESISVIDEO_ERROR_ID"

CONTENT_TYPE = "video/webm"  # AWS's GetMedia ContentType for MKV


def seconds_text(ms: int) -> str:
    """Milliseconds as AWS's tag text: seconds with three decimals."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def _simple_tag(name: str, value: str) -> bytes:
    return ebml.element(
        SIMPLE_TAG,
        ebml.string_element(TAG_NAME, name) + ebml.string_element(TAG_STRING, value),
    )


def tags_element(tags: list[tuple[str, str]]) -> bytes:
    body = ebml.element(TARGETS, b"") + b"".join(_simple_tag(n, v) for n, v in tags)
    return ebml.element(TAGS, ebml.element(TAG, body))


def _split_header(header: bytes) -> tuple[bytes, bytes]:
    """The producer's EBML header element, and the rest (its Info and Tracks)."""
    first = ebml.read_header(header, 0)
    assert first is not None
    assert first.size != ebml.UNKNOWN_SIZE
    end = first.header_length + first.size
    return header[:end], header[end:]


def fragment_chunk(
    fragment: StoredFragment, *, millis_behind_now: int | None, with_continuation: bool
) -> bytes:
    """One fragment as GetMedia (with `millis_behind_now` and a continuation token) or
    GetMediaForFragmentList (neither) sends it."""
    ebml_header, segment_head = _split_header(fragment.header)
    metadata = fragment.metadata
    tags = [
        (TAG_FRAGMENT_NUMBER, fragment.fragment_number),
        (TAG_SERVER_TIMESTAMP, seconds_text(metadata.server_timestamp_ms)),
        (TAG_PRODUCER_TIMESTAMP, seconds_text(metadata.producer_timestamp_ms)),
    ]
    if millis_behind_now is not None:
        tags.append((TAG_MILLIS_BEHIND_NOW, str(max(0, millis_behind_now))))
    if with_continuation:
        tags.append((TAG_CONTINUATION_TOKEN, fragment.fragment_number))
    return b"".join(
        (
            ebml_header,
            ebml.encode_id(SEGMENT),
            ebml.unknown_size(),
            segment_head,
            fragment.cluster,
            tags_element(tags),
        )
    )


def error_chunk(fragment_number: str | None, code: str, error_id: int) -> bytes:
    """The Tags element AWS ends a GetMedia response with when it failed midway."""
    tags = [(TAG_ERROR_CODE, code), (TAG_ERROR_ID, str(error_id))]
    if fragment_number is not None:
        tags.insert(0, (TAG_FRAGMENT_NUMBER, fragment_number))
    return tags_element(tags)


def read_tags(chunk: bytes) -> dict[str, str]:
    """The simple tags of every Tags element at the Segment level of one chunk (for clients
    and tests): name -> value."""
    found: dict[str, str] = {}
    first = ebml.read_header(chunk, 0)
    assert first is not None
    offset = first.header_length + first.size
    segment = ebml.read_header(chunk, offset)
    assert segment is not None
    assert segment.element_id == SEGMENT
    offset += segment.header_length
    while offset < len(chunk):  # bounded: every pass moves past one element
        header = ebml.read_header(chunk, offset)
        assert header is not None
        assert header.size != ebml.UNKNOWN_SIZE
        start = offset + header.header_length
        if header.element_id == TAGS:
            for tag_id, tag in ebml.children(chunk[start : start + header.size]):
                if tag_id != TAG:
                    continue
                for simple_id, simple in ebml.children(tag):
                    if simple_id != SIMPLE_TAG:
                        continue
                    parts = dict(ebml.children(simple))
                    found[bytes(parts[TAG_NAME]).decode()] = bytes(parts[TAG_STRING]).decode()
        offset = start + header.size
    return found


def split_chunks(stream: bytes) -> list[bytes]:
    """A GetMedia body cut at each EBML header into its chunks (for clients and tests)."""
    chunks: list[bytes] = []
    offset = 0
    start = 0
    while offset < len(stream):  # bounded: every pass moves past one element
        header = ebml.read_header(stream, offset)
        if header is None:
            break
        if header.element_id == 0x1A45DFA3 and offset > start:
            chunks.append(stream[start:offset])
            start = offset
        if header.element_id == SEGMENT:
            offset += header.header_length  # step into the Segment
            continue
        offset += header.header_length + header.size
    if start < len(stream):
        chunks.append(stream[start:])
    return chunks
