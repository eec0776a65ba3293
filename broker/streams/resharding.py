"""Resharding rules: SplitShard, MergeShards and UpdateShardCount over a StreamMeta.

A reshard runs as two metadata commands. BeginReshard validates the request (`validate_*`)
and seals the parents (`shards_to_seal`): they refuse new writes, so their record counts
stop moving. CompleteReshard closes the parents at those counts and opens the children
(`complete_reshard`). Everything here is a pure function of the stream's metadata and an explicit
`now_ms`, so every replica of the metadata quorum computes the same shards.

The rules follow AWS (REFERENCE §1.6) and kinesalite's reproductions of its messages:
* Split: the shard must be OPEN; NewStartingHashKey must be greater than StartingHashKey + 1
  and less than EndingHashKey. The lower child takes the next index, the upper the one after.
* Merge: both shards OPEN and adjacent (their ranges are contiguous). The child names
  ShardToMerge as parent and AdjacentShardToMerge as adjacent parent. The state machine
  accepts either order; the proposing node refuses AdjacentShardToMerge below ShardToMerge,
  as AWS does (`check_merge_order`).
* UpdateShardCount (UNIFORM_SCALING): AWS's topology, which only splits shards in half and
  merges adjacent pairs. Scaling up from n to t (n < t <= 2n) splits every open shard in
  half and merges 2n - t adjacent pairs of halves; scaling down (n/2 <= t < n) merges n - t
  adjacent pairs of open shards. The pairs are spread evenly over the hash space. So 10 -> 13
  leaves 37 shards in all (10 + 20 halves + 7 merged) and 5 -> 3 leaves 7, as on AWS, and
  doubling or halving touches each shard once (AWS's advice). Intermediate shards are created
  and closed at once (empty). The layout is uniform when the count doubles or halves from a
  uniform one; otherwise it is as even as whole halves allow, as AWS's is.

Children are created at max(now_ms, every parent's created_ms), and for a stream with
sequence numbers in AWS's layout (whose children inherit it) in a later second than every
parent, so their sequence numbers sort after their parents' (`children_created_ms`,
sequence_numbers.py). Callers check what needs the wider view: the
stream is ACTIVE and PROVISIONED, and the account's shard limit.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import assert_never

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import (
    ReshardKind,
    ReshardRequest,
    ShardMeta,
    ShardState,
    StreamMeta,
)
from broker.streams.hash_keys import tiles_hash_space, uniform_ranges
from broker.types import Offset, ShardIndex, ShardUid

DAY_MS = 24 * 3_600_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ReshardOutcome:
    """The stream's shards after a reshard completes, and the counters to store with them."""

    shards: tuple[ShardMeta, ...]  # the full tuple, index order: parents closed, children added
    next_shard_index: ShardIndex
    next_shard_uid: int


def initial_shards(
    count: int, *, first_uid: int, now_ms: int, aws_sequence_numbers: bool = True
) -> tuple[ShardMeta, ...]:
    """CreateStream's shards: OPEN, indices 0..count-1, uniform ranges, uids from `first_uid`,
    with sequence numbers in AWS's layout unless the cluster's metadata format is too low."""
    assert count >= 1
    assert first_uid >= 0
    assert now_ms >= 0
    return tuple(
        ShardMeta(
            index=ShardIndex(i),
            uid=ShardUid(first_uid + i),
            hash_key_start=start,
            hash_key_end=end,
            parent_index=None,
            adjacent_parent_index=None,
            created_ms=now_ms,
            state=ShardState.OPEN,
            aws_sequence_numbers=aws_sequence_numbers,
        )
        for i, (start, end) in enumerate(uniform_ranges(count))
    )


# --- Validation (BeginReshard) -------------------------------------------------------------


def validate_split(stream: StreamMeta, *, shard_index: int, new_starting_hash_key: int) -> None:
    """SplitShard's rules; raises ShoalError with AWS's exception and message."""
    shard = _open_shard(stream, shard_index)
    key = new_starting_hash_key
    # Each child must keep at least two hash keys (AWS's rule, as kinesalite reproduces it).
    if key <= shard.hash_key_start + 1 or key >= shard.hash_key_end:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.split_key_out_of_range(
                key,
                shard.shard_id,
                stream.name,
                _account_of(stream),
                shard.hash_key_start,
                shard.hash_key_end,
            ),
        )


