"""When the controller decides (issue 6): `ControllerCore.needs_decision` on virtual time, and
the shell that skips the pass over every shard while nothing changed.

Goal: skipping never hides a decision. Method: a seeded random run (heartbeats, silences,
restarts, shutdowns, probes, outcomes, image changes, time passing) checking at every step
that when `needs_decision` says no, a full `decide` (on a copy of the core) returns nothing;
then scenario tests for what wakes it; then the shell over a LocalQuorum, counting decides.
"""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from broker.clock import ManualClock
from broker.meta import commands
from broker.meta.commands import Command
from broker.meta.controller import Controller
from broker.meta.controller_core import (
    Action,
    ControllerCore,
    ControllerSettings,
    FenceNode,
    Outcome,
    Promise,
    ReplicaStatus,
    UnfenceNode,
)
from broker.meta.image import MetadataImage, NodeState
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.types import NodeId, Offset, ShardUid
from tests.meta.factories import create_stream, node_ids, nodes_image, register_node

SESSION_MS = 2_000
SETTINGS = ControllerSettings(
    node_session_timeout_ms=SESSION_MS,
    pass_interval_ms=100,
    probe_after_ms=500,
    full_pass_interval_ms=3_000,
)
WALL_MS = 10_000  # streams created at 0 are ACTIVE by then
N1, N2, N3, N4 = node_ids(4)


def _applied(image: MetadataImage, command: Command) -> MetadataImage:
    applied = apply(image, command)
    return image if applied.error is not None else applied.image


def _image() -> MetadataImage:
    image = nodes_image(4)
    return _applied(image, create_stream("s1", shard_count=6, replication_factor=3))


def _set_state(image: MetadataImage, node_id: NodeId, state: NodeState) -> MetadataImage:
    node = image.nodes[node_id]
    return _applied(
        image,
        commands.SetNodeState(
            now_ms=1, node_id=node_id, state=state, expected_incarnation=node.incarnation
        ),
    )


def _nothing_hidden(core: ControllerCore, image: MetadataImage, now_ms: int) -> bool:
    return copy.deepcopy(core).decide(image, now_ms=now_ms, wall_ms=WALL_MS) == ()


@pytest.mark.parametrize("seed", range(40))
def test_a_skipped_decision_would_have_decided_nothing(seed: int) -> None:
    rng = random.Random(seed)
    image = _image()
    now_ms = 1_000
    core = ControllerCore(settings=SETTINGS, now_ms=now_ms)
    silent: set[NodeId] = set()
    shutting_down: set[NodeId] = set()
    skipped = decided = 0
    for _ in range(300):
        now_ms += rng.choice((1, 50, 100, 250, 700, 1_500))
        roll = rng.random()
        node_id = rng.choice(sorted(image.nodes))
        if roll < 0.08:
            silent ^= {node_id}
        elif roll < 0.12:
            shutting_down ^= {node_id}
        elif roll < 0.16:
            image = _applied(image, register_node(node_id, now_ms=now_ms))  # a restart
        elif roll < 0.24:
            state = rng.choice((NodeState.ACTIVE, NodeState.DRAINING, NodeState.FENCED))
            image = _set_state(image, node_id, state)  # another controller's doing
        elif roll < 0.28:
            core.on_probe(image, node_id, refused=rng.random() < 0.5, now_ms=now_ms)
        for heard in sorted(image.nodes):
            if heard not in silent and rng.random() < 0.7:
                core.on_heartbeat(
                    node_id=heard,
                    incarnation=image.nodes[heard].incarnation,
                    now_ms=now_ms,
                    shutting_down=heard in shutting_down,
                )
        if not core.needs_decision(image, now_ms=now_ms):
            skipped += 1
            assert _nothing_hidden(core, image, now_ms), (seed, now_ms)
            continue
        decided += 1
        for action in core.decide(image, now_ms=now_ms, wall_ms=WALL_MS):
            outcome = rng.choice((Outcome.DONE, Outcome.FAILED, Outcome.NOT_READY))
            if outcome == Outcome.DONE and isinstance(action, FenceNode | UnfenceNode):
                state = NodeState.FENCED if isinstance(action, FenceNode) else NodeState.ACTIVE
                image = _set_state(image, action.node_id, state)
            core.on_outcome(action, outcome, now_ms=now_ms)
    assert skipped > 0
    assert decided > 0


