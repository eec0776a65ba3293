"""ControllerCore on virtual time, `choose_leader`, and the Controller shell over a LocalQuorum
with in-memory replicas.

Core tests are calls: heartbeats and an image in, actions out. The convergence tests run the
core against the real state machine, executing each action the way the shell would (with
replicas that are all caught up), until the core has nothing left to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest

from broker.clock import ManualClock, VirtualClock
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.commands import Command
from broker.meta.controller import Controller
from broker.meta.controller_core import (
    Action,
    CompleteReshardAction,
    ControllerCore,
    ControllerSettings,
    EpochChange,
    FenceNode,
    Outcome,
    Promise,
    RejoiningReplica,
    ReplicaStatus,
    ShardRef,
    UnfenceNode,
    choose_leader,
    choose_leader_once_answered,
    is_caught_up,
    statuses_caught_up,
    stranded_by_leaving,
)
from broker.meta.image import MetadataImage, NodeState, ReshardKind, ShardMeta
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.types import NodeId, Offset, ShardIndex, ShardUid, StreamName, StreamUid
from tests.meta.factories import create_stream, node_ids, nodes_image, register_node

N1, N2, N3, N4 = (NodeId(f"n{i}") for i in range(1, 5))
SESSION_MS = 6_000
SETTINGS = ControllerSettings(node_session_timeout_ms=SESSION_MS, pass_interval_ms=100)
WALL_MS = 10_000  # streams created at 0 are ACTIVE by then (CREATING lasts 1 s)


def ok(image: MetadataImage, command: Command) -> MetadataImage:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    return applied.image


def stream_image(node_count: int = 3, *, shard_count: int = 3, factor: int = 3) -> MetadataImage:
    return ok(
        nodes_image(node_count),
        create_stream("s1", shard_count=shard_count, replication_factor=factor),
    )


def shards(image: MetadataImage) -> tuple[ShardMeta, ...]:
    return image.streams["s1"].shards  # type: ignore[index]


def set_state(image: MetadataImage, node_id: NodeId, state: NodeState) -> MetadataImage:
    node = image.nodes[node_id]
    return ok(
        image,
        commands.SetNodeState(
            now_ms=1, node_id=node_id, state=state, expected_incarnation=node.incarnation
        ),
    )


def heartbeat_all(core: ControllerCore, image: MetadataImage, now_ms: int) -> None:
    for node in image.nodes.values():
        core.on_heartbeat(node_id=node.node_id, incarnation=node.incarnation, now_ms=now_ms)


def decide(core: ControllerCore, image: MetadataImage, now_ms: int) -> tuple[Action, ...]:
    return core.decide(image, now_ms=now_ms, wall_ms=WALL_MS)


def promise(log_end: int, last_epoch: int = 1, *, accepted: bool = True) -> Promise:
    return Promise(ok=accepted, last_epoch=last_epoch, log_end=Offset(log_end), promised_epoch=2)


# --- Fencing --------------------------------------------------------------------------------------


def test_a_silent_node_is_fenced_after_the_session_timeout() -> None:
    image = nodes_image(3)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    for t in range(0, 8_000, 1_000):
        for node_id in (N1, N2):
            core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=t)
    assert decide(core, image, SESSION_MS) == ()
    assert decide(core, image, SESSION_MS + 1) == (
        FenceNode(node_id=N3, incarnation=1, silent_ms=SESSION_MS + 1),
    )


PROBE_MS = SETTINGS.probe_after_ms


def test_a_late_node_whose_port_refuses_connections_is_fenced_at_once() -> None:
    image = nodes_image(3)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=PROBE_MS)
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=PROBE_MS)
    assert core.nodes_to_probe(image, now_ms=PROBE_MS) == ()  # nobody is late yet
    assert core.nodes_to_probe(image, now_ms=PROBE_MS + 1) == (N3,)
    core.on_probe(image, N3, refused=True, now_ms=PROBE_MS + 1)
    assert core.nodes_to_probe(image, now_ms=PROBE_MS + 2) == ()  # proof on record
    assert decide(core, image, PROBE_MS + 2) == (
        FenceNode(node_id=N3, incarnation=1, silent_ms=PROBE_MS + 2),
    )
    # Once fenced, its last heartbeat (well within a session) does not unfence it: only a
    # heartbeat after the refusal would.
    fenced = set_state(image, N3, NodeState.FENCED)
    assert decide(core, fenced, PROBE_MS + 3) == ()
    core.on_heartbeat(node_id=N3, incarnation=1, now_ms=PROBE_MS + 4)
    assert decide(core, fenced, PROBE_MS + 5) == (UnfenceNode(node_id=N3, incarnation=1),)


def test_a_late_node_that_accepts_connections_waits_for_its_session_timeout() -> None:
    """A paused process's kernel still accepts connections: no proof, no early fence; the
    node is probed again at most once per probe interval."""
    image = nodes_image(3)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    for t in range(0, SESSION_MS + 1, 100):
        core.on_heartbeat(node_id=N1, incarnation=1, now_ms=t)
        core.on_heartbeat(node_id=N2, incarnation=1, now_ms=t)
    probes = []
    for t in range(PROBE_MS + 1, SESSION_MS + 1, 100):
        for node_id in core.nodes_to_probe(image, now_ms=t):
            probes.append(t)
            core.on_probe(image, node_id, refused=False, now_ms=t)
        assert decide(core, image, t) == ()
    assert probes == list(range(PROBE_MS + 1, SESSION_MS + 1, PROBE_MS))
    assert decide(core, image, SESSION_MS + 1) == (
        FenceNode(node_id=N3, incarnation=1, silent_ms=SESSION_MS + 1),
    )


def test_a_heartbeat_or_a_new_incarnation_voids_a_refusal() -> None:
    image = nodes_image(3)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    core.on_probe(image, N3, refused=True, now_ms=PROBE_MS + 1)
    core.on_heartbeat(node_id=N3, incarnation=1, now_ms=PROBE_MS + 2)  # it was restarting
    assert not any(isinstance(a, FenceNode) for a in decide(core, image, PROBE_MS + 3))
    core.on_probe(image, N2, refused=True, now_ms=PROBE_MS + 4)
    restarted = ok(image, register_node("n2"))  # incarnation 2: the proof was about 1
    assert restarted.nodes[N2].incarnation == 2
    assert not any(
        isinstance(a, FenceNode) and a.node_id == N2 for a in decide(core, restarted, PROBE_MS + 5)
    )


def test_a_new_controller_probes_every_node_it_has_not_heard_yet() -> None:
    """The old quorum leader's node often died with it: a new controller finds out at once
    rather than after a whole session of grace."""
    image = nodes_image(3)
    core = ControllerCore(settings=SETTINGS, now_ms=1_000)
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=1_000)
    assert core.nodes_to_probe(image, now_ms=1_000) == (N2, N3)
    core.on_probe(image, N2, refused=False, now_ms=1_000)
    core.on_probe(image, N3, refused=True, now_ms=1_000)
    assert core.nodes_to_probe(image, now_ms=1_001) == ()  # N2 waits for its next turn
    assert decide(core, image, 1_001) == (FenceNode(node_id=N3, incarnation=1, silent_ms=1),)


def test_probing_can_be_switched_off() -> None:
    image = nodes_image(3)
    core = ControllerCore(settings=dataclasses.replace(SETTINGS, probe_after_ms=0), now_ms=0)
    assert core.nodes_to_probe(image, now_ms=SESSION_MS) == ()


def test_a_new_controller_gives_every_node_a_fresh_session() -> None:
    """Nobody heartbeats a node that was not the controller: without a grace period every
    node would be fenced the moment a new quorum leader took over."""
    image = nodes_image(3)
    core = ControllerCore(settings=SETTINGS, now_ms=1_000_000)
    assert decide(core, image, 1_000_000) == ()
    assert decide(core, image, 1_000_000 + SESSION_MS) == ()
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=1_003_000)
    fenced = decide(core, image, 1_000_000 + SESSION_MS + 1)
    assert {a.node_id for a in fenced if isinstance(a, FenceNode)} == {N2, N3}


def test_a_fenced_node_is_unfenced_only_by_a_heartbeat_of_its_incarnation() -> None:
    image = set_state(ok(nodes_image(2), register_node("n2")), N2, NodeState.FENCED)  # inc. 2
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=0)
    assert decide(core, image, 10) == ()  # the grace period is no evidence of life
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=20)  # a stale process
    assert decide(core, image, 30) == ()
    core.on_heartbeat(node_id=N2, incarnation=2, now_ms=40)
    assert decide(core, image, 50) == (UnfenceNode(node_id=N2, incarnation=2),)
    # A heartbeat older than the session does not count either.
    assert decide(core, image, 40 + SESSION_MS + 1) == (
        FenceNode(node_id=N1, incarnation=1, silent_ms=40 + SESSION_MS + 1),
    )


def test_heartbeats_of_an_older_incarnation_do_not_keep_a_node_alive() -> None:
    image = ok(nodes_image(1), register_node("n1"))  # incarnation 2
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    for t in range(0, 7_000, 500):
        core.on_heartbeat(node_id=N1, incarnation=1, now_ms=t)
    assert decide(core, image, SESSION_MS + 1) == (
        FenceNode(node_id=N1, incarnation=2, silent_ms=SESSION_MS + 1),
    )


def test_a_failed_action_backs_off_and_success_resets() -> None:
    image = nodes_image(1)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    t = SESSION_MS + 1
    (fence,) = decide(core, image, t)
    assert isinstance(fence, FenceNode)
    core.on_outcome(fence, Outcome.FAILED, now_ms=t)
    assert decide(core, image, t + 99) == ()
    assert decide(core, image, t + 100) == (dataclasses.replace(fence, silent_ms=t + 100),)
    core.on_outcome(fence, Outcome.FAILED, now_ms=t + 100)
    assert decide(core, image, t + 299) == ()  # doubled
    assert decide(core, image, t + 300) != ()
    core.on_outcome(fence, Outcome.DONE, now_ms=t + 300)
    assert decide(core, image, t + 301) != ()


# --- choose_leader --------------------------------------------------------------------------------


def test_choose_leader_needs_a_majority_and_takes_the_longest_log() -> None:
    replicas = (N1, N2, N3)
    assert (
        choose_leader({N2: promise(5)}, replicas=replicas, new_replicas=replicas, eligible=replicas)
        is None
    )
    refusals = {N2: promise(5), N3: promise(9, accepted=False)}
    assert (
        choose_leader(refusals, replicas=replicas, new_replicas=replicas, eligible=replicas) is None
    )
    promises = {N2: promise(5), N3: promise(9)}
    assert (
        choose_leader(promises, replicas=replicas, new_replicas=replicas, eligible=replicas) == N3
    )
    # A higher last epoch beats a longer log (the longer one holds a deposed leader's tail).
    promises = {N2: promise(5, last_epoch=3), N3: promise(9, last_epoch=2)}
    assert (
        choose_leader(promises, replicas=replicas, new_replicas=replicas, eligible=replicas) == N2
    )


def test_choose_leader_breaks_ties_by_preference_and_never_takes_a_shorter_log() -> None:
    replicas = (N1, N2, N3)
    tied = {N1: promise(7), N2: promise(7), N3: promise(7)}
    assert (
        choose_leader(tied, replicas=replicas, new_replicas=replicas, eligible=(N3, N1, N2)) == N3
    )
    # The longest log is on a node that may not lead: wait rather than lose records.
    promises = {N1: promise(9), N2: promise(7), N3: promise(7)}
    assert (
        choose_leader(promises, replicas=replicas, new_replicas=replicas, eligible=(N2, N3)) is None
    )


def test_choose_leader_needs_majorities_of_both_sets_in_a_move() -> None:
    old, new = (N1, N2, N3, N4), (N1, N2, N3)
    promises = {N1: promise(7), N4: promise(7)}
    # 2 of 4 old is no majority; with N2, 3 of 4 old and 2 of 3 new.
    assert choose_leader(promises, replicas=old, new_replicas=new, eligible=new) is None
    promises[N2] = promise(5)
    assert choose_leader(promises, replicas=old, new_replicas=new, eligible=new) == N1
    # Dropping N3: N1 and N3 are a majority of the old set, not of the new one (N1, N2).
    removal = {N1: promise(7), N3: promise(7)}
    assert (
        choose_leader(removal, replicas=(N1, N2, N3), new_replicas=(N1, N2), eligible=(N1,)) is None
    )


def test_adding_a_replica_needs_only_the_old_sets_majority() -> None:
    """DESIGN §4: the newcomer hosts nothing to promise about yet (a shard of one replica
    could never grow otherwise)."""
    promises = {N1: promise(7), N2: promise(7)}
    assert (
        choose_leader(
            promises, replicas=(N1, N2, N3), new_replicas=(N1, N2, N3, N4), eligible=(N1,)
        )
        == N1
    )
    assert (
        choose_leader({N1: promise(3)}, replicas=(N1,), new_replicas=(N1, N2), eligible=(N1,)) == N1
    )


def test_is_caught_up() -> None:
    leader = ReplicaStatus(log_end=Offset(10), hw=Offset(8), last_epoch=3)
    assert is_caught_up(leader, ReplicaStatus(log_end=Offset(8), hw=Offset(5), last_epoch=3))
    assert not is_caught_up(leader, ReplicaStatus(log_end=Offset(7), hw=Offset(5), last_epoch=3))
    assert not is_caught_up(leader, ReplicaStatus(log_end=Offset(9), hw=Offset(5), last_epoch=2))


def test_a_replica_is_added_only_once_the_set_holds_the_leaders_log() -> None:
    """Found by the simulator (seed 12 of `run_seed`): a replica added
    while the other replica of a two-replica set still missed records its old set had
    committed (the leader's epoch had not committed yet) let the next leader change choose
    from that replica and the empty newcomer, a majority of the new set, and lose them. An
    add now names the replicas that must hold the leader's log first (`caught_up`), and
    `statuses_caught_up` also wants the leader to have begun its epoch."""
    image = stream_image(4, shard_count=1, factor=3)
    image = set_state(image, N3, NodeState.DRAINING)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    (add,) = decide(core, image, 1)
    assert isinstance(add, EpochChange) and add.reason == "add_replica"
    assert set(add.caught_up) == {N2, N3}
    epoch = add.epoch
    leader = ReplicaStatus(log_end=Offset(10), hw=Offset(8), last_epoch=epoch)
    held = ReplicaStatus(log_end=Offset(9), hw=Offset(8), last_epoch=epoch)
    behind = ReplicaStatus(log_end=Offset(45), hw=Offset(8), last_epoch=epoch - 1)
    assert statuses_caught_up(add, leader, [held, held])
    assert not statuses_caught_up(add, leader, [held, behind])
    assert not statuses_caught_up(add, leader, [held, None])
    # A leader before its epoch's marker: its HW may trail what the old set committed.
    before_marker = ReplicaStatus(log_end=Offset(50), hw=Offset(19), last_epoch=epoch - 1)
    assert not statuses_caught_up(add, before_marker, [behind, behind])
    assert statuses_caught_up(dataclasses.replace(add, caught_up=()), None, [])


def test_a_dead_replica_is_removed_only_once_half_the_new_set_holds_the_leaders_log() -> None:
    """Found by the simulator (seed 49 at commit 98a185c, shard 100): epoch 5's marker at
    offset 3 was committed by {n2, n3} of {n1, n2, n3}; n4 was added (epoch 6: the old set's
    majority prepares an add), its leader crashed, n3 led epoch 7 in {n1, n2, n3, n4}; 5 ms
    later the dead n2 was removed (epoch 8, `caught_up=()`), before n3's epoch-7 marker
    reached n1 or n4; n3 crashed and {n1, n4}, a majority of {n1, n3, n4} (`_majority`),
    chose n1, which never held offset 3. Two one-member changes with nothing committed in
    between: the newest set's majority need not meet the oldest set's commit quorum.

    Here, with the same shape (leader n1, the record committed on n1 and n2 only, n2
    dead): the removal waits until, with the leader, half the new set holds the leader's
    log (a record of its epoch and everything up to its HW)."""
    image = stream_image(4, shard_count=1, factor=3)
    image = set_state(image, N3, NodeState.DRAINING)  # a move: n4 is added first
    absent_ms = 2 * SESSION_MS
    core = ControllerCore(
        settings=dataclasses.replace(SETTINGS, absent_node_replace_after_ms=absent_ms), now_ms=0
    )
    heartbeat_all(core, image, 0)
    (add,) = decide(core, image, 1)
    assert isinstance(add, EpochChange) and add.reason == "add_replica"
    image = execute(image, add)
    (shard,) = shards(image)
    assert shard.replicas == (N1, N2, N3, N4) and shard.leader == N1
    image = set_state(image, N2, NodeState.FENCED)  # n2 dies, stays silent: it goes first
    now_ms = absent_ms + SESSION_MS
    for node_id in (N1, N3, N4):
        core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=now_ms)
    (remove,) = decide(core, image, now_ms)
    assert isinstance(remove, EpochChange) and remove.reason == "remove_replica"
    assert remove.new_replicas == (N1, N3, N4)
    assert set(remove.caught_up) == {N3, N4}
    # The leader has written its epoch's marker (offset 4); n3 and n4 have not received it:
    # n3 holds the log of an older epoch without the committed offset 3, n4 nothing.
    epoch = remove.epoch
    leader = ReplicaStatus(log_end=Offset(5), hw=Offset(4), last_epoch=epoch)
    n3_old = ReplicaStatus(log_end=Offset(3), hw=Offset(3), last_epoch=epoch - 1)
    n4_empty = ReplicaStatus(log_end=Offset(0), hw=Offset(0), last_epoch=0)
    assert not statuses_caught_up(remove, leader, [n3_old, n4_empty])
    # Had the removal gone ahead, then the leader crashed: {n3, n4} is a majority of the new
    # set, and the next epoch's choice would lose offset 3 (choose_leader cannot know).
    assert (
        choose_leader(
            {N3: promise(3, last_epoch=epoch - 1), N4: promise(0, last_epoch=0)},
            replicas=remove.new_replicas,
            new_replicas=remove.new_replicas,
            eligible=(N3, N4),
        )
        == N3
    )
    # Once the live members named hold the marker and the leader's log up to its HW, it goes.
    held = ReplicaStatus(log_end=Offset(5), hw=Offset(4), last_epoch=epoch)
    assert not statuses_caught_up(remove, leader, [held, n4_empty])
    assert statuses_caught_up(remove, leader, [held, held])


# --- Leader changes and replica moves -------------------------------------------------------------


def test_shards_led_by_a_fenced_node_get_a_new_leader() -> None:
    image = set_state(stream_image(), N1, NodeState.FENCED)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    changes = [a for a in decide(core, image, 1) if isinstance(a, EpochChange)]
    led_by_n1 = [s for s in shards(image) if s.leader == N1]
    assert led_by_n1
    assert {c.shard.shard_uid for c in changes} == {s.uid for s in led_by_n1}
    for change in changes:
        assert change.reason == "leader_unavailable"
        assert change.new_replicas == change.replicas
        assert N1 not in change.eligible
        assert change.caught_up == ()


def test_a_draining_leader_hands_over_and_keeps_leading_if_nobody_can() -> None:
    image = set_state(stream_image(), N1, NodeState.DRAINING)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    changes = [a for a in decide(core, image, 1) if isinstance(a, EpochChange)]
    assert {c.reason for c in changes} == {"leader_leaving"}
    assert all(c.eligible[-1] == N1 for c in changes)  # for safety only, listed last
    alone = set_state(stream_image(1, factor=1), N1, NodeState.DRAINING)
    heartbeat_all(core, alone, 2)
    assert decide(core, alone, 3) == ()


def test_a_shutting_down_node_gives_up_its_leaderships() -> None:
    image = stream_image()
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=1, shutting_down=True)
    changes = [a for a in decide(core, image, 2) if isinstance(a, EpochChange)]
    assert changes
    assert {c.leader for c in changes} == {N2}
    assert {c.reason for c in changes} == {"leader_leaving"}


def test_a_node_back_from_a_lost_disk_leads_nothing_until_caught_up_then_gets_an_epoch() -> None:
    """decisions/0002 "Lost disk": the heartbeats of a node that lost its disk list its
    replicas still rejoining. One it leads in the image moves to another replica (it never
    leads what it lacks); a caught-up one gets a new epoch under the same leader, from which on
    its acknowledgements count; a replica still copying is never made leader."""
    image = stream_image()
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    led = [s for s in shards(image) if s.leader == N2]
    other = [s for s in shards(image) if s.leader != N2]
    assert led and other
    rejoining = [
        RejoiningReplica(shard_uid=s.uid, epoch=s.epoch, caught_up=False) for s in shards(image)
    ]
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=1, rejoining=rejoining)
    changes = [a for a in decide(core, image, 2) if isinstance(a, EpochChange)]
    assert {c.shard.shard_uid for c in changes} == {s.uid for s in led}
    assert all(N2 not in c.eligible for c in changes)
    assert {c.reason for c in changes} == {"leader_unavailable"}
    # The others' replicas caught up: a new epoch, the same leader first.
    caught_up = [RejoiningReplica(shard_uid=s.uid, epoch=s.epoch, caught_up=True) for s in other]
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=1, rejoining=caught_up)
    changes = [a for a in decide(core, image, 2) if isinstance(a, EpochChange)]
    assert {c.shard.shard_uid for c in changes} == {s.uid for s in other}
    assert {c.reason for c in changes} == {"rejoined"}
    assert all(c.eligible[0] == c.leader and c.new_replicas == c.replicas for c in changes)
    # A report of an older epoch (sent before the change reached it) asks for nothing.
    stale = [RejoiningReplica(shard_uid=s.uid, epoch=s.epoch - 1, caught_up=True) for s in other]
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=3, rejoining=stale)
    assert not [a for a in decide(core, image, 4) if isinstance(a, EpochChange)]


def test_a_node_short_of_disk_space_gives_up_its_leaderships_and_gets_them_back() -> None:
    """Issue 20: a node below its free-space minimum refuses new records, so the shards it
    leads move to replicas that can take them; once its heartbeats say it has room again it
    may lead again (preferred leaders come back)."""
    image = stream_image()
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=1, disk_full=True)
    changes = [a for a in decide(core, image, 2) if isinstance(a, EpochChange)]
    assert changes
    assert {c.leader for c in changes} == {N2}
    assert {c.reason for c in changes} == {"leader_leaving"}
    assert all(c.eligible[-1] == N2 for c in changes)  # only if nobody else can
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=3, disk_full=False)
    assert core.can_lead(image, N2)


def test_a_leader_fenced_by_a_change_that_never_committed_gets_a_new_epoch() -> None:
    """A Prepare round fenced the leader (its replicas promised epoch + 1), then its commit
    failed and the controller changed: the new controller learns it from the leader's
    heartbeat (it reports the shard fenced at the image's epoch) and runs a change again."""
    image = stream_image()
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    shard = next(s for s in shards(image) if s.leader == N1)
    assert not [a for a in decide(core, image, 1) if isinstance(a, EpochChange)]
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=2, fenced=[(shard.uid, shard.epoch)])
    (change,) = [a for a in decide(core, image, 3) if isinstance(a, EpochChange)]
    assert change.shard.shard_uid == shard.uid
    assert change.epoch == shard.epoch
    assert change.reason == "re_prepare"
    # A report about an older epoch (the change has committed since) asks for nothing.
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=4, fenced=[(shard.uid, shard.epoch - 1)])
    assert not [a for a in decide(core, image, 5) if isinstance(a, EpochChange)]


