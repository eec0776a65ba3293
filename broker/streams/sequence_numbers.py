"""Sequence numbers: (shard, offset) ⇄ the decimal string clients see.

Shoal's 128-bit layout, from the most significant end:

    version nibble 0x2 (4 bits) | shard created_ms (44) | shard index (32) | offset (48)

Why this shape:
* Within a shard, numbers strictly increase with the offset (the low bits).
* Across a reshard, a child has `created_ms` >= every parent's and a larger index, so each of
  its numbers is larger than any of its parents' (AWS: children's numbers follow the parents').
* The shard index makes numbers unique across the stream, as the AWS model promises.
* `created_ms` ties a number to one shard incarnation: a number from a deleted and recreated
  stream (same index, different creation time) is rejected instead of silently misread.
* The version nibble lets a future layout coexist, and rejects numbers that are not ours.

The values have 38 digits, fewer than AWS's 56; the model only promises a decimal string of up
to 129 digits, and clients compare them as big integers. Pure code: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import ShardMeta, ShardState

VERSION = 0x2
_VERSION_BITS = 4
_CREATED_MS_BITS = 44  # enough until the year 2527
_SHARD_INDEX_BITS = 32
_OFFSET_BITS = 48  # 2.8e14 records per shard: 8,900 years at 1,000 records/s
assert _VERSION_BITS + _CREATED_MS_BITS + _SHARD_INDEX_BITS + _OFFSET_BITS == 128
assert limits.shard_index_max == 2**_SHARD_INDEX_BITS - 1

CREATED_MS_MAX = 2**_CREATED_MS_BITS - 1
SHARD_INDEX_MAX = 2**_SHARD_INDEX_BITS - 1
OFFSET_MAX = 2**_OFFSET_BITS - 1

_OFFSET_SHIFT = 0
_SHARD_INDEX_SHIFT = _OFFSET_BITS
_CREATED_MS_SHIFT = _SHARD_INDEX_SHIFT + _SHARD_INDEX_BITS
_VERSION_SHIFT = _CREATED_MS_SHIFT + _CREATED_MS_BITS

# The model's SequenceNumber pattern, cut to what 128 bits can hold (39 digits), so `int()`
# never sees a huge string. ASCII digits only.
_SEQUENCE_NUMBER_PATTERN = re.compile(r"0|[1-9][0-9]{0,38}")


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
    value = (
        (VERSION << _VERSION_SHIFT)
        | (position.shard_created_ms << _CREATED_MS_SHIFT)
        | (position.shard_index << _SHARD_INDEX_SHIFT)
        | (position.offset << _OFFSET_SHIFT)
    )
    return str(value)


def sequence_number_for(shard: ShardMeta, offset: int) -> str:
    """The sequence number of the record at `offset` in `shard`."""
    return encode_sequence_number(
        SequencePosition(shard_created_ms=shard.created_ms, shard_index=shard.index, offset=offset)
    )


def sequence_numbers_for(shard: ShardMeta, first_offset: int, count: int) -> list[str]:
    """The sequence numbers of `count` consecutive records from `first_offset`: the hot path of
    PutRecords and GetRecords, so the shard's bits are combined once, not per record."""
    assert count >= 0
    assert first_offset >= 0
    assert first_offset + count - 1 <= OFFSET_MAX
    base = int(starting_sequence_number(shard))
    assert base & OFFSET_MAX == 0  # the offset field starts at bit 0
    return [str(base + offset) for offset in range(first_offset, first_offset + count)]


def decode_sequence_number(text: str) -> SequencePosition:
    """The position a client-supplied number encodes.

    Raises InvalidArgumentException for anything Shoal did not issue: not a canonical decimal,
    wider than 128 bits, or a different version nibble.
    """
    if _SEQUENCE_NUMBER_PATTERN.fullmatch(text) is not None:
        value = int(text)
        if value >> _VERSION_SHIFT == VERSION:
            return SequencePosition(
                shard_created_ms=(value >> _CREATED_MS_SHIFT) & CREATED_MS_MAX,
                shard_index=(value >> _SHARD_INDEX_SHIFT) & SHARD_INDEX_MAX,
                offset=(value >> _OFFSET_SHIFT) & OFFSET_MAX,
            )
    raise ShoalError(ErrorCode.INVALID_ARGUMENT, f"Invalid SequenceNumber {text}.")


def offset_for_sequence_number(
    text: str,
    *,
    shard: ShardMeta,
    stream_name: str,
    field: str = "StartingSequenceNumber",
) -> int:
    """The offset in `shard` that `text` names; InvalidArgumentException if it is not from it.

    `field` names the request member in messages (GetShardIterator's StartingSequenceNumber by
    default; SequenceNumberForOrdering, checkpoints and so on pass their own). The offset is not
    checked against the shard's log: whether it is past the end is the caller's question.
    """
    try:
        position = decode_sequence_number(text)
    except ShoalError as error:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} {text} used on shard {shard.shard_id} in stream {stream_name} is invalid.",
        ) from error
    if position.shard_index != shard.index:
        encoded_shard_id = f"shardId-{position.shard_index:012d}"
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"Invalid {field}. It encodes {encoded_shard_id}, while it was used in a call to a "
            f"shard with {shard.shard_id} in stream {stream_name}.",
        )
    if position.shard_created_ms != shard.created_ms:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} {text} used on shard {shard.shard_id} in stream {stream_name} is invalid "
            "because it did not come from this stream.",
        )
    return position.offset


def starting_sequence_number(shard: ShardMeta) -> str:
    """SequenceNumberRange.StartingSequenceNumber: the number of offset 0."""
    return sequence_number_for(shard, 0)


def ending_sequence_number(shard: ShardMeta) -> str | None:
    """SequenceNumberRange.EndingSequenceNumber: set only once the shard is CLOSED.

    It is the number of the last record (offset end_offset - 1); an empty closed shard reports
    its starting number, so the range is never inverted.
    """
    if shard.state is not ShardState.CLOSED:
        return None
    assert shard.end_offset is not None
    assert shard.end_offset >= 0
    return sequence_number_for(shard, max(shard.end_offset - 1, 0))
