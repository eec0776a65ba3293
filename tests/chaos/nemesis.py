"""The nemesis: faults on real node processes, from a seeded plan, bounded in time, and the
cluster healed at the end.

A `Fault` is one move with its own heal: `Kill` (kill -9; healed by restarting the node on its
data dir and ports), `Pause` (SIGSTOP; healed by SIGCONT). Its target is chosen when it
starts: a random node, or the node leading a random shard of the stream under test (asked of a
live node's ClusterStatus). A `Plan` draws faults with a `random.Random(seed)`: which kind,
which target, how long the fault holds and how long the cluster rests after the heal, so a
seed replays the same schedule (the timing of the system under test still varies). At most
one node is faulted at a time: a majority stays up, so the run checks progress as well as
safety. Compose plans by the weights of `FaultKind`s (`Plan(kinds={...})`).

Isolation is not implemented, and cannot be with `ClusterProcesses` as it stands: a node
listens where it advertises itself (`Config.api_address` = `host:grpc_port`, registered in the
metadata image and dialled by peers for replication; the Raft self address is
`host:raft_port`, and pysyncobj identifies an incoming peer by the address it announces, which
must match the receiver's peer list). So a TCP proxy cannot be put between two nodes without
an "advertised address" setting distinct from the listen address, and every node shares
127.0.0.1, so there is no per-node interface to cut. Isolation needs either that setting or one
network namespace per node (each with its own address); both are changes outside this package.
SIGSTOP is the nearest fault we have: the node falls silent to everyone, though it also stops
itself.

Timed waits are the point here (a fault holds for a while): they use the monotonic clock and
`threading.Event.wait` with a deadline, so `stop()` interrupts them at once.
"""

from __future__ import annotations

import enum
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from tests.cluster.helpers import cluster_status
from tests.support import ClusterProcesses, NodeProcess

RESTART_EXIT_DEADLINE_S = 30.0


class FaultKind(enum.Enum):
    KILL_RANDOM = "kill-random"
    KILL_LEADER = "kill-leader"
    PAUSE_RANDOM = "pause-random"
    PAUSE_LEADER = "pause-leader"


DEFAULT_KINDS: dict[FaultKind, int] = {
    FaultKind.KILL_RANDOM: 2,
    FaultKind.KILL_LEADER: 3,
    FaultKind.PAUSE_RANDOM: 1,
    FaultKind.PAUSE_LEADER: 2,
}


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float  # since the nemesis started
    what: str


@dataclass(slots=True)
class Plan:
    """How faults are drawn. `hold_s` and `rest_s` are (low, high) uniform ranges."""

    seed: int
    kinds: dict[FaultKind, int] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    hold_s: tuple[float, float] = (1.0, 4.0)
    rest_s: tuple[float, float] = (1.0, 3.0)

    def rng(self) -> random.Random:
        return random.Random(self.seed)


class Nemesis:
    """Runs a `Plan` against `cluster` in a thread until `seconds` have passed or `stop()`;
    always heals (restarts killed nodes, resumes paused ones) before it returns."""

    def __init__(
        self,
        cluster: ClusterProcesses,
        plan: Plan,
        *,
        stream: str,
        seconds: float,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.plan = plan
        self.stream = stream
        self.seconds = seconds
        self.events: list[Event] = []
        self.faults_done = 0
        self._log = log
        self._rng = plan.rng()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = 0.0
        self._killed: set[int] = set()
        self._paused: set[int] = set()

    # --- running --------------------------------------------------------------------------

    def start(self) -> Nemesis:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the schedule early (or waits for its end) and leaves the cluster healed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RESTART_EXIT_DEADLINE_S * 3)
            assert not self._thread.is_alive(), "the nemesis did not stop"
        self.heal()
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("the nemesis failed") from error

    def wait(self) -> None:
        """Until the schedule ends (bounded by its own length plus healing)."""
        assert self._thread is not None
        self._thread.join(timeout=self.seconds + RESTART_EXIT_DEADLINE_S * 3)
        self.stop()

    def _run(self) -> None:
        deadline = self._started + self.seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                kind = self._draw_kind()
                hold = self._rng.uniform(*self.plan.hold_s)
                rest = self._rng.uniform(*self.plan.rest_s)
                target = self._target(kind)
                if target is None:
                    self._note(f"{kind.value}: no target known, skipped")
                else:
                    self._inflict(kind, target)
                    self.faults_done += 1
                    self._pause_until(min(time.monotonic() + hold, deadline))
                    self.heal()
                self._pause_until(min(time.monotonic() + rest, deadline))
        except BaseException as exc:  # reported by stop(); the cluster is healed there
            self._error = exc
            self._note(f"nemesis error: {exc!r}")

    def _pause_until(self, when: float) -> None:
        remaining = when - time.monotonic()
        if remaining > 0:
            self._stop.wait(remaining)

    def _draw_kind(self) -> FaultKind:
        kinds = list(self.plan.kinds)
        return self._rng.choices(kinds, weights=[self.plan.kinds[k] for k in kinds])[0]

    # --- targets --------------------------------------------------------------------------

    def _target(self, kind: FaultKind) -> int | None:
        # The draw happens whatever the cluster answers, so a seed keeps its schedule.
        fallback = self._rng.randrange(len(self.cluster.nodes))
        pick = self._rng.random()
        if kind in (FaultKind.KILL_RANDOM, FaultKind.PAUSE_RANDOM):
            return fallback
        leaders = self._leaders()
        if not leaders:
            return fallback
        shard = sorted(leaders)[int(pick * len(leaders))]
        node_id = leaders[shard]
        return int(node_id.rsplit("-", 1)[1]) - 1

    def _leaders(self) -> dict[str, str]:
        for node in self.cluster.nodes:
            if node.process is None:
                continue
            try:
                status = cluster_status(node.endpoint)
            except grpc.RpcError:
                continue
            return {
                s.shard_id: s.leader
                for s in status.shards
                if s.stream_name == self.stream and s.state != "CLOSED" and s.leader
            }
        return {}

    # --- faults and heals -----------------------------------------------------------------

    def _inflict(self, kind: FaultKind, index: int) -> None:
        node = self.cluster.nodes[index]
        assert node.process is not None, "one fault at a time: the target must be running"
        if kind in (FaultKind.KILL_RANDOM, FaultKind.KILL_LEADER):
            node.kill()
            self._killed.add(index)
            self._note(f"{kind.value}: kill -9 node-{index + 1}")
        else:
            node.process.send_signal(signal.SIGSTOP)
            self._paused.add(index)
            self._note(f"{kind.value}: SIGSTOP node-{index + 1}")

    def heal(self) -> None:
        """Resume paused nodes and restart killed ones (idempotent)."""
        for index in sorted(self._paused):
            process = self.cluster.nodes[index].process
            if process is not None:
                process.send_signal(signal.SIGCONT)
            self._note(f"heal: SIGCONT node-{index + 1}")
        self._paused.clear()
        for index in sorted(self._killed):
            _restart(self.cluster.nodes[index])
            self._note(f"heal: restart node-{index + 1}")
        self._killed.clear()

    def _note(self, what: str) -> None:
        event = Event(at_s=time.monotonic() - self._started, what=what)
        self.events.append(event)
        if self._log is not None:
            self._log(f"[{event.at_s:7.2f} s] {what}")


def _restart(node: NodeProcess) -> None:
    if node.process is not None and node.process.poll() is None:
        return
    node.process = None
    node.start()
