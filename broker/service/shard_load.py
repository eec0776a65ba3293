"""The shard leader's side of load tracking: count accepted writes, report them to the metadata.

`ShardClient.serve_append` (the one place a shard's leader accepts records, whichever node's
gateway took the request: forwarded puts arrive there too, so every record counts once) calls
`ShardLoadRecorder.written` while the local replica writes the records (during the log
writer's fsync, off the producer's path; an append that then fails counts too, which only
matters to rates while the disk fails). The recorder keeps
one `streams.hot_keys.ShardLoadTracker` per shard with recent traffic, created on the first put
and dropped once the shard has been idle for the tracker's whole window (or this node stopped
leading it): memory follows the busy shards, not the shards led.

Every `load_report_interval_ms`, `run_reporter` turns the trackers into ONE `ReportShardLoads`
command for the node (`report`): an entry per shard above the floor (1 % of a shard's
capacity) whose rates moved by more than 10 % since the entry the image holds, or that the
image lacks (only heavy keys, `capacity_table.REPORT_KEY_SHARE_MIN_PPM`), plus an empty entry
for each shard whose entry in the image names this node but that has no traffic here any more
(it turned idle or under the floor, or the entry was left by this node's previous incarnation),
until the image drops the entry. With nothing changed, a node holding entries proposes an empty
report every `refresh_ms` (half of `load_report_stale_ms`) that confirms them all. A node whose
shards are all idle proposes nothing at all, so an idle cluster costs the metadata quorum no
commands, whatever its shard count. Sizes for 1,000 busy shards: tests/service/
test_report_size.py.

Hash keys: a put passes the hash keys the records were routed by, whether the gateway that took
it is here or forwarded it (`NodeService.ShardAppend` carries them, 16 bytes a record), so a
record with an ExplicitHashKey counts where the router put it. Only an append from a sender
that did not send them (a node from before that field, during a rolling upgrade) has its
partition keys hashed again here (MD5, about 0.3 µs), an ExplicitHashKey's record then landing
at its partition key's hash clamped into the shard's range: that can only shift the traffic
split key, never the rates or the hot keys.

Loop only (not thread-safe); no I/O except `run_reporter`'s proposals.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from broker import limits
from broker.clock import Clock
from broker.config import Config
from broker.errors import ShoalError
from broker.log.records import NewRecords
from broker.meta import capacity
from broker.meta.capacity_table import (
    PPM,
    REPORT_FLOOR_PPM,
    REPORT_KEYS_MAX,
    REPORT_SHARDS_MAX,
    ReportedLoad,
)
from broker.meta.commands import Command, ReportShardLoads
from broker.meta.image import MetadataImage, ShardMeta, ShardState, StreamMeta
from broker.streams.hash_keys import partition_keys_bytes_hashes
from broker.streams.hot_keys import LoadTrackerConfig, ShardLoadTracker
from broker.types import NodeId, ShardIndex, ShardUid, StreamUid

log = logging.getLogger(__name__)

# A batch's keys by `map`: no Python step per record.


@dataclass(slots=True)
class _Tracked:
    stream_uid: StreamUid
    shard_index: ShardIndex
    tracker: ShardLoadTracker


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sent:
    """What a busy shard's entry in the metadata says (the last report committed)."""

    epoch: int
    records_per_second: float
    bytes_per_second: float


