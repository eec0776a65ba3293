"""Sequence numbers: (shard, offset) ⇄ the decimal string clients see.

Shards of streams created at metadata format 4 or later (`ShardMeta.aws_sequence_numbers`)
issue numbers in AWS's own layout, as kinesalite decodes AWS's: 56 decimal digits, a 188-bit
integer whose 47 hex digits are, from the most significant end,

    2 | created second (9) | index & 0xF (1) | counter (16) | 00 (2) | time second (9)
    | shard index (8) | version 2 (1)

(AWS's first numbers of consecutive shards differ by 2**144 + 16: the shard index in two
places). Shoal's counter is `created_ms % 1000 << 48 | offset`. The time field is, as in AWS's
numbers, the second the record arrived (its stored ApproximateArrivalTimestamp, never before
the shard's created second): it lies below the counter, so it cannot change how two numbers of
a shard compare, whatever the clocks of the leaders that stamped them did; decoding ignores it.
Numbers that name a position rather than a record carry the shard's created second (the
starting number) or the field's largest value (the ending number and SubscribeToShard's
continuation number, `bound_number_for`), so they are at or above every record's number at
their position, as AWS's ending numbers are.

Shards of streams from before (old data directories, and clusters held below format 4) keep
the layout they were created with, for good, because consumers store their numbers and
compare them (the KCL refuses a checkpoint below the last one; AWS-layout numbers sort below
this one's):

    0x2 (4 bits) | shard created_ms (44) | shard index (32) | offset (48)
    | reserved, zero (56) | layout 0x3 (4)

Both layouts:
* lie in [2**185, 3 * 2**184), so every number has exactly 56 digits: clients that compare
  them as decimal strings and clients that compare them as integers agree;
* strictly increase with the offset within a shard (the fields above it are fixed);
* sort a child's numbers after its parents' (children are created no earlier than their
  parents, in the AWS layout in a later second: `resharding.children_created_ms`), as AWS's do;
* carry the shard index, so numbers are unique across the stream, as the AWS model promises;
* tie a number to one shard incarnation by its creation time: a number from a deleted and
  recreated stream (same index, different creation) is refused instead of silently misread.

Numbers of the first layout (38 digits: `0x2 | created_ms (44) | index (32) | offset (48)`,
128 bits) are still decoded: KCL checkpoints, backups and video fragment numbers stored before
the 56-digit layouts keep naming the same record. Checkpoints of the 0x3 layout are stored in
it (`stored_form`). Pure code: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import ShardMeta, ShardState

_CREATED_MS_BITS = 44  # enough until the year 2527
_SHARD_INDEX_BITS = 32
_OFFSET_BITS = 48  # 2.8e14 records per shard: 8,900 years at 1,000 records/s
assert limits.shard_index_max == 2**_SHARD_INDEX_BITS - 1

CREATED_MS_MAX = 2**_CREATED_MS_BITS - 1
SHARD_INDEX_MAX = 2**_SHARD_INDEX_BITS - 1
OFFSET_MAX = 2**_OFFSET_BITS - 1

# The current layout (AWS-shaped, 188 bits).
LEADING_NIBBLE = 0x2
LAYOUT = 0x3
_LAYOUT_BITS = 4
_RESERVED_BITS = 56
_OFFSET_SHIFT = _LAYOUT_BITS + _RESERVED_BITS
_SHARD_INDEX_SHIFT = _OFFSET_SHIFT + _OFFSET_BITS
_CREATED_MS_SHIFT = _SHARD_INDEX_SHIFT + _SHARD_INDEX_BITS
_LEADING_SHIFT = _CREATED_MS_SHIFT + _CREATED_MS_BITS
assert _LEADING_SHIFT + 4 == 188
_RESERVED_MASK = (2**_RESERVED_BITS - 1) << _LAYOUT_BITS
DIGITS = 56
assert len(str(LEADING_NIBBLE << _LEADING_SHIFT)) == DIGITS
assert len(str(((LEADING_NIBBLE + 1) << _LEADING_SHIFT) - 1)) == DIGITS

# The previous layout (128 bits, 38 digits): decoded, never issued.
_LEGACY_VERSION = 0x2
_LEGACY_SHARD_INDEX_SHIFT = _OFFSET_BITS
_LEGACY_CREATED_MS_SHIFT = _LEGACY_SHARD_INDEX_SHIFT + _SHARD_INDEX_BITS
_LEGACY_VERSION_SHIFT = _LEGACY_CREATED_MS_SHIFT + _CREATED_MS_BITS
assert _LEGACY_VERSION_SHIFT + 4 == 128

# AWS's layout (188 bits, 47 hex digits), from the least significant end.
_AWS_VERSION = 0x2
_AWS_INDEX_SHIFT = 4
_AWS_INDEX_BITS = 31  # AWS's shard ids stop at shardId-002147483647
_AWS_TIME_SHIFT = _AWS_INDEX_SHIFT + 32
_AWS_ZERO_BYTE_SHIFT = _AWS_TIME_SHIFT + 36
_AWS_COUNTER_SHIFT = _AWS_ZERO_BYTE_SHIFT + 8
_AWS_MS_IN_COUNTER = _OFFSET_BITS  # the counter: created_ms % 1000 above the offset
_AWS_NIBBLE_SHIFT = _AWS_COUNTER_SHIFT + 64
_AWS_CREATED_S_SHIFT = _AWS_NIBBLE_SHIFT + 4
_AWS_LEADING_SHIFT = _AWS_CREATED_S_SHIFT + 36
assert _AWS_LEADING_SHIFT == _LEADING_SHIFT
AWS_SHARD_INDEX_MAX = 2**_AWS_INDEX_BITS - 1
_AWS_SECONDS_MASK = 2**36 - 1
assert CREATED_MS_MAX // 1000 <= _AWS_SECONDS_MASK

# The model's SequenceNumber pattern (a canonical decimal of up to 129 digits). ASCII digits
# only: `int()` would also read other scripts' digits.
_SEQUENCE_NUMBER_PATTERN = re.compile(r"0|[1-9][0-9]{0,128}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SequencePosition:
    """What a sequence number encodes: which shard incarnation, and where in its log."""

    shard_created_ms: int
    shard_index: int
    offset: int


def encode_sequence_number(position: SequencePosition) -> str:
    assert 0 <= position.shard_created_ms <= CREATED_MS_MAX
    assert 0 <= position.shard_index <= SHARD_INDEX_MAX
    assert 0 <= position.offset <= OFFSET_MAX
    value = _shard_base(position.shard_created_ms, position.shard_index) | (
        position.offset << _OFFSET_SHIFT
    )
    return str(value)


def _shard_base(created_ms: int, index: int) -> int:
    """The number of offset 0 of a shard, as an integer."""
    return (
        (LEADING_NIBBLE << _LEADING_SHIFT)
        | (created_ms << _CREATED_MS_SHIFT)
        | (index << _SHARD_INDEX_SHIFT)
        | LAYOUT
    )


def _aws_shard_base(created_ms: int, index: int) -> int:
    """The AWS-layout number of offset 0 of a shard, as an integer, with its time field
    empty (`_aws_time_field` fills it)."""
    seconds, ms = divmod(created_ms, 1000)
    return (
        (LEADING_NIBBLE << _AWS_LEADING_SHIFT)
        | (seconds << _AWS_CREATED_S_SHIFT)
        | ((index & 0xF) << _AWS_NIBBLE_SHIFT)
        | (ms << (_AWS_COUNTER_SHIFT + _AWS_MS_IN_COUNTER))
        | (index << _AWS_INDEX_SHIFT)
        | _AWS_VERSION
    )


def _aws_time_field(created_ms: int, arrival_ms: int | None) -> int:
    """The time field of an AWS-layout number: the record's arrival second, never before the
    shard's created second (AWS's rule: kinesalite's split and merge recordings); the created
    second when the number names no record."""
    seconds = created_ms // 1000
    if arrival_ms is not None:
        seconds = min(max(seconds, arrival_ms // 1000), _AWS_SECONDS_MASK)
    return seconds << _AWS_TIME_SHIFT


_AWS_TIME_FIELD_MAX = _AWS_SECONDS_MASK << _AWS_TIME_SHIFT


def encode_aws_sequence_number(position: SequencePosition) -> str:
    """A number in AWS's layout (the shards of `ShardMeta.aws_sequence_numbers`)."""
    assert 0 <= position.shard_created_ms <= CREATED_MS_MAX
    assert 0 <= position.shard_index <= AWS_SHARD_INDEX_MAX
    assert 0 <= position.offset <= OFFSET_MAX
    base = _aws_shard_base(position.shard_created_ms, position.shard_index)
    time_field = _aws_time_field(position.shard_created_ms, None)
    return str(base | time_field | (position.offset << _AWS_COUNTER_SHIFT))


