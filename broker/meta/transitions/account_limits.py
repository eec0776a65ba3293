"""The account's limits: the open-shard and on-demand stream limits checked by CreateStream,
UpdateStreamMode and BeginReshard, and the commands that change limits at runtime
(UpdateStreamLimits, UpdateAccountSettings, UpdateAccountLimits; issue 6).

As on AWS, the limits are per account and per region: each namespace (the account and region
a stream's ARN names, `streams/namespaces.py`) has its own budget, counted over its own
streams only. The limit's value is the same for every namespace: a runtime limit in the image
wins over the proposer's configured one (`AccountSettings.effective_*`), so every replica
checks against the same number.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import UpdateAccountLimits, UpdateAccountSettings, UpdateStreamLimits
from broker.meta.image import MetadataImage, ReshardKind, StreamMeta, StreamMode
from broker.meta.transitions.common import live_stream, with_stream
from broker.streams import account_settings, throttling
from broker.streams.internal_names import counts_against_account
from broker.streams.namespaces import namespace_of_arn

_LIMITS_PAGE = (
    "Refer to the AWS Service Limits page "
    "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) "
    "for current limits and how to request higher limits."
)


def _live_streams(image: MetadataImage, *, now_ms: int, arn: str) -> list[StreamMeta]:
    """The live streams of the namespace of the stream whose ARN is `arn` that the account's
    limits count (not the audit trail's)."""
    namespace = namespace_of_arn(arn)
    return [
        meta
        for key, meta in image.streams.items()
        if not meta.is_gone(now_ms=now_ms)
        and namespace_of_arn(meta.arn) == namespace
        and counts_against_account(key, metadata_format=image.metadata_format)
    ]


def open_shard_count(image: MetadataImage, *, now_ms: int, arn: str) -> int:
    """Open shards of `arn`'s namespace, counting each reshard in flight as completed when it
    adds shards: a split's parent is SEALING (open) and its children do not exist yet, so two
    streams splitting at once would otherwise both fit under the limit and together pass it."""
    return sum(
        len(meta.open_shards()) + _reshard_growth(meta)
        for meta in _live_streams(image, now_ms=now_ms, arn=arn)
    )


def _reshard_growth(meta: StreamMeta) -> int:
    """The open shards `meta`'s reshard in flight will add (never negative: a merge frees
    room only once it completed)."""
    request = meta.reshard
    if request is None:
        return 0
    if request.kind is ReshardKind.SPLIT:
        return 1
    if request.kind is ReshardKind.UNIFORM_SCALING:
        assert request.target_shard_count is not None
        return max(0, request.target_shard_count - len(meta.open_shards()))
    return 0


def _on_demand_count(image: MetadataImage, *, now_ms: int, arn: str) -> int:
    return sum(
        1
        for meta in _live_streams(image, now_ms=now_ms, arn=arn)
        if meta.mode is StreamMode.ON_DEMAND
    )


def check_shard_limit(
    image: MetadataImage,
    *,
    now_ms: int,
    arn: str,
    additional: int,
    limit: int,
    current: int | None = None,
) -> None:
    """LimitExceededException when `additional` more open shards would pass the limit of the
    account and region of the stream `arn`.

    `current` overrides the namespace's open-shard count (UpdateShardCount replaces a stream's
    shards rather than adding to them)."""
    region_name, account = namespace_of_arn(arn)
    count = open_shard_count(image, now_ms=now_ms, arn=arn) if current is None else current
    limit = image.account.effective_shard_limit(limit)  # a runtime limit wins (issue 6)
    if additional > 0 and count + additional > limit:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.shard_limit_exceeded(
                account_id=account,
                region=region_name,
                count=count,
                limit=limit,
                additional=additional,
                limits_page=_LIMITS_PAGE,
            ),
        )


def check_on_demand_limit(image: MetadataImage, *, now_ms: int, arn: str, limit: int) -> None:
    """LimitExceededException when one more on-demand stream would pass the limit of the
    account and region of the stream `arn`."""
    region_name, account = namespace_of_arn(arn)
    limit = image.account.effective_on_demand_stream_limit(limit)
    count = _on_demand_count(image, now_ms=now_ms, arn=arn)
    if count + 1 > limit:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.on_demand_limit_exceeded(
                account_id=account,
                region=region_name,
                count=count,
                limit=limit,
                limits_page=_LIMITS_PAGE,
            ),
        )


def update_stream_limits(
    image: MetadataImage, command: UpdateStreamLimits
) -> tuple[MetadataImage, object]:
    meta = live_stream(image, command.name, now_ms=command.now_ms)
    merged = throttling.merge_overrides(
        meta.throughput_limits, command.changes, reset=command.reset
    )
    if merged == meta.throughput_limits:
        return image, meta
    changed = dataclasses.replace(meta, throughput_limits=merged)
    return with_stream(image, changed), changed


def update_account(
    image: MetadataImage, command: UpdateAccountSettings | UpdateAccountLimits
) -> tuple[MetadataImage, object]:
    current = image.account
    if isinstance(command, UpdateAccountSettings):
        change = (
            account_settings.enable_commitment
            if command.commitment_enabled
            else account_settings.disable_commitment
        )
        commitment = change(current.billing_commitment, now_ms=command.now_ms)
        updated = dataclasses.replace(current, billing_commitment=commitment)
    else:
        updated = account_settings.update_account_limits(
            current,
            shard_limit=command.shard_limit,
            on_demand_stream_limit=command.on_demand_stream_limit,
            reset=command.reset,
        )
    if updated == current:
        return image, current
    return dataclasses.replace(image, account=updated), updated
