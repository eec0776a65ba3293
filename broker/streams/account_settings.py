"""Account-level settings: the minimum throughput billing commitment and the account limits an
operator raised or lowered at runtime. Pure value types and rules; the table lives in
`MetadataImage.account` and changes only through the UpdateAccountSettings and
UpdateAccountLimits metadata commands, which apply the functions here.

The billing commitment follows AWS's documented rules (botocore's
MinimumThroughputBillingCommitmentInput and the UpdateAccountSettings page):
- enabling starts a commitment that cannot end before 24 hours (`EarliestAllowedEndAt`);
- disabling before then schedules the end for that moment, and the status reads
  ENABLED_UNTIL_EARLIEST_ALLOWED_END until it passes, DISABLED afterwards;
- enabling again before a scheduled end cancels it (the commitment continues unchanged);
- enabling an enabled commitment or disabling a disabled one changes nothing.
Shoal bills nothing: the setting is kept, reported and replicated so that tools which manage
it (Terraform's aws_kinesis_account_settings, Pulumi) work against a cluster.

Statuses are views over an explicit `now_ms` (the scheduled end passes without a command).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from broker import limits


class CommitmentStatus(enum.Enum):
    """MinimumThroughputBillingCommitmentOutputStatus."""

    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    ENABLED_UNTIL_EARLIEST_ALLOWED_END = "ENABLED_UNTIL_EARLIEST_ALLOWED_END"


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingCommitment:
    """The account's latest commitment. `started_ms` None: never enabled. `ended_ms` set: the
    commitment ended (or is scheduled to end) then."""

    started_ms: int | None = None
    earliest_end_ms: int | None = None
    ended_ms: int | None = None

    def __post_init__(self) -> None:
        if self.started_ms is None:
            assert self.earliest_end_ms is None
            assert self.ended_ms is None
        else:
            assert self.earliest_end_ms is not None
            assert self.earliest_end_ms >= self.started_ms
        if self.ended_ms is not None:
            assert self.earliest_end_ms is not None
            assert self.ended_ms >= self.earliest_end_ms

    def status(self, *, now_ms: int) -> CommitmentStatus:
        if self.started_ms is None:
            return CommitmentStatus.DISABLED
        if self.ended_ms is None:
            return CommitmentStatus.ENABLED
        if now_ms < self.ended_ms:
            return CommitmentStatus.ENABLED_UNTIL_EARLIEST_ALLOWED_END
        return CommitmentStatus.DISABLED


def enable_commitment(current: BillingCommitment, *, now_ms: int) -> BillingCommitment:
    """ENABLED requested: start a commitment, cancel a scheduled end, or keep one running."""
    match current.status(now_ms=now_ms):
        case CommitmentStatus.ENABLED:
            return current
        case CommitmentStatus.ENABLED_UNTIL_EARLIEST_ALLOWED_END:
            return dataclasses.replace(current, ended_ms=None)
        case CommitmentStatus.DISABLED:
            return BillingCommitment(
                started_ms=now_ms,
                earliest_end_ms=now_ms + limits.billing_commitment_ms_min,
            )


def disable_commitment(current: BillingCommitment, *, now_ms: int) -> BillingCommitment:
    """DISABLED requested: end now, or at the earliest allowed end when that is later."""
    if current.status(now_ms=now_ms) is not CommitmentStatus.ENABLED:
        return current  # disabled, or already scheduled to end: nothing to change
    assert current.earliest_end_ms is not None
    return dataclasses.replace(current, ended_ms=max(now_ms, current.earliest_end_ms))


# The account limits an operator may change at runtime (UpdateAccountLimits), by name.
ACCOUNT_LIMIT_NAMES = ("shard_limit", "on_demand_stream_limit")


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSettings:
    """Everything account-wide in the metadata image. The limits: None follows the node's
    configuration (`shard_count_per_account_max`, `on_demand_streams_max`); a value set at
    runtime wins over it on every node."""

    billing_commitment: BillingCommitment = field(default_factory=BillingCommitment)
    shard_limit: int | None = None
    on_demand_stream_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ACCOUNT_LIMIT_NAMES:
            value = getattr(self, name)
            if value is not None:
                assert 0 <= value <= limits.account_limit_max, (name, value)

    def effective_shard_limit(self, configured: int) -> int:
        return configured if self.shard_limit is None else self.shard_limit

    def effective_on_demand_stream_limit(self, configured: int) -> int:
        return configured if self.on_demand_stream_limit is None else self.on_demand_stream_limit


def update_account_limits(
    current: AccountSettings,
    *,
    shard_limit: int | None,
    on_demand_stream_limit: int | None,
    reset: tuple[str, ...],
) -> AccountSettings:
    """`current` with the given limits set (None: unchanged) and the `reset` ones returned to
    the configuration's."""
    assert set(reset) <= set(ACCOUNT_LIMIT_NAMES), reset
    if shard_limit is not None:
        assert "shard_limit" not in reset
        current = dataclasses.replace(current, shard_limit=shard_limit)
    if on_demand_stream_limit is not None:
        assert "on_demand_stream_limit" not in reset
        current = dataclasses.replace(current, on_demand_stream_limit=on_demand_stream_limit)
    if "shard_limit" in reset:
        current = dataclasses.replace(current, shard_limit=None)
    if "on_demand_stream_limit" in reset:
        current = dataclasses.replace(current, on_demand_stream_limit=None)
    return current
