"""Both front doors are one service: the gRPC API and the AWS HTTP API (through boto3) give the
same answers and the same error names for the same calls on the same node."""

from __future__ import annotations

from typing import Any

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.errors import ShoalError
from tests.compat.conftest import boto_client, call

pytestmark = pytest.mark.integration


def without_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def without_empty_lists(value: Any) -> Any:
    """gRPC cannot tell an absent list from an empty one and shows `[]`; AWS omits some."""
    if isinstance(value, dict):
        return {k: without_empty_lists(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [without_empty_lists(item) for item in value]
    return value


async def test_same_answers(client: AsyncShoalClient, kinesis: Any) -> None:
    await client.call("CreateStream", {"StreamName": "both", "ShardCount": 3})
    for i in range(6):
        await client.call(
            "PutRecord", {"StreamName": "both", "PartitionKey": f"g{i}", "Data": b"grpc-%d" % i}
        )
        await call(kinesis.put_record, StreamName="both", PartitionKey=f"h{i}", Data=b"http-%d" % i)

    both_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/both"
    registered = await client.call(
        "RegisterStreamConsumer", {"StreamARN": both_arn, "ConsumerName": "fan"}
    )
    consumer_arn = registered["Consumer"]["ConsumerARN"]
    for operation, method, request in [
        ("DescribeStreamSummary", kinesis.describe_stream_summary, {"StreamName": "both"}),
        ("ListStreamConsumers", kinesis.list_stream_consumers, {"StreamARN": both_arn}),
        (
            "DescribeStreamConsumer",
            kinesis.describe_stream_consumer,
            {"ConsumerARN": consumer_arn},
        ),
        ("DescribeStream", kinesis.describe_stream, {"StreamName": "both"}),
        ("ListShards", kinesis.list_shards, {"StreamName": "both"}),
        ("ListStreams", kinesis.list_streams, {}),
        ("DescribeLimits", kinesis.describe_limits, {}),
        ("ListTagsForStream", kinesis.list_tags_for_stream, {"StreamName": "both"}),
    ]:
        over_grpc = await client.call(operation, request)
        over_http = without_metadata(await call(method, **request))
        assert without_empty_lists(over_http) == without_empty_lists(over_grpc), operation

    for shard in (await client.call("ListShards", {"StreamName": "both"}))["Shards"]:
        request = {
            "StreamName": "both",
            "ShardId": shard["ShardId"],
            "ShardIteratorType": "TRIM_HORIZON",
        }
        grpc_iterator = (await client.call("GetShardIterator", request))["ShardIterator"]
        http_iterator = (await call(kinesis.get_shard_iterator, **request))["ShardIterator"]
        over_grpc = await client.call("GetRecords", {"ShardIterator": http_iterator})
        over_http = without_metadata(await call(kinesis.get_records, ShardIterator=grpc_iterator))
        # Each door reads the other's iterator: they are the same token format.
        assert over_http["Records"] == over_grpc["Records"]
        assert over_http["MillisBehindLatest"] == over_grpc["MillisBehindLatest"]


async def test_same_error_names(client: AsyncShoalClient, endpoint: str) -> None:
    """The same bad inputs are refused with the same Kinesis error on both doors (botocore's
    own parameter checks are off, so that the node decides)."""
    kinesis = boto_client(endpoint, parameter_validation=False)
    await client.call("CreateStream", {"StreamName": "exists", "ShardCount": 1})
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("DescribeStream", "describe_stream", {"StreamName": "missing"}),
        ("CreateStream", "create_stream", {"StreamName": "exists", "ShardCount": 1}),
        ("CreateStream", "create_stream", {"StreamName": "bad name", "ShardCount": 0}),
        ("GetRecords", "get_records", {"ShardIterator": "not-an-iterator"}),
        (
            "PutRecord",
            "put_record",
            {
                "StreamName": "exists",
                "PartitionKey": "k",
                "Data": b"x",
                "ExplicitHashKey": str(2**128),
            },
        ),
        ("ListShards", "list_shards", {"NextToken": "garbage"}),
        ("MergeShards", "merge_shards", {"StreamName": "exists", "ShardToMerge": "shardId-0"}),
        (
            "DescribeStreamConsumer",
            "describe_stream_consumer",
            {"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/exists/consumer/c:1"},
        ),
        (
            "RegisterStreamConsumer",
            "register_stream_consumer",
            {
                "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/missing",
                "ConsumerName": "c",
            },
        ),
    ]
    try:
        for operation, method, request in cases:
            with pytest.raises(ShoalError) as over_grpc:
                await client.call(operation, request)
            with pytest.raises(kinesis.exceptions.ClientError) as over_http:
                await call(getattr(kinesis, method), **request)
            error = over_http.value.response["Error"]
            assert error["Code"] == over_grpc.value.code.kinesis_name, (operation, request)
            assert error["Message"] == over_grpc.value.message, (operation, request)
    finally:
        kinesis.close()
