"""A stream created while fewer nodes than its replication factor were ACTIVE keeps the factor it
asked for, and the controller grows its replica sets to it as nodes join (one replica per
epoch, each add only once the current replicas hold the leader's log); a node removed as
absent is marked so (format `REQUESTED_FACTOR_LEVEL`), so that one alive after all registers
again. ControllerCore on virtual time over the real state machine."""

from __future__ import annotations

import dataclasses
import json

import pytest

from broker.errors import ErrorCode
from broker.meta import commands
from broker.meta.commands import Command, required_format
from broker.meta.controller_core import (
    ControllerCore,
    ControllerSettings,
    EpochChange,
    RemoveAbsentNode,
    ReplicaStatus,
    statuses_caught_up,
)
from broker.meta.image import MetadataImage, NodeState, ShardMeta, StreamMeta
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.metadata_format import REQUESTED_FACTOR_LEVEL, image_version
from broker.meta.state_machine import apply
from broker.types import NodeId, Offset
from tests.meta.factories import create_stream, nodes_image, register_node

N1, N2, N3, N4 = (NodeId(f"n{i}") for i in range(1, 5))
SETTINGS = ControllerSettings(node_session_timeout_ms=6_000, pass_interval_ms=100)
WALL_MS = 10_000


def ok(image: MetadataImage, command: Command) -> MetadataImage:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    return applied.image


def stream(image: MetadataImage) -> StreamMeta:
    meta = image.streams["s1"]  # type: ignore[index]
    assert isinstance(meta, StreamMeta)
    return meta


def shards(image: MetadataImage) -> tuple[ShardMeta, ...]:
    return stream(image).shards


def created_on_one_node(shard_count: int = 2) -> MetadataImage:
    """What CreateStream gives a StatefulSet's first pod: one replica placed, three asked."""
    return ok(
        nodes_image(1),
        create_stream(
            "s1",
            shard_count=shard_count,
            replication_factor=1,
            requested_replication_factor=3,
        ),
    )


def heard(core: ControllerCore, image: MetadataImage, *node_ids: NodeId, now_ms: int) -> None:
    for node_id in node_ids:
        incarnation = image.nodes[node_id].incarnation
        core.on_heartbeat(node_id=node_id, incarnation=incarnation, now_ms=now_ms)


def changes(core: ControllerCore, image: MetadataImage, now_ms: int) -> list[EpochChange]:
    return [
        a for a in core.decide(image, now_ms=now_ms, wall_ms=WALL_MS) if isinstance(a, EpochChange)
    ]


def applied_add(image: MetadataImage, change: EpochChange) -> MetadataImage:
    """The shell's result of an add: the same leader, the new set, the next epoch."""
    assert change.leader is not None
    return ok(
        image,
        commands.SetShardLeader(
            now_ms=WALL_MS,
            stream_uid=change.shard.stream_uid,
            shard_index=change.shard.shard_index,
            leader=change.leader,
            epoch=change.epoch + 1,
            expected_epoch=change.epoch,
            replicas=change.new_replicas,
        ),
    )


def test_a_stream_created_on_fewer_nodes_keeps_the_factor_it_asked_for() -> None:
    image = created_on_one_node()
    assert stream(image).replication_factor == 3
    assert all(shard.replicas == (N1,) for shard in shards(image))
    # The factor asked for must be above what is placed, and a factor a node accepts.
    for requested in (1, 8):
        bad = create_stream("s2", replication_factor=1, requested_replication_factor=requested)
        applied = apply(nodes_image(1), bad)
        assert applied.error is not None and applied.error.code is ErrorCode.INVALID_ARGUMENT
    # Placement still needs the nodes it places on.
    applied = apply(nodes_image(1), create_stream("s2", replication_factor=2))
    assert applied.error is not None and applied.error.code is ErrorCode.LIMIT_EXCEEDED


