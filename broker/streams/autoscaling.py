"""On-demand auto-scaling: which shard to split or merge, and why, from the shards' reported load.

The metadata controller (leader-only) calls `decide` for each stream every time it looks at the
load its shard leaders reported (`hot_keys.ShardLoad`, keyed by shard index). `decide` returns
what to do: at most one `Split` or `Merge` (the controller turns it into the same BeginReshard a
client's SplitShard or MergeShards would), plus `HotKey` notices for shards that one partition
key keeps hot. Every decision carries a sentence for the stream's event log.

The rules (REFERENCE §1.8, and better where the issue asks for it):
* Only ACTIVE, ON_DEMAND streams with no reshard pending are touched.
* A shard is hot while its write rate is above `split_bytes_per_second` or
  `split_records_per_second`. Once it has stayed hot for `hot_for_ms` it is split, at the hash
  key that halves its recent traffic (`ShardLoad.split_key`), or at the midpoint of its range
  when the tracker offers none. AWS splits at the midpoint, which leaves a skewed shard hot.
* A shard whose load is one hot key is never split (no split can divide one key); it is reported
  once per hot spell instead.
* Two adjacent open shards whose combined rate stays below `merge_fraction` of one shard's
  capacity, in both records and bytes, for `cold_for_ms` are merged.
* The open shard count stays within [`min_open_shards`, `max_open_shards`], and a stream gets
  at most one split or merge per `cooldown_ms`.

`AutoscalingHistory` is the controller's memory between calls: when each shard started being
hot and each adjacent pair started being cold (as the controller observed it, on its monotonic
clock), the last decision per stream, and the hot keys already reported. It is bounded: entries
for shards that are no longer open are pruned on every call, and streams beyond `max_streams`
are forgotten, least recently observed first. A new controller starts with empty timers, so it
waits a full `hot_for_ms` or `cold_for_ms` before acting, and takes each stream's last split or
merge from its replicated scaling log (`remember_decision`), so the cooldown holds across
controllers too: a leader change delays decisions, it never makes a hasty one.

Pure: no I/O, no clock; `decide` mutates only the history it is given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from broker import limits
from broker.meta.image import ShardMeta, StreamMeta, StreamMode, StreamStatus
from broker.streams.hot_keys import ShardLoad
from broker.types import ShardIndex, StreamUid

KiB = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalingPolicy:
    """The on-demand controller's knobs, per stream or per cluster."""

    # Split at half of AWS's per-shard write limit (1 MiB/s, 1,000 records/s), as AWS does
    # (~500 KB/s): a shard is split while it still has 2x headroom, before producers see
    # throttling, and each child of an even split starts at a quarter of its capacity.
    split_bytes_per_second: int = 500 * KiB
    split_records_per_second: int = 500
    # Sustained, not a blip: longer than the load trackers' recent window (50-60 s), so a burst
    # of a few seconds, which lifts a one-minute average for at most a minute, never splits.
    hot_for_ms: int = 120_000
    # One shard's write capacity, what `merge_fraction` is a fraction of.
    shard_bytes_per_second: int = limits.shard_write_bytes_per_second_default
    shard_records_per_second: int = limits.shard_write_records_per_second_default
    # Merge two neighbours whose sum is below a quarter of one shard: the merged shard starts
    # at under half the split threshold, a 2x margin against splitting it again (no flapping).
    merge_fraction: float = 0.25
    # Merging is never urgent, and a lull of a few minutes is not a trend: as AWS's 15 minutes.
    cold_for_ms: int = 900_000
    # AWS gives a new on-demand stream 4 MB/s (4 shards) and does not go below it.
    min_open_shards: int = limits.on_demand_initial_shard_count
    # AWS's default on-demand ceiling is 200 MiB/s of writes per stream: 200 shards.
    max_open_shards: int = 200
    # A reshard takes seconds (limits.reshard_wait_ms); the stream is UPDATING meanwhile and
    # nothing is decided. The cooldown then lets the children report a fresh picture.
    cooldown_ms: int = 30_000

    def __post_init__(self) -> None:
        assert self.split_bytes_per_second > 0
        assert self.split_records_per_second > 0
        assert self.hot_for_ms >= 0
        assert self.cold_for_ms >= 0
        assert self.cooldown_ms >= 0
        assert self.shard_bytes_per_second > 0
        assert self.shard_records_per_second > 0
        assert 0.0 <= self.merge_fraction < 1.0
        # A merged pair must not be hot at once, or the controller would flap.
        assert self.merge_fraction * self.shard_bytes_per_second < self.split_bytes_per_second
        assert self.merge_fraction * self.shard_records_per_second < self.split_records_per_second
        assert 1 <= self.min_open_shards <= self.max_open_shards
        assert self.max_open_shards <= limits.shard_count_per_stream_max


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    """SplitShard(shard_index, new_starting_hash_key), decided by the controller."""

    shard_index: ShardIndex
    new_starting_hash_key: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Merge:
    """MergeShards(shard_index, adjacent_shard_index): `shard_index` is the lower hash range."""

    shard_index: ShardIndex
    adjacent_shard_index: ShardIndex
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HotKey:
    """A notice, not an action: one partition key keeps a shard hot, and splitting cannot help."""

    shard_index: ShardIndex
    partition_key: str
    reason: str


