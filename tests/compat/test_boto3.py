"""boto3, unmodified, against the AWS door of an in-process node.

Goal: everything a boto3 user does works as against AWS: every operation the node implements,
the waiters, the paginators, modelled exceptions (`client.exceptions.X`), blobs and timestamps,
and botocore's retries on throttling. The node's clock is a ManualClock, so the throttling test
moves time itself instead of sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config

pytestmark = pytest.mark.integration

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/{}"


async def read_shard(kinesis: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    iterator = (
        await call(
            kinesis.get_shard_iterator,
            StreamName=stream,
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    for _ in range(100):
        response = await call(kinesis.get_records, ShardIterator=iterator)
        records += response["Records"]
        if not response["Records"] and response["MillisBehindLatest"] == 0:
            return records
        iterator = response["NextShardIterator"]
    raise AssertionError("did not catch up")


async def test_every_operation(
    kinesis: Any, calls_seen: set[str], node: Node, clock: ManualClock
) -> None:
    """Each operation the service implements, once through boto3, with its main effect."""
    await call(kinesis.create_stream, StreamName="all", ShardCount=2)
    summary = (await call(kinesis.describe_stream_summary, StreamName="all"))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 2
    description = (await call(kinesis.describe_stream, StreamName="all"))["StreamDescription"]
    assert len(description["Shards"]) == 2
    assert (await call(kinesis.list_streams))["StreamNames"] == ["all"]
    shards = (await call(kinesis.list_shards, StreamName="all"))["Shards"]
    assert [s["ShardId"] for s in shards] == ["shardId-000000000000", "shardId-000000000001"]

    await call(kinesis.increase_stream_retention_period, StreamName="all", RetentionPeriodHours=48)
    await call(kinesis.decrease_stream_retention_period, StreamName="all", RetentionPeriodHours=36)
    summary = (await call(kinesis.describe_stream_summary, StreamName="all"))[
        "StreamDescriptionSummary"
    ]
    assert summary["RetentionPeriodHours"] == 36

    await call(kinesis.add_tags_to_stream, StreamName="all", Tags={"team": "data", "env": "t"})
    await call(kinesis.remove_tags_from_stream, StreamName="all", TagKeys=["env"])
    tags = (await call(kinesis.list_tags_for_stream, StreamName="all"))["Tags"]
    assert tags == [{"Key": "team", "Value": "data"}]
    await call(kinesis.tag_resource, ResourceARN=ARN.format("all"), Tags={"cost": "1"})
    await call(kinesis.untag_resource, ResourceARN=ARN.format("all"), TagKeys=["team"])
    tags = (await call(kinesis.list_tags_for_resource, ResourceARN=ARN.format("all")))["Tags"]
    assert tags == [{"Key": "cost", "Value": "1"}]

    enabled = await call(
        kinesis.enable_enhanced_monitoring, StreamName="all", ShardLevelMetrics=["IncomingBytes"]
    )
    assert enabled["DesiredShardLevelMetrics"] == ["IncomingBytes"]
    disabled = await call(
        kinesis.disable_enhanced_monitoring, StreamName="all", ShardLevelMetrics=["ALL"]
    )
    assert disabled["DesiredShardLevelMetrics"] == []
    assert (await call(kinesis.describe_limits))["OpenShardCount"] == 2
    settings = await call(
        kinesis.update_account_settings, MinimumThroughputBillingCommitment={"Status": "ENABLED"}
    )
    assert settings["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED"
    settings = await call(kinesis.describe_account_settings)
    assert settings["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED"

    put = await call(kinesis.put_record, StreamName="all", PartitionKey="k", Data=b"\x00\xff")
    batch = await call(
        kinesis.put_records,
        StreamName="all",
        Records=[{"PartitionKey": f"k{i}", "Data": f"r{i}".encode()} for i in range(10)],
    )
    assert batch["FailedRecordCount"] == 0
    assert len(batch["Records"]) == 10
    records = await read_shard(kinesis, "all", put["ShardId"])
    assert records[0]["Data"] == b"\x00\xff"
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]

    await call(
        kinesis.split_shard,
        StreamName="all",
        ShardToSplit="shardId-000000000000",
        NewStartingHashKey=str(2**126),
    )
    await call(
        kinesis.merge_shards,
        StreamName="all",
        ShardToMerge="shardId-000000000002",
        AdjacentShardToMerge="shardId-000000000003",
    )
    resized = await call(
        kinesis.update_shard_count,
        StreamName="all",
        TargetShardCount=4,
        ScalingType="UNIFORM_SCALING",
    )
    assert resized["TargetShardCount"] == 4
    await call(kinesis.update_max_record_size, StreamARN=ARN.format("all"), MaxRecordSizeInKiB=2048)
    await call(
        kinesis.update_stream_mode,
        StreamARN=ARN.format("all"),
        StreamModeDetails={"StreamMode": "ON_DEMAND"},
    )
    summary = (await call(kinesis.describe_stream_summary, StreamName="all"))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    assert summary["MaxRecordSizeInKiB"] == 2048

    registered = await call(
        kinesis.register_stream_consumer, StreamARN=ARN.format("all"), ConsumerName="fan"
    )
    consumer_arn = registered["Consumer"]["ConsumerARN"]
    consumers = (await call(kinesis.list_stream_consumers, StreamARN=ARN.format("all")))[
        "Consumers"
    ]
    assert [c["ConsumerARN"] for c in consumers] == [consumer_arn]
    described = await call(kinesis.describe_stream_consumer, ConsumerARN=consumer_arn)
    assert described["ConsumerDescription"]["StreamARN"] == ARN.format("all")
    clock.advance(ms=1_000)  # the consumer is ACTIVE
    subscribed = await call(
        kinesis.subscribe_to_shard,
        ConsumerARN=consumer_arn,
        ShardId="shardId-000000000000",
        StartingPosition={"Type": "TRIM_HORIZON"},
    )
    # The shard was split above: its events end with ChildShards, then the stream ends.
    events = await asyncio.to_thread(lambda: list(subscribed["EventStream"]))
    assert events[-1]["SubscribeToShardEvent"]["ChildShards"]
    await call(kinesis.deregister_stream_consumer, ConsumerARN=consumer_arn)

    # Resource policies, encryption settings, record distribution, warm throughput.
    policy = (
        '{"Statement": {"Effect": "Allow", "Principal": {"AWS": "123456789012"},'
        f' "Action": "kinesis:GetRecords", "Resource": "{ARN.format("all")}"}}}}'
    )
    await call(kinesis.put_resource_policy, ResourceARN=ARN.format("all"), Policy=policy)
    got = await call(kinesis.get_resource_policy, ResourceARN=ARN.format("all"))
    assert got["Policy"] == policy
    await call(kinesis.delete_resource_policy, ResourceARN=ARN.format("all"))
    await call(
        kinesis.start_stream_encryption,
        StreamName="all",
        EncryptionType="KMS",
        KeyId="alias/aws/kinesis",
    )
    await call(
        kinesis.stop_stream_encryption,
        StreamName="all",
        EncryptionType="KMS",
        KeyId="alias/aws/kinesis",
    )
    await call(
        kinesis.update_stream_record_distribution_strategy,
        StreamARN=ARN.format("all"),
        RecordDistributionStrategy="USER_PARTITION_KEY",
    )
    warm = await call(
        kinesis.update_stream_warm_throughput, StreamName="all", WarmThroughputMiBps=1
    )  # an on-demand stream (above), in an account with the billing commitment
    assert warm["WarmThroughput"]["TargetMiBps"] == 1

    # Queues (tests/compat/test_queues.py covers their semantics).
    queue = (
        await call(
            kinesis.create_queue,
            QueueName="jobs",
            StreamConfigurationList=[
                {"StreamARN": ARN.format("all"), "StartingPosition": {"Type": "TRIM_HORIZON"}}
            ],
            QueueAttributes={
                "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 1}
            },
        )
    )["QueueDescription"]["QueueARN"]
    assert (await call(kinesis.describe_queue, QueueARN=queue))["QueueDescription"][
        "QueueName"
    ] == "jobs"
    assert len((await call(kinesis.list_queues))["QueueSummaries"]) == 1
    await call(
        kinesis.update_queue, QueueARN=queue, QueueAttributes={"VisibilityTimeoutSeconds": 1}
    )
    await call(kinesis.put_record, StreamName="all", Data=b"q", PartitionKey="q")
    received: list[dict[str, Any]] = []
    for _ in range(10):  # bounded: each receive waits at most a second
        if received:
            break
        received = (await call(kinesis.receive_queue_records, QueueARN=queue, WaitTimeSeconds=1))[
            "QueueRecords"
        ]
    handle = {"ReceiptHandle": received[0]["ReceiptHandle"]}
    await call(
        kinesis.update_queue_records_visibility,
        QueueARN=queue,
        Entries=[{**handle, "VisibilityTimeoutSeconds": 0}],
    )
    letters: list[dict[str, Any]] = []
    for _ in range(10):  # received once (MaxReceiveCount 1): a dead letter once visible
        if letters:
            break
        await call(kinesis.receive_queue_records, QueueARN=queue, WaitTimeSeconds=1)
        letters = (
            await call(kinesis.receive_dead_letter_queue_records, QueueARN=queue, WaitTimeSeconds=1)
        )["QueueRecords"]
    handle = {"ReceiptHandle": letters[0]["ReceiptHandle"]}
    await call(
        kinesis.update_dead_letter_queue_records_visibility,
        QueueARN=queue,
        Entries=[{**handle, "VisibilityTimeoutSeconds": 0}],
    )
    await call(kinesis.restore_dead_letter_queue_records, QueueARN=queue, Entries=[handle])
    again = (await call(kinesis.receive_queue_records, QueueARN=queue, WaitTimeSeconds=1))[
        "QueueRecords"
    ]
    await call(
        kinesis.acknowledge_queue_records,
        QueueARN=queue,
        Entries=[{"ReceiptHandle": r["ReceiptHandle"]} for r in again],
    )
    acked = await call(
        kinesis.acknowledge_dead_letter_queue_records, QueueARN=queue, Entries=[handle]
    )
    assert acked["Successful"] == [handle]  # acknowledged since: acknowledging again is fine
    await call(kinesis.delete_queue, QueueARN=queue)

    # Channels (tests/compat/test_channels.py delivers one to S3). Without an S3 store here
    # the channel stays CREATING: UpdateChannel is refused, DeleteChannel is not.
    channel = (
        await call(
            kinesis.create_channel,
            ChannelName="lake",
            ServiceExecutionRoleARN="arn:aws:iam::000000000000:role/channels",
            StreamConfigurationList=[
                {
                    "StreamARN": ARN.format("all"),
                    "RecordConfiguration": {"RecordFormatType": "JSON"},
                }
            ],
            S3DestinationConfiguration={
                "StorageConfiguration": {
                    "BucketARN": "arn:aws:s3:::lake",
                    "ExpectedBucketOwner": "000000000000",
                    "CompressionType": "GZIP",
                }
            },
        )
    )["ChannelDescription"]["ChannelARN"]
    assert (await call(kinesis.describe_channel, ChannelARN=channel))["ChannelDescription"][
        "ChannelName"
    ] == "lake"
    assert len((await call(kinesis.list_channels))["ChannelSummaries"]) == 1
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        await call(
            kinesis.update_channel,
            ChannelARN=channel,
            S3DestinationConfiguration={"DataFreshnessInSeconds": 120},
        )
    await call(kinesis.delete_channel, ChannelARN=channel)

    await call(kinesis.delete_stream, StreamName="all")
    assert (await call(kinesis.list_streams))["StreamNames"] == []

    assert node.service is not None
    assert calls_seen == set(node.service.operations)


async def test_errors_are_modelled_exceptions(kinesis: Any) -> None:
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException) as missing:
        await call(kinesis.describe_stream_summary, StreamName="nope")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "nope" in missing.value.response["Error"]["Message"]
    await call(kinesis.create_stream, StreamName="dup", ShardCount=1)
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        await call(kinesis.create_stream, StreamName="dup", ShardCount=1)
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        await call(
            kinesis.put_record,
            StreamName="dup",
            PartitionKey="k",
            Data=b"x",
            ExplicitHashKey=str(2**128),
        )
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        await call(kinesis.get_records, ShardIterator="not-an-iterator")


async def test_server_validation_errors_reach_boto3(endpoint: str) -> None:
    """With botocore's own checks off, the node's ValidationException comes back as AWS's."""
    unchecked = boto_client(endpoint, parameter_validation=False)
    try:
        with pytest.raises(unchecked.exceptions.ClientError) as caught:
            await call(unchecked.create_stream, StreamName="bad name!", ShardCount=0)
        error = caught.value.response["Error"]
        assert error["Code"] == "ValidationException"
        assert error["Message"].startswith("2 validation errors detected:")
    finally:
        unchecked.close()


