"""The node wires NodeMetrics into its components: an in-process node's `/metrics` shows what
puts and gets did, and the gRPC health services answer through a real health client."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from broker.client.grpc_client import AsyncShoalClient
from broker.node import Node
from tests.deploy.tools import run, tool

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _fetch(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        body: bytes = answer.read()
        return body


async def scrape(node: Node) -> tuple[bytes, Samples]:
    assert node.metrics_port != 0
    body = await asyncio.to_thread(_fetch, node.metrics_port)
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return body, samples


async def check(channel: grpc.aio.Channel, service: str) -> int:
    """One Check call of the standard health client (its stub is untyped)."""
    stub: Any = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    status: int = answer.status
    return status


def value(samples: Samples, name: str, **labels: str) -> float:
    matching = [
        v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items())
    ]
    assert matching, f"no {name}{labels} in {sorted(samples)}"
    return sum(matching)


async def put_and_get(client: AsyncShoalClient, stream: str) -> None:
    await client.call("CreateStream", {"StreamName": stream, "ShardCount": 2})
    records = [{"Data": b"x" * 100, "PartitionKey": f"k{i}"} for i in range(20)]
    answer = await client.call("PutRecords", {"StreamName": stream, "Records": records})
    assert answer.get("FailedRecordCount", 0) == 0
    await client.call("PutRecord", {"StreamName": stream, "Data": b"y", "PartitionKey": "p"})
    shards = await client.call("ListShards", {"StreamName": stream})
    for shard in shards["Shards"]:
        iterator = await client.call(
            "GetShardIterator",
            {
                "StreamName": stream,
                "ShardId": shard["ShardId"],
                "ShardIteratorType": "TRIM_HORIZON",
            },
        )
        await client.call("GetRecords", {"ShardIterator": iterator["ShardIterator"]})


async def test_metrics_show_records_requests_and_quorum(
    node: Node, client: AsyncShoalClient
) -> None:
    await put_and_get(client, "s")
    _, samples = await scrape(node)
    assert value(samples, "kinesis_incoming_records_total", stream="s") == 21
    assert (
        value(samples, "kinesis_incoming_bytes_total", stream="s")
        == sum(100 + len(f"k{i}") for i in range(20)) + 2
    )
    assert value(samples, "kinesis_outgoing_records_total", stream="s", api="GetRecords") == 21
    assert value(samples, "kinesis_put_records_records_total", stream="s", result="success") == 20
    assert value(samples, "kinesis_api_requests_total", operation="PutRecords", code="OK") == 1
    assert value(samples, "kinesis_api_requests_total", operation="GetRecords", code="OK") == 2
    assert value(samples, "kinesis_api_request_duration_seconds_count", operation="PutRecord") == 1
    assert value(samples, "kinesis_iterator_age_seconds", stream="s") == 0
    assert value(samples, "kinesis_raft_is_leader") == 1
    assert value(samples, "kinesis_raft_has_leader") == 1
    assert value(samples, "kinesis_raft_term") >= 1
    assert value(samples, "kinesis_raft_commit_index") >= 1
    assert value(samples, "kinesis_cluster_nodes", state="ACTIVE") == 1
    assert value(samples, "kinesis_open_shards") == 2
    assert value(samples, "kinesis_leaderless_shards") == 0
    assert value(samples, "kinesis_replicas", role="leader") == 2
    assert value(samples, "kinesis_group_commit_records_count") >= 1
    assert value(samples, "kinesis_fsync_duration_seconds_count", log="shards") >= 1
    assert value(samples, "kinesis_storage_disk_free_bytes") > 0
    assert "kinesis_rocksdb_memtable_bytes" in samples
    assert value(samples, "kinesis_node_info", node_id="test-0") == 1
    # No enhanced monitoring yet: no shard-level series.
    assert not any(name.startswith("kinesis_shard_") for name in samples)


async def test_errors_are_counted_by_code(node: Node, client: AsyncShoalClient) -> None:
    with contextlib.suppress(Exception):
        await client.call("DescribeStreamSummary", {"StreamName": "missing"})
    _, samples = await scrape(node)
    assert (
        value(
            samples,
            "kinesis_api_requests_total",
            operation="DescribeStreamSummary",
            code="ResourceNotFoundException",
        )
        == 1
    )


async def test_shard_series_only_after_enhanced_monitoring(
    node: Node, client: AsyncShoalClient
) -> None:
    await put_and_get(client, "plain")
    await client.call(
        "CreateStream", {"StreamName": "watched", "ShardCount": 1}
    )  # enhanced monitoring on before its records
    await client.call(
        "EnableEnhancedMonitoring",
        {"StreamName": "watched", "ShardLevelMetrics": ["IncomingRecords", "OutgoingBytes"]},
    )
    await client.call("PutRecord", {"StreamName": "watched", "Data": b"z", "PartitionKey": "p"})
    iterator = await client.call(
        "GetShardIterator",
        {"StreamName": "watched", "ShardId": "shardId-000000000000", "ShardIteratorType": "LATEST"},
    )
    await client.call("GetRecords", {"ShardIterator": iterator["ShardIterator"]})
    _, samples = await scrape(node)
    incoming = samples["kinesis_shard_incoming_records_total"]
    assert incoming == [({"stream": "watched", "shard": "shardId-000000000000"}, 1.0)]
    assert {labels["stream"] for labels, _ in samples["kinesis_shard_outgoing_bytes_total"]} == {
        "watched"
    }
    assert "kinesis_shard_incoming_bytes_total" not in samples
    await client.call(
        "DisableEnhancedMonitoring", {"StreamName": "watched", "ShardLevelMetrics": ["ALL"]}
    )
    _, samples = await scrape(node)
    assert not any(name.startswith("kinesis_shard_") for name in samples)


async def test_promtool_check_metrics_on_a_live_node(node: Node, client: AsyncShoalClient) -> None:
    await put_and_get(client, "s")
    body, _ = await scrape(node)
    promtool = tool("promtool")
    output = await asyncio.to_thread(run, [promtool, "check", "metrics"], stdin=body)
    assert output.strip() == "", output


async def test_health_services_answer_through_a_health_client(node: Node) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "liveness"):
            assert await check(channel, service) == serving, service
        for _ in range(100):  # readiness follows the quorum within a health interval
            ready = await check(channel, "readiness")
            if ready == serving:
                break
            await asyncio.sleep(0.1)
        assert ready == serving
        assert node.readiness_problem() is None


async def test_readiness_goes_first_when_draining(node: Node) -> None:
    await node.drain_for_shutdown(timeout_ms=100)
    assert node.readiness_problem() == "shutting down"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        ready = await check(channel, "readiness")
        alive = await check(channel, "liveness")
    assert ready == health_pb2.HealthCheckResponse.NOT_SERVING
    assert alive == health_pb2.HealthCheckResponse.SERVING
