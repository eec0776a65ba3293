"""A 3-node cluster holds 1,000 open shards and keeps serving (issue 6 point 5).

Functional, not timing (the figures are `scripts/bench --only scale`'s): five 200-shard
streams are created through different nodes; every stream takes a record on a few shards and
gives it back; ListShards pages through all of a stream's shards with NextToken and
DescribeStream with ExclusiveStartShardId, each shard once; DescribeLimits counts the 1,000
open shards and a stream that would pass the account limit (lowered at runtime) is refused.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from broker.client.grpc_client import ShoalClient
from broker.client.limits import LimitsClient
from broker.errors import ShoalError
from broker.limits import hash_key_max
from tests.cluster.helpers import create_stream, wait_applied_everywhere
from tests.support import ClusterProcesses, read_shard, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STREAMS = 5
SHARDS = 200


class _Probes:
    """The probe records of one stream, put until each is acknowledged. Only the records
    not acknowledged yet are sent again (a partly failed PutRecords while the new shards get
    their leaders stored the others); a failure whose outcome is unknown (the call's error, or
    a record's InternalFailure) may have stored the record, so a second copy of it is the
    client's retry, as with Kinesis (tests/cluster/helpers.py `unexplained_copies`), not the
    broker's duplicate."""

    def __init__(self, client: ShoalClient, name: str, records: list[dict[str, Any]]) -> None:
        self.client, self.name = client, name
        self.pending = list(records)
        self.copies_allowed = {record["Data"]: 1 for record in records}

    def put(self) -> bool:
        """One attempt; True once every probe is acknowledged."""
        try:
            answer = self.client.call(
                "PutRecords", {"StreamName": self.name, "Records": self.pending}
            )
        except ShoalError:
            for record in self.pending:
                self.copies_allowed[record["Data"]] += 1
            return False
        failed = [
            (record, result["ErrorCode"])
            for record, result in zip(self.pending, answer["Records"], strict=True)
            if "SequenceNumber" not in result
        ]
        for record, error in failed:
            if error != "ProvisionedThroughputExceededException":  # else refused unwritten
                self.copies_allowed[record["Data"]] += 1
        self.pending = [record for record, _ in failed]
        return not self.pending


def test_a_thousand_open_shards(cluster: ClusterProcesses) -> None:
    space = hash_key_max + 1  # shard i starts at i * space // SHARDS (uniform_ranges)
    probes = (0, 77, SHARDS - 1)  # shard indexes written and read back in every stream
    allowed: dict[bytes, int] = {}  # the copies each probe may have (see `_Probes`)
    for i in range(STREAMS):
        endpoint = cluster.endpoints[i % len(cluster.endpoints)]
        with ShoalClient(endpoint, timeout_s=60) as client:
            name = f"big-{i}"
            create_stream(client, name, SHARDS)
            records = [
                {
                    "PartitionKey": "k",
                    "Data": f"{name}/{p}".encode(),
                    "ExplicitHashKey": str(p * space // SHARDS),
                }
                for p in probes
            ]
            stream_probes = _Probes(client, name, records)
            wait_until(stream_probes.put, deadline_s=60, what=f"{name} writable")
            allowed.update(stream_probes.copies_allowed)

    # Streams were made through every node; node 2 answers from its own replica.
    wait_applied_everywhere(cluster.endpoints)
    with ShoalClient(cluster.endpoints[1], timeout_s=60) as client:
        limits = client.call("DescribeLimits", {})
        assert limits["OpenShardCount"] == STREAMS * SHARDS
        for i in range(STREAMS):
            name = f"big-{i}"
            for p in probes:
                data = f"{name}/{p}".encode()
                records = read_shard(client, name, f"shardId-{p:012d}")
                assert {r["Data"] for r in records} == {data}
                assert len(records) <= allowed[data], (records, allowed[data])

        listed: list[str] = []
        answer = client.call("ListShards", {"StreamName": "big-3", "MaxResults": 64})
        listed += [s["ShardId"] for s in answer["Shards"]]
        pages = 1
        while "NextToken" in answer:
            answer = client.call("ListShards", {"NextToken": answer["NextToken"], "MaxResults": 64})
            listed += [s["ShardId"] for s in answer["Shards"]]
            pages += 1
        assert pages == 4
        assert listed == [f"shardId-{p:012d}" for p in range(SHARDS)]

        described: list[str] = []
        request: dict[str, Any] = {"StreamName": "big-4"}
        while True:
            description = client.call("DescribeStream", request)["StreamDescription"]
            assert len(description["Shards"]) <= 100
            described += [s["ShardId"] for s in description["Shards"]]
            if not description["HasMoreShards"]:
                break
            request["ExclusiveStartShardId"] = described[-1]
        assert described == listed

    with LimitsClient(cluster.endpoints[2]) as limits_client:
        limits_client.update_account(shard_limit=STREAMS * SHARDS + 10)
    wait_applied_everywhere(cluster.endpoints)  # node 1 checks the new limit in its replica
    with ShoalClient(cluster.endpoints[0], timeout_s=60) as client:
        with pytest.raises(ShoalError) as caught:
            client.call("CreateStream", {"StreamName": "one-too-many", "ShardCount": 11})
        assert caught.value.code.kinesis_name == "LimitExceededException"
        # Placement needs three ACTIVE nodes: under heavy load a node's heartbeat can lapse
        # for a moment (fenced, then ACTIVE again), so that refusal is waited out.
        wait_until(
            partial(_created, client, {"StreamName": "fits", "ShardCount": 10}),
            deadline_s=60,
            what="stream 'fits' created",
        )


def _created(client: ShoalClient, request: dict[str, Any]) -> bool:
    try:
        client.call("CreateStream", request)
    except ShoalError as error:
        if "nodes are ACTIVE" not in error.message:
            raise
        return False
    return True