async def test_blobs_and_timestamps_round_trip(kinesis: Any, clock: ManualClock) -> None:
    await call(kinesis.create_stream, StreamName="t", ShardCount=1)
    payloads = [bytes(range(256)), b"\xff" * 1000, b"+/=="]
    for payload in payloads:
        await call(kinesis.put_record, StreamName="t", PartitionKey="k", Data=payload)
    records = await read_shard(kinesis, "t", "shardId-000000000000")
    assert [r["Data"] for r in records] == payloads
    written_at = datetime.fromtimestamp(clock.wall_ms() / 1000, UTC)
    assert records[0]["ApproximateArrivalTimestamp"] == written_at
    created = (await call(kinesis.describe_stream_summary, StreamName="t"))[
        "StreamDescriptionSummary"
    ]["StreamCreationTimestamp"]
    assert created == written_at

    clock.advance(ms=60_000)
    await call(kinesis.put_record, StreamName="t", PartitionKey="k", Data=b"later")
    at_timestamp = (
        await call(
            kinesis.get_shard_iterator,
            StreamName="t",
            ShardId="shardId-000000000000",
            ShardIteratorType="AT_TIMESTAMP",
            Timestamp=written_at + timedelta(seconds=30),
        )
    )["ShardIterator"]
    later = (await call(kinesis.get_records, ShardIterator=at_timestamp))["Records"]
    assert [r["Data"] for r in later] == [b"later"]
    assert later[0]["ApproximateArrivalTimestamp"] == written_at + timedelta(seconds=60)


