"""A node whose disk is replaced (kill -9, its data directory deleted, restarted with the same
id) rejoins a live 3-node cluster as a new, empty replica (decisions/0002, "Lost disk").

The tests share one cluster (`module_cluster`): each ends with every node back, formed and
caught up, and writes to a stream of its own. Method: a producer writes through every node the
whole time; the victim is a follower of
every shard, a shard leader, or the metadata quorum's leader (the controller's node, so its
Raft journal goes too). The cluster must keep taking writes (the longest pause between two
acknowledgements stays within a leader change), the victim must catch up every replica it
holds, and every acknowledged record must be read back through every node at the sequence
number it was acknowledged with.
"""

from __future__ import annotations

import itertools
import shutil
import time

import grpc
import pytest

from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import (
    Producer,
    check_no_loss,
    cluster_status,
    replica_status,
    shard_leaders,
    wait_formed,
    wait_shards_led,
)
from tests.support import ClusterProcesses, NodeProcess, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# A leader change on these knobs takes about 1-3 s (docs/ARCHITECTURE.md, "What happens on
# leader loss"); a rejoin may cost one (the wiped leader's shards) but never a stall.
ACK_GAP_S_MAX = 10.0


def _create(endpoint: str, stream: str, shards: int) -> None:
    with ShoalClient(endpoint) as client:
        client.call("CreateStream", {"StreamName": stream, "ShardCount": shards})
        wait_until(
            lambda: (
                client.call("DescribeStreamSummary", {"StreamName": stream})[
                    "StreamDescriptionSummary"
                ]["StreamStatus"]
                == "ACTIVE"
            ),
            deadline_s=30,
            what="stream ACTIVE",
        )
    wait_shards_led(endpoint, stream)  # _victim picks a node by the leaders


def _rejoined(cluster: ClusterProcesses, victim: NodeProcess) -> bool:
    """Every replica on the victim holds what its shard's leader had committed, and no longer
    reports itself recovering (it counts again)."""
    try:
        mine = {s.shard_uid: s for s in replica_status(victim.endpoint).replicas}
        leaders = {
            s.shard_uid: s
            for node in cluster.nodes
            if node is not victim
            for s in replica_status(node.endpoint).replicas
            if s.role == "leader"
        }
    except grpc.RpcError:  # the victim may still be starting
        return False
    return bool(mine) and all(
        uid in mine and mine[uid].log_end >= leader.high_watermark and not mine[uid].recovering
        for uid, leader in leaders.items()
    )


def _wipe_and_rejoin(cluster: ClusterProcesses, victim: NodeProcess, stream: str) -> float:
    """Kills the victim, deletes its data directory, restarts it; returns the longest pause
    between acknowledgements from the kill until it rejoined, in seconds."""
    producer = Producer(cluster.endpoints, stream, batch_size=10).start()
    try:
        producer.wait_acknowledged(300)
        killed_at = time.monotonic()
        victim.kill()
        shutil.rmtree(victim.data_dir)
        victim.start()
        wait_until(lambda: _rejoined(cluster, victim), deadline_s=60, what="the victim rejoined")
        rejoined_at = time.monotonic()
        acked = len(producer.acknowledged)
        producer.wait_acknowledged(acked + 100, deadline_s=30)  # still writable afterwards
    finally:
        producer.stop()
    times = [killed_at, *(t for t in producer.ack_times if t >= killed_at), rejoined_at]
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert not producer.lost, f"{len(producer.lost)} records never acknowledged"
    wait_formed(cluster)
    for endpoint in cluster.endpoints:
        check_no_loss(endpoint, stream, producer.acknowledged)
    return gap


def _victim(
    cluster: ClusterProcesses, stream: str, *, leads: bool, controller: bool
) -> NodeProcess:
    status = cluster_status(cluster.endpoints[0])
    leaders = set(shard_leaders(cluster.endpoints[0], stream).values())
    for i, node in enumerate(cluster.nodes):
        node_id = f"node-{i + 1}"
        if controller and node_id == status.controller:
            return node
        if not controller and node_id != status.controller and (node_id in leaders) == leads:
            return node
    raise AssertionError(f"no such node: leaders {leaders}, controller {status.controller}")


