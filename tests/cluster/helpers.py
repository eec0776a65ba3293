"""What the cluster tests share: admin RPCs, readers, and a producer that remembers what was
acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from broker.api.internal.v1 import internal_pb2 as pb
from broker.client.grpc_client import ShoalClient
from broker.errors import ErrorCode, ShoalError
from broker.streams.sequence_numbers import decode_sequence_number
from tests.support import ClusterProcesses, read_shard, wait_until


def _admin(endpoint: str, method: str, request: Any, response: Any, service: str) -> Any:
    with grpc.insecure_channel(endpoint) as channel:
        call: Any = channel.unary_unary(
            f"/broker.api.internal.v1.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        return call(request, timeout=5)


def create_stream(client: ShoalClient, name: str, shards: int, *, deadline_s: float = 60) -> None:
    """CreateStream as a client that retries should: an UNAVAILABLE answer (the metadata
    leader changed mid-command, as it may on a starved machine) leaves the outcome unknown,
    so the call is made again, and ResourceInUse after such an answer means it was applied."""
    retried = False

    def attempt() -> bool:
        nonlocal retried
        try:
            client.call("CreateStream", {"StreamName": name, "ShardCount": shards})
        except ShoalError as error:
            if error.code is ErrorCode.RESOURCE_IN_USE and retried:
                return True
            if error.code is not ErrorCode.UNAVAILABLE:
                raise
            retried = True
            return False
        return True

    wait_until(attempt, deadline_s=deadline_s, what=f"{name} created")


def cluster_status(endpoint: str) -> pb.ClusterStatusResponse:
    status: pb.ClusterStatusResponse = _admin(
        endpoint,
        "ClusterStatus",
        pb.ClusterStatusRequest(),
        pb.ClusterStatusResponse,
        "ClusterAdminService",
    )
    return status


def drain(endpoint: str, node_id: str) -> None:
    """Marks `node_id` DRAINING (its leaderships and replicas move off; it keeps running and,
    if it votes, voting), without waiting for the moves (`shoal cluster drain`)."""
    _admin(
        endpoint,
        "Drain",
        pb.DrainRequest(node_id=node_id, timeout_ms=1),
        pb.DrainResponse,
        "ClusterAdminService",
    )


def replica_status(endpoint: str) -> pb.ReplicaStatusResponse:
    status: pb.ReplicaStatusResponse = _admin(
        endpoint,
        "ReplicaStatus",
        pb.ReplicaStatusRequest(),
        pb.ReplicaStatusResponse,
        "ReplicationService",
    )
    return status


def applied_commands(endpoint: str) -> int | None:
    """How many metadata commands `endpoint`'s replica has applied (MetadataImage.applied_commands,
    the same count on every node for the same log prefix); None while it does not answer."""
    try:
        digest: pb.MetadataDigestResponse = _admin(
            endpoint,
            "MetadataDigest",
            pb.MetadataDigestRequest(),
            pb.MetadataDigestResponse,
            "ClusterAdminService",
        )
    except grpc.RpcError:
        return None
    return digest.applied_commands


def wait_applied_everywhere(endpoints: Sequence[str], *, deadline_s: float = 30) -> None:
    """Waits until every node of `endpoints` has applied every metadata command that any of
    them had applied when called. A node answers DescribeStream, ListShards, ClusterStatus, ...
    from its own replica, which may trail the node that acknowledged a write by a moment: call
    this after a metadata write (CreateStream, UpdateShardCount, RegisterStreamConsumer, ...)
    before reading through or asserting on another node. The node that acknowledged a command
    has applied it, so the highest count covers it."""
    counts = [applied_commands(endpoint) for endpoint in endpoints]
    target = max((count for count in counts if count is not None), default=None)
    if target is None:
        raise AssertionError(f"no node of {list(endpoints)} answered MetadataDigest")
    for endpoint in endpoints:
        wait_until(
            partial(_has_applied, endpoint, target),
            deadline_s=deadline_s,
            what=f"{endpoint} applied {target} metadata commands",
        )


def _has_applied(endpoint: str, count: int) -> bool:
    return (applied_commands(endpoint) or 0) >= count


def formed(endpoint: str, size: int) -> bool:
    """Every node registered and ACTIVE, a controller known, as `endpoint` sees it."""
    try:
        status = cluster_status(endpoint)
    except grpc.RpcError:
        return False
    active = [n for n in status.nodes if n.state == "ACTIVE"]
    return len(active) == size and bool(status.controller)


def wait_formed(cluster: ClusterProcesses, *, deadline_s: float = 120) -> None:
    # A bound, not a speed: three nodes importing at once take ~2 s quiet, 30+ s at load 40.
    size = len(cluster.nodes)
    for endpoint in cluster.endpoints:
        wait_until(
            partial(formed, endpoint, size), deadline_s=deadline_s, what=f"{endpoint} formed"
        )


def shard_leaders(endpoint: str, stream: str) -> dict[str, str]:
    """shard id -> leader node id of the stream's open shards."""
    return {
        s.shard_id: s.leader
        for s in cluster_status(endpoint).shards
        if s.stream_name == stream and s.state != "CLOSED"
    }


def wait_shards_led(endpoint: str, stream: str, *, deadline_s: float = 30) -> dict[str, str]:
    """shard id -> leader of the stream's open shards once `endpoint` sees a leader for each:
    a stream is ACTIVE by its timer, and the controller chooses its leaders by a command of
    its own a moment later."""
    leaders: dict[str, str] = wait_until(
        partial(_all_led, endpoint, stream),
        deadline_s=deadline_s,
        what=f"every shard of {stream} led, as {endpoint} sees it",
    )
    return leaders


