"""UpdateStreamLimits, UpdateAccountSettings, UpdateAccountLimits and the leadership time
SetShardLeader records, applied by the state machine; and their images' round trip."""

from __future__ import annotations

from broker.errors import ErrorCode
from broker.meta.commands import (
    BeginReshard,
    Command,
    SetShardLeader,
    UpdateAccountLimits,
    UpdateAccountSettings,
    UpdateStreamLimits,
)
from broker.meta.image import MetadataImage, ReshardKind, StreamMode
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import Applied, apply
from broker.streams.account_settings import CommitmentStatus
from broker.streams.throttling import StreamLimits
from broker.types import ShardIndex, StreamName
from tests.meta.factories import create_stream, init_cluster, nodes_image

S1 = StreamName("s1")


def applied(image: MetadataImage, command: object) -> Applied:
    assert isinstance(command, Command)
    return apply(image, command)


def ok(image: MetadataImage, command: object) -> MetadataImage:
    result = applied(image, command)
    assert result.error is None, result.error
    return result.image


def with_stream(count: int = 3) -> MetadataImage:
    image = ok(
        nodes_image(count, apply(MetadataImage(), init_cluster()).image),
        create_stream(replication_factor=3),
    )
    return image


def test_stream_limits_merge_and_survive_the_image_codec() -> None:
    image = with_stream()
    image = ok(
        image,
        UpdateStreamLimits(
            now_ms=1,
            name="s1",
            changes=StreamLimits(write_bytes_per_second=0, read_calls_per_second=2),
        ),
    )
    image = ok(
        image,
        UpdateStreamLimits(
            now_ms=2,
            name="s1",
            changes=StreamLimits(read_bytes_per_second=7),
            reset=("write_bytes_per_second",),
        ),
    )
    stream = image.streams[S1]
    assert stream.throughput_limits == StreamLimits(
        read_calls_per_second=2, read_bytes_per_second=7
    )
    assert decode_image(encode_image(image)) == image


def test_stream_limits_of_a_missing_stream_are_not_found() -> None:
    result = applied(
        with_stream(), UpdateStreamLimits(now_ms=1, name="nope", changes=StreamLimits())
    )
    assert result.error is not None
    assert result.error.code is ErrorCode.RESOURCE_NOT_FOUND


def test_billing_commitment_through_commands() -> None:
    image = with_stream()
    image = ok(image, UpdateAccountSettings(now_ms=1_000, commitment_enabled=True))
    commitment = image.account.billing_commitment
    assert commitment.status(now_ms=1_000) is CommitmentStatus.ENABLED
    image = ok(image, UpdateAccountSettings(now_ms=2_000, commitment_enabled=False))
    assert (
        image.account.billing_commitment.status(now_ms=2_000)
        is CommitmentStatus.ENABLED_UNTIL_EARLIEST_ALLOWED_END
    )
    assert decode_image(encode_image(image)) == image


def test_runtime_account_limits_win_over_the_proposers_configuration() -> None:
    image = with_stream()  # 2 open shards; the factory proposes a limit of 100
    image = ok(image, UpdateAccountLimits(now_ms=1, shard_limit=3, on_demand_stream_limit=0))
    refused = applied(image, create_stream("s2", now_ms=2))
    assert refused.error is not None
    assert refused.error.code is ErrorCode.LIMIT_EXCEEDED
    assert "Limit: 3." in refused.error.message
    refused = applied(
        image, create_stream("s3", now_ms=2, shard_count=1, mode=StreamMode.ON_DEMAND)
    )
    assert refused.error is not None
    assert "on-demand stream limit" in refused.error.message
    ok(image, create_stream("s4", now_ms=2, shard_count=1))  # 3 shards: at the limit
    image = ok(image, UpdateAccountLimits(now_ms=3, reset=("shard_limit",)))
    ok(image, create_stream("s2", now_ms=4))


def test_set_shard_leader_records_when_a_new_leader_began() -> None:
    image = with_stream()
    shard = image.streams[S1].shards[0]
    assert shard.leader_since_ms == 0
    other = next(n for n in shard.replicas if n != shard.leader)
    moved = ok(
        image,
        SetShardLeader(
            now_ms=5_000,
            stream_uid=image.streams[S1].uid,
            shard_index=ShardIndex(0),
            leader=other,
            epoch=2,
            expected_epoch=1,
            replicas=shard.replicas,
        ),
    )
    after = moved.streams[S1].shards[0]
    assert (after.leader, after.leader_since_ms) == (other, 5_000)
    same = ok(
        moved,
        SetShardLeader(
            now_ms=9_000,
            stream_uid=moved.streams[S1].uid,
            shard_index=ShardIndex(0),
            leader=other,
            epoch=3,
            expected_epoch=2,
            replicas=shard.replicas,
        ),
    )
    # The same leader in a new epoch keeps its buckets: its leadership began at 5 000.
    assert same.streams[S1].shards[0].leader_since_ms == 5_000


def test_splits_in_flight_count_against_the_account_shard_limit() -> None:
    """Two streams split at once while the account has room for one more shard: the second
    split must be refused, or both complete and the account holds limit + 1 open shards."""
    image = ok(with_stream(), create_stream("s2", now_ms=1, creating_ms=0))  # 4 open shards
    image = ok(image, UpdateAccountLimits(now_ms=1, shard_limit=5))

    def split(name: str, now_ms: int) -> BeginReshard:
        shard = image.streams[StreamName(name)].shards[0]
        return BeginReshard(
            now_ms=now_ms,
            name=name,
            kind=ReshardKind.SPLIT,
            shard_index=ShardIndex(0),
            new_starting_hash_key=(shard.hash_key_start + shard.hash_key_end) // 2,
            shard_count_per_account_max=100,
        )

    image = ok(image, split("s1", 5_000))  # 4 + 1 = 5: allowed
    refused = applied(image, split("s2", 5_001))
    assert refused.error is not None and refused.error.code is ErrorCode.LIMIT_EXCEEDED
    assert "Current shard count for the account: 5." in refused.error.message
    shrink = applied(
        image,
        BeginReshard(
            now_ms=5_002,
            name="s2",
            kind=ReshardKind.MERGE,
            shard_index=ShardIndex(0),
            adjacent_shard_index=ShardIndex(1),
            shard_count_per_account_max=100,
        ),
    )
    assert shrink.error is None, shrink.error  # merging never needs room
