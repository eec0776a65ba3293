"""Per-shard load tracking: recent rates, the busiest partition keys, and a traffic-halving split.

The shard leader owns one `ShardLoadTracker` per shard it leads and feeds it every accepted put
(`record_put`, or `record_puts` for a PutRecords batch). Every few seconds it takes a
`snapshot(now_ms)` and reports the resulting `ShardLoad` to the metadata quorum, where the
on-demand controller (`autoscaling.decide`) reads it, and where the CLI shows the hot shards and
hot keys. Shard-local, loop-only (not thread-safe); pure: no I/O, time comes in as `now_ms`.

Three things are tracked, all in memory bounded by the config, whatever the key cardinality:

* Rates: records and bytes over the recent window (below), per second.
* The busiest partition keys, by records and by bytes: two heavy-hitter summaries
  (`FrequentKeys`) of `key_capacity` counters each, with Space-Saving's guarantees (Metwally,
  Agrawal and El Abbadi, 2005): for a stream of total weight N, a key's reported count is an
  upper bound that over-counts by at most its `error` ≤ N / (k + 1), and every key whose true
  weight exceeds N / (k + 1) is monitored. They are kept as Misra-Gries counters with batched
  decrements, Space-Saving shifted by its smallest counter, because that makes every record one
  dict update whether its key is new or not (see `FrequentKeys`).
* A traffic histogram over the shard's hash range: records and bytes per bucket, from which
  `traffic_split_key` interpolates the hash key below which half the recent traffic falls.
  Buckets have a power-of-two width so a record's bucket is one subtraction and one shift
  (about 80 ns cheaper than a multiply and divide on 128-bit ints); there are between
  `histogram_buckets / 2` and `histogram_buckets` of them.

"Recent" is a sliding window of `window_count` windows of `window_ms` (by default 6 × 10 s: the
last 50 to 60 s), aligned to multiples of `window_ms`. Each window holds its own summaries and
histogram; a record touches only the current window, and a snapshot merges the live ones. This
was chosen over exponential decay because (1) counts stay exact integers, so the Space-Saving
bounds hold exactly and property tests compare against exact counts; (2) old traffic leaves
completely after the window passes, so a key that stopped is forgotten rather than decaying
forever, and "bytes per second over the last minute" means exactly that; (3) there is no
per-record float multiply and no renormalisation pass. The cost is a merge of `window_count`
small summaries per snapshot (snapshots are rare, puts are not).

Merged bounds. A key's merged upper bound is the sum of its per-window upper bounds, its error
the sum of the windows' errors. Each window's error is at most Nw / (k + 1), so the merged error
is at most N / (k + 1) for N the total over the live windows; and a key whose true weight
exceeds N / (k + 1) exceeds Nw / (k + 1) in some window (pigeonhole), so it is monitored there
and is among the merged candidates (`key_estimates`).

Hot keys. When one key carries at least `hot_key_share` (90 %) of the shard's load in its
binding dimension (bytes or records, whichever is the larger fraction of the shard's write
capacity), judged by its guaranteed lower bound, the snapshot names it as `hot_key` and offers
no split key: every split leaves the key whole in one child, so splitting cannot relieve it
(AWS does not isolate hot keys either, REFERENCE §1.8).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from broker import limits

# Rates are never computed over less than this: a burst in the first millisecond of a tracker's
# life is not a rate of a thousand times its size per second.
RATE_SPAN_MS_MIN = 1_000


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadTrackerConfig:
    """Knobs for one shard's tracker. Memory per shard is O(window_count × (key_capacity +
    histogram_buckets)) entries, independent of the number of distinct keys."""

    window_ms: int = 10_000
    window_count: int = 6  # the recent window spans (window_count - 1) to window_count windows
    key_capacity: int = 64  # Space-Saving counters per window and dimension: error ≤ N/64
    histogram_buckets: int = 64  # a power of two
    reported_keys: int = 10  # top keys carried in a ShardLoad (it travels to the metadata quorum)
    hot_key_share: float = 0.9
    # The shard's write capacity, to decide which dimension binds (bytes or records). Trackers
    # of shards with unlimited throughput still weigh the dimensions by AWS's defaults.
    capacity_bytes_per_second: int = limits.shard_write_bytes_per_second_default
    capacity_records_per_second: int = limits.shard_write_records_per_second_default

    def __post_init__(self) -> None:
        assert self.window_ms >= 1
        assert 2 <= self.window_count <= 1_000
        assert 1 <= self.key_capacity <= 10_000
        assert self.histogram_buckets >= 2
        assert self.histogram_buckets & (self.histogram_buckets - 1) == 0
        assert 1 <= self.reported_keys <= self.key_capacity
        assert 0.5 < self.hot_key_share <= 1.0  # above half: at most one key can be "the" key
        assert self.capacity_bytes_per_second > 0
        assert self.capacity_records_per_second > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLoad:
    """One partition key's recent load, as bounds: true records lie in
    [records - records_error, records], true bytes in [size_bytes - size_bytes_error,
    size_bytes]."""

    partition_key: str
    records: int
    records_error: int
    size_bytes: int
    size_bytes_error: int

    def __post_init__(self) -> None:
        assert 0 <= self.records_error <= self.records
        assert 0 <= self.size_bytes_error <= self.size_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardLoad:
    """A shard's recent write load, as its leader reports it (`ShardLoadTracker.snapshot`).

    `top_keys` are ranked by the binding dimension (`bytes_bound`: bytes if the shard uses a
    larger fraction of its byte capacity than of its record capacity). `split_key` is the hash
    key that halves the recent traffic (the NewStartingHashKey of the upper child), None when
    there is no traffic, the range is too small, or a hot key carries the load; `hot_key` names
    that key, `hot_key_share` is its guaranteed share of the binding dimension."""

    span_ms: int  # the time the rates are averaged over
    bytes_per_second: float
    records_per_second: float
    bytes_bound: bool
    top_keys: tuple[KeyLoad, ...]
    split_key: int | None
    hot_key: str | None
    hot_key_share: float

    def __post_init__(self) -> None:
        assert self.span_ms >= RATE_SPAN_MS_MIN
        assert self.bytes_per_second >= 0
        assert self.records_per_second >= 0
        assert 0.0 <= self.hot_key_share <= 1.0
        assert self.hot_key is None or self.split_key is None


class FrequentKeys:
    """A heavy-hitters summary with Space-Saving's guarantees and an O(1) put path.

    Counters live in a dict; every record does `counts[key] = counts.get(key, 0) + weight`, a
    monitored key and a new one alike. Once the dict holds more than 2 × `capacity` keys,
    `compact` subtracts the (capacity + 1)-th largest count t from every counter, drops those
    that reach zero (at most `capacity` remain) and adds t to `decrement`. This is Misra-Gries
    with batched decrements (Agarwal et al., "Mergeable summaries", 2012), which is Space-Saving
    shifted by its smallest counter: count + decrement is Space-Saving's overestimate.

    Bounds, for N the total weight added: each compaction removes at least (capacity + 1) × t
    from the counters, whose sum never exceeds N, so `decrement` ≤ N / (capacity + 1). A key's
    true weight f satisfies count ≤ f ≤ count + decrement (count 0 when absent): its counter
    only ever received its own weight, and lost at most `decrement` of it. Hence every key with
    f > N / (capacity + 1) is monitored. The amortised cost of compaction is a sort and a
    rebuild of 2k entries once per k new keys: O(1) per record, mostly in C. The first version
    kept exactly k counters with a lazy min-heap (classic Space-Saving): 1.3 µs per record for
    all-distinct keys, against about 0.4 µs here.
    """

    __slots__ = ("capacity", "counts", "decrement", "total")

    def __init__(self, capacity: int) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.decrement = 0
        self.total = 0

    def add(self, key: str, weight: int) -> None:
        """Count `weight` for `key`: the reference form of the tracker's inlined loop."""
        assert weight >= 0
        self.total += weight
        self.counts[key] = self.counts.get(key, 0) + weight
        if len(self.counts) > 2 * self.capacity:
            self.compact()

    def compact(self) -> None:
        """Shrink to at most `capacity` counters (see the class docstring)."""
        counts = self.counts
        if len(counts) <= self.capacity:
            return
        threshold = sorted(counts.values(), reverse=True)[self.capacity]
        self.counts = {key: count - threshold for key, count in counts.items() if count > threshold}
        self.decrement += threshold
        assert len(self.counts) <= self.capacity
        assert self.decrement * (self.capacity + 1) <= self.total

    def bounds(self, key: str) -> tuple[int, int]:
        """(upper bound, error) of `key`'s true weight: it lies in [upper - error, upper]."""
        return self.counts.get(key, 0) + self.decrement, self.decrement


