"""encode_command/decode_command and encode_image/decode_image: exact round trips, strictness."""

from __future__ import annotations

import dataclasses
import json

import pytest

from broker import limits
from broker.consumers.leases import Checkpoint, CheckpointLease
from broker.meta.commands import (
    COMMAND_FORMAT_VERSION,
    AddTags,
    BeginReshard,
    ChangeAnalyticsApplication,
    ChangeAnalyticsSnapshot,
    ChangeRetention,
    CheckpointLeaseCommand,
    Command,
    CompleteReshard,
    CreateAnalyticsApplication,
    DeleteResourcePolicy,
    DeleteStream,
    ForgetStream,
    PutResourcePolicy,
    RecordAnalyticsProgress,
    RemoveNode,
    RemoveTags,
    RewrapStreamDataKeys,
    SetEnhancedMonitoring,
    SetMetadataFormat,
    SetNodeState,
    SetShardLeader,
    SetStreamEncryption,
    UpdateAccountLimits,
    UpdateAccountSettings,
    UpdateMaxRecordSize,
    UpdateRecordDistribution,
    UpdateStreamLimits,
    UpdateStreamMode,
    UpdateStreamWarmThroughput,
    WrappedDataKey,
    decode_command,
    encode_command,
)
from broker.meta.image import (
    ConsumerPolicy,
    MetadataImage,
    NodeState,
    RecordDistribution,
    ReshardKind,
    StreamDataKey,
    StreamMode,
)
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import apply
from broker.streams.sequence_numbers import (
    SequencePosition,
    encode_legacy_sequence_number,
    encode_sequence_number,
)
from broker.streams.throttling import StreamLimits
from broker.types import NodeId, Offset, ShardIndex, StreamUid
from tests.consumers.registry_factories import every_consumer_command
from tests.meta.capacity_factories import every_capacity_command
from tests.meta.delivery_stream_factories import every_delivery_stream_command
from tests.meta.factories import (
    create_stream,
    every_lease_command,
    init_cluster,
    nodes_image,
    register_node,
)
from tests.meta.iam_factories import every_iam_command
from tests.meta.queue_factories import every_queue_command
from tests.meta.video_factories import every_video_command

EVERY_COMMAND: list[Command] = [
    init_cluster(),
    create_stream("s1", tags=(("k", "v"), ("ü", "ß")), mode=StreamMode.ON_DEMAND),
    DeleteStream(now_ms=1, name="s1", deleting_ms=5),
    ForgetStream(now_ms=2, uid=StreamUid(2**63)),
    ChangeRetention(now_ms=3, name="s1", retention_hours=48, increase=True),
    AddTags(now_ms=4, name="s1", tags=(("a", ""),)),
    RemoveTags(now_ms=5, name="s1", keys=("a", "b")),
    SetEnhancedMonitoring(now_ms=6, name="s1", metrics=("IncomingBytes",), enable=False),
    BeginReshard(
        now_ms=7,
        name="s1",
        kind=ReshardKind.SPLIT,
        shard_index=ShardIndex(3),
        new_starting_hash_key=limits.hash_key_max,
        updating_ms=10,
        shard_count_per_account_max=500,
    ),
    BeginReshard(now_ms=8, name="s1", kind=ReshardKind.UNIFORM_SCALING, target_shard_count=4),
    CompleteReshard(
        now_ms=9,
        stream_uid=StreamUid(1),
        end_offsets=((ShardIndex(0), Offset(0)), (ShardIndex(1), Offset(2**40))),
        updating_ms=0,
    ),
    UpdateStreamMode(
        now_ms=10, name="s1", mode=StreamMode.PROVISIONED, updating_ms=1, on_demand_streams_max=3
    ),
    UpdateMaxRecordSize(now_ms=11, name="s1", max_record_size_kib=10240),
    register_node("n1", now_ms=12, voter=False),
    SetNodeState(now_ms=13, node_id=NodeId("n1"), state=NodeState.DRAINING, expected_incarnation=2),
    SetShardLeader(
        now_ms=14,
        stream_uid=StreamUid(1),
        shard_index=ShardIndex(0),
        leader=NodeId("n2"),
        epoch=7,
        expected_epoch=6,
        replicas=(NodeId("n2"), NodeId("n1"), NodeId("n3")),
    ),
    SetShardLeader(
        now_ms=15,
        stream_uid=StreamUid(1),
        shard_index=ShardIndex(1),
        leader=None,
        epoch=2,
        expected_epoch=1,
        replicas=(NodeId("n1"),),
    ),
    RemoveNode(now_ms=16, node_id=NodeId("n1")),
    *every_lease_command(now_ms=17),
    UpdateStreamLimits(
        now_ms=18,
        name="s1",
        changes=StreamLimits(write_bytes_per_second=0, read_calls_per_second=2**40),
        reset=("write_records_per_second",),
    ),
    UpdateAccountSettings(now_ms=19, commitment_enabled=True),
    UpdateAccountLimits(now_ms=20, shard_limit=7, reset=("on_demand_stream_limit",)),
    *every_capacity_command(now_ms=21),
    *every_consumer_command(now_ms=22),
    PutResourcePolicy(
        now_ms=23,
        resource_arn="arn:aws:kinesis:us-east-1:000000000000:stream/s1",
        stream_name="s1",
        policy='{"Statement": []}',
    ),
    DeleteResourcePolicy(
        now_ms=24,
        resource_arn="arn:aws:kinesis:us-east-1:000000000000:stream/s1",
        stream_name="s1",
    ),
    SetStreamEncryption(
        now_ms=25,
        name="s1",
        encryption_type="KMS",
        key_id="alias/aws/kinesis",
        updating_ms=1,
        data_key=WrappedDataKey(wrapped=b"\x00wrapped\xff", wrapping="local:k1"),
    ),
    RewrapStreamDataKeys(
        now_ms=27,
        name="s1",
        stream_uid=1,
        rewrapped=(StreamDataKey(version=1, wrapped=b"\x01", wrapping="local:k2", created_ms=25),),
    ),
    SetStreamEncryption(now_ms=26, name="s1", encryption_type="NONE", key_id=None, updating_ms=1),
    UpdateStreamWarmThroughput(now_ms=27, name="s1", warm_throughput_mibps=64, updating_ms=1),
    UpdateRecordDistribution(now_ms=28, name="s1", strategy=RecordDistribution.AUTO),
    *every_video_command(now_ms=23),
    CreateAnalyticsApplication(
        now_ms=23,
        account_id="000000000000",
        region="us-east-1",
        name="tickers",
        description="ü",
        code='CREATE OR REPLACE STREAM "D" (A INTEGER);',
        inputs="[]",
        outputs="[]",
        logging_options="[]",
        tags=(("team", "analytics"),),
        applications_max=50,
    ),
    ChangeAnalyticsApplication(
        now_ms=24,
        account_id="000000000000",
        region="us-east-1",
        name="tickers",
        operation="TagResource",
        request='{"Tags":[{"Key":"k","Value":"v"}]}',
        transition_ms=0,
    ),
    RecordAnalyticsProgress(
        now_ms=25,
        account_id="000000000000",
        region="us-east-1",
        name="tickers",
        reader="run1",
        owner="node-1:3f0c",
        emitted_through_ms=1_790_000_010_000,
        continuous_through=(("shardId-000000000000", "49" + "0" * 54),),
    ),
    ChangeAnalyticsSnapshot(
        now_ms=26,
        account_id="000000000000",
        region="us-east-1",
        name="savepoint-1",
        operation="ImportSnapshot",
        request='{"ImportSourceConfiguration":{}}',
        result='{"objects":2}',
        transition_ms=1000,
    ),
    *every_delivery_stream_command(now_ms=23),
    SetMetadataFormat(now_ms=26, level=2),
    *every_queue_command(now_ms=29),
    *every_iam_command(now_ms=35),
]


