"""Corruption of a node's shard log, with real processes (issue 20): bytes overwritten in the
middle of a node's largest SST file while it is stopped.

- One node (no other copy): GetRecords returns every record before the damage, then fails
  loudly (InternalFailure naming the shard), never an empty page that reads as the end.
- Three nodes, the damaged node leading the shard again: every acknowledged record reads back
  through every node (the damaged range is read from another replica), and the damaged
  replica repairs itself from a healthy one (its own log then reads back whole).

The SST exists because a stopped node flushes its memtables; SIGTERM stops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.client.grpc_client import ShoalClient
from broker.errors import ErrorCode, ShoalError
from broker.types import Offset, ShardUid
from tests.chaos import disks
from tests.chaos.workload import create_stream, read_replica
from tests.cluster.helpers import (
    Producer,
    check_no_loss,
    cluster_status,
    replica_status,
    shard_leaders,
    wait_formed,
)
from tests.support import ClusterProcesses, NodeProcess, serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SHARD = "shardId-000000000000"
SCRUB_FAST = {"SHOAL_SCRUB_BYTES_PER_SECOND": str(64 << 20), "SHOAL_SCRUB_PASS_INTERVAL_MS": "500"}


def corrupt_largest_sst(data_dir: Path) -> Path:
    """64 bytes in the middle of the node's largest SST file (a data block of the records)."""
    ssts = sorted((data_dir / "log").glob("*.sst"), key=lambda f: f.stat().st_size)
    assert ssts, f"no SST file under {data_dir / 'log'}"
    sst = ssts[-1]
    with sst.open("r+b") as file:
        file.seek(sst.stat().st_size // 2)
        file.write(b"\xaa" * 64)
    return sst


def _write(endpoint: str, stream: str, batches: int) -> list[bytes]:
    written: list[bytes] = []
    with ShoalClient(endpoint) as client:
        for batch in range(batches):
            datas = [f"{batch}:{i}:".encode() + bytes(200) for i in range(100)]
            records = [{"PartitionKey": f"k{i}", "Data": data} for i, data in enumerate(datas)]
            answer = client.call("PutRecords", {"StreamName": stream, "Records": records})
            assert answer["FailedRecordCount"] == 0
            written += datas
    return written


def _read_pages(client: ShoalClient, stream: str, read: list[bytes]) -> None:
    """GetRecords from TRIM_HORIZON into `read` until an error; an empty page at the tip (a
    read taken for the end of the shard) fails the test."""
    token = client.call(
        "GetShardIterator",
        {"StreamName": stream, "ShardId": SHARD, "ShardIteratorType": "TRIM_HORIZON"},
    )["ShardIterator"]
    for _ in range(1_000):  # bounded: at most 1,000 pages
        page = client.call("GetRecords", {"ShardIterator": token, "Limit": 1000})
        read += [r["Data"] for r in page["Records"]]
        token = page["NextShardIterator"]
        assert page["Records"] or page["MillisBehindLatest"] > 0, "the damage read as the end"


def test_a_single_node_fails_loudly_at_the_damage_instead_of_ending_the_shard(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path / "node", extra_env={"SHOAL_SCRUB_BYTES_PER_SECOND": "0"})
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=60, what="the node to serve")
        create_stream(node.endpoint, "solo", 1)
        written = _write(node.endpoint, "solo", 60)
        node.terminate()  # flushes the memtables into an SST
        corrupt_largest_sst(node.data_dir)
        node.start()
        wait_until(lambda: serving(node.endpoint), deadline_s=60, what="the node to serve")
        read: list[bytes] = []
        with ShoalClient(node.endpoint) as client, pytest.raises(ShoalError) as failed:
            _read_pages(client, "solo", read)
        assert failed.value.code is ErrorCode.INTERNAL_FAILURE
        assert SHARD in failed.value.message
        assert read == written[: len(read)]  # everything before the damage, in order
        assert len(read) < len(written)
        wait_until(  # the node's log reaches its file a moment after the answer
            lambda: "log_corruption_detected" in node.log_text(),
            deadline_s=10,
            what="the corruption in the node's log",
        )
    finally:
        node.terminate()


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return SCRUB_FAST


