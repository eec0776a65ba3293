"""Kinesis channels through boto3 and gRPC: a stream delivered to S3 (broker/firehose/channels.py).

The node's S3 is moto's server on loopback; its clock is manual, so a channel's data freshness
passes when the test moves the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import cramjam
import pytest
import pytest_asyncio

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.errors import ShoalError
from broker.node import Node
from tests.compat.conftest import call, error_of, on_demand_stream
from tests.conftest import connected_client, node_config, running_node
from tests.s3_server import S3Server, s3_server  # noqa: F401  (a fixture)

# One node for the module (its tests use distinct names), on the module's event loop.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROLE = "arn:aws:iam::000000000000:role/channels"


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(wall_ms=1_790_000_000_000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    tmp_path_factory: pytest.TempPathFactory,
    clock: ManualClock,
    s3_server: S3Server,  # noqa: F811
) -> AsyncIterator[Node]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.environment().items():
            patch.setenv(name, value)
        config = node_config(
            tmp_path_factory.mktemp("channels") / "node",
            firehose_reconcile_interval_ms=50,
            firehose_write_bytes_per_second=0,
            firehose_write_records_per_second=0,
        )
        async with running_node(config, clock) as started:
            yield started


@pytest_asyncio.fixture(loop_scope="module")
async def client(node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(node) as connected:
        yield connected


def s3_configuration(bucket: str, freshness_s: int = 60, **storage: Any) -> dict[str, Any]:
    return {
        "DataFreshnessInSeconds": freshness_s,
        "StorageConfiguration": {
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "ExpectedBucketOwner": "000000000000",
            "CompressionType": "ZSTD",
            **storage,
        },
    }


async def wait_channel(kinesis: Any, arn: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            described = await call(kinesis.describe_channel, ChannelARN=arn)
            if described["ChannelDescription"]["ChannelStatus"] == status:
                return described["ChannelDescription"]  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


async def test_a_channel_delivers_its_stream_to_s3(
    kinesis: Any,
    clock: ManualClock,
    s3_server: S3Server,  # noqa: F811
) -> None:
    await asyncio.to_thread(s3_server.client().create_bucket, Bucket="lake")
    stream_arn = await on_demand_stream(kinesis, "clicks")
    created = await call(
        kinesis.create_channel,
        ChannelName="to-lake",
        ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[
            {"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}
        ],
        S3DestinationConfiguration=s3_configuration("lake", 0, OutputKeyTemplate="clicks/"),
        Tags={"team": "data"},
    )
    description = created["ChannelDescription"]
    arn = description["ChannelARN"]
    assert arn == "arn:aws:kinesis:us-east-1:000000000000:channel/to-lake"
    assert description["ChannelStatus"] == "CREATING"
    assert description["LoggingConfiguration"] == {"CloudWatchLogs": {"Enabled": False}}
    active = await wait_channel(kinesis, arn, "ACTIVE")
    assert active["StreamConfigurationList"][0]["StreamARN"] == stream_arn
    assert active["S3DestinationConfiguration"]["StorageConfiguration"]["CompressionType"] == (
        "ZSTD"
    )

    # Freshness 0: each batch read is written at once (the clock moves a second at a time, as
    # the node's own heartbeats need). A channel starts at LATEST: put a marker until it is
    # delivered, then the records.
    async def delivered() -> list[bytes]:
        objects = await asyncio.to_thread(s3_server.objects, "lake", "clicks/")
        assert all(key.endswith(".zst") for key in objects)
        return [bytes(cramjam.zstd.decompress(body)) for body in objects.values()]

    async with asyncio.timeout(30):
        while not any(b'{"m":1}' in body for body in await delivered()):
            await call(kinesis.put_record, StreamName="clicks", Data=b'{"m":1}', PartitionKey="m")
            clock.advance(ms=1_000)
            await asyncio.sleep(0.3)
    records = [f'{{"click":{i}}}'.encode() for i in range(20)]
    await call(
        kinesis.put_records,
        StreamName="clicks",
        Records=[{"Data": data, "PartitionKey": str(i)} for i, data in enumerate(records)],
    )
    async with asyncio.timeout(30):
        while True:
            bodies = await delivered()
            if all(any(r in body for body in bodies) for r in records):
                break
            clock.advance(ms=1_000)
            await asyncio.sleep(0.2)

    # Listing, filtering, tags, updates.
    other = await on_demand_stream(kinesis, "views")
    second = await call(
        kinesis.create_channel,
        ChannelName="views-to-lake",
        ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[
            {"StreamARN": other, "RecordConfiguration": {"RecordFormatType": "BYTE_ARRAY"}}
        ],
        S3DestinationConfiguration=s3_configuration("lake"),
    )
    second_arn = second["ChannelDescription"]["ChannelARN"]
    listed = await call(kinesis.list_channels)
    assert sorted(c["ChannelARN"] for c in listed["ChannelSummaries"]) == [arn, second_arn]
    assert {c["ChannelDestinationType"] for c in listed["ChannelSummaries"]} == {"S3"}
    filtered = await call(kinesis.list_channels, StreamFilter=[{"StreamARN": other}])
    assert [c["ChannelARN"] for c in filtered["ChannelSummaries"]] == [second_arn]
    page = await call(kinesis.list_channels, MaxResults=1)
    rest = await call(kinesis.list_channels, NextToken=page["NextToken"])
    assert [c["ChannelARN"] for c in page["ChannelSummaries"] + rest["ChannelSummaries"]] == [
        arn,
        second_arn,
    ]
    await call(kinesis.tag_resource, ResourceARN=arn, Tags={"env": "prod"})
    await call(kinesis.untag_resource, ResourceARN=arn, TagKeys=["team"])
    tags = await call(kinesis.list_tags_for_resource, ResourceARN=arn)
    assert tags["Tags"] == [{"Key": "env", "Value": "prod"}]
    updated = await call(
        kinesis.update_channel,
        ChannelARN=arn,
        S3DestinationConfiguration={"DataFreshnessInSeconds": 300},
        LoggingConfiguration={"CloudWatchLogs": {"Enabled": True, "LogGroupName": "g"}},
    )
    assert updated["ChannelDescription"]["ChannelStatus"] == "UPDATING"
    after = await wait_channel(kinesis, arn, "ACTIVE")
    assert after["S3DestinationConfiguration"]["DataFreshnessInSeconds"] == 300
    assert after["LoggingConfiguration"]["CloudWatchLogs"]["Enabled"] is True

    # AWS's refusals.
    code, _ = await error_of(
        kinesis.create_channel,
        ChannelName="to-lake",
        ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[
            {"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}
        ],
        S3DestinationConfiguration=s3_configuration("lake"),
    )
    assert code == "ResourceInUseException"
    code, _ = await error_of(
        kinesis.update_channel,
        ChannelARN=arn,
        S3TablesDestinationConfiguration={"DataFreshnessInSeconds": 60},
    )
    assert code == "InvalidArgumentException"
    code, message = await error_of(kinesis.delete_stream, StreamName="clicks")
    assert code == "ResourceInUseException" and "channel" in message
    code, message = await error_of(
        kinesis.update_stream_mode,
        StreamARN=stream_arn,
        StreamModeDetails={"StreamMode": "PROVISIONED"},
    )
    assert code == "ResourceInUseException" and "channel" in message
    await call(kinesis.delete_channel, ChannelARN=arn)
    assert (await wait_channel(kinesis, arn, "DELETING"))["ChannelName"] == "to-lake"
    async with asyncio.timeout(20):
        while True:
            try:
                await call(kinesis.describe_channel, ChannelARN=arn)
            except kinesis.exceptions.ResourceNotFoundException:
                break
            await asyncio.sleep(0.05)
    await call(kinesis.delete_stream, StreamName="clicks")
    await call(kinesis.delete_channel, ChannelARN=second_arn)


async def test_channel_requests_aws_refuses(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="fixed", ShardCount=1)
    fixed = (await call(kinesis.describe_stream_summary, StreamName="fixed"))[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    flexible = await on_demand_stream(kinesis, "flexible")
    base = {
        "ChannelName": "c",
        "ServiceExecutionRoleARN": ROLE,
        "StreamConfigurationList": [
            {"StreamARN": flexible, "RecordConfiguration": {"RecordFormatType": "JSON"}}
        ],
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "ValidationException"),  # neither destination
        (
            {
                "S3DestinationConfiguration": s3_configuration("bkt"),
                "S3TablesDestinationConfiguration": {
                    "DeadLetterQueueS3Configuration": {
                        "BucketARN": "arn:aws:s3:::dlq",
                        "ExpectedBucketOwner": "000000000000",
                    },
                    "S3TablesConfigurationList": [
                        {
                            "TableBucketARN": "arn:aws:s3tables:us-east-1:000000000000:bucket/t",
                            "Namespace": "n",
                            "TableName": "t",
                            "CompressionType": "ZSTD",
                        }
                    ],
                },
            },
            "ValidationException",
        ),
        (
            {
                "S3DestinationConfiguration": s3_configuration("bkt"),
                "StreamConfigurationList": [
                    {"StreamARN": fixed, "RecordConfiguration": {"RecordFormatType": "JSON"}}
                ],
            },
            "InvalidArgumentException",  # provisioned stream
        ),
        (
            {
                "S3DestinationConfiguration": s3_configuration("bkt"),
                "StreamConfigurationList": [
                    {
                        "StreamARN": flexible.replace("flexible", "missing"),
                        "RecordConfiguration": {"RecordFormatType": "JSON"},
                    }
                ],
            },
            "ResourceNotFoundException",
        ),
        (
            {
                "S3DestinationConfiguration": s3_configuration("bkt"),
                "StreamConfigurationList": [
                    {"StreamARN": flexible, "RecordConfiguration": {"RecordFormatType": "GSR_JSON"}}
                ],
            },
            "ValidationException",  # GSR_JSON without its schema
        ),
        (
            {
                "S3DestinationConfiguration": {
                    **s3_configuration("bkt"),
                    "DataFreshnessInSeconds": 901,
                }
            },
            "ValidationException",
        ),
    ]
    for extra, expected in cases:
        code, message = await error_of(kinesis.create_channel, **{**base, **extra})
        assert code == expected, (extra, message)
    missing = "arn:aws:kinesis:us-east-1:000000000000:channel/none"
    for operation in (kinesis.describe_channel, kinesis.delete_channel):
        code, message = await error_of(operation, ChannelARN=missing)
        assert (code, message) == ("ResourceNotFoundException", f"Channel {missing} not found.")
    listed = await call(kinesis.list_channels, StreamFilter=[{"StreamARN": flexible}])
    assert listed["ChannelSummaries"] == []


async def test_channels_over_grpc(client: AsyncShoalClient) -> None:
    await client.call(
        "CreateStream", {"StreamName": "g", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
    )
    summary = await client.call("DescribeStreamSummary", {"StreamName": "g"})
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    created = await client.call(
        "CreateChannel",
        {
            "ChannelName": "gc",
            "ServiceExecutionRoleARN": ROLE,
            "StreamConfigurationList": [
                {"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": "STRING"}}
            ],
            "S3DestinationConfiguration": s3_configuration("grpc-bucket"),
        },
    )
    arn = created["ChannelDescription"]["ChannelARN"]
    listed = await client.call("ListChannels", {"StreamFilter": [{"StreamARN": stream_arn}]})
    assert [c["ChannelARN"] for c in listed["ChannelSummaries"]] == [arn]
    described = await client.call("DescribeChannel", {"ChannelARN": arn})
    assert described["ChannelDescription"]["ChannelName"] == "gc"
    with pytest.raises(ShoalError) as caught:
        await client.call("DescribeChannel", {"ChannelARN": arn + "x"})
    assert caught.value.code.kinesis_name == "ResourceNotFoundException"
