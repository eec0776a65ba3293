"""`Throttles`: each shard's rates from the image (stream overrides over the cluster default),
rebuilt when they change, and a new leader's buckets starting from empty at its leadership's
start. Metadata images built with the real state machine; a manual clock."""

from __future__ import annotations

import dataclasses

from broker.clock import ManualClock
from broker.meta.commands import SetShardLeader, UpdateStreamLimits
from broker.meta.image import MetadataImage
from broker.meta.state_machine import apply
from broker.service.throughput import Throttles
from broker.streams.throttling import StreamLimits, ThroughputLimits
from broker.types import ShardIndex, StreamName
from tests.meta.factories import create_stream, init_cluster, nodes_image

DEFAULTS = ThroughputLimits(
    write_bytes_per_second=0,
    write_records_per_second=10,
    read_calls_per_second=0,
    read_bytes_per_second=0,
)
S1 = StreamName("s1")


class Images:
    """The image a node would see, changed by applying commands."""

    def __init__(self) -> None:
        image = apply(MetadataImage(), init_cluster()).image
        image = nodes_image(3, image)
        applied = apply(image, create_stream(replication_factor=3))
        assert applied.error is None
        self.image = applied.image

    def __call__(self) -> MetadataImage:
        return self.image

    def apply(self, command: object) -> None:
        applied = apply(self.image, command)  # type: ignore[arg-type]
        assert applied.error is None, applied.error
        self.image = applied.image


def admitted(throttles: Throttles, uid: int, now_ms: int, count: int = 100) -> int:
    throttle = throttles.write(uid, now_ms=now_ms)  # type: ignore[arg-type]
    return sum(throttle.admit(record_bytes=1, now_ms=now_ms) for _ in range(count))


def test_stream_overrides_replace_the_default_and_are_picked_up_on_change() -> None:
    images = Images()
    clock = ManualClock(wall_ms=10_000)
    throttles = Throttles(DEFAULTS, image=images, clock=clock)
    shard = images.image.streams[S1].shards[0]
    assert throttles.writes_limited_for(shard.uid)
    assert admitted(throttles, shard.uid, 0) == 10
    images.apply(
        UpdateStreamLimits(now_ms=1, name="s1", changes=StreamLimits(write_records_per_second=3))
    )
    assert throttles.shard_limits(shard.uid).write_records_per_second == 3
    assert admitted(throttles, shard.uid, 0) == 3  # a new budget: rebuilt (full: not a takeover)
    images.apply(
        UpdateStreamLimits(now_ms=2, name="s1", changes=StreamLimits(write_records_per_second=0))
    )
    assert not throttles.writes_limited_for(shard.uid)
    # An unknown shard (not in this image yet) gets the cluster default.
    assert throttles.shard_limits(9_999).write_records_per_second == 10  # type: ignore[arg-type]


def test_a_new_leader_starts_empty_and_refills_from_its_leadership_start() -> None:
    images = Images()
    clock = ManualClock(wall_ms=50_000)
    throttles = Throttles(DEFAULTS, image=images, clock=clock)
    shard = images.image.streams[S1].shards[0]
    assert admitted(throttles, shard.uid, 0) == 10  # the first leader starts full
    other = next(n for n in shard.replicas if n != shard.leader)
    images.apply(
        SetShardLeader(
            now_ms=50_000,
            stream_uid=images.image.streams[S1].uid,
            shard_index=ShardIndex(0),
            leader=other,
            epoch=2,
            expected_epoch=1,
            replicas=shard.replicas,
        )
    )
    clock.advance(ms=300)  # this node serves its first request 300 ms into the leadership
    assert admitted(throttles, shard.uid, 100) == 3
    assert admitted(throttles, shard.uid, 1_100) == 10  # then it refills at the rate
    # The same leader in a later epoch (a replica set change) keeps its bucket.
    moved = images.image.streams[S1].shards[0]
    images.apply(
        SetShardLeader(
            now_ms=60_000,
            stream_uid=images.image.streams[S1].uid,
            shard_index=ShardIndex(0),
            leader=other,
            epoch=3,
            expected_epoch=2,
            replicas=moved.replicas,
        )
    )
    assert admitted(throttles, shard.uid, 1_100) == 0
    assert dataclasses.replace(moved, epoch=3) == images.image.streams[S1].shards[0]