def _base_and_shift(shard: ShardMeta, arrival_ms: int | None) -> tuple[int, int]:
    """The number of the shard's offset 0 for a record that arrived at `arrival_ms` (None: no
    record), and where its offset sits, in the shard's layout."""
    if shard.aws_sequence_numbers:
        assert shard.index <= AWS_SHARD_INDEX_MAX
        base = _aws_shard_base(shard.created_ms, shard.index)
        return base | _aws_time_field(shard.created_ms, arrival_ms), _AWS_COUNTER_SHIFT
    return _shard_base(shard.created_ms, shard.index), _OFFSET_SHIFT


def record_number_base(shard: ShardMeta, arrival_ms: int) -> tuple[int, int]:
    """(base, shift): the number of the record at offset o that arrived at `arrival_ms` is
    `str(base | (o << shift))`. For writers that number a whole stored batch at once."""
    return _base_and_shift(shard, arrival_ms)


def sequence_number_for(shard: ShardMeta, offset: int, *, arrival_ms: int | None = None) -> str:
    """The sequence number of the record at `offset` in `shard` that arrived at `arrival_ms`,
    in the shard's layout (None: the number of the position, with the created second)."""
    assert 0 <= offset <= OFFSET_MAX
    base, shift = _base_and_shift(shard, arrival_ms)
    return str(base | (offset << shift))


