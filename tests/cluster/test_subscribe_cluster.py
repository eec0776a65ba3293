"""SubscribeToShard on a real 3-node cluster: through any node, and across a leader's death.

Goal: a subscriber connected to a node that does not lead the shard gets every record as it
commits (its reads are long-polls forwarded to the leader), and a subscription through a
surviving node keeps delivering, in order and without repeats, after kill -9 of the leader.

Method: `ClusterProcesses` (three `shoal serve` processes, shards on all three); a subscriber
thread per node collects events through the native client; producers write through another
node. Every wait is bounded (`wait_until`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from broker.client.grpc_client import EventStream, ShoalClient
from broker.errors import ShoalError
from tests.cluster.helpers import shard_leaders, wait_formed
from tests.support import ClusterProcesses, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SHARD = "shardId-000000000000"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
    processes = ClusterProcesses(tmp_path, extra_env={"SHOAL_CONSUMER_CREATING_MS": "0"})
    processes.start()
    try:
        wait_formed(processes)
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()


class Subscriber:
    """Collects the records of one subscription in a thread; `error` if it failed."""

    def __init__(self, endpoint: str, arn: str, position: dict[str, Any] | None = None) -> None:
        self._client = ShoalClient(endpoint)
        self._events: EventStream = self._client.subscribe_to_shard(
            {
                "ConsumerARN": arn,
                "ShardId": SHARD,
                "StartingPosition": position or {"Type": "TRIM_HORIZON"},
            },
            timeout_s=120,
        )
        self.records: list[dict[str, Any]] = []
        self.continuation: str | None = None  # the last event's ContinuationSequenceNumber
        self.events = 0
        self.error: ShoalError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                self.events += 1
                body = event["SubscribeToShardEvent"]
                self.records.extend(body["Records"])
                self.continuation = body.get("ContinuationSequenceNumber", self.continuation)
        except ShoalError as error:
            self.error = error

    def data(self) -> list[bytes]:
        return [r["Data"] for r in self.records]

    def close(self) -> None:
        self._events.close()
        self._thread.join(timeout=10)
        self._client.close()


def _stream_with_consumer(endpoint: str, stream: str) -> str:
    """Creates a 1-shard stream and registers a consumer; returns the consumer ARN."""
    with ShoalClient(endpoint) as client:
        client.call("CreateStream", {"StreamName": stream, "ShardCount": 1})

        def active() -> str | None:
            summary = client.call("DescribeStreamSummary", {"StreamName": stream})
            description = summary["StreamDescriptionSummary"]
            arn: str = description["StreamARN"]
            return arn if description["StreamStatus"] == "ACTIVE" else None

        stream_arn = wait_until(active, deadline_s=30, what="stream ACTIVE")
        registered = client.call(
            "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": "fan"}
        )
        arn: str = registered["Consumer"]["ConsumerARN"]
        return arn


def _leader(endpoint: str, stream: str) -> str:
    def leader() -> str | None:
        return shard_leaders(endpoint, stream).get(SHARD) or None

    found = wait_until(leader, deadline_s=30, what="a shard leader")
    assert found is not None
    return found


def _all_delivered(subscriber: Subscriber, values: list[bytes]) -> bool:
    return subscriber.data() == values or subscriber.error is not None


def _put(endpoint: str, stream: str, values: list[bytes]) -> None:
    with ShoalClient(endpoint) as client:
        for value in values:
            for _ in range(50):  # a write during a failover is refused until a leader is back
                try:
                    client.call(
                        "PutRecord", {"StreamName": stream, "PartitionKey": "k", "Data": value}
                    )
                    break
                except ShoalError as error:
                    if not error.code.spec.retryable:
                        raise
                    time.sleep(0.2)
            else:
                raise AssertionError(f"{value!r} was never acknowledged")


def test_a_subscriber_on_any_node_gets_records_as_they_commit(
    cluster: ClusterProcesses,
) -> None:
    endpoints = cluster.endpoints
    arn = _stream_with_consumer(endpoints[0], "s")
    leader = _leader(endpoints[0], "s")
    leader_endpoint = cluster.node_named(leader).endpoint
    others = [e for e in endpoints if e != leader_endpoint]
    # One consumer, one shard: one subscription per node (the rule holds per node).
    subscribers = [Subscriber(endpoint, arn) for endpoint in endpoints]
    try:
        values = [b"v%03d" % i for i in range(30)]
        _put(others[0], "s", values)
        for subscriber in subscribers:
            wait_until(
                partial(_all_delivered, subscriber, values),
                deadline_s=20,
                what="every record on every subscriber",
            )
            assert subscriber.error is None
            assert subscriber.data() == values
    finally:
        for subscriber in subscribers:
            subscriber.close()


def test_a_subscription_survives_the_leaders_death(cluster: ClusterProcesses) -> None:
    endpoints = cluster.endpoints
    arn = _stream_with_consumer(endpoints[0], "s")
    leader = _leader(endpoints[0], "s")
    victim = cluster.node_named(leader)
    survivor = next(e for e in endpoints if e != victim.endpoint)
    subscriber = Subscriber(survivor, arn)
    try:
        before = [b"a%03d" % i for i in range(10)]
        _put(survivor, "s", before)
        wait_until(lambda: subscriber.data() == before, deadline_s=20, what="the first records")
        victim.kill()
        after = [b"b%03d" % i for i in range(10)]
        _put(survivor, "s", after)
        wait_until(
            lambda: len(subscriber.data()) >= 20 or subscriber.error is not None,
            deadline_s=30,
            what="records after the failover",
        )
        assert subscriber.error is None, subscriber.error
        assert subscriber.data() == before + after  # in order, nothing twice
        numbers = [int(r["SequenceNumber"]) for r in subscriber.records]
        assert numbers == sorted(numbers)
    finally:
        subscriber.close()


def test_a_subscriber_on_the_dying_leader_resumes_on_a_survivor(
    cluster: ClusterProcesses,
) -> None:
    """The subscription lives on the shard's leader itself, which is killed (-9): the
    subscriber learns it at once from a retryable error (not a silent hang), subscribes again
    on a survivor AFTER its last ContinuationSequenceNumber, and gets every record written
    before, during and after the failover once, in order."""
    endpoints = cluster.endpoints
    arn = _stream_with_consumer(endpoints[0], "s")
    leader = _leader(endpoints[0], "s")
    victim = cluster.node_named(leader)
    survivor = next(e for e in endpoints if e != victim.endpoint)
    first = Subscriber(victim.endpoint, arn)
    second: Subscriber | None = None
    try:
        before = [b"a%03d" % i for i in range(10)]
        _put(survivor, "s", before)
        wait_until(lambda: first.data() == before, deadline_s=20, what="the first records")
        victim.kill()
        wait_until(lambda: first.error is not None, deadline_s=10, what="the subscriber's error")
        assert first.error is not None
        assert first.error.code.spec.retryable, first.error
        during = [b"b%03d" % i for i in range(10)]
        _put(survivor, "s", during)
        assert first.continuation is not None
        second = Subscriber(
            survivor, arn, {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": first.continuation}
        )
        after = [b"c%03d" % i for i in range(10)]
        _put(survivor, "s", after)
        wait_until(
            partial(_all_delivered, second, during + after),
            deadline_s=30,
            what="the records after the failover on the survivor",
        )
        assert second.error is None, second.error
        assert first.data() + second.data() == before + during + after
    finally:
        first.close()
        if second is not None:
            second.close()
