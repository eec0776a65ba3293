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


async def test_a_mode_switch_keeps_the_shards_and_is_allowed_twice_a_day(
    kinesis: Any, clock: ManualClock
) -> None:
    """AWS keeps a stream's shard count when its capacity mode changes (either way), and
    allows two switches per stream in any 24 hours; asking for the mode it has is not one."""
    await call(kinesis.create_stream, StreamName="m", ShardCount=3)
    clock.advance(ms=60_000)  # past CREATING
    arn = (await call(kinesis.describe_stream_summary, StreamName="m"))["StreamDescriptionSummary"][
        "StreamARN"
    ]

    async def switch(mode: str) -> dict[str, Any]:
        await call(
            kinesis.update_stream_mode, StreamARN=arn, StreamModeDetails={"StreamMode": mode}
        )
        clock.advance(ms=60_000)  # past UPDATING
        summary: dict[str, Any] = (await call(kinesis.describe_stream_summary, StreamName="m"))[
            "StreamDescriptionSummary"
        ]
        return summary

    on_demand = await switch("ON_DEMAND")
    assert on_demand["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert on_demand["OpenShardCount"] == 3  # not reset to on-demand's initial 4
    limits = await call(kinesis.describe_limits)
    assert (limits["OnDemandStreamCount"], limits["OpenShardCount"]) == (1, 3)
    assert (await switch("ON_DEMAND"))["OpenShardCount"] == 3  # the same mode: no switch
    provisioned = await switch("PROVISIONED")
    assert provisioned["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert provisioned["OpenShardCount"] == 3
    with pytest.raises(kinesis.exceptions.LimitExceededException):
        await switch("ON_DEMAND")  # a third switch within 24 hours
    clock.advance(ms=24 * 3_600_000)
    assert (await switch("ON_DEMAND"))["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
