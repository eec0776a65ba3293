"""The autoscaler shell (meta/autoscaler.py) over an in-memory quorum: it acts only while the
quorum leader, turns decisions into automatic BeginReshards and log events, and records the
refusals. The decision rules themselves are tested in tests/streams/test_autoscaling.py."""

from __future__ import annotations

from broker.clock import ManualClock
from broker.meta.autoscaler import Autoscaler, AutoscalerSettings
from broker.meta.capacity import scaling_events
from broker.meta.capacity_table import ReportedLoad, ScalingEventKind
from broker.meta.commands import Command, ReportShardLoads
from broker.meta.image import MetadataImage, ShardState, StreamMode
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.streams.autoscaling import AutoscalingPolicy
from broker.streams.hot_keys import KeyLoad
from broker.types import NodeId, ShardIndex, StreamName, StreamUid
from tests.meta.factories import create_stream, nodes_image

N1 = NodeId("n1")
POLICY = AutoscalingPolicy(
    hot_for_ms=1_000, cold_for_ms=2_000, cooldown_ms=0, min_open_shards=1, max_open_shards=4
)


def _ok(image: MetadataImage, command: Command) -> MetadataImage:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    return applied.image


def _hot(
    shard: int, *, now_ms: int, split_key: int | None, hot_key: str | None = None
) -> ReportedLoad:
    return ReportedLoad(
        stream_uid=StreamUid(1),
        shard_index=ShardIndex(shard),
        node_id=N1,
        epoch=1,
        reported_ms=now_ms,
        span_ms=1_000,
        records=900,  # 900 records/s: above the 500 split rate
        size_bytes=9_000,
        split_key=split_key,
        hot_key=hot_key,
        hot_key_share_ppm=990_000 if hot_key else 0,
        top_keys=(
            KeyLoad(
                partition_key="k",
                records=900,
                records_error=0,
                size_bytes=9_000,
                size_bytes_error=0,
            ),
        ),
    )


async def _scaler(
    *, mode: StreamMode = StreamMode.ON_DEMAND, shards: int = 2, account_max: int = 100
) -> tuple[Autoscaler, LocalQuorum, ManualClock]:
    clock = ManualClock(wall_ms=1_800_000_000_000)
    image = _ok(
        nodes_image(1), create_stream("s1", mode=mode, shard_count=shards, now_ms=clock.wall_ms())
    )
    clock.advance(ms=5_000)  # past CREATING
    quorum = LocalQuorum(image)
    await quorum.start()
    settings = AutoscalerSettings(
        policy=POLICY, load_stale_ms=10_000, shard_count_per_account_max=account_max
    )
    return Autoscaler(quorum=quorum, clock=clock, settings=settings), quorum, clock


async def _report(quorum: LocalQuorum, *loads: ReportedLoad, now_ms: int) -> None:
    await quorum.propose(ReportShardLoads(now_ms=now_ms, node_id=N1, loads=loads))


async def test_a_sustained_hot_shard_is_split_at_its_traffic_split_key() -> None:
    scaler, quorum, clock = await _scaler()
    shard = quorum.image().streams[StreamName("s1")].shards[0]
    split_key = shard.hash_key_start + 12_345
    await _report(
        quorum, _hot(0, now_ms=clock.wall_ms(), split_key=split_key), now_ms=clock.wall_ms()
    )
    assert await scaler.run_pass() == 0  # hot, but not for hot_for_ms yet
    clock.advance(ms=1_000)
    await _report(
        quorum, _hot(0, now_ms=clock.wall_ms(), split_key=split_key), now_ms=clock.wall_ms()
    )
    assert await scaler.run_pass() == 1
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is not None
    assert stream.reshard.new_starting_hash_key == split_key
    assert stream.shards[0].state is ShardState.SEALING
    (event,) = scaling_events(quorum.image(), stream)
    assert event.kind is ScalingEventKind.SPLIT
    assert "halves its recent traffic" in event.reason


async def test_nothing_happens_on_a_node_that_does_not_lead_the_quorum() -> None:
    scaler, quorum, clock = await _scaler()
    await _report(quorum, _hot(0, now_ms=clock.wall_ms(), split_key=None), now_ms=clock.wall_ms())
    await quorum.stop()
    clock.advance(ms=5_000)
    assert scaler.decisions(quorum.image()) == []


async def test_idle_neighbours_merge_down_to_the_floor_only() -> None:
    scaler, quorum, clock = await _scaler(shards=3)
    assert await scaler.run_pass() == 0  # no report anywhere: every shard idle, timers start
    clock.advance(ms=2_000)
    assert await scaler.run_pass() == 1
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is not None and stream.reshard.sealed == (ShardIndex(0), ShardIndex(1))
    events = scaling_events(quorum.image(), stream)
    assert [e.kind for e in events] == [ScalingEventKind.MERGE]


async def test_a_hot_key_is_reported_not_split() -> None:
    scaler, quorum, clock = await _scaler()
    for _ in range(2):
        await _report(
            quorum,
            _hot(0, now_ms=clock.wall_ms(), split_key=None, hot_key="whale"),
            now_ms=clock.wall_ms(),
        )
        await scaler.run_pass()
        clock.advance(ms=1_000)
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is None
    (event,) = scaling_events(quorum.image(), stream)
    assert event.kind is ScalingEventKind.HOT_KEY and "'whale'" in event.reason


async def test_a_refused_split_is_logged_with_the_reason() -> None:
    scaler, quorum, clock = await _scaler(account_max=2)  # the account holds 2 shards already
    for _ in range(2):
        await _report(
            quorum, _hot(0, now_ms=clock.wall_ms(), split_key=None), now_ms=clock.wall_ms()
        )
        await scaler.run_pass()
        clock.advance(ms=1_000)
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is None
    (event,) = scaling_events(quorum.image(), stream)
    assert event.kind is ScalingEventKind.REFUSED
    assert "refused:" in event.reason and "midpoint" in event.reason


async def test_provisioned_streams_are_left_alone() -> None:
    scaler, quorum, clock = await _scaler(mode=StreamMode.PROVISIONED, shards=3)
    await scaler.run_pass()
    clock.advance(ms=10_000)
    assert await scaler.run_pass() == 0
    assert quorum.image().streams[StreamName("s1")].reshard is None
