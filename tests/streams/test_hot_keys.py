"""Load tracking: heavy-hitter bounds against exact counts, sliding windows, rates, the traffic
split key, hot keys, and bounded memory under millions of distinct keys."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import limits
from broker.streams.hash_keys import partition_key_hash, uniform_ranges
from broker.streams.hot_keys import (
    RATE_SPAN_MS_MIN,
    FrequentKeys,
    LoadTrackerConfig,
    ShardLoadTracker,
)
from tests.fast_tier import examples

FULL = (0, limits.hash_key_max)

# Keys drawn from a small alphabet with a skew, so some keys are heavy and many are light.
skewed_keys = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 40).map(lambda i: f"k{i}"),
)


# --- FrequentKeys ----------------------------------------------------------------------------


@given(
    capacity=st.integers(1, 8),
    stream=st.lists(st.tuples(skewed_keys, st.integers(0, 1_000)), max_size=400),
)
def test_frequent_keys_bounds_hold_against_exact_counts(
    capacity: int, stream: list[tuple[str, int]]
) -> None:
    """Every key's true weight lies in [upper - error, upper]; the error is at most
    N / (k + 1); every key heavier than that is monitored; the table never exceeds 2k."""
    summary = FrequentKeys(capacity)
    exact: Counter[str] = Counter()
    for key, weight in stream:
        summary.add(key, weight)
        exact[key] += weight
        assert len(summary.counts) <= 2 * capacity
    total = sum(exact.values())
    assert summary.total == total
    assert summary.decrement * (capacity + 1) <= total
    for key in {*exact, "never-seen"}:
        upper, error = summary.bounds(key)
        assert upper - error <= exact[key] <= upper
        assert error * (capacity + 1) <= total
        if exact[key] * (capacity + 1) > total:
            assert key in summary.counts
    summary.compact()
    assert len(summary.counts) <= capacity
    for key in exact:
        upper, error = summary.bounds(key)
        assert upper - error <= exact[key] <= upper


# --- The tracker against a reference model ---------------------------------------------------

WINDOW_MS = 1_000
WINDOWS = 3


def _small_config(**overrides: int) -> LoadTrackerConfig:
    values: dict[str, int] = {
        "window_ms": WINDOW_MS,
        "window_count": WINDOWS,
        "key_capacity": 4,
        "reported_keys": 3,
        "histogram_buckets": 8,
    }
    values.update(overrides)
    return LoadTrackerConfig(**values)


puts_strategy = st.lists(
    st.tuples(
        st.integers(0, 700),  # ms since the previous batch
        st.lists(st.tuples(skewed_keys, st.integers(1, 5_000)), min_size=1, max_size=20),
    ),
    max_size=40,
)


@settings(max_examples=examples(200))
@given(batches=puts_strategy)
def test_tracker_bounds_hold_over_the_live_windows(
    batches: list[tuple[int, list[tuple[str, int]]]],
) -> None:
    """Against exact counts of the records in the live windows: totals are exact, every key's
    records and bytes lie within its bounds, the error is at most N / (k + 1), every key
    heavier than that is a candidate, and the reported top keys hold every key heavier than
    N (k + r) / (k (r + 1)) in the binding dimension."""
    config = _small_config()
    tracker = ShardLoadTracker(
        hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0, config=config
    )
    log: list[tuple[int, str, int]] = []
    now_ms = 0
    for gap_ms, puts in batches:
        now_ms += gap_ms
        tracker.record_puts(((partition_key_hash(k), k, n) for k, n in puts), now_ms=now_ms)
        log.extend((now_ms, k, n) for k, n in puts)

    first_live_window = now_ms // WINDOW_MS - WINDOWS + 1
    live = [(k, n) for t, k, n in log if t // WINDOW_MS >= first_live_window]
    records = Counter(k for k, _ in live)
    size_bytes: Counter[str] = Counter()
    for k, n in live:
        size_bytes[k] += n
    total_records, total_bytes = len(live), sum(size_bytes.values())
    assert tracker.totals(now_ms) == (total_records, total_bytes)

    capacity = config.key_capacity
    estimates = {e.partition_key: e for e in tracker.key_estimates(now_ms)}
    for key in records:
        if key not in estimates:
            assert records[key] * (capacity + 1) <= total_records
            assert size_bytes[key] * (capacity + 1) <= total_bytes
            continue
        e = estimates[key]
        assert e.records - e.records_error <= records[key] <= e.records
        assert e.size_bytes - e.size_bytes_error <= size_bytes[key] <= e.size_bytes
        assert e.records_error * (capacity + 1) <= total_records
        assert e.size_bytes_error * (capacity + 1) <= total_bytes

    load = tracker.snapshot(now_ms)
    r = config.reported_keys
    reported = {t.partition_key for t in load.top_keys}
    binding = size_bytes if load.bytes_bound else records
    binding_total = total_bytes if load.bytes_bound else total_records
    for key, count in binding.items():
        if count * capacity * (r + 1) > binding_total * (capacity + r):
            assert key in reported
    for t in load.top_keys:
        assert t.records - t.records_error <= records[t.partition_key] <= t.records


# --- Windows and rates -----------------------------------------------------------------------


def test_rates_average_over_the_recent_window() -> None:
    """100 records/s of 1,000 bytes for two minutes read as 100 records/s and 100,000 B/s."""
    tracker = ShardLoadTracker(hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0)
    for now_ms in range(0, 120_000, 100):
        key = f"k{now_ms % 7}"
        tracker.record_puts([(partition_key_hash(key), key, 1_000)] * 10, now_ms=now_ms)
    load = tracker.snapshot(119_900)  # windows [60 s, 70 s) .. [110 s, 120 s)
    assert load.span_ms == 59_900
    assert load.records_per_second == pytest.approx(100, rel=0.01)
    assert load.bytes_per_second == pytest.approx(100_000, rel=0.01)


def test_a_young_tracker_averages_since_it_started_but_over_at_least_a_second() -> None:
    tracker = ShardLoadTracker(hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=5_500)
    tracker.record_put(partition_key_hash("x"), "x", 500, 5_500)
    first = tracker.snapshot(5_500)
    assert first.span_ms == RATE_SPAN_MS_MIN
    assert first.bytes_per_second == 500
    later = tracker.snapshot(9_500)
    assert later.span_ms == 4_000
    assert later.bytes_per_second == 125


def test_old_traffic_leaves_the_window_entirely() -> None:
    """A key that stopped is forgotten once its windows pass, rather than decaying forever."""
    config = _small_config()
    tracker = ShardLoadTracker(
        hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0, config=config
    )
    tracker.record_puts([(partition_key_hash("gone"), "gone", 100)] * 50, now_ms=10)
    assert tracker.snapshot(WINDOW_MS * WINDOWS - 1).top_keys[0].partition_key == "gone"
    quiet = tracker.snapshot(WINDOW_MS * WINDOWS)
    assert quiet.top_keys == ()
    assert quiet.records_per_second == 0
    assert quiet.split_key is None
    assert quiet.hot_key is None
    tracker.record_put(partition_key_hash("new"), "new", 1, WINDOW_MS * 10)
    assert [t.partition_key for t in tracker.snapshot(WINDOW_MS * 10).top_keys] == ["new"]


def test_binding_dimension_follows_the_fuller_capacity() -> None:
    """Many tiny records bind on records, few large ones on bytes (1 MiB/s vs 1,000/s)."""
    tiny = ShardLoadTracker(hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0)
    tiny.record_puts([(partition_key_hash(f"t{i}"), f"t{i}", 10) for i in range(100)], now_ms=0)
    assert not tiny.snapshot(0).bytes_bound
    large = ShardLoadTracker(hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0)
    large.record_puts([(partition_key_hash("b"), "b", 100_000)] * 3, now_ms=0)
    assert large.snapshot(0).bytes_bound


# --- The traffic split key -------------------------------------------------------------------


@settings(max_examples=examples(200))
@given(
    shard=st.sampled_from([FULL, *uniform_ranges(3), (1000, 1063), (7, 12), (7, 9)]),
    weights=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 100)), min_size=1, max_size=60),
)
def test_split_key_halves_the_traffic_up_to_one_bucket(
    shard: tuple[int, int], weights: list[tuple[float, int]]
) -> None:
    """Whatever the distribution over the range, the traffic below the split key is half the
    total give or take the traffic of one histogram bucket (plus the two hash keys at each end,
    where the key is clamped), and the key is a valid NewStartingHashKey: start + 1 < key < end.
    """
    start, end = shard
    config = _small_config(key_capacity=64, reported_keys=3)  # 8 buckets
    tracker = ShardLoadTracker(hash_key_start=start, hash_key_end=end, now_ms=0, config=config)
    traffic = [(min(end, start + int(p * (end - start))), count) for p, count in weights]
    for index, (hash_key, count) in enumerate(traffic):
        tracker.record_puts([(hash_key, f"k{index}", 1)] * count, now_ms=0)
    load = tracker.snapshot(0)
    assert not load.bytes_bound  # one-byte records: records bind
    if load.hot_key is not None or end - start < 3:
        assert load.split_key is None
        return
    key = load.split_key
    assert key is not None
    assert start + 1 < key < end
    bucket_width = 1 << max(0, (end - start).bit_length() - 3)
    per_bucket: Counter[int] = Counter()
    for hash_key, count in traffic:
        per_bucket[(hash_key - start) // bucket_width] += count
    edges = sum(c for h, c in traffic if h <= start + 1 or h >= end - 1)
    total = sum(count for _, count in traffic)
    below = sum(count for hash_key, count in traffic if hash_key < key)
    assert abs(2 * below - total) <= 2 * (max(per_bucket.values()) + edges)


def test_split_key_halves_a_skewed_key_distribution() -> None:
    """Zipf-like partition keys (MD5-hashed, as producers send them) over a half-range shard:
    the split key leaves within 3% of half the traffic on each side, where AWS's midpoint
    can leave most of it on one side."""
    rng = random.Random(7)
    start, end = uniform_ranges(2)[0]
    tracker = ShardLoadTracker(hash_key_start=start, hash_key_end=end, now_ms=0)
    weights: Counter[int] = Counter()
    keys: list[tuple[int, str, int]] = []
    for _ in range(50_000):
        key = f"user-{min(int(rng.paretovariate(0.9)), 5_000)}"
        hash_key = start + partition_key_hash(key) % (end - start + 1)
        keys.append((hash_key, key, 200))
        weights[hash_key] += 200
    for offset in range(0, len(keys), 500):
        tracker.record_puts(keys[offset : offset + 500], now_ms=offset // 10)
    load = tracker.snapshot(5_000)
    assert load.hot_key is None
    assert load.split_key is not None
    total = sum(weights.values())
    below = sum(w for h, w in weights.items() if h < load.split_key)
    midpoint = (start + end + 1) // 2
    below_midpoint = sum(w for h, w in weights.items() if h < midpoint)
    assert abs(below / total - 0.5) < 0.03
    assert abs(below / total - 0.5) < abs(below_midpoint / total - 0.5)


# --- Hot keys --------------------------------------------------------------------------------


def test_one_key_carrying_the_load_is_a_hot_key_and_no_split() -> None:
    tracker = ShardLoadTracker(hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0)
    puts = [(partition_key_hash("hot"), "hot", 1_000)] * 950
    puts += [(partition_key_hash(f"c{i}"), f"c{i}", 1_000) for i in range(50)]
    random.Random(1).shuffle(puts)
    tracker.record_puts(puts, now_ms=0)
    load = tracker.snapshot(1_000)
    assert load.hot_key == "hot"
    assert load.split_key is None
    assert load.hot_key_share >= 0.9
    assert load.top_keys[0].partition_key == "hot"
    assert tracker.traffic_split_key(1_000) is None


def test_a_heavy_but_not_dominant_key_still_gets_a_split_key() -> None:
    tracker = ShardLoadTracker(hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0)
    puts = [(partition_key_hash("warm"), "warm", 1_000)] * 700
    puts += [(partition_key_hash(f"c{i}"), f"c{i}", 1_000) for i in range(300)]
    tracker.record_puts(puts, now_ms=0)
    load = tracker.snapshot(1_000)
    assert load.hot_key is None
    assert load.top_keys[0].partition_key == "warm"
    assert load.split_key is not None


# --- Bounded memory --------------------------------------------------------------------------


def test_memory_stays_bounded_with_millions_of_distinct_keys() -> None:
    """Two million keys, nearly all distinct, over two minutes: the tracker holds at most
    window_count windows, each with at most 2k counters (+ one batch) per summary, and still
    finds the one key that carries a tenth of the traffic."""
    config = LoadTrackerConfig()
    tracker = ShardLoadTracker(
        hash_key_start=FULL[0], hash_key_end=FULL[1], now_ms=0, config=config
    )
    step = limits.hash_key_max // 2_000_000
    batch = 500
    for offset in range(0, 2_000_000, batch):
        now_ms = offset * 120_000 // 2_000_000
        puts = [(i * step, f"key-{i}", 100) for i in range(offset, offset + batch)]
        puts[::10] = [(0, "heavy", 100)] * (batch // 10)  # a tenth of the traffic
        tracker.record_puts(puts, now_ms=now_ms)
        windows = tracker._windows
        assert len(windows) <= config.window_count
        for window in windows:
            assert len(window.by_records.counts) <= 2 * config.key_capacity + batch
            assert len(window.by_bytes.counts) <= 2 * config.key_capacity + batch
            assert len(window.histogram_records) <= config.histogram_buckets
    assert sum(len(w.by_records.counts) for w in tracker._windows) <= config.window_count * (
        2 * config.key_capacity + batch
    )
    load = tracker.snapshot(120_000)
    assert load.top_keys[0].partition_key == "heavy"
    assert load.hot_key is None
    assert load.split_key is not None
