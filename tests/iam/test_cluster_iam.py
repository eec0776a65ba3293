"""Access control on a two-node cluster (real processes; two are enough to cross a node
boundary, and cheaper to start than three): nodes replicate and forward to each other with
the node signature while principals' keys are refused on those RPCs, and a
policy change made on one node is in force on every node within a bound measured here (the
time from the IamService's answer to the first request each node decides by it)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import grpc
import pytest

from broker.api.iam.v1 import iam_pb2, iam_pb2_grpc
from broker.api.internal.v1 import internal_pb2 as pb
from broker.clock import SystemClock
from broker.iam import grpc_signing
from tests.support import ClusterProcesses, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT_KEY, ROOT_SECRET = "AKIDROOT", "root-secret"
# The bound docs/operations.md states: a policy change is in force on every node within it.
PROPAGATION_S_MAX = 5.0
NODES = 2


def signed(method: str, key: str = ROOT_KEY, secret: str = ROOT_SECRET) -> Any:
    return grpc_signing.signed_metadata(
        access_key_id=key, secret=secret, region="us-east-1", method=method,
        wall_ms=SystemClock().wall_ms(),
    )  # fmt: skip


def formed(endpoint: str) -> bool:
    method = "/broker.api.internal.v1.ClusterAdminService/ClusterStatus"
    with grpc.insecure_channel(endpoint) as channel:
        call: Any = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ClusterStatusResponse.FromString,
        )
        try:
            status = call(pb.ClusterStatusRequest(), metadata=signed(method), timeout=5)
        except grpc.RpcError:
            return False
    active = [n for n in status.nodes if n.state == "ACTIVE"]
    return len(active) == NODES and bool(status.controller)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcesses]:
    processes = ClusterProcesses(
        tmp_path_factory.mktemp("iam-cluster"),
        size=NODES,
        extra_env={
            "SHOAL_ACCESS_CONTROL": "true",
            "SHOAL_AWS_CREDENTIALS": f"{ROOT_KEY}:{ROOT_SECRET}",
            "SHOAL_RAFT_PASSWORD": "a cluster secret",
        },
    )
    processes.start()
    try:
        wait_until(lambda: formed(processes.endpoints[0]), deadline_s=60, what="cluster formed")
        for node in processes.nodes:  # the AWS door opens after the gRPC one
            wait_until(partial(_http_open, node.http_port), deadline_s=30, what="AWS port")
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()


def _http_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def kinesis(node: Any, key: str, secret: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


def iam_call(endpoint: str, method: str, request: Any) -> Any:
    with grpc.insecure_channel(endpoint) as channel:
        stub = iam_pb2_grpc.IamServiceStub(channel)
        full = f"/broker.api.iam.v1.IamService/{method}"
        return getattr(stub, method)(request, metadata=signed(full), timeout=10)


def allowed(client: Any) -> bool:
    try:
        client.describe_stream_summary(StreamName="shared")
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] != "AccessDeniedException":
            raise
        return False
    return True


def _active(client: Any, stream: str) -> bool:
    try:
        summary = client.describe_stream_summary(StreamName=stream)
    except client.exceptions.ResourceNotFoundException:
        return False
    return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")


def test_replication_works_and_policy_changes_reach_every_node(cluster: ClusterProcesses) -> None:
    first, second = cluster.nodes
    root = kinesis(first, ROOT_KEY, ROOT_SECRET)
    root.create_stream(StreamName="shared", ShardCount=1)
    wait_until(
        lambda: (
            root.describe_stream_summary(StreamName="shared")["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        deadline_s=30,
        what="stream ACTIVE",
    )
    # The second node answers from its own metadata replica, which may trail the first's.
    writer = kinesis(second, ROOT_KEY, ROOT_SECRET)
    wait_until(partial(_active, writer, "shared"), deadline_s=30, what="stream on node 2")
    # Written through one node, read through another: forwarding and replication between
    # nodes carry the node signature.
    put = writer.put_record(StreamName="shared", Data=b"hello", PartitionKey="k")
    reader = kinesis(first, ROOT_KEY, ROOT_SECRET)
    iterator = reader.get_shard_iterator(
        StreamName="shared", ShardId=put["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert [r["Data"] for r in reader.get_records(ShardIterator=iterator)["Records"]] == [b"hello"]

    principal = iam_call(
        first.endpoint,
        "CreatePrincipal",
        iam_pb2.CreatePrincipalRequest(account_id="000000000000", name="ops"),
    )
    key = iam_call(
        first.endpoint,
        "CreateAccessKey",
        iam_pb2.CreateAccessKeyRequest(principal_arn=principal.arn),
    )
    clients = [kinesis(node, key.access_key_id, key.secret_access_key) for node in cluster.nodes]
    # The key itself must be known everywhere first (that is propagation too). Asked of each
    # node's IamService (its own image), not by trying the key: every try with a key a node
    # does not know yet counts as a guess toward the brute-force throttle.
    for node in cluster.nodes:
        wait_until(
            partial(_known, node.endpoint, principal.arn, key.access_key_id),
            deadline_s=PROPAGATION_S_MAX,
            what="key",
        )
    assert not any(allowed(client) for client in clients)

    document = json.dumps(
        {"Statement": {"Effect": "Allow", "Action": "kinesis:Describe*", "Resource": "*"}}
    )
    started = time.monotonic()
    iam_call(
        first.endpoint,
        "AttachPolicy",
        iam_pb2.AttachPolicyRequest(
            principal_arn=principal.arn, policy_name="d", document=document
        ),
    )
    granted = [_seconds_until(partial(allowed, c), started) for c in clients]
    started = time.monotonic()
    iam_call(
        first.endpoint,
        "DetachPolicy",
        iam_pb2.DetachPolicyRequest(principal_arn=principal.arn, policy_name="d"),
    )
    revoked = [_seconds_until(partial(denied, c), started) for c in clients]
    print(f"policy propagation: grant {max(granted):.3f} s, revoke {max(revoked):.3f} s")
    assert max(granted + revoked) <= PROPAGATION_S_MAX

    # A principal's key cannot call the node-to-node services on any node.
    method = "/broker.api.internal.v1.NodeService/ShardRead"
    with grpc.insecure_channel(second.endpoint) as channel:
        call: Any = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ShardReadResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            call(pb.ShardReadRequest(), metadata=signed(method), timeout=5)
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


def denied(client: Any) -> bool:
    return not allowed(client)


def _known(endpoint: str, principal_arn: str, access_key_id: str) -> bool:
    listed = iam_call(
        endpoint, "ListAccessKeys", iam_pb2.ListAccessKeysRequest(principal_arn=principal_arn)
    )
    return any(entry.access_key_id == access_key_id for entry in listed.keys)


def _seconds_until(predicate: Any, started: float) -> float:
    wait_until(predicate, deadline_s=PROPAGATION_S_MAX * 2, what="policy in force")
    return time.monotonic() - started
