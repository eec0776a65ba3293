"""SubscribeToShard on a real 3-node cluster: through any node, across a leader's death, and
one subscription per consumer and shard across the cluster.

Goal: a subscriber connected to a node that does not lead the shard gets every record as it
commits (its reads are long-polls forwarded to the leader), and a subscription through a
surviving node keeps delivering, in order and without repeats, after kill -9 of the leader. A
second subscription of the same consumer and shard through another node is refused
(ResourceInUseException, the leader's claim table) while the first holds the slot, and takes
over once the first is older than the takeover time.

Method: `ClusterProcesses` (three `shoal serve` processes, shards on all three); a subscriber
thread per node collects events through the native client; producers write through another
node. Every wait is bounded (`wait_until`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from broker.client.grpc_client import EventStream, ShoalClient
from broker.errors import ErrorCode, ShoalError
from tests.cluster.conftest import formed_cluster
from tests.cluster.helpers import shard_leaders, wait_applied_everywhere
from tests.support import ClusterProcesses, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SHARD = "shardId-000000000000"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
    yield from _cluster(tmp_path, {})


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcesses]:
    """One cluster for the tests that leave every node running (each its own stream), with a
    short takeover time (2 s) so the takeover test waits less."""
    yield from _cluster(
        tmp_path_factory.mktemp("subscribe"), {"SHOAL_SUBSCRIPTION_TAKEOVER_MS": "2000"}
    )


@pytest.fixture
def cluster_without_takeover(tmp_path: Path) -> Iterator[ClusterProcesses]:
    """A takeover time longer than any test: a second subscription is always refused."""
    yield from _cluster(tmp_path, {"SHOAL_SUBSCRIPTION_TAKEOVER_MS": "120000"})


def _cluster(tmp_path: Path, env: dict[str, str]) -> Iterator[ClusterProcesses]:
    yield from formed_cluster(tmp_path, {"SHOAL_CONSUMER_CREATING_MS": "0", **env})


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


def _stream_with_consumer(endpoints: Sequence[str], stream: str, consumers: int = 1) -> str:
    """Creates a 1-shard stream and registers a consumer through the first endpoint, and waits
    until every node's metadata replica has both (a subscriber on another node looks the
    consumer up in its own); returns the consumer ARN (of the first, with `consumers` > 1: the
    others are named fan1, fan2, ... by `_consumer`)."""
    with ShoalClient(endpoints[0]) as client:
        client.call("CreateStream", {"StreamName": stream, "ShardCount": 1})

        def active() -> str | None:
            summary = client.call("DescribeStreamSummary", {"StreamName": stream})
            description = summary["StreamDescriptionSummary"]
            arn: str = description["StreamARN"]
            return arn if description["StreamStatus"] == "ACTIVE" else None

        stream_arn = wait_until(active, deadline_s=30, what="stream ACTIVE")
        arns = [
            client.call(
                "RegisterStreamConsumer",
                {"StreamARN": stream_arn, "ConsumerName": "fan" if n == 0 else f"fan{n}"},
            )["Consumer"]["ConsumerARN"]
            for n in range(consumers)
        ]
    wait_applied_everywhere(endpoints)
    arn: str = arns[0]
    return arn


def _consumers(endpoint: str, stream: str) -> list[str]:
    with ShoalClient(endpoint) as client:
        listed = client.call("ListStreamConsumers", {"StreamARN": _stream_arn(client, stream)})
    return sorted(c["ConsumerARN"] for c in listed["Consumers"])


def _stream_arn(client: ShoalClient, stream: str) -> str:
    summary = client.call("DescribeStreamSummary", {"StreamName": stream})
    arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
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
    shared_cluster: ClusterProcesses,
) -> None:
    cluster = shared_cluster
    endpoints = cluster.endpoints
    _stream_with_consumer(endpoints, "s", consumers=len(endpoints))
    leader = _leader(endpoints[0], "s")
    leader_endpoint = cluster.node_named(leader).endpoint
    others = [e for e in endpoints if e != leader_endpoint]
    # One consumer per node: one subscription per consumer and shard in the cluster.
    arns = _consumers(endpoints[0], "s")
    subscribers = [Subscriber(endpoint, arn) for endpoint, arn in zip(endpoints, arns, strict=True)]
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
    arn = _stream_with_consumer(endpoints, "s")
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
    arn = _stream_with_consumer(endpoints, "s")
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


def _started(subscriber: Subscriber) -> bool:
    return subscriber.events > 0 or subscriber.error is not None


def test_a_second_subscription_through_another_node_is_refused(
    cluster_without_takeover: ClusterProcesses,
) -> None:
    """Same consumer and shard through two different nodes: the second is a plain
    ResourceInUseException before any event (the leader's claim table refuses its first read),
    the first is untouched; once the first ends, its claim expires and a new one works."""
    cluster = cluster_without_takeover
    arn = _stream_with_consumer(cluster.endpoints, "s")
    leader_endpoint = cluster.node_named(_leader(cluster.endpoints[0], "s")).endpoint
    follower = next(e for e in cluster.endpoints if e != leader_endpoint)
    third = next(e for e in cluster.endpoints if e not in (leader_endpoint, follower))
    first = Subscriber(follower, arn)  # reads forwarded to the leader
    later: list[Subscriber] = []
    try:
        wait_until(partial(_started, first), deadline_s=20, what="the first subscription")
        assert first.error is None, first.error
        for endpoint in (leader_endpoint, third):  # served on the leader, and forwarded
            second = Subscriber(endpoint, arn)
            later.append(second)
            wait_until(partial(_started, second), deadline_s=20, what="the second's answer")
            assert second.error is not None
            assert second.error.code is ErrorCode.RESOURCE_IN_USE, second.error
            assert second.events == 0
        values = [b"v%03d" % i for i in range(5)]
        _put(third, "s", values)
        wait_until(partial(_all_delivered, first, values), deadline_s=20, what="the records")
        assert first.error is None, first.error
        first.close()

        def resubscribed() -> Subscriber | None:
            again = Subscriber(third, arn)
            later.append(again)
            wait_until(partial(_started, again), deadline_s=20, what="an answer")
            if again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE:
                return None  # the first's claim has not expired yet (a few seconds)
            return again

        again = wait_until(resubscribed, deadline_s=30, what="a new subscription")
        assert again is not None
        wait_until(partial(_all_delivered, again, values), deadline_s=20, what="the records again")
        assert again.error is None, again.error
    finally:
        first.close()
        for subscriber in later:
            subscriber.close()


def test_a_subscription_through_another_node_takes_over_an_old_one(
    shared_cluster: ClusterProcesses,
) -> None:
    """After the takeover time (2 s here) a subscription through another node takes over: it
    gets the records, and the first ends with ResourceInUseException within a long-poll."""
    cluster = shared_cluster
    arn = _stream_with_consumer(cluster.endpoints, "takeover")
    leader_endpoint = cluster.node_named(_leader(cluster.endpoints[0], "takeover")).endpoint
    follower = next(e for e in cluster.endpoints if e != leader_endpoint)
    first = Subscriber(leader_endpoint, arn)
    refused: list[Subscriber] = []
    second: Subscriber | None = None
    try:
        wait_until(partial(_started, first), deadline_s=20, what="the first subscription")

        def takes_over() -> Subscriber | None:
            attempt = Subscriber(follower, arn)
            wait_until(partial(_started, attempt), deadline_s=20, what="an answer")
            if attempt.error is not None and attempt.error.code is ErrorCode.RESOURCE_IN_USE:
                refused.append(attempt)
                return None  # the first's claim is younger than the takeover time
            return attempt

        second = wait_until(takes_over, deadline_s=30, what="the second subscription")
        assert second is not None
        assert second.error is None, second.error
        wait_until(lambda: first.error is not None, deadline_s=10, what="the first's end")
        assert first.error is not None
        assert first.error.code is ErrorCode.RESOURCE_IN_USE, first.error
        values = [b"t%03d" % i for i in range(5)]
        _put(follower, "takeover", values)
        wait_until(partial(_all_delivered, second, values), deadline_s=20, what="the records")
        assert second.error is None, second.error
    finally:
        first.close()
        for subscriber in refused:
            subscriber.close()
        if second is not None:
            second.close()
