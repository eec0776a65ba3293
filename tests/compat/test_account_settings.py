"""DescribeAccountSettings / UpdateAccountSettings through boto3 and gRPC: the minimum
throughput billing commitment's statuses and timestamps as AWS documents them, on a manual
clock (a commitment lasts at least 24 hours)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from tests.compat.conftest import boto_client, call

pytestmark = pytest.mark.integration

DAY = timedelta(hours=24)


def commitment(response: dict[str, Any]) -> dict[str, Any]:
    shape: dict[str, Any] = response["MinimumThroughputBillingCommitment"]
    return shape


async def test_commitment_lifecycle_on_both_doors(
    kinesis: Any, client: AsyncShoalClient, clock: ManualClock
) -> None:
    assert commitment(await call(kinesis.describe_account_settings)) == {"Status": "DISABLED"}
    started = datetime.fromtimestamp(clock.wall_ms() / 1000, UTC)
    enabled = commitment(
        await call(
            kinesis.update_account_settings,
            MinimumThroughputBillingCommitment={"Status": "ENABLED"},
        )
    )
    assert enabled == {
        "Status": "ENABLED",
        "StartedAt": started,
        "EarliestAllowedEndAt": started + DAY,
    }
    # The gRPC door reads the same setting, with the same shape.
    assert commitment(await client.call("DescribeAccountSettings", {})) == enabled

    clock.advance(ms=3_600_000)
    pending = commitment(
        await client.call(
            "UpdateAccountSettings", {"MinimumThroughputBillingCommitment": {"Status": "DISABLED"}}
        )
    )
    assert pending == {
        "Status": "ENABLED_UNTIL_EARLIEST_ALLOWED_END",
        "StartedAt": started,
        "EarliestAllowedEndAt": started + DAY,
        "EndedAt": started + DAY,
    }
    assert commitment(await call(kinesis.describe_account_settings)) == pending

    clock.advance(ms=24 * 3_600_000)  # past the earliest end: the scheduled disable happened
    ended = commitment(await call(kinesis.describe_account_settings))
    assert ended["Status"] == "DISABLED"
    assert ended["EndedAt"] == started + DAY


async def test_enabling_again_cancels_a_scheduled_end(kinesis: Any) -> None:
    for status in ("ENABLED", "DISABLED", "ENABLED"):
        answer = commitment(
            await call(
                kinesis.update_account_settings,
                MinimumThroughputBillingCommitment={"Status": status},
            )
        )
    assert answer["Status"] == "ENABLED"
    assert "EndedAt" not in answer


async def test_a_bad_status_is_a_validation_error(endpoint: str) -> None:
    unchecked = boto_client(endpoint, parameter_validation=False)
    try:
        with pytest.raises(unchecked.exceptions.ClientError) as caught:
            await call(
                unchecked.update_account_settings,
                MinimumThroughputBillingCommitment={"Status": "ENABLED_UNTIL_EARLIEST_ALLOWED_END"},
            )
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    finally:
        unchecked.close()
