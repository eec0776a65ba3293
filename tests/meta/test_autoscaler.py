"""The autoscaler shell (meta/autoscaler.py) over an in-memory quorum: it acts only while the
quorum leader, turns decisions into automatic BeginReshards and log events, and records the
refusals. The decision rules themselves are tested in tests/streams/test_autoscaling.py."""

from __future__ import annotations

import asyncio
import dataclasses

from broker.clock import ManualClock, VirtualClock
from broker.meta.autoscaler import Autoscaler, AutoscalerSettings
from broker.meta.capacity import scaling_events
from broker.meta.capacity_table import ReportedLoad, ScalingEventKind, split_hash_key
from broker.meta.commands import Command, CompleteReshard, ReportShardLoads
from broker.meta.image import MetadataImage, ShardState, StreamMeta, StreamMode
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.streams.autoscaling import AutoscalingPolicy
from broker.types import NodeId, Offset, ShardIndex, StreamName, StreamUid
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
    shard: int, *, now_ms: int, split_at_ppm: int | None, hot_key: str | None = None
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
        split_at_ppm=split_at_ppm,
        hot_key=hot_key,
        hot_key_share_ppm=990_000 if hot_key else 0,
        heavy_keys=(("k", 900, 0, 9_000, 0),),
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


async def _hot_passes(
    scaler: Autoscaler,
    quorum: LocalQuorum,
    clock: ManualClock,
    *,
    shard: int = 0,
    passes: int = 2,
    hot_key: str | None = None,
) -> list[int]:
    """`passes` rounds of: shard `shard` reported hot, one pass, a second later. The commands
    each pass had accepted."""
    accepted = []
    for _ in range(passes):
        now_ms = clock.wall_ms()
        await _report(
            quorum, _hot(shard, now_ms=now_ms, split_at_ppm=None, hot_key=hot_key), now_ms=now_ms
        )
        accepted.append(await scaler.run_pass())
        clock.advance(ms=1_000)
    return accepted


async def _complete_reshard(quorum: LocalQuorum, stream: StreamMeta, *, now_ms: int) -> None:
    assert stream.reshard is not None
    await quorum.propose(
        CompleteReshard(
            now_ms=now_ms,
            stream_uid=stream.uid,
            end_offsets=tuple((index, Offset(0)) for index in stream.reshard.sealed),
            updating_ms=0,
        )
    )


async def test_a_sustained_hot_shard_is_split_at_its_traffic_split_key() -> None:
    scaler, quorum, clock = await _scaler()
    shard = quorum.image().streams[StreamName("s1")].shards[0]
    quarter = 250_000  # a quarter of the way through the range: where its traffic halves
    split_key = split_hash_key(quarter, shard.hash_key_start, shard.hash_key_end)
    assert split_key == shard.hash_key_start + (shard.hash_key_end + 1 - shard.hash_key_start) // 4
    await _report(
        quorum, _hot(0, now_ms=clock.wall_ms(), split_at_ppm=quarter), now_ms=clock.wall_ms()
    )
    assert await scaler.run_pass() == 0  # hot, but not for hot_for_ms yet
    clock.advance(ms=1_000)
    await _report(
        quorum, _hot(0, now_ms=clock.wall_ms(), split_at_ppm=quarter), now_ms=clock.wall_ms()
    )
    assert await scaler.run_pass() == 1
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is not None
    assert stream.reshard.new_starting_hash_key == split_key
    assert stream.shards[0].state is ShardState.SEALING
    (event,) = scaling_events(quorum.image(), stream)
    assert event.kind is ScalingEventKind.SPLIT
    assert "halves its recent traffic" in event.reason


async def test_the_running_autoscaler_splits_a_hot_shard_on_virtual_time() -> None:
    """`Autoscaler.run` sleeps a pass interval on its clock: the shard reported hot for two
    passes is split at the second pass, a virtual second later, not before."""
    clock = VirtualClock(wall_ms=1_800_000_000_000)
    image = _ok(
        nodes_image(1),
        create_stream("s1", mode=StreamMode.ON_DEMAND, shard_count=2, now_ms=clock.wall_ms()),
    )
    clock.advance(ms=5_000)  # past CREATING
    quorum = LocalQuorum(image)
    await quorum.start()
    settings = AutoscalerSettings(policy=POLICY, load_stale_ms=10_000)
    scaler = Autoscaler(quorum=quorum, clock=clock, settings=settings)
    running = asyncio.create_task(scaler.run())
    try:
        async with asyncio.timeout(10):  # real time; the loop's own schedule is virtual
            for _ in range(2):
                stream = quorum.image().streams[StreamName("s1")]
                assert stream.reshard is None
                now_ms = clock.wall_ms()
                await _report(quorum, _hot(0, now_ms=now_ms, split_at_ppm=None), now_ms=now_ms)
                await clock.run_for(settings.pass_interval_ms)
        stream = quorum.image().streams[StreamName("s1")]
        assert stream.reshard is not None
        assert stream.shards[0].state is ShardState.SEALING
    finally:
        running.cancel()


async def test_nothing_happens_on_a_node_that_does_not_lead_the_quorum() -> None:
    scaler, quorum, clock = await _scaler()
    await _report(
        quorum, _hot(0, now_ms=clock.wall_ms(), split_at_ppm=None), now_ms=clock.wall_ms()
    )
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
    await _hot_passes(scaler, quorum, clock, hot_key="whale")
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is None
    (event,) = scaling_events(quorum.image(), stream)
    assert event.kind is ScalingEventKind.HOT_KEY and "'whale'" in event.reason


async def test_a_refused_split_is_logged_with_the_reason() -> None:
    scaler, quorum, clock = await _scaler(account_max=2)  # the account holds 2 shards already
    await _hot_passes(scaler, quorum, clock)
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


async def test_a_new_controller_keeps_the_cooldown_its_predecessor_started() -> None:
    """The cooldown is read back from the replicated scaling log: a controller elected just
    after a split may not split the stream again before the cooldown has passed."""
    _, quorum, clock = await _scaler()
    policy = dataclasses.replace(POLICY, cooldown_ms=60_000)
    settings = AutoscalerSettings(
        policy=policy, load_stale_ms=10_000, shard_count_per_account_max=100
    )
    first = Autoscaler(quorum=quorum, clock=clock, settings=settings)
    assert await _hot_passes(first, quorum, clock) == [0, 1]
    stream = quorum.image().streams[StreamName("s1")]
    assert stream.reshard is not None  # split: shard 0 is sealing
    await _complete_reshard(quorum, stream, now_ms=clock.wall_ms())
    successor = Autoscaler(quorum=quorum, clock=clock, settings=settings)  # a new leader
    # Shard 2 (a child) is hot for 5 s, past hot_for_ms, but the stream is cooling down.
    assert await _hot_passes(successor, quorum, clock, shard=2, passes=5) == [0] * 5
    clock.advance(ms=55_000)
    assert await _hot_passes(successor, quorum, clock, shard=2, passes=1) == [1]