class _Window:
    """The traffic of one aligned window: totals, two summaries and the histogram."""

    __slots__ = (
        "by_bytes",
        "by_records",
        "histogram_bytes",
        "histogram_records",
        "records",
        "size_bytes",
        "window_id",
    )

    def __init__(self, *, window_id: int, key_capacity: int, buckets: int) -> None:
        self.window_id = window_id
        self.records = 0
        self.size_bytes = 0
        self.by_records = FrequentKeys(key_capacity)
        self.by_bytes = FrequentKeys(key_capacity)
        self.histogram_records = [0] * buckets
        self.histogram_bytes = [0] * buckets


class ShardLoadTracker:
    """One shard's recent write load (see the module docstring). Created by the shard leader
    when it starts leading the shard, with the shard's inclusive hash range; dropped when it
    stops. Not thread-safe: the put path and the reporter run on the same loop."""

    def __init__(
        self,
        *,
        hash_key_start: int,
        hash_key_end: int,
        now_ms: int,
        config: LoadTrackerConfig | None = None,
    ) -> None:
        assert 0 <= hash_key_start <= hash_key_end <= limits.hash_key_max
        self.config = config if config is not None else LoadTrackerConfig()
        self.hash_key_start = hash_key_start
        self.hash_key_end = hash_key_end
        span_bits = (hash_key_end - hash_key_start).bit_length()  # width - 1 in bits
        bucket_bits = self.config.histogram_buckets.bit_length() - 1
        self._shift = max(0, span_bits - bucket_bits)
        self._buckets = ((hash_key_end - hash_key_start) >> self._shift) + 1
        assert self._buckets <= self.config.histogram_buckets
        self._origin_ms = now_ms
        self._windows: list[_Window] = []  # oldest first, at most window_count
        self._current = self._open_window(now_ms)

    # --- The put path -----------------------------------------------------------------------

    def record_put(self, hash_key: int, partition_key: str, size_bytes: int, now_ms: int) -> None:
        """Count one accepted record (`size_bytes`: data plus partition key, as throttled).
        `record_puts` for one record, inlined: PutRecord calls it once per request."""
        if now_ms >= self._current_end_ms:
            self._open_window(now_ms)
        window = self._current
        assert self.hash_key_start <= hash_key <= self.hash_key_end  # the router sent it here
        bucket = (hash_key - self.hash_key_start) >> self._shift
        window.histogram_records[bucket] += 1
        window.histogram_bytes[bucket] += size_bytes
        window.records += 1
        window.size_bytes += size_bytes
        by_records = window.by_records
        by_bytes = window.by_bytes
        by_records.total += 1
        by_bytes.total += size_bytes
        record_counts = by_records.counts
        record_counts[partition_key] = record_counts.get(partition_key, 0) + 1
        byte_counts = by_bytes.counts
        byte_counts[partition_key] = byte_counts.get(partition_key, 0) + size_bytes
        if len(record_counts) > 2 * self.config.key_capacity:
            by_records.compact()
        if len(byte_counts) > 2 * self.config.key_capacity:
            by_bytes.compact()

    def record_puts(self, puts: Iterable[tuple[int, str, int]], *, now_ms: int) -> None:
        """Count a batch of accepted records, (hash_key, partition_key, size_bytes) each, all at
        `now_ms` (one PutRecords call is one instant). The loop is inlined by hand: it runs for
        every record the shard takes, so attribute lookups are hoisted and each summary costs one
        dict update per record."""
        if now_ms >= self._current_end_ms:
            self._open_window(now_ms)
        window = self._current
        start = self.hash_key_start
        end = self.hash_key_end
        shift = self._shift
        histogram_records = window.histogram_records
        histogram_bytes = window.histogram_bytes
        by_records = window.by_records
        by_bytes = window.by_bytes
        record_counts = by_records.counts
        byte_counts = by_bytes.counts
        record_counts_get = record_counts.get
        byte_counts_get = byte_counts.get
        compact_above = 2 * self.config.key_capacity
        records = 0
        total_bytes = 0
        for hash_key, partition_key, size_bytes in puts:
            assert start <= hash_key <= end  # the router sent it here
            bucket = (hash_key - start) >> shift
            histogram_records[bucket] += 1
            histogram_bytes[bucket] += size_bytes
            record_counts[partition_key] = record_counts_get(partition_key, 0) + 1
            byte_counts[partition_key] = byte_counts_get(partition_key, 0) + size_bytes
            records += 1
            total_bytes += size_bytes
        window.records += records
        window.size_bytes += total_bytes
        by_records.total += records
        by_bytes.total += total_bytes
        # Compaction runs between batches, so a batch of b new keys may briefly take the table
        # to 2k + b entries; PutRecords batches are bounded (500 records).
        if len(record_counts) > compact_above:
            by_records.compact()
        if len(byte_counts) > compact_above:
            by_bytes.compact()

    def _open_window(self, now_ms: int) -> _Window:
        """Start the window holding `now_ms` and drop those that left the recent span."""
        window_id = now_ms // self.config.window_ms
        self._windows = [
            w for w in self._windows if w.window_id > window_id - self.config.window_count
        ]
        window = _Window(
            window_id=window_id,
            key_capacity=self.config.key_capacity,
            buckets=self._buckets,
        )
        self._windows.append(window)
        assert len(self._windows) <= self.config.window_count
        self._current = window
        self._current_end_ms = (window_id + 1) * self.config.window_ms
        return window

    # --- Reading ----------------------------------------------------------------------------

    def _live_windows(self, now_ms: int) -> list[_Window]:
        first_live = now_ms // self.config.window_ms - self.config.window_count + 1
        return [w for w in self._windows if w.window_id >= first_live]

    def span_ms(self, now_ms: int) -> int:
        """The time the recent window covers: since its first window began, or since the
        tracker was created if later; at least RATE_SPAN_MS_MIN."""
        window_ms = self.config.window_ms
        first_start_ms = (now_ms // window_ms - self.config.window_count + 1) * window_ms
        return max(RATE_SPAN_MS_MIN, now_ms - max(first_start_ms, self._origin_ms))

    def totals(self, now_ms: int) -> tuple[int, int]:
        """(records, bytes) over the recent window."""
        windows = self._live_windows(now_ms)
        return sum(w.records for w in windows), sum(w.size_bytes for w in windows)

    def key_estimates(self, now_ms: int) -> tuple[KeyLoad, ...]:
        """Bounds for every key counted in some live window, in key order: at most
        2 × window_count × (2 × key_capacity + one batch). Every key whose true count in a
        dimension exceeds that dimension's total / (key_capacity + 1) is among them."""
        windows = self._live_windows(now_ms)
        candidates: set[str] = set()
        for window in windows:
            candidates.update(window.by_records.counts)
            candidates.update(window.by_bytes.counts)
        return tuple(_key_load(windows, key) for key in sorted(candidates))

    def snapshot(self, now_ms: int) -> ShardLoad:
        """The shard's recent load, for the controller and the CLI. Ranks keys by the binding
        dimension only, then bounds the reported few in the other: O(window_count ×
        (key_capacity + histogram_buckets)), about 0.1 to 0.5 ms for a busy shard."""
        config = self.config
        windows = self._live_windows(now_ms)
        records = sum(w.records for w in windows)
        total_bytes = sum(w.size_bytes for w in windows)
        span_ms = self.span_ms(now_ms)
        bytes_bound = _bytes_bound(records, total_bytes, config)
        merged: dict[str, int] = {}
        for window in windows:
            summary = window.by_bytes if bytes_bound else window.by_records
            for key, count in summary.counts.items():
                merged[key] = merged.get(key, 0) + count
        # Every key's upper bound is its merged count plus the same error, so ranking by the
        # merged count ranks the upper bounds; ties go to the smaller key, deterministically.
        top = heapq.nsmallest(config.reported_keys, merged.items(), key=lambda kv: (-kv[1], kv[0]))
        top_keys = tuple(_key_load(windows, key) for key, _ in top)
        hot_key, hot_key_share = None, 0.0
        total = total_bytes if bytes_bound else records
        if top_keys and total > 0:
            busiest = top_keys[0]
            if bytes_bound:
                lower = busiest.size_bytes - busiest.size_bytes_error
            else:
                lower = busiest.records - busiest.records_error
            hot_key_share = min(1.0, lower / total)
            if hot_key_share >= config.hot_key_share:
                hot_key = busiest.partition_key
        split_key = None if hot_key is not None else self._split_key(windows, bytes_bound)
        return ShardLoad(
            span_ms=span_ms,
            bytes_per_second=total_bytes * 1000 / span_ms,
            records_per_second=records * 1000 / span_ms,
            bytes_bound=bytes_bound,
            top_keys=top_keys,
            split_key=split_key,
            hot_key=hot_key,
            hot_key_share=hot_key_share,
        )

    def traffic_split_key(self, now_ms: int) -> int | None:
        """The hash key that halves the recent traffic in the binding dimension, or None
        when there is no traffic, the range cannot be split, or one hot key carries it."""
        return self.snapshot(now_ms).split_key

    def _split_key(self, windows: list[_Window], bytes_bound: bool) -> int | None:
        """Interpolate, within the bucket holding the median, the key below which half the
        traffic falls, assuming traffic is uniform inside a bucket (what MD5 makes of many
        keys). The result is a valid NewStartingHashKey: start + 1 < key < end."""
        start, end = self.hash_key_start, self.hash_key_end
        if end - start < 3:
            return None  # SplitShard needs two keys on either side
        histogram: list[int] = [
            sum(column)
            for column in zip(
                *(w.histogram_bytes if bytes_bound else w.histogram_records for w in windows),
                strict=True,
            )
        ]
        if not histogram:
            return None  # no live window
        total = sum(histogram)
        if total == 0:
            return None
        below = 0  # traffic in the buckets before `bucket`
        for bucket, count in enumerate(histogram):
            if 2 * (below + count) >= total and count > 0:
                low = start + (bucket << self._shift)
                width = min(end + 1, low + (1 << self._shift)) - low
                # Half the total, minus what lies below, as a fraction of this bucket.
                key = low + (width * (total - 2 * below)) // (2 * count)
                return min(max(key, start + 2), end - 1)
            below += count
        raise AssertionError("the cumulative histogram reaches its total")


def _bytes_bound(records: int, size_bytes: int, config: LoadTrackerConfig) -> bool:
    """True when bytes use a larger fraction of the shard's capacity than records do."""
    return size_bytes * config.capacity_records_per_second >= (
        records * config.capacity_bytes_per_second
    )


def _key_load(windows: list[_Window], key: str) -> KeyLoad:
    """`key`'s bounds merged over `windows`: counts add up, and so do the windows' errors."""
    records_error = sum(w.by_records.decrement for w in windows)
    size_bytes_error = sum(w.by_bytes.decrement for w in windows)
    return KeyLoad(
        partition_key=key,
        records=sum(w.by_records.counts.get(key, 0) for w in windows) + records_error,
        records_error=records_error,
        size_bytes=sum(w.by_bytes.counts.get(key, 0) for w in windows) + size_bytes_error,
        size_bytes_error=size_bytes_error,
    )