Decision = Split | Merge | HotKey

# Loads by shard index. Either key type: mappings are invariant in their keys, and callers hold
# both (`ShardMeta.index` is a ShardIndex, a decoded report may carry a plain int).
ShardLoads = Mapping[ShardIndex, ShardLoad] | Mapping[int, ShardLoad]


@dataclass(slots=True, kw_only=True)
class _StreamHistory:
    hot_since_ms: dict[ShardIndex, int] = field(default_factory=dict)
    cold_since_ms: dict[tuple[ShardIndex, ShardIndex], int] = field(default_factory=dict)
    hot_key_reported: dict[ShardIndex, str] = field(default_factory=dict)
    last_decision_ms: int | None = None


class AutoscalingHistory:
    """The controller's memory between `decide` calls (module docstring). Owned by the
    controller on the metadata leader, dropped when it loses leadership. Cluster view, keyed by
    stream incarnation (a recreated stream starts afresh). Not thread-safe."""

    def __init__(self, *, max_streams: int = 10_000) -> None:
        assert max_streams >= 1
        self.max_streams = max_streams
        self._streams: dict[StreamUid, _StreamHistory] = {}  # least recently observed first
        self._last_now_ms: int | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def entries(self) -> int:
        """Timers held, over every stream: bounded by the open shards of the streams held."""
        return sum(
            len(h.hot_since_ms) + len(h.cold_since_ms) + len(h.hot_key_reported)
            for h in self._streams.values()
        )

    def last_decision_ms(self, stream_uid: StreamUid) -> int | None:
        entry = self._streams.get(stream_uid)
        return None if entry is None else entry.last_decision_ms

    def hot_since_ms(self, stream_uid: StreamUid, shard_index: int) -> int | None:
        entry = self._streams.get(stream_uid)
        return None if entry is None else entry.hot_since_ms.get(ShardIndex(shard_index))

    def remember_decision(self, stream_uid: StreamUid, decided_ms: int) -> None:
        """A split or merge decided at `decided_ms`, by this controller or (from the stream's
        replicated scaling log) by a previous one: the cooldown runs from it."""
        entry = self._entry(stream_uid)
        if entry.last_decision_ms is None or decided_ms > entry.last_decision_ms:
            entry.last_decision_ms = decided_ms

    def forget(self, stream_uid: StreamUid) -> None:
        self._streams.pop(stream_uid, None)

    def retain(self, stream_uids: Iterable[StreamUid]) -> None:
        """Forget every stream not in `stream_uids` (the controller passes the live ones)."""
        keep = set(stream_uids)
        for uid in [uid for uid in self._streams if uid not in keep]:
            del self._streams[uid]

    def _advance(self, now_ms: int) -> None:
        # Observer-side time: the controller's monotonic clock never steps back.
        assert self._last_now_ms is None or now_ms >= self._last_now_ms
        self._last_now_ms = now_ms

    def _entry(self, stream_uid: StreamUid) -> _StreamHistory:
        entry = self._streams.pop(stream_uid, None)
        if entry is None:
            entry = _StreamHistory()
            while len(self._streams) >= self.max_streams:
                del self._streams[next(iter(self._streams))]
        self._streams[stream_uid] = entry  # most recently observed last
        assert len(self._streams) <= self.max_streams
        return entry


