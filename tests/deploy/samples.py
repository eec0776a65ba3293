"""A NodeMetrics with a value in every family, and a load loop that keeps counters moving.

Used by the metric unit tests (every family renders) and by the dashboard test, which serves
these registries to a real Prometheus until the 3-node cluster test can scrape real nodes.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path

from broker.metrics import (
    CertificateExpiry,
    ClusterView,
    NodeMetrics,
    ReplicationView,
    StorageView,
    StreamView,
)

STREAM = "orders"
SHARDS = ("shardId-000000000000", "shardId-000000000001")


@dataclass(frozen=True)
class FakeQuorumStatistics:
    """Same attributes as broker.meta.quorum.QuorumStatistics."""

    role: str
    term: int
    commit_index: int
    last_applied: int
    quorum_leader: str | None


def populated(node_id: str, *, leader: bool, data_dir: Path) -> NodeMetrics:
    """A node's metrics with every family holding at least one series."""
    metrics = NodeMetrics(node_id=node_id, revision="test")
    metrics.quorum.watch(
        lambda: FakeQuorumStatistics(
            role="leader" if leader else "follower",
            term=4,
            commit_index=120,
            last_applied=119,
            quorum_leader="shoal-0:50052",
        )
    )
    metrics.cluster.watch(
        lambda: ClusterView(
            nodes_by_state={"ACTIVE": 3, "DRAINING": 0, "FENCED": 0},
            streams=1,
            open_shards=len(SHARDS),
            leaderless_shards=0,
        )
    )
    metrics.replication.watch(
        lambda: ReplicationView(
            leaders=1 if leader else 0,
            followers=1 if leader else 2,
            under_replicated=0,
            follower_lag_records={"shoal-1": 3, "shoal-2": 0} if leader else {},
            high_watermark_lag_records=2,
        )
    )
    metrics.storage.watch(
        lambda: StorageView(
            sst_files_bytes=5_000_000,
            live_data_bytes=4_000_000,
            pending_compaction_bytes=1_000,
            memtable_bytes=64_000,
            running_compactions=0,
            write_stopped=False,
        )
    )
    metrics.storage.watch_disk(data_dir)
    metrics.catalog.watch(
        lambda: [
            StreamView(
                name=STREAM,
                mode="ON_DEMAND",
                open_shards=len(SHARDS),
                consumers_by_status={"ACTIVE": 1},
            )
        ]
    )
    metrics.streams.watch_subscriptions(lambda: {STREAM: len(SHARDS)})
    metrics.autoscaler.ceiling(200)
    metrics.tls.watch(
        lambda: [
            CertificateExpiry(
                file=str(data_dir / "tls.crt"), usage="certificate", not_after_s=4_102_444_800
            ),
            CertificateExpiry(file=str(data_dir / "ca.crt"), usage="ca", not_after_s=4_102_444_800),
        ]
    )
    metrics.replication.leadership_gained()
    metrics.replication.leadership_lost()
    metrics.quorum.leader_observed("shoal-1:50052")
    metrics.quorum.leader_observed("shoal-0:50052")
    step(metrics, random.Random(node_id))
    return metrics


def step(metrics: NodeMetrics, rng: random.Random) -> None:
    """One round of traffic on every probe method (the stream has enhanced monitoring on)."""
    for shard in SHARDS:
        records = rng.randint(1, 50)
        metrics.gateway.request_finished("PutRecords", "OK", rng.uniform(0.001, 0.02))
        metrics.gateway.request_finished("PutRecord", "OK", rng.uniform(0.001, 0.01))
        metrics.gateway.request_finished("GetRecords", "OK", rng.uniform(0.001, 0.05))
        metrics.gateway.request_finished(
            "PutRecords", "ProvisionedThroughputExceededException", rng.uniform(0.001, 0.005)
        )
        metrics.streams.records_written(STREAM, shard, records, records * 100, ("ALL",))
        metrics.streams.records_read(
            STREAM, shard, records, records * 100, rng.randint(0, 5_000), ("ALL",)
        )
        metrics.streams.subscription_event(STREAM, shard, records, records * 100, 40, ("ALL",))
        metrics.streams.put_records_finished(STREAM, records, 1, 0)
        metrics.streams.subscribe_refused(STREAM)
        metrics.autoscaler.acted(STREAM, rng.choice(("split", "merge")))
        metrics.streams.write_throttled(STREAM, shard, 1, ("ALL",))
        metrics.streams.read_throttled(STREAM, shard, ("ALL",))
        metrics.storage.group_committed(records, records * 100, rng.uniform(0.0002, 0.004))
        metrics.quorum.journal_synced(rng.uniform(0.0002, 0.004))
        metrics.replication.batch_acknowledged(records, records * 100)
    metrics.video.session_opened()
    metrics.video.received_bytes("porch", rng.randint(100_000, 500_000))
    metrics.video.received_fragment("porch")
    metrics.video.persisted(rng.uniform(0.002, 0.05))
    metrics.video.sent("porch", fragments=1, count=rng.randint(100_000, 500_000))
    metrics.video.error_ack("porch", "INVALID_MKV_DATA")
    metrics.video.session_closed()


class Load:
    """Calls `step` on each registry every `interval_s` from a daemon thread until stopped."""

    def __init__(self, nodes: list[NodeMetrics], *, interval_s: float = 0.2) -> None:
        self._nodes = nodes
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._stop.wait(self._interval_s):
            for node in self._nodes:
                step(node, rng)