def test_a_wiped_follower_rejoins_without_stopping_writes(
    module_cluster: ClusterProcesses,
) -> None:
    """The first test on the module's cluster: its one shard is the only one, so the victim
    follows it and leads nothing."""
    cluster = module_cluster
    _create(cluster.endpoints[0], "follower", 1)
    victim = _victim(cluster, "follower", leads=False, controller=False)
    gap = _wipe_and_rejoin(cluster, victim, "follower")
    assert gap < ACK_GAP_S_MAX


def test_a_wiped_leader_rejoins_and_leads_nothing_it_lacks(
    module_cluster: ClusterProcesses,
) -> None:
    cluster = module_cluster
    _create(cluster.endpoints[0], "leader", 3)  # the nodes share the leaderships
    victim = _victim(cluster, "leader", leads=True, controller=False)
    gap = _wipe_and_rejoin(cluster, victim, "leader")
    assert gap < ACK_GAP_S_MAX


def test_a_wiped_metadata_leader_rejoins_the_quorum(module_cluster: ClusterProcesses) -> None:
    cluster = module_cluster
    _create(cluster.endpoints[0], "controller", 3)
    victim = _victim(cluster, "controller", leads=True, controller=True)
    gap = _wipe_and_rejoin(cluster, victim, "controller")
    assert gap < ACK_GAP_S_MAX
    # Its metadata came back from the other voters: it sees the stream and every node.
    status = cluster_status(victim.endpoint)
    assert any(s.stream_name == "controller" for s in status.shards)
    assert sorted(n.node_id for n in status.nodes) == ["node-1", "node-2", "node-3"]


def test_a_node_whose_shard_log_was_moved_aside_rejoins(
    module_cluster: ClusterProcesses,
) -> None:
    """The corruption runbook (docs/operations.md, "Corruption"): stop the node, move its
    `log` directory aside, start it. It keeps its metadata and rejoins for its replicas."""
    cluster = module_cluster
    _create(cluster.endpoints[0], "moved", 3)
    producer = Producer(cluster.endpoints, "moved", batch_size=10).start()
    try:
        producer.wait_acknowledged(300)
        victim = _victim(cluster, "moved", leads=True, controller=False)
        victim.terminate()
        (victim.data_dir / "log").rename(victim.data_dir / "log.corrupt")
        victim.start()
        wait_until(lambda: _rejoined(cluster, victim), deadline_s=60, what="the victim rejoined")
        producer.wait_acknowledged(len(producer.acknowledged) + 100, deadline_s=30)
    finally:
        producer.stop()
    for endpoint in cluster.endpoints:
        check_no_loss(endpoint, "moved", producer.acknowledged)


def test_a_node_with_a_corrupt_metadata_journal_is_refused_and_recovers(
    module_cluster: ClusterProcesses,
) -> None:
    """The metadata-corruption runbook: the node refuses to start with one line naming the
    file and the recovery; moving `meta` aside as it says brings it back from the others."""
    cluster = module_cluster
    _create(cluster.endpoints[0], "journal", 1)
    victim = _victim(cluster, "journal", leads=False, controller=False)
    victim.terminate()
    journal = victim.data_dir / "meta" / "raft.journal"
    data = bytearray(journal.read_bytes())
    assert len(data) > 200, "a journal with several records"
    data[12 + 24] ^= 0xFF  # the first record's command: corruption before the log's end
    journal.write_bytes(bytes(data))
    victim.start()
    assert victim.process is not None
    code = victim.process.wait(timeout=60)
    victim.process = None
    assert code == 1  # a refused start (cli/serve.py)
    refusals = [line for line in victim.log_text().splitlines() if line.startswith("error: ")]
    assert refusals[-1].endswith('(docs/operations.md, "Metadata corruption")'), refusals[-1]
    assert "raft.journal" in refusals[-1]
    assert "Traceback" not in victim.log_text().split("node_stopped")[-1]
    (victim.data_dir / "meta").rename(victim.data_dir / "meta.corrupt")
    victim.start()
    wait_formed(cluster)
    # Its metadata comes back from the others' log and snapshot: bounded, not at once.
    wait_until(
        lambda: any(s.stream_name == "journal" for s in cluster_status(victim.endpoint).shards),
        deadline_s=30,
        what="the victim's rebuilt metadata holds the stream",
    )
