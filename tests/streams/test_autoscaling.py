"""On-demand auto-scaling on virtual time: sustained load splits at the traffic median, a blip
does not, cold neighbours merge, the floor, ceiling and cooldown hold, a hot key is reported
rather than split, and the controller's history stays bounded.

The scenario tests run a small world: real `ShardLoadTracker`s fed by a seeded producer, routed
by the real `ShardRouter`, with every decision applied through the real resharding functions,
and the controller ticking every few virtual seconds."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.meta.image import (
    ReshardKind,
    ReshardRequest,
    ShardState,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.streams.autoscaling import (
    AutoscalingHistory,
    AutoscalingPolicy,
    Decision,
    HotKey,
    Merge,
    Split,
    decide,
)
from broker.streams.hash_keys import ShardRouter, partition_key_hash
from broker.streams.hot_keys import ShardLoad, ShardLoadTracker
from broker.streams.resharding import complete_reshard, shards_to_seal
from broker.types import ShardIndex, StreamUid
from tests.fast_tier import examples
from tests.streams.support import CREATED_MS, make_stream

KiB = 1024
T0 = CREATED_MS + 60_000
TICK_MS = 5_000
POLICY = AutoscalingPolicy(min_open_shards=1, max_open_shards=16)


def on_demand(shard_count: int, *, uid: int = 7) -> StreamMeta:
    stream = make_stream(shard_count)
    return dataclasses.replace(stream, mode=StreamMode.ON_DEMAND, uid=StreamUid(uid))


def load(
    bytes_per_second: float = 0.0,
    records_per_second: float = 0.0,
    *,
    split_key: int | None = None,
    hot_key: str | None = None,
    hot_key_share: float = 0.0,
) -> ShardLoad:
    return ShardLoad(
        span_ms=60_000,
        bytes_per_second=bytes_per_second,
        records_per_second=records_per_second,
        bytes_bound=True,
        top_keys=(),
        split_key=split_key,
        hot_key=hot_key,
        hot_key_share=hot_key_share,
    )


def apply(stream: StreamMeta, decision: Decision, *, now_ms: int) -> StreamMeta:
    """Run a Split or Merge through BeginReshard and CompleteReshard, as the controller would."""
    if isinstance(decision, Split):
        request = ReshardRequest(
            kind=ReshardKind.SPLIT,
            shard_index=decision.shard_index,
            new_starting_hash_key=decision.new_starting_hash_key,
        )
    else:
        assert isinstance(decision, Merge)
        request = ReshardRequest(
            kind=ReshardKind.MERGE,
            shard_index=decision.shard_index,
            adjacent_shard_index=decision.adjacent_shard_index,
        )
    sealed = shards_to_seal(stream, request)
    outcome = complete_reshard(
        stream,
        dataclasses.replace(request, sealed=sealed),
        end_offsets=dict.fromkeys(sealed, 0),
        now_ms=now_ms,
        next_shard_uid=max(s.uid for s in stream.shards) + 1,
    )
    return dataclasses.replace(
        stream, shards=outcome.shards, next_shard_index=outcome.next_shard_index
    )


class World:
    """One on-demand stream, its shards' trackers, and the controller, on virtual time."""

    def __init__(self, stream: StreamMeta, policy: AutoscalingPolicy, *, now_ms: int) -> None:
        self.stream = stream
        self.policy = policy
        self.history = AutoscalingHistory()
        self.now_ms = now_ms
        self.trackers: dict[int, ShardLoadTracker] = {}
        self.log: list[tuple[int, Decision]] = []
        self._sync_trackers()

    def _sync_trackers(self) -> None:
        live = {s.index: s for s in self.stream.open_shards()}
        self.trackers = {
            index: self.trackers.get(index)
            or ShardLoadTracker(
                hash_key_start=shard.hash_key_start,
                hash_key_end=shard.hash_key_end,
                now_ms=self.now_ms,
            )
            for index, shard in live.items()
        }
        self.router = ShardRouter.for_stream(self.stream)

    def put(self, records: list[tuple[int, str, int]]) -> None:
        by_shard: dict[int, list[tuple[int, str, int]]] = {}
        for record in records:
            by_shard.setdefault(self.router.find(record[0]).index, []).append(record)
        for index, batch in by_shard.items():
            self.trackers[index].record_puts(batch, now_ms=self.now_ms)

    def tick(self) -> tuple[Decision, ...]:
        loads = {index: t.snapshot(self.now_ms) for index, t in self.trackers.items()}
        decisions = decide(self.stream, loads, self.policy, self.history, self.now_ms)
        for decision in decisions:
            self.log.append((self.now_ms, decision))
            if not isinstance(decision, HotKey):
                self.stream = apply(self.stream, decision, now_ms=self.now_ms)
                self._sync_trackers()
        return decisions

    def open_count(self) -> int:
        return len(self.stream.open_shards())


