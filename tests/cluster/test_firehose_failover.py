"""A delivery stream keeps delivering when the node delivering it is killed (kill -9).

Three node processes, S3 on moto's server, PostgreSQL for a Redshift destination. A producer
puts numbered records with boto3's `firehose` client (PutRecordBatch, round-robin over the live
nodes, retrying what was not acknowledged); the node holding a lease of the warehouse's
deliverer is killed mid-run. Every acknowledged record must reach S3 (duplicates allowed, at
least once, and counted) and the table exactly once (a record twice in the table only if the
producer put its batch twice); the others' deliverers take the dead node's shards over from
their checkpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from broker.client.leases import GrpcLeaseClient
from tests.cluster.helpers import wait_formed
from tests.firehose.conftest import firehose_client, s3_destination
from tests.postgres_server import PASSWORD, USER, PostgresServer, postgres_server  # noqa: F401
from tests.s3_server import S3Server, s3_server  # noqa: F401  (a fixture)
from tests.support import ClusterProcesses, NodeProcess, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BUCKET = "failover"
STAGING = "failover-staging"
FROM_STREAM = "failover-clicks"


@pytest.fixture
def cluster(tmp_path: Path, s3_server: S3Server) -> Iterator[ClusterProcesses]:  # noqa: F811
    processes = ClusterProcesses(
        tmp_path,
        extra_env={
            **s3_server.environment(),
            "SHOAL_FIREHOSE_FAILOVER_MS": "2000",
            "SHOAL_FIREHOSE_POLL_INTERVAL_MS": "100",
            "SHOAL_FIREHOSE_RECONCILE_INTERVAL_MS": "100",
        },
    )
    processes.start()
    try:
        wait_formed(processes)
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()


def _client(node: NodeProcess) -> Any:
    return firehose_client(f"http://{node.host}:{node.http_port}")


def _lease_owners(endpoint: str) -> dict[tuple[str, str], str | None]:
    """(application, shard) -> owner, for every delivery stream's deliverer lease."""

    async def owners() -> dict[tuple[str, str], str | None]:
        async with GrpcLeaseClient(endpoint) as leases:
            found: dict[tuple[str, str], str | None] = {}
            for application in await leases.list_applications():
                if application.startswith("__shoal.firehose."):
                    for lease in await leases.list_leases(application=application):
                        found[application, lease.lease_key] = lease.lease_owner
            return found

    return asyncio.run(owners())


def _put(nodes: list[NodeProcess], stream: str, records: list[bytes], attempt: int) -> bool:
    """One PutRecordBatch through a live node; True when every record was acknowledged."""
    live = [node for node in nodes if node.process is not None]
    client = _client(live[attempt % len(live)])
    try:
        answer = client.put_record_batch(
            DeliveryStreamName=stream, Records=[{"Data": data} for data in records]
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.EndpointConnectionError):
        return False
    finally:
        client.close()
    return bool(answer["FailedPutCount"] == 0)


def _kinesis(node: NodeProcess) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=f"http://{node.host}:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )


def _put_to_stream(nodes: list[NodeProcess], records: list[bytes], attempt: int) -> bool:
    """One PutRecords into the source data stream through a live node."""
    live = [node for node in nodes if node.process is not None]
    client = _kinesis(live[attempt % len(live)])
    try:
        answer = client.put_records(
            StreamName="clicks",
            Records=[{"Data": data, "PartitionKey": data.decode()} for data in records],
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return False
    finally:
        client.close()
    return bool(answer["FailedRecordCount"] == 0)


def _wait_active(client: Any, name: str) -> None:
    wait_until(
        lambda: (
            client.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"][
                "DeliveryStreamStatus"
            ]
            == "ACTIVE"
        ),
        deadline_s=30,
        what=f"{name} ACTIVE",
    )


