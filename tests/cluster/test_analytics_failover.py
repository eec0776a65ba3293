"""A running SQL application moves to another node when its node is killed (kill -9).

Method: a 3-node cluster; an application counting records per ticker in 2-second tumbling
windows over a one-shard stream, started from TRIM_HORIZON. The node holding the application's
placement lease (the lease table, through the public LeaseService) is killed once the first
window's count has reached the output stream; records written afterwards must still be counted
by another node (it takes the placement once the dead node's lease has gone unrenewed for the
failover time, then the shard's lease, and resumes from the shard's checkpoint). Every count is
checked exactly: nothing read before the kill is counted again, nothing after it is missed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from broker.client.leases import GrpcLeaseClient
from tests.cluster.helpers import wait_formed
from tests.support import ClusterProcesses, wait_until

pytestmark = pytest.mark.cluster

REGION = "us-east-1"
ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/{}"
ROLE = "arn:aws:iam::000000000000:role/kda"
PLACEMENT = "kinesisanalytics.000000000000.us-east-1.counts.placement"
CODE = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), N INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM TICKER, COUNT(*) FROM "SOURCE_SQL_STREAM_001"
  GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '2' SECOND);
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
    processes = ClusterProcesses(tmp_path)
    processes.start()
    try:
        wait_formed(processes)
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()


def client(service: str, http_port: int) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{http_port}",
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 5}, read_timeout=30
        ),
    )


def counts(kinesis: Any) -> dict[str, int]:
    """The sum of the output's counts per ticker."""
    iterator = kinesis.get_shard_iterator(
        StreamName="out", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    totals: dict[str, int] = {}
    while True:
        answer = kinesis.get_records(ShardIterator=iterator)
        for record in answer["Records"]:
            row = json.loads(record["Data"])
            totals[row["TICKER"]] = totals.get(row["TICKER"], 0) + row["N"]
        if not answer["Records"]:
            return totals
        iterator = answer["NextShardIterator"]


def placement_owner(endpoint: str) -> str | None:
    async def owner() -> str | None:
        leases = GrpcLeaseClient(endpoint)
        try:
            found = await leases.list_leases(application=PLACEMENT)
        finally:
            await leases.close()
        return found[0].lease_owner if found else None

    return asyncio.run(owner())


def put(kinesis: Any, ticker: str, count: int) -> None:
    records = [{"Data": json.dumps({"TICKER": ticker}).encode(), "PartitionKey": ticker}] * count
    kinesis.put_records(StreamName="in", Records=records)


def test_application_moves_when_its_node_dies(cluster: ClusterProcesses) -> None:
    first = cluster.nodes[0]
    kinesis = client("kinesis", first.http_port)
    analytics = client("kinesisanalytics", first.http_port)
    kinesis.create_stream(StreamName="in", ShardCount=1)
    kinesis.create_stream(StreamName="out", ShardCount=1)
    analytics.create_application(
        ApplicationName="counts",
        ApplicationCode=CODE,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": ARN.format("in"), "RoleARN": ROLE},
                "InputSchema": {
                    "RecordFormat": {"RecordFormatType": "JSON"},
                    "RecordColumns": [
                        {"Name": "TICKER", "Mapping": "$.TICKER", "SqlType": "VARCHAR(4)"}
                    ],
                },
            }
        ],
        Outputs=[
            {
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {"ResourceARN": ARN.format("out"), "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )
    put(kinesis, "AAA", 3)
    analytics.start_application(
        ApplicationName="counts",
        InputConfigurations=[
            {
                "Id": "1.1",
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }
        ],
    )
    wait_until(lambda: counts(kinesis).get("AAA") == 3, deadline_s=60, what="first window")
    owner = placement_owner(first.endpoint)
    assert owner is not None
    victim = cluster.node_named(owner.split(":", 1)[0])
    victim.kill()
    survivor = next(node for node in cluster.nodes if node is not victim)
    kinesis = client("kinesis", survivor.http_port)
    started = time.monotonic()
    put(kinesis, "BBB", 4)
    wait_until(
        lambda: counts(kinesis).get("BBB") == 4, deadline_s=90, what="a window after the kill"
    )
    moved_to = placement_owner(survivor.endpoint)
    assert moved_to is not None and not moved_to.startswith(owner.split(":", 1)[0] + ":")
    assert counts(kinesis) == {"AAA": 3, "BBB": 4}  # none lost, none counted twice
    print(f"failover: {time.monotonic() - started:.1f} s")
