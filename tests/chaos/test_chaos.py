"""Chaos: a 3-node cluster under kill -9 / SIGSTOP / restart faults, corrupted and wiped disks,
and network partitions and full disks where the machine can make them (root: iptables, a tmpfs
per node; tests/chaos/network.py, tests/chaos/disks.py), while producers write, then every
shard read back through every node and checked (tests/chaos/checker.py), and every node's
metadata image compared after the same number of applied commands.

The short run here takes about a minute: 30 s of faults (`SHOAL_CHAOS_SECONDS` changes it),
with a fresh random seed each time, printed on failure with the command that replays its fault
schedule (`SHOAL_CHAOS_SEED=S`, or `scripts/chaos --seed S` for a long run). The checker's own
tests run on hand-made histories and take no time.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import disks
from tests.chaos.checker import Ack, SourceRead, WriteHistory, check
from tests.chaos.nemesis import FaultKind, Plan
from tests.chaos.network import Network, unusable_reason
from tests.chaos.workload import DISK_BYTES, chaos_env, run_chaos
from tests.cluster.helpers import cluster_status, wait_formed
from tests.support import ClusterProcesses, wait_until

PARTITIONS_UNUSABLE = unusable_reason()
FILLS_UNUSABLE = disks.unusable_reason()

# --- The checker on hand-made histories --------------------------------------------------


def _history(*acked: tuple[bytes, int], attempts: dict[bytes, int] | None = None) -> WriteHistory:
    history = WriteHistory()
    for call, (data, offset) in enumerate(acked):
        history.attempts[data] = 1
        history.acked[data] = Ack(
            shard_id="s0", offset=offset, producer="p0", partition_key="k", call=call, position=0
        )
    history.attempts.update(attempts or {})
    return history


def _read(source: str, *records: tuple[int, bytes], replica: bool = False) -> SourceRead:
    end = records[-1][0] + 1 if records else 0
    return SourceRead(
        source=source, shard_id="s0", records=records, replica=replica, end=end if replica else None
    )


def test_checker_accepts_a_clean_history() -> None:
    history = _history((b"a", 0), (b"b", 2))
    reads = [
        _read("gateway node-1", (0, b"a"), (2, b"b")),
        _read("replica node-2", (0, b"a"), (2, b"b"), replica=True),
    ]
    report = check(history, reads)
    assert report.ok, report.format()


def test_checker_finds_lost_and_unseen_records() -> None:
    history = _history((b"a", 0), (b"b", 1), (b"c", 5))
    report = check(history, [_read("gateway node-1", (1, b"b"))])
    assert [d.split()[0] for d in report.anomalies["lost"]] == ["b'a'"]
    assert [d.split()[0] for d in report.anomalies["unseen"]] == ["b'c'"]


def test_checker_finds_duplicates_but_allows_one_copy_per_attempt() -> None:
    history = _history((b"a", 0), (b"b", 3), attempts={b"b": 2})
    fine = check(history, [_read("gateway node-1", (0, b"a"), (1, b"b"), (3, b"b"))])
    assert fine.ok, fine.format()
    report = check(history, [_read("gateway node-1", (0, b"a"), (1, b"a"), (3, b"b"))])
    assert len(report.anomalies["duplicate"]) == 1
    assert "sent in 1 call(s)" in report.anomalies["duplicate"][0]


def test_checker_finds_inconsistent_offsets_misplaced_and_phantoms() -> None:
    history = _history((b"a", 0), (b"b", 1))
    reads = [
        _read("gateway node-1", (0, b"a"), (1, b"b")),
        _read("gateway node-2", (0, b"a"), (1, b"x")),
    ]
    report = check(history, reads)
    assert len(report.anomalies["inconsistent-offsets"]) == 1
    assert len(report.anomalies["phantom"]) == 1
    misplaced = check(history, [_read("gateway node-1", (0, b"a"), (2, b"b"))])
    assert len(misplaced.anomalies["misplaced"]) == 1


def test_checker_finds_reordering_skips_and_nonmonotonic_reads() -> None:
    reordered = check(_history((b"a", 4), (b"b", 2)), [_read("g", (2, b"b"), (4, b"a"))])
    assert len(reordered.anomalies["reordered"]) == 1
    history = _history((b"a", 0), (b"b", 1), (b"c", 2))
    skipped = check(
        history, [_read("g1", (0, b"a"), (1, b"b"), (2, b"c")), _read("g2", (0, b"a"), (2, b"c"))]
    )
    assert len(skipped.anomalies["skipped"]) == 1
    backwards = check(history, [_read("g1", (0, b"a"), (2, b"c"), (1, b"b"))])
    assert len(backwards.anomalies["nonmonotonic"]) == 1


def test_checker_finds_replicas_that_disagree_at_the_end() -> None:
    history = _history((b"a", 0), (b"b", 1))
    report = check(
        history,
        [
            _read("replica node-1", (0, b"a"), (1, b"b"), replica=True),
            _read("replica node-2", (0, b"a"), replica=True),
            _read("replica node-3", (0, b"b"), (1, b"a"), replica=True),
        ],
    )
    assert report.anomalies["behind"] and report.anomalies["diverged"]


def test_a_plan_replays_its_schedule() -> None:
    plan = Plan(seed=7, kinds={FaultKind.KILL_LEADER: 1, FaultKind.PAUSE_RANDOM: 1})
    first, second = plan.rng(), plan.rng()
    assert [first.random() for _ in range(5)] == [second.random() for _ in range(5)]


# --- The real thing -----------------------------------------------------------------------


@pytest.fixture
def network_cluster(tmp_path: Path) -> Iterator[tuple[ClusterProcesses, Network | None]]:
    """A formed 3-node cluster, each node on its own loopback address and partitionable when
    the machine allows (else no `Network`). Rules and cgroups go at teardown, whatever
    happened."""
    processes = ClusterProcesses(
        tmp_path,
        distinct_hosts=PARTITIONS_UNUSABLE is None,
        extra_env=chaos_env(fills=FILLS_UNUSABLE is None),
    )
    with contextlib.ExitStack() as stack:
        network = None if PARTITIONS_UNUSABLE else stack.enter_context(Network(processes))
        if FILLS_UNUSABLE is None:
            stack.enter_context(disks.DiskMounts(processes, size_bytes=DISK_BYTES))
        processes.start()
        stack.callback(processes.stop)  # runs before the network closes
        wait_formed(processes)
        yield processes, network


@pytest.mark.cluster
@pytest.mark.skipif(PARTITIONS_UNUSABLE is not None, reason=f"{PARTITIONS_UNUSABLE}")
def test_an_isolated_node_is_fenced_and_returns_when_healed(
    network_cluster: tuple[ClusterProcesses, Network | None],
) -> None:
    cluster, network = network_cluster
    assert network is not None
    network.isolate(0)
    try:
        # The others stop hearing node-1 (its heartbeats are cut, both ways), while this
        # process still reaches it: the isolation is between nodes only.
        wait_until(
            lambda: any(
                n.node_id == "node-1" and n.state == "FENCED"
                for n in cluster_status(cluster.nodes[1].endpoint).nodes
            ),
            deadline_s=30,
            what="node-1 fenced by the others",
        )
        assert cluster_status(cluster.nodes[0].endpoint).nodes
    finally:
        network.heal()
    wait_formed(cluster)


@pytest.mark.cluster
@pytest.mark.slow
def test_no_anomalies_under_process_network_and_disk_faults(
    network_cluster: tuple[ClusterProcesses, Network | None], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, network = network_cluster
    seed = int(os.environ.get("SHOAL_CHAOS_SEED") or random.SystemRandom().randrange(2**31))
    seconds = float(os.environ.get("SHOAL_CHAOS_SECONDS") or 30)
    if network is None:
        print(f"no partitions: {PARTITIONS_UNUSABLE}")
    if FILLS_UNUSABLE is not None:
        print(f"no full disks: {FILLS_UNUSABLE}")
    try:
        result = run_chaos(
            cluster,
            seconds=seconds,
            seed=seed,
            log=print,
            network=network,
            disk_faults=True,
            fills=FILLS_UNUSABLE is None,
        )
    except BaseException:
        print(f"seed {seed}; replay: SHOAL_CHAOS_SEED={seed} or scripts/chaos --seed {seed}")
        print(cluster.logs())
        raise
    print(result.format())
    # The nodes' logs whenever the run fails, also when only a heal timed out (a node not
    # caught up, fewer faults than required): the cause is in them.
    passed = result.report.ok and result.converged and result.faults >= 3
    detail = f"{result.format()}\n{'' if passed else cluster.logs()}"
    assert result.report.ok, detail
    assert result.converged, detail
    assert result.faults >= 3, detail
    assert result.acks_during_faults > 0, detail