def bound_number_for(shard: ShardMeta, offset: int) -> str:
    """A number naming position `offset` that is at or above the number of the record there,
    whenever it arrived: the AWS layout's largest time field (other layouts have none)."""
    assert 0 <= offset <= OFFSET_MAX
    base, shift = _base_and_shift(shard, None)
    if shard.aws_sequence_numbers:
        base |= _AWS_TIME_FIELD_MAX
    return str(base | (offset << shift))


def sequence_numbers_for(
    shard: ShardMeta, first_offset: int, count: int, *, arrival_ms: int | None = None
) -> list[str]:
    """The sequence numbers of `count` consecutive records from `first_offset` that arrived
    together at `arrival_ms` (one append): the hot path of PutRecords, so the shard's bits
    are combined once, not per record."""
    assert count >= 0
    assert first_offset >= 0
    assert first_offset + count - 1 <= OFFSET_MAX
    base, shift = _base_and_shift(shard, arrival_ms)
    return [str(base | (offset << shift)) for offset in range(first_offset, first_offset + count)]


def record_sequence_numbers(
    shard: ShardMeta, offsets_and_arrivals: Iterable[tuple[int, int]]
) -> list[str]:
    """The numbers of stored records given as (offset, arrival_ms): GetRecords' and
    SubscribeToShard's hot path. Records of one append share their arrival, so the shard's
    bits are combined once per run of equal arrivals."""
    numbers: list[str] = []
    append = numbers.append
    shift = _AWS_COUNTER_SHIFT if shard.aws_sequence_numbers else _OFFSET_SHIFT
    base = 0
    arrival_seen: int | None = None
    for offset, arrival_ms in offsets_and_arrivals:
        if arrival_ms != arrival_seen or arrival_seen is None:
            arrival_seen = arrival_ms
            base = _base_and_shift(shard, arrival_ms)[0]
        append(str(base | (offset << shift)))
    return numbers


def _decode_aws(value: int) -> SequencePosition | None:
    """The position of a number in AWS's layout that Shoal could have issued; None for any
    other number. The time field (a record's arrival) says nothing about the position and is
    not read: a number of AWS's own reads as a position too, whose shard incarnation
    (`offset_for_sequence_number`) then tells it is not from the stream."""
    if value >> _AWS_LEADING_SHIFT != LEADING_NIBBLE or value & 0xF != _AWS_VERSION:
        return None
    seconds = (value >> _AWS_CREATED_S_SHIFT) & _AWS_SECONDS_MASK
    index = (value >> _AWS_INDEX_SHIFT) & (2**32 - 1)
    counter = (value >> _AWS_COUNTER_SHIFT) & (2**64 - 1)
    ms = counter >> _AWS_MS_IN_COUNTER
    if (
        index > AWS_SHARD_INDEX_MAX
        or (value >> _AWS_NIBBLE_SHIFT) & 0xF != index & 0xF
        or (value >> _AWS_ZERO_BYTE_SHIFT) & 0xFF != 0
        or ms >= 1000
    ):
        return None
    return SequencePosition(
        shard_created_ms=seconds * 1000 + ms, shard_index=index, offset=counter & OFFSET_MAX
    )


