"""A queue's delivery state survives kill -9 and restarts, on a real 3-node cluster.

Goal: an acknowledged record is never delivered again, and a received but unacknowledged one
is delivered again once its visibility timeout ends, whichever node serves the receive and
after the node that served the first receive dies. Method: records received and half of them
acknowledged through node 1 (over gRPC); node 1 killed with SIGKILL; receives through node 2
until the unacknowledged half comes back (ReceiveCount 2, new receipt handles); those
acknowledged; node 1 restarted, and a receive through it finds nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from broker.client.grpc_client import ShoalClient
from broker.errors import ShoalError
from tests.cluster.helpers import wait_applied_everywhere
from tests.support import ClusterProcesses, serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VISIBILITY_S = 2


def receive(client: ShoalClient, arn: str) -> list[dict[str, Any]]:
    answer = client.call("ReceiveQueueRecords", {"QueueARN": arn, "WaitTimeSeconds": 1})
    records: list[dict[str, Any]] = answer.get("QueueRecords", [])
    return records


def acknowledge(client: ShoalClient, arn: str, records: list[dict[str, Any]]) -> None:
    answer = client.call(
        "AcknowledgeQueueRecords",
        {"QueueARN": arn, "Entries": [{"ReceiptHandle": r["ReceiptHandle"]} for r in records]},
    )
    assert len(answer["Successful"]) == len(records), answer


def test_acknowledged_records_stay_acknowledged_through_kill_9(cluster: ClusterProcesses) -> None:
    first, second, _ = cluster.nodes
    with ShoalClient(first.endpoint) as client:
        client.call(
            "CreateStream", {"StreamName": "jobs", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
        )
        summary = client.call("DescribeStreamSummary", {"StreamName": "jobs"})
        stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        arn = client.call(
            "CreateQueue",
            {
                "QueueName": "workers",
                "StreamConfigurationList": [
                    {"StreamARN": stream_arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}
                ],
                "QueueAttributes": {"VisibilityTimeoutSeconds": VISIBILITY_S},
            },
        )["QueueDescription"]["QueueARN"]
        for i in range(6):
            client.call(
                "PutRecord",
                {"StreamName": "jobs", "Data": f"job-{i}".encode(), "PartitionKey": str(i)},
            )
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(received) < 6 and time.monotonic() < deadline:
            received += receive(client, arn)
        assert sorted(r["Data"] for r in received) == [f"job-{i}".encode() for i in range(6)]
        acknowledged, pending = received[:3], received[3:]
        acknowledge(client, arn, acknowledged)
    # Node 2 answers from its own metadata replica: it must hold the acknowledgements first.
    wait_applied_everywhere(cluster.endpoints)
    first.kill()

    redelivered: list[dict[str, Any]] = []
    with ShoalClient(second.endpoint, timeout_s=30) as client:
        deadline = time.monotonic() + 60
        while len(redelivered) < 3 and time.monotonic() < deadline:
            try:
                redelivered += receive(client, arn)
            except ShoalError:  # the metadata quorum re-forming after the kill
                time.sleep(0.2)
        assert sorted(r["RecordId"] for r in redelivered) == sorted(r["RecordId"] for r in pending)
        assert all(r["ReceiveCount"] == 2 for r in redelivered)
        assert {r["ReceiptHandle"] for r in redelivered}.isdisjoint(
            r["ReceiptHandle"] for r in pending
        )
        acknowledge(client, arn, redelivered)

    first.start()
    wait_until(lambda: serving(first.endpoint), deadline_s=60, what="node 1 to restart")
    with ShoalClient(first.endpoint, timeout_s=30) as client:
        time.sleep(VISIBILITY_S)  # past every visibility timeout: only unacknowledged records
        assert receive(client, arn) == []
        described = client.call("DescribeQueue", {"QueueARN": arn})["QueueDescription"]
        assert described["QueueStatus"] == "ACTIVE"
