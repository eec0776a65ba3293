"""Nodes and shard placement in `state_machine.apply`: RegisterNode, SetNodeState,
SetShardLeader, RemoveNode, CreateStream's replication factor and placement, reshard
inheritance; balance and determinism as properties.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import ErrorCode
from broker.meta.commands import (
    BeginReshard,
    Command,
    CompleteReshard,
    RemoveNode,
    SetNodeState,
    SetShardLeader,
)
from broker.meta.image import MetadataImage, NodeState, ReshardKind, ShardMeta, ShardState
from broker.meta.image_codec import encode_image
from broker.meta.state_machine import apply
from broker.types import NodeId, Offset, ShardIndex, StreamName, StreamUid
from tests.fast_tier import examples
from tests.meta.factories import create_stream, node_ids, nodes_image, register_node
from tests.meta.test_state_machine import ACTIVE_MS, fails, ok

N1, N2, N3, N4 = (NodeId(f"n{i}") for i in range(1, 5))


def shard(image: MetadataImage, index: int = 0, name: str = "s1") -> ShardMeta:
    return image.streams[name].shards[index]  # type: ignore[index]


def set_leader(
    image: MetadataImage,
    *,
    leader: NodeId | None,
    epoch: int,
    expected_epoch: int,
    replicas: tuple[NodeId, ...],
    index: int = 0,
) -> SetShardLeader:
    return SetShardLeader(
        now_ms=ACTIVE_MS,
        stream_uid=image.streams["s1"].uid,  # type: ignore[index]
        shard_index=ShardIndex(index),
        leader=leader,
        epoch=epoch,
        expected_epoch=expected_epoch,
        replicas=replicas,
    )


def node_state(node_id: NodeId, state: NodeState, incarnation: int = 1) -> SetNodeState:
    return SetNodeState(now_ms=1, node_id=node_id, state=state, expected_incarnation=incarnation)


# --- RegisterNode ---------------------------------------------------------------------------------


def test_register_adds_then_raises_the_incarnation() -> None:
    first = ok(MetadataImage(), register_node("n1", now_ms=5))
    node = first.image.nodes[N1]
    assert node.state is NodeState.ACTIVE
    assert node.incarnation == 1
    assert node.registered_ms == 5
    assert node.voter
    again = ok(first.image, register_node("n1", now_ms=9, voter=False))
    assert again.image.nodes[N1].incarnation == 2
    assert again.image.nodes[N1].registered_ms == 9
    assert not again.image.nodes[N1].voter
    assert again.result == again.image.nodes[N1]


def test_register_unfences_but_keeps_a_drain() -> None:
    image = ok(nodes_image(2), node_state(N1, NodeState.FENCED)).image
    image = ok(image, node_state(N2, NodeState.DRAINING)).image
    image = ok(image, register_node("n1")).image
    image = ok(image, register_node("n2")).image
    assert image.nodes[N1].state is NodeState.ACTIVE
    assert image.nodes[N2].state is NodeState.DRAINING


def test_register_refuses_an_api_address_in_use_and_empty_ids() -> None:
    image = nodes_image(1)
    clash = dataclasses.replace(register_node("n2"), api_address=image.nodes[N1].api_address)
    fails(image, clash, ErrorCode.INVALID_ARGUMENT)
    fails(
        image,
        dataclasses.replace(register_node("n2"), node_id=NodeId("")),
        ErrorCode.INVALID_ARGUMENT,
    )
    # A removed node's address may be reused by its replacement.
    removed = ok(image, RemoveNode(now_ms=1, node_id=N1)).image
    ok(removed, clash)


# --- SetNodeState ---------------------------------------------------------------------------------


def test_set_node_state_is_compare_and_set_on_the_incarnation() -> None:
    image = ok(nodes_image(1), register_node("n1")).image  # incarnation 2
    fails(image, node_state(N1, NodeState.FENCED, incarnation=1), ErrorCode.INVALID_ARGUMENT)
    fenced = ok(image, node_state(N1, NodeState.FENCED, incarnation=2))
    assert fenced.image.nodes[N1].state is NodeState.FENCED
    same = ok(fenced.image, node_state(N1, NodeState.FENCED, incarnation=2))
    assert same.image.nodes == fenced.image.nodes


def test_set_node_state_refusals() -> None:
    image = nodes_image(1)
    fails(image, node_state(N2, NodeState.FENCED), ErrorCode.RESOURCE_NOT_FOUND)
    fails(image, node_state(N1, NodeState.REMOVED), ErrorCode.INVALID_ARGUMENT)
    removed = ok(image, RemoveNode(now_ms=1, node_id=N1)).image
    fails(removed, node_state(N1, NodeState.ACTIVE), ErrorCode.INVALID_ARGUMENT)


# --- CreateStream placement -----------------------------------------------------------------------


def test_single_node_places_every_shard_on_it_at_epoch_1() -> None:
    image = ok(nodes_image(1), create_stream("s1", shard_count=3)).image
    for s in image.streams["s1"].shards:  # type: ignore[index]
        assert s.replicas == (N1,)
        assert s.leader == N1
        assert s.epoch == 1
    assert image.streams["s1"].replication_factor == 1  # type: ignore[index]


def test_replication_factor_is_checked_against_active_nodes_at_apply_time() -> None:
    image = nodes_image(3)
    fails(image, create_stream("s1", replication_factor=0), ErrorCode.VALIDATION)
    fails(image, create_stream("s1", replication_factor=4), ErrorCode.LIMIT_EXCEEDED)
    # The proposer saw 3 ACTIVE nodes, but one was fenced before the command applied.
    fenced = ok(image, node_state(N3, NodeState.FENCED)).image
    error = fails(fenced, create_stream("s1", replication_factor=3), ErrorCode.LIMIT_EXCEEDED)
    assert "only 2 nodes are ACTIVE" in error.message
    fails(MetadataImage(), create_stream("s1"), ErrorCode.LIMIT_EXCEEDED)


def test_placement_skips_nodes_that_are_not_active() -> None:
    image = nodes_image(4)
    image = ok(image, node_state(N1, NodeState.DRAINING)).image
    image = ok(image, node_state(N2, NodeState.FENCED)).image
    image = ok(image, create_stream("s1", shard_count=4, replication_factor=2)).image
    for s in image.streams["s1"].shards:  # type: ignore[index]
        assert set(s.replicas) == {N3, N4}
    leaders = Counter(s.leader for s in image.streams["s1"].shards)  # type: ignore[index]
    assert leaders == {N3: 2, N4: 2}


def test_placement_fills_the_least_loaded_nodes_first() -> None:
    image = ok(nodes_image(3), create_stream("s1", shard_count=2, replication_factor=1)).image
    assert [s.replicas for s in image.streams["s1"].shards] == [(N1,), (N2,)]  # type: ignore[index]
    image = ok(image, create_stream("s2", shard_count=1, replication_factor=1)).image
    assert shard(image, 0, "s2").replicas == (N3,)
    image = ok(image, create_stream("s3", shard_count=3, replication_factor=2)).image
    counts = Counter(
        n for name in image.streams for s in image.streams[name].shards for n in s.replicas
    )
    assert max(counts.values()) - min(counts.values()) <= 1


# --- SetShardLeader -------------------------------------------------------------------------------


def three_replicas() -> MetadataImage:
    image = ok(nodes_image(4), create_stream("s1", shard_count=1, replication_factor=3)).image
    assert shard(image).replicas == (N1, N2, N3)
    return image


def test_set_shard_leader_is_compare_and_set_on_the_epoch() -> None:
    image = three_replicas()
    moved = ok(
        image, set_leader(image, leader=N2, epoch=2, expected_epoch=1, replicas=(N1, N2, N3))
    )
    assert shard(moved.image).leader == N2
    assert shard(moved.image).epoch == 2
    assert moved.result == shard(moved.image)
    # A second controller decision based on epoch 1 loses.
    stale = set_leader(image, leader=N3, epoch=2, expected_epoch=1, replicas=(N1, N2, N3))
    error = fails(moved.image, stale, ErrorCode.INVALID_ARGUMENT)
    assert "at epoch 2, not 1" in error.message
    # The epoch must rise.
    fails(
        moved.image,
        set_leader(image, leader=N3, epoch=2, expected_epoch=2, replicas=(N1, N2, N3)),
        ErrorCode.INVALID_ARGUMENT,
    )


def test_set_shard_leader_refuses_bad_leaders_and_replica_sets() -> None:
    image = three_replicas()
    image = ok(image, node_state(N3, NodeState.FENCED)).image
    cases: list[tuple[NodeId | None, tuple[NodeId, ...]]] = [
        (N4, (N1, N2, N3)),  # leader not a replica
        (N3, (N1, N2, N3)),  # leader fenced
        (N1, ()),  # empty
        (N1, (N1, N1, N2)),  # repeated
        (N1, (N1, NodeId("nope"), N2, N3)),  # unknown node
        (N1, (N1, N4)),  # two changes at once (N2, N3 out, N4 in)
        (N1, (N1, N2, N4)),  # swap = one in and one out at once
    ]
    for leader, replicas in cases:
        fails(
            image,
            set_leader(image, leader=leader, epoch=2, expected_epoch=1, replicas=replicas),
            ErrorCode.INVALID_ARGUMENT,
        )
    gone = dataclasses.replace(
        set_leader(image, leader=N1, epoch=2, expected_epoch=1, replicas=(N1, N2, N3)),
        stream_uid=StreamUid(99),
    )
    fails(image, gone, ErrorCode.RESOURCE_NOT_FOUND)
    uid = image.streams[StreamName("s1")].uid
    no_shard = dataclasses.replace(gone, stream_uid=uid, shard_index=ShardIndex(5))
    fails(image, no_shard, ErrorCode.RESOURCE_NOT_FOUND)


def test_a_draining_node_may_still_lead() -> None:
    """The controller avoids it, but safety may require it (the only complete log)."""
    image = ok(three_replicas(), node_state(N2, NodeState.DRAINING)).image
    moved = ok(
        image, set_leader(image, leader=N2, epoch=2, expected_epoch=1, replicas=(N1, N2, N3))
    )
    assert shard(moved.image).leader == N2


def test_replica_move_is_one_node_in_then_one_out() -> None:
    image = three_replicas()
    grown = ok(
        image, set_leader(image, leader=N1, epoch=2, expected_epoch=1, replicas=(N1, N2, N3, N4))
    ).image
    assert shard(grown).replicas == (N1, N2, N3, N4)
    shrunk = ok(
        grown, set_leader(grown, leader=N2, epoch=3, expected_epoch=2, replicas=(N2, N3, N4))
    ).image
    assert shard(shrunk).replicas == (N2, N3, N4)
    assert shard(shrunk).leader == N2
    # No leader at all (every replica unreachable) still fences the old epoch.
    leaderless = ok(
        shrunk, set_leader(shrunk, leader=None, epoch=4, expected_epoch=3, replicas=(N2, N3, N4))
    ).image
    assert shard(leaderless).leader is None
    assert shard(leaderless).epoch == 4


# --- RemoveNode -----------------------------------------------------------------------------------


def test_remove_node_only_when_it_holds_no_replica() -> None:
    image = three_replicas()
    error = fails(image, RemoveNode(now_ms=ACTIVE_MS, node_id=N1), ErrorCode.RESOURCE_IN_USE)
    assert "drain it first" in error.message
    fails(image, RemoveNode(now_ms=ACTIVE_MS, node_id=NodeId("nope")), ErrorCode.RESOURCE_NOT_FOUND)
    removed = ok(image, RemoveNode(now_ms=ACTIVE_MS, node_id=N4))
    assert removed.image.nodes[N4].state is NodeState.REMOVED
    again = ok(removed.image, RemoveNode(now_ms=ACTIVE_MS, node_id=N4))
    assert again.image.nodes == removed.image.nodes
    # A removed node is no replica target and no placement candidate.
    fails(
        removed.image,
        set_leader(image, leader=N1, epoch=2, expected_epoch=1, replicas=(N1, N2, N3, N4)),
        ErrorCode.INVALID_ARGUMENT,
    )
    assert N4 not in removed.image.active_node_ids()


def test_remove_node_ignores_streams_that_are_gone() -> None:
    from broker.meta.commands import DeleteStream

    image = three_replicas()
    image = ok(image, DeleteStream(now_ms=ACTIVE_MS, name="s1", deleting_ms=10)).image
    fails(image, RemoveNode(now_ms=ACTIVE_MS + 5, node_id=N1), ErrorCode.RESOURCE_IN_USE)
    ok(image, RemoveNode(now_ms=ACTIVE_MS + 10, node_id=N1))


# --- Reshards -------------------------------------------------------------------------------------


def test_children_inherit_the_parent_replicas_and_leader_at_epoch_1() -> None:
    image = ok(nodes_image(3), create_stream("s1", shard_count=2, replication_factor=2)).image
    image = ok(
        image,
        set_leader(
            image,
            leader=shard(image, 0).replicas[1],
            epoch=5,
            expected_epoch=1,
            replicas=shard(image, 0).replicas,
        ),
    ).image
    parent = shard(image, 0)
    image = ok(
        image,
        BeginReshard(
            now_ms=ACTIVE_MS,
            name="s1",
            kind=ReshardKind.SPLIT,
            shard_index=ShardIndex(0),
            new_starting_hash_key=2**126,
        ),
    ).image
    uid = image.streams["s1"].uid  # type: ignore[index]
    image = ok(
        image,
        CompleteReshard(
            now_ms=ACTIVE_MS,
            stream_uid=uid,
            end_offsets=((ShardIndex(0), Offset(3)),),
            updating_ms=0,
        ),
    ).image
    for child in (shard(image, 2), shard(image, 3)):
        assert child.parent_index == 0
        assert child.replicas == parent.replicas
        assert child.leader == parent.leader
        assert child.epoch == 1
    assert shard(image, 0).epoch == 5  # the closed parent keeps its placement


def test_merge_child_inherits_shard_to_merge_and_uniform_scaling_places_everything() -> None:
    image = ok(nodes_image(3), create_stream("s1", shard_count=3, replication_factor=1)).image
    uid = image.streams["s1"].uid  # type: ignore[index]
    image = ok(
        image,
        BeginReshard(
            now_ms=ACTIVE_MS,
            name="s1",
            kind=ReshardKind.MERGE,
            shard_index=ShardIndex(1),
            adjacent_shard_index=ShardIndex(0),
        ),
    ).image
    image = ok(
        image,
        CompleteReshard(
            now_ms=ACTIVE_MS,
            stream_uid=uid,
            end_offsets=((ShardIndex(0), Offset(0)), (ShardIndex(1), Offset(0))),
            updating_ms=0,
        ),
    ).image
    assert shard(image, 3).replicas == shard(image, 1).replicas
    image = ok(
        image,
        BeginReshard(
            now_ms=ACTIVE_MS + 1, name="s1", kind=ReshardKind.UNIFORM_SCALING, target_shard_count=3
        ),
    ).image
    sealed = image.streams["s1"].reshard.sealed  # type: ignore[index, union-attr]
    image = ok(
        image,
        CompleteReshard(
            now_ms=ACTIVE_MS + 1,
            stream_uid=uid,
            end_offsets=tuple((i, Offset(0)) for i in sealed),
            updating_ms=0,
        ),
    ).image
    for s in image.streams["s1"].shards:  # type: ignore[index]
        assert s.replicas
        assert s.epoch >= 1
        if s.state is not ShardState.CLOSED:
            assert s.leader in s.replicas


# --- Properties -----------------------------------------------------------------------------------


@settings(max_examples=examples(60), deadline=None)
@given(
    node_count=st.integers(min_value=1, max_value=7),
    streams=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 3)), min_size=1, max_size=6),
)
def test_placement_keeps_replica_counts_within_one(
    node_count: int, streams: list[tuple[int, int]]
) -> None:
    """Starting from an empty cluster, every CreateStream keeps every ACTIVE node's replica
    count within one of the others', and puts each shard's leader first among its replicas."""
    image = nodes_image(node_count)
    for number, (shard_count, factor) in enumerate(streams):
        factor = min(factor, node_count)
        image = ok(
            image, create_stream(f"s{number}", shard_count=shard_count, replication_factor=factor)
        ).image
    counts = Counter(dict.fromkeys(node_ids(node_count), 0))
    leaders = Counter(dict.fromkeys(node_ids(node_count), 0))
    for meta in image.streams.values():
        for s in meta.shards:
            assert len(set(s.replicas)) == len(s.replicas) == meta.replication_factor
            assert s.leader == s.replicas[0]
            counts.update(s.replicas)
            leaders[s.leader] += 1
    assert max(counts.values()) - min(counts.values()) <= 1
    # Leaders are chosen within each shard's replicas, so leader counts are within one only
    # when replicas and leaders cannot pull apart (every stream at factor 1, or every stream
    # on every node); otherwise the controller's rebalancing evens them out.
    factors = {min(f, node_count) for _, f in streams}
    if factors in ({1}, {node_count}):
        assert max(leaders.values()) - min(leaders.values()) <= 1


@settings(max_examples=examples(30), deadline=None)
@given(
    node_order=st.permutations(["n1", "n2", "n3", "n4", "n5"]),
    shard_count=st.integers(1, 20),
)
def test_placement_is_deterministic(node_order: list[str], shard_count: int) -> None:
    """The same commands give the same placement on every replica, whatever the node
    registration order (dicts differ in insertion order, the result must not)."""
    image = MetadataImage()
    for node_id in node_order:
        image = ok(image, register_node(node_id)).image
    reference = nodes_image(5)
    command = create_stream("s1", shard_count=shard_count, replication_factor=3)
    placed = ok(image, command).image
    expected = ok(reference, command).image
    assert placed.streams["s1"].shards == expected.streams["s1"].shards  # type: ignore[index]
    assert encode_image(ok(reference, command).image) == encode_image(expected)


def test_every_new_command_counts_when_refused() -> None:
    image = nodes_image(1)
    commands: list[Command] = [
        node_state(N2, NodeState.FENCED),
        RemoveNode(now_ms=0, node_id=N2),
        SetShardLeader(
            now_ms=0,
            stream_uid=StreamUid(1),
            shard_index=ShardIndex(0),
            leader=N1,
            epoch=2,
            expected_epoch=1,
            replicas=(N1,),
        ),
    ]
    for command in commands:
        applied = apply(image, command)
        assert applied.error is not None
        assert applied.image.applied_commands == image.applied_commands + 1
        assert applied.image.nodes == image.nodes