def test_replicas_move_off_a_draining_node_one_step_at_a_time() -> None:
    image = stream_image(4, shard_count=1, factor=3)
    (shard,) = shards(image)
    assert shard.replicas == (N1, N2, N3)
    image = set_state(image, N3, NodeState.DRAINING)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    (add,) = decide(core, image, 1)
    assert isinstance(add, EpochChange)
    assert add.reason == "add_replica"
    assert add.new_replicas == (N1, N2, N3, N4)
    image = execute(image, add)
    (remove,) = decide(core, image, 2)
    assert isinstance(remove, EpochChange)
    assert remove.reason == "remove_replica"
    assert remove.new_replicas == (N1, N2, N4)
    assert set(remove.caught_up) == {N2, N4}
    image = execute(image, remove)
    assert shards(image)[0].replicas == (N1, N2, N4)
    assert shards(image)[0].epoch == 3
    assert decide(core, image, 3) == ()
    image = ok(image, commands.RemoveNode(now_ms=WALL_MS, node_id=N3))
    assert image.nodes[N3].state is NodeState.REMOVED


def test_a_node_stopping_while_its_shard_is_one_short_waits_for_the_replacement() -> None:
    """s25's statefulset stall: a fenced replica was dropped (a set of two, one short), then
    the other member stopped for good. A leader change needs promises from both of a
    two-replica set, so the survivor could never lead (`controller_leader_not_chosen ...
    re_prepare` every 5 s). `stranded_by_leaving` names such shards; the stopping node waits
    until the controller, which it can still answer, has added the replacement."""
    image = stream_image(4, shard_count=1, factor=3)
    (shard,) = shards(image)
    assert shard.replicas == (N1, N2, N3)
    assert stranded_by_leaving(image, N2, wall_ms=WALL_MS) == ()  # healthy: leave at once
    image = set_state(image, N3, NodeState.FENCED)  # silent past the absent-node bound
    absent_ms = 2 * SESSION_MS
    core = ControllerCore(
        settings=dataclasses.replace(SETTINGS, absent_node_replace_after_ms=absent_ms), now_ms=0
    )
    now_ms = absent_ms + SESSION_MS
    for node_id in (N1, N2, N4):
        core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=now_ms)
    (remove,) = decide(core, image, now_ms)
    assert isinstance(remove, EpochChange) and remove.reason == "remove_replica"
    image = execute(image, remove)
    assert shards(image)[0].replicas == (N1, N2)
    # N2 now gets SIGTERM: leaving would strand the shard, as it did before.
    assert stranded_by_leaving(image, N2, wall_ms=WALL_MS) == ("s1/shardId-000000000000",)
    assert (
        choose_leader({N1: promise(9)}, replicas=(N1, N2), new_replicas=(N1, N2), eligible=(N1,))
        is None
    )
    # So it stays, shutting down, and answers the controller's Prepare for the replacement.
    core.on_heartbeat(node_id=N2, incarnation=1, now_ms=now_ms + 1, shutting_down=True)
    (add,) = [a for a in decide(core, image, now_ms + 2) if isinstance(a, EpochChange)]
    assert add.reason == "add_replica" and add.new_replicas == (N1, N2, N4)
    image = execute(image, add)
    assert stranded_by_leaving(image, N2, wall_ms=WALL_MS) == ()
    # Then it stops for good: the two left promise a majority, and the set is repaired.
    image = set_state(image, N2, NodeState.FENCED)
    (shard,) = shards(image)
    assert (
        choose_leader(
            {N1: promise(9), N4: promise(9)},
            replicas=shard.replicas,
            new_replicas=(N1, N4),
            eligible=(N1, N4),
        )
        == N1
    )
    # A set the controller is not changing is not waited for: nothing would change it.
    two = stream_image(3, shard_count=1, factor=2)
    assert stranded_by_leaving(two, shards(two)[0].replicas[0], wall_ms=WALL_MS) == ()
    one = stream_image(1, shard_count=1, factor=1)
    assert stranded_by_leaving(one, N1, wall_ms=WALL_MS) == ()
    # Nor one it cannot change: no ACTIVE node outside the set to take the replacement.
    three = set_state(stream_image(3, shard_count=1, factor=3), N3, NodeState.FENCED)
    assert stranded_by_leaving(three, N2, wall_ms=WALL_MS) == ()


