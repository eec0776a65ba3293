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
import grpc
import pytest

from broker.api.kinesis.v1 import kinesis_pb2 as kinesis
from broker.api.leases.v1 import leases_pb2 as leases
from broker.api.limits.v1 import limits_pb2 as limits
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


async def _native(
    node: Node, path: str, request: Any, response_class: Any, region: str | None
) -> Any:
    """One unary call on the node's gRPC port, addressed to `region` (x-shoal-region)."""
    metadata = () if region is None else (("x-shoal-region", region),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return await stub(request, metadata=metadata, timeout=10)


async def test_native_grpc_services_act_in_the_region_their_metadata_names(
    node: Node, endpoint: str
) -> None:
    kinesis_path = "/broker.api.kinesis.v1.KinesisService/"
    await _native(
        node,
        kinesis_path + "CreateStream",
        kinesis.CreateStreamInput(stream_name="native", shard_count=1),
        kinesis.CreateStreamOutput,
        "eu-west-1",
    )
    west = regional_client(endpoint, "eu-west-1")
    east = regional_client(endpoint, "us-east-1")
    try:
        summary = (await call(west.describe_stream_summary, StreamName="native"))[
            "StreamDescriptionSummary"
        ]
        assert summary["StreamARN"] == f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/native"
        with pytest.raises(botocore.exceptions.ClientError):
            await call(east.describe_stream_summary, StreamName="native")
    finally:
        west.close()
        east.close()

    # Leases: the application and its stream are the west region's; east sees neither.
    lease_path = "/broker.api.leases.v1.LeaseService/"
    created = await _native(
        node,
        lease_path + "CreateLeases",
        leases.CreateLeasesRequest(
            application="app",
            stream_name="native",
            leases=[leases.NewLease(shard_id="shardId-000000000000")],
        ),
        leases.CreateLeasesResponse,
        "eu-west-1",
    )
    assert [(lease.application, lease.stream_name) for lease in created.leases] == [
        ("app", "native")
    ]
    for region, expected in (("eu-west-1", ["app"]), ("us-east-1", []), (None, [])):
        listed = await _native(
            node,
            lease_path + "ListApplications",
            leases.ListApplicationsRequest(),
            leases.ListApplicationsResponse,
            region,
        )
        assert list(listed.applications) == expected, region
    west_leases = await _native(
        node,
        lease_path + "ListLeases",
        leases.ListLeasesRequest(application="app"),
        leases.ListLeasesResponse,
        "eu-west-1",
    )
    assert [lease.stream_name for lease in west_leases.leases] == ["native"]

    # Limits: the west stream is found in the west region only.
    limits_path = "/broker.api.limits.v1.LimitsService/"
    described = await _native(
        node,
        limits_path + "DescribeStreamLimits",
        limits.DescribeStreamLimitsRequest(stream_name="native"),
        limits.StreamLimitsResponse,
        "eu-west-1",
    )
    assert described.stream_name == "native"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _native(
            node,
            limits_path + "DescribeStreamLimits",
            limits.DescribeStreamLimitsRequest(stream_name="native"),
            limits.StreamLimitsResponse,
            None,
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND

    # A region that is not one is refused.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _native(
            node,
            kinesis_path + "ListStreams",
            kinesis.ListStreamsInput(),
            kinesis.ListStreamsOutput,
            "not a region",
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_queues_belong_to_the_region_they_are_created_in(endpoint: str) -> None:
    west = regional_client(endpoint, "eu-west-1")
    east = regional_client(endpoint, "us-east-1")
    try:
        await call(
            west.create_stream,
            StreamName="jobs",
            StreamModeDetails={"StreamMode": "ON_DEMAND"},
        )
        stream_arn = (await call(west.describe_stream_summary, StreamName="jobs"))[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        created = await call(
            west.create_queue, QueueName="work", StreamConfigurationList=[{"StreamARN": stream_arn}]
        )
        arn = created["QueueDescription"]["QueueARN"]
        assert arn.startswith(f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:queue/")
        listed = await call(west.list_queues)
        assert [q["QueueARN"] for q in listed["QueueSummaries"]] == [arn]
        assert (await call(east.list_queues))["QueueSummaries"] == []
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            await call(east.describe_queue, QueueARN=arn)
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        west.close()
        east.close()


async def test_account_limits_are_per_account_and_region(node: Node) -> None:
    """Each account has its own shard and on-demand stream budget in each region, as on AWS:
    one account's streams never use another's, DescribeLimits reports the caller's, and a
    refusal names the caller's account and region. (With one cluster-wide budget of 10 shards
    and one on-demand stream, the second account's creations below would be refused.)"""
    await _native(
        node,
        "/broker.api.limits.v1.LimitsService/UpdateAccountLimits",
        limits.UpdateAccountLimitsRequest(shard_limit=10, on_demand_stream_limit=1),
        limits.AccountLimitsResponse,
        None,
    )
    first = Caller(region="us-east-1", account_id="111111111111", door="grpc")
    second = Caller(region="us-east-1", account_id="222222222222", door="grpc")
    first_west = Caller(region="eu-west-1", account_id="111111111111", door="grpc")
    second_west = Caller(region="eu-west-1", account_id="222222222222", door="grpc")
    service = node.service
    assert service is not None

    async def refusal(operation: str, request: dict[str, Any], caller: Caller) -> str:
        with pytest.raises(ShoalError) as caught:
            await service.call(operation, request, caller)
        assert caught.value.code is ErrorCode.LIMIT_EXCEEDED
        return caught.value.message

    await service.call("CreateStream", {"StreamName": "a", "ShardCount": 3}, first)
    await service.call("CreateStream", {"StreamName": "a", "ShardCount": 8}, second)
    message = await refusal("CreateStream", {"StreamName": "b", "ShardCount": 8}, first)
    assert message.startswith(
        "This request would exceed the shard limit for the account 111111111111 in us-east-1. "
        "Current shard count for the account: 3. Limit: 10. Number of additional shards that "
        "would have resulted from this request: 8."
    )
    scaling = {"StreamName": "a", "TargetShardCount": 16, "ScalingType": "UNIFORM_SCALING"}
    # Scaling past the whole limit is refused in UpdateShardCount's own words (kinesalite's
    # recording of AWS), with the caller's limit and open shards.
    message = await refusal("UpdateShardCount", scaling, second)
    assert message == (
        "Target shard count or number of open shards cannot be greater than 10. "
        "Current open shard count: 8, Target shard count: 16"
    )
    # The same account in another region starts from nothing.
    await service.call("CreateStream", {"StreamName": "b", "ShardCount": 8}, first_west)
    on_demand = {"StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
    await service.call("CreateStream", {"StreamName": "od", **on_demand}, second_west)
    await service.call("CreateStream", {"StreamName": "od", **on_demand}, first)
    message = await refusal("CreateStream", {"StreamName": "od2", **on_demand}, second_west)
    assert message.startswith(
        "This request would exceed the on-demand stream limit for the account 222222222222 in "
        "eu-west-1. Current on-demand stream count for the account: 1. Limit: 1."
    )
    # DescribeLimits reports the caller's own usage.
    for caller, shards, streams in (
        (first, 3 + 4, 1),
        (second, 8, 0),
        (first_west, 8, 0),
        (second_west, 4, 1),
        (Caller(region="us-east-1", account_id=ACCOUNT, door="grpc"), 0, 0),
    ):
        described = await service.call("DescribeLimits", {}, caller)
        assert (described["OpenShardCount"], described["OnDemandStreamCount"]) == (
            shards,
            streams,
        ), caller
        assert described["ShardLimit"] == 10 and described["OnDemandStreamCountLimit"] == 1


async def test_arns_carry_the_partition_of_their_region(endpoint: str) -> None:
    """cn-* regions are AWS's aws-cn partition and us-gov-* its aws-us-gov: their ARNs say so,
    and an ARN naming a region in another partition (arn:aws:…:cn-north-1) names nothing."""
    china = regional_client(endpoint, "cn-north-1")
    gov = regional_client(endpoint, "us-gov-east-1")
    try:
        await call(china.create_stream, StreamName="parts", ShardCount=1)
        await call(gov.create_stream, StreamName="parts", ShardCount=1)
        china_arn = f"arn:aws-cn:kinesis:cn-north-1:{ACCOUNT}:stream/parts"
        gov_arn = f"arn:aws-us-gov:kinesis:us-gov-east-1:{ACCOUNT}:stream/parts"
        summary = (await call(china.describe_stream_summary, StreamName="parts"))[
            "StreamDescriptionSummary"
        ]
        assert summary["StreamARN"] == china_arn
        described = (await call(gov.describe_stream, StreamName="parts"))["StreamDescription"]
        assert described["StreamARN"] == gov_arn
        listed = await call(china.list_streams)
        assert [s["StreamARN"] for s in listed["StreamSummaries"]] == [china_arn]

        # The ARN works where a name does; consumers' ARNs extend the stream's.
        put = await call(china.put_record, StreamARN=china_arn, Data=b"x", PartitionKey="k")
        assert put["ShardId"] == "shardId-000000000000"
        consumer = (
            await call(china.register_stream_consumer, StreamARN=china_arn, ConsumerName="c")
        )["Consumer"]
        assert consumer["ConsumerARN"].startswith(f"{china_arn}/consumer/c:")

        # The same region and account in the aws partition is no stream of AWS's.
        for wrong in (
            f"arn:aws:kinesis:cn-north-1:{ACCOUNT}:stream/parts",
            f"arn:aws-cn:kinesis:us-gov-east-1:{ACCOUNT}:stream/parts",
        ):
            client = china if ":cn-north-1:" in wrong else gov
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                await call(client.describe_stream_summary, StreamARN=wrong)
            assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        china.close()
        gov.close()
