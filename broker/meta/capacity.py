"""The capacity table: each shard's latest reported load, and each stream's scaling event log.

Shard leaders measure their shards' write load (`streams.hot_keys.ShardLoadTracker`, fed by
`service.shard_load`) and report it every few seconds with one `ReportShardLoads` command per
node. The on-demand controller (`meta.autoscaler`) reads the reports from the image to decide
splits and merges, and every node answers the hot-shard and hot-key calls
(`gateway.capacity_service`) from it. Decisions and notices land in a per-stream event log.

Rules, applied by `state_machine.apply` through this module (pure, no clock: every time comes
from the command):

* A report entry counts only while it describes the shard as the image knows it: the stream
  incarnation is live, the shard is OPEN, the reporting node is its leader and the entry's
  epoch is the shard's. Anything else is stale (a deposed leader, a report that crossed a
  leader change) and is ignored; entries that became stale are pruned whenever a report is
  applied.
* An entry with no records means "idle now": it removes the shard's entry. Nodes report idle
  shards once, when they turn idle, and never again, so a cluster at rest applies no reports.
  Hence "no entry" for an OPEN shard with a live leader means idle (`loads_for_stream`).
* Freshness: a node re-sends a busy shard's entry only when its rates moved by more than a
  tenth (delta reporting), and otherwise proposes an empty report every refresh period; the
  table keeps each node's latest report time (`reporters`), and an entry counts as confirmed
  then (`CapacityTable.confirmed_ms`). A report older than `load_report_stale_ms` (its node
  stopped reporting) is not trusted.
* Counts, not rates: JSON (the command and snapshot encoding) has no exact floats, so an entry
  carries the record and byte totals over `span_ms`; rates are derived when read.

Bounded: at most one entry per open shard, `report_keys_max` keys per entry, and
`EVENTS_PER_STREAM_MAX` events per stream (oldest dropped first); logs of streams no longer in
the image are dropped whenever an event is recorded.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.capacity_table import (
    EVENTS_PER_STREAM_MAX,
    PPM,
    REPORT_KEY_SHARE_MIN_PPM,
    REPORT_KEYS_MAX,
    CapacityTable,
    ReportedLoad,
    ReporterSeen,
    ScalingEvent,
    ScalingEventKind,
    StreamScalingLog,
    split_position_ppm,
)
from broker.meta.commands import BeginReshard, RecordScalingEvent, ReportShardLoads
from broker.meta.image import (
    MetadataImage,
    NodeState,
    ReshardKind,
    ShardState,
    StreamMeta,
    StreamMode,
)
from broker.streams.hot_keys import RATE_SPAN_MS_MIN, KeyLoad, ShardLoad
from broker.types import NodeId, ShardIndex, StreamName, StreamUid

IDLE_LOAD = ShardLoad(
    span_ms=RATE_SPAN_MS_MIN,
    bytes_per_second=0.0,
    records_per_second=0.0,
    bytes_bound=False,
    top_keys=(),
    split_key=None,
    hot_key=None,
    hot_key_share=0.0,
)


def reported_load(
    load: ShardLoad,
    *,
    stream_uid: StreamUid,
    shard_index: ShardIndex,
    node_id: NodeId,
    epoch: int,
    reported_ms: int,
    hash_key_start: int,
    hash_key_end: int,
    keys_max: int = REPORT_KEYS_MAX,
) -> ReportedLoad:
    """A tracker's snapshot as a report entry, with at most `keys_max` keys, each guaranteed
    to carry at least REPORT_KEY_SHARE_MIN_PPM of the shard's load. The totals are exact: a
    snapshot's rates are totals × 1000 / span."""
    assert 0 <= keys_max <= REPORT_KEYS_MAX
    records = round(load.records_per_second * load.span_ms / 1000)
    size_bytes = round(load.bytes_per_second * load.span_ms / 1000)
    total = size_bytes if load.bytes_bound else records
    heavy = tuple(
        key
        for key in load.top_keys[:keys_max]
        if _key_lower_bound(key, bytes_bound=load.bytes_bound) * PPM
        >= REPORT_KEY_SHARE_MIN_PPM * total
        and total > 0
    )
    return ReportedLoad(
        stream_uid=stream_uid,
        shard_index=shard_index,
        node_id=node_id,
        epoch=epoch,
        reported_ms=reported_ms,
        span_ms=load.span_ms,
        records=records,
        size_bytes=size_bytes,
        bytes_bound=load.bytes_bound,
        split_at_ppm=None
        if load.split_key is None
        else split_position_ppm(load.split_key, hash_key_start, hash_key_end),
        hot_key=load.hot_key,
        hot_key_share_ppm=round(load.hot_key_share * PPM),
        heavy_keys=ReportedLoad.pack_keys(heavy),
    )