def is_aws_layout(text: str) -> bool:
    """Whether `text` is a number Shoal issued in AWS's layout."""
    return _SEQUENCE_NUMBER_PATTERN.fullmatch(text) is not None and (
        _decode_aws(int(text)) is not None
    )


def decode_sequence_number(text: str) -> SequencePosition:
    """The position a client-supplied number encodes, in any layout Shoal issues or issued.

    Raises InvalidArgumentException for anything Shoal did not issue: not a canonical decimal,
    of another width, or with the wrong fixed bits.
    """
    if _SEQUENCE_NUMBER_PATTERN.fullmatch(text) is not None:
        value = int(text)
        aws = _decode_aws(value)
        if aws is not None:
            return aws
        if (
            value >> _LEADING_SHIFT == LEADING_NIBBLE
            and value & 0xF == LAYOUT
            and value & _RESERVED_MASK == 0
        ):
            return SequencePosition(
                shard_created_ms=(value >> _CREATED_MS_SHIFT) & CREATED_MS_MAX,
                shard_index=(value >> _SHARD_INDEX_SHIFT) & SHARD_INDEX_MAX,
                offset=(value >> _OFFSET_SHIFT) & OFFSET_MAX,
            )
        if value >> _LEGACY_VERSION_SHIFT == _LEGACY_VERSION:
            return SequencePosition(
                shard_created_ms=(value >> _LEGACY_CREATED_MS_SHIFT) & CREATED_MS_MAX,
                shard_index=(value >> _LEGACY_SHARD_INDEX_SHIFT) & SHARD_INDEX_MAX,
                offset=value & OFFSET_MAX,
            )
    raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.invalid_sequence_number(text=text))


def stored_form(text: str) -> str:
    """`text` as the metadata stores it: a number of the 0x3 layout in the first one (same
    fields, same order, so the same ordering), anything else unchanged. KCL checkpoints cross
    the metadata journal, which nodes of the previous release also apply during a rolling
    upgrade; they read only 38-digit numbers. AWS-layout numbers are stored as they are: only
    streams created at metadata format 4 have them, which every member reads."""
    if is_aws_layout(text):
        return text
    try:
        position = decode_sequence_number(text)
    except ShoalError:
        return text
    return encode_legacy_sequence_number(position)


def api_form(text: str) -> str:
    """The inverse of `stored_form`: a stored number as clients are given it (a first-layout
    number in the 0x3 layout), anything else unchanged."""
    if is_aws_layout(text):
        return text
    try:
        position = decode_sequence_number(text)
    except ShoalError:
        return text
    return encode_sequence_number(position)


def encode_legacy_sequence_number(position: SequencePosition) -> str:
    """A number in the previous (38-digit) layout: for tests and tools that check that such
    numbers, stored before an upgrade, still decode. Never issued by the service."""
    assert 0 <= position.shard_created_ms <= CREATED_MS_MAX
    assert 0 <= position.shard_index <= SHARD_INDEX_MAX
    assert 0 <= position.offset <= OFFSET_MAX
    return str(
        (_LEGACY_VERSION << _LEGACY_VERSION_SHIFT)
        | (position.shard_created_ms << _LEGACY_CREATED_MS_SHIFT)
        | (position.shard_index << _LEGACY_SHARD_INDEX_SHIFT)
        | position.offset
    )


@dataclass(frozen=True, slots=True)
class _ForeignNumber:
    """How AWS reads a number of one of its own layouts: the shard index it encodes, and the
    number as AWS echoes it when refusing it."""

    shard_index: int
    echoed: str
    time_ms: int = 0  # the second the number says its record arrived (0: the layout has none)


# AWS's layouts, as kinesalite recorded AWS decoding them. Version 0 (2013): 128 bits whose
# hex digits are a leading digit, the shard's creation in seconds (9), 18 opaque digits and
# the shard index (4); smaller values read as if 2**124 were added, and AWS echoes them with a
# leading 1. Versions 1 and 2 (today's 56 digits): a 188-bit number in [2**185, 1.5 * 2**185)
# ending in its version digit, with the 32-bit shard index in the 8 hex digits before it.
_AWS_V0_FLOOR = 2**124
_AWS_V0_END = 2**129
_AWS_V0_CREATED_S_END = 16025175000  # AWS refuses a creation time from this second on
_AWS_V2_FLOOR = 2**185
_AWS_V2_END = 3 * 2**184