def _stable_image() -> MetadataImage:
    """Four ACTIVE nodes and a stream whose shards have their leaders (placed at creation)."""
    return _image()


def _quiet_core(image: MetadataImage, now_ms: int) -> ControllerCore:
    """A core that heard everyone at `now_ms` and decided nothing on `image`."""
    core = ControllerCore(settings=SETTINGS, now_ms=now_ms)
    heartbeats(core, image, now_ms)
    assert core.needs_decision(image, now_ms=now_ms)  # never decided yet
    assert core.decide(image, now_ms=now_ms, wall_ms=WALL_MS) == ()
    assert not core.needs_decision(image, now_ms=now_ms)
    return core


def heartbeats(
    core: ControllerCore, image: MetadataImage, now_ms: int, *, but: NodeId | None = None
) -> None:
    for node in image.nodes.values():
        if node.node_id != but:
            core.on_heartbeat(node_id=node.node_id, incarnation=node.incarnation, now_ms=now_ms)


def test_routine_heartbeats_do_not_wake_it_but_a_session_running_out_does() -> None:
    image = _stable_image()
    core = _quiet_core(image, 1_000)
    for now_ms in range(1_100, 1_000 + SESSION_MS + 1, 100):
        heartbeats(core, image, now_ms, but=N4)  # N4 falls silent
        assert not core.needs_decision(image, now_ms=now_ms)
    assert core.needs_decision(image, now_ms=1_000 + SESSION_MS + 1)
    fence = core.decide(image, now_ms=1_000 + SESSION_MS + 1, wall_ms=WALL_MS)
    assert fence == (FenceNode(node_id=N4, incarnation=1, silent_ms=SESSION_MS + 1),)


def test_the_full_pass_comes_regardless() -> None:
    image = _stable_image()
    settings = dataclasses.replace(SETTINGS, node_session_timeout_ms=10_000)
    core = ControllerCore(settings=settings, now_ms=1_000)
    heartbeats(core, image, 1_000)
    assert core.decide(image, now_ms=1_000, wall_ms=WALL_MS) == ()
    later = 1_000 + settings.full_pass_interval_ms
    for now_ms in (*range(1_500, later, 500), later - 1):
        heartbeats(core, image, now_ms)
        assert not core.needs_decision(image, now_ms=now_ms)
    assert core.needs_decision(image, now_ms=later)
    assert core.decide(image, now_ms=later, wall_ms=WALL_MS) == ()
    assert not core.needs_decision(image, now_ms=later)


def test_a_new_image_a_refused_probe_or_an_outcome_wakes_it() -> None:
    image = _stable_image()
    core = _quiet_core(image, 1_000)
    assert core.needs_decision(_set_state(image, N4, NodeState.DRAINING), now_ms=1_000)
    core.on_probe(image, N2, refused=False, now_ms=1_000)
    assert not core.needs_decision(image, now_ms=1_000)
    core.on_probe(image, N2, refused=True, now_ms=1_000)
    assert core.needs_decision(image, now_ms=1_000)
    (fence,) = core.decide(image, now_ms=1_000, wall_ms=WALL_MS)
    assert fence == FenceNode(node_id=N2, incarnation=1, silent_ms=0)
    assert core.needs_decision(image, now_ms=1_000)  # it acted: the next step comes next
    core.on_outcome(fence, Outcome.FAILED, now_ms=1_000)
    assert core.decide(image, now_ms=1_000, wall_ms=WALL_MS) == ()  # backing off
    assert not core.needs_decision(image, now_ms=1_001)
    assert core.needs_decision(image, now_ms=1_000 + SETTINGS.retry_backoff_ms_min)


@pytest.mark.parametrize("change", ["restart", "shutting_down", "heard_after_refusal"])
def test_a_heartbeat_that_can_change_a_decision_wakes_it(change: str) -> None:
    image = _stable_image()
    core = _quiet_core(image, 1_000)
    if change == "heard_after_refusal":
        core.on_probe(image, N3, refused=True, now_ms=1_000)
        core.decide(image, now_ms=1_000, wall_ms=WALL_MS)
        core.on_outcome(
            FenceNode(node_id=N3, incarnation=1, silent_ms=0), Outcome.FAILED, now_ms=1_000
        )
        assert core.decide(image, now_ms=1_000, wall_ms=WALL_MS) == ()
    assert not core.needs_decision(image, now_ms=1_050)
    core.on_heartbeat(
        node_id=N3,
        incarnation=2 if change == "restart" else 1,
        now_ms=1_050,
        shutting_down=change == "shutting_down",
    )
    assert core.needs_decision(image, now_ms=1_050)


