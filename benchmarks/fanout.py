"""`scripts/bench --only fanout`: enhanced fan-out latency, put accepted -> record delivered.

What one run measures (issue 5 point 6; goal: p99 under 50 ms on an idle 3-node cluster):

- One producer puts one small record at a time (`--records`, default 300, every `--gap-ms`,
  default 20 ms: an idle stream, not a saturated one) into a 1-shard stream; one subscriber
  (the native gRPC client's `subscribe_to_shard`, LATEST) receives them. For each record the
  latency from PutRecord's answer (accepted: committed on a majority) to the event carrying it
  is one sample (0 when the event arrived first: commit wakes the subscriber and answers the
  producer in the same turn); "sent" is from the call's start, for reference.
- Scenarios: one node (`benchmarks.bench.shoal_node`); then a 3-node cluster (replication
  factor 3, production liveness knobs as `benchmarks.cluster`) with the subscriber connected
  to the shard's leader, and connected to another node (its reads are long-polls forwarded to
  the leader, `service/subscriptions.py`). The producer writes to the leader in the cluster.

Producer and subscriber run on one asyncio loop in this process; every wait is bounded and
every child process is stopped on the way out. `--single-only` skips the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from benchmarks.bench import shoal_node
from broker.client.grpc_client import AsyncShoalClient
from tests.cluster.helpers import formed, shard_leaders
from tests.support import ClusterProcesses, wait_until

GOAL_P99_MS = 50.0
NODES = 3
SHARD = "shardId-000000000000"
EVENT_TIMEOUT_S = 10.0
ACTIVE_DEADLINE_S = 30.0
FORMED_DEADLINE_S = 60.0
PRODUCTION_LIVENESS = {
    "SHOAL_HEARTBEAT_INTERVAL_MS": "250",
    "SHOAL_SESSION_TIMEOUT_MS": "2000",
    "SHOAL_CONTROLLER_PASS_INTERVAL_MS": "100",
    "SHOAL_STREAM_CREATING_MS": "0",
    "SHOAL_CONSUMER_CREATING_MS": "0",
}


@dataclass(frozen=True, slots=True)
class FanOutLatency:
    scenario: str
    records: int
    accepted_p50_ms: float
    accepted_p99_ms: float
    sent_p50_ms: float
    sent_p99_ms: float


def _say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


async def _consumer(client: AsyncShoalClient, stream: str) -> str:
    """Creates the 1-shard stream and an ACTIVE consumer; returns the consumer ARN."""
    await client.call("CreateStream", {"StreamName": stream, "ShardCount": 1})
    deadline = time.perf_counter() + ACTIVE_DEADLINE_S
    while True:
        summary = (await client.call("DescribeStreamSummary", {"StreamName": stream}))[
            "StreamDescriptionSummary"
        ]
        if summary["StreamStatus"] == "ACTIVE":
            break
        assert time.perf_counter() < deadline, "the stream did not become ACTIVE"
        await asyncio.sleep(0.05)
    registered = await client.call(
        "RegisterStreamConsumer", {"StreamARN": summary["StreamARN"], "ConsumerName": "bench"}
    )
    arn: str = registered["Consumer"]["ConsumerARN"]
    while True:
        described = await client.call("DescribeStreamConsumer", {"ConsumerARN": arn})
        if described["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE":
            return arn
        assert time.perf_counter() < deadline, "the consumer did not become ACTIVE"
        await asyncio.sleep(0.05)


async def measure(
    producer_target: str,
    subscriber_target: str,
    *,
    stream: str,
    scenario: str,
    records: int,
    gap_ms: int,
    setup: bool = True,
) -> FanOutLatency:
    """One scenario: `records` puts through `producer_target`, received through a
    subscription on `subscriber_target` (module docstring)."""
    producer = AsyncShoalClient(producer_target)
    subscriber = AsyncShoalClient(subscriber_target)
    try:
        if setup:
            arn = await _consumer(producer, stream)
        else:
            summary = (await producer.call("DescribeStreamSummary", {"StreamName": stream}))[
                "StreamDescriptionSummary"
            ]
            consumers = (
                await producer.call("ListStreamConsumers", {"StreamARN": summary["StreamARN"]})
            )["Consumers"]
            arn = consumers[0]["ConsumerARN"]
        events = subscriber.subscribe_to_shard(
            {"ConsumerARN": arn, "ShardId": SHARD, "StartingPosition": {"Type": "LATEST"}}
        )
        first = await events.next_event(timeout_s=EVENT_TIMEOUT_S)  # subscribed and positioned
        assert first is not None
        delivered: dict[bytes, float] = {}

        async def receive() -> None:
            while len(delivered) < records:  # bounded: each event within EVENT_TIMEOUT_S
                message = await events.next_event(timeout_s=EVENT_TIMEOUT_S)
                assert message is not None, "the subscription ended early"
                now = time.perf_counter()
                for record in message["SubscribeToShardEvent"]["Records"]:
                    delivered[record["Data"]] = now

        receiving = asyncio.create_task(receive())
        sent: dict[bytes, float] = {}
        accepted: dict[bytes, float] = {}
        for i in range(records):
            data = f"{scenario}-{i}".encode()
            sent[data] = time.perf_counter()
            await producer.call(
                "PutRecord", {"StreamName": stream, "PartitionKey": str(i), "Data": data}
            )
            accepted[data] = time.perf_counter()
            await asyncio.sleep(gap_ms / 1000)
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            await receiving
        await events.aclose()
    finally:
        await producer.close()
        await subscriber.close()
    from_accepted = sorted(max(0.0, delivered[d] - accepted[d]) * 1000 for d in accepted)
    from_sent = sorted((delivered[d] - sent[d]) * 1000 for d in sent)
    accepted_cuts = statistics.quantiles(from_accepted, n=100, method="inclusive")
    sent_cuts = statistics.quantiles(from_sent, n=100, method="inclusive")
    return FanOutLatency(
        scenario=scenario,
        records=records,
        accepted_p50_ms=round(accepted_cuts[49], 2),
        accepted_p99_ms=round(accepted_cuts[98], 2),
        sent_p50_ms=round(sent_cuts[49], 2),
        sent_p99_ms=round(sent_cuts[98], 2),
    )


def _single(workdir: Path, records: int, gap_ms: int) -> FanOutLatency:
    with shoal_node(workdir) as node:
        _say("one node: subscriber and producer on the node")
        return asyncio.run(
            measure(
                node.grpc_target,
                node.grpc_target,
                stream="bench-fanout",
                scenario="single",
                records=records,
                gap_ms=gap_ms,
            )
        )


def _cluster(workdir: Path, records: int, gap_ms: int) -> list[FanOutLatency]:
    cluster = ClusterProcesses(workdir, size=NODES, extra_env=PRODUCTION_LIVENESS)
    cluster.start()
    try:
        for endpoint in cluster.endpoints:
            wait_until(
                partial(formed, endpoint, NODES),
                deadline_s=FORMED_DEADLINE_S,
                what="the cluster to form",
            )
        endpoints = cluster.endpoints
        stream = "bench-fanout"
        asyncio.run(_create(endpoints[0], stream))
        leader_id = wait_until(
            lambda: shard_leaders(endpoints[0], stream).get(SHARD),
            deadline_s=FORMED_DEADLINE_S,
            what="a shard leader",
        )
        assert leader_id is not None
        leader = cluster.node_named(leader_id).endpoint
        other = next(e for e in endpoints if e != leader)
        results = []
        for scenario, subscriber in (("cluster-on-leader", leader), ("cluster-via-other", other)):
            _say(f"3 nodes: {scenario}")
            results.append(
                asyncio.run(
                    measure(
                        leader,
                        subscriber,
                        stream=stream,
                        scenario=scenario,
                        records=records,
                        gap_ms=gap_ms,
                        setup=False,
                    )
                )
            )
        return results
    finally:
        cluster.stop()


async def _create(target: str, stream: str) -> None:
    client = AsyncShoalClient(target)
    try:
        await _consumer(client, stream)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only fanout", description=__doc__)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--gap-ms", type=int, default=20)
    parser.add_argument("--single-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args, _ = parser.parse_known_args(argv)
    assert args.records >= 2
    results: list[FanOutLatency] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-fanout-") as tmp:
        workdir = Path(tmp)
        (workdir / "single").mkdir()
        results.append(_single(workdir / "single", args.records, args.gap_ms))
        if not args.single_only:
            (workdir / "cluster").mkdir()
            results += _cluster(workdir / "cluster", args.records, args.gap_ms)
    print(f"Enhanced fan-out latency ({os.cpu_count()} CPUs; goal p99 < {GOAL_P99_MS:.0f} ms)")
    print(f"  {'scenario':<20} {'records':>7} {'accepted p50/p99 ms':>22} {'sent p50/p99 ms':>18}")
    for r in results:
        accepted = f"{r.accepted_p50_ms:.1f} / {r.accepted_p99_ms:.1f}"
        sent = f"{r.sent_p50_ms:.1f} / {r.sent_p99_ms:.1f}"
        print(f"  {r.scenario:<20} {r.records:>7} {accepted:>22} {sent:>18}")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