def test_every_command_type_is_covered() -> None:
    from broker.meta import commands

    names = {type(c).__name__ for c in EVERY_COMMAND}
    assert names == set(commands._COMMAND_TYPES)


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
def test_command_round_trip(command: Command) -> None:
    data = encode_command(command)
    assert decode_command(data) == command
    assert encode_command(decode_command(data)) == data
    document = json.loads(data)
    assert document["v"] == COMMAND_FORMAT_VERSION
    assert document["type"] == type(command).__name__


def test_big_hash_keys_and_bytes_are_exact() -> None:
    split = EVERY_COMMAND[8]
    assert isinstance(split, BeginReshard)
    decoded = decode_command(encode_command(split))
    assert isinstance(decoded, BeginReshard)
    assert decoded.new_starting_hash_key == 2**128 - 1
    init = decode_command(encode_command(EVERY_COMMAND[0]))
    assert init == EVERY_COMMAND[0]


def test_a_stream_created_encrypted_keeps_its_data_key_bytes() -> None:
    command = create_stream(
        "s2",
        key_id="alias/aws/kinesis",
        data_key=WrappedDataKey(wrapped=b"\x00first\xff", wrapping="cluster:c1"),
    )
    assert decode_command(encode_command(command)) == command


def _document(command: Command) -> dict[str, object]:
    document: dict[str, object] = json.loads(encode_command(command))
    return document


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(v=COMMAND_FORMAT_VERSION + 1),
        lambda d: d.update(type="NoSuchCommand"),
        lambda d: d.update(extra=1),
        lambda d: d.pop("name"),
        lambda d: d.update(now_ms="1"),
        lambda d: d.update(now_ms=True),
        lambda d: d.update(deleting_ms=None),
    ],
)
def test_decode_refuses_what_it_did_not_write(mutate) -> None:
    document = _document(DeleteStream(now_ms=1, name="s1", deleting_ms=5))
    mutate(document)
    with pytest.raises(ValueError, match=r"."):
        decode_command(json.dumps(document).encode())


def test_decode_refuses_non_json() -> None:
    for data in (b"\x80\x02pickle", b"[]", b"not json"):
        with pytest.raises(ValueError, match=r"."):
            decode_command(data)