def _key_lower_bound(key: KeyLoad, *, bytes_bound: bool) -> int:
    """What `key` surely carried in the binding dimension (its count minus its error)."""
    if bytes_bound:
        return key.size_bytes - key.size_bytes_error
    return key.records - key.records_error


def idle_report(
    *, stream_uid: StreamUid, shard_index: ShardIndex, node_id: NodeId, epoch: int, now_ms: int
) -> ReportedLoad:
    """The entry a leader sends once when a shard it reported turns idle (removes the entry)."""
    return ReportedLoad(
        stream_uid=stream_uid,
        shard_index=shard_index,
        node_id=node_id,
        epoch=epoch,
        reported_ms=now_ms,
        span_ms=RATE_SPAN_MS_MIN,
        records=0,
        size_bytes=0,
    )


def _streams_by_uid(image: MetadataImage) -> dict[StreamUid, StreamMeta]:
    return {stream.uid: stream for stream in image.streams.values()}


def _is_current(streams: dict[StreamUid, StreamMeta], entry: ReportedLoad, *, now_ms: int) -> bool:
    """The entry describes the shard as the image knows it (module docstring)."""
    stream = streams.get(entry.stream_uid)
    if stream is None or stream.is_gone(now_ms=now_ms):
        return False
    shard = stream.shard_by_index(entry.shard_index)
    return (
        shard is not None
        and shard.state is ShardState.OPEN
        and shard.leader == entry.node_id
        and shard.epoch == entry.epoch
    )


def apply_load_report(
    image: MetadataImage,
    *,
    node_id: NodeId,
    loads: tuple[ReportedLoad, ...],
    now_ms: int,
) -> tuple[CapacityTable, int]:
    """The capacity table after `node_id`'s report, and how many entries it accepted."""
    accepted = 0
    streams = _streams_by_uid(image)
    by_shard = {(e.stream_uid, e.shard_index): e for e in image.capacity.loads}
    for entry in loads:
        if entry.node_id != node_id or not _is_current(streams, entry, now_ms=now_ms):
            continue  # stale: the module docstring says why it is ignored
        accepted += 1
        key = (entry.stream_uid, entry.shard_index)
        if entry.records == 0:
            by_shard.pop(key, None)
        else:
            by_shard[key] = entry
    kept = tuple(
        by_shard[key]
        for key in sorted(by_shard)
        if _is_current(streams, by_shard[key], now_ms=now_ms)
    )
    seen = {r.node_id: r.reported_ms for r in image.capacity.reporters if r.node_id in image.nodes}
    if node_id in image.nodes:
        seen[node_id] = max(now_ms, seen.get(node_id, now_ms))  # a late command never rewinds
    reporters = tuple(ReporterSeen(node_id=n, reported_ms=seen[n]) for n in sorted(seen))
    assert len(reporters) <= len(image.nodes)
    return dataclasses.replace(image.capacity, loads=kept, reporters=reporters), accepted


def is_fresh(image: MetadataImage, entry: ReportedLoad, *, now_ms: int, stale_ms: int) -> bool:
    """Whether `entry` was confirmed (module docstring) within `stale_ms` of `now_ms`."""
    return now_ms - image.capacity.confirmed_ms(entry) <= stale_ms


def record_event(image: MetadataImage, stream: StreamMeta, event: ScalingEvent) -> CapacityTable:
    """The capacity table with `event` appended to `stream`'s log (a log of an earlier
    incarnation of the name is replaced), keeping the newest EVENTS_PER_STREAM_MAX; logs of
    streams no longer in the image are dropped."""
    logs = {
        log.stream_uid: log
        for log in image.capacity.scaling_logs
        if (current := image.streams.get(log.stream_name)) is not None
        and current.uid == log.stream_uid
    }
    previous = logs.get(stream.uid)
    events = (*(previous.events if previous is not None else ()), event)
    logs[stream.uid] = StreamScalingLog(
        stream_name=stream.name,
        stream_uid=stream.uid,
        events=events[-EVENTS_PER_STREAM_MAX:],
    )
    table = dataclasses.replace(
        image.capacity, scaling_logs=tuple(logs[uid] for uid in sorted(logs))
    )
    assert all(len(log.events) <= EVENTS_PER_STREAM_MAX for log in table.scaling_logs)
    return table


