"""A delivery stream keeps delivering when the node delivering it is killed (kill -9).

Three node processes, S3 on moto's server. A producer puts numbered records with boto3's
`firehose` client (PutRecordBatch, round-robin over the live nodes, retrying what was not
acknowledged); the node holding a deliverer lease is killed mid-run. Every acknowledged record
must reach S3 (duplicates are allowed, at least once, and counted); the others' deliverers
take the dead node's shards over from their checkpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from broker.client.leases import GrpcLeaseClient
from tests.cluster.helpers import wait_formed
from tests.firehose.conftest import firehose_client, s3_destination
from tests.s3_server import S3Server, s3_server  # noqa: F401  (a fixture)
from tests.support import ClusterProcesses, NodeProcess, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BUCKET = "failover"


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


def _lease_owners(endpoint: str) -> dict[str, str | None]:
    async def owners() -> dict[str, str | None]:
        async with GrpcLeaseClient(endpoint) as leases:
            found: dict[str, str | None] = {}
            for application in await leases.list_applications():
                if application.startswith("__shoal.firehose."):
                    for lease in await leases.list_leases(application=application):
                        found[lease.lease_key] = lease.lease_owner
            return found

    return asyncio.run(owners())


def _put(nodes: list[NodeProcess], records: list[bytes], attempt: int) -> bool:
    """One PutRecordBatch through a live node; True when every record was acknowledged."""
    live = [node for node in nodes if node.process is not None]
    client = _client(live[attempt % len(live)])
    try:
        answer = client.put_record_batch(
            DeliveryStreamName="orders", Records=[{"Data": data} for data in records]
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.EndpointConnectionError):
        return False
    finally:
        client.close()
    return bool(answer["FailedPutCount"] == 0)


def test_no_acknowledged_record_is_lost_when_the_delivering_node_dies(
    cluster: ClusterProcesses,
    s3_server: S3Server,  # noqa: F811
) -> None:
    s3_server.client().create_bucket(Bucket=BUCKET)
    first = _client(cluster.nodes[0])
    first.create_delivery_stream(
        DeliveryStreamName="orders",
        ExtendedS3DestinationConfiguration=s3_destination(
            BUCKET,
            BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
            CompressionFormat="GZIP",
        ),
    )
    wait_until(
        lambda: (
            first.describe_delivery_stream(DeliveryStreamName="orders")[
                "DeliveryStreamDescription"
            ]["DeliveryStreamStatus"]
            == "ACTIVE"
        ),
        deadline_s=30,
        what="the delivery stream ACTIVE",
    )
    acknowledged: set[bytes] = set()
    batches = 0

    def produce(count: int) -> None:
        nonlocal batches
        for _ in range(count):
            records = [f"r-{batches}-{i}\n".encode() for i in range(50)]
            for attempt in range(20):
                if _put(cluster.nodes, records, batches + attempt):
                    acknowledged.update(records)
                    break
                time.sleep(0.2)
            batches += 1

    produce(20)

    def taken() -> dict[str, str | None] | None:
        found = _lease_owners(cluster.nodes[0].endpoint)
        return found if found and all(found.values()) else None

    owners = wait_until(taken, deadline_s=30, what="deliverer leases taken")
    assert owners is not None
    victim_id = next(owner for owner in owners.values() if owner).split(":", 1)[0]
    victim = cluster.node_named(victim_id)
    survivor = next(node for node in cluster.nodes if node is not victim)
    produce(10)
    victim.kill()
    produce(30)

    def delivered() -> list[bytes]:
        import gzip

        return [
            line
            for body in s3_server.objects(BUCKET).values()
            for line in gzip.decompress(body).splitlines(keepends=True)
        ]

    wait_until(
        lambda: acknowledged <= set(delivered()),
        deadline_s=60,
        what="every acknowledged record in S3",
    )
    lines = delivered()
    duplicates = len(lines) - len(set(lines))
    print(f"acknowledged {len(acknowledged)}, delivered {len(lines)}, duplicates {duplicates}")
    after = _lease_owners(survivor.endpoint)
    assert all(owner and not owner.startswith(f"{victim_id}:") for owner in after.values())
