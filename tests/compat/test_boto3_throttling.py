"""Throttling as boto3 sees it, with botocore's retries off and on.

The node enforces small per-shard rates (cluster defaults here) on a manual clock, so a test
decides when buckets refill: nothing refills unless the test (or a botocore hook standing in
for the time a backoff takes) advances the clock. What is checked is what AWS documents and
clients rely on: the error name, HTTP 400 and AWS's message; botocore's standard retry mode
retrying it (RetryAttempts) until it succeeds or its attempts run out; and PutRecords reporting
throttling per record with HTTP 200, which botocore never retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

# botocore's `max_attempts` counts retries (legacy meaning); `total_max_attempts` counts every
# attempt, so 1 is "no retries" (what the shared `boto_client` uses by default).
NO_RETRIES = {"mode": "standard", "total_max_attempts": 1}
STANDARD_RETRIES = {"mode": "standard", "total_max_attempts": 3}
MESSAGE = "Rate exceeded for shard shardId-000000000000 in stream hot under account 000000000000."
READ_MESSAGE = "Rate exceeded for Shard - 000000000000/hot/shardId-000000000000"  # GetRecords'


@pytest.fixture
async def node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    settings = {"shard_write_records_per_second": 2, "shard_read_calls_per_second": 1}
    async with running_node(node_config(tmp_path / "node", settings=settings), clock) as started:
        yield started


@pytest.fixture
async def endpoint(node: Node) -> str:
    url = f"http://127.0.0.1:{node.http_port}"
    setup = boto_client(url)
    try:
        await call(setup.create_stream, StreamName="hot", ShardCount=1)
    finally:
        setup.close()
    return url


async def fill_the_bucket(kinesis: Any) -> None:
    for i in range(2):  # a bucket holds one second: 2 records
        await call(kinesis.put_record, StreamName="hot", PartitionKey="k", Data=b"%d" % i)


async def test_without_retries_the_error_is_awss(endpoint: str) -> None:
    kinesis = boto_client(endpoint, retries=NO_RETRIES)
    try:
        await fill_the_bucket(kinesis)
        with pytest.raises(kinesis.exceptions.ProvisionedThroughputExceededException) as caught:
            await call(kinesis.put_record, StreamName="hot", PartitionKey="k", Data=b"x")
        response = caught.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert response["ResponseMetadata"]["RetryAttempts"] == 0
        assert response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        assert response["Error"]["Message"] == MESSAGE
        # Reads: one GetRecords call per second, then the same error.
        shard_iterator = (
            await call(
                kinesis.get_shard_iterator,
                StreamName="hot",
                ShardId="shardId-000000000000",
                ShardIteratorType="TRIM_HORIZON",
            )
        )["ShardIterator"]
        await call(kinesis.get_records, ShardIterator=shard_iterator)
        with pytest.raises(kinesis.exceptions.ProvisionedThroughputExceededException) as caught:
            await call(kinesis.get_records, ShardIterator=shard_iterator)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert caught.value.response["Error"]["Message"] == READ_MESSAGE
    finally:
        kinesis.close()


@pytest.mark.slow
async def test_standard_retries_give_up_after_max_attempts(endpoint: str) -> None:
    """Nothing refills (the clock stands still): every attempt is throttled, and botocore
    raises the error after its 3 attempts, having retried twice."""
    kinesis = boto_client(endpoint, retries=STANDARD_RETRIES)
    attempts: list[int] = []
    kinesis.meta.events.register("before-send.kinesis.PutRecord", lambda **_: attempts.append(1))
    try:
        await fill_the_bucket(kinesis)
        attempts.clear()
        with pytest.raises(kinesis.exceptions.ProvisionedThroughputExceededException) as caught:
            await call(kinesis.put_record, StreamName="hot", PartitionKey="k", Data=b"x")
        assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
        assert caught.value.response["Error"]["Message"] == MESSAGE
        assert len(attempts) == 3
    finally:
        kinesis.close()


@pytest.mark.slow
async def test_standard_retries_succeed_once_the_bucket_refills(
    endpoint: str, clock: ManualClock
) -> None:
    """A botocore hook moves the node's clock on by one second after each throttled attempt
    (the refill a real backoff would wait for): the call succeeds on its first retry."""
    loop = asyncio.get_running_loop()
    advanced = asyncio.Event()

    def refill_after_throttle(response: Any = None, **_: Any) -> None:
        if response is not None and response[1].get("Error", {}).get("Code") == (
            "ProvisionedThroughputExceededException"
        ):
            # Runs on the node's loop and is waited for, so the retry sees the refill.
            asyncio.run_coroutine_threadsafe(refill(), loop).result(timeout=10)

    async def refill() -> None:
        clock.advance(ms=1_000)
        advanced.set()

    kinesis = boto_client(endpoint, retries=STANDARD_RETRIES)
    kinesis.meta.events.register("needs-retry.kinesis.PutRecord", refill_after_throttle)
    try:
        await fill_the_bucket(kinesis)
        result = await call(kinesis.put_record, StreamName="hot", PartitionKey="k", Data=b"x")
        assert advanced.is_set()
        assert result["ResponseMetadata"]["RetryAttempts"] == 1
        assert result["ShardId"] == "shardId-000000000000"
    finally:
        kinesis.close()


async def test_put_records_reports_throttling_per_record_and_is_not_retried(
    endpoint: str, clock: ManualClock
) -> None:
    kinesis = boto_client(endpoint, retries=STANDARD_RETRIES)
    try:
        records = [{"PartitionKey": "k", "Data": b"%d" % i} for i in range(5)]
        response = await call(kinesis.put_records, StreamName="hot", Records=records)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert response["ResponseMetadata"]["RetryAttempts"] == 0
        assert response["FailedRecordCount"] == 3
        assert ["SequenceNumber" in r for r in response["Records"]] == [
            True,
            True,
            False,
            False,
            False,
        ]
        for failed in response["Records"][2:]:
            assert failed == {
                "ErrorCode": "ProvisionedThroughputExceededException",
                "ErrorMessage": MESSAGE,
            }
        clock.advance(ms=1_000)
        retry = [records[i] for i, r in enumerate(response["Records"]) if "ErrorCode" in r]
        again = await call(kinesis.put_records, StreamName="hot", Records=retry[:2])
        assert again["FailedRecordCount"] == 0
    finally:
        kinesis.close()


async def test_botocore_classifies_the_error_as_throttling(endpoint: str) -> None:
    """botocore's standard mode decides what to retry from the error code; Kinesis's
    throughput error must be in its throttling set for SDK backoff to apply."""
    from botocore.retries import standard

    kinesis = boto_client(endpoint, retries=NO_RETRIES)
    try:
        await fill_the_bucket(kinesis)
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            await call(kinesis.put_record, StreamName="hot", PartitionKey="k", Data=b"x")
        context = standard.RetryContext(
            attempt_number=1,
            operation_model=kinesis.meta.service_model.operation_model("PutRecord"),
            parsed_response=caught.value.response,
            http_response=None,
            caught_exception=None,
        )
        assert standard.ThrottledRetryableChecker().is_retryable(context)
    finally:
        kinesis.close()