def validate_merge(stream: StreamMeta, *, shard_index: int, adjacent_shard_index: int) -> None:
    """MergeShards' rules; raises ShoalError with AWS's exception and message."""
    shard = _open_shard(stream, shard_index)
    adjacent = _open_shard(stream, adjacent_shard_index)
    contiguous = (
        shard.hash_key_end + 1 == adjacent.hash_key_start
        or adjacent.hash_key_end + 1 == shard.hash_key_start
    )
    if shard.index == adjacent.index or not contiguous:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.shards_not_adjacent(
                shard.shard_id, adjacent.shard_id, stream.name, _account_of(stream)
            ),
        )


def check_merge_order(stream: StreamMeta, *, shard_index: int, adjacent_shard_index: int) -> None:
    """AWS's reading of MergeShards' two members: AdjacentShardToMerge is the shard just above
    ShardToMerge in the hash space (kinesalite recorded AWS refusing the pair given the other
    way round, with the not-adjacent message). Checked by the node that proposes the merge,
    not in the state machine, whose `validate_merge` still accepts either order: a member of a
    previous release applying the same BeginReshard must reach the same verdict."""
    shard = stream.shards[shard_index]
    adjacent = stream.shards[adjacent_shard_index]
    if adjacent.hash_key_start < shard.hash_key_start:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.shards_not_adjacent(
                shard.shard_id, adjacent.shard_id, stream.name, _account_of(stream)
            ),
        )


def _account_of(stream: StreamMeta) -> str:
    """The account in the stream's ARN (arn:aws:kinesis:region:account:stream/name)."""
    return stream.arn.split(":")[4]


def validate_update_shard_count(
    stream: StreamMeta, *, target_shard_count: int, now_ms: int
) -> None:
    """UpdateShardCount's default limits (AWS model docs); LimitExceededException otherwise.

    A target equal to the open shard count is accepted: it is a no-op when the shards are
    already uniform, and evens them out when splits and merges left them uneven.
    """
    target = target_shard_count
    if target < 1:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.validation_errors(
                [
                    error_messages.constraint_violation(
                        f"'{target}'",
                        "targetShardCount",
                        "Member must have value greater than or equal to 1",
                    )
                ]
            ),
        )
    open_count = len(stream.open_shards())
    if target > limits.shard_count_per_stream_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.shard_count_above_maximum(
                limits.shard_count_per_stream_max, open_count, target
            ),
        )
    if target > open_count * 2:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.shard_count_over_double(open_count, target),
        )
    if target > open_count:  # scaling up splits every open shard in half (AWS's topology)
        single_key = [s for s in stream.open_shards() if s.hash_key_end == s.hash_key_start]
        if single_key:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.single_key_shard_cannot_split(shard_id=single_key[0].shard_id),
            )
    if target < math.ceil(open_count / 2):
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.shard_count_below_half(open_count, target),
        )
    # A rolling window: a call exactly 24 h ago no longer counts.
    recent = [t for t in stream.shard_count_updates_ms if now_ms - t < DAY_MS]
    if len(recent) >= limits.update_shard_count_per_day_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.shard_count_updates_per_day(
                limits.update_shard_count_per_day_max, stream.name, len(recent)
            ),
        )


def _open_shard(stream: StreamMeta, shard_index: int) -> ShardMeta:
    shard = stream.shard_by_index(shard_index)
    if shard is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.reshard_shard_not_found(
                f"shardId-{shard_index:012d}", stream.name, _account_of(stream)
            ),
        )
    # SEALING counts as taken: it is the parent of a reshard in progress.
    if shard.state is not ShardState.OPEN:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.shard_not_eligible(shard.shard_id, stream.name),
        )
    return shard


# --- Planning (BeginReshard) ---------------------------------------------------------------