def test_optional_fields_may_be_omitted() -> None:
    """A command written by an older version without a newer defaulted field still decodes."""
    document = _document(
        BeginReshard(now_ms=8, name="s1", kind=ReshardKind.UNIFORM_SCALING, target_shard_count=4)
    )
    del document["shard_count_per_account_max"]
    decoded = decode_command(json.dumps(document).encode())
    assert isinstance(decoded, BeginReshard)
    assert decoded.shard_count_per_account_max == 0


def test_image_round_trip() -> None:
    image = nodes_image(3)
    for command in (*EVERY_COMMAND[:2], SetMetadataFormat(now_ms=3, level=2)):
        image = apply(image, command).image
    assert image.streams["s1"].shards[0].replicas  # type: ignore[index]
    image = apply(
        image,
        BeginReshard(
            now_ms=5_000,
            name="s1",
            kind=ReshardKind.SPLIT,
            shard_index=ShardIndex(0),
            new_starting_hash_key=2**120,
        ),
    ).image
    for command in every_delivery_stream_command(now_ms=6_000)[:5]:
        image = apply(image, command).image
    assert image.delivery_streams
    data = encode_image(image)
    decoded = decode_image(data)
    assert decoded == image
    assert encode_image(decoded) == data
    assert decoded.iterator_secret == b"\x00\x01secret"


def test_image_with_stream_features_round_trips() -> None:
    """Resource policies, encryption, warm throughput and record distribution (issue 14)."""
    image = nodes_image(1)
    for command in (*EVERY_COMMAND[:2], SetMetadataFormat(now_ms=3, level=3)):
        image = apply(image, command).image
    stream = image.streams["s1"]  # type: ignore[index]
    featured = dataclasses.replace(
        stream,
        resource_policy='{"Version": "2012-10-17"}',
        consumer_policies=(ConsumerPolicy(consumer_arn="c", consumer_created_ms=5, policy="{}"),),
        encryption_type="KMS",
        key_id="alias/aws/kinesis",
        data_keys=(
            StreamDataKey(version=1, wrapped=b"\x00k", wrapping="local:a", created_ms=3),
            StreamDataKey(version=2, wrapped=b"\x01k", wrapping="kms:arn", created_ms=4),
        ),
        warm_throughput_mibps=100,
        previous_warm_throughput_mibps=10,
        record_distribution=RecordDistribution.AUTO,
    )
    image = dataclasses.replace(image, streams={stream.name: featured})
    assert decode_image(encode_image(image)) == image


def test_image_decode_refuses_other_versions() -> None:
    document = json.loads(encode_image(MetadataImage()))
    document["v"] = 99
    with pytest.raises(ValueError, match="version"):
        decode_image(json.dumps(document).encode())


def test_issue_2_formats_are_refused() -> None:
    """Version 1 journals and snapshots (single node, no placement) are not replayed: their
    CreateStream had no replication factor and no node to place shards on."""
    document = _document(DeleteStream(now_ms=1, name="s1", deleting_ms=5))
    document["v"] = 1
    with pytest.raises(ValueError, match="version 1"):
        decode_command(json.dumps(document).encode())
    image_document = json.loads(encode_image(MetadataImage()))
    image_document["v"] = 1
    with pytest.raises(ValueError, match="version 1"):
        decode_image(json.dumps(image_document).encode())


def test_image_with_nodes_and_placement_round_trips() -> None:
    image = apply(nodes_image(3), create_stream("s1", shard_count=3, replication_factor=3)).image
    image = apply(
        image,
        SetNodeState(
            now_ms=1, node_id=NodeId("n2"), state=NodeState.FENCED, expected_incarnation=1
        ),
    ).image
    decoded = decode_image(encode_image(image))
    assert decoded == image
    assert decoded.nodes[NodeId("n2")].state is NodeState.FENCED
    shard = decoded.streams["s1"].shards[2]  # type: ignore[index]
    assert shard.epoch == 1
    assert len(shard.replicas) == 3
    assert shard.leader == shard.replicas[0]
    assert decoded.streams["s1"].replication_factor == 3  # type: ignore[index]


def test_checkpoints_are_journaled_in_the_previous_layout() -> None:
    # KCL checkpoints cross the metadata journal, which nodes of the previous release apply too
    # during a rolling upgrade: they are written in its 38-digit layout (same order), and read
    # back in the 56-digit one clients are given. Old journals' checkpoints read the same way.
    position = SequencePosition(shard_created_ms=1_700_000_000_000, shard_index=3, offset=9)
    new, old = encode_sequence_number(position), encode_legacy_sequence_number(position)
    command = CheckpointLeaseCommand(
        now_ms=5,
        operation=CheckpointLease(
            application="app",
            stream_name="s",
            lease_key="shardId-000000000003",
            owner="w",
            expected_counter=1,
            checkpoint=Checkpoint(new, 2),
            pending=False,
        ),
    )
    text = encode_command(command).decode()
    assert new not in text
    assert old in text
    assert decode_command(text.encode()) == command
    assert decode_command(text.replace(old, new).encode()) == command  # either layout reads back
