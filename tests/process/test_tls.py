"""Transport security on a real 3-node cluster: mutual TLS on the gRPC port, HTTPS on the AWS door.

Goal: with certificates configured, clients (native gRPC and boto3 over HTTPS) and the
node-to-node traffic (replication, heartbeats, forwarded appends, Prepare on failover) all work
over TLS; a plaintext caller, a caller whose certificate another CA signed, and a node
configured with another CA are refused, and the misconfigured node is never counted as a live
member nor given replicas. Method: a CA, one node certificate (IP SAN 127.0.0.1, server and
client usages), a client certificate and a rogue CA made with `cryptography`
(tests/certificates.py); three `shoal serve` processes; the public client with
`client_credentials`, the internal ReplicaStatus and ClusterStatus RPCs over mutual TLS;
kill -9 of a shard leader at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import grpc
import pytest

from broker.api.internal.v1 import internal_pb2 as pb
from broker.client.admin import ClusterAdminClient
from broker.client.grpc_client import ShoalClient
from broker.errors import ErrorCode, ShoalError
from broker.tls import client_credentials, open_channel
from tests.certificates import Authority, Leaf, issue, make_authority
from tests.support import ClusterProcesses, NodeProcess, read_shard, wait_until

pytestmark = [pytest.mark.process, pytest.mark.cluster, pytest.mark.slow]

STREAM = "secure"


def tls_env(authority: Authority, leaf: Leaf) -> dict[str, str]:
    return {
        "SHOAL_TLS_CERT_FILE": str(leaf.cert_file),
        "SHOAL_TLS_KEY_FILE": str(leaf.key_file),
        "SHOAL_TLS_CA_FILE": str(authority.cert_file),
    }


def credentials(authority: Authority, leaf: Leaf | None) -> grpc.ChannelCredentials:
    return client_credentials(
        ca_file=authority.cert_file,
        cert_file=leaf.cert_file if leaf else None,
        key_file=leaf.key_file if leaf else None,
    )


def cluster_status(
    endpoint: str, creds: grpc.ChannelCredentials
) -> pb.ClusterStatusResponse | None:
    try:
        with ClusterAdminClient(endpoint, timeout_s=5, credentials=creds) as admin:
            return admin.cluster_status()
    except ShoalError:
        return None


def _active(client: ShoalClient, stream: str) -> bool:
    try:
        summary = client.call("DescribeStreamSummary", {"StreamName": stream})
    except ShoalError as error:
        if error.code is ErrorCode.RESOURCE_NOT_FOUND:
            return False
        raise
    return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")


def replica_ends(endpoint: str, creds: grpc.ChannelCredentials | None) -> dict[int, int]:
    """shard uid -> high watermark of each replica the node at `endpoint` holds (an internal
    RPC, so this also checks that a cluster certificate reaches the internal services)."""
    with open_channel(endpoint, creds) as channel:
        call: Any = channel.unary_unary(
            "/broker.api.internal.v1.ReplicationService/ReplicaStatus",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=pb.ReplicaStatusResponse.FromString,
        )
        status: pb.ReplicaStatusResponse = call(pb.ReplicaStatusRequest(), timeout=5)
    return {replica.shard_uid: replica.high_watermark for replica in status.replicas}


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = make_authority(tmp_path / "pki", "cluster-ca")
    rogue = make_authority(tmp_path / "rogue", "rogue-ca")
    return {
        "ca": ca,
        "rogue": rogue,
        "node": issue(ca, tmp_path / "pki", "node"),
        "client": issue(ca, tmp_path / "pki", "client"),
        "rogue_node": issue(rogue, tmp_path / "rogue", "node"),
    }


@pytest.fixture
def cluster(tmp_path: Path, pki: dict[str, Any]) -> Iterator[ClusterProcesses]:
    processes = ClusterProcesses(tmp_path, extra_env=tls_env(pki["ca"], pki["node"]))
    processes.start()
    try:
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()


def test_tls_cluster_serves_replicates_and_refuses_strangers(
    cluster: ClusterProcesses, pki: dict[str, Any], tmp_path: Path
) -> None:
    creds = credentials(pki["ca"], pki["client"])
    endpoints = cluster.endpoints

    def formed() -> bool:
        statuses = [cluster_status(endpoint, creds) for endpoint in endpoints]
        return all(
            status is not None
            and bool(status.controller)
            and sum(node.state == "ACTIVE" for node in status.nodes) == 3
            for status in statuses
        )

    wait_until(formed, deadline_s=60, what="the TLS cluster to form")

    # Native client over mutual TLS; records go to both shards and through every node.
    records: list[dict[str, Any]] = [
        {"Data": f"r{i}".encode(), "PartitionKey": f"k{i}"} for i in range(30)
    ]
    with ShoalClient(endpoints[0], credentials=creds) as client:
        client.call("CreateStream", {"StreamName": STREAM, "ShardCount": 2})
    # Each node answers from its own metadata replica, which may trail the one that
    # acknowledged: wait for ACTIVE on every node before writing through it.
    for endpoint in endpoints:
        with ShoalClient(endpoint, credentials=creds) as client:
            wait_until(
                partial(_active, client, STREAM),
                deadline_s=30,
                what=f"the stream ACTIVE on {endpoint}",
            )
    for index, endpoint in enumerate(endpoints):
        with ShoalClient(endpoint, credentials=creds) as client:
            answer = client.call(
                "PutRecords",
                {"StreamName": STREAM, "Records": records[index * 10 : index * 10 + 10]},
            )
            assert answer["FailedRecordCount"] == 0

    # boto3 over HTTPS, verifying the node against the cluster CA.
    node = cluster.nodes[1]
    kinesis = boto3.client(
        "kinesis",
        endpoint_url=f"https://127.0.0.1:{node.http_port}",
        verify=str(pki["ca"].cert_file),
        region_name="us-east-1",
        aws_access_key_id="dummy",
        aws_secret_access_key="dummy",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    kinesis.put_record(StreamName=STREAM, PartitionKey="boto", Data=b"over https")
    expected = {record["Data"] for record in records} | {b"over https"}

    def read_over_https() -> set[bytes]:
        seen: set[bytes] = set()
        for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            seen |= {r["Data"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]}
        return seen

    # A follower serving the read may be a heartbeat behind the leader's high watermark.
    wait_until(lambda: read_over_https() == expected, deadline_s=10, what="reads over HTTPS")

    # Replication over mutual TLS: every node holds both shards up to the same high watermark
    # (the stream's shards only: the cluster's own audit-trail stream has replicas too).
    status = cluster_status(endpoints[0], creds)
    assert status is not None
    uids = {shard.shard_uid for shard in status.shards if shard.stream_name == STREAM}

    def replicated() -> bool:
        ends = [
            {uid: end for uid, end in replica_ends(endpoint, creds).items() if uid in uids}
            for endpoint in endpoints
        ]
        return (
            len(ends[0]) == 2
            and all(end == ends[0] for end in ends)
            and sum(ends[0].values()) >= len(records) + 1
        )

    wait_until(replicated, deadline_s=20, what="every replica to hold every record")

    # Strangers are refused in the handshake, on the public and the internal services alike.
    strangers = {
        "plaintext": None,
        "no client certificate": credentials(pki["ca"], None),
        "certificate from another CA": credentials(pki["ca"], pki["rogue_node"]),
        "trusts another CA": credentials(pki["rogue"], pki["rogue_node"]),
    }
    for name, stranger in strangers.items():
        with (
            pytest.raises(ShoalError) as refused,
            ShoalClient(endpoints[2], timeout_s=5, credentials=stranger) as client,
        ):
            client.call("ListStreams", {})
        assert refused.value.code is ErrorCode.UNAVAILABLE, name
        with pytest.raises(grpc.RpcError):
            replica_ends(endpoints[2], stranger)

    # A node configured with another CA (same Raft password, so it does reach the metadata
    # quorum) registers, but its heartbeats are refused: it is fenced and gets no replicas.
    rogue = NodeProcess(tmp_path / "rogue-node")
    rogue.extra_env = {
        "SHOAL_NODE_ID": "node-4",
        "SHOAL_JOIN": ",".join(n.raft_address for n in cluster.nodes),
        "SHOAL_HEARTBEAT_INTERVAL_MS": "100",
        "SHOAL_SESSION_TIMEOUT_MS": "1000",
        **tls_env(pki["rogue"], pki["rogue_node"]),
    }
    rogue.start()
    try:

        def rogue_fenced() -> bool:
            status = cluster_status(endpoints[0], creds)
            states = {n.node_id: n.state for n in status.nodes} if status else {}
            return states.get("node-4") == "FENCED"

        wait_until(rogue_fenced, deadline_s=30, what="the misconfigured node to be fenced")
        with ShoalClient(endpoints[0], credentials=creds) as client:
            client.call("CreateStream", {"StreamName": "after", "ShardCount": 4})
        status = cluster_status(endpoints[0], creds)
        assert status is not None
        placed = {r for s in status.shards if s.stream_name == "after" for r in s.replicas}
        assert placed and "node-4" not in placed
        assert all(s.leader != "node-4" for s in status.shards)
    finally:
        rogue.terminate()

    # Failover over TLS: kill -9 the leader of a shard; writes resume and nothing is lost.
    status = cluster_status(endpoints[0], creds)
    assert status is not None
    victim_id = next(s.leader for s in status.shards if s.stream_name == STREAM)
    victim = cluster.node_named(victim_id)
    victim.kill()
    survivor = next(n for n in cluster.nodes if n is not victim)

    victim_shards = [s.shard_id for s in status.shards if s.leader == victim_id]
    attempts = iter(range(1_000))

    def put_after_failover() -> bool:
        # One record into every shard the victim led (explicit hash keys: first and last).
        try:
            with ShoalClient(survivor.endpoint, timeout_s=5, credentials=creds) as client:
                for hash_key in ("0", str(2**128 - 1)):
                    client.call(
                        "PutRecord",
                        {
                            "StreamName": STREAM,
                            "PartitionKey": "failover",
                            "ExplicitHashKey": hash_key,
                            "Data": f"after-{next(attempts)}".encode(),
                        },
                    )
        except ShoalError:
            return False
        return True

    wait_until(put_after_failover, deadline_s=30, what="writes to resume after failover")
    with ShoalClient(survivor.endpoint, credentials=creds) as client:
        shards = client.call("ListShards", {"StreamName": STREAM})["Shards"]
        data = [r["Data"] for s in shards for r in read_shard(client, STREAM, s["ShardId"])]
    acknowledged: list[bytes] = [record["Data"] for record in records] + [b"over https"]
    assert sorted(d for d in data if d in acknowledged) == sorted(acknowledged)  # once each
    assert victim_shards and status.shards


def test_unreadable_certificate_ends_the_process(tmp_path: Path, pki: dict[str, Any]) -> None:
    """A wrong path in the Secret's mount must crash the pod (so it is restarted and its
    events show why), not leave a process that never serves."""
    node = NodeProcess(tmp_path / "node")
    node.extra_env = {**tls_env(pki["ca"], pki["node"]), "SHOAL_TLS_CA_FILE": "/nonexistent.crt"}
    node.start()
    assert node.process is not None
    try:
        code = node.process.wait(timeout=60)
    finally:
        node.terminate()
    assert code == 1
    assert "No such file or directory: '/nonexistent.crt'" in node.log_text()