def test_the_controller_grows_each_replica_set_to_the_factor_one_replica_at_a_time() -> None:
    """The StatefulSet start: the stream was created on the first pod; two more join. Each
    shard gets one replica per epoch, on a node this controller has heard, and the second
    add names the first newcomer among the replicas that must hold the leader's log."""
    image = created_on_one_node()
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heard(core, image, N1, now_ms=0)
    assert changes(core, image, 1) == []  # nobody to grow onto: the set stays as it is
    image = ok(ok(image, register_node("n2")), register_node("n3"))
    heard(core, image, N1, now_ms=2)
    assert changes(core, image, 3) == []  # registered, never heard: no replica for them yet
    heard(core, image, N1, N2, N3, now_ms=4)
    first = changes(core, image, 5)
    assert [c.reason for c in first] == ["add_replica", "add_replica"]
    # One replica in per epoch, spread over the newcomers; the leader alone holds its log.
    assert {c.new_replicas for c in first} == {(N1, N2), (N1, N3)}
    assert all(c.caught_up == () and c.eligible == (N1,) for c in first)
    for change in first:
        image = applied_add(image, change)
    heard(core, image, N1, N2, N3, now_ms=6)
    second = changes(core, image, 7)
    assert [c.reason for c in second] == ["add_replica", "add_replica"]
    for change in second:
        newcomer = change.replicas[1]
        assert set(change.new_replicas) == {N1, N2, N3}
        # The first newcomer must hold the leader's log before the third joins (the
        # single-server change: every majority of the new set then holds every record).
        assert change.caught_up == (newcomer,)
        leader = ReplicaStatus(log_end=Offset(40), hw=Offset(40), last_epoch=change.epoch)
        behind = ReplicaStatus(log_end=Offset(12), hw=Offset(12), last_epoch=change.epoch - 1)
        held = ReplicaStatus(log_end=Offset(40), hw=Offset(40), last_epoch=change.epoch)
        assert not statuses_caught_up(change, leader, [behind])
        assert statuses_caught_up(change, leader, [held])
        image = applied_add(image, change)
    assert all(len(shard.replicas) == 3 for shard in shards(image))
    heard(core, image, N1, N2, N3, now_ms=8)
    # At the factor: no more replicas (leaderships then even out, as after any join).
    assert all(c.reason == "balance" for c in changes(core, image, 9))


def test_a_set_grows_only_onto_nodes_heard_lately_and_never_past_the_factor() -> None:
    image = created_on_one_node(shard_count=1)
    for node_id in ("n2", "n3", "n4"):
        image = ok(image, register_node(node_id))
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heard(core, image, N1, N2, N3, N4, now_ms=0)
    # n2 falls silent: past half a session it takes no new replica.
    heard(core, image, N1, N3, N4, now_ms=4_000)
    for _ in range(2):
        (change,) = changes(core, image, 4_001)
        assert N2 not in change.new_replicas
        image = applied_add(image, change)
    assert len(shards(image)[0].replicas) == 3
    heard(core, image, N1, N2, N3, N4, now_ms=4_002)
    assert all(c.reason != "add_replica" for c in changes(core, image, 4_003))


def test_the_requested_factor_and_an_absent_removal_need_the_new_format() -> None:
    placed_only = create_stream("s1", replication_factor=1)
    assert required_format(placed_only) < REQUESTED_FACTOR_LEVEL
    asked = dataclasses.replace(placed_only, requested_replication_factor=3)
    assert required_format(asked) == REQUESTED_FACTOR_LEVEL
    operator = commands.RemoveNode(now_ms=0, node_id=N1)
    assert required_format(operator) < REQUESTED_FACTOR_LEVEL
    assert required_format(dataclasses.replace(operator, absent=True)) == REQUESTED_FACTOR_LEVEL
    # An image of a lower format cannot carry a node removed as absent.
    image = ok(nodes_image(2), commands.RemoveNode(now_ms=0, node_id=N2, absent=True))
    assert image.nodes[N2].state is NodeState.REMOVED and image.nodes[N2].removed_absent
    assert decode_image(encode_image(image)) == image
    assert json.loads(encode_image(image))["v"] == image_version(REQUESTED_FACTOR_LEVEL)
    lower = dataclasses.replace(image, metadata_format=REQUESTED_FACTOR_LEVEL - 1)
    with pytest.raises(ValueError, match=f"nodes.{N2}.removed_absent"):
        encode_image(lower)


def test_an_absent_removal_is_marked_and_a_new_registration_clears_it() -> None:
    """The node side (`Node._register_again_if_removed_absent`) registers again only when its
    own incarnation was removed as absent: an operator's decommission stays final."""
    image = nodes_image(2)
    decommissioned = ok(image, commands.RemoveNode(now_ms=0, node_id=N2))
    assert not decommissioned.nodes[N2].removed_absent
    removed = ok(image, commands.RemoveNode(now_ms=0, node_id=N2, absent=True))
    assert removed.nodes[N2].removed_absent
    again = ok(removed, register_node("n2"))
    node = again.nodes[N2]
    assert node.state is NodeState.ACTIVE and not node.removed_absent
    assert node.incarnation == image.nodes[N2].incarnation + 1


def test_the_controller_removes_an_absent_node_it_can() -> None:
    """RemoveAbsentNode (which the shell proposes with `absent`) for a FENCED non-voter
    silent past the absence that holds nothing."""
    settings = dataclasses.replace(SETTINGS, absent_node_replace_after_ms=10_000)
    image = ok(nodes_image(1), register_node("n2", voter=False))
    image = ok(
        image,
        commands.SetNodeState(now_ms=0, node_id=N2, state=NodeState.FENCED, expected_incarnation=1),
    )
    core = ControllerCore(settings=settings, now_ms=0)
    heard(core, image, N1, now_ms=20_000)
    actions = core.decide(image, now_ms=20_000, wall_ms=WALL_MS)
    assert RemoveAbsentNode(node_id=N2, silent_ms=20_000) in actions