class ShardLoadRecorder:
    """This node's trackers of the shards it leads (module docstring). A node view."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        clock: Clock,
        image: Callable[[], MetadataImage],
        config: LoadTrackerConfig | None = None,
        report_keys: int = REPORT_KEYS_MAX,
        refresh_ms: int = 15_000,
        change_fraction: float = 0.1,
        floor_ppm: int = REPORT_FLOOR_PPM,
    ) -> None:
        assert 0 <= report_keys <= REPORT_KEYS_MAX
        assert 0 <= floor_ppm < PPM
        assert refresh_ms >= 0
        assert change_fraction >= 0
        self.node_id = node_id
        self._clock = clock
        self._image = image
        self._config = config if config is not None else LoadTrackerConfig()
        self._report_keys = report_keys
        self._refresh_ms = refresh_ms
        self._change_fraction = change_fraction
        self._floor_ppm = floor_ppm
        self._trackers: dict[ShardUid, _Tracked] = {}
        self._sent: dict[ShardUid, _Sent] = {}  # of shards with a tracker only
        self._index_image: MetadataImage | None = None
        self._index: dict[ShardUid, tuple[StreamMeta, ShardMeta]] = {}

    def tracked_shards(self) -> int:
        return len(self._trackers)

    # --- The put path -------------------------------------------------------------------------

    def written(
        self,
        shard_uid: ShardUid,
        records: NewRecords,
    ) -> None:
        """Count records the local replica is writing as this shard's leader (`ShardClient.
        serve_append`: while the log writer makes them durable)."""
        tracked = self._trackers.get(shard_uid)
        if tracked is None:
            tracked = self._start(shard_uid)
            if tracked is None:
                return  # not in this node's image (yet): nothing to attribute it to
        tracker = tracked.tracker
        now_ms = self._clock.monotonic_ms()
        hash_keys: Sequence[int] | None = records.hash_keys
        if hash_keys is None:
            # Each key's MD5 (a common record's hash key), column-wise; kept inside the shard
            # (records forwarded without their keys may have been routed by explicit ones).
            hashes = partition_keys_bytes_hashes(records.partition_keys_utf8)
            if tracker.hash_key_start == 0 and tracker.hash_key_end == limits.hash_key_max:
                hash_keys = list(hashes)  # every MD5 lies in the whole range (90 µs a batch)
            else:
                start = itertools.repeat(tracker.hash_key_start)
                end = itertools.repeat(tracker.hash_key_end)
                hash_keys = list(map(min, map(max, hashes, start), end))
        keys = records.partition_keys
        if len(records) == 1:
            tracker.record_put(hash_keys[0], keys[0], records.sizes[0], now_ms)
        else:
            tracker.record_puts(zip(hash_keys, keys, records.sizes, strict=True), now_ms=now_ms)

    def _start(self, shard_uid: ShardUid) -> _Tracked | None:
        found = self._lookup(shard_uid)
        if found is None:
            return None
        stream, shard = found
        tracked = _Tracked(
            stream_uid=stream.uid,
            shard_index=shard.index,
            tracker=ShardLoadTracker(
                hash_key_start=shard.hash_key_start,
                hash_key_end=shard.hash_key_end,
                now_ms=self._clock.monotonic_ms(),
                config=self._config,
            ),
        )
        self._trackers[shard_uid] = tracked
        return tracked

    def _lookup(self, shard_uid: ShardUid) -> tuple[StreamMeta, ShardMeta] | None:
        """The shard with this uid; the index is rebuilt at most once per image, on a miss."""
        found = self._index.get(shard_uid)
        if found is not None:
            return found
        image = self._image()
        if image is self._index_image:
            return None
        self._index_image = image
        self._index = {
            shard.uid: (stream, shard)
            for stream in image.streams.values()
            for shard in stream.shards
            if shard.state is not ShardState.CLOSED
        }
        return self._index.get(shard_uid)

    # --- Reporting ----------------------------------------------------------------------------

    def report(self) -> ReportShardLoads | None:
        """The node's report for this period, or None when there is nothing to say. Drops the
        trackers of shards that are idle or no longer led here. A busy shard is left out while
        its rates stay within `change_fraction` of what its entry in the image says (delta
        reporting); when nothing changed but the image holds entries of this node confirmed
        `refresh_ms` ago or more, the report is empty and only confirms them. Steady load
        costs one small command per refresh, not an entry per shard."""
        image = self._image()
        now_ms = self._clock.monotonic_ms()
        wall_ms = self._clock.wall_ms()
        streams = {stream.uid: stream for stream in image.streams.values()}
        held = {
            (e.stream_uid, e.shard_index, e.epoch)
            for e in image.capacity.loads
            if e.node_id == self.node_id
        }
        busy: list[tuple[float, ReportedLoad]] = []
        idle: list[ReportedLoad] = []
        places: set[tuple[StreamUid, ShardIndex]] = set()  # shards reported as busy
        for shard_uid, tracked in list(self._trackers.items()):
            shard = self._led_shard(streams, tracked.stream_uid, tracked.shard_index)
            records, size_bytes = tracked.tracker.totals(now_ms)
            if shard is None or records == 0:
                del self._trackers[shard_uid]
                continue
            span_ms = tracked.tracker.span_ms(now_ms)
            rates = (records * 1000 / span_ms, size_bytes * 1000 / span_ms)
            if _below_floor(rates, self._floor_ppm, reported=shard_uid in self._sent):
                self._sent.pop(shard_uid, None)  # as idle: its entry (if any) is cleared below
                continue
            places.add((tracked.stream_uid, tracked.shard_index))
            sent = self._sent.get(shard_uid)
            if (tracked.stream_uid, tracked.shard_index, shard.epoch) not in held:
                sent = None  # the image lacks it (a report refused or lost): send it whole
            if not self._worth_sending(sent, shard.epoch, rates):
                continue
            entry = capacity.reported_load(
                tracked.tracker.snapshot(now_ms),
                stream_uid=tracked.stream_uid,
                shard_index=tracked.shard_index,
                node_id=self.node_id,
                epoch=shard.epoch,
                reported_ms=wall_ms,
                hash_key_start=shard.hash_key_start,
                hash_key_end=shard.hash_key_end,
                keys_max=self._report_keys,
            )
            busy.append((max(rates[0] / 1000, rates[1] / 2**20), entry))
        self._sent = {uid: sent for uid, sent in self._sent.items() if uid in self._trackers}
        # Entries the image holds for this node without a tracker here (idle now, or left by
        # this node's previous incarnation, or a lost report): each gets an idle entry until
        # the image drops it. Entries of shards led elsewhere are the table's to prune.
        for entry in image.capacity.loads:
            if entry.node_id != self.node_id or (entry.stream_uid, entry.shard_index) in places:
                continue
            shard = self._led_shard(streams, entry.stream_uid, entry.shard_index)
            if shard is not None:
                idle.append(
                    capacity.idle_report(
                        stream_uid=entry.stream_uid,
                        shard_index=entry.shard_index,
                        node_id=self.node_id,
                        epoch=shard.epoch,
                        now_ms=wall_ms,
                    )
                )
        busy.sort(key=lambda item: -item[0])
        loads = tuple(entry for _, entry in busy[:REPORT_SHARDS_MAX]) + tuple(idle)
        if not loads and not (held and self._confirmation_due(image, wall_ms)):
            return None
        return ReportShardLoads(now_ms=wall_ms, node_id=self.node_id, loads=loads)

    def _confirmation_due(self, image: MetadataImage, wall_ms: int) -> bool:
        """Whether this node's entries were last confirmed `refresh_ms` ago or more."""
        for seen in image.capacity.reporters:
            if seen.node_id == self.node_id:
                return wall_ms - seen.reported_ms >= self._refresh_ms
        return True

    def _worth_sending(self, sent: _Sent | None, epoch: int, rates: tuple[float, float]) -> bool:
        if sent is None or sent.epoch != epoch:
            return True
        return any(
            abs(now - then) > self._change_fraction * then
            for now, then in zip(
                rates, (sent.records_per_second, sent.bytes_per_second), strict=True
            )
        )

    def reported(self, command: ReportShardLoads) -> None:
        """The report committed: remember what each busy shard's entry now says."""
        by_place = {(t.stream_uid, t.shard_index): uid for uid, t in self._trackers.items()}
        for entry in command.loads:
            uid = by_place.get((entry.stream_uid, entry.shard_index))
            if entry.records > 0 and uid is not None:
                self._sent[uid] = _Sent(
                    epoch=entry.epoch,
                    records_per_second=entry.records_per_second,
                    bytes_per_second=entry.bytes_per_second,
                )

    def _led_shard(
        self, streams: dict[StreamUid, StreamMeta], stream_uid: StreamUid, shard_index: ShardIndex
    ) -> ShardMeta | None:
        stream = streams.get(stream_uid)
        shard = stream.shard_by_index(shard_index) if stream is not None else None
        if shard is None or shard.state is not ShardState.OPEN or shard.leader != self.node_id:
            return None
        return shard


def _below_floor(rates: tuple[float, float], floor_ppm: int, *, reported: bool) -> bool:
    """Whether a shard's (records/s, bytes/s) are too small to report: below `floor_ppm`
    (`capacity_table.REPORT_FLOOR_PPM`) of one shard's write capacity, or half that for a shard
    whose entry is in the metadata (hysteresis: a shard hovering at the floor does not flip
    between an entry and none every period). Such a shard reads as idle, which changes no
    decision: a merge needs two neighbours together under `on_demand_merge_percent` (25 % by
    default), and `load_recorder` keeps the floor at most half of that."""
    if reported:
        floor_ppm //= 2
    used = max(
        rates[0] / limits.shard_write_records_per_second_default,
        rates[1] / limits.shard_write_bytes_per_second_default,
    )
    return used * PPM < floor_ppm


async def run_reporter(
    recorder: ShardLoadRecorder,
    propose: Callable[[Command], Awaitable[object]],
    *,
    interval_ms: int,
    clock: Clock,
) -> None:
    """Reports every `interval_ms` (on `clock`'s timer). Infinite on purpose: cancelled at node
    stop. A failed proposal (no quorum leader, a timeout) is logged and the next period reports
    afresh."""
    assert interval_ms > 0
    while True:
        await clock.sleep(interval_ms)
        command = recorder.report()
        if command is None:
            continue
        try:
            await propose(command)
        except ShoalError as error:
            log.info("shard_load_report_failed", extra={"error": error.message})
            continue
        recorder.reported(command)


def load_recorder(
    config: Config, *, node_id: NodeId, clock: Clock, image: Callable[[], MetadataImage]
) -> ShardLoadRecorder:
    """The node's recorder, from its configuration's knobs."""
    knobs = config.knobs
    return ShardLoadRecorder(
        node_id=node_id,
        clock=clock,
        image=image,
        config=LoadTrackerConfig(
            window_ms=knobs.load_window_ms, window_count=knobs.load_window_count
        ),
        # Confirmed well before the autoscaler stops trusting an entry (load_report_stale_ms).
        refresh_ms=knobs.load_report_stale_ms // 2,
        # Two neighbours both under the floor read as idle: keep their sum under the merge
        # threshold, so that the floor never decides a merge the policy would not.
        floor_ppm=min(REPORT_FLOOR_PPM, knobs.on_demand_merge_percent * PPM // 200),
    )
