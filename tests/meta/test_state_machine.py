"""state_machine.apply: every command, its error paths, and determinism.

Tests are plain calls: an image in, a command, an Applied out. Time is the command's now_ms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    AddTags,
    BeginReshard,
    ChangeRetention,
    Command,
    CompleteReshard,
    DeleteStream,
    ForgetStream,
    RemoveTags,
    SetEnhancedMonitoring,
    UpdateMaxRecordSize,
    UpdateStreamMode,
)
from broker.meta.image import (
    MetadataImage,
    ReshardKind,
    ShardState,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.meta.image_codec import encode_image
from broker.meta.state_machine import Applied, apply
from broker.types import Offset, ShardIndex, StreamUid
from tests.meta.factories import ACCOUNT, CREATING_MS, create_stream, init_cluster, nodes_image

ACTIVE_MS = CREATING_MS + 1  # the first now_ms at which a stream created at 0 is ACTIVE
DAY_MS = 86_400_000


def ok(image: MetadataImage, command: Command) -> Applied:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    assert applied.image.applied_commands == image.applied_commands + 1
    return applied


def fails(image: MetadataImage, command: Command, code: ErrorCode) -> ShoalError:
    applied = apply(image, command)
    assert applied.error is not None, f"expected {code}, got result {applied.result!r}"
    assert applied.error.code is code, applied.error
    assert applied.result is None
    # A refused command changes nothing but the counter.
    assert applied.image.streams == image.streams
    assert applied.image.applied_commands == image.applied_commands + 1
    return applied.error


def with_stream(name: str = "s1", **overrides: object) -> MetadataImage:
    return ok(nodes_image(1), create_stream(name, **overrides)).image  # type: ignore[arg-type]


def stream(image: MetadataImage, name: str = "s1") -> StreamMeta:
    return image.streams[name]  # type: ignore[index]


# --- InitCluster ---------------------------------------------------------------------------------


def test_init_cluster_sets_once_and_later_calls_are_no_ops() -> None:
    first = ok(MetadataImage(), init_cluster("c-1"))
    assert first.result == "c-1"
    assert first.image.iterator_secret == b"\x00\x01secret"
    second = ok(first.image, dataclasses.replace(init_cluster("c-2"), iterator_secret=b"other"))
    assert second.result == "c-1"
    assert second.image.cluster_id == "c-1"
    assert second.image.iterator_secret == b"\x00\x01secret"


# --- CreateStream --------------------------------------------------------------------------------


def test_create_stream_builds_the_stream() -> None:
    applied = ok(nodes_image(1), create_stream("s1", now_ms=5, tags=(("b", "2"), ("a", "1"))))
    meta = applied.result
    assert isinstance(meta, StreamMeta)
    assert meta is stream(applied.image)
    assert meta.uid == 1
    assert [s.uid for s in meta.shards] == [1, 2]
    assert [s.index for s in meta.shards] == [0, 1]
    assert meta.tags == (("a", "1"), ("b", "2"))
    assert meta.status(now_ms=5) is StreamStatus.CREATING
    assert meta.status(now_ms=5 + CREATING_MS) is StreamStatus.ACTIVE
    assert applied.image.next_stream_uid == 2
    assert applied.image.next_shard_uid == 3


def test_racing_create_stream_one_wins_the_other_is_in_use() -> None:
    """Two proposers both saw no stream; the second to apply must lose."""
    image = nodes_image(1)
    first = ok(image, create_stream("s1", now_ms=10))
    error = fails(first.image, create_stream("s1", now_ms=11), ErrorCode.RESOURCE_IN_USE)
    assert error.message == f"Stream s1 under account {ACCOUNT} already exists."


def test_create_stream_never_mutates_the_input_image() -> None:
    image = with_stream("s1")
    before = encode_image(image)
    ok(image, create_stream("s2"))
    assert encode_image(image) == before
    assert list(image.streams) == ["s1"]


def test_create_replaces_a_gone_incarnation_with_a_new_uid() -> None:
    image = with_stream("s1")
    image = ok(image, DeleteStream(now_ms=ACTIVE_MS, name="s1", deleting_ms=100)).image
    fails(image, create_stream("s1", now_ms=ACTIVE_MS + 50), ErrorCode.RESOURCE_IN_USE)
    recreated = ok(image, create_stream("s1", now_ms=ACTIVE_MS + 100)).image
    assert stream(recreated).uid == 2
    assert {s.uid for s in stream(recreated).shards} == {3, 4}


def test_create_stream_account_shard_limit() -> None:
    image = with_stream("s1", shard_count=3, shard_count_per_account_max=5)
    error = fails(
        image,
        create_stream("s2", shard_count=3, shard_count_per_account_max=5),
        ErrorCode.LIMIT_EXCEEDED,
    )
    assert "Current shard count for the account: 3. Limit: 5." in error.message
    ok(image, create_stream("s2", shard_count=2, shard_count_per_account_max=5))


def test_create_stream_shard_limit_ignores_gone_streams() -> None:
    image = with_stream("s1", shard_count=3, shard_count_per_account_max=5)
    image = ok(image, DeleteStream(now_ms=ACTIVE_MS, name="s1", deleting_ms=0)).image
    ok(image, create_stream("s2", now_ms=ACTIVE_MS, shard_count=5, shard_count_per_account_max=5))


def test_create_stream_on_demand_limit() -> None:
    image = with_stream("a", mode=StreamMode.ON_DEMAND, on_demand_streams_max=1)
    fails(
        image,
        create_stream("b", mode=StreamMode.ON_DEMAND, on_demand_streams_max=1),
        ErrorCode.LIMIT_EXCEEDED,
    )
    ok(image, create_stream("c", mode=StreamMode.PROVISIONED, on_demand_streams_max=1))


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"shard_count": 0}, ErrorCode.VALIDATION),
        ({"retention_hours": 23}, ErrorCode.INVALID_ARGUMENT),
        ({"retention_hours": 8761}, ErrorCode.INVALID_ARGUMENT),
        ({"max_record_size_kib": 1023}, ErrorCode.VALIDATION),
        ({"tags": tuple((f"k{i}", "v") for i in range(51))}, ErrorCode.INVALID_ARGUMENT),
    ],
)
def test_create_stream_rejects_bad_arguments(overrides: dict[str, Any], code: ErrorCode) -> None:
    fails(nodes_image(1), create_stream("s1", **overrides), code)


# --- DeleteStream / ForgetStream -----------------------------------------------------------------


def test_delete_missing_stream_is_not_found() -> None:
    error = fails(
        nodes_image(1),
        DeleteStream(now_ms=0, name="nope", deleting_ms=0),
        ErrorCode.RESOURCE_NOT_FOUND,
    )
    assert error.message == "Stream nope under account 000000000000 not found."


def test_a_creating_stream_may_be_deleted() -> None:
    """As on AWS: DeleteStream is accepted while the stream is still CREATING."""
    image = with_stream("s1")
    assert stream(image).status(now_ms=1) is StreamStatus.CREATING
    applied = ok(image, DeleteStream(now_ms=1, name="s1", deleting_ms=10))
    assert stream(applied.image).status(now_ms=1) is StreamStatus.DELETING


def test_delete_then_gone_then_forget() -> None:
    image = with_stream("s1")
    applied = ok(image, DeleteStream(now_ms=ACTIVE_MS, name="s1", deleting_ms=100))
    deleting = stream(applied.image)
    assert deleting.status(now_ms=ACTIVE_MS) is StreamStatus.DELETING
    assert applied.image.stream("s1", now_ms=ACTIVE_MS + 99) is not None
    assert applied.image.stream("s1", now_ms=ACTIVE_MS + 100) is None
    # A second delete while DELETING succeeds and keeps the timer (retry-safe).
    again = ok(applied.image, DeleteStream(now_ms=ACTIVE_MS + 10, name="s1", deleting_ms=100))
    assert stream(again.image).status_until_ms == ACTIVE_MS + 100
    # Gone: a delete is not found; forgetting too early is a no-op.
    gone = again.image
    fails(
        gone,
        DeleteStream(now_ms=ACTIVE_MS + 100, name="s1", deleting_ms=1),
        ErrorCode.RESOURCE_NOT_FOUND,
    )
    early = ok(gone, ForgetStream(now_ms=ACTIVE_MS + 99, uid=deleting.uid))
    assert "s1" in early.image.streams
    forgotten = ok(gone, ForgetStream(now_ms=ACTIVE_MS + 100, uid=deleting.uid))
    assert forgotten.image.streams == {}
    assert (
        ok(forgotten.image, ForgetStream(now_ms=ACTIVE_MS + 100, uid=deleting.uid)).result is None
    )


def test_forget_does_not_remove_a_live_recreated_stream() -> None:
    image = with_stream("s1")
    old_uid = stream(image).uid
    image = ok(image, DeleteStream(now_ms=ACTIVE_MS, name="s1", deleting_ms=0)).image
    image = ok(image, create_stream("s1", now_ms=ACTIVE_MS)).image
    after = ok(image, ForgetStream(now_ms=ACTIVE_MS + DAY_MS, uid=old_uid)).image
    assert stream(after).uid != old_uid


# --- Retention -----------------------------------------------------------------------------------


def test_retention_increase_and_decrease() -> None:
    image = with_stream("s1")
    image = ok(
        image, ChangeRetention(now_ms=ACTIVE_MS, name="s1", retention_hours=48, increase=True)
    ).image
    assert stream(image).retention_hours == 48
    error = fails(
        image,
        ChangeRetention(now_ms=ACTIVE_MS, name="s1", retention_hours=30, increase=True),
        ErrorCode.INVALID_ARGUMENT,
    )
    assert error.message == (
        "Requested retention period (30 hours) for stream s1 can not be shorter than existing "
        "retention period (48 hours). Use DecreaseRetentionPeriod API."
    )
    fails(
        image,
        ChangeRetention(now_ms=ACTIVE_MS, name="s1", retention_hours=72, increase=False),
        ErrorCode.INVALID_ARGUMENT,
    )
    image = ok(
        image, ChangeRetention(now_ms=ACTIVE_MS, name="s1", retention_hours=24, increase=False)
    ).image
    assert stream(image).retention_hours == 24


@pytest.mark.parametrize(("hours", "text"), [(23, "Minimum allowed"), (8761, "Maximum allowed")])
def test_retention_bounds(hours: int, text: str) -> None:
    image = with_stream("s1")
    error = fails(
        image,
        ChangeRetention(now_ms=ACTIVE_MS, name="s1", retention_hours=hours, increase=hours > 24),
        ErrorCode.INVALID_ARGUMENT,
    )
    assert error.message.startswith(text)


def test_retention_needs_active_and_existing_stream() -> None:
    image = with_stream("s1")
    fails(
        image,
        ChangeRetention(now_ms=0, name="s1", retention_hours=48, increase=True),
        ErrorCode.RESOURCE_IN_USE,
    )
    fails(
        image,
        ChangeRetention(now_ms=0, name="x", retention_hours=48, increase=True),
        ErrorCode.RESOURCE_NOT_FOUND,
    )


# --- Tags and enhanced monitoring ----------------------------------------------------------------


def test_add_and_remove_tags() -> None:
    image = with_stream("s1", tags=(("a", "1"),))
    image = ok(image, AddTags(now_ms=1, name="s1", tags=(("c", "3"), ("a", "9")))).image
    assert stream(image).tags == (("a", "9"), ("c", "3"))
    image = ok(image, RemoveTags(now_ms=1, name="s1", keys=("a", "absent"))).image
    assert stream(image).tags == (("c", "3"),)
    fails(image, AddTags(now_ms=1, name="x", tags=()), ErrorCode.RESOURCE_NOT_FOUND)
    fails(image, RemoveTags(now_ms=1, name="x", keys=()), ErrorCode.RESOURCE_NOT_FOUND)


def test_add_tags_limit() -> None:
    image = with_stream(
        "s1", tags=tuple((f"k{i:02}", "v") for i in range(limits.tags_per_stream_max))
    )
    ok(image, AddTags(now_ms=1, name="s1", tags=(("k00", "replaced"),)))
    error = fails(
        image, AddTags(now_ms=1, name="s1", tags=(("new", "v"),)), ErrorCode.INVALID_ARGUMENT
    )
    assert "cannot have more than 50 tags" in error.message


def test_enhanced_monitoring_returns_before_and_after() -> None:
    image = with_stream("s1")
    enable = SetEnhancedMonitoring(
        now_ms=1, name="s1", metrics=("OutgoingBytes", "IncomingBytes"), enable=True
    )
    applied = ok(image, enable)
    assert applied.result == ((), ("IncomingBytes", "OutgoingBytes"))
    disable = SetEnhancedMonitoring(now_ms=1, name="s1", metrics=("IncomingBytes",), enable=False)
    applied = ok(applied.image, disable)
    assert applied.result == (("IncomingBytes", "OutgoingBytes"), ("OutgoingBytes",))
    fails(image, dataclasses.replace(enable, name="x"), ErrorCode.RESOURCE_NOT_FOUND)


# --- Resharding ----------------------------------------------------------------------------------


def split(
    now_ms: int, shard_index: int = 0, key: int | None = None, **extra: object
) -> BeginReshard:
    return BeginReshard(
        now_ms=now_ms,
        name="s1",
        kind=ReshardKind.SPLIT,
        shard_index=ShardIndex(shard_index),
        new_starting_hash_key=key if key is not None else 2**126,
        updating_ms=100,
        **extra,  # type: ignore[arg-type]
    )


def test_split_begin_then_complete() -> None:
    image = with_stream("s1")
    begun = ok(image, split(ACTIVE_MS))
    assert begun.result == (0,)
    sealing = stream(begun.image)
    assert sealing.shards[0].state is ShardState.SEALING
    assert sealing.status(now_ms=ACTIVE_MS + DAY_MS) is StreamStatus.UPDATING
    assert sealing.reshard is not None
    assert sealing.reshard.sealed == (0,)
    # A second reshard while one is pending is refused.
    fails(
        begun.image, split(ACTIVE_MS + 1, shard_index=1, key=2**127 + 5), ErrorCode.RESOURCE_IN_USE
    )

    complete = CompleteReshard(
        now_ms=ACTIVE_MS + 5,
        stream_uid=sealing.uid,
        end_offsets=((ShardIndex(0), Offset(42)),),
        updating_ms=100,
    )
    done = ok(begun.image, complete)
    meta = stream(done.image)
    assert done.result == meta
    assert meta.reshard is None
    assert meta.shards[0].state is ShardState.CLOSED
    assert meta.shards[0].end_offset == 42
    assert [s.parent_index for s in meta.shards[2:]] == [0, 0]
    assert meta.next_shard_index == 4
    assert done.image.next_shard_uid == 5
    assert meta.status(now_ms=ACTIVE_MS + 5) is StreamStatus.UPDATING
    assert meta.status(now_ms=ACTIVE_MS + 105) is StreamStatus.ACTIVE

    # A duplicate completion (retried after an unknown outcome) is a harmless no-op.
    again = ok(done.image, dataclasses.replace(complete, now_ms=ACTIVE_MS + 500))
    assert again.result == meta
    assert again.image.streams == done.image.streams
    assert again.image.next_shard_uid == done.image.next_shard_uid


def test_stale_complete_for_another_reshard_is_refused() -> None:
    image = with_stream("s1")
    image = ok(image, split(ACTIVE_MS, shard_index=1, key=2**127 + 2**120)).image
    uid = stream(image).uid
    stale = CompleteReshard(
        now_ms=ACTIVE_MS, stream_uid=uid, end_offsets=((ShardIndex(0), Offset(1)),), updating_ms=0
    )
    fails(image, stale, ErrorCode.INVALID_ARGUMENT)
    missing = dataclasses.replace(stale, stream_uid=StreamUid(99))
    fails(image, missing, ErrorCode.RESOURCE_NOT_FOUND)


def test_merge_begin_then_complete() -> None:
    image = with_stream("s1")
    merge = BeginReshard(
        now_ms=ACTIVE_MS,
        name="s1",
        kind=ReshardKind.MERGE,
        shard_index=ShardIndex(1),
        adjacent_shard_index=ShardIndex(0),
        updating_ms=0,
    )
    begun = ok(image, merge)
    assert begun.result == (0, 1)
    meta = stream(begun.image)
    done = ok(
        begun.image,
        CompleteReshard(
            now_ms=ACTIVE_MS,
            stream_uid=meta.uid,
            end_offsets=((ShardIndex(0), Offset(3)), (ShardIndex(1), Offset(4))),
            updating_ms=0,
        ),
    )
    child = stream(done.image).shards[2]
    assert (child.parent_index, child.adjacent_parent_index) == (1, 0)
    assert len(stream(done.image).open_shards()) == 1


def test_reshard_needs_active_provisioned_stream_and_parameters() -> None:
    image = with_stream("s1")
    fails(image, split(0), ErrorCode.RESOURCE_IN_USE)  # still CREATING
    error = fails(image, split(ACTIVE_MS, key=1), ErrorCode.INVALID_ARGUMENT)
    assert "NewStartingHashKey" in error.message or "StartingHashKey" in error.message
    fails(
        image,
        dataclasses.replace(split(ACTIVE_MS), new_starting_hash_key=None),
        ErrorCode.VALIDATION,
    )
    fails(image, dataclasses.replace(split(ACTIVE_MS), name="x"), ErrorCode.RESOURCE_NOT_FOUND)
    on_demand = with_stream("s1", mode=StreamMode.ON_DEMAND)
    fails(on_demand, split(ACTIVE_MS), ErrorCode.VALIDATION)


def test_split_checks_the_account_shard_limit_when_asked() -> None:
    image = with_stream("s1", shard_count=2)
    fails(image, split(ACTIVE_MS, shard_count_per_account_max=2), ErrorCode.LIMIT_EXCEEDED)
    ok(image, split(ACTIVE_MS, shard_count_per_account_max=3))


def uniform(now_ms: int, target: int, **extra: object) -> BeginReshard:
    return BeginReshard(
        now_ms=now_ms,
        name="s1",
        kind=ReshardKind.UNIFORM_SCALING,
        target_shard_count=target,
        updating_ms=10,
        **extra,  # type: ignore[arg-type]
    )


def test_uniform_scaling_up_and_counted() -> None:
    image = with_stream("s1", shard_count=2)
    begun = ok(image, uniform(ACTIVE_MS, 4))
    meta = stream(begun.image)
    assert begun.result == (0, 1)
    assert meta.shard_count_updates_ms == (ACTIVE_MS,)
    end_offsets = tuple((ShardIndex(i), Offset(0)) for i in (0, 1))
    done = ok(
        begun.image,
        CompleteReshard(
            now_ms=ACTIVE_MS, stream_uid=meta.uid, end_offsets=end_offsets, updating_ms=10
        ),
    )
    assert len(stream(done.image).open_shards()) == 4


def test_uniform_scaling_to_the_current_count_completes_at_once() -> None:
    image = with_stream("s1", shard_count=2)
    applied = ok(image, uniform(ACTIVE_MS, 2))
    assert applied.result == ()
    meta = stream(applied.image)
    assert meta.reshard is None
    assert meta.status(now_ms=ACTIVE_MS) is StreamStatus.UPDATING
    assert meta.status(now_ms=ACTIVE_MS + 10) is StreamStatus.ACTIVE
    assert meta.shards == stream(image).shards


def test_uniform_scaling_daily_limit_uses_a_rolling_window() -> None:
    image = with_stream("s1", shard_count=2)
    now = ACTIVE_MS
    for _ in range(limits.update_shard_count_per_day_max):
        image = ok(image, uniform(now, 2)).image
        now += 10
    fails(image, uniform(now, 2), ErrorCode.LIMIT_EXCEEDED)
    later = ok(image, uniform(ACTIVE_MS + DAY_MS, 2))
    assert len(stream(later.image).shard_count_updates_ms) == limits.update_shard_count_per_day_max


def test_uniform_scaling_account_limit() -> None:
    image = with_stream("s1", shard_count=2)
    fails(image, uniform(ACTIVE_MS, 4, shard_count_per_account_max=3), ErrorCode.LIMIT_EXCEEDED)
    ok(image, uniform(ACTIVE_MS, 3, shard_count_per_account_max=3))


def test_delete_abandons_a_pending_reshard() -> None:
    image = ok(with_stream("s1"), split(ACTIVE_MS)).image
    uid = stream(image).uid
    image = ok(image, DeleteStream(now_ms=ACTIVE_MS, name="s1", deleting_ms=100)).image
    assert stream(image).status(now_ms=ACTIVE_MS) is StreamStatus.DELETING
    late = CompleteReshard(
        now_ms=ACTIVE_MS, stream_uid=uid, end_offsets=((ShardIndex(0), Offset(0)),), updating_ms=0
    )
    assert ok(image, late).image.streams == image.streams


# --- Stream mode and record size -----------------------------------------------------------------


def mode(now_ms: int, to: StreamMode, **extra: object) -> UpdateStreamMode:
    fields: dict[str, object] = {"updating_ms": 10, "on_demand_streams_max": 5}
    fields.update(extra)
    return UpdateStreamMode(now_ms=now_ms, name="s1", mode=to, **fields)  # type: ignore[arg-type]


def test_update_stream_mode_twice_a_day() -> None:
    image = with_stream("s1")
    applied = ok(image, mode(ACTIVE_MS, StreamMode.ON_DEMAND))
    assert stream(applied.image).mode is StreamMode.ON_DEMAND
    assert stream(applied.image).status(now_ms=ACTIVE_MS) is StreamStatus.UPDATING
    fails(applied.image, mode(ACTIVE_MS + 5, StreamMode.PROVISIONED), ErrorCode.RESOURCE_IN_USE)
    image = ok(applied.image, mode(ACTIVE_MS + 10, StreamMode.PROVISIONED)).image
    # Same mode: a no-op that does not count.
    same = ok(image, mode(ACTIVE_MS + 20, StreamMode.PROVISIONED))
    assert same.image.streams == image.streams
    fails(image, mode(ACTIVE_MS + 20, StreamMode.ON_DEMAND), ErrorCode.LIMIT_EXCEEDED)
    ok(image, mode(ACTIVE_MS + DAY_MS, StreamMode.ON_DEMAND))


def test_update_stream_mode_on_demand_limit() -> None:
    image = with_stream("other", mode=StreamMode.ON_DEMAND)
    image = ok(image, create_stream("s1")).image
    fails(
        image,
        mode(ACTIVE_MS, StreamMode.ON_DEMAND, on_demand_streams_max=1),
        ErrorCode.LIMIT_EXCEEDED,
    )
    fails(
        image,
        dataclasses.replace(mode(ACTIVE_MS, StreamMode.ON_DEMAND), name="x"),
        ErrorCode.RESOURCE_NOT_FOUND,
    )


def test_update_max_record_size() -> None:
    image = with_stream("s1")
    applied = ok(image, UpdateMaxRecordSize(now_ms=ACTIVE_MS, name="s1", max_record_size_kib=2048))
    assert stream(applied.image).max_record_size_kib == 2048
    for bad in (1023, 10241):
        fails(
            image,
            UpdateMaxRecordSize(now_ms=ACTIVE_MS, name="s1", max_record_size_kib=bad),
            ErrorCode.VALIDATION,
        )
    fails(
        image,
        UpdateMaxRecordSize(now_ms=0, name="s1", max_record_size_kib=2048),
        ErrorCode.RESOURCE_IN_USE,
    )
    fails(
        image,
        UpdateMaxRecordSize(now_ms=ACTIVE_MS, name="x", max_record_size_kib=2048),
        ErrorCode.RESOURCE_NOT_FOUND,
    )


# --- Determinism ---------------------------------------------------------------------------------


def a_history() -> list[Command]:
    """A mixed command list, failures included."""
    return [
        init_cluster(),
        create_stream("s1", now_ms=0, shard_count=2),
        create_stream("s2", now_ms=1, shard_count=1, tags=(("team", "x"),)),
        create_stream("s1", now_ms=2),  # fails: exists
        AddTags(now_ms=3, name="s2", tags=(("env", "prod"),)),
        ChangeRetention(now_ms=ACTIVE_MS, name="s1", retention_hours=72, increase=True),
        split(ACTIVE_MS + 1),
        CompleteReshard(
            now_ms=ACTIVE_MS + 2,
            stream_uid=StreamUid(1),
            end_offsets=((ShardIndex(0), Offset(7)),),
            updating_ms=0,
        ),
        DeleteStream(now_ms=ACTIVE_MS + 3, name="s2", deleting_ms=0),
        ForgetStream(now_ms=ACTIVE_MS + 4, uid=StreamUid(2)),
        UpdateMaxRecordSize(now_ms=ACTIVE_MS + 5, name="s1", max_record_size_kib=4096),
    ]


def replay(commands: list[Command]) -> tuple[MetadataImage, list[Applied]]:
    image = nodes_image(1)
    outcomes = []
    for command in commands:
        applied = apply(image, command)
        outcomes.append(applied)
        image = applied.image
    return image, outcomes


def test_same_commands_give_identical_images() -> None:
    first, outcomes = replay(a_history())
    second, _ = replay(a_history())
    assert encode_image(first) == encode_image(second)
    assert first.applied_commands == 1 + len(a_history())  # after nodes_image(1)
    assert [o.error is None for o in outcomes].count(False) == 1
    assert set(first.streams) == {"s1"}
    assert len(stream(first).open_shards()) == 3
