"""The nemesis: faults on real node processes, from a seeded plan, bounded in time, and the
cluster healed at the end.

A `Fault` is one move with its own heal: `Kill` (kill -9; healed by restarting the node on its
data dir and ports), `Pause` (SIGSTOP; healed by SIGCONT), `Partition` (see below). Its target
is chosen when it starts: a random node, or the node leading a random shard of the stream
under test (asked of a live node's ClusterStatus). A `Plan` draws faults with a
`random.Random(seed)`: which kind, which target, how long the fault holds and how long the
cluster rests after the heal, so a seed replays the same schedule (the timing of the system
under test still varies). At most one node is faulted at a time: a majority stays up, so the
run checks progress as well as safety. Compose plans by the weights of `FaultKind`s
(`Plan(kinds={...})`).

`Partition` faults (`PARTITION_RANDOM`, `PARTITION_LEADER`) cut the target off from the other
nodes, both directions, with iptables (tests/chaos/network.py: each node of a
`ClusterProcesses(distinct_hosts=True)` cluster on its own loopback address and in its own
cgroup); healed by flushing the rules. Clients still reach the isolated node. They need a
`Network`; `kinds(partitions=...)` gives the default weights with or without them.

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

from tests.chaos.network import Network
from tests.cluster.helpers import cluster_status
from tests.support import ClusterProcesses, NodeProcess

RESTART_EXIT_DEADLINE_S = 30.0


class FaultKind(enum.Enum):
    KILL_RANDOM = "kill-random"
    KILL_LEADER = "kill-leader"
    PAUSE_RANDOM = "pause-random"
    PAUSE_LEADER = "pause-leader"
    PARTITION_RANDOM = "partition-random"
    PARTITION_LEADER = "partition-leader"


DEFAULT_KINDS: dict[FaultKind, int] = {
    FaultKind.KILL_RANDOM: 2,
    FaultKind.KILL_LEADER: 3,
    FaultKind.PAUSE_RANDOM: 1,
    FaultKind.PAUSE_LEADER: 2,
}
PARTITION_KINDS: dict[FaultKind, int] = {
    FaultKind.PARTITION_RANDOM: 1,
    FaultKind.PARTITION_LEADER: 2,
}
_PARTITIONS = frozenset(PARTITION_KINDS)
_RANDOM_TARGET = frozenset(
    {FaultKind.KILL_RANDOM, FaultKind.PAUSE_RANDOM, FaultKind.PARTITION_RANDOM}
)


def kinds(*, partitions: bool) -> dict[FaultKind, int]:
    """The default fault weights, with partitions when the machine can make them."""
    return {**DEFAULT_KINDS, **(PARTITION_KINDS if partitions else {})}


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
        network: Network | None = None,
    ) -> None:
        assert network is not None or not _PARTITIONS & set(plan.kinds), "partitions need a Network"
        self.cluster = cluster
        self.network = network
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
        if kind in _RANDOM_TARGET:
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
        elif kind in _PARTITIONS:
            assert self.network is not None
            self.network.isolate(index)
            self._note(f"{kind.value}: isolate node-{index + 1} from the other nodes")
        else:
            node.process.send_signal(signal.SIGSTOP)
            self._paused.add(index)
            self._note(f"{kind.value}: SIGSTOP node-{index + 1}")

    def heal(self) -> None:
        """Remove partitions, resume paused nodes and restart killed ones (idempotent)."""
        if self.network is not None and self.network.isolated:
            isolated = sorted(self.network.isolated)
            self.network.heal()
            for index in isolated:
                self._note(f"heal: reconnect node-{index + 1}")
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