def test_a_damaged_leader_is_read_around_and_repaired_from_a_follower(
    cluster: ClusterProcesses,
) -> None:
    create_stream(cluster.endpoints[0], "damaged", 1)
    producer = Producer(cluster.endpoints, "damaged", batch_size=100).start()
    producer.wait_acknowledged(6_000)
    producer.stop()
    status = cluster_status(cluster.endpoints[0])
    (shard,) = [s for s in status.shards if s.stream_name == "damaged"]
    preferred = cluster.node_named(shard.replicas[0])  # the leader rebalancing brings back
    preferred.terminate()  # drains, then flushes its memtables into an SST
    corrupt_largest_sst(preferred.data_dir)
    preferred.start()
    wait_formed(cluster)
    wait_until(
        lambda: shard_leaders(cluster.endpoints[0], "damaged")[SHARD] == shard.replicas[0],
        deadline_s=60,
        what="the damaged node leading the shard again",
    )
    for endpoint in cluster.endpoints:
        check_no_loss(endpoint, "damaged", producer.acknowledged)

    def repaired() -> bool:
        if "log_range_repaired" not in preferred.log_text():
            return False
        try:
            own = read_replica(preferred.endpoint, shard.replicas[0], SHARD, shard.shard_uid)
        except grpc.RpcError:
            return False
        held = {data for _, data in own.records}
        return all(data in held for data in producer.acknowledged)

    wait_until(repaired, deadline_s=60, what="the damaged replica repaired from a healthy one")
    assert "log_corruption_detected" in preferred.log_text()


def test_a_block_holding_two_shards_records_is_repaired_for_good(
    cluster: ClusterProcesses,
) -> None:
    """The chaos test's seed 855155360: a node's first, small SST, with a block holding the end
    of one shard's records and the start of the next one's, corrupted while the node is
    stopped. Repairing the ranges is not enough there (every seek into the rest of the first
    shard still reads the block, rocks_store.repair): the node drops the file (to lost/),
    copies back what it held, and both its replicas read back whole again, with what was
    written since."""
    create_stream(cluster.endpoints[0], "shared", 2)
    first = Producer(cluster.endpoints, "shared", name="a", batch_size=20).start()
    first.wait_acknowledged(600)
    first.stop()
    shards = [s for s in cluster_status(cluster.endpoints[0]).shards if s.stream_name == "shared"]
    node = cluster.nodes[1]
    node_id = "node-2"
    assert all(node_id in s.replicas for s in shards)
    uids = {s.shard_uid for s in shards}

    def caught_up() -> bool:
        return len({(r.log_end, r.high_watermark) for r in _replicas_of(cluster, uids)}) == 2

    wait_until(caught_up, deadline_s=30, what="every replica holding what was committed")
    ends = {
        ShardUid(r.shard_uid): Offset(r.log_end)
        for r in replica_status(node.endpoint).replicas
        if r.shard_uid in uids
    }
    node.terminate()  # drains, then flushes its memtables into one small SST
    disks.corrupt_block_of_two_shards(node.data_dir / "log", ends)
    node.start()
    wait_formed(cluster)
    second = Producer(cluster.endpoints, "shared", name="b", batch_size=20).start()
    second.wait_acknowledged(200)
    second.stop()
    written = set(first.acknowledged) | set(second.acknowledged)

    def whole() -> bool:
        held: set[bytes] = set()
        for shard in shards:
            try:
                own = read_replica(node.endpoint, node_id, shard.shard_id, shard.shard_uid)
            except grpc.RpcError:
                return False
            held |= {data for _, data in own.records}
        return written <= held

    wait_until(whole, deadline_s=90, what="both damaged replicas reading back whole")
    assert "log_store_corrupt_files_dropped" in node.log_text()
    assert not any(r.damaged for r in replica_status(node.endpoint).replicas)


def _replicas_of(cluster: ClusterProcesses, uids: set[int]) -> list[Any]:
    return [
        r
        for endpoint in cluster.endpoints
        for r in replica_status(endpoint).replicas
        if r.shard_uid in uids
    ]
