"""A forwarded append carries the hash keys its records were routed by, and the leader's load
tracker uses them (rpc/forwarder.py, rpc/shard_codec.py, service/shard_load.py).

Goal: records with an ExplicitHashKey that reach the shard's leader through another node count
at their explicit hash key, so the traffic split key the leader reports is where the traffic
really halves, not where their partition keys' MD5s lie. Method: a real in-process node leads
the shard; the test is the non-leader node's calling side (`GrpcShardForwarder`, what a
gateway on another node uses, over the node's real gRPC port), and reads the split key back
through the public CapacityService. Plus units of the wire packing and of `ShardClient.append`
handing the keys to its forwarder. A three-node version through the public Kinesis API is in
tests/cluster/test_forwarded_hash_keys.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.client.capacity import CapacityClient
from broker.clock import ManualClock, SystemClock
from broker.log.records import NewRecord, NewRecords, StoredRecord
from broker.meta.image import ShardState
from broker.meta.state_machine import apply
from broker.node import Node
from broker.rpc.channels import Channels
from broker.rpc.forwarder import GrpcShardForwarder
from broker.rpc.shard_codec import (
    hash_keys_from_wire,
    hash_keys_to_wire,
    stored_from_proto,
    stored_to_proto,
)
from broker.service.shards import AppendResult, ShardClient
from broker.types import NodeId, Offset, ShardUid, StreamName, StreamUid
from tests.conftest import connected_client, node_config
from tests.meta.factories import create_stream, nodes_image

pytestmark = pytest.mark.integration

LOW = 2**125  # every explicit hash key lies below: the traffic halves near 2^124


def _md5(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def _upper_half_keys(count: int) -> list[str]:
    """Partition keys hashing at or above 2^127: a re-hash would put the split key up there."""
    keys = (f"user-{i}" for i in range(20 * count))
    return [k for k in keys if _md5(k) >= 2**127][:count]


def test_hash_keys_pack_to_16_bytes_a_record_and_back() -> None:
    keys = [0, 1, 2**64, 2**128 - 1, _md5("a")]
    packed = hash_keys_to_wire(keys)
    assert len(packed) == 16 * len(keys)
    assert hash_keys_from_wire(packed, len(keys)) == keys
    assert hash_keys_to_wire(None) == b"" and hash_keys_from_wire(b"", 3) is None
    with pytest.raises(ValueError, match="for 4 records"):
        hash_keys_from_wire(packed, 4)


class _RecordingForwarder:
    def __init__(self) -> None:
        self.hash_keys: list[Sequence[int] | None] = []

    async def append(
        self,
        address: str,
        *,
        stream_uid: StreamUid,
        shard_uid: ShardUid,
        epoch: int,
        records: NewRecords,
    ) -> AppendResult:
        self.hash_keys.append(records.hash_keys)
        return AppendResult(first_offset=Offset(0), arrival_ms=1, throttled=())

    async def read(self, *_: Any, **__: Any) -> Any:
        raise AssertionError("not read here")


async def test_shard_client_hands_the_hash_keys_to_the_forwarder() -> None:
    image = apply(nodes_image(2), create_stream("s", shard_count=1)).image
    stream = image.streams[StreamName("s")]
    shard = stream.shards[0]
    assert shard.leader is not None
    other = next(n for n in image.nodes if n != shard.leader)
    forwarder = _RecordingForwarder()
    unused: Any = None  # the leader is elsewhere: no local store, replica or throttle runs
    client = ShardClient(
        node_id=NodeId(other),
        clock=ManualClock(),
        store=unused,
        local=unused,
        throttles=unused,
        forwarder=forwarder,
    )
    await client.append(image, stream.uid, shard, NewRecords.of([NewRecord("k", b"x")], [12345]))
    assert forwarder.hash_keys == [(12345,)]


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(
        node_config(
            tmp_path / "node",
            # Rates over the last 1-1.5 s, reported every 100 ms.
            load_window_ms=500,
            load_window_count=3,
            load_report_interval_ms=100,
            load_report_stale_ms=2_000,
        ),
        clock=SystemClock(),
    )
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_forwarded_explicit_hash_keys_place_the_split_key(leader: Node) -> None:
    async with connected_client(leader) as client:
        await client.call("CreateStream", {"StreamName": "s", "ShardCount": 1})
    metadata = leader._metadata
    assert metadata is not None
    deadline = time.monotonic() + 10
    while True:  # the node's own image: uids and epoch, what a gateway routes by
        stream = metadata.image().streams.get(StreamName("s"))
        shard = stream.shards[0] if stream is not None else None
        if shard is not None and shard.leader is not None and shard.state is ShardState.OPEN:
            break
        assert time.monotonic() < deadline, "the shard never got a leader"
        await asyncio.sleep(0.02)
    assert stream is not None

    keys = _upper_half_keys(50)
    explicit = [i * (LOW // len(keys)) for i in range(len(keys))]  # uniform below 2^125
    channels = Channels()
    forwarder = GrpcShardForwarder(channels)
    try:
        for _ in range(4):
            result = await forwarder.append(
                f"127.0.0.1:{leader.grpc_port}",
                stream_uid=stream.uid,
                shard_uid=shard.uid,
                epoch=shard.epoch,
                records=NewRecords.of([NewRecord(key, b"x" * 100) for key in keys], explicit),
            )
            assert result.throttled == ()
    finally:
        await channels.close()

    with CapacityClient(f"127.0.0.1:{leader.grpc_port}") as capacity:
        deadline = time.monotonic() + 10
        while True:
            loads = (await asyncio.to_thread(capacity.describe_hot_shards, "s"))["shards"]
            if loads[0].get("split_hash_key"):
                break
            assert time.monotonic() < deadline, f"no split key reported: {loads}"
            await asyncio.sleep(0.05)
    assert loads[0]["records_per_second"] > 0
    assert 0 < int(loads[0]["split_hash_key"]) < LOW, loads[0]  # MD5s would put it >= 2^127


def test_records_read_through_another_node_keep_how_they_were_stored() -> None:
    """A ShardRead answered by another replica carries each record's sealed flag, so a
    forwarded GetRecords says EncryptionType KMS or NONE as a local read does."""
    records = [
        StoredRecord(Offset(7), 1_000, "k", b"clear"),
        StoredRecord(Offset(8), 1_001, "k", b"sealed", True),
    ]
    assert stored_from_proto(stored_to_proto(records)) == records
    assert [r.encrypted for r in stored_from_proto(stored_to_proto(records))] == [False, True]
