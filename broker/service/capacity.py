"""The hot-shard, hot-key and scaling-event views behind CapacityService (and `shoal hot-*`).

Read-only, from this node's metadata image: the shard loads the leaders reported
(`meta.capacity`) and each stream's scaling log. No call reaches another node, so the figures
are as fresh as this node's image plus one report interval. Pure functions over an image:
`gateway/capacity_service.py` turns their results into protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta import capacity
from broker.meta.capacity_table import ReportedLoad, ScalingEvent
from broker.meta.image import MetadataImage, ShardMeta, StreamMeta
from broker.streams.hot_keys import KeyLoad

LIMIT_DEFAULT = limits.capacity_list_limit_default
LIMIT_MAX = limits.capacity_list_limit_max


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardLoadView:
    shard: ShardMeta
    report: ReportedLoad | None  # None: no current report (idle, or unknown)

    @property
    def records_per_second(self) -> float:
        return 0.0 if self.report is None else self.report.records_per_second

    @property
    def bytes_per_second(self) -> float:
        return 0.0 if self.report is None else self.report.bytes_per_second

    @property
    def utilization(self) -> float:
        return utilization(self.records_per_second, self.bytes_per_second)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLoadView:
    shard_id: str
    key: KeyLoad
    span_ms: int
    shard_share: float

    @property
    def records_per_second(self) -> float:
        return self.key.records * 1000 / self.span_ms

    @property
    def bytes_per_second(self) -> float:
        return self.key.size_bytes * 1000 / self.span_ms

    @property
    def records_per_second_error(self) -> float:
        return self.key.records_error * 1000 / self.span_ms

    @property
    def bytes_per_second_error(self) -> float:
        return self.key.size_bytes_error * 1000 / self.span_ms


def utilization(records_per_second: float, bytes_per_second: float) -> float:
    """The larger fraction of one shard's write capacity (AWS's 1 MiB/s and 1,000 records/s)."""
    return max(
        records_per_second / limits.shard_write_records_per_second_default,
        bytes_per_second / limits.shard_write_bytes_per_second_default,
    )


def check_limit(limit: int | None) -> int:
    if limit is None:
        return LIMIT_DEFAULT
    if not 1 <= limit <= LIMIT_MAX:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.capacity_limit_out_of_range(limit_max=LIMIT_MAX, limit=limit),
        )
    return limit


def live_stream(image: MetadataImage, name: str, *, now_ms: int, account_id: str) -> StreamMeta:
    stream = image.stream(name, now_ms=now_ms)
    if stream is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.stream_not_found(name=name, account_id=account_id),
        )
    return stream


def hot_shards(
    image: MetadataImage, stream: StreamMeta, *, now_ms: int, stale_ms: int, limit: int
) -> list[ShardLoadView]:
    """The open shards, busiest first (ties: by shard index); stale reports count as none."""
    reports = capacity.current_reports(image, stream, now_ms=now_ms)
    views = []
    for shard in stream.open_shards():
        report = reports.get(shard.index)
        if report is not None and not capacity.is_fresh(
            image, report, now_ms=now_ms, stale_ms=stale_ms
        ):
            report = None
        views.append(ShardLoadView(shard=shard, report=report))
    views.sort(key=lambda v: (-v.utilization, v.shard.index))
    return views[:limit]


def hot_keys(
    image: MetadataImage,
    stream: StreamMeta,
    *,
    shard_id: str | None,
    now_ms: int,
    stale_ms: int,
    limit: int,
) -> list[KeyLoadView]:
    """The busiest partition keys of the stream (or of one shard), by the larger fraction of
    one shard's capacity each uses. A key lives in one shard, so shards' keys never merge."""
    shards = hot_shards(image, stream, now_ms=now_ms, stale_ms=stale_ms, limit=LIMIT_MAX * 10)
    if shard_id is not None:
        shards = [v for v in shards if v.shard.shard_id == shard_id]
        if not shards:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.open_shard_not_found(shard_id=shard_id, name=stream.name),
            )
    keys: list[KeyLoadView] = []
    for view in shards:
        report = view.report
        if report is None:
            continue
        total = report.size_bytes if report.bytes_bound else report.records
        for key in report.top_keys:
            mine = key.size_bytes if report.bytes_bound else key.records
            keys.append(
                KeyLoadView(
                    shard_id=view.shard.shard_id,
                    key=key,
                    span_ms=report.span_ms,
                    shard_share=min(1.0, mine / total) if total > 0 else 0.0,
                )
            )
    keys.sort(
        key=lambda k: (
            -utilization(k.records_per_second, k.bytes_per_second),
            k.key.partition_key,
        )
    )
    return keys[:limit]


def scaling_events(
    image: MetadataImage, stream: StreamMeta, *, limit: int | None
) -> tuple[ScalingEvent, ...]:
    """The stream's scaling log, oldest first; the newest `limit` when set."""
    events = capacity.scaling_events(image, stream)
    if limit is not None:
        check_limit(limit)
        events = events[-limit:]
    return events