def shards_to_seal(stream: StreamMeta, request: ReshardRequest) -> tuple[ShardIndex, ...]:
    """The parents `request` touches, ascending by index.

    For UNIFORM_SCALING: scaling up, every open shard (each is split); scaling down, the open
    shards merged in pairs (see `uniform_groups`); the others are kept as they are.
    """
    match request.kind:
        case ReshardKind.SPLIT:
            assert request.shard_index is not None
            return (request.shard_index,)
        case ReshardKind.MERGE:
            assert request.shard_index is not None
            assert request.adjacent_shard_index is not None
            assert request.shard_index != request.adjacent_shard_index
            return tuple(sorted((request.shard_index, request.adjacent_shard_index)))
        case ReshardKind.UNIFORM_SCALING:
            assert request.target_shard_count is not None
            live = _live_by_hash(stream)
            split_all, groups = uniform_groups(len(live), request.target_shard_count)
            if split_all:
                return tuple(sorted(s.index for s in live))
            return tuple(
                sorted(
                    live[i].index
                    for first, end in groups
                    if end - first == 2
                    for i in (first, first + 1)
                )
            )
        case _:
            assert_never(request.kind)


# --- Completion (CompleteReshard) ----------------------------------------------------------


def complete_reshard(
    stream: StreamMeta,
    request: ReshardRequest,
    *,
    end_offsets: Mapping[int, int],
    now_ms: int,
    next_shard_uid: int,
) -> ReshardOutcome:
    """Close the sealed parents at `end_offsets` (index → record count) and add the children."""
    parent_indices = shards_to_seal(stream, request)
    if request.sealed:
        assert tuple(sorted(request.sealed)) == parent_indices
    assert set(end_offsets) == set(parent_indices)
    parents = [stream.shards[i] for i in parent_indices]
    for parent in parents:
        assert parent.state is not ShardState.CLOSED
        assert end_offsets[parent.index] >= 0
    aws_layout = any(p.aws_sequence_numbers for p in parents)
    builder = _ChildBuilder(
        next_index=stream.next_shard_index,
        next_uid=next_shard_uid,
        created_ms=children_created_ms(now_ms, parents, aws_layout=aws_layout),
        aws_sequence_numbers=aws_layout,
    )

    match request.kind:
        case ReshardKind.SPLIT:
            assert request.new_starting_hash_key is not None
            (parent,) = parents
            builder.split(parent, request.new_starting_hash_key)
        case ReshardKind.MERGE:
            assert request.shard_index is not None
            assert request.adjacent_shard_index is not None
            builder.merge(
                stream.shards[request.shard_index], stream.shards[request.adjacent_shard_index]
            )
        case ReshardKind.UNIFORM_SCALING:
            assert request.target_shard_count is not None
            _plan_uniform(builder, _live_by_hash(stream), request.target_shard_count)
        case _:
            assert_never(request.kind)

    closed_parents = {
        p.index: dataclasses.replace(
            p,
            state=ShardState.CLOSED,
            closed_ms=now_ms,
            end_offset=Offset(end_offsets[p.index]),
        )
        for p in parents
    }
    shards = (
        *(closed_parents.get(s.index, s) for s in stream.shards),
        *builder.finished(now_ms=now_ms),
    )
    for position, shard in enumerate(shards):
        assert shard.index == position
    live = [(s.hash_key_start, s.hash_key_end) for s in shards if s.state is not ShardState.CLOSED]
    assert tiles_hash_space(live)
    if request.kind is ReshardKind.UNIFORM_SCALING:
        assert request.target_shard_count is not None
        assert len(live) == request.target_shard_count
    return ReshardOutcome(
        shards=shards,
        next_shard_index=builder.next_index,
        next_shard_uid=builder.next_uid,
    )


