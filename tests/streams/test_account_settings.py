"""The minimum throughput billing commitment's rules and the runtime account limits."""

from __future__ import annotations

from broker import limits
from broker.streams.account_settings import (
    AccountSettings,
    BillingCommitment,
    CommitmentStatus,
    disable_commitment,
    enable_commitment,
    update_account_limits,
)

DAY_MS = limits.billing_commitment_ms_min


def test_a_new_account_has_no_commitment() -> None:
    assert BillingCommitment().status(now_ms=0) is CommitmentStatus.DISABLED
    assert disable_commitment(BillingCommitment(), now_ms=5) == BillingCommitment()


def test_enable_starts_a_24_hour_commitment_and_is_idempotent() -> None:
    enabled = enable_commitment(BillingCommitment(), now_ms=1_000)
    assert enabled == BillingCommitment(started_ms=1_000, earliest_end_ms=1_000 + DAY_MS)
    assert enabled.status(now_ms=1_000) is CommitmentStatus.ENABLED
    assert enable_commitment(enabled, now_ms=2_000) is enabled


def test_disable_before_the_earliest_end_is_scheduled_and_can_be_cancelled() -> None:
    enabled = enable_commitment(BillingCommitment(), now_ms=0)
    pending = disable_commitment(enabled, now_ms=10)
    assert pending.ended_ms == DAY_MS
    assert pending.status(now_ms=10) is CommitmentStatus.ENABLED_UNTIL_EARLIEST_ALLOWED_END
    assert pending.status(now_ms=DAY_MS) is CommitmentStatus.DISABLED
    assert disable_commitment(pending, now_ms=20) is pending  # already scheduled
    cancelled = enable_commitment(pending, now_ms=30)
    assert cancelled == enabled
    assert cancelled.status(now_ms=DAY_MS * 2) is CommitmentStatus.ENABLED


def test_disable_after_the_earliest_end_ends_at_once_and_enable_starts_anew() -> None:
    enabled = enable_commitment(BillingCommitment(), now_ms=0)
    ended = disable_commitment(enabled, now_ms=DAY_MS + 5)
    assert ended.ended_ms == DAY_MS + 5
    assert ended.status(now_ms=DAY_MS + 5) is CommitmentStatus.DISABLED
    again = enable_commitment(ended, now_ms=DAY_MS * 3)
    assert again == BillingCommitment(started_ms=DAY_MS * 3, earliest_end_ms=DAY_MS * 4)


def test_account_limits_override_the_configuration_until_reset() -> None:
    settings = AccountSettings()
    assert settings.effective_shard_limit(500) == 500
    raised = update_account_limits(settings, shard_limit=2, on_demand_stream_limit=0, reset=())
    assert raised.effective_shard_limit(500) == 2
    assert raised.effective_on_demand_stream_limit(50) == 0
    back = update_account_limits(
        raised, shard_limit=None, on_demand_stream_limit=None, reset=("shard_limit",)
    )
    assert back.effective_shard_limit(500) == 500
    assert back.on_demand_stream_limit == 0