def test_a_two_replica_set_whose_other_member_stopped_gets_a_leader_from_the_survivor() -> None:
    """The stop-25 and s26 fresh-clone stall, stepped through the real ControllerCore: a
    fenced replica was dropped (a set of two); the replacement's Prepare went out just as the
    other member stopped (a StatefulSet pod SIGTERM'd ~1 s after it joined, before its image
    showed the set, so it did not wait: `stranded=[]`). Only the survivor promised, the
    change failed, and every retry (`re_prepare`, a majority of two) needed the stopped one.

    The survivor holds the current epoch's start batch, so it holds every acknowledged record
    (`choose_leader`'s current-epoch rule): it leads, the stopped node's replica is dropped,
    and the set gets its factor back on the others."""
    image = ok(nodes_image(4), register_node("n5", voter=False))
    image = ok(image, create_stream("s1", shard_count=1, replication_factor=3))
    (shard,) = shards(image)
    assert shard.replicas == (N1, N2, N3)
    n5 = NodeId("n5")
    absent_ms = 2 * SESSION_MS
    core = ControllerCore(
        settings=dataclasses.replace(SETTINGS, absent_node_replace_after_ms=absent_ms), now_ms=0
    )
    alive = {N1, N2, N4, n5}
    now_ms = absent_ms + SESSION_MS

    def heartbeats() -> None:
        for node_id in sorted(alive):
            core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=now_ms)

    def promises(action: EpochChange) -> dict[NodeId, Promise]:
        """Every live replica's promise; each holds its shard's current epoch."""
        (current,) = shards(image)
        return {
            n: promise(100, last_epoch=current.epoch)
            for n in (*action.replicas, *action.new_replicas)
            if n in alive
        }

    def elect(action: EpochChange) -> NodeId | None:
        chosen = choose_leader(
            promises(action),
            replicas=action.replicas,
            new_replicas=action.new_replicas,
            eligible=action.eligible,
        )
        if chosen is None:  # the shell's second try, once every replica answered or failed
            chosen = choose_leader(
                promises(action),
                replicas=action.replicas,
                new_replicas=action.new_replicas,
                eligible=action.eligible,
                epoch=action.epoch,
            )
        return chosen

    # n3 was silent past the absent-node bound: its replica is dropped, a set of two.
    image = set_state(image, N3, NodeState.FENCED)
    heartbeats()
    (remove,) = decide(core, image, now_ms)
    assert isinstance(remove, EpochChange) and remove.reason == "remove_replica"
    image = execute(image, remove)
    (shard,) = shards(image)
    assert shard.replicas == (N1, N2) and shard.epoch == 2
    # The replacement's Prepare goes out as n2 stops: only n1 promises, and the change fails.
    now_ms += 1
    heartbeats()
    (add,) = [a for a in decide(core, image, now_ms) if isinstance(a, EpochChange)]
    assert add.reason == "add_replica"
    alive.discard(N2)
    assert (
        choose_leader(
            promises(add),
            replicas=add.replicas,
            new_replicas=add.new_replicas,
            eligible=add.eligible,
        )
        is None
    )  # a majority of (n1, n2): the old rule, which stalled here forever
    core.on_outcome(add, Outcome.FAILED, now_ms=now_ms)
    # Every retry is now a re_prepare of (n1, n2); n1 alone holds everything committed.
    now_ms += SETTINGS.retry_backoff_ms_min
    heartbeats()
    (retry,) = [a for a in decide(core, image, now_ms) if isinstance(a, EpochChange)]
    assert retry.reason == "re_prepare" and retry.replicas == (N1, N2)
    # Without a record of the current epoch (n1 never got the epoch-2 leader's first batch)
    # nothing proves n1 holds what n2 acknowledged: no choice, waiting is the safe answer.
    assert (
        choose_leader(
            {N1: promise(100, last_epoch=1)},
            replicas=retry.replicas,
            new_replicas=retry.new_replicas,
            eligible=retry.eligible,
            epoch=retry.epoch,
        )
        is None
    )
    # Step the controller until the set is repaired: every change gets a leader.
    for _ in range(50):
        now_ms += SESSION_MS // 2
        heartbeats()
        actions = decide(core, image, now_ms)
        for action in actions:
            if isinstance(action, EpochChange):
                chosen = elect(action)
                assert chosen is not None, action
                image = ok(
                    image,
                    commands.SetShardLeader(
                        now_ms=WALL_MS,
                        stream_uid=action.shard.stream_uid,
                        shard_index=action.shard.shard_index,
                        leader=chosen,
                        epoch=action.epoch + 1,
                        expected_epoch=action.epoch,
                        replicas=action.new_replicas,
                    ),
                )
            else:
                image = execute(image, action)
        (shard,) = shards(image)
        if N2 not in shard.replicas and len(shard.replicas) == 3:
            break
    assert sorted(shard.replicas) == [N1, N4, n5] and shard.leader == N1


