"""A stream created while only two nodes were ACTIVE starts on two replicas (it asks for the
configured factor of three, format 7's requested_replication_factor); if its leader dies before
the other replica holds a record of the leader's first epoch, the controller chooses the
survivor from its promise alone (the first-epoch rule, `controller_core._current_epoch_quorum`)
and adds a third replica in the same epoch, so writes resume without the dead node (seen in CI:
no leader for 90 s). Before the rule the shard had no leader until the dead node returned.

Method, with real node processes: three voters, node-3 DRAINING (a live voter of the metadata
quorum that takes no replica), node-1, the placement's leader to be, stopped (SIGSTOP) before
the CreateStream that places the shard on node-1 and node-2: it never writes its first epoch's
record. node-4 joins (non-voting, ACTIVE: where the set grows), then node-1 gets kill -9. The
shard must get a leader other than node-1 and a third replica, take writes, and keep every
acknowledged record once node-1 is back.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

import pytest

from broker.api.internal.v1 import internal_pb2 as pb
from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import (
    Producer,
    check_no_loss,
    cluster_status,
    create_stream,
    drain,
    wait_formed,
)
from tests.support import ClusterProcesses, NodeProcess, serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ATTEMPTS = 3  # a leadership rebalance may beat the CreateStream: the placement's leader differs
# Long sessions: the stopped node-1 must stay ACTIVE (placeable, not failed over) until it is
# killed, which the controller's probe (its port refuses connections) then sees at once.
ENV = {"SHOAL_SESSION_TIMEOUT_MS": "30000"}


def _shard(endpoint: str, stream: str) -> pb.ShardStatus | None:
    shards = [s for s in cluster_status(endpoint).shards if s.stream_name == stream]
    return shards[0] if shards else None


def _state(endpoint: str, node_id: str) -> str:
    return next((n.state for n in cluster_status(endpoint).nodes if n.node_id == node_id), "")


def _next_leader(endpoint: str, candidates: tuple[str, str]) -> str:
    """The node placement makes the leader of a new shard on `candidates` (the ACTIVE ones):
    the one leading the fewest open shards, then holding the fewest replicas, then by id
    (broker/meta/placement.py)."""
    shards = [s for s in cluster_status(endpoint).shards if s.state != "CLOSED"]
    return min(
        candidates,
        key=lambda n: (
            sum(1 for s in shards if s.leader == n),
            sum(1 for s in shards if n in s.replicas),
            n,
        ),
    )


def test_a_two_replica_stream_whose_leader_dies_at_once_gets_a_leader_and_a_third_replica(
    tmp_path: Path,
) -> None:
    cluster = ClusterProcesses(tmp_path, extra_env=ENV)
    voters = [node.raft_address for node in cluster.nodes]
    joiner = NodeProcess(tmp_path / "node-4")
    joiner.extra_env = {
        "SHOAL_NODE_ID": "node-4",
        "SHOAL_JOIN": ",".join(voters),
        "SHOAL_HEARTBEAT_INTERVAL_MS": "100",
        "SHOAL_CONTROLLER_PASS_INTERVAL_MS": "50",
        **ENV,
    }
    producer: Producer | None = None
    cluster.start()
    try:
        wait_formed(cluster)
        first, second, third = cluster.nodes
        # node-3 stays a voter but takes no replica; its leaderships move to node-1 and node-2.
        drain(third.endpoint, "node-3")
        wait_until(
            lambda: (
                _state(second.endpoint, "node-3") == "DRAINING"
                and not any(s.leader == "node-3" for s in cluster_status(second.endpoint).shards)
            ),
            deadline_s=60,
            what="node-3 DRAINING and leading nothing",
        )
        for attempt in range(ATTEMPTS):
            stream = f"first-epoch-{attempt}"
            leader_id = _next_leader(second.endpoint, ("node-1", "node-2"))
            leader = cluster.node_named(leader_id)
            survivor = second if leader is first else first
            assert leader.process is not None
            leader.process.send_signal(signal.SIGSTOP)
            with ShoalClient(survivor.endpoint) as client:
                create_stream(client, stream, 1)
            shard = wait_until(
                partial(_shard, survivor.endpoint, stream), deadline_s=30, what=stream
            )
            assert shard is not None
            assert sorted(shard.replicas) == ["node-1", "node-2"] and shard.epoch == 1, shard
            if shard.leader == leader_id:
                break
            leader.process.send_signal(signal.SIGCONT)  # the follower was stopped: again
        else:
            pytest.fail(f"placement never chose the stopped node as leader in {ATTEMPTS} tries")

        joiner.start()
        # Serving first: a node registers before its port listens, and the controller fences
        # it meanwhile (its probe is refused); a failover then has nowhere to grow the set.
        wait_until(
            lambda: serving(joiner.endpoint) and _state(survivor.endpoint, "node-4") == "ACTIVE",
            deadline_s=120,
            what="node-4 joined, serving and ACTIVE",
        )
        leader.kill()  # stopped the whole time: its first epoch's record reached nobody
        survivor_id = "node-2" if leader_id == "node-1" else "node-1"

        def failed_over() -> pb.ShardStatus | None:
            status = _shard(survivor.endpoint, stream)
            if status is None or status.leader in ("", leader_id) or len(status.replicas) < 3:
                return None
            return status

        shard = wait_until(failed_over, deadline_s=60, what="a new leader and a third replica")
        assert shard is not None
        # The survivor leads the failover's epoch (the first-epoch rule: on the old code no
        # leader at all); once node-4 has caught up the controller may move the leadership to
        # it (leader balancing), so whoever leads now, it is not the dead node.
        assert shard.leader in (survivor_id, "node-4") and "node-4" in shard.replicas, shard
        assert shard.epoch >= 2, shard

        producer = Producer([survivor.endpoint, joiner.endpoint], stream).start()
        producer.wait_acknowledged(100, deadline_s=60)
        producer.stop()
        assert not producer.lost

        leader.start()  # back: nothing acknowledged is missing, whoever answers
        wait_until(
            # Serving too: a node registers ACTIVE before its gRPC port listens (as node-4 above).
            lambda: serving(leader.endpoint) and _state(survivor.endpoint, leader_id) == "ACTIVE",
            deadline_s=120,
            what=f"{leader_id} back and serving",
        )
        for endpoint in (survivor.endpoint, joiner.endpoint, leader.endpoint):
            check_no_loss(endpoint, stream, producer.acknowledged)
    except BaseException:
        print(cluster.failure_digest())
        print(f"--- node-4\n{joiner.log_text()[-4000:]}")
        raise
    finally:
        if producer is not None and producer._thread is not None and producer._thread.is_alive():
            producer.stop()
        for node in cluster.nodes:
            if node.process is not None:
                node.process.send_signal(signal.SIGCONT)
        cluster.stop()
        if joiner.process is not None:
            joiner.kill()