async def test_waiters(kinesis: Any) -> None:
    fast = {"Delay": 1, "MaxAttempts": 5}
    await call(kinesis.create_stream, StreamName="w", ShardCount=1)
    await call(kinesis.get_waiter("stream_exists").wait, StreamName="w", WaiterConfig=fast)
    await call(kinesis.delete_stream, StreamName="w")
    await call(kinesis.get_waiter("stream_not_exists").wait, StreamName="w", WaiterConfig=fast)


async def test_paginators(kinesis: Any) -> None:
    for i in range(5):
        await call(kinesis.create_stream, StreamName=f"p{i}", ShardCount=7 if i == 0 else 1)

    def collect(operation: str, key: str, **kwargs: Any) -> list[Any]:
        paginator = kinesis.get_paginator(operation)
        pages = paginator.paginate(**kwargs, PaginationConfig={"PageSize": 2, "MaxItems": 100})
        return list(pages.search(key))

    names = await asyncio.to_thread(collect, "list_streams", "StreamNames[]")
    assert names == [f"p{i}" for i in range(5)]
    described = await asyncio.to_thread(
        collect, "describe_stream", "StreamDescription.Shards[].ShardId", StreamName="p0"
    )
    assert described == [f"shardId-{i:012d}" for i in range(7)]
    # botocore's ListShards paginator repeats StreamName next to NextToken, which AWS refuses
    # (boto/botocore#2009); Shoal refuses it the same way rather than hide the client bug.
    with pytest.raises(kinesis.exceptions.InvalidArgumentException, match="cannot be provided"):
        await asyncio.to_thread(collect, "list_shards", "Shards[].ShardId", StreamName="p0")


