"""The leader-side recorder (service/shard_load.py): what a node reports, and when it says
nothing. Pure over a hand-built image and a manual clock."""

from __future__ import annotations

import asyncio
import hashlib

from broker.clock import VirtualClock
from broker.log.records import NewRecord, NewRecords
from broker.meta import capacity
from broker.meta.capacity_table import (
    REPORT_FLOOR_PPM,
    REPORT_KEY_SHARE_MIN_PPM,
    REPORT_KEYS_MAX,
)
from broker.meta.commands import Command, ReportShardLoads, SetShardLeader
from broker.meta.image import MetadataImage
from broker.meta.state_machine import apply
from broker.service.shard_load import ShardLoadRecorder, run_reporter
from broker.streams.hot_keys import LoadTrackerConfig
from broker.types import NodeId, ShardIndex, ShardUid, StreamName, StreamUid
from tests.meta.factories import create_stream, nodes_image

N1 = NodeId("n1")
CONFIG = LoadTrackerConfig(window_ms=1_000, window_count=3)


def _ok(image: MetadataImage, command: Command) -> MetadataImage:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    return applied.image


class World:
    def __init__(
        self, *, refresh_ms: int = 15_000, change_fraction: float = 0.1, floor_ppm: int = 0
    ) -> None:
        self.image = _ok(nodes_image(1), create_stream("s1", shard_count=2))
        self.clock = VirtualClock(wall_ms=1_800_000_000_000, monotonic_ms=0)
        self.recorder = ShardLoadRecorder(
            node_id=N1,
            clock=self.clock,
            image=lambda: self.image,
            config=CONFIG,
            refresh_ms=refresh_ms,
            change_fraction=change_fraction,
            floor_ppm=floor_ppm,  # 0: these tests write a few records; the floor has its own
        )

    def shard_uid(self, index: int) -> ShardUid:
        return self.image.streams[StreamName("s1")].shards[index].uid

    def put(self, index: int, keys: list[str], *, hash_keys: list[int] | None = None) -> None:
        records = NewRecords.of([NewRecord(key, b"x" * 10) for key in keys], hash_keys)
        self.recorder.written(self.shard_uid(index), records)

    def report(self) -> ReportShardLoads | None:
        command = self.recorder.report()
        if command is not None:
            self.image = _ok(self.image, command)
            self.recorder.reported(command)
        return command


