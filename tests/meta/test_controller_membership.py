"""ControllerCore and a changing set of nodes: one that joins takes its share of the replicas,
one that is gone for good (a StatefulSet scaled down, a lost host) has its replicas moved
elsewhere and, unless it votes in the metadata quorum, is removed from the metadata.

Method: the core on virtual time against the real state machine, executing each action as the
shell would with every reachable replica caught up (`converge` from test_controller).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from broker.meta.controller_core import (
    ControllerCore,
    EpochChange,
    FenceNode,
    RemoveAbsentNode,
)
from broker.meta.image import MetadataImage, NodeState
from broker.types import NodeId
from tests.meta.factories import register_node
from tests.meta.test_controller import (
    SETTINGS,
    decide,
    execute,
    heartbeat_all,
    ok,
    shards,
    stream_image,
)

N1, N2, N3, N4, N5 = (NodeId(f"n{i}") for i in range(1, 6))
ABSENT_MS = 60_000
MEMBERSHIP = dataclasses.replace(SETTINGS, absent_node_replace_after_ms=ABSENT_MS)


def replica_counts(image: MetadataImage) -> Counter[NodeId]:
    counts: Counter[NodeId] = Counter(dict.fromkeys(image.active_node_ids(), 0))
    counts.update(n for s in shards(image) for n in s.replicas)
    return counts


def run(
    core: ControllerCore,
    image: MetadataImage,
    now_ms: int,
    *,
    alive: set[NodeId] | None = None,
    passes_max: int = 200,
) -> tuple[MetadataImage, list[str]]:
    """Passes until the core has nothing to do; heartbeats only from `alive` (default: all).
    Returns the image and every action's kind or reason, in order."""
    done: list[str] = []
    for _ in range(passes_max):
        for node in image.nodes.values():
            if alive is None or node.node_id in alive:
                core.on_heartbeat(node_id=node.node_id, incarnation=node.incarnation, now_ms=now_ms)
        actions = decide(core, image, now_ms)
        if not actions:
            return image, done
        for action in actions:
            done.append(action.reason if isinstance(action, EpochChange) else type(action).__name__)
            image = execute_any(image, action)
        now_ms += 1
    raise AssertionError(f"no convergence in {passes_max} passes: {done[-10:]}")


def execute_any(image: MetadataImage, action: object) -> MetadataImage:
    from broker.meta import commands

    if isinstance(action, RemoveAbsentNode):
        return ok(image, commands.RemoveNode(now_ms=10_000, node_id=action.node_id))
    return execute(image, action)  # type: ignore[arg-type]


def test_a_node_that_joins_takes_its_share_of_the_replicas() -> None:
    image = stream_image(3, shard_count=8, factor=3)
    assert replica_counts(image) == {N1: 8, N2: 8, N3: 8}
    image = ok(image, register_node("n4", voter=False))
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    image, done = run(core, image, 1)
    counts = replica_counts(image)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert counts[N4] == 6  # 24 replicas over 4 nodes
    assert all(len(s.replicas) == 3 for s in shards(image))
    # Each move is one replica added, then the surplus one dropped: one node per epoch.
    assert done.count("balance_replicas") == done.count("remove_surplus") == 6
    heartbeat_all(core, image, 50_000)
    assert decide(core, image, 50_001) == ()


def test_replica_moves_in_flight_are_bounded() -> None:
    image = ok(stream_image(3, shard_count=8, factor=3), register_node("n4", voter=False))
    core = ControllerCore(settings=dataclasses.replace(SETTINGS, replica_moves_max=1), now_ms=0)
    heartbeat_all(core, image, 1)
    (add,) = (a for a in decide(core, image, 1) if isinstance(a, EpochChange))
    assert add.reason == "balance_replicas"
    image = execute(image, add)
    heartbeat_all(core, image, 2)
    actions = [a for a in decide(core, image, 2) if isinstance(a, EpochChange)]
    # The move in flight completes before another starts.
    assert [a.reason for a in actions] == ["remove_surplus"]
    assert len({n for s in shards(image) for n in s.replicas if len(s.replicas) > 3}) <= 4


def test_no_replica_balancing_when_switched_off() -> None:
    image = ok(stream_image(3, shard_count=8, factor=3), register_node("n4", voter=False))
    core = ControllerCore(settings=dataclasses.replace(SETTINGS, replica_moves_max=0), now_ms=0)
    image, done = run(core, image, 1)
    assert done == [] and replica_counts(image)[N4] == 0