def test_a_fenced_node_heard_again_after_its_silence_is_unfenced() -> None:
    image = _stable_image()
    core = _quiet_core(image, 1_000)
    now_ms = 1_000 + SESSION_MS + 1
    heartbeats(core, image, now_ms, but=N4)
    (fence,) = core.decide(image, now_ms=now_ms, wall_ms=WALL_MS)
    assert isinstance(fence, FenceNode)
    image = _set_state(image, N4, NodeState.FENCED)
    core.on_outcome(fence, Outcome.DONE, now_ms=now_ms)
    moves = core.decide(image, now_ms=now_ms, wall_ms=WALL_MS)  # N4's leaderships
    for move in moves:
        core.on_outcome(move, Outcome.FAILED, now_ms=now_ms)
    later = now_ms + SETTINGS.retry_backoff_ms_min - 1
    heartbeats(core, image, later, but=N4)
    assert core.decide(image, now_ms=later, wall_ms=WALL_MS) == ()
    assert not core.needs_decision(image, now_ms=later)
    core.on_heartbeat(node_id=N4, incarnation=1, now_ms=later)  # alive again, after a silence
    assert core.needs_decision(image, now_ms=later)
    assert core.decide(image, now_ms=later, wall_ms=WALL_MS) == (
        UnfenceNode(node_id=N4, incarnation=1),
    )


# --- The shell ------------------------------------------------------------------------------------


class CaughtUpReplicas:
    """Every replica promises and is caught up; a crashed node's port refuses connections."""

    def __init__(self) -> None:
        self.refusing: set[NodeId] = set()

    async def prepare(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Promise:
        return Promise(ok=True, last_epoch=1, log_end=Offset(0), promised_epoch=epoch)

    async def seal(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Offset | None:
        return Offset(0)

    async def replica_status(self, node_id: NodeId, shard_uid: ShardUid) -> ReplicaStatus:
        return ReplicaStatus(log_end=Offset(0), hw=Offset(0), last_epoch=1)

    async def refuses_connections(self, node_id: NodeId) -> bool:
        return node_id in self.refusing


async def test_the_shell_decides_only_when_something_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = dataclasses.replace(SETTINGS, node_session_timeout_ms=10_000)
    quorum = LocalQuorum(_stable_image())
    await quorum.start()
    clock = ManualClock(wall_ms=WALL_MS, monotonic_ms=0)
    replicas = CaughtUpReplicas()
    controller = Controller(
        quorum=quorum,
        replicas=replicas,
        clock=clock,
        settings=settings,
        node_id=N1,
    )
    decides = 0
    real_decide = ControllerCore.decide

    def counting(
        self: ControllerCore, image: MetadataImage, *, now_ms: int, wall_ms: int
    ) -> tuple[Action, ...]:
        nonlocal decides
        decides += 1
        return real_decide(self, image, now_ms=now_ms, wall_ms=wall_ms)

    monkeypatch.setattr(ControllerCore, "decide", counting)

    def heartbeats() -> None:
        for node_id in (N1, N2, N3, N4):
            if node_id not in replicas.refusing:
                assert controller.on_heartbeat(node_id=node_id, incarnation=1)

    heartbeats()  # the core of this term starts, and hears everyone
    assert await controller.run_pass() == 0  # the first pass of a term decides
    assert decides == 1
    for _ in range(20):  # 2 s of an idle cluster: no pass over the shards
        clock.advance(ms=100)
        heartbeats()
        assert await controller.run_pass() == 0
    assert decides == 1
    clock.advance(ms=settings.full_pass_interval_ms - 2_000)
    heartbeats()
    assert await controller.run_pass() == 0  # the safety net
    assert decides == 2
    # kill -9 of N2: probed once late, refused, fenced, its shards failed over at once.
    replicas.refusing.add(N2)
    clock.advance(ms=settings.probe_after_ms + 1)
    heartbeats()
    assert await controller.run_pass() == 1
    image = quorum.image()
    assert image.nodes[N2].state is NodeState.FENCED
    acted = await controller.run_pass()
    assert acted > 0
    image = quorum.image()
    stream = image.streams["s1"]  # type: ignore[index]
    assert all(shard.leader != N2 for shard in stream.shards)