def test_no_acknowledged_record_is_lost_when_the_delivering_node_dies(
    cluster: ClusterProcesses,
    s3_server: S3Server,  # noqa: F811
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    """Two delivery streams fed by one producer: to S3 (at least once: every acknowledged
    record there, duplicates counted) and to PostgreSQL as a Redshift destination (exactly
    once: every acknowledged record in the table once, unless the producer itself retried
    its batch). The node holding a lease of the warehouse's deliverer is killed mid-run."""
    s3_server.client().create_bucket(Bucket=BUCKET)
    s3_server.client().create_bucket(Bucket=STAGING)
    with postgres_server.connect() as database:
        database.execute("CREATE TABLE failover_rows (line text)")
    first = _client(cluster.nodes[0])
    first.create_delivery_stream(
        DeliveryStreamName="orders",
        ExtendedS3DestinationConfiguration=s3_destination(
            BUCKET,
            BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
            CompressionFormat="GZIP",
        ),
    )
    first.create_delivery_stream(
        DeliveryStreamName="warehouse",
        RedshiftDestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "ClusterJDBCURL": postgres_server.jdbc_url,
            "Username": USER,
            "Password": PASSWORD,
            "CopyCommand": {"DataTableName": "failover_rows", "CopyOptions": "GZIP"},
            "S3Configuration": s3_destination(
                STAGING,
                BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                CompressionFormat="GZIP",
            ),
        },
    )
    kinesis = _kinesis(cluster.nodes[0])
    kinesis.create_stream(StreamName="clicks", ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(
        StreamName="clicks", WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
    )
    s3_server.client().create_bucket(Bucket=FROM_STREAM)
    first.create_delivery_stream(
        DeliveryStreamName="clicks-to-s3",
        DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={
            "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/clicks",
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        },
        ExtendedS3DestinationConfiguration=s3_destination(
            FROM_STREAM, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}
        ),
    )
    _wait_active(first, "orders")
    _wait_active(first, "warehouse")
    _wait_active(first, "clicks-to-s3")

    def from_stream() -> list[bytes]:
        return [
            line
            for body in s3_server.objects(FROM_STREAM).values()
            for line in body.splitlines(keepends=True)
        ]

    # Firehose reads a source stream from LATEST: a marker until one is delivered, then load.
    def marker_delivered() -> bool:
        _put_to_stream(cluster.nodes, [b"marker\n"], 0)
        time.sleep(0.5)
        return b"marker\n" in from_stream()

    wait_until(marker_delivered, deadline_s=60, what="the source stream's deliverer reading")
    acknowledged: set[bytes] = set()
    retried: set[bytes] = set()  # put to the warehouse more than once: maybe twice in its log
    batches = 0

    def produce(count: int) -> None:
        nonlocal batches
        for _ in range(count):
            records = [f"r-{batches}-{i}\n".encode() for i in range(50)]
            for stream in ("orders", "warehouse"):
                for attempt in range(20):
                    if attempt and stream == "warehouse":
                        retried.update(records)
                    if _put(cluster.nodes, stream, records, batches + attempt):
                        acknowledged.update(records)
                        break
                    time.sleep(0.2)
            clicks = [b"c" + data for data in records]
            for attempt in range(20):
                if _put_to_stream(cluster.nodes, clicks, batches + attempt):
                    streamed.update(clicks)
                    break
                time.sleep(0.2)
            batches += 1

    streamed: set[bytes] = set()
    produce(10)

    def taken() -> dict[tuple[str, str], str | None] | None:
        found = _lease_owners(cluster.nodes[0].endpoint)
        warehouse = [key for key in found if "warehouse" in key[0]]
        return found if warehouse and all(found.values()) else None

    owners = wait_until(taken, deadline_s=30, what="deliverer leases taken")
    assert owners is not None

    def held(node_id: str, stream: str) -> int:
        return sum(
            1
            for (application, _), owner in owners.items()
            if stream in application and owner and owner.startswith(f"{node_id}:")
        )

    # The victim delivers to the warehouse, and from the source stream too when one node does.
    candidates = sorted(
        {
            str(owner).split(":", 1)[0]
            for (application, _), owner in owners.items()
            if owner and "warehouse" in application
        }
    )
    victim_id = max(candidates, key=lambda node_id: held(node_id, "clicks"))
    print(f"victim {victim_id}: {held(victim_id, 'clicks')} source stream leases")
    victim = cluster.node_named(victim_id)
    survivor = next(node for node in cluster.nodes if node is not victim)
    produce(5)
    victim.kill()
    produce(15)  # past the takeover (SHOAL_FIREHOSE_FAILOVER_MS 2 s)

    def delivered() -> list[bytes]:
        import gzip

        return [
            line
            for body in s3_server.objects(BUCKET).values()
            for line in gzip.decompress(body).splitlines(keepends=True)
        ]

    def loaded() -> list[bytes]:
        with postgres_server.connect() as database:
            rows = database.execute("SELECT line FROM failover_rows").fetchall()
        return [f"{row[0]}\n".encode() for row in rows]

    wait_until(
        lambda: acknowledged <= set(delivered()),
        deadline_s=60,
        what="every acknowledged record in S3",
    )
    wait_until(
        lambda: acknowledged <= set(loaded()),
        deadline_s=60,
        what="every acknowledged record in the warehouse",
    )
    wait_until(
        lambda: streamed <= set(from_stream()),
        deadline_s=60,
        what="every record of the source stream in S3",
    )
    source_lines = [line for line in from_stream() if line != b"marker\n"]
    print(
        f"source stream: put {len(streamed)}, delivered {len(source_lines)}, "
        f"duplicates {len(source_lines) - len(set(source_lines))}"
    )
    lines = delivered()
    duplicates = len(lines) - len(set(lines))
    rows = loaded()
    doubled = {row for row in rows if rows.count(row) > 1}
    print(
        f"acknowledged {len(acknowledged)}, delivered {len(lines)}, duplicates {duplicates}; "
        f"loaded {len(rows)}, doubled {len(doubled)} (retried by the producer "
        f"{len(doubled & retried)})"
    )
    assert doubled <= retried, sorted(doubled - retried)[:5]
    after = _lease_owners(survivor.endpoint)
    assert all(owner and not owner.startswith(f"{victim_id}:") for owner in after.values())