def test_a_node_gone_for_good_is_replaced_then_removed() -> None:
    """A non-voting node stops heartbeating: fenced after its session, then, once absent for
    `absent_node_replace_after_ms`, its replicas move to the others and it is removed."""
    image = stream_image(3, shard_count=4, factor=3)
    image = ok(image, register_node("n4", voter=False))
    core = ControllerCore(settings=MEMBERSHIP, now_ms=0)
    image, _ = run(core, image, 1)
    assert replica_counts(image)[N4] == 3  # balanced onto it first
    survivors = {N1, N2, N3}
    image, done = run(core, image, 10_000, alive=survivors)
    assert done[0] == "FenceNode"
    assert set(done[1:]) <= {"leader_unavailable"}  # the shards it led fail over
    assert image.nodes[N4].state is NodeState.FENCED
    # Within the absence window no replica moves: it may be a restart.
    image, done = run(core, image, ABSENT_MS - 1, alive=survivors)
    assert done == []
    image, done = run(core, image, ABSENT_MS + 2_000, alive=survivors)
    assert "add_replica" in done and "remove_replica" in done
    assert "RemoveAbsentNode" in done
    assert image.nodes[N4].state is NodeState.REMOVED
    assert all(set(s.replicas) == survivors for s in shards(image))


def test_an_absent_voter_loses_its_replicas_but_stays_in_the_metadata() -> None:
    """A metadata voter is one of the StatefulSet's first ordinals: it comes back (or an
    operator replaces it), so it is never removed by absence; its shards still get their
    replication factor back on the others meanwhile."""
    image = stream_image(4, shard_count=4, factor=3)
    core = ControllerCore(settings=MEMBERSHIP, now_ms=0)
    image, _ = run(core, image, 1)
    holding = {s.uid for s in shards(image) if N4 in s.replicas}
    assert holding
    alive = {N1, N2, N3}
    image, _ = run(core, image, 10_000, alive=alive)
    image, done = run(core, image, ABSENT_MS + 2_000, alive=alive)
    assert "RemoveAbsentNode" not in done
    assert image.nodes[N4].state is NodeState.FENCED
    assert all(N4 not in s.replicas and len(s.replicas) == 3 for s in shards(image))


def test_a_node_back_within_the_window_keeps_its_replicas() -> None:
    image = ok(stream_image(3, shard_count=4, factor=3), register_node("n4", voter=False))
    core = ControllerCore(settings=MEMBERSHIP, now_ms=0)
    image, _ = run(core, image, 1)
    before = {s.uid: set(s.replicas) for s in shards(image)}
    image, done = run(core, image, 10_000, alive={N1, N2, N3})
    assert done[0] == "FenceNode"
    image, done = run(core, image, 20_000)  # it heartbeats again: unfenced, nothing moves
    assert done[0] == "UnfenceNode"
    assert not {"add_replica", "remove_replica", "balance_replicas"} & set(done)
    assert {s.uid: set(s.replicas) for s in shards(image)} == before


def test_fencing_still_comes_first() -> None:
    image = stream_image(3, shard_count=1, factor=3)
    core = ControllerCore(settings=MEMBERSHIP, now_ms=0)
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=7_000)
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=7_000)
    actions = decide(core, image, 7_000)
    assert actions[0] == FenceNode(node_id=N3, incarnation=1, silent_ms=7_000)


def test_a_node_registering_late_gets_a_session_from_its_registration() -> None:
    """Registered long after the controller started and not heard yet (its first heartbeat
    is on its way): neither fenced nor taken for gone."""
    image = stream_image(3, shard_count=2, factor=3)
    core = ControllerCore(settings=MEMBERSHIP, now_ms=0)
    image, _ = run(core, image, 1)
    late = ABSENT_MS * 2
    heartbeat_all(core, image, late)
    image = ok(image, register_node("n4", voter=False))
    assert not [a for a in decide(core, image, late) if not isinstance(a, EpochChange)]
    heartbeat_all(core, image, late + 500)
    silent = {N1, N2, N3}
    for now in range(late + 500, late + SETTINGS.node_session_timeout_ms, 1_000):
        for node_id in silent:
            core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=now)
        assert not [a for a in decide(core, image, now) if not isinstance(a, EpochChange)]