def uniform_groups(current: int, target: int) -> tuple[bool, list[tuple[int, int]]]:
    """AWS's UpdateShardCount plan over `current` open shards in hash order: whether every
    shard is split in half first (scaling up), and the `target` groups of consecutive pieces
    (shards, or halves when split) that become the new shards, as [first, end) piece
    positions. Every group has one or two pieces, spread evenly: group k holds the pieces from
    floor(k * pieces / target) up to floor((k + 1) * pieces / target)."""
    assert current >= 1
    assert target >= 1
    if target == current:
        return False, [(k, k + 1) for k in range(current)]
    split_all = target > current
    pieces = 2 * current if split_all else current
    assert target <= pieces <= 2 * target, (current, target)
    bounds = [k * pieces // target for k in range(target + 1)]
    return split_all, list(itertools.pairwise(bounds))


def _live_by_hash(stream: StreamMeta) -> list[ShardMeta]:
    """The shards that are not closed (open, or sealing for this reshard), in hash order."""
    live = [s for s in stream.shards if s.state is not ShardState.CLOSED]
    return sorted(live, key=lambda s: s.hash_key_start)


def _plan_uniform(builder: _ChildBuilder, live: list[ShardMeta], target: int) -> None:
    """Split (scaling up) and merge per `uniform_groups`; shards in groups of one are kept."""
    split_all, groups = uniform_groups(len(live), target)
    pieces: list[ShardMeta] = []
    if split_all:
        for shard in live:
            middle = (shard.hash_key_start + shard.hash_key_end + 1) // 2
            pieces.extend(builder.split(shard, middle))
    else:
        pieces = live
    for first, end in groups:
        if end - first == 2:
            builder.merge(pieces[first], pieces[first + 1])


def children_created_ms(now_ms: int, parents: Sequence[ShardMeta], *, aws_layout: bool) -> int:
    """When a reshard's children are created: never before a parent; in AWS's layout, whose
    most significant field after the leading digit is the creation second (then the index's
    last hex digit, which wraps), in a later second than every parent, up to a second ahead of
    `now_ms`."""
    if not parents:
        return now_ms
    latest_parent_ms = max(p.created_ms for p in parents)
    created_ms = max(now_ms, latest_parent_ms)
    if aws_layout and created_ms // 1000 == latest_parent_ms // 1000:
        created_ms = (latest_parent_ms // 1000 + 1) * 1000
    return created_ms


@dataclass(slots=True, kw_only=True)
class _ChildBuilder:
    """Allocates indices and uids for new shards, and remembers which were consumed again."""

    next_index: ShardIndex
    next_uid: int
    created_ms: int
    aws_sequence_numbers: bool
    children: list[ShardMeta] = dataclasses.field(default_factory=list)
    consumed: set[ShardIndex] = dataclasses.field(default_factory=set)

    def split(self, parent: ShardMeta, new_starting_hash_key: int) -> tuple[ShardMeta, ShardMeta]:
        assert parent.hash_key_start < new_starting_hash_key <= parent.hash_key_end
        self.consumed.add(parent.index)
        lower = self._add(parent.hash_key_start, new_starting_hash_key - 1, parent, None)
        upper = self._add(new_starting_hash_key, parent.hash_key_end, parent, None)
        return lower, upper

    def merge(self, shard: ShardMeta, adjacent: ShardMeta) -> ShardMeta:
        low, high = sorted((shard, adjacent), key=lambda s: s.hash_key_start)
        assert low.hash_key_end + 1 == high.hash_key_start
        self.consumed.update((shard.index, adjacent.index))
        return self._add(low.hash_key_start, high.hash_key_end, shard, adjacent)

    def _add(
        self, start: int, end: int, parent: ShardMeta, adjacent: ShardMeta | None
    ) -> ShardMeta:
        assert self.next_index <= limits.shard_index_max
        parents = (parent,) if adjacent is None else (parent, adjacent)
        child = ShardMeta(
            index=self.next_index,
            uid=ShardUid(self.next_uid),
            hash_key_start=start,
            hash_key_end=end,
            parent_index=parent.index,
            adjacent_parent_index=None if adjacent is None else adjacent.index,
            # Past the reshard's parents already; an intermediate shard's child (uniform
            # scaling) goes one second further in AWS's layout.
            created_ms=children_created_ms(
                self.created_ms, parents, aws_layout=self.aws_sequence_numbers
            ),
            state=ShardState.OPEN,
            aws_sequence_numbers=self.aws_sequence_numbers,
        )
        self.children.append(child)
        self.next_index = ShardIndex(self.next_index + 1)
        self.next_uid += 1
        return child

    def finished(self, *, now_ms: int) -> list[ShardMeta]:
        """The children; those a later step split or merged again are closed, and empty."""
        return [
            dataclasses.replace(
                child, state=ShardState.CLOSED, closed_ms=now_ms, end_offset=Offset(0)
            )
            if child.index in self.consumed
            else child
            for child in self.children
        ]
