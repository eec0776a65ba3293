"""A live stream's settings: retention period, tags, enhanced monitoring, capacity mode and
maximum record size. CreateStream validates its initial settings with the same checks.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    AddTags,
    ChangeRetention,
    RemoveTags,
    SetEnhancedMonitoring,
    UpdateMaxRecordSize,
    UpdateStreamMode,
)
from broker.meta.image import MetadataImage, RecordDistribution, StreamMode, StreamStatus
from broker.meta.transitions import delivery_streams, queues
from broker.meta.transitions.account_limits import check_on_demand_limit
from broker.meta.transitions.common import (
    account_of,
    live_stream,
    require_active,
    with_stream,
    within_last_day,
)
from broker.streams.namespaces import name_of


def check_retention_bounds(hours: int) -> None:
    if hours < limits.retention_hours_min:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.retention_too_short(limits.retention_hours_min, hours),
        )
    if hours > limits.retention_hours_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.retention_too_long(limits.retention_hours_max, hours),
        )


def check_record_size(kib: int) -> None:
    if not limits.record_size_kib_min <= kib <= limits.record_size_kib_max:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.validation_errors(
                [
                    error_messages.constraint_violation(
                        f"'{kib}'",
                        "maxRecordSizeInKiB",
                        f"Member must have value between {limits.record_size_kib_min} "
                        f"and {limits.record_size_kib_max}",
                    )
                ]
            ),
        )


def merged_tags(
    image: MetadataImage, name: str, current: dict[str, str], added: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    merged = dict(current)
    merged.update(added)  # a key given twice keeps its last value, as a JSON object would
    if len(merged) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.too_many_stream_tags(
                name_of(name), account_of(image, name), limits.tags_per_stream_max
            ),
        )
    return tuple(sorted(merged.items()))


def change_retention(
    image: MetadataImage, command: ChangeRetention
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    check_retention_bounds(command.retention_hours)
    requested, existing = command.retention_hours, meta.retention_hours
    if command.increase and requested < existing:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.retention_not_an_increase(requested, command.name, existing),
        )
    if not command.increase and requested > existing:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.retention_not_a_decrease(requested, command.name, existing),
        )
    require_active(image, meta, now_ms=now_ms)
    changed = dataclasses.replace(meta, retention_hours=requested)
    return with_stream(image, changed), changed


def add_tags(image: MetadataImage, command: AddTags) -> tuple[MetadataImage, object]:
    meta = live_stream(image, command.name, now_ms=command.now_ms)
    tags = merged_tags(image, command.name, dict(meta.tags), command.tags)
    changed = dataclasses.replace(meta, tags=tags)
    return with_stream(image, changed), changed


def remove_tags(image: MetadataImage, command: RemoveTags) -> tuple[MetadataImage, object]:
    meta = live_stream(image, command.name, now_ms=command.now_ms)
    removed = frozenset(command.keys)  # absent keys are ignored, as AWS does
    changed = dataclasses.replace(
        meta, tags=tuple((key, value) for key, value in meta.tags if key not in removed)
    )
    return with_stream(image, changed), changed


def set_enhanced_monitoring(
    image: MetadataImage, command: SetEnhancedMonitoring
) -> tuple[MetadataImage, object]:
    meta = live_stream(image, command.name, now_ms=command.now_ms)
    current = meta.enhanced_metrics
    if command.enable:
        desired = tuple(sorted(set(current) | set(command.metrics)))
    else:
        desired = tuple(sorted(set(current) - set(command.metrics)))
    changed = dataclasses.replace(meta, enhanced_metrics=desired)
    return with_stream(image, changed), (current, desired)


def update_stream_mode(
    image: MetadataImage, command: UpdateStreamMode
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    if meta.mode is command.mode:
        # Nothing to change: succeed without using one of the two daily switches, so that a
        # retry after an unknown outcome does not fail or count twice.
        return image, meta
    require_active(image, meta, now_ms=now_ms)
    recent = within_last_day(meta.mode_updates_ms, now_ms=now_ms)
    if len(recent) >= limits.update_stream_mode_per_day_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.stream_mode_updates_per_day(
                name_of(meta.name),
                account_of(image, meta.name),
                len(recent),
                limits.update_stream_mode_per_day_max,
            ),
        )
    if command.mode is StreamMode.PROVISIONED:
        queues.refuse_if_stream_has_queues(image, meta.uid, meta.name)
        delivery_streams.refuse_if_stream_has_channels(image, meta.name, name_of(meta.name))
    if command.mode is StreamMode.ON_DEMAND:
        check_on_demand_limit(
            image, now_ms=now_ms, arn=meta.arn, limit=command.on_demand_streams_max
        )
    changed = dataclasses.replace(
        meta,
        mode=command.mode,
        transient_status=StreamStatus.UPDATING,
        status_until_ms=now_ms + command.updating_ms,
        mode_updates_ms=(*recent, now_ms),
    )
    if command.mode is StreamMode.PROVISIONED:
        # Warm throughput and AUTO distribution exist for on-demand streams only.
        changed = dataclasses.replace(
            changed,
            record_distribution=RecordDistribution.USER_PARTITION_KEY,
            warm_throughput_mibps=None,
            previous_warm_throughput_mibps=None,
        )
    return with_stream(image, changed), changed


def update_max_record_size(
    image: MetadataImage, command: UpdateMaxRecordSize
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    check_record_size(command.max_record_size_kib)
    meta = live_stream(image, command.name, now_ms=now_ms)
    require_active(image, meta, now_ms=now_ms)
    changed = dataclasses.replace(meta, max_record_size_kib=command.max_record_size_kib)
    return with_stream(image, changed), changed
