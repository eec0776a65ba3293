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

Disk faults (issue 20, tests/chaos/disks.py): `CORRUPT` overwrites 64 bytes inside one of the
target's records SST files while it runs (found by a read or the scrubber, repaired from a
healthy replica; healed by waiting, bounded, until the node reports no damaged replica);
`WIPE` kills the target, deletes its data directory and starts it empty (a replaced disk;
healed by waiting, bounded, until its replicas and metadata caught up); `FILL` takes the
target's file system below its free-space minimum with a filler file (healed by deleting it;
needs `DiskMounts`). A WIPE is inflicted only while every replica holds what its leader
committed, or the cluster could lose a record's last copies to two faults in a row.

Timed waits are the point here (a fault holds for a while): they use the monotonic clock and
`threading.Event.wait` with a deadline, so `stop()` interrupts them at once.
"""

from __future__ import annotations

import enum
import functools
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.chaos import disks
from tests.chaos.network import Network
from tests.cluster.helpers import cluster_status, formed, replica_status
from tests.support import ClusterProcesses, NodeProcess

RESTART_EXIT_DEADLINE_S = 30.0


class FaultKind(enum.Enum):
    KILL_RANDOM = "kill-random"
    KILL_LEADER = "kill-leader"
    PAUSE_RANDOM = "pause-random"
    PAUSE_LEADER = "pause-leader"
    PARTITION_RANDOM = "partition-random"
    PARTITION_LEADER = "partition-leader"
    CORRUPT_RANDOM = "corrupt-random"
    CORRUPT_LEADER = "corrupt-leader"
    WIPE_RANDOM = "wipe-random"
    WIPE_LEADER = "wipe-leader"
    FILL_RANDOM = "fill-random"


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
DISK_KINDS: dict[FaultKind, int] = {
    FaultKind.CORRUPT_RANDOM: 1,
    FaultKind.CORRUPT_LEADER: 1,
    FaultKind.WIPE_RANDOM: 1,
    FaultKind.WIPE_LEADER: 1,
}
FILL_KINDS: dict[FaultKind, int] = {FaultKind.FILL_RANDOM: 1}
_PARTITIONS = frozenset(PARTITION_KINDS)
_CORRUPTIONS = frozenset({FaultKind.CORRUPT_RANDOM, FaultKind.CORRUPT_LEADER})
_WIPES = frozenset({FaultKind.WIPE_RANDOM, FaultKind.WIPE_LEADER})
_RANDOM_TARGET = frozenset(
    {
        FaultKind.KILL_RANDOM,
        FaultKind.PAUSE_RANDOM,
        FaultKind.PARTITION_RANDOM,
        FaultKind.CORRUPT_RANDOM,
        FaultKind.WIPE_RANDOM,
        FaultKind.FILL_RANDOM,
    }
)
HEAL_WAIT_S = 90.0  # a wiped node catching up, a corruption repaired: bounded waits


def kinds(*, partitions: bool, disks: bool = False, fills: bool = False) -> dict[FaultKind, int]:
    """The default fault weights: with partitions when the machine can make them, with
    corruption and wiped disks when asked, with full disks when each node has a mount."""
    return {
        **DEFAULT_KINDS,
        **(PARTITION_KINDS if partitions else {}),
        **(DISK_KINDS if disks else {}),
        **(FILL_KINDS if fills else {}),
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
        self._filled: set[int] = set()
        self._wiped: set[int] = set()
        self._corrupted: set[int] = set()
        self.fill_leave_bytes = 16 << 20  # below the nodes' free-space minimum (workload.py)

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
                elif kind in _WIPES and not self._all_caught_up():
                    self._note(f"{kind.value}: replicas not caught up, skipped")
                elif self._inflict(kind, target):
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

    def _inflict(self, kind: FaultKind, index: int) -> bool:
        """Inflicts the fault; False when there was nothing to do it to (no SST file yet)."""
        node = self.cluster.nodes[index]
        assert node.process is not None, "one fault at a time: the target must be running"
        if kind in _CORRUPTIONS:
            done = disks.corrupt_records(node.data_dir, self._rng)
            how = "while it runs"
            if done is None:
                # Everything still in its memtables: a clean stop writes them to SST files,
                # which are damaged before it starts again (bit rot found after a restart).
                node.terminate()
                done = disks.corrupt_records(node.data_dir, self._rng)
                node.start()
                how = "between a clean stop and a start"
            if done is None:
                self._note(f"{kind.value}: node-{index + 1} has no records SST, skipped")
                return False
            self._corrupted.add(index)
            self._note(f"{kind.value}: node-{index + 1} {done} ({how})")
        elif kind in _WIPES:
            node.kill()
            disks.wipe(node.data_dir)
            node.start()
            self._wiped.add(index)
            self._note(f"{kind.value}: kill -9 node-{index + 1}, wipe its data, start it empty")
        elif kind is FaultKind.FILL_RANDOM:
            size = disks.fill(node.data_dir, leave_free_bytes=self.fill_leave_bytes)
            self._filled.add(index)
            self._note(f"{kind.value}: fill node-{index + 1}'s disk ({size >> 20} MiB)")
        elif kind in (FaultKind.KILL_RANDOM, FaultKind.KILL_LEADER):
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
        return True

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
        for index in sorted(self._filled):
            disks.unfill(self.cluster.nodes[index].data_dir)
            self._note(f"heal: free node-{index + 1}'s disk")
        self._filled.clear()
        for index in sorted(self._wiped):
            caught_up = self._wait(functools.partial(self._rejoined, index))
            self._note(f"heal: node-{index + 1} {'caught up' if caught_up else 'NOT caught up'}")
        self._wiped.clear()
        for index in sorted(self._corrupted):
            repaired = self._wait(functools.partial(self._undamaged, index))
            self._note(
                f"heal: node-{index + 1} {'reports no damage' if repaired else 'STILL damaged'}"
            )
        self._corrupted.clear()

    # --- conditions of the disk faults' heals --------------------------------------------

    def _wait(self, condition: Callable[[], bool]) -> bool:
        """Polls `condition` until true or HEAL_WAIT_S (interrupted by stop())."""
        give_up = time.monotonic() + HEAL_WAIT_S
        while time.monotonic() < give_up:
            try:
                if condition():
                    return True
            except grpc.RpcError:
                pass
            if self._stop.wait(0.2):
                return False
        return False

    def _replicas(self, index: int) -> list[Any]:
        return list(replica_status(self.cluster.nodes[index].endpoint).replicas)

    def _rejoined(self, index: int) -> bool:
        """The node is formed again and its replicas hold what their leaders committed."""
        node = self.cluster.nodes[index]
        if not formed(node.endpoint, len(self.cluster.nodes)):
            return False
        return self._caught_up(index) and not any(r.recovering for r in self._replicas(index))

    def _undamaged(self, index: int) -> bool:
        return not any(r.damaged for r in self._replicas(index))

    def _caught_up(self, index: int) -> bool:
        committed = {
            r.shard_uid: r.high_watermark
            for other in range(len(self.cluster.nodes))
            if other != index
            for r in self._replicas(other)
            if r.role == "leader"
        }
        held = {r.shard_uid: r.log_end for r in self._replicas(index)}
        return all(held.get(uid, -1) >= hw for uid, hw in committed.items())

    def _all_caught_up(self) -> bool:
        try:
            return all(self._caught_up(i) for i in range(len(self.cluster.nodes)))
        except grpc.RpcError:
            return False

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
