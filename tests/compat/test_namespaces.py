"""Regions and accounts as namespaces (issue 14 item 4, issue 15 item 1's collision rule).

Goal: a stream belongs to the (account, region) of its caller; the same name in two regions or
two accounts is two streams; ARNs carry the namespace; ListStreams lists one region of one
account; an ARN of another namespace is not found; another namespace's iterators and consumers
are refused. Method: boto3 clients signed for two regions against one in-process node (no keys
configured: the credential scope still names the region), and the service called directly with
`Caller`s of two accounts (access keys mapping to accounts belong to access control).
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.node import Node
from tests.compat.conftest import call

pytestmark = pytest.mark.integration

ACCOUNT = "000000000000"  # the node's configured account (tests/conftest.py)


def regional_client(endpoint: str, region: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


async def test_the_same_name_in_two_regions_is_two_streams(endpoint: str) -> None:
    east = regional_client(endpoint, "us-east-1")
    west = regional_client(endpoint, "eu-west-1")
    try:
        await call(east.create_stream, StreamName="orders", ShardCount=1)
        await call(west.create_stream, StreamName="orders", ShardCount=2)
        east_arn = (await call(east.describe_stream_summary, StreamName="orders"))[
            "StreamDescriptionSummary"
        ]
        west_summary = (await call(west.describe_stream_summary, StreamName="orders"))[
            "StreamDescriptionSummary"
        ]
        assert east_arn["StreamARN"] == f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/orders"
        assert west_summary["StreamARN"] == f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/orders"
        assert west_summary["StreamName"] == "orders"
        assert east_arn["OpenShardCount"] == 1
        assert west_summary["OpenShardCount"] == 2

        # Only the caller's region is listed.
        await call(west.create_stream, StreamName="only-west", ShardCount=1)
        assert (await call(east.list_streams))["StreamNames"] == ["orders"]
        west_listing = await call(west.list_streams)
        assert west_listing["StreamNames"] == ["only-west", "orders"]
        assert {s["StreamARN"] for s in west_listing["StreamSummaries"]} == {
            f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/only-west",
            f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/orders",
        }

        # Records stay in their region's stream.
        put = await call(west.put_record, StreamName="orders", Data=b"west", PartitionKey="k")
        assert len(put["SequenceNumber"]) == 56
        east_iterator = (
            await call(
                east.get_shard_iterator,
                StreamName="orders",
                ShardId="shardId-000000000000",
                ShardIteratorType="TRIM_HORIZON",
            )
        )["ShardIterator"]
        assert (await call(east.get_records, ShardIterator=east_iterator))["Records"] == []
        west_iterator = (
            await call(
                west.get_shard_iterator,
                StreamARN=west_summary["StreamARN"],
                ShardId=put["ShardId"],
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=put["SequenceNumber"],
            )
        )["ShardIterator"]
        records = (await call(west.get_records, ShardIterator=west_iterator))["Records"]
        assert [r["Data"] for r in records] == [b"west"]

        # Another region's ARN, and another region's iterator, are not found.
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            await call(east.describe_stream_summary, StreamARN=west_summary["StreamARN"])
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            await call(east.get_records, ShardIterator=west_iterator)
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"

        # Consumers are per stream, so per region; their ARNs carry the region.
        consumer = (
            await call(
                west.register_stream_consumer,
                StreamARN=west_summary["StreamARN"],
                ConsumerName="reader",
            )
        )["Consumer"]
        assert consumer["ConsumerARN"].startswith(west_summary["StreamARN"] + "/consumer/")
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            await call(east.describe_stream_consumer, ConsumerARN=consumer["ConsumerARN"])
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
        described = await call(west.describe_stream_consumer, ConsumerARN=consumer["ConsumerARN"])
        assert described["ConsumerDescription"]["ConsumerName"] == "reader"

        # Deleting one region's stream leaves the other's.
        await call(west.delete_stream, StreamName="orders", EnforceConsumerDeletion=True)
        assert (await call(east.list_streams))["StreamNames"] == ["orders"]
    finally:
        east.close()
        west.close()


async def test_two_accounts_streams_of_one_name_do_not_collide(node: Node) -> None:
    first = Caller(region="us-east-1", account_id="111111111111", door="grpc")
    second = Caller(region="us-east-1", account_id="222222222222", door="grpc")
    service = node.service
    assert service is not None
    await service.call("CreateStream", {"StreamName": "shared", "ShardCount": 1}, first)
    await service.call("CreateStream", {"StreamName": "shared", "ShardCount": 3}, second)
    one = await service.call("DescribeStreamSummary", {"StreamName": "shared"}, first)
    two = await service.call("DescribeStreamSummary", {"StreamName": "shared"}, second)
    assert one["StreamDescriptionSummary"]["StreamARN"] == (
        "arn:aws:kinesis:us-east-1:111111111111:stream/shared"
    )
    assert two["StreamDescriptionSummary"]["StreamARN"] == (
        "arn:aws:kinesis:us-east-1:222222222222:stream/shared"
    )
    assert two["StreamDescriptionSummary"]["OpenShardCount"] == 3
    assert (await service.call("ListStreams", {}, first))["StreamNames"] == ["shared"]
    # The node's own account sees neither.
    own = Caller(region="us-east-1", account_id=ACCOUNT, door="grpc")
    assert (await service.call("ListStreams", {}, own))["StreamNames"] == []
    # Naming the other account's stream by ARN: not found, in the caller's account's words.
    with pytest.raises(ShoalError) as caught:
        await service.call(
            "DescribeStreamSummary",
            {"StreamARN": "arn:aws:kinesis:us-east-1:222222222222:stream/shared"},
            first,
        )
    assert caught.value.code is ErrorCode.RESOURCE_NOT_FOUND
    # A key smuggled into an ARN of one's own namespace does not reach another's stream.
    smuggled = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/222222222222/us-east-1/shared"
    with pytest.raises(ShoalError) as caught:
        await service.call("DescribeStreamSummary", {"StreamARN": smuggled}, own)
    assert caught.value.code is ErrorCode.RESOURCE_NOT_FOUND
    with pytest.raises(ShoalError) as caught:
        await service.call("DescribeStreamSummary", {"StreamName": "shared"}, own)
    assert caught.value.message == f"Stream shared under account {ACCOUNT} not found."
    # Deleting is per account too.
    await service.call("DeleteStream", {"StreamName": "shared"}, first)
    still = await service.call("DescribeStreamSummary", {"StreamName": "shared"}, second)
    assert still["StreamDescriptionSummary"]["StreamName"] == "shared"
