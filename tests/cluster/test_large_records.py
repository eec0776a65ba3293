"""10 MiB records on a 3-node cluster: after UpdateMaxRecordSize, a record of 10 MiB (key
included) sent through a node that does not lead the shard is forwarded to the leader
(NodeService.ShardAppend), replicated to both followers, and read back whole through every
node, over gRPC and over the AWS HTTP door (base64 JSON, about 13.3 MiB per body)."""

from __future__ import annotations

import boto3
import botocore.config
import pytest

from broker.client.grpc_client import ShoalClient
from tests.cluster.helpers import shard_leaders, wait_applied_everywhere
from tests.support import ClusterProcesses, read_shard, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MiB = 1024 * 1024


def test_ten_mib_records_cross_the_cluster(cluster: ClusterProcesses) -> None:
    first = cluster.endpoints[0]
    with ShoalClient(first, timeout_s=60) as client:
        client.call("CreateStream", {"StreamName": "big", "ShardCount": 1})
        wait_until(
            lambda: bool(shard_leaders(first, "big").get("shardId-000000000000")),
            deadline_s=30,
            what="a leader",
        )
        arn = client.call("DescribeStreamSummary", {"StreamName": "big"})[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        client.call("UpdateMaxRecordSize", {"StreamARN": arn, "MaxRecordSizeInKiB": 10240})
    # The other nodes check the size against their own metadata replica.
    wait_applied_everywhere(cluster.endpoints)
    leader = shard_leaders(first, "big")["shardId-000000000000"]
    others = [n for n in cluster.nodes if n is not cluster.node_named(leader)]
    data = bytes(range(256)) * (10 * MiB // 256 - 1) + b"g" * 255
    assert len(data) + 1 == 10 * MiB
    with ShoalClient(others[0].endpoint, timeout_s=60) as client:
        client.call("PutRecord", {"StreamName": "big", "PartitionKey": "k", "Data": data})
    kinesis = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{others[1].http_port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=5
        ),
    )
    try:
        written = kinesis.put_records(
            StreamName="big", Records=[{"PartitionKey": "h", "Data": data[::-1]}]
        )
        assert written["FailedRecordCount"] == 0
        token = kinesis.get_shard_iterator(
            StreamName="big", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        over_http = kinesis.get_records(ShardIterator=token, Limit=1)["Records"]
        assert [r["Data"] for r in over_http] == [data]
    finally:
        kinesis.close()
    for endpoint in cluster.endpoints:
        with ShoalClient(endpoint, timeout_s=60) as client:
            records = read_shard(client, "big", "shardId-000000000000")
        assert [r["Data"] for r in records] == [data, data[::-1]]
