"""Command builders for the metadata tests: AWS-like defaults, overridable by keyword."""

from __future__ import annotations

from typing import Any

from broker.consumers import leases
from broker.meta.commands import (
    CreateStream,
    InitCluster,
    LeaseCommand,
    RegisterNode,
    lease_command,
)
from broker.meta.image import MetadataImage, ShardMeta, ShardState, StreamMeta, StreamMode
from broker.meta.state_machine import apply
from broker.types import NodeId, ShardIndex, ShardUid, StreamName, StreamUid

ACCOUNT = "123456789012"
REGION = "eu-west-1"
CREATING_MS = 1_000


def arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def create_stream(name: str = "s1", *, now_ms: int = 0, **overrides: Any) -> CreateStream:
    fields: dict[str, Any] = {
        "now_ms": now_ms,
        "name": name,
        "arn": arn(name),
        "shard_count": 2,
        "mode": StreamMode.PROVISIONED,
        "retention_hours": 24,
        "max_record_size_kib": 1024,
        "tags": (),
        "creating_ms": CREATING_MS,
        "shard_count_per_account_max": 100,
        "on_demand_streams_max": 2,
    }
    fields.update(overrides)
    return CreateStream(**fields)


def init_cluster(cluster_id: str = "c-1", *, now_ms: int = 0) -> InitCluster:
    """Starts the cluster at the first metadata format (a node raises it: SetMetadataFormat)."""
    return InitCluster(now_ms=now_ms, cluster_id=cluster_id, iterator_secret=b"\x00\x01secret")


def register_node(
    node_id: str = "n1", *, now_ms: int = 0, voter: bool = True, port: int | None = None
) -> RegisterNode:
    """A RegisterNode with addresses derived from the id (n3 listens on ...:5003 etc.)."""
    number = port if port is not None else 5000 + sum(map(ord, node_id))
    return RegisterNode(
        now_ms=now_ms,
        node_id=NodeId(node_id),
        api_address=f"{node_id}.test:{number}",
        http_address=f"{node_id}.test:{number + 1}",
        raft_address=f"{node_id}.test:{number + 2}",
        voter=voter,
    )


def node_ids(count: int) -> list[NodeId]:
    return [NodeId(f"n{i}") for i in range(1, count + 1)]


def nodes_image(count: int = 1, image: MetadataImage | None = None) -> MetadataImage:
    """An image with nodes n1..n<count> registered and ACTIVE."""
    image = image if image is not None else MetadataImage()
    for node_id in node_ids(count):
        applied = apply(image, register_node(node_id))
        assert applied.error is None, applied.error
        image = applied.image
    return image


def shard_meta(uid: int, *, index: int = 0, **overrides: Any) -> ShardMeta:
    """An OPEN shard over the whole hash key range unless `overrides` say otherwise (replicas,
    leader, epoch, state, hash keys...), built directly: for tests below the state machine."""
    fields: dict[str, Any] = {
        "index": ShardIndex(index),
        "uid": ShardUid(uid),
        "hash_key_start": 0,
        "hash_key_end": 2**128 - 1,
        "parent_index": None,
        "adjacent_parent_index": None,
        "created_ms": 0,
        "state": ShardState.OPEN,
    }
    fields.update(overrides)
    return ShardMeta(**fields)


def one_stream(*shards: ShardMeta, **overrides: Any) -> StreamMeta:
    """A provisioned stream "s" (uid 1) of `shards` unless `overrides` say otherwise, built
    directly (no commands): for tests of the layers below the state machine."""
    fields: dict[str, Any] = {
        "name": StreamName("s"),
        "uid": StreamUid(1),
        "arn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
        "created_ms": 0,
        "mode": StreamMode.PROVISIONED,
        "retention_hours": 24,
        "shards": shards,
        "next_shard_index": ShardIndex(len(shards)),
        "transient_status": None,
    }
    fields.update(overrides)
    return StreamMeta(**fields)


def one_stream_image(*shards: ShardMeta) -> MetadataImage:
    """An image holding `one_stream(*shards)`."""
    stream = one_stream(*shards)
    return MetadataImage(streams={stream.name: stream})


def every_lease_command(now_ms: int = 20) -> list[LeaseCommand]:
    """One of each lease command, with every optional field set somewhere (codec tests)."""
    base = {"application": "app", "stream_name": "s1", "lease_key": "shardId-000000000000"}
    operations: list[leases.LeaseOperation] = [
        leases.CreateLeases(
            application="app",
            stream_name="s1",
            leases=(
                leases.NewLease(shard_id="shardId-000000000000"),
                leases.NewLease(
                    shard_id="shardId-000000000002",
                    parent_shard_ids=("shardId-000000000000", "shardId-000000000001"),
                    checkpoint=leases.LATEST,
                ),
            ),
        ),
        leases.TakeLease(**base, owner="w1", expected_owner=None, expected_counter=0),
        leases.TakeLease(**base, owner="w1", expected_owner="w0", expected_counter=4),
        leases.StealLease(**base, owner="w2", expected_owner="w1", expected_counter=1),
        leases.RenewLease(**base, owner="w2", expected_counter=2),
        leases.ReleaseLease(**base, owner="w2", expected_counter=3),
        leases.CheckpointLease(
            **base,
            owner="w2",
            expected_counter=3,
            checkpoint=leases.Checkpoint("4" * 40, 2**63),
            pending=True,
        ),
        leases.CheckpointLease(
            **base, owner="w2", expected_counter=3, checkpoint=leases.SHARD_END, pending=False
        ),
        leases.DeleteLease(**base),
        leases.DeleteApplication(application="app"),
    ]
    return [lease_command(operation, now_ms=now_ms + i) for i, operation in enumerate(operations)]