def decide(
    stream: StreamMeta,
    loads: ShardLoads,
    policy: AutoscalingPolicy,
    history: AutoscalingHistory,
    now_ms: int,
) -> tuple[Decision, ...]:
    """What the on-demand controller should do about `stream` now: `HotKey` notices first,
    then at most one `Split` or `Merge`. `loads` holds the latest reported load per shard
    index; a shard without one is taken as unknown (neither hot nor cold)."""
    history._advance(now_ms)
    if stream.mode is not StreamMode.ON_DEMAND or stream.is_gone(now_ms=now_ms):
        history.forget(stream.uid)
        return ()
    if stream.reshard is not None or stream.status(now_ms=now_ms) is not StreamStatus.ACTIVE:
        return ()  # keep the timers: the shards that stay open are still the same shards
    entry = history._entry(stream.uid)
    shards = sorted(stream.open_shards(), key=lambda s: s.hash_key_start)
    _observe(entry, shards, loads, policy, now_ms)

    decisions: list[Decision] = list(_hot_key_notices(entry, shards, loads, policy, now_ms))
    if entry.last_decision_ms is not None and now_ms - entry.last_decision_ms < policy.cooldown_ms:
        return tuple(decisions)
    action = _choose_split(entry, stream, shards, loads, policy, now_ms) or _choose_merge(
        entry, stream, shards, loads, policy, now_ms
    )
    if action is not None:
        entry.last_decision_ms = now_ms
        decisions.append(action)
    assert sum(not isinstance(d, HotKey) for d in decisions) <= 1
    return tuple(decisions)


def _is_hot(load: ShardLoad, policy: AutoscalingPolicy) -> bool:
    return (
        load.bytes_per_second > policy.split_bytes_per_second
        or load.records_per_second > policy.split_records_per_second
    )


def _is_cold_pair(low: ShardLoad, high: ShardLoad, policy: AutoscalingPolicy) -> bool:
    bytes_per_second = low.bytes_per_second + high.bytes_per_second
    records_per_second = low.records_per_second + high.records_per_second
    return (
        bytes_per_second < policy.merge_fraction * policy.shard_bytes_per_second
        and records_per_second < policy.merge_fraction * policy.shard_records_per_second
    )


def _utilization(load: ShardLoad, policy: AutoscalingPolicy) -> float:
    """The larger fraction of one shard's write capacity the load uses."""
    return max(
        load.bytes_per_second / policy.shard_bytes_per_second,
        load.records_per_second / policy.shard_records_per_second,
    )


def _observe(
    entry: _StreamHistory,
    shards: list[ShardMeta],
    loads: ShardLoads,
    policy: AutoscalingPolicy,
    now_ms: int,
) -> None:
    """Start or stop the hot and cold timers, and prune those of shards no longer open."""
    open_indices = {s.index for s in shards}
    for index in [i for i in entry.hot_since_ms if i not in open_indices]:
        del entry.hot_since_ms[index]
    for index in [i for i in entry.hot_key_reported if i not in open_indices]:
        del entry.hot_key_reported[index]
    for shard in shards:
        load = loads.get(shard.index)
        if load is not None and _is_hot(load, policy):
            entry.hot_since_ms.setdefault(shard.index, now_ms)
        else:
            entry.hot_since_ms.pop(shard.index, None)
        if load is None or load.hot_key is None or shard.index not in entry.hot_since_ms:
            entry.hot_key_reported.pop(shard.index, None)  # the spell is over: report anew

    pairs: set[tuple[ShardIndex, ShardIndex]] = set()
    for low, high in itertools.pairwise(shards):
        assert low.hash_key_end + 1 == high.hash_key_start  # open shards tile the hash space
        pair = (low.index, high.index)
        pairs.add(pair)
        low_load, high_load = loads.get(low.index), loads.get(high.index)
        if (
            low_load is not None
            and high_load is not None
            and _is_cold_pair(low_load, high_load, policy)
        ):
            entry.cold_since_ms.setdefault(pair, now_ms)
            continue
        entry.cold_since_ms.pop(pair, None)
    for pair in [p for p in entry.cold_since_ms if p not in pairs]:
        del entry.cold_since_ms[pair]
    assert len(entry.hot_since_ms) <= len(shards)
    assert len(entry.cold_since_ms) <= max(0, len(shards) - 1)


def _sustained_hot(
    entry: _StreamHistory, shards: list[ShardMeta], policy: AutoscalingPolicy, now_ms: int
) -> list[ShardMeta]:
    return [
        s
        for s in shards
        if s.index in entry.hot_since_ms
        and now_ms - entry.hot_since_ms[s.index] >= policy.hot_for_ms
    ]