class Producer:
    """Seeded Zipf-like partition keys (heavily skewed) of a fixed record size and rate."""

    def __init__(self, *, seed: int, keys: int, skew: float) -> None:
        self.rng = random.Random(seed)
        self.keys = [f"user-{i}" for i in range(keys)]
        self.hashes = [partition_key_hash(k) for k in self.keys]
        self.cumulative = list(itertools.accumulate(1 / (i + 1) ** skew for i in range(keys)))

    def records(self, count: int, size_bytes: int) -> list[tuple[int, str, int]]:
        chosen = self.rng.choices(range(len(self.keys)), cum_weights=self.cumulative, k=count)
        return [(self.hashes[i], self.keys[i], size_bytes) for i in chosen]


def run(
    world: World,
    producer: Producer | None,
    *,
    duration_ms: int,
    records_per_tick: int,
    size_bytes: int,
) -> None:
    for _ in range(duration_ms // TICK_MS):
        world.now_ms += TICK_MS
        if producer is not None and records_per_tick:
            world.put(producer.records(records_per_tick, size_bytes))
        world.tick()


# --- Scenarios on virtual time ---------------------------------------------------------------


def test_sustained_hot_shard_splits_at_the_traffic_median() -> None:
    """One shard at ~800 KiB/s of skewed keys: nothing for hot_for_ms, then a split at the key
    the tracker says halves the traffic, which does halve it, unlike the midpoint."""
    world = World(on_demand(1), POLICY, now_ms=T0)
    producer = Producer(seed=1, keys=2_000, skew=1.1)
    per_tick = 800 * KiB * TICK_MS // 1000 // (20 * KiB)  # 20 KiB records
    sent: list[tuple[int, str, int]] = []
    split: Split | None = None
    while split is None:
        assert world.now_ms - T0 <= POLICY.hot_for_ms + 120_000
        world.now_ms += TICK_MS
        batch = producer.records(per_tick, 20 * KiB)
        sent.extend(batch)
        world.put(batch)
        expected_key = world.trackers[0].snapshot(world.now_ms).split_key
        for decision in world.tick():
            assert isinstance(decision, Split)
            split = decision
    # Hot from the first tick (the young tracker averages over its short life).
    assert world.now_ms - T0 >= POLICY.hot_for_ms
    assert world.now_ms - T0 <= POLICY.hot_for_ms + 2 * TICK_MS
    assert split.new_starting_hash_key == expected_key
    assert "halves its recent traffic" in split.reason
    assert "shardId-000000000000" in split.reason
    recent = sent[-(60_000 // TICK_MS) * per_tick :]
    below = sum(1 for h, _, _ in recent if h < split.new_starting_hash_key) / len(recent)
    midpoint = 2**127
    below_midpoint = sum(1 for h, _, _ in recent if h < midpoint) / len(recent)
    assert abs(below - 0.5) < 0.05
    assert abs(below - 0.5) <= abs(below_midpoint - 0.5)
    assert world.open_count() == 2


def test_a_blip_does_not_split() -> None:
    """Ten seconds at 4 MiB/s lifts the one-minute average above the threshold for about a
    minute, less than hot_for_ms: no split, then or later."""
    world = World(on_demand(1), POLICY, now_ms=T0)
    producer = Producer(seed=2, keys=500, skew=0.5)
    run(world, producer, duration_ms=120_000, records_per_tick=10, size_bytes=10 * KiB)
    run(world, producer, duration_ms=10_000, records_per_tick=2_000, size_bytes=10 * KiB)
    assert world.history.hot_since_ms(world.stream.uid, 0) is not None  # it did look hot
    run(world, producer, duration_ms=600_000, records_per_tick=10, size_bytes=10 * KiB)
    assert world.log == []
    assert world.history.hot_since_ms(world.stream.uid, 0) is None


def test_cold_adjacent_shards_merge_down_to_the_floor_one_cooldown_apart() -> None:
    policy = dataclasses.replace(POLICY, min_open_shards=2, cold_for_ms=300_000)
    world = World(on_demand(6), policy, now_ms=T0)
    producer = Producer(seed=3, keys=500, skew=0.5)
    run(world, producer, duration_ms=3_600_000, records_per_tick=20, size_bytes=1 * KiB)
    merges = [(t, d) for t, d in world.log if isinstance(d, Merge)]
    assert len(merges) == 4
    assert world.open_count() == 2
    assert all(isinstance(d, Merge) for _, d in world.log)
    assert merges[0][0] - T0 >= policy.cold_for_ms
    for (earlier, _), (later, _) in itertools.pairwise(merges):
        assert later - earlier >= policy.cooldown_ms
    assert "merging them" in merges[0][1].reason
    assert "below 25% of one shard's capacity" in merges[0][1].reason


def test_sustained_load_grows_the_stream_until_shards_cool_then_shrinks_it_back() -> None:
    """3 MiB/s of skewed keys on a 1-shard stream: splits until every shard is under the split
    threshold (never past the ceiling), then the load stops and it merges back to the floor."""
    policy = dataclasses.replace(POLICY, max_open_shards=12, cold_for_ms=300_000)
    world = World(on_demand(1), policy, now_ms=T0)
    producer = Producer(seed=4, keys=5_000, skew=0.8)
    per_tick = 3 * 1024 * KiB * TICK_MS // 1000 // (50 * KiB)
    for _ in range(3_600_000 // TICK_MS):
        world.now_ms += TICK_MS
        world.put(producer.records(per_tick, 50 * KiB))
        world.tick()
        assert world.open_count() <= policy.max_open_shards
    splits = [d for _, d in world.log if isinstance(d, Split)]
    assert len(splits) >= 6  # 3 MiB/s needs at least 6 shards under 500 KiB/s
    assert not any(isinstance(d, Merge) for _, d in world.log)
    for tracker in world.trackers.values():
        assert tracker.snapshot(world.now_ms).bytes_per_second <= policy.split_bytes_per_second
    grown = world.open_count()
    run(world, None, duration_ms=7_200_000, records_per_tick=0, size_bytes=0)
    assert world.open_count() == policy.min_open_shards
    merges = [d for _, d in world.log if isinstance(d, Merge)]
    assert len(merges) == grown - policy.min_open_shards
    times = [t for t, d in world.log if not isinstance(d, HotKey)]
    assert all(b - a >= policy.cooldown_ms for a, b in itertools.pairwise(times))


def test_a_single_hot_key_is_reported_once_and_not_split() -> None:
    world = World(on_demand(1), POLICY, now_ms=T0)
    hot = "tenant-42"
    # 1,000 KiB/s, 95% of it one key.
    records = [(partition_key_hash(hot), hot, 10 * KiB)] * 475
    records += [(partition_key_hash(f"x{i}"), f"x{i}", 10 * KiB) for i in range(25)]
    for _ in range(900_000 // TICK_MS):
        world.now_ms += TICK_MS
        world.put(records)
        world.tick()
    assert world.open_count() == 1
    assert len(world.log) == 1
    _, notice = world.log[0]
    assert isinstance(notice, HotKey)
    assert notice.partition_key == hot
    assert notice.shard_index == 0
    assert "'tenant-42'" in notice.reason
    assert "no split can divide one key" in notice.reason


# --- Rules, with loads given directly --------------------------------------------------------


def _drive(
    stream: StreamMeta,
    loads: dict[int, ShardLoad],
    *,
    policy: AutoscalingPolicy = POLICY,
    history: AutoscalingHistory | None = None,
    start_ms: int = T0,
    duration_ms: int,
) -> list[tuple[int, Decision]]:
    if history is None:
        history = AutoscalingHistory()
    out: list[tuple[int, Decision]] = []
    for now_ms in range(start_ms, start_ms + duration_ms + 1, TICK_MS):
        out.extend((now_ms, d) for d in decide(stream, loads, policy, history, now_ms))
    return out


HOT = load(900 * KiB, 100)
COLD = load(10 * KiB, 10)


def test_split_waits_for_hot_for_ms_and_prefers_the_reported_key() -> None:
    stream = on_demand(2)
    start, end = stream.shards[1].hash_key_start, stream.shards[1].hash_key_end
    key = start + (end - start) // 10
    hot = dataclasses.replace(HOT, split_key=key)
    log = _drive(stream, {0: COLD, 1: hot}, duration_ms=POLICY.hot_for_ms)
    assert [
        (t - T0, d.shard_index, d.new_starting_hash_key) for t, d in log if isinstance(d, Split)
    ] == [(POLICY.hot_for_ms, 1, key)]


def test_split_falls_back_to_the_midpoint_without_a_usable_key() -> None:
    stream = on_demand(2)
    shard = stream.shards[0]
    for split_key in (None, shard.hash_key_start + 1, shard.hash_key_end, shard.hash_key_end + 7):
        hot = dataclasses.replace(HOT, split_key=split_key)
        log = _drive(stream, {0: hot, 1: COLD}, duration_ms=POLICY.hot_for_ms)
        ((_, decision),) = log
        assert isinstance(decision, Split)
        assert (
            decision.new_starting_hash_key == (shard.hash_key_start + shard.hash_key_end + 1) // 2
        )
        assert "midpoint" in decision.reason


def test_records_rate_alone_makes_a_shard_hot() -> None:
    stream = on_demand(1)
    log = _drive(stream, {0: load(10 * KiB, 900)}, duration_ms=POLICY.hot_for_ms)
    assert len(log) == 1
    assert isinstance(log[0][1], Split)


def test_the_hottest_of_several_splits_first_and_the_next_after_the_cooldown() -> None:
    stream = on_demand(3)
    loads = {0: HOT, 1: load(2_000 * KiB, 100), 2: HOT}
    history = AutoscalingHistory()
    log = _drive(stream, loads, history=history, duration_ms=POLICY.hot_for_ms)
    assert [(d.shard_index) for _, d in log] == [1]
    stream = apply(stream, log[0][1], now_ms=log[0][0])
    loads = {0: HOT, 2: HOT, 3: COLD, 4: COLD}
    start_ms = log[0][0] + TICK_MS
    later = _drive(stream, loads, history=history, start_ms=start_ms, duration_ms=60_000)
    # Nothing applies these (the loads are fixed): shard 0 right after the cooldown since the
    # split of shard 1, then shard 2 a cooldown later (a shard's hot spell ends with its split).
    assert [d.shard_index for _, d in later] == [0, 2]
    assert later[0][0] - log[0][0] >= POLICY.cooldown_ms
    assert later[0][0] - log[0][0] < POLICY.cooldown_ms + TICK_MS
    assert later[1][0] - later[0][0] >= POLICY.cooldown_ms


def test_ceiling_stops_splits_and_floor_stops_merges() -> None:
    policy = dataclasses.replace(POLICY, min_open_shards=2, max_open_shards=2)
    assert _drive(on_demand(2), {0: HOT, 1: HOT}, policy=policy, duration_ms=3_600_000) == []
    assert _drive(on_demand(2), {0: COLD, 1: COLD}, policy=policy, duration_ms=3_600_000) == []
    policy = dataclasses.replace(policy, max_open_shards=3)
    log = _drive(on_demand(2), {0: HOT, 1: HOT}, policy=policy, duration_ms=POLICY.hot_for_ms)
    assert [type(d) for _, d in log] == [Split]


def test_merge_needs_both_neighbours_cold_in_bytes_and_records_for_cold_for_ms() -> None:
    stream = on_demand(3)
    warm = load(200 * KiB, 10)  # cold alone, but not together with a neighbour's 100 KiB/s
    chatty = load(1 * KiB, 300)
    assert _drive(stream, {0: warm, 1: load(100 * KiB, 10), 2: chatty}, duration_ms=3_600_000) == []
    log = _drive(stream, {0: warm, 1: COLD, 2: COLD}, duration_ms=POLICY.cold_for_ms)
    assert [(t - T0, d) for t, d in log] == [
        (
            POLICY.cold_for_ms,
            Merge(
                shard_index=ShardIndex(1),
                adjacent_shard_index=ShardIndex(2),
                reason=log[0][1].reason,
            ),
        )
    ]


def test_unknown_load_resets_the_timers() -> None:
    stream = on_demand(2)
    history = AutoscalingHistory()
    _drive(stream, {0: HOT, 1: COLD}, history=history, duration_ms=POLICY.hot_for_ms - TICK_MS)
    assert decide(stream, {1: COLD}, POLICY, history, T0 + POLICY.hot_for_ms) == ()
    assert history.hot_since_ms(stream.uid, 0) is None


@pytest.mark.parametrize("case", ["provisioned", "reshard", "creating", "deleting"])
def test_streams_that_are_not_active_on_demand_and_idle_are_not_touched(case: str) -> None:
    stream = on_demand(2)
    if case == "provisioned":
        stream = dataclasses.replace(stream, mode=StreamMode.PROVISIONED)
    elif case == "reshard":
        request = ReshardRequest(
            kind=ReshardKind.MERGE, shard_index=ShardIndex(0), adjacent_shard_index=ShardIndex(1)
        )
        stream = dataclasses.replace(stream, reshard=request)
    else:
        status = {"creating": "CREATING", "deleting": "DELETING"}[case]
        stream = dataclasses.replace(
            stream,
            transient_status=StreamStatus[status],
            status_until_ms=T0 + 10 * 3_600_000,
        )
    assert _drive(stream, {0: HOT, 1: HOT}, duration_ms=3_600_000) == []


# --- Properties ------------------------------------------------------------------------------

rates = st.sampled_from([0.0, 5 * KiB, 100 * KiB, 400 * KiB, 700 * KiB, 3_000 * KiB])


@settings(max_examples=examples(150), deadline=None)
@given(
    initial=st.integers(1, 6),
    floor=st.integers(1, 4),
    ceiling_extra=st.integers(0, 4),
    steps=st.lists(
        st.tuples(st.integers(1, 60_000), st.lists(rates, min_size=12, max_size=12)),
        max_size=60,
    ),
)
def test_decisions_always_respect_the_rules(
    initial: int, floor: int, ceiling_extra: int, steps: list[tuple[int, list[float]]]
) -> None:
    """Random loads on random schedules: at most one split or merge per call and per
    cooldown; never past the floor or ceiling from within them; splits only of shards hot on
    every observation for hot_for_ms, at valid keys; merges only of adjacent open shards cold
    together on every observation for cold_for_ms; timers only for open shards."""
    ceiling = max(floor, initial) + ceiling_extra
    policy = AutoscalingPolicy(
        min_open_shards=floor,
        max_open_shards=ceiling,
        hot_for_ms=30_000,
        cold_for_ms=60_000,
        cooldown_ms=20_000,
    )
    stream = on_demand(initial)
    history = AutoscalingHistory()
    hot_since: dict[int, int] = {}
    cold_since: dict[tuple[int, int], int] = {}
    last_action_ms: int | None = None
    now_ms = T0
    for gap_ms, rate_table in steps:
        now_ms += gap_ms
        shards = sorted(stream.open_shards(), key=lambda s: s.hash_key_start)
        loads = {s.index: load(rate_table[s.index % 12], 10) for s in shards}
        for s in shards:
            if loads[s.index].bytes_per_second > policy.split_bytes_per_second:
                hot_since.setdefault(s.index, now_ms)
            else:
                hot_since.pop(s.index, None)
        for low, high in itertools.pairwise(shards):
            both = loads[low.index].bytes_per_second + loads[high.index].bytes_per_second
            if both < policy.merge_fraction * policy.shard_bytes_per_second:
                cold_since.setdefault((low.index, high.index), now_ms)
            else:
                cold_since.pop((low.index, high.index), None)
        decisions = decide(stream, loads, policy, history, now_ms)
        actions = [d for d in decisions if not isinstance(d, HotKey)]
        assert len(actions) <= 1
        if not actions:
            continue
        (action,) = actions
        if last_action_ms is not None:
            assert now_ms - last_action_ms >= policy.cooldown_ms
        last_action_ms = now_ms
        before = len(shards)
        if isinstance(action, Split):
            assert now_ms - hot_since[action.shard_index] >= policy.hot_for_ms
            shard = stream.shards[action.shard_index]
            assert shard.hash_key_start + 1 < action.new_starting_hash_key < shard.hash_key_end
            assert before + 1 <= ceiling
        else:
            assert isinstance(action, Merge)
            pair = (action.shard_index, action.adjacent_shard_index)
            assert now_ms - cold_since[pair] >= policy.cold_for_ms
            assert before - 1 >= floor
        stream = apply(stream, action, now_ms=now_ms)
        open_indices = {s.index for s in stream.open_shards()}
        hot_since = {i: t for i, t in hot_since.items() if i in open_indices}
        cold_since = {p: t for p, t in cold_since.items() if set(p) <= open_indices}
        assert history.entries() <= 2 * len(open_indices)
    assert all(s.state is not ShardState.SEALING for s in stream.shards)


def test_history_is_bounded_by_streams_and_open_shards() -> None:
    history = AutoscalingHistory(max_streams=50)
    for uid in range(1_000):
        stream = on_demand(4, uid=uid)
        decide(stream, dict.fromkeys(range(4), HOT), POLICY, history, T0 + uid)
        assert len(history) <= 50
    assert history.entries() <= 50 * 4
    assert history.hot_since_ms(StreamUid(999), 0) == T0 + 999
    assert history.hot_since_ms(StreamUid(0), 0) is None  # least recently observed: forgotten
    history.retain([StreamUid(999)])
    assert len(history) == 1
    history.forget(StreamUid(999))
    assert len(history) == 0


def test_policy_refuses_knobs_that_would_flap() -> None:
    with pytest.raises(AssertionError):
        AutoscalingPolicy(merge_fraction=0.6)  # a merged pair would be hot at once
    with pytest.raises(AssertionError):
        AutoscalingPolicy(min_open_shards=5, max_open_shards=4)
