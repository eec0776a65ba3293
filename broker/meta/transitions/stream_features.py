"""The stream settings of the operations AWS added since 2023: resource policies (on a stream
or one of its consumers), server-side encryption settings, warm throughput and the record
distribution strategy of on-demand streams.

Every precondition is checked here, against the image at apply time, with AWS's texts from
`error_messages`; the service only turns requests into commands.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages, limits
from broker.consumers import registry
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    DeleteResourcePolicy,
    PutResourcePolicy,
    RewrapStreamDataKeys,
    SetStreamEncryption,
    UpdateRecordDistribution,
    UpdateStreamWarmThroughput,
)
from broker.meta.image import (
    ConsumerPolicy,
    MetadataImage,
    RecordDistribution,
    StreamDataKey,
    StreamMeta,
    StreamMode,
    StreamStatus,
)
from broker.meta.transitions.common import (
    account_of,
    live_stream,
    require_active,
    with_stream,
)
from broker.streams.account_settings import CommitmentStatus
from broker.streams.namespaces import name_of
from broker.types import StreamName


def _consumer_of(
    image: MetadataImage, meta: StreamMeta, arn: str, *, now_ms: int
) -> registry.StreamConsumer | None:
    """The live consumer `arn` names, or None when `arn` is the stream's own ARN."""
    if registry.parse_consumer_arn(arn) is None:
        return None
    consumer = image.consumers.by_arn(arn, now_ms=now_ms)
    if consumer is None or consumer.stream_uid != meta.uid:
        raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.consumer_not_found(arn))
    return consumer


def put_resource_policy(
    image: MetadataImage, command: PutResourcePolicy
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.stream_name, now_ms=now_ms)
    consumer = _consumer_of(image, meta, command.resource_arn, now_ms=now_ms)
    if consumer is None:
        changed = dataclasses.replace(meta, resource_policy=command.policy)
    else:
        others = tuple(p for p in meta.consumer_policies if p.consumer_arn != consumer.arn)
        entry = ConsumerPolicy(
            consumer_arn=consumer.arn,
            consumer_created_ms=consumer.created_ms,
            policy=command.policy,
        )
        changed = dataclasses.replace(meta, consumer_policies=(*others, entry))
    return with_stream(image, changed), None


def delete_resource_policy(
    image: MetadataImage, command: DeleteResourcePolicy
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.stream_name, now_ms=now_ms)
    consumer = _consumer_of(image, meta, command.resource_arn, now_ms=now_ms)
    if consumer is None:
        if meta.resource_policy is None:
            raise _no_policy(command.resource_arn)
        changed = dataclasses.replace(meta, resource_policy=None)
    else:
        if meta.consumer_policy(consumer.arn, created_ms=consumer.created_ms) is None:
            raise _no_policy(command.resource_arn)
        kept = tuple(p for p in meta.consumer_policies if p.consumer_arn != consumer.arn)
        changed = dataclasses.replace(meta, consumer_policies=kept)
    return with_stream(image, changed), None


def _no_policy(arn: str) -> ShoalError:
    return ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.resource_policy_not_found(arn))


def set_stream_encryption(
    image: MetadataImage, command: SetStreamEncryption
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    require_active(image, meta, now_ms=now_ms)
    data_keys = meta.data_keys
    if command.data_key is not None:
        # Numbered here, at apply time, so two concurrent starts cannot share a version.
        version = data_keys[-1].version + 1 if data_keys else 1
        data_keys = (
            *data_keys,
            StreamDataKey(
                version=version,
                wrapped=command.data_key.wrapped,
                wrapping=command.data_key.wrapping,
                created_ms=now_ms,
            ),
        )
    changed = dataclasses.replace(
        meta,
        encryption_type=command.encryption_type,
        key_id=command.key_id,
        data_keys=data_keys,
        transient_status=StreamStatus.UPDATING,
        status_until_ms=now_ms + command.updating_ms,
    )
    return with_stream(image, changed), changed


def rewrap_data_keys(
    image: MetadataImage, command: RewrapStreamDataKeys
) -> tuple[MetadataImage, object]:
    """Replaces the wrapped form of data keys (a master-key rotation); the keys themselves,
    their versions and the stream's state do not change, so it needs no ACTIVE stream."""
    meta = image.streams.get(StreamName(command.name))
    if meta is None or meta.uid != command.stream_uid:
        return image, None  # the stream went away meanwhile: nothing left to re-wrap
    by_version = {key.version: key for key in command.rewrapped}
    data_keys = tuple(
        dataclasses.replace(
            key,
            wrapped=by_version[key.version].wrapped,
            wrapping=by_version[key.version].wrapping,
        )
        if key.version in by_version
        else key
        for key in meta.data_keys
    )
    if data_keys == meta.data_keys:
        return image, None
    return with_stream(image, dataclasses.replace(meta, data_keys=data_keys)), None


def update_warm_throughput(
    image: MetadataImage, command: UpdateStreamWarmThroughput
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    if meta.mode is not StreamMode.ON_DEMAND:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.warm_throughput_needs_on_demand(
                name_of(meta.name), account_of(image, meta.name)
            ),
        )
    commitment = image.account.billing_commitment.status(now_ms=now_ms)
    if commitment is CommitmentStatus.DISABLED:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, error_messages.WARM_THROUGHPUT_NEEDS_COMMITMENT
        )
    if command.warm_throughput_mibps > limits.warm_throughput_mibps_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.warm_throughput_too_high(
                command.warm_throughput_mibps, limits.warm_throughput_mibps_max
            ),
        )
    require_active(image, meta, now_ms=now_ms)
    changed = dataclasses.replace(
        meta,
        previous_warm_throughput_mibps=meta.warm_throughput_mibps,
        warm_throughput_mibps=command.warm_throughput_mibps,
        transient_status=StreamStatus.UPDATING,
        status_until_ms=now_ms + command.updating_ms,
    )
    return with_stream(image, changed), changed


def update_record_distribution(
    image: MetadataImage, command: UpdateRecordDistribution
) -> tuple[MetadataImage, object]:
    now_ms = command.now_ms
    meta = live_stream(image, command.name, now_ms=now_ms)
    if meta.mode is not StreamMode.ON_DEMAND and command.strategy is RecordDistribution.AUTO:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.distribution_needs_on_demand(
                name_of(meta.name), account_of(image, meta.name)
            ),
        )
    if meta.record_distribution is command.strategy:
        return image, meta
    require_active(image, meta, now_ms=now_ms)
    # Takes effect at once, without UPDATING (AWS: "without downtime").
    changed = dataclasses.replace(meta, record_distribution=command.strategy)
    return with_stream(image, changed), changed