def _foreign_number(text: str) -> _ForeignNumber | None:
    """AWS's reading of a number Shoal did not issue; None for one AWS calls invalid."""
    if _SEQUENCE_NUMBER_PATTERN.fullmatch(text) is None:
        return None
    value = int(text)
    if value < _AWS_V0_FLOOR:
        value += _AWS_V0_FLOOR
    digits = f"{value:x}"
    if value < _AWS_V0_END:
        if int(digits[1:10], 16) >= _AWS_V0_CREATED_S_END:
            return None
        return _ForeignNumber(
            shard_index=int(digits[28:32], 16), echoed=str(int("1" + digits[1:], 16))
        )
    if not _AWS_V2_FLOOR < value < _AWS_V2_END:
        return None
    version = int(digits[-1], 16)
    shard_digits = digits[38:46]
    if version == 2 and (int(digits[11], 16) > 7 or int(shard_digits[0], 16) > 7):
        return None  # the record counter or the shard index out of AWS's range
    if version not in (1, 2):
        return None
    time_digits = digits[29:38] if version == 2 else digits[13:22]
    return _ForeignNumber(
        shard_index=int(shard_digits, 16), echoed=text, time_ms=int(time_digits, 16) * 1000
    )


def is_valid_ordering_number(text: str, *, now_ms: int) -> bool:
    """Whether PutRecord's SequenceNumberForOrdering is a number AWS accepts there: one Shoal
    issued, or one of AWS's own layouts (any shard, any stream: it only orders the caller's
    writes) whose time is not in the future, as kinesalite recorded AWS judging them. Shoal's
    AWS-layout numbers carry their record's arrival second, so one passed back at once to a
    node whose clock runs more than a second behind the leader that stamped it is refused
    like a number from the future.)"""
    foreign = _foreign_number(text)
    if foreign is not None:  # AWS's layouts, Shoal's AWS-layout numbers among them
        return foreign.time_ms <= now_ms
    try:
        decode_sequence_number(text)  # Shoal's other layouts
    except ShoalError:
        return False
    return True


def offset_for_sequence_number(
    text: str,
    *,
    shard: ShardMeta,
    stream_name: str,
    account_id: str,
    operation: str = "GetShardIterator",
    field: str = "StartingSequenceNumber",
) -> int:
    """The offset in `shard` that `text` names; InvalidArgumentException if it is not from it.

    `field` and `operation` name the request member and the call in messages (GetShardIterator's
    StartingSequenceNumber by default). A number Shoal did not issue is judged as AWS judges it
    (`_foreign_number`): one of another shard is named as such, one of AWS's own layouts as not
    from this stream, anything else as invalid. The offset is not checked against the shard's
    log: whether it is past the end is the caller's question.
    """
    where = {
        "field": field,
        "operation": operation,
        "shard_id": shard.shard_id,
        "stream_name": stream_name,
        "account_id": account_id,
    }
    try:
        position = decode_sequence_number(text)
    except ShoalError as error:
        foreign = _foreign_number(text)
        if foreign is None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.sequence_number_invalid(text=text, **where),
            ) from error
        position = SequencePosition(shard_created_ms=-1, shard_index=foreign.shard_index, offset=0)
        text = foreign.echoed
    if position.shard_index != shard.index:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.sequence_number_other_shard(
                field=field,
                encoded_shard_id=f"shardId-{position.shard_index:012d}",
                shard_id=shard.shard_id,
            ),
        )
    if position.shard_created_ms != shard.created_ms:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.sequence_number_other_stream(text=text, **where),
        )
    return position.offset


def starting_sequence_number(shard: ShardMeta) -> str:
    """SequenceNumberRange.StartingSequenceNumber: the number of offset 0."""
    return sequence_number_for(shard, 0)


def ending_sequence_number(shard: ShardMeta) -> str | None:
    """SequenceNumberRange.EndingSequenceNumber: set only once the shard is CLOSED.

    It names the last record's position (offset end_offset - 1; an empty closed shard its
    first position, so the range is never inverted), at or above that record's number
    (`bound_number_for`).
    """
    if shard.state is not ShardState.CLOSED:
        return None
    assert shard.end_offset is not None
    assert shard.end_offset >= 0
    return bound_number_for(shard, max(shard.end_offset - 1, 0))