def test_choose_leader_from_half_of_an_even_set_only_with_a_record_of_the_current_epoch() -> None:
    """Half of an even set meets every majority of it (the commit quorums), so when its best
    log holds a record of the current epoch it holds every acknowledged record."""
    four = (N1, N2, N3, N4)
    half = {N1: promise(7, last_epoch=5), N2: promise(9, last_epoch=5)}
    assert choose_leader(half, replicas=four, new_replicas=four, eligible=four) is None
    assert choose_leader(half, replicas=four, new_replicas=four, eligible=four, epoch=5) == N2
    # The longest log is the one chosen, never the preferred shorter one.
    assert choose_leader(half, replicas=four, new_replicas=four, eligible=(N1,), epoch=5) is None
    # The best log is of an earlier epoch: a majority is needed, as before.
    older = {N1: promise(7, last_epoch=4), N2: promise(9, last_epoch=4)}
    assert choose_leader(older, replicas=four, new_replicas=four, eligible=four, epoch=5) is None
    # Fewer than half: no choice.
    one = {N1: promise(9, last_epoch=5)}
    assert choose_leader(one, replicas=four, new_replicas=four, eligible=four, epoch=5) is None
    # An odd set still needs its majority (half rounded up is one).
    three = (N1, N2, N3)
    assert choose_leader(one, replicas=three, new_replicas=three, eligible=three, epoch=5) is None
    # A removal still needs the new set's majority: half of the old is not enough alone.
    assert (
        choose_leader(
            {N1: promise(9, last_epoch=5)}, replicas=(N1, N2), new_replicas=(N1, N3), eligible=(N1,)
        )
        is None
    )
    assert (
        choose_leader(
            {N1: promise(9, last_epoch=5)},
            replicas=(N1, N2),
            new_replicas=(N1,),
            eligible=(N1,),
            epoch=5,
        )
        == N1
    )


