"""Account settings and limits: DescribeAccountSettings / UpdateAccountSettings (Kinesis), and
the native limits operations (per-stream throughput limits, account limits at runtime) that
`gateway/limits_service.py` serves.

Every change is one metadata command (`UpdateAccountSettings`, `UpdateAccountLimits`,
`UpdateStreamLimits`) whose rules live in `streams/account_settings.py` and
`streams/throttling.py`; this module validates the request, proposes, and shapes the answer.
Requests and answers are AWS-shaped dicts for the Kinesis operations and small frozen views
for the native ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.image import MetadataImage, StreamMeta, StreamMode
from broker.service.context import ServiceContext
from broker.streams import throttling
from broker.streams.account_settings import (
    ACCOUNT_LIMIT_NAMES,
    AccountSettings,
    BillingCommitment,
    CommitmentStatus,
)
from broker.streams.internal_names import counts_against_account
from broker.streams.namespaces import namespace_of_arn
from broker.streams.throttling import RATE_NAMES, StreamLimits, ThroughputLimits
from broker.timestamps import datetime_from_ms

Request = Mapping[str, Any]
Response = dict[str, Any]


# --- Kinesis: the minimum throughput billing commitment ---------------------------------------


def commitment_shape(commitment: BillingCommitment, *, now_ms: int) -> Response:
    """MinimumThroughputBillingCommitmentOutput: the status at `now_ms` and the timestamps of
    the latest commitment (none when it was never enabled)."""
    shape: Response = {"Status": commitment.status(now_ms=now_ms).value}
    if commitment.started_ms is not None:
        shape["StartedAt"] = datetime_from_ms(commitment.started_ms)
    if commitment.earliest_end_ms is not None:
        shape["EarliestAllowedEndAt"] = datetime_from_ms(commitment.earliest_end_ms)
    if commitment.ended_ms is not None:
        shape["EndedAt"] = datetime_from_ms(commitment.ended_ms)
    return shape


async def describe_account_settings(ctx: ServiceContext, request: Request) -> Response:
    commitment = ctx.image().account.billing_commitment
    return {"MinimumThroughputBillingCommitment": commitment_shape(commitment, now_ms=ctx.now_ms())}


async def update_account_settings(ctx: ServiceContext, request: Request) -> Response:
    status = request["MinimumThroughputBillingCommitment"]["Status"]
    if status not in (CommitmentStatus.ENABLED.value, CommitmentStatus.DISABLED.value):
        raise ShoalError(  # the model's enum says the same; kept for callers that skip it
            ErrorCode.VALIDATION,
            error_messages.commitment_status_not_in_enum(status=status),
        )
    now_ms = ctx.now_ms()
    result = await ctx.metadata.propose(
        commands.UpdateAccountSettings(
            now_ms=now_ms, commitment_enabled=status == CommitmentStatus.ENABLED.value
        )
    )
    assert isinstance(result, AccountSettings)
    return {
        "MinimumThroughputBillingCommitment": commitment_shape(
            result.billing_commitment, now_ms=now_ms
        )
    }


# --- Account limits (DescribeLimits and the native service) -----------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountLimitsView:
    shard_limit: int
    on_demand_stream_limit: int
    shard_limit_override: int | None
    on_demand_stream_limit_override: int | None
    open_shard_count: int
    on_demand_stream_count: int


def account_limits_view(ctx: ServiceContext, image: MetadataImage) -> AccountLimitsView:
    """The limits in force on this node (a runtime value over its configuration) and the
    usage of the caller's account in the region it addressed (each namespace has its own
    budget, as the state machine counts it: `meta/transitions/account_limits.py`)."""
    now_ms = ctx.now_ms()
    namespace = ctx.namespace()
    own = (namespace.region, namespace.account_id)
    live = [
        meta
        for key, meta in image.streams.items()
        if not meta.is_gone(now_ms=now_ms)
        and namespace_of_arn(meta.arn) == own
        and counts_against_account(key, metadata_format=image.metadata_format)
    ]
    account = image.account
    return AccountLimitsView(
        shard_limit=account.effective_shard_limit(ctx.config.shard_count_per_account_max),
        on_demand_stream_limit=account.effective_on_demand_stream_limit(
            ctx.config.on_demand_streams_max
        ),
        shard_limit_override=account.shard_limit,
        on_demand_stream_limit_override=account.on_demand_stream_limit,
        open_shard_count=sum(len(meta.open_shards()) for meta in live),
        on_demand_stream_count=sum(1 for meta in live if meta.mode is StreamMode.ON_DEMAND),
    )


async def describe_limits(ctx: ServiceContext, request: Request) -> Response:
    """Kinesis DescribeLimits."""
    view = account_limits_view(ctx, ctx.image())
    return {
        "ShardLimit": view.shard_limit,
        "OpenShardCount": view.open_shard_count,
        "OnDemandStreamCount": view.on_demand_stream_count,
        "OnDemandStreamCountLimit": view.on_demand_stream_limit,
    }


async def update_account_limits(
    ctx: ServiceContext,
    *,
    shard_limit: int | None,
    on_demand_stream_limit: int | None,
    reset: Sequence[str],
) -> AccountLimitsView:
    """Sets account limits for the cluster. A limit below the current usage is accepted (as
    when AWS lowers a quota): it refuses new shards or streams until usage drops below it."""
    _check_names(reset, ACCOUNT_LIMIT_NAMES, what="account limit")
    for name, value in (
        ("shard_limit", shard_limit),
        ("on_demand_stream_limit", on_demand_stream_limit),
    ):
        if value is None:
            continue
        if not 0 <= value <= limits.account_limit_max:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.account_limit_out_of_range(
                    name=name, account_limit_max=limits.account_limit_max, value=value
                ),
            )
        if name in reset:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, error_messages.limit_set_and_reset(name=name)
            )
    await ctx.metadata.propose(
        commands.UpdateAccountLimits(
            now_ms=ctx.now_ms(),
            shard_limit=shard_limit,
            on_demand_stream_limit=on_demand_stream_limit,
            reset=tuple(sorted(set(reset))),
        )
    )
    return account_limits_view(ctx, ctx.image())


# --- Per-stream throughput limits (native) ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimitsView:
    stream_name: str
    overrides: StreamLimits
    effective: ThroughputLimits


def cluster_default_limits(ctx: ServiceContext) -> ThroughputLimits:
    return ctx.throttles.limits


def stream_limits_view(ctx: ServiceContext, stream: StreamMeta) -> StreamLimitsView:
    return StreamLimitsView(
        stream_name=stream.display_name,
        overrides=stream.throughput_limits,
        effective=throttling.resolve(cluster_default_limits(ctx), stream.throughput_limits),
    )


async def describe_stream_limits(ctx: ServiceContext, stream_name: str) -> StreamLimitsView:
    return stream_limits_view(ctx, ctx.stream_for({"StreamName": stream_name}))


async def update_stream_limits(
    ctx: ServiceContext, stream_name: str, rates: Mapping[str, int], reset: Sequence[str]
) -> StreamLimitsView:
    """Sets the given per-shard rates of a stream (0: unlimited) and returns the `reset` ones
    to the cluster default; enforced by each shard's leader from its next request."""
    _check_names(list(rates), RATE_NAMES, what="rate")
    _check_names(reset, RATE_NAMES, what="rate")
    for name, value in rates.items():
        if not 0 <= value <= limits.shard_rate_per_second_max:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.shard_rate_out_of_range(
                    name=name,
                    shard_rate_per_second_max=limits.shard_rate_per_second_max,
                    value=value,
                ),
            )
        if name in reset:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, error_messages.limit_set_and_reset(name=name)
            )
    result = await ctx.metadata.propose(
        commands.UpdateStreamLimits(
            now_ms=ctx.now_ms(),
            name=ctx.stream_key(stream_name),  # in the caller's namespace
            changes=StreamLimits(**rates),
            reset=tuple(sorted(set(reset))),
        )
    )
    assert isinstance(result, StreamMeta)
    return stream_limits_view(ctx, result)


def _check_names(names: Sequence[str], known: tuple[str, ...], *, what: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.unknown_names(
                what=what, unknown=", ".join(unknown), known=", ".join(known)
            ),
        )
