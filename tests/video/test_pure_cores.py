"""The pure rules of broker/video/: EBML framing, the MKV splitter and its AWS limits, the
fragment records (chunked past a record and reassembled around other writers' chunks), the
acknowledgement encoding and GetMedia's chunk tags. No node, no I/O."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import ErrorCode, ShoalError
from broker.video import ebml, hls, mkv
from broker.video.acks import Ack, AckErrorId, AckEventType, decode_acks
from broker.video.fragment_records import (
    FragmentAssembler,
    FragmentMetadata,
    FragmentRecordError,
    StoredFragment,
    encode_fragment,
)
from broker.video.media_chunks import fragment_chunk, read_tags, seconds_text, split_chunks
from broker.video.mkv import FragmentStarted, MkvError, MkvFragment, MkvSplitter
from tests.video.media import decoded_frame_times_ms, h264_mkv


@given(st.integers(min_value=0, max_value=2**56 - 2))
def test_sizes_round_trip(size: int) -> None:
    encoded = ebml.encode_size(size)
    assert ebml.read_size(encoded, 0) == (size, len(encoded))


def test_unknown_size_and_truncation() -> None:
    assert ebml.read_size(ebml.unknown_size(), 0) == (ebml.UNKNOWN_SIZE, 8)
    assert ebml.read_size(b"\xff", 0) == (ebml.UNKNOWN_SIZE, 1)
    assert ebml.read_header(b"\x1f\x43\xb6", 0) is None  # the id is not complete yet
    with pytest.raises(ebml.EbmlError):
        ebml.read_id(b"\x00\x01", 0)


def _split(data: bytes, piece: int) -> list[mkv.MkvEvent]:
    splitter = MkvSplitter()
    events: list[mkv.MkvEvent] = []
    for start in range(0, len(data), piece):
        events += splitter.feed(data[start : start + piece])
    return events + splitter.finish()


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("piece", [1, 977, 1 << 20])
def test_splitter_finds_every_cluster_however_the_bytes_arrive(live: bool, piece: int) -> None:
    video = h264_mkv(frames=60, fps=20, live=live)
    events = _split(video, piece)
    fragments = [e for e in events if isinstance(e, MkvFragment)]
    started = [e for e in events if isinstance(e, FragmentStarted)]
    assert [f.timecode_ms for f in fragments] == [0, 1000, 2000]
    assert [s.timecode_ms for s in started] == [0, 1000, 2000]
    assert [f.frame_count for f in fragments] == [20, 20, 20]
    assert [f.duration_ms for f in fragments] == [1000, 1000, 1000]
    # Each fragment is a playable MKV on its own: its header and its Cluster.
    assert decoded_frame_times_ms(fragments[1].header + _segment(fragments[1].cluster)) == [
        1000 + 50 * i for i in range(20)
    ]


def _segment(cluster: bytes) -> bytes:
    return ebml.encode_id(mkv.SEGMENT) + ebml.unknown_size() + cluster


def test_splitter_errors_carry_aws_error_ids() -> None:
    video = h264_mkv(frames=40, fps=20)
    with pytest.raises(MkvError) as raised:
        _split(b"\x1f\x43\xb6\x75\x80", 100)  # a Cluster with no header before it
    assert raised.value.error_id is AckErrorId.INVALID_MKV_DATA
    with pytest.raises(MkvError) as raised:
        _split(video[:-50], 1000)
    assert raised.value.error_id is AckErrorId.STREAM_READ_ERROR
    small = MkvSplitter(fragment_bytes_max=1000)
    with pytest.raises(MkvError) as raised:
        small.feed(video)
    assert raised.value.error_id is AckErrorId.MAX_FRAGMENT_SIZE_REACHED
    short = MkvSplitter(fragment_duration_ms_max=500)
    with pytest.raises(MkvError) as raised:
        short.feed(video)
    assert raised.value.error_id is AckErrorId.MAX_FRAGMENT_DURATION_REACHED


def test_fragment_timecodes_must_not_go_back() -> None:
    video = h264_mkv(frames=40, fps=20)
    splitter = MkvSplitter()
    splitter.feed(video)
    with pytest.raises(MkvError) as raised:
        splitter.feed(video)  # the same stream again: a new header, timecodes from 0
    assert raised.value.error_id is AckErrorId.FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS


def _metadata(timecode_ms: int = 0) -> FragmentMetadata:
    return FragmentMetadata(
        producer_timestamp_ms=10 + timecode_ms,
        server_timestamp_ms=20,
        timecode_ms=timecode_ms,
        duration_ms=1000,
        frame_count=25,
    )


def test_large_fragments_take_several_records_and_interleave() -> None:
    one, two = uuid.uuid4(), uuid.uuid4()
    big = bytes(range(256)) * 40  # 10 KiB of cluster
    first = encode_fragment(
        session_id=one,
        ordinal=0,
        metadata=_metadata(),
        header=b"H1",
        cluster=big,
        chunk_bytes_max=3000,
    )
    second = encode_fragment(
        session_id=two,
        ordinal=0,
        metadata=_metadata(5),
        header=b"H2",
        cluster=b"small",
        chunk_bytes_max=3000,
    )
    assert len(first) == 4
    assert len(second) == 1
    assert all(len(record) <= 3000 for record in first)
    assembler = FragmentAssembler()
    order = [first[0], first[1], second[0], first[2], first[3]]
    done = [assembler.add(str(100 + i), record) for i, record in enumerate(order)]
    assert [d is not None for d in done] == [False, False, True, False, True]
    small, large = done[2], done[4]
    assert small is not None
    assert large is not None
    assert (small.fragment_number, small.header, small.cluster) == ("102", b"H2", b"small")
    assert (large.fragment_number, large.header, large.cluster) == ("100", b"H1", big)
    assert large.metadata == _metadata()
    # A read that starts inside a fragment skips its tail.
    late = FragmentAssembler()
    assert late.add("7", first[2]) is None
    assert late.add("8", first[3]) is None
    with pytest.raises(FragmentRecordError):
        late.add("9", b"not a fragment chunk at all")


def test_acks_round_trip_in_aws_shape() -> None:
    acks = [
        Ack(event_type=AckEventType.BUFFERING, timecode_ms=0),
        Ack(event_type=AckEventType.PERSISTED, timecode_ms=0, fragment_number="123"),
        Ack(
            event_type=AckEventType.ERROR,
            timecode_ms=2000,
            error_id=AckErrorId.INVALID_MKV_DATA,
            error_message="bad",
        ),
        Ack(event_type=AckEventType.IDLE),
    ]
    wire = b"".join(ack.encode() for ack in acks)
    assert (
        wire.splitlines()[1]
        == b'{"EventType":"PERSISTED","FragmentTimecode":0,"FragmentNumber":"123"}'
    )
    assert b'"ErrorId":4006,"ErrorCode":"INVALID_MKV_DATA"' in wire
    decoded, rest = decode_acks(wire + b'{"EventType":')
    assert decoded == acks
    assert rest == b'{"EventType":'


def test_chunks_carry_aws_tags() -> None:
    video = h264_mkv(frames=20, fps=20)
    (fragment,) = [e for e in _split(video, 4096) if isinstance(e, MkvFragment)]
    stored = StoredFragment(
        fragment_number="42", metadata=_metadata(), header=fragment.header, cluster=fragment.cluster
    )
    chunk = fragment_chunk(stored, millis_behind_now=5, with_continuation=True)
    assert read_tags(chunk) == {
        "AWS_KINESISVIDEO_FRAGMENT_NUMBER": "42",
        "AWS_KINESISVIDEO_SERVER_TIMESTAMP": "0.020",
        "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP": "0.010",
        "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW": "5",
        "AWS_KINESISVIDEO_CONTINUATION_TOKEN": "42",
    }
    plain = fragment_chunk(stored, millis_behind_now=None, with_continuation=False)
    assert set(read_tags(plain)) == {
        "AWS_KINESISVIDEO_FRAGMENT_NUMBER",
        "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
        "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
    }
    assert split_chunks(chunk + plain) == [chunk, plain]
    assert seconds_text(1_700_000_000_005) == "1700000000.005"


def test_segment_tokens_name_their_fragment_at_the_session_tokens_length() -> None:
    """A segment's URL carries the fragment's log offset in a fixed-width slot of the signed
    token: as long as the session's own token (players that size URL buffers from the
    manifest URL need that), resolved back to the fragment number, and not forgeable."""
    key = b"k" * 32
    session = hls.HlsSession(
        stream_arn="arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1700000000000",
        playback_mode="ON_DEMAND",
        selector_type="SERVER_TIMESTAMP",
        start_ms=0,
        end_ms=1,
        container="FRAGMENTED_MP4",
        discontinuity="NEVER",
        max_fragments=5,
        expires_ms=10_000,
        shard_created_ms=1_700_000_000_123,
    )
    own = hls.encode_token(session, key=key)
    assert hls.decode_token(own, key=key, now_ms=0) == (session, None)
    number = hls.fragment_number(session, 4321)
    assert len(number) == 56
    segment = hls.Segment(fragment_number=number, start_ms=0, duration_ms=1000)
    token = hls.segment_token(session, segment, key=key)
    assert len(token) == len(own)
    assert hls.decode_token(token, key=key, now_ms=0) == (session, 4321)
    payload, _slot, signature = token.split(".")
    forged = ".".join(
        [payload, hls.encode_token(session, key=key, fragment_offset=7).split(".")[1], signature]
    )
    for bad in (forged, f"{payload}.{signature}", token + "x"):
        with pytest.raises(ShoalError) as error:
            hls.decode_token(bad, key=key, now_ms=0)
        assert error.value.code is ErrorCode.NOT_AUTHORIZED
    with pytest.raises(ShoalError) as error:
        hls.decode_token(token, key=key, now_ms=10_000)
    assert error.value.code is ErrorCode.NOT_AUTHORIZED