def test_choose_leader_from_half_of_an_even_set_in_the_shards_first_epoch_without_a_record() -> (
    None
):
    """In the shard's first epoch every acknowledged record is of that epoch and was held by
    a majority of the set it was created with, which any half meets: a half whose best log
    holds no record of it proves nothing was acknowledged, and may choose."""
    two = (N1, N2)
    survivor = {N2: promise(0, last_epoch=0)}
    assert choose_leader(survivor, replicas=two, new_replicas=two, eligible=(N2,)) is None
    assert choose_leader(survivor, replicas=two, new_replicas=two, eligible=(N2,), epoch=1) == N2
    # Beyond the first epoch the set may have changed since records were committed: wait.
    assert choose_leader(survivor, replicas=two, new_replicas=two, eligible=(N2,), epoch=2) is None
    # Growing the set in the same change: the newcomer counts for nothing, the survivor
    # (holding the best log among the promisers) leads.
    grown = (N1, N2, N3)
    both = {N2: promise(0, last_epoch=0), N3: promise(0, last_epoch=0)}
    assert choose_leader(both, replicas=two, new_replicas=grown, eligible=(N2,), epoch=1) == N2
    # A record of the first epoch on the survivor: it leads with it, whatever the epoch rule.
    held = {N2: promise(3, last_epoch=1), N3: promise(0, last_epoch=0)}
    assert choose_leader(held, replicas=two, new_replicas=grown, eligible=(N2,), epoch=1) == N2
    # A replica that lost its disk promises nothing (ok=False): no choice.
    wiped = {N2: promise(0, last_epoch=0, accepted=False)}
    assert choose_leader(wiped, replicas=two, new_replicas=two, eligible=(N2,), epoch=1) is None
    # An odd first-epoch set still needs its majority.
    assert (
        choose_leader(survivor, replicas=grown, new_replicas=grown, eligible=(N2,), epoch=1) is None
    )


def test_choose_leader_takes_a_set_of_twos_current_leader_alone_once_every_replica_answered() -> (
    None
):
    """A set of two whose leader (of epoch 5) has no record of it yet, and whose other member
    does not promise (down, or rejoining after a lost disk: ok=False): every commit of epoch
    5 needed both members, the leader's log durably, and the leader held every earlier one
    when it was chosen, so its promise alone may choose it again (`_pair_leader_alone`).
    Before, no rule applied and the shard never had a leader again (seed 1066)."""
    two = (N1, N2)
    alone = {N1: promise(36, last_epoch=4)}
    rejoining = {N1: promise(36, last_epoch=4), N2: promise(26, last_epoch=2, accepted=False)}
    for promises in (alone, rejoining):
        # Not before every replica answered: the other member's log would count then.
        assert choose_leader(promises, replicas=two, new_replicas=two, eligible=(N1,)) is None
        assert (
            choose_leader(
                promises, replicas=two, new_replicas=two, eligible=(N1,), epoch=5, leader=N1
            )
            == N1
        )
        # The same set, the other member dropped, or a third added: the new set's majority
        # needs no exception (the leader alone is a majority of the set of one; an add needs
        # only the old set).
        for new in (two, (N1,), (N1, N2, N3)):
            assert (
                choose_leader(
                    promises, replicas=two, new_replicas=new, eligible=(N1,), epoch=5, leader=N1
                )
                == N1
            )
    # As the shell and the simulator ask: from the action's epoch and leader.
    change = EpochChange(
        shard=ShardRef(
            stream_name=StreamName("s1"),
            stream_uid=StreamUid(1),
            shard_index=ShardIndex(0),
            shard_uid=ShardUid(7),
        ),
        epoch=5,
        leader=N1,
        replicas=two,
        new_replicas=(N1,),
        eligible=(N1,),
        caught_up=(),
        reason="remove_replica",
    )
    assert choose_leader_once_answered(alone, change) == N1
    assert choose_leader_once_answered(alone, dataclasses.replace(change, leader=N2)) is None


def test_choose_leader_never_takes_a_lone_promiser_that_is_not_a_set_of_twos_current_leader() -> (
    None
):
    """The counter-cases of `_pair_leader_alone`: each one promiser without a majority and
    without a record of the current epoch, where nothing proves it holds every acknowledged
    record (or the rule is not needed), so nobody is chosen."""
    two = (N1, N2)
    behind = {N1: promise(36, last_epoch=4)}
    # Not the current epoch's leader: the other member's commits of epoch 5 were made with
    # the leader's acks, not this one's log (it may have missed them while down).
    follower = {N2: promise(26, last_epoch=4)}
    assert (
        choose_leader(follower, replicas=two, new_replicas=two, eligible=(N2,), epoch=5, leader=N1)
        is None
    )
    # No leader named (the image's shard has none), or no epoch (the first, early try).
    assert choose_leader(behind, replicas=two, new_replicas=two, eligible=(N1,), epoch=5) is None
    assert choose_leader(behind, replicas=two, new_replicas=two, eligible=(N1,), leader=N1) is None
    # A set of three (or four): not a set of two, a majority (or the half rule) is needed.
    three = (N1, N2, N3)
    assert (
        choose_leader(
            behind, replicas=three, new_replicas=three, eligible=three, epoch=5, leader=N1
        )
        is None
    )
    four = (N1, N2, N3, N4)
    assert (
        choose_leader(behind, replicas=four, new_replicas=four, eligible=four, epoch=5, leader=N1)
        is None
    )
    # The leader refused (it lost its disk and has not caught up: ok=False).
    wiped = {N1: promise(0, last_epoch=0, accepted=False)}
    assert (
        choose_leader(wiped, replicas=two, new_replicas=two, eligible=(N1,), epoch=5, leader=N1)
        is None
    )
    # The leader promised but may not lead (not eligible), or leaves the set (the other
    # member, which did not promise, would be the new set's majority).
    assert (
        choose_leader(behind, replicas=two, new_replicas=two, eligible=(N2,), epoch=5, leader=N1)
        is None
    )
    assert (
        choose_leader(behind, replicas=two, new_replicas=(N2,), eligible=(N2,), epoch=5, leader=N1)
        is None
    )
    # Both promised: the majority rule chooses the best log, never the leader's shorter one.
    both = {N1: promise(36, last_epoch=4), N2: promise(40, last_epoch=4)}
    assert (
        choose_leader(both, replicas=two, new_replicas=two, eligible=two, epoch=5, leader=N1) == N2
    )
    assert (
        choose_leader(both, replicas=two, new_replicas=two, eligible=(N1,), epoch=5, leader=N1)
        is None
    )