def _all_led(endpoint: str, stream: str) -> dict[str, str]:
    leaders = shard_leaders(endpoint, stream)
    return leaders if all(leaders.values()) else {}


def read_stream(endpoint: str, stream: str) -> dict[bytes, list[tuple[str, str]]]:
    """data -> [(shard id, sequence number)] of every record of every shard, read via
    `endpoint`."""
    found: dict[bytes, list[tuple[str, str]]] = {}
    with ShoalClient(endpoint, timeout_s=30) as client:
        shards = client.call("ListShards", {"StreamName": stream})["Shards"]
        for shard in shards:
            for record in read_shard(client, stream, shard["ShardId"]):
                found.setdefault(record["Data"], []).append(
                    (shard["ShardId"], record["SequenceNumber"])
                )
    return found


@dataclass
class Producer:
    """A thread putting batches through the given endpoints (the next one after a failure),
    retrying a failed record up to `attempts` times, recording acknowledgements, and for each
    record the failures it was retried after (`failures`)."""

    endpoints: Sequence[str]
    stream: str
    name: str = "p"  # prefixes the data, so producers' records differ
    batch_size: int = 20
    attempts: int = 20
    acknowledged: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    failed_calls: int = 0  # calls that failed (then retried)
    lost: list[bytes] = field(default_factory=list)  # records never acknowledged
    # data -> the error of each call that sent it and did not acknowledge it: the call's
    # exception or the record's ErrorCode. Every one but a throughput refusal may have stored
    # the record (an unknown outcome: a timeout, InternalFailure), and the retry that follows
    # may store it again, as it may with Kinesis (`unexplained_copies`).
    failures: dict[bytes, list[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Producer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=120)
        assert not self._thread.is_alive()

    def wait_acknowledged(self, count: int, *, deadline_s: float = 60) -> None:
        wait_until(
            lambda: len(self.acknowledged) >= count, deadline_s=deadline_s, what="acknowledgements"
        )

    def _run(self) -> None:
        clients = [ShoalClient(e, timeout_s=30) for e in self.endpoints]
        target = 0
        batch = 0
        try:
            while not self._stop.is_set():
                pending = [f"{self.name}:{batch}:{i}".encode() for i in range(self.batch_size)]
                batch += 1
                for _ in range(self.attempts):
                    if not pending:
                        break
                    try:
                        response = clients[target].call(
                            "PutRecords",
                            {
                                "StreamName": self.stream,
                                "Records": [
                                    {"PartitionKey": data.decode(), "Data": data}
                                    for data in pending
                                ],
                            },
                        )
                    except ShoalError as error:
                        self.failed_calls += 1
                        for data in pending:
                            self.failures.setdefault(data, []).append(error.code.kinesis_name)
                        target = (target + 1) % len(clients)
                        time.sleep(0.05)  # a client's retry pause, as an SDK's backoff
                        continue
                    retry = []
                    for data, result in zip(pending, response["Records"], strict=True):
                        if "SequenceNumber" in result:
                            self.acknowledged[data] = (result["ShardId"], result["SequenceNumber"])
                            self.ack_times.append(time.monotonic())
                        else:
                            retry.append(data)
                            self.failures.setdefault(data, []).append(result["ErrorCode"])
                    if retry:
                        self.failed_calls += 1
                    pending = retry
                self.lost.extend(pending)
        finally:
            for client in clients:
                client.close()


_NOT_STORED = "ProvisionedThroughputExceededException"  # refused before anything was written


def unexplained_copies(
    found: dict[bytes, list[tuple[str, str]]], producers: Sequence[Producer]
) -> list[str]:
    """Records stored more often than their calls allow: one copy for the call that
    acknowledged it, plus one per call whose outcome was unknown (Kinesis producers retry
    those, and a retry may store the record again, so those copies are the client's, not a
    broker's duplicate). Anything beyond is a record stored twice by the broker."""
    failures: dict[bytes, list[str]] = {}
    acknowledged: set[bytes] = set()
    for producer in producers:
        failures.update(producer.failures)
        acknowledged.update(producer.acknowledged)
    unexplained = []
    for data, positions in found.items():
        errors = failures.get(data, [])
        allowed = (data in acknowledged) + sum(1 for e in errors if e != _NOT_STORED)
        if len(positions) > max(allowed, 1):
            unexplained.append(f"{data!r} stored at {positions} after failures {errors}")
    return unexplained


def check_no_loss(endpoint: str, stream: str, acknowledged: dict[bytes, tuple[str, str]]) -> None:
    """Every acknowledged record is readable via `endpoint` at the position it was acknowledged
    with, and no position appears twice. Positions are compared decoded (shard, offset): in a
    rolling upgrade one record is numbered in either layout, by the node that answers."""
    found = read_stream(endpoint, stream)
    missing = [data for data in acknowledged if data not in found]
    assert not missing, f"{len(missing)} acknowledged records missing via {endpoint}: {missing[:5]}"
    for data, position in acknowledged.items():
        decoded = [_decoded(p) for p in found[data]]
        assert _decoded(position) in decoded, (data, position, found[data])
    numbers = [_decoded(position) for positions in found.values() for position in positions]
    assert len(numbers) == len(set(numbers)), "a sequence number appears twice"


def _decoded(position: tuple[str, str]) -> tuple[str, int]:
    shard, number = position
    return shard, decode_sequence_number(number).offset
