"""The previous topology on view while a reshard's UPDATING lasts (AWS), the new one after."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.meta.image import ReshardKind, ReshardRequest, ShardState, StreamMeta, StreamStatus
from broker.streams.published_topology import published
from broker.streams.resharding import complete_reshard, shards_to_seal
from broker.types import ShardIndex
from tests.fast_tier import examples
from tests.streams.support import CREATED_MS, make_stream

UPDATING_MS = 30_000


def _resharded(stream: StreamMeta, request: ReshardRequest, *, now_ms: int) -> StreamMeta:
    """`stream` after `request` completed at `now_ms`, UPDATING for UPDATING_MS, as
    transitions/reshards.py leaves it."""
    sealed = shards_to_seal(stream, request)
    request = dataclasses.replace(request, sealed=sealed)
    outcome = complete_reshard(
        stream,
        request,
        end_offsets=dict.fromkeys(sealed, 3),
        now_ms=now_ms,
        next_shard_uid=max(s.uid for s in stream.shards) + 1,
    )
    return dataclasses.replace(
        stream,
        shards=outcome.shards,
        next_shard_index=outcome.next_shard_index,
        reshard=None,
        transient_status=StreamStatus.UPDATING,
        status_until_ms=now_ms + UPDATING_MS,
    )


def _uniform(target: int) -> ReshardRequest:
    return ReshardRequest(kind=ReshardKind.UNIFORM_SCALING, target_shard_count=target)


@settings(max_examples=examples(40))
@given(
    current=st.integers(min_value=1, max_value=8),
    data=st.data(),
    earlier=st.booleans(),
)
def test_the_previous_shards_show_until_the_updating_ends(
    current: int, data: st.DataObject, earlier: bool
) -> None:
    stream = make_stream(current)
    now_ms = CREATED_MS + 60_000
    if earlier:  # an older, finished reshard: its closed shards stay closed
        stream = _resharded(stream, _uniform(current * 2), now_ms=now_ms)
        stream = dataclasses.replace(stream, transient_status=None)
        current *= 2
        now_ms += 60_000
    target = data.draw(st.integers(min_value=(current + 1) // 2, max_value=current * 2))
    done = _resharded(stream, _uniform(target), now_ms=now_ms)
    if target == current:
        return
    for at in (now_ms, now_ms + UPDATING_MS - 1):
        assert published(done, now_ms=at, updating_ms=UPDATING_MS).shards == stream.shards
    after = published(done, now_ms=now_ms + UPDATING_MS, updating_ms=UPDATING_MS)
    assert after is done
    assert len([s for s in after.shards if s.state is ShardState.OPEN]) == target


def test_a_split_and_a_merge_show_their_parents_open() -> None:
    stream = make_stream(2)
    now_ms = CREATED_MS + 60_000
    split = ReshardRequest(
        kind=ReshardKind.SPLIT, shard_index=ShardIndex(0), new_starting_hash_key=2**126
    )
    done = _resharded(stream, split, now_ms=now_ms)
    assert len(done.shards) == 4
    assert published(done, now_ms=now_ms, updating_ms=UPDATING_MS).shards == stream.shards
    merge = ReshardRequest(
        kind=ReshardKind.MERGE, shard_index=ShardIndex(0), adjacent_shard_index=ShardIndex(1)
    )
    merged = _resharded(stream, merge, now_ms=now_ms)
    assert published(merged, now_ms=now_ms, updating_ms=UPDATING_MS).shards == stream.shards


def test_other_states_show_every_shard_as_it_is() -> None:
    stream = make_stream(2)
    now_ms = CREATED_MS + 60_000
    done = _resharded(stream, _uniform(4), now_ms=now_ms)
    # UPDATING again later for another reason (a later window than the reshard's).
    later = dataclasses.replace(done, status_until_ms=now_ms + UPDATING_MS + 5_000)
    assert published(later, now_ms=now_ms + UPDATING_MS, updating_ms=UPDATING_MS) is later
    # A reshard under way: its parents are SEALING and already show as open.
    sealing = dataclasses.replace(done, reshard=_uniform(8))
    assert published(sealing, now_ms=now_ms, updating_ms=UPDATING_MS) is sealing
    # A stream that never resharded.
    assert published(stream, now_ms=now_ms, updating_ms=UPDATING_MS) is stream
    updating = dataclasses.replace(
        stream, transient_status=StreamStatus.UPDATING, status_until_ms=now_ms + 1
    )
    assert published(updating, now_ms=now_ms, updating_ms=UPDATING_MS) is updating
