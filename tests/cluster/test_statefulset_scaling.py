"""Scaling a StatefulSet up and down, with real processes started the way start.sh starts pods.

Goal (issue 16 item 1): `kubectl scale` up ends with the new pods serving and holding replicas
with no manual step; scaling down (the pod gets SIGTERM and never returns) moves its replicas
to the others and removes it; `shoal cluster decommission` does the same on request. No
acknowledged record is lost throughout.

Method: every "pod" listens on its own loopback address (127.0.0.2, .3, ...) with the same
ports, as pods do on their own IPs, and gets what start.sh exports: its ordinal as node id, its
address as host, and the voters' pattern `127.0.0.{2..4}:<raft>` (ordinals 0..2 vote; later
ones join as non-voting members). A producer writes through every node the whole time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.errors import ErrorCode, ShoalError
from tests.cluster.helpers import Producer, check_no_loss, cluster_status, create_stream
from tests.support import REPO, NodeProcess, free_port, node_host, serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VOTERS = 3
DECOMMISSION_3 = ("cluster", "decommission", "shoal-3", "--timeout", "90")


class StatefulSet:
    def __init__(self, base_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.env = env or {}  # on top of the settings below
        self.ports = {name: free_port() for name in ("grpc", "http", "raft")}
        self.pods: dict[int, NodeProcess] = {}

    def start(self, ordinal: int) -> NodeProcess:
        host = node_host(ordinal)
        pod = NodeProcess(self.base_dir / f"shoal-{ordinal}", host=host)
        pod.grpc_port, pod.http_port, pod.raft_port = (
            self.ports["grpc"],
            self.ports["http"],
            self.ports["raft"],
        )
        first, last = node_host(0).rsplit(".", 1)[1], node_host(VOTERS - 1).rsplit(".", 1)[1]
        pod.extra_env = {
            "SHOAL_NODE_ID": f"shoal-{ordinal}",
            "SHOAL_PEERS_FROM_DNS": f"127.0.0.{{{first}..{last}}}:{self.ports['raft']}",
            "SHOAL_HEARTBEAT_INTERVAL_MS": "100",
            # Short enough for a quick test, long enough that a loaded machine (load 33-45 in
            # parallel runs) does not take a live pod for gone: with 1 s / 3 s a starved
            # shoal-3 was fenced, then REMOVED as absent (it held nothing yet) while running;
            # with 6 s a new pod took 9.7 s from its registration to serving (the controller's
            # probe was refused meanwhile, so it was fenced) and was REMOVED 0.6 s before.
            "SHOAL_SESSION_TIMEOUT_MS": "2000",
            "SHOAL_CONTROLLER_PASS_INTERVAL_MS": "50",
            "SHOAL_ABSENT_NODE_REPLACE_AFTER_MS": "12000",
            "SHOAL_RAFT_PASSWORD": "statefulset-test-secret",
            **self.env,
        }
        pod.start()
        self.pods[ordinal] = pod
        return pod

    def stop_all(self) -> None:
        for pod in self.pods.values():
            if pod.process is not None:
                pod.kill()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.data_dir.name}\n{p.log_text()[-3000:]}" for p in self.pods.values()
        )


def nodes(endpoint: str) -> dict[str, tuple[str, bool, int]]:
    """node id -> (state, voter, replicas held)."""
    return {n.node_id: (n.state, n.voter, n.replica_count) for n in cluster_status(endpoint).nodes}


def on_exactly(endpoint: str, node_ids: tuple[str, ...]) -> bool:
    """Every open shard (internal streams' too) has a replica on each of `node_ids`, on no
    other node, and a leader."""
    shards = [s for s in cluster_status(endpoint).shards if s.state != "CLOSED"]
    return bool(shards) and all(
        sorted(s.replicas) == sorted(node_ids) and bool(s.leader) for s in shards
    )


def ready(endpoint: str) -> bool:
    """The node's gRPC readiness check (what the pod's readinessProbe asks) says SERVING."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=2)
    except grpc.RpcError:
        return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def test_scale_up_then_down_without_a_manual_step(tmp_path: Path) -> None:
    sts = StatefulSet(tmp_path)
    producer: Producer | None = None
    try:
        for ordinal in range(VOTERS):
            sts.start(ordinal)
        first = sts.pods[0].endpoint
        wait_until(
            lambda: (
                [s for s, _, _ in nodes(first).values()].count("ACTIVE") == VOTERS
                if serving(first)
                else False
            ),
            deadline_s=90,
            what="three voters",
        )
        from broker.client.grpc_client import ShoalClient

        def created() -> bool:
            """A voter fenced for a moment under load leaves two ACTIVE nodes for three
            replicas (LimitExceeded "Cannot place"): ask again until it is back."""
            try:
                with ShoalClient(first) as client:
                    client.call("CreateStream", {"StreamName": "orders", "ShardCount": 6})
            except ShoalError as error:
                if error.code is ErrorCode.LIMIT_EXCEEDED and "Cannot place" in error.message:
                    return False
                raise
            return True

        wait_until(created, deadline_s=60, what="the stream created on three ACTIVE nodes")
        wait_until(lambda: serving(first), deadline_s=30, what="stream")
        producer = Producer([p.endpoint for p in sts.pods.values()], "orders").start()
        producer.wait_acknowledged(200)

        # kubectl scale --replicas=5: two new pods, nothing else.
        for ordinal in (3, 4):
            sts.start(ordinal)

        def balanced() -> bool:
            seen = nodes(first)
            if len(seen) != 5 or any(state != "ACTIVE" for state, _, _ in seen.values()):
                return False
            held = [replicas for _, _, replicas in seen.values()]
            return max(held) - min(held) <= 1

        try:
            wait_until(balanced, deadline_s=60, what="the new pods to take their share")
        except AssertionError:
            for o, p in sts.pods.items():
                print(o, nodes(p.endpoint))
            raise
        seen = nodes(first)
        assert {n: voter for n, (_, voter, _) in seen.items()} == {
            "shoal-0": True,
            "shoal-1": True,
            "shoal-2": True,
            "shoal-3": False,
            "shoal-4": False,
        }
        assert all(serving(sts.pods[o].endpoint) for o in (3, 4))

        # kubectl scale --replicas=4: shoal-4 is stopped and never comes back.
        sts.pods[4].terminate()
        wait_until(
            lambda: nodes(first)["shoal-4"][0] == "REMOVED",
            deadline_s=90,
            what="shoal-4 replaced and removed",
        )
        # An operator's decommission before scaling to 3.
        result = subprocess.run(
            [sys.executable, "-m", "broker", "--endpoint", first, *DECOMMISSION_3],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "shoal-3 holds nothing: REMOVED" in result.stdout
        sts.pods[3].terminate()
        producer.wait_acknowledged(len(producer.acknowledged) + 200)
        producer.stop()
        assert not producer.lost

        def on_the_three() -> bool:
            """Every open shard on the three that remain, led (under load a voter fenced a
            moment ago may still be getting its replica back: a set of two being repaired).
            The audit trail's internal stream too, although it was created while fewer than
            three nodes were ACTIVE: it keeps the factor it asked for."""
            return on_exactly(first, ("shoal-0", "shoal-1", "shoal-2"))

        wait_until(on_the_three, deadline_s=90, what="every open shard on shoal-0..2")
        check_no_loss(first, "orders", producer.acknowledged)
    except BaseException:
        print(sts.logs())
        raise
    finally:
        if producer is not None and producer._thread is not None and producer._thread.is_alive():
            producer.stop()
        sts.stop_all()


def test_streams_created_before_the_pods_joined_grow_to_the_factor(tmp_path: Path) -> None:
    """A StatefulSet's pods start one by one: the stream (and the audit trail's) created while
    two of three were ACTIVE asks for three replicas and gets the third when shoal-2 joins, so
    a kill -9 of the first pod then loses no acknowledged record and writes go on. On the way,
    a running pod removed as absent (paused past the absence; a slow start whose port refused
    the probes is the same) registers again and turns ready without a restart."""
    sts = StatefulSet(
        tmp_path,
        env={
            # Quick absence, no balancing moves: shoal-3 holds nothing, so it is removable.
            "SHOAL_ABSENT_NODE_REPLACE_AFTER_MS": "5000",
            "SHOAL_REPLICA_MOVES_MAX": "0",
        },
    )
    producer: Producer | None = None
    try:
        for ordinal in (0, 1):
            sts.start(ordinal)
        first = sts.pods[0].endpoint
        wait_until(
            lambda: (
                serving(first) and [s for s, _, _ in nodes(first).values()].count("ACTIVE") == 2
            ),
            deadline_s=120,
            what="the first two voters",
        )
        from broker.client.grpc_client import ShoalClient

        with ShoalClient(first) as client:
            create_stream(client, "orders", 4)
        producer = Producer([sts.pods[0].endpoint, sts.pods[1].endpoint], "orders").start()
        producer.wait_acknowledged(200)
        assert not any(len(s.replicas) == 3 for s in cluster_status(first).shards)

        sts.start(2)
        three = ("shoal-0", "shoal-1", "shoal-2")
        wait_until(lambda: on_exactly(first, three), deadline_s=120, what="three replicas each")

        # A running pod the controller removes as absent comes back by itself.
        pod = sts.start(3)
        wait_until(lambda: ready(pod.endpoint), deadline_s=120, what="shoal-3 ready")
        (before,) = [n.incarnation for n in cluster_status(first).nodes if n.node_id == "shoal-3"]
        assert pod.process is not None
        pod.process.send_signal(signal.SIGSTOP)
        try:
            wait_until(
                lambda: nodes(first)["shoal-3"][0] == "REMOVED",
                deadline_s=60,
                what="shoal-3 removed as absent",
            )
        finally:
            pod.process.send_signal(signal.SIGCONT)

        def registered_again() -> bool:
            (node,) = [n for n in cluster_status(first).nodes if n.node_id == "shoal-3"]
            return node.state == "ACTIVE" and node.incarnation > before and ready(pod.endpoint)

        wait_until(registered_again, deadline_s=60, what="shoal-3 registered again and ready")

        producer.wait_acknowledged(len(producer.acknowledged) + 100)
        sts.pods[0].kill()
        survivor = sts.pods[1].endpoint
        producer.wait_acknowledged(len(producer.acknowledged) + 200, deadline_s=120)
        producer.stop()
        assert not producer.lost
        check_no_loss(survivor, "orders", producer.acknowledged)
    except BaseException:
        print(sts.logs())
        raise
    finally:
        if producer is not None and producer._thread is not None and producer._thread.is_alive():
            producer.stop()
        sts.stop_all()