def _hot_key_notices(
    entry: _StreamHistory,
    shards: list[ShardMeta],
    loads: ShardLoads,
    policy: AutoscalingPolicy,
    now_ms: int,
) -> list[HotKey]:
    """One notice per hot spell and key, for sustained hot shards that one key carries."""
    notices = []
    for shard in _sustained_hot(entry, shards, policy, now_ms):
        load = loads[shard.index]
        key = load.hot_key
        if key is None or entry.hot_key_reported.get(shard.index) == key:
            continue
        entry.hot_key_reported[shard.index] = key
        hot_ms = now_ms - entry.hot_since_ms[shard.index]
        notices.append(
            HotKey(
                shard_index=shard.index,
                partition_key=key,
                reason=(
                    f"{shard.shard_id} has taken {_load_text(load)} for {_duration(hot_ms)}, "
                    f"but partition key {key!r} carries {load.hot_key_share:.0%} of it; no split "
                    "can divide one key, so the shard is not split (spread that key's records "
                    "over more partition keys)"
                ),
            )
        )
    return notices


def _choose_split(
    entry: _StreamHistory,
    stream: StreamMeta,
    shards: list[ShardMeta],
    loads: ShardLoads,
    policy: AutoscalingPolicy,
    now_ms: int,
) -> Split | None:
    """The most utilized sustained-hot shard that a split can help, below the ceiling."""
    if len(shards) >= policy.max_open_shards:
        return None
    candidates = [
        s
        for s in _sustained_hot(entry, shards, policy, now_ms)
        if loads[s.index].hot_key is None and s.hash_key_end - s.hash_key_start >= 3
    ]
    if not candidates:
        return None
    shard = min(candidates, key=lambda s: (-_utilization(loads[s.index], policy), s.index))
    load = loads[shard.index]
    key = load.split_key
    if key is not None and shard.hash_key_start + 1 < key < shard.hash_key_end:
        where = f"at hash key {key}, which halves its recent traffic"
    else:
        key = (shard.hash_key_start + shard.hash_key_end + 1) // 2
        where = f"at the midpoint of its range, hash key {key} (no traffic split key reported)"
    assert shard.hash_key_start + 1 < key < shard.hash_key_end  # SplitShard's rule
    hot_ms = now_ms - entry.hot_since_ms.pop(shard.index)  # the shard closes: its spell ends
    return Split(
        shard_index=shard.index,
        new_starting_hash_key=key,
        reason=(
            f"{shard.shard_id} of stream {stream.name} has taken {_load_text(load)} for "
            f"{_duration(hot_ms)} (split above {_bytes_text(policy.split_bytes_per_second)}/s "
            f"or {policy.split_records_per_second} records/s for "
            f"{_duration(policy.hot_for_ms)}); splitting it {where}"
        ),
    )


def _choose_merge(
    entry: _StreamHistory,
    stream: StreamMeta,
    shards: list[ShardMeta],
    loads: ShardLoads,
    policy: AutoscalingPolicy,
    now_ms: int,
) -> Merge | None:
    """The coldest adjacent pair that stayed cold for `cold_for_ms`, above the floor."""
    if len(shards) - 1 < policy.min_open_shards:
        return None
    by_index = {s.index: s for s in shards}
    candidates = [
        pair
        for pair, since_ms in entry.cold_since_ms.items()
        if now_ms - since_ms >= policy.cold_for_ms
    ]
    if not candidates:
        return None

    def combined(pair: tuple[ShardIndex, ShardIndex]) -> float:
        return _utilization(loads[pair[0]], policy) + _utilization(loads[pair[1]], policy)

    low_index, high_index = min(candidates, key=lambda p: (combined(p), p))
    low, high = by_index[low_index], by_index[high_index]
    cold_ms = now_ms - entry.cold_since_ms.pop((low_index, high_index))
    bytes_per_second = loads[low_index].bytes_per_second + loads[high_index].bytes_per_second
    records_per_second = loads[low_index].records_per_second + loads[high_index].records_per_second
    return Merge(
        shard_index=low.index,
        adjacent_shard_index=high.index,
        reason=(
            f"{low.shard_id} and {high.shard_id} of stream {stream.name} have together taken "
            f"{_bytes_text(bytes_per_second)}/s and {records_per_second:.0f} records/s for "
            f"{_duration(cold_ms)}, below {policy.merge_fraction:.0%} of one shard's capacity "
            f"({_bytes_text(policy.shard_bytes_per_second)}/s, "
            f"{policy.shard_records_per_second} records/s); merging them"
        ),
    )


def _load_text(load: ShardLoad) -> str:
    return f"{_bytes_text(load.bytes_per_second)}/s and {load.records_per_second:.0f} records/s"


def _bytes_text(size_bytes: float) -> str:
    if size_bytes >= KiB * KiB:
        return f"{size_bytes / (KiB * KiB):.1f} MiB"
    if size_bytes >= KiB:
        return f"{size_bytes / KiB:.1f} KiB"
    return f"{size_bytes:.0f} B"


def _duration(duration_ms: int) -> str:
    seconds = duration_ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
