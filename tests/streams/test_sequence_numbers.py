"""Sequence numbers: layout round trip, ordering, and rejection of numbers not ours."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import ErrorCode, ShoalError
from broker.meta.image import ShardState
from broker.streams.sequence_numbers import (
    AWS_SHARD_INDEX_MAX,
    CREATED_MS_MAX,
    DIGITS,
    OFFSET_MAX,
    SHARD_INDEX_MAX,
    SequencePosition,
    api_form,
    bound_number_for,
    decode_sequence_number,
    encode_aws_sequence_number,
    encode_legacy_sequence_number,
    encode_sequence_number,
    ending_sequence_number,
    is_aws_layout,
    is_valid_ordering_number,
    offset_for_sequence_number,
    record_sequence_numbers,
    sequence_number_for,
    sequence_numbers_for,
    starting_sequence_number,
    stored_form,
)
from broker.types import Offset, ShardIndex
from tests.streams.support import CREATED_MS, make_stream

positions = st.builds(
    SequencePosition,
    shard_created_ms=st.integers(min_value=0, max_value=CREATED_MS_MAX),
    shard_index=st.integers(min_value=0, max_value=SHARD_INDEX_MAX),
    offset=st.integers(min_value=0, max_value=OFFSET_MAX),
)


@given(positions)
def test_round_trip(position: SequencePosition) -> None:
    text = encode_sequence_number(position)
    assert text.isdigit()
    assert len(text) == DIGITS  # AWS's width, whatever the fields hold
    assert decode_sequence_number(text) == position


@given(positions)
def test_numbers_of_the_previous_layout_still_decode(position: SequencePosition) -> None:
    # Checkpoints, backups and fragment numbers stored before the upgrade name the same record.
    old = encode_legacy_sequence_number(position)
    assert len(old) <= 39
    assert decode_sequence_number(old) == position
    # ...and every old number sorts below every new one, as an integer.
    assert int(old) < int(
        encode_sequence_number(SequencePosition(shard_created_ms=0, shard_index=0, offset=0))
    )


@given(positions, positions)
def test_string_order_is_integer_order(first: SequencePosition, second: SequencePosition) -> None:
    # Clients compare numbers both ways (the KCL as BigInteger, others as strings).
    a, b = encode_sequence_number(first), encode_sequence_number(second)
    assert (a < b) == (int(a) < int(b))


@given(positions, st.integers(min_value=0, max_value=OFFSET_MAX - 1))
def test_increasing_within_a_shard(position: SequencePosition, offset: int) -> None:
    lower = dataclasses.replace(position, offset=offset)
    higher = dataclasses.replace(position, offset=offset + 1)
    assert int(encode_sequence_number(lower)) < int(encode_sequence_number(higher))


@given(
    positions,
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=0, max_value=OFFSET_MAX),
)
def test_child_numbers_exceed_parent_numbers(
    parent: SequencePosition, later_ms: int, index_step: int, child_offset: int
) -> None:
    # A child is created no earlier than its parent and has a larger index.
    child = SequencePosition(
        shard_created_ms=min(parent.shard_created_ms + later_ms, CREATED_MS_MAX),
        shard_index=min(parent.shard_index + index_step, SHARD_INDEX_MAX),
        offset=child_offset,
    )
    if child.shard_index == parent.shard_index:
        return  # the parent already had the largest index
    last_of_parent = dataclasses.replace(parent, offset=OFFSET_MAX)
    assert int(encode_sequence_number(child)) > int(encode_sequence_number(last_of_parent))


def test_encode_asserts_field_ranges() -> None:
    with pytest.raises(AssertionError):
        encode_sequence_number(
            SequencePosition(shard_created_ms=0, shard_index=0, offset=OFFSET_MAX + 1)
        )
    with pytest.raises(AssertionError):
        encode_sequence_number(SequencePosition(shard_created_ms=-1, shard_index=0, offset=0))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",  # version nibble 0
        "12",
        "-5",
        "01",
        "abc",
        "١",
        str(1 << 124),  # version nibble 1
        str(3 << 124),  # version nibble 3
        str(2**128),
        "9" * 56,
        str(
            int(
                encode_sequence_number(
                    SequencePosition(shard_created_ms=1, shard_index=2, offset=3)
                )
            )
            | (1 << 8)
        ),  # reserved bits set
        str(
            int(
                encode_sequence_number(
                    SequencePosition(shard_created_ms=1, shard_index=2, offset=3)
                )
            )
            + 1
        ),  # another layout nibble
        "9" * 5000,
    ],
)
def test_decode_rejects_numbers_not_ours(text: str) -> None:
    with pytest.raises(ShoalError) as caught:
        decode_sequence_number(text)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_offset_for_sequence_number_accepts_own_shard() -> None:
    stream = make_stream(2)
    shard = stream.shards[1]
    text = sequence_number_for(shard, 42)
    assert offset_for_sequence_number(text, shard=shard, stream_name="s", account_id="1") == 42


def test_offset_for_sequence_number_rejects_another_shard() -> None:
    stream = make_stream(2)
    text = sequence_number_for(stream.shards[0], 42)
    with pytest.raises(ShoalError) as caught:
        offset_for_sequence_number(text, shard=stream.shards[1], stream_name="s", account_id="1")
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "It encodes shardId-000000000000" in caught.value.message
    assert "shardId-000000000001" in caught.value.message


def test_offset_for_sequence_number_rejects_another_incarnation() -> None:
    old = make_stream(1, created_ms=CREATED_MS).shards[0]
    new = make_stream(1, created_ms=CREATED_MS + 5).shards[0]
    with pytest.raises(ShoalError) as caught:
        offset_for_sequence_number(
            sequence_number_for(old, 1), shard=new, stream_name="s", account_id="1"
        )
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "did not come from this stream" in caught.value.message


def test_offset_for_sequence_number_rejects_garbage_with_context() -> None:
    shard = make_stream(1).shards[0]
    with pytest.raises(ShoalError) as caught:
        offset_for_sequence_number(
            "123",
            shard=shard,
            stream_name="s",
            account_id="000000000000",
            operation="PutRecord",
            field="SequenceNumberForOrdering",
        )
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    # 123 reads as AWS's 2013 layout, of shard 123.
    assert caught.value.message == (
        "Invalid SequenceNumberForOrdering. It encodes shardId-000000000123, while it was used "
        "in a call to a shard with shardId-000000000000"
    )


# AWS's answers to numbers of its own layouts, as kinesalite recorded them
# (test/getShardIterator.js): (number, shard index, AWS's message after the field's name).
_AWS_READINGS = [
    (
        "5",
        0,
        "Invalid StartingSequenceNumber. It encodes shardId-000000000005, while it was used in "
        "a call to a shard with shardId-000000000000",
    ),
    (
        "0",
        0,
        "StartingSequenceNumber 21267647932558653966460912964485513216 used in GetShardIterator "
        "on shard shardId-000000000000 in stream s under account 000000000000 is invalid "
        "because it did not come from this stream.",
    ),
    (
        "425352958651173072921826052383309826",
        2,
        "StartingSequenceNumber 21693000891209827039382739016868823042 used in GetShardIterator "
        "on shard shardId-000000000002 in stream s under account 000000000000 is invalid "
        "because it did not come from this stream.",
    ),
    (
        str(int("f3bb2cc3d7ff7fffffffffffffff0000", 16)),
        0,
        "StartingSequenceNumber 26227199374821822965252748908982894592 used in GetShardIterator "
        "on shard shardId-000000000000 in stream s under account 000000000000 is invalid "
        "because it did not come from this stream.",
    ),
    (
        "26227199374822427428162556223570313216",
        0,
        "StartingSequenceNumber 26227199374822427428162556223570313216 used in GetShardIterator "
        "on shard shardId-000000000000 in stream s under account 000000000000 is invalid.",
    ),
    (
        str(int("20000000000800000000000000000000000000000000002", 16)),
        0,
        f"StartingSequenceNumber {int('20000000000800000000000000000000000000000000002', 16)} "
        "used in GetShardIterator on shard shardId-000000000000 in stream s under account "
        "000000000000 is invalid.",
    ),
    (
        str(int("20000000000000000000000000000000000000800000002", 16)),
        0,
        f"StartingSequenceNumber {int('20000000000000000000000000000000000000800000002', 16)} "
        "used in GetShardIterator on shard shardId-000000000000 in stream s under account "
        "000000000000 is invalid.",
    ),
    (
        "49546986683135544286507457936321625675700192471156785154",
        0,
        "StartingSequenceNumber 49546986683135544286507457936321625675700192471156785154 used "
        "in GetShardIterator on shard shardId-000000000000 in stream s under account "
        "000000000000 is invalid because it did not come from this stream.",
    ),
]


@pytest.mark.parametrize(("text", "shard_index", "message"), _AWS_READINGS)
def test_numbers_shoal_did_not_issue_are_judged_as_aws_judges_them(
    text: str, shard_index: int, message: str
) -> None:
    shard = make_stream(3).shards[shard_index]
    with pytest.raises(ShoalError) as caught:
        offset_for_sequence_number(text, shard=shard, stream_name="s", account_id="000000000000")
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.message == message


def test_starting_and_ending_sequence_numbers() -> None:
    shard = make_stream(1).shards[0]
    assert decode_sequence_number(starting_sequence_number(shard)).offset == 0
    assert ending_sequence_number(shard) is None
    assert ending_sequence_number(dataclasses.replace(shard, state=ShardState.SEALING)) is None

    closed = dataclasses.replace(shard, state=ShardState.CLOSED, closed_ms=1, end_offset=Offset(10))
    ending = ending_sequence_number(closed)
    assert ending is not None
    assert decode_sequence_number(ending).offset == 9

    empty = dataclasses.replace(closed, end_offset=Offset(0))
    empty_ending = ending_sequence_number(empty)
    assert empty_ending is not None
    assert decode_sequence_number(empty_ending).offset == 0
    assert int(empty_ending) >= int(starting_sequence_number(empty))


def test_sequence_number_for_uses_shard_identity() -> None:
    shard = dataclasses.replace(make_stream(1).shards[0], index=ShardIndex(5))
    position = decode_sequence_number(sequence_number_for(shard, 3))
    assert position == SequencePosition(shard_created_ms=CREATED_MS, shard_index=5, offset=3)


# --- AWS's layout (streams created at metadata format 4 or later) ---------------------------

aws_positions = st.builds(
    SequencePosition,
    shard_created_ms=st.integers(min_value=0, max_value=CREATED_MS_MAX),
    shard_index=st.integers(min_value=0, max_value=AWS_SHARD_INDEX_MAX),
    offset=st.integers(min_value=0, max_value=OFFSET_MAX),
)


@given(aws_positions, st.integers(min_value=0, max_value=OFFSET_MAX - 1))
def test_aws_layout_round_trips_and_increases_within_a_shard(
    position: SequencePosition, offset: int
) -> None:
    text = encode_aws_sequence_number(position)
    assert len(text) == DIGITS
    assert is_aws_layout(text)
    assert decode_sequence_number(text) == position
    assert stored_form(text) == api_form(text) == text  # kept as issued in the metadata
    lower = encode_aws_sequence_number(dataclasses.replace(position, offset=offset))
    higher = encode_aws_sequence_number(dataclasses.replace(position, offset=offset + 1))
    assert int(lower) < int(higher)
    assert lower < higher


def test_aws_layout_is_what_kinesalite_decodes_as_awss() -> None:
    """kinesalite's createStream and putRecord checks (test/createStream.js, helpers.js
    `assertSequenceNumber`): consecutive shards start 2**144 + 16 apart, and the hex digits
    are 2, the creation second, the index's last digit, a counter, 00, a second, the index
    and the version 2."""
    stream = make_stream(3)
    assert all(shard.aws_sequence_numbers for shard in stream.shards)
    starts = [int(starting_sequence_number(shard)) for shard in stream.shards]
    assert starts[1] - starts[0] == starts[2] - starts[1] == 2**144 + 16
    for shard in stream.shards:
        digits = f"{int(sequence_number_for(shard, 12345)):x}"
        index = f"{shard.index:x}"
        assert re.fullmatch(
            f"20[0-9a-f]{{8}}{index}[0-9a-f]{{16}}000[0-9a-f]{{8}}0000000{index}2", digits
        )
        assert int(digits[1:10], 16) == CREATED_MS // 1000
        assert int(digits[29:38], 16) == CREATED_MS // 1000
    # A number of AWS's own (a record's arrival second in the time field) reads as a position
    # of a shard incarnation that is not ours.
    real = "49546986683135544286507457936321625675700192471156785154"
    assert decode_sequence_number(real) == SequencePosition(
        shard_created_ms=1421279230000, shard_index=0, offset=469
    )
    with pytest.raises(ShoalError, match="did not come from this stream"):
        offset_for_sequence_number(
            real, shard=stream.shards[0], stream_name="s", account_id="000000000000"
        )


@given(
    offset=st.integers(min_value=0, max_value=OFFSET_MAX - 1),
    arrivals=st.lists(
        st.integers(min_value=0, max_value=2**42), min_size=2, max_size=2, unique=True
    ),
)
def test_arrival_seconds_never_change_the_order_or_the_position(
    offset: int, arrivals: list[int]
) -> None:
    """The time field carries each record's arrival second (clamped up to the shard's created
    second), below the counter: whatever the leaders' clocks did, numbers of a shard order by
    offset alone and decode to it; the bound number of a position is at or above the number
    of the record there, and below the next position's."""
    shard = make_stream(1).shards[0]
    assert shard.aws_sequence_numbers
    here = [sequence_number_for(shard, offset, arrival_ms=a) for a in arrivals]
    after = [sequence_number_for(shard, offset + 1, arrival_ms=a) for a in arrivals]
    assert max(int(n) for n in here) < min(int(n) for n in after)
    assert {decode_sequence_number(n).offset for n in here} == {offset}
    bound = int(bound_number_for(shard, offset))
    assert max(int(n) for n in here) <= bound < min(int(n) for n in after)
    for arrival, number in zip(arrivals, here, strict=True):
        digits = f"{int(number):x}"
        assert int(digits[29:38], 16) == max(arrival // 1000, CREATED_MS // 1000)


def test_records_carry_their_arrival_second_as_kinesalite_checks_it() -> None:
    shard = make_stream(1).shards[0]
    arrival = CREATED_MS + 5_500
    numbers = record_sequence_numbers(shard, [(7, arrival), (8, arrival), (9, arrival + 2_000)])
    assert numbers == [
        sequence_number_for(shard, 7, arrival_ms=arrival),
        sequence_number_for(shard, 8, arrival_ms=arrival),
        sequence_number_for(shard, 9, arrival_ms=arrival + 2_000),
    ]
    assert numbers[:2] == sequence_numbers_for(shard, 7, 2, arrival_ms=arrival)
    seconds = [int(f"{int(n):x}"[29:38], 16) for n in numbers]
    assert seconds == [arrival // 1000, arrival // 1000, (arrival + 2_000) // 1000]


def test_aws_layout_children_follow_their_parents_and_old_numbers_still_decode() -> None:
    parent = make_stream(1).shards[0]
    # The reshard puts a child of an AWS-layout shard in a later second (resharding.py).
    for index in (1, 15, 16, 17, 255):
        child = dataclasses.replace(
            parent, index=ShardIndex(index), created_ms=(CREATED_MS // 1000 + 1) * 1000
        )
        assert int(starting_sequence_number(child)) > int(sequence_number_for(parent, OFFSET_MAX))
    # A number of the 0x3 layout or the first one names the same record of the same shard.
    position = SequencePosition(shard_created_ms=CREATED_MS, shard_index=0, offset=7)
    for text in (encode_sequence_number(position), encode_legacy_sequence_number(position)):
        assert offset_for_sequence_number(text, shard=parent, stream_name="s", account_id="1") == 7
    old_shard = dataclasses.replace(parent, aws_sequence_numbers=False)
    assert sequence_number_for(old_shard, 7) == encode_sequence_number(position)
    assert sequence_numbers_for(parent, 7, 2) == [
        sequence_number_for(parent, 7),
        sequence_number_for(parent, 8),
    ]


NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize(
    ("hex_digits", "valid"),
    [
        # kinesalite's PutRecord recordings of AWS: AWS's layouts, any shard, are accepted...
        ("2ffffffffff7fffffffffffffff000000000007fffffff2", True),
        ("20000000000000000000000000000000000000000000002", True),
        ("20000000000000000000000000000000000000000000001", True),
        # ...unless the version, the leading digit, the counter or shard index, or the time
        # is out of AWS's range,
        ("20000000000000000000000000000000000000000000000", False),
        ("20000000000000000000000000000000000000000000004", False),
        ("30000000000000000000000000000000000000000000001", False),
        ("1ffffffffff7fffffffffffffff000000000007fffffff2", False),
        ("20000000000800000000000000000000000000000000002", False),
        ("20000000000000000000000000000000000000800000002", False),
        ("13bb2cc3d80000000000000000000000", False),
        (f"200000000000000000000000000000{NOW_MS // 1000 + 2:08x}000000002", False),
        (f"2ffffffffff7fffffff7fffffff000{NOW_MS // 1000 - 2:08x}7fffffff2", True),
    ],
)
def test_ordering_numbers_are_judged_as_aws_judges_them(hex_digits: str, valid: bool) -> None:
    assert is_valid_ordering_number(str(int(hex_digits, 16)), now_ms=NOW_MS) is valid


def test_every_number_shoal_issues_is_a_valid_ordering_number() -> None:
    shard = dataclasses.replace(make_stream(1).shards[0], aws_sequence_numbers=True)
    for offset in (0, 1, 2**40):
        assert is_valid_ordering_number(sequence_number_for(shard, offset), now_ms=NOW_MS)