async def test_put_records_reports_failures_per_record(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="pr", ShardCount=1)
    response = await call(
        kinesis.put_records,
        StreamName="pr",
        Records=[{"PartitionKey": "k", "Data": b"ok"}] * 3,
    )
    assert response["FailedRecordCount"] == 0
    assert all("SequenceNumber" in r for r in response["Records"])


@pytest.mark.slow
async def test_throttling_is_retried_by_botocore(tmp_path: Path) -> None:
    """With 2 records/s per shard, a burst of PutRecord calls fails without retries and
    succeeds with botocore's standard retries. The node's clock is manual: a botocore hook
    moves it one second after each throttled attempt, standing in for the time AWS's token
    bucket would refill during the client's backoff."""
    clock = ManualClock(wall_ms=1_790_000_000_000)
    config = node_config(tmp_path / "node", settings={"shard_write_records_per_second": 2})
    node = Node(config, clock=clock)
    await node.start()
    loop = asyncio.get_running_loop()
    endpoint = f"http://127.0.0.1:{node.http_port}"

    def refill_after_throttle(response: Any = None, **_: Any) -> None:
        if response is None:
            return
        code = response[1].get("Error", {}).get("Code")
        if code == "ProvisionedThroughputExceededException":
            loop.call_soon_threadsafe(lambda: clock.advance(ms=1_000))

    no_retries = boto_client(endpoint)
    with_retries = boto_client(endpoint, retries={"mode": "standard", "max_attempts": 5})
    try:
        await call(no_retries.create_stream, StreamName="hot", ShardCount=1)
        for i in range(2):  # the bucket holds one second: 2 records
            await call(no_retries.put_record, StreamName="hot", PartitionKey="k", Data=b"%d" % i)
        with pytest.raises(no_retries.exceptions.ProvisionedThroughputExceededException):
            await call(no_retries.put_record, StreamName="hot", PartitionKey="k", Data=b"2")
        with_retries.meta.events.register("needs-retry.kinesis.PutRecord", refill_after_throttle)
        results = [
            await call(with_retries.put_record, StreamName="hot", PartitionKey="k", Data=b"x")
            for _ in range(4)
        ]
        attempts = [r["ResponseMetadata"]["RetryAttempts"] for r in results]
        assert len(results) == 4
        assert sum(attempts) >= 1  # at least one call was throttled and then retried
    finally:
        no_retries.close()
        with_retries.close()
        await node.stop()