def test_a_set_of_two_whose_leader_dies_in_its_first_epoch_gets_a_leader_and_its_factor() -> None:
    """A stream created while only two of three nodes were ACTIVE (factor 3 requested) starts
    on two replicas; its leader dies before the other holds a record. The failover chooses
    the survivor from its promise alone (the first-epoch rule) and adds the third node in
    the same epoch, so the new leader commits with the newcomer (the dead node's return is
    not waited for)."""
    image = set_state(nodes_image(3), N3, NodeState.FENCED)
    image = ok(
        image,
        create_stream("s1", shard_count=1, replication_factor=2, requested_replication_factor=3),
    )
    (shard,) = shards(image)
    assert len(shard.replicas) == 2 and shard.epoch == 1
    dead = shard.leader
    assert dead is not None
    (survivor,) = [n for n in shard.replicas if n != dead]
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    now_ms = SESSION_MS + 1
    image = set_state(set_state(image, N3, NodeState.ACTIVE), dead, NodeState.FENCED)
    for node_id in (survivor, N3):
        core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=now_ms)
    (change,) = [a for a in decide(core, image, now_ms) if isinstance(a, EpochChange)]
    assert change.reason == "leader_unavailable" and change.epoch == 1
    assert change.new_replicas == (*shard.replicas, N3)
    empty = {survivor: promise(0, last_epoch=0), N3: promise(0, last_epoch=0)}

    def choose(epoch: int | None) -> NodeId | None:
        return choose_leader(
            empty,
            replicas=change.replicas,
            new_replicas=change.new_replicas,
            eligible=change.eligible,
            epoch=epoch,
        )

    assert choose(None) is None  # no majority of the old set: wait for every answer
    leader = choose(change.epoch)
    assert leader == survivor
    image = ok(
        image,
        commands.SetShardLeader(
            now_ms=WALL_MS,
            stream_uid=change.shard.stream_uid,
            shard_index=change.shard.shard_index,
            leader=leader,
            epoch=change.epoch + 1,
            expected_epoch=change.epoch,
            replicas=change.new_replicas,
        ),
    )
    (shard,) = shards(image)
    assert shard.leader == survivor and shard.epoch == 2 and len(shard.replicas) == 3
    # Grown and past the first epoch: a failover changes the leader only.
    image = set_state(image, survivor, NodeState.FENCED)
    core.on_heartbeat(node_id=N3, incarnation=1, now_ms=now_ms + 1)
    later = [a for a in decide(core, image, now_ms + 1) if isinstance(a, EpochChange)]
    assert [(a.reason, a.new_replicas) for a in later] == [("leader_unavailable", shard.replicas)]


def test_a_first_epoch_failover_waits_a_session_for_a_node_to_grow_onto() -> None:
    """No live node outside the set (the third one starting: registered, its port not yet
    listening, so fenced): the failover waits until the dead leader has been silent for a
    session, then changes the leader only (writes then wait for the dead node, as for any
    set of two that lost one); a node live meanwhile is added in the failover's epoch."""
    image = set_state(nodes_image(3), N3, NodeState.FENCED)
    image = ok(
        image,
        create_stream("s1", shard_count=1, replication_factor=2, requested_replication_factor=3),
    )
    (shard,) = shards(image)
    dead = shard.leader
    assert dead is not None
    (survivor,) = [n for n in shard.replicas if n != dead]
    image = set_state(image, dead, NodeState.FENCED)

    def failover(core: ControllerCore, now_ms: int) -> list[tuple[str, tuple[NodeId, ...]]]:
        return [
            (a.reason, a.new_replicas)
            for a in decide(core, image, now_ms)
            if isinstance(a, EpochChange)
        ]

    core = ControllerCore(settings=SETTINGS, now_ms=0)
    core.on_heartbeat(node_id=dead, incarnation=1, now_ms=1_000)  # its last word
    for now_ms in (1_500, 3_000, 1_000 + SESSION_MS - 1):
        core.on_heartbeat(node_id=survivor, incarnation=1, now_ms=now_ms)
        assert failover(core, now_ms) == []
    now_ms = 1_000 + SESSION_MS
    core.on_heartbeat(node_id=survivor, incarnation=1, now_ms=now_ms)
    assert failover(core, now_ms) == [("leader_unavailable", shard.replicas)]
    # The same, with the third node heard (ACTIVE again) before the session ran out.
    image = set_state(image, N3, NodeState.ACTIVE)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    core.on_heartbeat(node_id=dead, incarnation=1, now_ms=1_000)
    for node_id in (survivor, N3):
        core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=3_000)
    assert failover(core, 3_000) == [("leader_unavailable", (*shard.replicas, N3))]
    # A leader heard but recovering a lost disk is not waited for: it counts for the next
    # epoch's commits once it copies the log (replica.py `_rejoining_in`).
    image = set_state(set_state(image, N3, NodeState.FENCED), dead, NodeState.ACTIVE)
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    rejoining = RejoiningReplica(shard_uid=shard.uid, epoch=shard.epoch, caught_up=False)
    for node_id in (survivor, dead):
        core.on_heartbeat(
            node_id=node_id,
            incarnation=1,
            now_ms=1_000,
            rejoining=(rejoining,) if node_id == dead else (),
        )
    assert failover(core, 1_000) == [("leader_unavailable", shard.replicas)]


def test_reshard_completes_once_every_parent_has_a_live_leader() -> None:
    image = stream_image(3, shard_count=2, factor=3)
    image = ok(
        image,
        commands.BeginReshard(
            now_ms=WALL_MS,
            name="s1",
            kind=ReshardKind.MERGE,
            shard_index=ShardIndex(0),
            adjacent_shard_index=ShardIndex(1),
        ),
    )
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    heartbeat_all(core, image, 0)
    (complete,) = decide(core, image, 1)
    assert isinstance(complete, CompleteReshardAction)
    assert [(p.index, p.leader, p.epoch) for p in complete.parents] == [
        (0, shards(image)[0].leader, 1),
        (1, shards(image)[1].leader, 1),
    ]
    fenced = set_state(image, shards(image)[1].leader or N1, NodeState.FENCED)
    actions = decide(core, fenced, 2)
    assert not any(isinstance(a, CompleteReshardAction) for a in actions)
    assert any(isinstance(a, EpochChange) and a.shard.shard_index == 1 for a in actions)


# --- Convergence ----------------------------------------------------------------------------------


def execute(image: MetadataImage, action: Action) -> MetadataImage:
    """What the shell does, with every replica reachable and caught up."""
    match action:
        case FenceNode() | UnfenceNode():
            state = NodeState.FENCED if isinstance(action, FenceNode) else NodeState.ACTIVE
            command: Command = commands.SetNodeState(
                now_ms=WALL_MS,
                node_id=action.node_id,
                state=state,
                expected_incarnation=action.incarnation,
            )
        case EpochChange():
            reachable = [
                n
                for n in (*action.replicas, *action.new_replicas)
                if image.nodes[n].state is not NodeState.FENCED
            ]
            leader = choose_leader(
                {n: promise(100) for n in reachable},
                replicas=action.replicas,
                new_replicas=action.new_replicas,
                eligible=action.eligible,
            )
            assert leader is not None
            command = commands.SetShardLeader(
                now_ms=WALL_MS,
                stream_uid=action.shard.stream_uid,
                shard_index=action.shard.shard_index,
                leader=leader,
                epoch=action.epoch + 1,
                expected_epoch=action.epoch,
                replicas=action.new_replicas,
            )
        case CompleteReshardAction():
            command = commands.CompleteReshard(
                now_ms=WALL_MS,
                stream_uid=action.stream_uid,
                end_offsets=tuple((p.index, Offset(0)) for p in action.parents),
                updating_ms=0,
            )
    return ok(image, command)


def converge(
    core: ControllerCore, image: MetadataImage, now_ms: int, passes_max: int = 50
) -> MetadataImage:
    for _ in range(passes_max):
        heartbeat_all(core, image, now_ms)
        actions = decide(core, image, now_ms)
        if not actions:
            return image
        for action in actions:
            image = execute(image, action)
        now_ms += 1
    pytest.fail(f"no convergence in {passes_max} passes")


def leader_counts(image: MetadataImage) -> Counter[NodeId]:
    counts: Counter[NodeId] = Counter(dict.fromkeys(image.active_node_ids(), 0))
    counts.update(s.leader for s in shards(image) if s.leader is not None)
    return counts


@pytest.mark.parametrize(
    ("node_count", "shard_count", "factor"), [(3, 7, 3), (5, 12, 3), (4, 9, 2), (6, 20, 3)]
)
def test_rebalancing_evens_out_leaders_and_then_stays_put(
    node_count: int, shard_count: int, factor: int
) -> None:
    image = stream_image(node_count, shard_count=shard_count, factor=factor)
    # Every shard's leadership moved to its last replica (a burst of failovers).
    for shard in shards(image):
        image = ok(
            image,
            commands.SetShardLeader(
                now_ms=WALL_MS,
                stream_uid=image.streams["s1"].uid,  # type: ignore[index]
                shard_index=shard.index,
                leader=shard.replicas[-1],
                epoch=shard.epoch + 1,
                expected_epoch=shard.epoch,
                replicas=shard.replicas,
            ),
        )
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    image = converge(core, image, 1)
    counts = leader_counts(image)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    for shard in shards(image):
        assert shard.leader == shard.replicas[0]
    heartbeat_all(core, image, 10_000)
    assert decide(core, image, 10_000 + 1) == ()