def without_stream(table: CapacityTable, stream_uid: StreamUid) -> CapacityTable:
    """The table without anything of a forgotten stream incarnation: its scaling log and its
    load entries (otherwise they would wait for the next event or report of some stream, and
    a cluster that creates and forgets streams would keep their logs)."""
    logs = tuple(log for log in table.scaling_logs if log.stream_uid != stream_uid)
    loads = tuple(entry for entry in table.loads if entry.stream_uid != stream_uid)
    if len(logs) == len(table.scaling_logs) and len(loads) == len(table.loads):
        return table
    return dataclasses.replace(table, scaling_logs=logs, loads=loads)


def scaling_events(image: MetadataImage, stream: StreamMeta) -> tuple[ScalingEvent, ...]:
    """`stream`'s events, oldest first."""
    for log in image.capacity.scaling_logs:
        if log.stream_uid == stream.uid:
            return log.events
    return ()


def current_reports(
    image: MetadataImage, stream: StreamMeta, *, now_ms: int
) -> dict[ShardIndex, ReportedLoad]:
    """The current entries (module docstring) of `stream`'s open shards, whatever their age."""
    streams = {stream.uid: stream}
    return {
        entry.shard_index: entry
        for entry in image.capacity.loads
        if entry.stream_uid == stream.uid and _is_current(streams, entry, now_ms=now_ms)
    }


def loads_for_stream(
    image: MetadataImage, stream: StreamMeta, *, now_ms: int, stale_ms: int
) -> dict[ShardIndex, ShardLoad]:
    """What the autoscaler should believe about each open shard of `stream`: its current
    report if confirmed within `stale_ms`; idle when it has no current report, its leader's
    node is ACTIVE (that node reports every shard with traffic, so silence means none) and has
    led it for `stale_ms` at least (a leader that just took over has not reported yet: its
    silence says nothing, and the old leader's report is not current); otherwise nothing,
    which `autoscaling.decide` takes as unknown (no leader, a fenced or draining leader, a new
    leader, or a report gone stale because its node stopped reporting)."""
    reports = current_reports(image, stream, now_ms=now_ms)
    loads: dict[ShardIndex, ShardLoad] = {}
    for shard in stream.open_shards():
        report = reports.get(shard.index)
        if report is not None:
            if is_fresh(image, report, now_ms=now_ms, stale_ms=stale_ms):
                loads[shard.index] = report.to_shard_load(
                    hash_key_start=shard.hash_key_start, hash_key_end=shard.hash_key_end
                )
            continue
        if shard.leader is None or shard.state is not ShardState.OPEN:
            continue
        if now_ms - shard.leader_since_ms < stale_ms:
            continue  # a new leader: unknown until it has had time to report
        node = image.nodes.get(shard.leader)
        if node is not None and node.state is NodeState.ACTIVE:
            loads[shard.index] = IDLE_LOAD
    return loads


# --- Applying the commands (called by `state_machine._dispatch`) ------------------------------


def apply_report(image: MetadataImage, command: ReportShardLoads) -> tuple[MetadataImage, object]:
    """ReportShardLoads: result is the number of entries accepted."""
    table, accepted = apply_load_report(
        image, node_id=command.node_id, loads=command.loads, now_ms=command.now_ms
    )
    return dataclasses.replace(image, capacity=table), accepted


def apply_event(image: MetadataImage, command: RecordScalingEvent) -> tuple[MetadataImage, object]:
    """RecordScalingEvent on a live stream incarnation; ResourceNotFound otherwise."""
    stream = image.stream_by_uid(command.stream_uid)
    if stream is None or stream.is_gone(now_ms=command.now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.stream_incarnation_not_found(stream_uid=command.stream_uid),
        )
    return dataclasses.replace(image, capacity=record_event(image, stream, command.event)), None


def check_automatic_reshard(stream: StreamMeta, command: BeginReshard) -> None:
    """An automatic reshard only on an ON_DEMAND stream (the mode may have changed since the
    autoscaler decided); a client's only on a PROVISIONED one (AWS's rule)."""
    automatic = command.automatic_reason is not None
    if automatic and stream.mode is not StreamMode.ON_DEMAND:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.autoscale_dropped(name=stream.name),
        )


def log_automatic_reshard(
    image: MetadataImage, command: BeginReshard, sealed: tuple[ShardIndex, ...]
) -> MetadataImage:
    """After an automatic BeginReshard was accepted: its event in the stream's log."""
    if command.automatic_reason is None:
        return image
    stream = image.streams[StreamName(command.name)]
    kind = ScalingEventKind.SPLIT if command.kind is ReshardKind.SPLIT else ScalingEventKind.MERGE
    event = ScalingEvent(
        time_ms=command.now_ms,
        kind=kind,
        shard_ids=tuple(f"shardId-{index:012d}" for index in sealed),
        reason=command.automatic_reason,
    )
    return dataclasses.replace(image, capacity=record_event(image, stream, event))