def _md5(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def _keys_for_shard(world: World, index: int, count: int) -> list[str]:
    shard = world.image.streams[StreamName("s1")].shards[index]
    keys = (f"k{i}" for i in range(100 * count))
    return [k for k in keys if shard.hash_key_start <= _md5(k) <= shard.hash_key_end][:count]


async def test_the_running_reporter_proposes_once_per_interval_on_virtual_time() -> None:
    """`run_reporter` sleeps its interval on the clock: a write is proposed at the end of the
    interval it fell in, and a quiet interval proposes nothing."""
    world = World()
    proposed: list[tuple[int, Command]] = []

    async def propose(command: Command) -> None:
        proposed.append((world.clock.monotonic_ms(), command))
        world.image = _ok(world.image, command)
        world.recorder.reported(command)  # type: ignore[arg-type]

    running = asyncio.create_task(
        run_reporter(world.recorder, propose, interval_ms=1_000, clock=world.clock)
    )
    try:
        async with asyncio.timeout(10):  # real time; the loop's own schedule is virtual
            await world.clock.run_for(1_500)
            assert proposed == []  # nothing written: nothing to say
            world.put(0, _keys_for_shard(world, 0, 20))
            await world.clock.run_for(499)
            assert proposed == []  # the interval has not ended
            await world.clock.run_for(1)
            assert [at for at, _ in proposed] == [2_000]
            await world.clock.run_for(5_000)  # the rate decays: later reports say so
            assert all(at % 1_000 == 0 for at, _ in proposed)  # only at an interval's end
    finally:
        running.cancel()


def test_nothing_to_report_without_traffic() -> None:
    world = World()
    assert world.report() is None
    assert world.recorder.tracked_shards() == 0


def test_a_busy_shard_is_reported_with_its_hot_key_first_then_when_its_rate_moves() -> None:
    world = World()
    keys = _keys_for_shard(world, 1, 30)
    world.put(1, [keys[0]] * 40 + keys)  # hash keys recomputed: a forwarded put
    world.clock.advance(ms=500)
    command = world.report()
    assert command is not None and command.node_id == N1
    (entry,) = command.loads
    assert (entry.stream_uid, entry.shard_index, entry.epoch) == (StreamUid(1), ShardIndex(1), 1)
    assert entry.records == 70
    assert entry.top_keys[0].partition_key == keys[0]
    # Only heavy keys travel: 41 of 70 records; each other key carries 1/70 (1.4 %), under
    # REPORT_KEY_SHARE_MIN_PPM.
    assert [k.partition_key for k in entry.top_keys] == [keys[0]]
    assert entry.split_at_ppm is not None
    assert len(world.image.capacity.loads) == 1
    world.clock.advance(ms=500)
    assert world.report() is None  # the same 70 records/s: nothing new to say
    world.put(1, keys)
    again = world.report()
    assert again is not None and again.loads[0].records == 100  # +43 %: reported


def test_a_steady_shard_is_confirmed_by_an_empty_report_before_its_entry_goes_stale() -> None:
    world = World(refresh_ms=2_000, change_fraction=1e9)  # rates never "move" here
    world.put(0, _keys_for_shard(world, 0, 5))
    first = world.report()
    assert first is not None and len(first.loads) == 1
    (entry,) = world.image.capacity.loads
    world.clock.advance(ms=1_999)
    assert world.report() is None
    world.clock.advance(ms=1)
    confirmed = world.report()
    assert confirmed is not None and confirmed.loads == ()  # delta reporting: no entry again
    assert world.image.capacity.loads == (entry,)
    assert world.image.capacity.confirmed_ms(entry) == world.clock.wall_ms()
    assert capacity.is_fresh(
        world.image, entry, now_ms=world.clock.wall_ms() + 30_000, stale_ms=30_000
    )
    assert world.report() is None


def test_an_entry_the_image_lacks_is_sent_again_whatever_the_rates() -> None:
    world = World(change_fraction=1e9)
    world.put(0, _keys_for_shard(world, 0, 5))
    command = world.recorder.report()
    assert command is not None
    world.recorder.reported(command)  # "committed", but the entry never reached this image
    again = world.report()
    assert again is not None and [e.shard_index for e in again.loads] == [0]
    assert world.report() is None


def test_a_shard_that_turns_idle_is_reported_once_then_never() -> None:
    world = World()
    world.put(0, _keys_for_shard(world, 0, 5))
    assert world.report() is not None
    world.clock.advance(ms=3_500)  # past the 3 x 1 s window
    idle = world.report()
    assert idle is not None
    assert [(e.shard_index, e.records) for e in idle.loads] == [(0, 0)]
    assert world.image.capacity.loads == ()
    assert world.recorder.tracked_shards() == 0
    assert world.report() is None


def test_an_unacknowledged_idle_report_is_sent_again() -> None:
    world = World()
    world.put(0, _keys_for_shard(world, 0, 5))
    world.report()
    world.clock.advance(ms=3_500)
    lost = world.recorder.report()  # never proposed (no quorum leader, say)
    assert lost is not None and lost.loads[0].records == 0
    assert world.report() is not None
    assert world.report() is None


def test_a_restarted_node_clears_the_entries_its_previous_incarnation_left() -> None:
    world = World()
    world.put(0, _keys_for_shard(world, 0, 5))
    world.report()
    restarted = ShardLoadRecorder(node_id=N1, clock=world.clock, image=lambda: world.image)
    world.recorder = restarted  # no traffic since the restart
    cleared = world.report()
    assert cleared is not None and [e.records for e in cleared.loads] == [0]
    assert world.image.capacity.loads == ()
    assert world.report() is None


def test_a_shard_no_longer_led_here_is_dropped() -> None:
    world = World()
    world.image = _ok(world.image, create_stream("s2", shard_count=1))
    world.put(0, _keys_for_shard(world, 0, 5))
    world.report()
    shard = world.image.streams[StreamName("s1")].shards[0]
    world.image = _ok(
        world.image,
        SetShardLeader(
            now_ms=1,
            stream_uid=StreamUid(1),
            shard_index=ShardIndex(0),
            leader=None,
            epoch=2,
            expected_epoch=shard.epoch,
            replicas=shard.replicas,
        ),
    )
    assert world.report() is None  # nothing to say about a shard it does not lead
    assert world.recorder.tracked_shards() == 0


def test_explicit_hash_keys_are_used_and_recomputed_ones_clamped_into_the_range() -> None:
    world = World()
    shard = world.image.streams[StreamName("s1")].shards[1]
    world.put(1, [f"a{i}" for i in range(10)], hash_keys=[shard.hash_key_end] * 10)
    world.clock.advance(ms=100)
    command = world.report()
    assert command is not None
    split = command.loads[0].split_key(
        hash_key_start=shard.hash_key_start, hash_key_end=shard.hash_key_end
    )
    assert split is not None and split > (shard.hash_key_start + shard.hash_key_end) // 2
    # A forwarded record that had an ExplicitHashKey: its key's MD5 may lie in another shard.
    other = _keys_for_shard(world, 0, 5)
    world.put(1, other)  # clamped into shard 1's range (the tracker asserts it)
    counted = world.report()
    assert counted is not None and counted.loads[0].records == 15


def test_every_key_above_the_heavy_share_is_reported_up_to_the_cap() -> None:
    world = World()
    keys = _keys_for_shard(world, 0, 40)
    heavy = keys[:12]  # 12 keys of 8 records each: 8/106 = 7.5 % each
    world.put(0, [k for k in heavy for _ in range(8)] + keys[12:22])
    command = world.report()
    assert command is not None
    (entry,) = command.loads
    assert len(entry.top_keys) == REPORT_KEYS_MAX
    assert {k.partition_key for k in entry.top_keys} <= set(heavy)
    for key in entry.top_keys:
        assert (key.records - key.records_error) * 1_000_000 >= (
            REPORT_KEY_SHARE_MIN_PPM * entry.records
        )


def test_a_trickle_below_the_floor_costs_no_entry_and_clears_an_old_one() -> None:
    world = World(floor_ppm=REPORT_FLOOR_PPM)  # 1 %: 10 records/s
    keys = _keys_for_shard(world, 0, 200)
    world.put(0, keys[:50])  # 50 records/s: 5 % of a shard
    assert world.report() is not None
    entries = world.image.capacity.loads
    assert len(entries) == 1
    world.clock.advance(ms=3_000)  # the window empties
    world.put(0, keys[50:57])  # 7 records over the 2 s span: 0.35 % < half the 1 % floor
    command = world.report()
    assert command is not None and [e.records for e in command.loads] == [0]  # idle: cleared
    assert world.image.capacity.loads == ()
    world.put(0, keys[57:60])
    assert world.report() is None  # still a trickle, and nothing left to clear