def test_leaders_leave_a_failed_node_and_come_back_after_it_recovers() -> None:
    image = stream_image(3, shard_count=6, factor=3)
    before = {s.uid: s.leader for s in shards(image)}
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    image = converge(core, image, 0)  # nothing to do on a fresh placement
    assert {s.uid: s.leader for s in shards(image)} == before
    for node_id in (N1, N2):
        core.on_heartbeat(node_id=node_id, incarnation=1, now_ms=SESSION_MS)
    now_ms = SESSION_MS + 1
    for action in decide(core, image, now_ms):  # fence n3 only
        image = execute(image, action)
    assert image.nodes[N3].state is NodeState.FENCED
    for action in decide(core, image, now_ms + 1):
        image = execute(image, action)
    assert all(s.leader != N3 for s in shards(image))
    counts = leader_counts(image)
    assert counts[N1] == counts[N2] == 3
    image = converge(core, image, now_ms + 2)  # n3 heartbeats again (converge does that)
    assert image.nodes[N3].state is NodeState.ACTIVE
    assert {s.uid: s.leader for s in shards(image)} == before


# --- The shell ------------------------------------------------------------------------------------


class MemoryReplicas:
    """ReplicaControl in memory: per (node, shard) a log end and epoch; unreachable nodes raise."""

    def __init__(self) -> None:
        self.promised: dict[tuple[NodeId, ShardUid], int] = {}
        self.log_end: dict[tuple[NodeId, ShardUid], int] = {}
        self.down: set[NodeId] = set()  # unreachable: calls fail, connections do not refuse
        self.crashed: set[NodeId] = set()  # no process: connections are refused
        self.sealed: dict[ShardUid, int] = {}
        self.calls: list[tuple[str, NodeId, ShardUid, int]] = []

    def _reach(self, node_id: NodeId) -> None:
        if node_id in self.down:
            raise ShoalError(ErrorCode.UNAVAILABLE, f"{node_id} unreachable")

    async def prepare(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Promise:
        self.calls.append(("prepare", node_id, shard_uid, epoch))
        self._reach(node_id)
        key = (node_id, shard_uid)
        promised = self.promised.get(key, 0)
        if epoch < promised:
            return Promise(ok=False, last_epoch=1, log_end=Offset(0), promised_epoch=promised)
        self.promised[key] = epoch
        return Promise(
            ok=True, last_epoch=1, log_end=Offset(self.log_end.get(key, 0)), promised_epoch=epoch
        )

    async def seal(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Offset | None:
        self.calls.append(("seal", node_id, shard_uid, epoch))
        self._reach(node_id)
        final = self.sealed.get(shard_uid)
        return None if final is None else Offset(final)

    async def replica_status(self, node_id: NodeId, shard_uid: ShardUid) -> ReplicaStatus:
        self._reach(node_id)
        end = Offset(self.log_end.get((node_id, shard_uid), 0))
        return ReplicaStatus(log_end=end, hw=end, last_epoch=1)

    async def refuses_connections(self, node_id: NodeId) -> bool:
        self.calls.append(("probe", node_id, ShardUid(0), 0))
        return node_id in self.crashed


async def started_controller(
    image: MetadataImage,
) -> tuple[Controller, LocalQuorum, MemoryReplicas, ManualClock]:
    quorum = LocalQuorum(image)
    await quorum.start()
    replicas = MemoryReplicas()
    clock = ManualClock(wall_ms=WALL_MS, monotonic_ms=0)
    controller = Controller(
        quorum=quorum, replicas=replicas, clock=clock, settings=SETTINGS, node_id=N1
    )
    return controller, quorum, replicas, clock


async def test_controller_fences_a_dead_leader_and_elects_the_longest_log() -> None:
    image = stream_image(3, shard_count=1, factor=3)
    (shard,) = shards(image)
    assert shard.leader == N1
    controller, quorum, replicas, clock = await started_controller(image)
    assert await controller.run_pass() == 0  # the core starts: everyone gets a session
    replicas.down.add(N1)
    replicas.log_end[(N2, shard.uid)] = 4
    replicas.log_end[(N3, shard.uid)] = 5
    for _ in range(SESSION_MS // 1000):
        clock.advance(ms=1_000)
        assert controller.on_heartbeat(node_id=N2, incarnation=1)
        assert controller.on_heartbeat(node_id=N3, incarnation=1)
    clock.advance(ms=1)
    assert await controller.run_pass() == 1  # fence n1
    assert quorum.image().nodes[N1].state is NodeState.FENCED
    assert await controller.run_pass() == 1  # its shard gets a new leader
    (after,) = shards(quorum.image())
    assert after.leader == N3
    assert after.epoch == 2
    assert {(c[1], c[3]) for c in replicas.calls if c[0] == "prepare"} == {
        (N1, 2),
        (N2, 2),
        (N3, 2),
    }
    assert await controller.run_pass() == 0


async def test_the_running_controller_fences_a_silent_node_on_virtual_time() -> None:
    """`Controller.run` sleeps on its clock: a virtual session passes in milliseconds, and the
    silent node is fenced at the first pass after its session, not before."""
    image = stream_image(3, shard_count=1, factor=3)
    quorum = LocalQuorum(image)
    await quorum.start()
    clock = VirtualClock(wall_ms=WALL_MS, monotonic_ms=0)
    controller = Controller(
        quorum=quorum, replicas=MemoryReplicas(), clock=clock, settings=SETTINGS, node_id=N1
    )
    passes = 0
    real_pass = controller.run_pass

    async def counted_pass() -> int:
        nonlocal passes
        passes += 1
        return await real_pass()

    controller.run_pass = counted_pass  # type: ignore[method-assign]
    running = asyncio.create_task(controller.run())
    try:
        async with asyncio.timeout(10):  # real time; the loop's own schedule is virtual
            for _ in range(SESSION_MS // 1_000):  # n3 is silent
                await clock.run_for(1_000)
                assert controller.on_heartbeat(node_id=N1, incarnation=1)
                assert controller.on_heartbeat(node_id=N2, incarnation=1)
            assert quorum.image().nodes[N3].state is NodeState.ACTIVE  # its session: 6 s
            assert passes == SESSION_MS // SETTINGS.pass_interval_ms + 1  # one at 0, then 100 ms
            await clock.run_for(SETTINGS.pass_interval_ms)
            assert quorum.image().nodes[N3].state is NodeState.FENCED
    finally:
        running.cancel()


async def test_controller_fences_a_crashed_leader_without_waiting_for_its_session() -> None:
    image = stream_image(3, shard_count=1, factor=3)
    (shard,) = shards(image)
    assert shard.leader == N1
    controller, quorum, replicas, clock = await started_controller(image)
    assert await controller.run_pass() == 0
    replicas.down.add(N1)
    replicas.crashed.add(N1)
    replicas.log_end[(N2, shard.uid)] = 5
    replicas.log_end[(N3, shard.uid)] = 5
    clock.advance(ms=PROBE_MS + 1)
    assert controller.on_heartbeat(node_id=N2, incarnation=1)
    assert controller.on_heartbeat(node_id=N3, incarnation=1)
    assert await controller.run_pass() == 1  # probed, refused: fenced
    assert ("probe", N1, ShardUid(0), 0) in replicas.calls
    assert quorum.image().nodes[N1].state is NodeState.FENCED
    assert await controller.run_pass() == 1
    (after,) = shards(quorum.image())
    assert after.leader in (N2, N3)
    assert after.epoch == 2


class SilentReplicas(MemoryReplicas):
    """MemoryReplicas where the nodes in `silent` never answer a Prepare (a paused process)."""

    def __init__(self, silent: set[NodeId]) -> None:
        super().__init__()
        self.silent = silent
        self.cancelled: list[NodeId] = []

    async def prepare(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Promise:
        if node_id not in self.silent:
            return await super().prepare(node_id, shard_uid, epoch)
        self.calls.append(("prepare", node_id, shard_uid, epoch))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(node_id)
            raise
        raise AssertionError("unreachable")


async def test_a_leader_change_does_not_wait_for_a_silent_replica() -> None:
    # n1 (the leader) is fenced but its replica still answers; n2 is paused: its Prepare never
    # returns. n1 and n3 promise, a majority: n3 (eligible, longest log) leads at once.
    image = set_state(stream_image(3, shard_count=1, factor=3), N1, NodeState.FENCED)
    (shard,) = shards(image)
    quorum = LocalQuorum(image)
    await quorum.start()
    replicas = SilentReplicas({N2})
    replicas.log_end[(N1, shard.uid)] = 7
    replicas.log_end[(N3, shard.uid)] = 7
    settings = dataclasses.replace(SETTINGS, replica_rpc_timeout_ms=60_000)
    controller = Controller(
        quorum=quorum,
        replicas=replicas,
        clock=ManualClock(wall_ms=WALL_MS, monotonic_ms=0),
        settings=settings,
        node_id=N1,
    )
    async with asyncio.timeout(5):  # far below the 60 s a Prepare may take
        assert await controller.run_pass() == 1
    (after,) = shards(quorum.image())
    assert after.epoch == 2
    assert after.leader == N3  # n1 is fenced: not eligible
    assert ("prepare", N2, shard.uid, 2) in replicas.calls
    assert replicas.cancelled == [N2]  # the straggler was cancelled, not left running


async def test_a_leader_change_waits_for_a_straggler_when_it_cannot_choose_yet() -> None:
    # n1 unreachable, n3 silent, only n2 promises: no majority in hand, so the round waits for
    # every answer (each bounded by the Prepare deadline) and then fails.
    image = set_state(stream_image(3, shard_count=1, factor=3), N1, NodeState.FENCED)
    quorum = LocalQuorum(image)
    await quorum.start()
    replicas = SilentReplicas({N3})
    replicas.down.add(N1)
    settings = dataclasses.replace(SETTINGS, replica_rpc_timeout_ms=200)
    controller = Controller(
        quorum=quorum,
        replicas=replicas,
        clock=ManualClock(wall_ms=WALL_MS, monotonic_ms=0),
        settings=settings,
        node_id=N1,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await controller.run_pass() == 1
    assert loop.time() - started >= 0.15  # waited for n3's deadline
    assert shards(quorum.image())[0].epoch == 1  # no majority: nothing proposed
    assert replicas.cancelled == [N3]  # by its own deadline


async def test_controller_retries_a_leader_change_without_a_majority() -> None:
    image = set_state(stream_image(3, shard_count=1, factor=3), N1, NodeState.FENCED)
    controller, quorum, replicas, clock = await started_controller(image)
    replicas.down.update({N1, N2})
    assert await controller.run_pass() == 1
    assert shards(quorum.image())[0].epoch == 1  # no majority: nothing proposed
    assert await controller.run_pass() == 0  # backing off
    replicas.down.discard(N2)
    clock.advance(ms=SETTINGS.retry_backoff_ms_min)
    assert await controller.run_pass() == 1
    assert shards(quorum.image())[0].leader in (N2, N3)
    assert shards(quorum.image())[0].epoch == 2


async def test_controller_elects_the_survivor_of_a_two_replica_set_once_the_other_failed() -> None:
    """A set of two whose leader is gone: the survivor's promise is no majority, but once the
    other's Prepare failed the shell asks again with the current epoch, and the survivor
    (its log of that epoch) leads. Before, the shard waited for the dead leader forever."""
    image = set_state(stream_image(3, shard_count=1, factor=2), N1, NodeState.FENCED)
    (shard,) = shards(image)
    assert shard.replicas[0] == N1 and shard.leader == N1 and shard.epoch == 1
    survivor = shard.replicas[1]
    controller, quorum, replicas, _clock = await started_controller(image)
    replicas.down.add(N1)
    replicas.log_end[(survivor, shard.uid)] = 7
    assert await controller.run_pass() == 1
    (after,) = shards(quorum.image())
    assert after.leader == survivor and after.epoch == 2


async def test_controller_elects_a_set_of_twos_leader_again_without_a_record_of_its_epoch() -> None:
    """Seed 1066's shape through the shell: a set of two at epoch 2 whose leader n1 wrote no
    record of it (its log's last epoch is 1), promised a later epoch in a change that failed
    (it reports itself fenced), and whose other member cannot promise (unreachable; in the
    seed, rejoining after a lost disk). Once the other's Prepare failed, the second try
    chooses n1 from its promise alone (`_pair_leader_alone`); before, the shard never had a
    leader again."""
    image = stream_image(3, shard_count=1, factor=2)
    (shard,) = shards(image)
    leader, other = shard.replicas
    image = ok(
        image,
        commands.SetShardLeader(
            now_ms=WALL_MS,
            stream_uid=image.streams["s1"].uid,  # type: ignore[index]
            shard_index=shard.index,
            leader=leader,
            epoch=2,
            expected_epoch=1,
            replicas=shard.replicas,
        ),
    )
    controller, quorum, replicas, _clock = await started_controller(image)
    replicas.down.add(other)
    replicas.log_end[(leader, shard.uid)] = 7
    assert controller.on_heartbeat(node_id=leader, incarnation=1, fenced=[(shard.uid, 2)])
    assert await controller.run_pass() == 1
    (after,) = shards(quorum.image())
    assert after.leader == leader and after.epoch == 3 and after.replicas == shard.replicas
    assert ("prepare", other, shard.uid, 3) in replicas.calls


async def test_a_stalled_controller_does_not_fence_the_nodes_whose_heartbeats_wait_behind_it() -> (
    None
):
    """The controller's own loop stalled past a session (its process starved: load 40 in a
    parallel run fenced four nodes within 0.3 s, each "silent" 2.7 s). The stall is nobody's
    silence: no node is fenced by the pass after it; one that stays silent is fenced a
    session of running time later."""
    image = stream_image(3, shard_count=1, factor=3)
    controller, quorum, _, clock = await started_controller(image)
    for node_id in (N1, N2, N3):
        assert controller.on_heartbeat(node_id=node_id, incarnation=1)
    assert await controller.run_pass() == 0
    clock.advance(ms=SESSION_MS + 500)  # nothing ran meanwhile: not a pass, not a heartbeat
    assert await controller.run_pass() == 0
    assert all(n.state is NodeState.ACTIVE for n in quorum.image().nodes.values())
    for _ in range(SESSION_MS // 1000):  # n3 stays silent while the loop runs
        clock.advance(ms=1_000)
        for node_id in (N1, N2):
            assert controller.on_heartbeat(node_id=node_id, incarnation=1)
        await controller.run_pass()
    clock.advance(ms=1)
    await controller.run_pass()
    assert quorum.image().nodes[N3].state is NodeState.FENCED
    assert quorum.image().nodes[N2].state is NodeState.ACTIVE


def test_a_stall_moves_every_session_on_but_not_past_now() -> None:
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    image = stream_image(3, shard_count=1, factor=3)
    heartbeat_all(core, image, 1_000)
    core.on_stall(stalled_ms=SESSION_MS, now_ms=SESSION_MS + 1_500)
    assert not [a for a in decide(core, image, SESSION_MS + 1_500) if isinstance(a, FenceNode)]
    # Silent for a whole session of running time after the stall: fenced.
    fenced = decide(core, image, 2 * SESSION_MS + 1_001)
    assert {a.node_id for a in fenced if isinstance(a, FenceNode)} == {N1, N2, N3}
    # A heartbeat heard after the stall began is not moved into the future.
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=3 * SESSION_MS)
    core.on_stall(stalled_ms=SESSION_MS, now_ms=3 * SESSION_MS)
    core.on_heartbeat(node_id=N1, incarnation=1, now_ms=3 * SESSION_MS)


async def test_controller_completes_a_reshard_when_the_leaders_have_sealed() -> None:
    image = stream_image(3, shard_count=1, factor=3)
    image = ok(
        image,
        commands.BeginReshard(
            now_ms=WALL_MS,
            name="s1",
            kind=ReshardKind.SPLIT,
            shard_index=ShardIndex(0),
            new_starting_hash_key=2**100,
        ),
    )
    controller, quorum, replicas, clock = await started_controller(image)
    parent = shards(image)[0]
    assert await controller.run_pass() == 1
    assert quorum.image().streams["s1"].reshard is not None  # type: ignore[index]
    replicas.sealed[parent.uid] = 42
    clock.advance(ms=SETTINGS.retry_backoff_ms_min)
    assert await controller.run_pass() == 1
    after = quorum.image()
    assert after.streams["s1"].reshard is None  # type: ignore[index]
    assert shards(after)[0].end_offset == 42
    assert [c for c in replicas.calls if c[0] == "seal"][-1] == (
        "seal",
        parent.leader,
        parent.uid,
        1,
    )


async def test_only_the_quorum_leader_acts() -> None:
    controller, quorum, _, clock = await started_controller(nodes_image(2))
    await quorum.stop()  # LocalQuorum: not started = not the leader
    clock.advance(ms=SESSION_MS * 2)
    assert not controller.on_heartbeat(node_id=N1, incarnation=1)
    assert await controller.run_pass() == 0
    assert not controller.is_active()
    await quorum.start()
    assert await controller.run_pass() == 0  # a new term: a fresh grace period
    assert controller.is_active()
    assert [n for n in node_ids(2) if quorum.image().nodes[n].state is NodeState.FENCED] == []
