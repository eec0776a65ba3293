"""A rolling upgrade and a rollback with two versions of Shoal in one cluster.

Goal (issue 16 item 6): nodes of the previous version and of this one share a cluster while
it rolls, in both directions, and no acknowledged record is lost or doubled in place; the
cluster keeps the first metadata format (the one the previous version reads) until its last
node runs this version, refusing meanwhile what only the newer format can carry, then the
controller raises it (broker/meta/metadata_format.py). Method: the previous version's code
(`PREVIOUS`, the last commit before issue 16's work, which reads metadata format 1 only)
exported from git into a temporary directory and run with the same interpreter; three of its
nodes take writes, one is stopped (SIGTERM, as a StatefulSet rolls), started on this version
and rolled back, then all are rolled forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from broker.errors import ErrorCode, ShoalError
from broker.meta.metadata_format import (
    FIRST_FORMAT,
    METADATA_FORMAT_MAX,
    STORED_BATCHES_LEVEL,
    members_after,
)
from broker.streams.sequence_numbers import is_aws_layout
from tests.cluster.helpers import Producer, check_no_loss, cluster_status, wait_formed
from tests.support import REPO, ClusterProcesses, NodeProcess, export_code, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PREVIOUS = "1faf780"  # main before issue 16 (cli: one broker/cli/ package ...)


def run_from(node: NodeProcess, code: Path) -> None:
    """Starts `node` with the code in `code`."""
    node.code_dir = code
    node.start()


def _call_unless_unavailable(endpoint: str, operation: str, request: dict[str, str]) -> bool:
    """The call made (True), or False on ServiceUnavailable (a connection not back yet)."""
    with ShoalClient(endpoint) as client:
        try:
            client.call(operation, request)
        except ShoalError as error:
            if error.code is not ErrorCode.UNAVAILABLE:
                raise
            return False
    return True


def _marked_format(node: NodeProcess) -> int:
    marker = json.loads((node.data_dir / "shoal-data.json").read_text())
    level: int = marker["metadata_format"]
    return level


def test_roll_forward_and_back_under_load(tmp_path: Path) -> None:
    previous = export_code(PREVIOUS, tmp_path / "previous")
    (tmp_path / "data").mkdir()
    cluster = ClusterProcesses(tmp_path / "data")
    producer: Producer | None = None
    try:
        for node in cluster.nodes:
            run_from(node, previous)
        wait_formed(cluster)
        with ShoalClient(cluster.endpoints[0]) as client:
            client.call("CreateStream", {"StreamName": "orders", "ShardCount": 3})
        producer = Producer(cluster.endpoints, "orders").start()
        producer.wait_acknowledged(200)
        encrypt = {"StreamName": "orders", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}
        # One node on this version, then rolled back: the cluster stays at format 1, and what
        # format 1 cannot carry (a stream's encryption) is refused, not written for the old
        # nodes to choke on.
        newest = cluster.nodes[2]
        newest.terminate()
        run_from(newest, REPO)
        wait_formed(cluster)
        assert cluster_status(newest.endpoint).metadata_format == 1
        with ShoalClient(newest.endpoint) as client, pytest.raises(ShoalError) as refused:
            client.call("StartStreamEncryption", encrypt)
        assert refused.value.code is ErrorCode.INVALID_ARGUMENT
        # The level of a stream's data key (which StartStreamEncryption carries).
        needed = members_after(FIRST_FORMAT, "SetStreamEncryption")["data_key"]
        assert f"metadata format {needed}" in refused.value.message
        producer.wait_acknowledged(len(producer.acknowledged) + 100)
        newest.terminate()
        run_from(newest, previous)
        wait_formed(cluster)
        producer.wait_acknowledged(len(producer.acknowledged) + 100)
        # Upgrade, highest ordinal first, as a StatefulSet rolls; the newest format once all
        # run it (from STORED_BATCHES_LEVEL on, leaders write shard-log batches in format 3 and
        # replicate their stored bytes: the records acknowledged after the raise below go
        # that way, and every node must still hold every acknowledged record).
        for node in reversed(cluster.nodes):
            node.terminate()
            run_from(node, REPO)
            wait_formed(cluster)
            producer.wait_acknowledged(len(producer.acknowledged) + 100)
        wait_until(
            lambda: all(
                cluster_status(e).metadata_format == METADATA_FORMAT_MAX for e in cluster.endpoints
            ),
            deadline_s=30,
            what=f"metadata format {METADATA_FORMAT_MAX} on every node",
        )
        # Through the node restarted last: a client retries while its connection comes back.
        wait_until(
            lambda: _call_unless_unavailable(
                cluster.endpoints[0], "StartStreamEncryption", encrypt
            ),
            deadline_s=30,
            what=f"StartStreamEncryption accepted at format {METADATA_FORMAT_MAX}",
        )
        # Each node records it in its data directory (within a heartbeat interval), so a
        # binary that reads only format 1 refuses the directory in one line.
        wait_until(
            lambda: all(_marked_format(node) == METADATA_FORMAT_MAX for node in cluster.nodes),
            deadline_s=30,
            what=f"metadata format {METADATA_FORMAT_MAX} in every data directory's marker",
        )
        assert METADATA_FORMAT_MAX >= STORED_BATCHES_LEVEL
        producer.wait_acknowledged(len(producer.acknowledged) + 300)
        producer.stop()
        assert not producer.lost
        for endpoint in cluster.endpoints:
            check_no_loss(endpoint, "orders", producer.acknowledged)
        # Sequence numbers: the stream the previous release made keeps its layout for good
        # (its consumers stored those numbers, and AWS's layout sorts below them), also for
        # what was written after the raise; a stream made now gets AWS's.
        numbers = [number for _, number in producer.acknowledged.values()]
        assert numbers and not any(is_aws_layout(number) for number in numbers)
        with ShoalClient(cluster.endpoints[0]) as client:
            client.call("CreateStream", {"StreamName": "after-upgrade", "ShardCount": 2})
            shards = client.call("ListShards", {"StreamName": "after-upgrade"})["Shards"]
        starts = [int(s["SequenceNumberRange"]["StartingSequenceNumber"]) for s in shards]
        assert all(is_aws_layout(str(start)) for start in starts)
        assert starts[1] - starts[0] == 2**144 + 16
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if producer is not None and producer._thread is not None and producer._thread.is_alive():
            producer.stop()
        cluster.stop()
