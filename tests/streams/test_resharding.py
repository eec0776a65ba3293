"""Resharding: validation errors, outcomes that tile, lineage, and UpdateShardCount limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import ReshardKind, ReshardRequest, ShardMeta, ShardState, StreamMeta
from broker.streams.hash_keys import tiles_hash_space, uniform_ranges
from broker.streams.resharding import (
    DAY_MS,
    ReshardOutcome,
    check_merge_order,
    complete_reshard,
    initial_shards,
    shards_to_seal,
    validate_merge,
    validate_split,
    validate_update_shard_count,
)
from broker.streams.sequence_numbers import (
    is_aws_layout,
    sequence_number_for,
    starting_sequence_number,
)
from broker.types import Offset, ShardIndex
from tests.fast_tier import examples
from tests.streams.support import CREATED_MS, make_stream

NOW_MS = CREATED_MS + 60_000
HALF = 2**127


def _split(index: int, key: int) -> ReshardRequest:
    return ReshardRequest(
        kind=ReshardKind.SPLIT, shard_index=ShardIndex(index), new_starting_hash_key=key
    )


def _merge(index: int, adjacent: int) -> ReshardRequest:
    return ReshardRequest(
        kind=ReshardKind.MERGE,
        shard_index=ShardIndex(index),
        adjacent_shard_index=ShardIndex(adjacent),
    )


def _uniform(target: int) -> ReshardRequest:
    return ReshardRequest(kind=ReshardKind.UNIFORM_SCALING, target_shard_count=target)


def _apply(
    stream: StreamMeta, request: ReshardRequest, *, now_ms: int = NOW_MS
) -> tuple[StreamMeta, ReshardOutcome]:
    """Run a reshard through both steps, as the state machine would."""
    sealed = shards_to_seal(stream, request)
    sealing = tuple(
        dataclasses.replace(s, state=ShardState.SEALING) if s.index in sealed else s
        for s in stream.shards
    )
    request = dataclasses.replace(request, sealed=sealed)
    stream = dataclasses.replace(stream, shards=sealing, reshard=request)
    next_uid = max(s.uid for s in stream.shards) + 1
    outcome = complete_reshard(
        stream,
        request,
        end_offsets={i: 10 + i for i in sealed},
        now_ms=now_ms,
        next_shard_uid=next_uid,
    )
    done = dataclasses.replace(
        stream, shards=outcome.shards, next_shard_index=outcome.next_shard_index, reshard=None
    )
    _check_invariants(stream, done, outcome, sealed, now_ms=now_ms)
    return done, outcome


def _check_invariants(
    before: StreamMeta,
    after: StreamMeta,
    outcome: ReshardOutcome,
    sealed: tuple[ShardIndex, ...],
    *,
    now_ms: int,
) -> None:
    shards = after.shards
    assert [s.index for s in shards] == list(range(len(shards)))
    assert len({s.uid for s in shards}) == len(shards)
    assert outcome.next_shard_index == len(shards)
    assert outcome.next_shard_uid == max(s.uid for s in shards) + 1
    live = [s for s in shards if s.state is not ShardState.CLOSED]
    assert all(s.state is ShardState.OPEN for s in live)
    assert tiles_hash_space((s.hash_key_start, s.hash_key_end) for s in live)
    for index in sealed:
        parent = shards[index]
        assert parent.state is ShardState.CLOSED
        assert parent.closed_ms == now_ms
        assert parent.end_offset == 10 + index
    for old, new in zip(before.shards, shards, strict=False):
        if old.index not in sealed:
            assert new == old
    for child in shards[len(before.shards) :]:
        _check_lineage(shards, child)
        if child.state is ShardState.CLOSED:
            assert child.end_offset == 0
            assert child.closed_ms == now_ms


def _check_lineage(shards: tuple[ShardMeta, ...], child: ShardMeta) -> None:
    assert child.parent_index is not None
    parents = [shards[child.parent_index]]
    if child.adjacent_parent_index is not None:
        parents.append(shards[child.adjacent_parent_index])
    for parent in parents:
        assert parent.index < child.index
        assert parent.state is ShardState.CLOSED
        assert parent.created_ms <= child.created_ms
        last = sequence_number_for(parent, max((parent.end_offset or 0) - 1, 0))
        assert int(sequence_number_for(child, 0)) > int(last)
    # A child covers exactly what its parents covered (split: a part; merge: the union).
    if len(parents) == 2:
        low, high = sorted(parents, key=lambda s: s.hash_key_start)
        assert low.hash_key_end + 1 == high.hash_key_start
        assert (child.hash_key_start, child.hash_key_end) == (low.hash_key_start, high.hash_key_end)
    else:
        assert parents[0].hash_key_start <= child.hash_key_start
        assert child.hash_key_end <= parents[0].hash_key_end


def _error(call: Callable[[], object]) -> ShoalError:
    with pytest.raises(ShoalError) as caught:
        call()
    return caught.value


# --- initial_shards ------------------------------------------------------------------------


def test_initial_shards() -> None:
    shards = initial_shards(3, first_uid=10, now_ms=5)
    assert [s.index for s in shards] == [0, 1, 2]
    assert [s.uid for s in shards] == [10, 11, 12]
    assert [(s.hash_key_start, s.hash_key_end) for s in shards] == uniform_ranges(3)
    assert all(s.state is ShardState.OPEN and s.created_ms == 5 for s in shards)
    assert all(s.parent_index is None and s.adjacent_parent_index is None for s in shards)


# --- split ---------------------------------------------------------------------------------


def test_split_outcome_and_lineage() -> None:
    stream, _ = _apply(make_stream(1), _split(0, HALF))
    parent, lower, upper = stream.shards
    assert parent.state is ShardState.CLOSED
    assert (lower.index, lower.hash_key_start, lower.hash_key_end) == (1, 0, HALF - 1)
    assert (upper.index, upper.hash_key_start, upper.hash_key_end) == (2, HALF, 2**128 - 1)
    assert lower.parent_index == upper.parent_index == 0
    assert lower.adjacent_parent_index is None
    assert upper.adjacent_parent_index is None
    assert lower.created_ms == upper.created_ms == NOW_MS


def test_child_created_ms_never_precedes_parent() -> None:
    # A node whose clock lags still produces children that sort after their parents.
    stream, _ = _apply(make_stream(1), _split(0, HALF), now_ms=CREATED_MS - 1000)
    # In AWS's layout (led by the creation second), in the parent's next second.
    assert all(
        child.created_ms == (CREATED_MS // 1000 + 1) * 1000 and child.aws_sequence_numbers
        for child in stream.shards[1:]
    )
    # In the 0x3 layout of streams from before (led by the creation millisecond), at it.
    old = make_stream(1)
    old = dataclasses.replace(
        old, shards=tuple(dataclasses.replace(s, aws_sequence_numbers=False) for s in old.shards)
    )
    stream, _ = _apply(old, _split(0, HALF), now_ms=CREATED_MS - 1000)
    assert all(
        child.created_ms == CREATED_MS and not child.aws_sequence_numbers
        for child in stream.shards[1:]
    )
    for shard in (*old.shards, *stream.shards):
        assert not is_aws_layout(starting_sequence_number(shard))


def test_split_unknown_shard_is_not_found() -> None:
    error = _error(lambda: validate_split(make_stream(1), shard_index=1, new_starting_hash_key=5))
    assert error.code is ErrorCode.RESOURCE_NOT_FOUND
    assert (
        error.message
        == "Could not find shard shardId-000000000001 in stream s under account 000000000000."
    )


@pytest.mark.parametrize("state", [ShardState.CLOSED, ShardState.SEALING])
def test_split_of_a_shard_not_open_is_invalid(state: ShardState) -> None:
    stream = make_stream(1)
    shard = dataclasses.replace(stream.shards[0], state=state, closed_ms=1, end_offset=Offset(0))
    stream = dataclasses.replace(stream, shards=(shard,))
    error = _error(lambda: validate_split(stream, shard_index=0, new_starting_hash_key=HALF))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.message == (
        "Shard shardId-000000000000 in stream s has already been merged or split, and thus is "
        "not eligible for merging or splitting."
    )


@pytest.mark.parametrize("key", [0, 1, 2**128 - 1, 2**128 + 5])
def test_split_key_out_of_bounds_is_invalid(key: int) -> None:
    error = _error(lambda: validate_split(make_stream(1), shard_index=0, new_starting_hash_key=key))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert "is not both greater than one plus the shard's StartingHashKey 0" in error.message


def test_split_key_bounds_are_exclusive() -> None:
    stream = make_stream(1)
    validate_split(stream, shard_index=0, new_starting_hash_key=2)
    validate_split(stream, shard_index=0, new_starting_hash_key=2**128 - 2)


# --- merge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "adjacent"), [(0, 1), (1, 0)])
def test_merge_outcome_and_lineage(index: int, adjacent: int) -> None:
    stream, _ = _apply(make_stream(2), _merge(index, adjacent))
    child = stream.shards[2]
    assert (child.hash_key_start, child.hash_key_end) == (0, 2**128 - 1)
    assert child.parent_index == index
    assert child.adjacent_parent_index == adjacent
    assert stream.shards[0].state is stream.shards[1].state is ShardState.CLOSED


def test_merge_of_non_adjacent_shards_is_invalid() -> None:
    stream = make_stream(3)
    error = _error(lambda: validate_merge(stream, shard_index=0, adjacent_shard_index=2))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.message == (
        "Shards shardId-000000000000 and shardId-000000000002 in stream s under account "
        "000000000000 are not an adjacent pair of shards eligible for merging"
    )
    error = _error(lambda: validate_merge(stream, shard_index=1, adjacent_shard_index=1))
    assert error.code is ErrorCode.INVALID_ARGUMENT


def test_merge_errors_name_the_missing_or_closed_shard() -> None:
    stream, _ = _apply(make_stream(2), _merge(0, 1))
    error = _error(lambda: validate_merge(stream, shard_index=2, adjacent_shard_index=3))
    assert error.code is ErrorCode.RESOURCE_NOT_FOUND
    assert "shardId-000000000003" in error.message
    error = _error(lambda: validate_merge(stream, shard_index=0, adjacent_shard_index=1))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert "has already been merged or split" in error.message


def test_validate_merge_accepts_either_order() -> None:
    # The state machine's rule: members of the previous release apply it too.
    stream = make_stream(2)
    validate_merge(stream, shard_index=0, adjacent_shard_index=1)
    validate_merge(stream, shard_index=1, adjacent_shard_index=0)


def test_the_proposer_refuses_the_adjacent_shard_below_the_shard_to_merge() -> None:
    stream = make_stream(2)
    check_merge_order(stream, shard_index=0, adjacent_shard_index=1)
    error = _error(lambda: check_merge_order(stream, shard_index=1, adjacent_shard_index=0))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.message == (  # kinesalite's recording of AWS
        "Shards shardId-000000000001 and shardId-000000000000 in stream s under account "
        "000000000000 are not an adjacent pair of shards eligible for merging"
    )


# --- UpdateShardCount ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target", "total"),
    # AWS's counts of shards in all (open and closed) after UpdateShardCount: 10 -> 13 leaves
    # 37 and 5 -> 3 leaves 7 (measured on AWS; issue 14).
    [(10, 13, 37), (5, 3, 7), (1, 2, 3), (2, 4, 6), (4, 2, 6), (4, 5, 15), (2, 1, 3), (3, 3, 3)],
)
def test_uniform_scaling_outcome(current: int, target: int, total: int) -> None:
    stream, _ = _apply(make_stream(current), _uniform(target))
    assert len(stream.shards) == total
    live = sorted(
        (s.hash_key_start, s.hash_key_end)
        for s in stream.shards
        if s.state is not ShardState.CLOSED
    )
    assert len(live) == target
    assert tiles_hash_space(live)
    if target in (current, 2 * current) or 2 * target == current:
        assert live == uniform_ranges(target)  # doubling and halving stay uniform
    widths = [end - start + 1 for start, end in live]
    assert max(widths) <= 2 * min(widths) + 2  # pieces of one or two halves (or shards)


def test_uniform_scaling_to_the_current_uniform_count_is_a_no_op() -> None:
    stream = make_stream(4)
    assert shards_to_seal(stream, _uniform(4)) == ()
    after, outcome = _apply(stream, _uniform(4))
    assert after.shards == stream.shards
    assert outcome.next_shard_index == 4


def test_uniform_scaling_keeps_shards_already_in_place() -> None:
    # After splitting shard 1 of 2, scaling back to 2 only merges the two halves of it.
    stream, _ = _apply(make_stream(2), _split(1, 3 * 2**126))
    assert shards_to_seal(stream, _uniform(2)) == (2, 3)
    after, _ = _apply(stream, _uniform(2))
    merged = after.shards[-1]
    assert (merged.parent_index, merged.adjacent_parent_index) == (2, 3)
    assert after.shards[0].state is ShardState.OPEN


def test_uniform_scaling_creates_intermediates_closed_and_empty() -> None:
    # 4 → 5: each shard is split once; three target ranges merge two pieces each.
    stream, _ = _apply(make_stream(4), _uniform(5))
    new = stream.shards[4:]
    assert len(new) == 11
    intermediates = [s for s in new if s.state is ShardState.CLOSED]
    assert len(intermediates) == 6
    assert all(s.end_offset == 0 for s in intermediates)


def test_update_shard_count_limits() -> None:
    stream = make_stream(4)
    for target in (2, 3, 4, 5, 8):
        validate_update_shard_count(stream, target_shard_count=target, now_ms=NOW_MS)

    error = _error(lambda: validate_update_shard_count(stream, target_shard_count=9, now_ms=0))
    assert error.code is ErrorCode.LIMIT_EXCEEDED
    assert error.message.startswith("UpdateShardCount cannot scale up over double")
    assert error.message.endswith("Current open shard count: 4, Target shard count: 9")

    error = _error(lambda: validate_update_shard_count(stream, target_shard_count=1, now_ms=0))
    assert error.code is ErrorCode.LIMIT_EXCEEDED
    assert error.message.startswith("UpdateShardCount cannot scale down below half")

    error = _error(lambda: validate_update_shard_count(stream, target_shard_count=0, now_ms=0))
    assert error.code is ErrorCode.VALIDATION


def test_update_shard_count_half_rounds_up_for_odd_counts() -> None:
    stream = make_stream(5)
    validate_update_shard_count(stream, target_shard_count=3, now_ms=NOW_MS)
    error = _error(lambda: validate_update_shard_count(stream, target_shard_count=2, now_ms=0))
    assert error.code is ErrorCode.LIMIT_EXCEEDED


def test_update_shard_count_per_stream_maximum() -> None:
    count = limits.shard_count_per_stream_max
    stream = make_stream(1)
    stream = dataclasses.replace(stream, shards=initial_shards(count, first_uid=1, now_ms=0))
    validate_update_shard_count(stream, target_shard_count=count, now_ms=NOW_MS)
    error = _error(
        lambda: validate_update_shard_count(stream, target_shard_count=count + 1, now_ms=0)
    )
    assert error.code is ErrorCode.LIMIT_EXCEEDED
    assert error.message.startswith(
        f"Target shard count or number of open shards cannot be greater than {count}."
    )


def test_update_shard_count_rolling_day_window() -> None:
    per_day = limits.update_shard_count_per_day_max
    updates = tuple(NOW_MS - DAY_MS + 1 + i for i in range(per_day))
    stream = dataclasses.replace(make_stream(2), shard_count_updates_ms=updates)
    error = _error(lambda: validate_update_shard_count(stream, target_shard_count=3, now_ms=NOW_MS))
    assert error.code is ErrorCode.LIMIT_EXCEEDED
    assert f"at most {per_day} times" in error.message
    # One millisecond later the oldest call is exactly 24 h old and no longer counts.
    validate_update_shard_count(stream, target_shard_count=3, now_ms=NOW_MS + 1)


# --- properties ----------------------------------------------------------------------------


@st.composite
def reshard_plans(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    initial = draw(st.integers(min_value=1, max_value=8))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["split", "merge", "uniform"]),
                st.integers(min_value=0, max_value=2**32),
                st.integers(min_value=0, max_value=2**128),
            ),
            max_size=8,
        )
    )
    return initial, steps


@settings(max_examples=examples(150), deadline=None)
@given(reshard_plans())
def test_any_sequence_of_reshards_keeps_every_invariant(
    plan: tuple[int, list[tuple[str, int, int]]],
) -> None:
    initial, steps = plan
    stream = make_stream(initial)
    now_ms = NOW_MS
    for kind, choice, key_choice in steps:
        now_ms += 1000
        live = sorted(
            (s for s in stream.shards if s.state is ShardState.OPEN),
            key=lambda s: s.hash_key_start,
        )
        request: ReshardRequest
        if kind == "split":
            shard = live[choice % len(live)]
            width = shard.hash_key_end - shard.hash_key_start
            if width < 3:
                continue
            key = shard.hash_key_start + 2 + key_choice % (width - 2)
            validate_split(stream, shard_index=shard.index, new_starting_hash_key=key)
            request = _split(shard.index, key)
        elif kind == "merge":
            if len(live) < 2:
                continue
            at = choice % (len(live) - 1)
            first, second = live[at], live[at + 1]
            if key_choice % 2:
                first, second = second, first
            validate_merge(stream, shard_index=first.index, adjacent_shard_index=second.index)
            request = _merge(first.index, second.index)
        else:
            low, high = (len(live) + 1) // 2, min(2 * len(live), 40)
            target = low + choice % (high - low + 1)
            if target > len(live) and any(s.hash_key_start == s.hash_key_end for s in live):
                with pytest.raises(ShoalError, match="single hash key"):  # cannot be halved
                    validate_update_shard_count(stream, target_shard_count=target, now_ms=now_ms)
                continue
            validate_update_shard_count(stream, target_shard_count=target, now_ms=now_ms)
            request = _uniform(target)
        stream, _ = _apply(stream, request, now_ms=now_ms)
