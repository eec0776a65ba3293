"""The enhanced fan-out consumer registry through both front doors: gRPC (the native client)
and the AWS HTTP API (boto3). Consumers show CREATING and DELETING for STATE_MS of the node's
manual clock, then ACTIVE or gone, as on AWS."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from broker.cli import main
from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.node import Node
from tests.compat.conftest import boto_client, call
from tests.conftest import connected_client, node_config, running_node
from tests.gateway.test_grpc_api import expect_error

pytestmark = pytest.mark.integration

STATE_MS = 1_000
LIMIT = 4  # consumers_per_stream_max of the test node
ACCOUNT = "000000000000"


@pytest.fixture
async def consumer_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(
        tmp_path / "node",
        settings={"consumers_per_stream_max": LIMIT},
        consumer_creating_ms=STATE_MS,
        consumer_deleting_ms=STATE_MS,
    )
    async with running_node(config, clock) as node:
        yield node


@pytest.fixture
async def grpc(consumer_node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(consumer_node) as client:
        yield client


@pytest.fixture
def kinesis(consumer_node: Node) -> Iterator[Any]:
    client = boto_client(f"http://127.0.0.1:{consumer_node.http_port}")
    try:
        yield client
    finally:
        client.close()


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}"


async def create_stream(client: AsyncShoalClient, name: str) -> str:
    await client.call("CreateStream", {"StreamName": name, "ShardCount": 1})
    return stream_arn(name)


async def register(client: AsyncShoalClient, arn: str, name: str) -> dict[str, Any]:
    response = await client.call("RegisterStreamConsumer", {"StreamARN": arn, "ConsumerName": name})
    consumer: dict[str, Any] = response["Consumer"]
    return consumer


async def describe(client: AsyncShoalClient, **request: str) -> dict[str, Any]:
    response = await client.call("DescribeStreamConsumer", request)
    description: dict[str, Any] = response["ConsumerDescription"]
    return description


async def test_lifecycle_over_grpc(grpc: AsyncShoalClient, clock: ManualClock) -> None:
    arn = await create_stream(grpc, "s")
    consumer = await register(grpc, arn, "app")
    created_s = clock.wall_ms() // 1000
    assert consumer["ConsumerName"] == "app"
    assert consumer["ConsumerARN"] == f"{arn}/consumer/app:{created_s}"
    assert consumer["ConsumerStatus"] == "CREATING"
    assert int(consumer["ConsumerCreationTimestamp"].timestamp()) == created_s

    by_arn = await describe(grpc, ConsumerARN=consumer["ConsumerARN"])
    by_name = await describe(grpc, StreamARN=arn, ConsumerName="app")
    assert by_arn == by_name
    assert by_arn["StreamARN"] == arn
    assert by_arn["ConsumerStatus"] == "CREATING"

    clock.advance(ms=STATE_MS)
    assert (await describe(grpc, ConsumerARN=consumer["ConsumerARN"]))["ConsumerStatus"] == (
        "ACTIVE"
    )
    summary = await grpc.call("DescribeStreamSummary", {"StreamName": "s"})
    assert summary["StreamDescriptionSummary"]["ConsumerCount"] == 1

    await grpc.call("DeregisterStreamConsumer", {"ConsumerARN": consumer["ConsumerARN"]})
    assert (await describe(grpc, ConsumerARN=consumer["ConsumerARN"]))["ConsumerStatus"] == (
        "DELETING"
    )
    listed = await grpc.call("ListStreamConsumers", {"StreamARN": arn})
    assert [c["ConsumerStatus"] for c in listed["Consumers"]] == ["DELETING"]
    # A DELETING consumer still holds its name.
    await expect_error("ResourceInUseException", register(grpc, arn, "app"))

    clock.advance(ms=STATE_MS)
    await expect_error(
        "ResourceNotFoundException", describe(grpc, ConsumerARN=consumer["ConsumerARN"])
    )
    assert (await grpc.call("ListStreamConsumers", {"StreamARN": arn})).get("Consumers", []) == []
    await expect_error(
        "ResourceNotFoundException",
        grpc.call("DeregisterStreamConsumer", {"ConsumerARN": consumer["ConsumerARN"]}),
    )

    # The name is free again; a new registration a second later gets a new ARN.
    clock.advance(ms=1_000)
    again = await register(grpc, arn, "app")
    assert again["ConsumerARN"] != consumer["ConsumerARN"]
    await expect_error(
        "ResourceNotFoundException", describe(grpc, ConsumerARN=consumer["ConsumerARN"])
    )


async def test_errors(grpc: AsyncShoalClient, clock: ManualClock) -> None:
    await expect_error("ResourceNotFoundException", register(grpc, stream_arn("missing"), "c"))
    await expect_error(
        "ResourceNotFoundException",
        grpc.call("ListStreamConsumers", {"StreamARN": stream_arn("x")}),
    )
    arn = await create_stream(grpc, "s")
    await register(grpc, arn, "c")
    await expect_error("ResourceInUseException", register(grpc, arn, "c"))
    await expect_error(
        "ResourceNotFoundException", describe(grpc, StreamARN=arn, ConsumerName="nope")
    )
    await expect_error(
        "ResourceNotFoundException",
        describe(grpc, ConsumerARN=f"{arn}/consumer/nope:1790000000"),
    )
    # Neither a consumer ARN nor both stream ARN and name.
    await expect_error("InvalidArgumentException", describe(grpc, StreamARN=arn))
    await expect_error(
        "InvalidArgumentException", grpc.call("DeregisterStreamConsumer", {"ConsumerName": "c"})
    )
    # Malformed ARNs are refused by the model's pattern before any lookup.
    await expect_error("ValidationException", describe(grpc, ConsumerARN="arn:nonsense"))
    await expect_error("ValidationException", register(grpc, "not-an-arn", "c"))
    # Another account's stream is not found here.
    other = "arn:aws:kinesis:us-east-1:111111111111:stream/s"
    await expect_error("ResourceNotFoundException", register(grpc, other, "c2"))
    await expect_error(
        "ResourceNotFoundException", describe(grpc, ConsumerARN=f"{other}/consumer/c:1")
    )
    # A consumer name that breaks the model's pattern.
    await expect_error("ValidationException", register(grpc, arn, "bad name"))


async def test_stream_states_and_deletion(grpc: AsyncShoalClient, tmp_path: Path) -> None:
    arn = await create_stream(grpc, "s")
    consumer = await register(grpc, arn, "c")
    await grpc.call("DeleteStream", {"StreamName": "s", "EnforceConsumerDeletion": True})
    # The stream's consumers go with it; its ARN finds nothing, even once recreated.
    await expect_error("ResourceNotFoundException", register(grpc, arn, "c2"))
    await expect_error(
        "ResourceNotFoundException", describe(grpc, ConsumerARN=consumer["ConsumerARN"])
    )
    await create_stream(grpc, "s")
    assert (await grpc.call("ListStreamConsumers", {"StreamARN": arn})).get("Consumers", []) == []
    await expect_error(
        "ResourceNotFoundException", describe(grpc, ConsumerARN=consumer["ConsumerARN"])
    )


async def test_register_on_creating_stream(tmp_path: Path, clock: ManualClock) -> None:
    config = node_config(tmp_path / "node", stream_creating_ms=STATE_MS, consumer_creating_ms=0)
    async with running_node(config, clock) as node, connected_client(node) as client:
        arn = await create_stream(client, "s")
        await expect_error("ResourceInUseException", register(client, arn, "c"))
        clock.advance(ms=STATE_MS)
        consumer = await register(client, arn, "c")
        assert consumer["ConsumerStatus"] == "ACTIVE"  # creating takes 0 ms on this node


async def test_limits(grpc: AsyncShoalClient, clock: ManualClock) -> None:
    arn = await create_stream(grpc, "s")
    for i in range(LIMIT):
        await register(grpc, arn, f"c{i}")
    await expect_error("LimitExceededException", register(grpc, arn, "one-too-many"))
    # DELETING consumers still count; gone ones free their place.
    await grpc.call("DeregisterStreamConsumer", {"StreamARN": arn, "ConsumerName": "c0"})
    await expect_error("LimitExceededException", register(grpc, arn, "one-too-many"))
    clock.advance(ms=STATE_MS)
    await register(grpc, arn, "now-fits")
    # The limit is per stream.
    other = await create_stream(grpc, "t")
    await register(grpc, other, "c0")


async def test_at_most_five_creating(tmp_path: Path, clock: ManualClock) -> None:
    config = node_config(tmp_path / "node", consumer_creating_ms=STATE_MS)
    async with running_node(config, clock) as node, connected_client(node) as client:
        arn = await create_stream(client, "s")
        for i in range(5):
            await register(client, arn, f"c{i}")
        await expect_error("LimitExceededException", register(client, arn, "sixth"))
        clock.advance(ms=STATE_MS)
        assert (await register(client, arn, "sixth"))["ConsumerStatus"] == "CREATING"


async def test_pagination(grpc: AsyncShoalClient, clock: ManualClock) -> None:
    arn = await create_stream(grpc, "s")
    names = []
    for i in range(LIMIT):
        names.append(f"c{i}")
        await register(grpc, arn, f"c{i}")
        clock.advance(ms=STATE_MS)  # CREATING ends, so the five-at-once rule stays out
    seen: list[str] = []
    request: dict[str, Any] = {"StreamARN": arn, "MaxResults": 3}
    pages = 0
    while True:
        page = await grpc.call("ListStreamConsumers", request)
        pages += 1
        seen.extend(c["ConsumerName"] for c in page["Consumers"])
        if "NextToken" not in page:
            break
        request = {"StreamARN": arn, "NextToken": page["NextToken"], "MaxResults": 3}
    assert seen == names  # oldest first
    assert pages == 2
    # A token is bound to its stream and expires after 300 s.
    first = await grpc.call("ListStreamConsumers", {"StreamARN": arn, "MaxResults": 1})
    other = await create_stream(grpc, "t")
    await expect_error(
        "InvalidArgumentException",
        grpc.call("ListStreamConsumers", {"StreamARN": other, "NextToken": first["NextToken"]}),
    )
    clock.advance(ms=301_000)
    await expect_error(
        "ExpiredNextTokenException",
        grpc.call("ListStreamConsumers", {"StreamARN": arn, "NextToken": first["NextToken"]}),
    )
    await expect_error(
        "ValidationException", grpc.call("ListStreamConsumers", {"StreamARN": arn, "MaxResults": 0})
    )


async def test_stream_creation_timestamp_filter(grpc: AsyncShoalClient, clock: ManualClock) -> None:
    arn = await create_stream(grpc, "s")
    await register(grpc, arn, "c")
    created = datetime.datetime.fromtimestamp(clock.wall_ms() / 1000, tz=datetime.UTC)
    listed = await grpc.call(
        "ListStreamConsumers", {"StreamARN": arn, "StreamCreationTimestamp": created}
    )
    assert [c["ConsumerName"] for c in listed["Consumers"]] == ["c"]
    await expect_error(
        "ResourceNotFoundException",
        grpc.call(
            "ListStreamConsumers",
            {"StreamARN": arn, "StreamCreationTimestamp": created - datetime.timedelta(hours=1)},
        ),
    )


async def test_boto3_over_http(grpc: AsyncShoalClient, kinesis: Any, clock: ManualClock) -> None:
    await call(kinesis.create_stream, StreamName="h", ShardCount=1)
    arn = (await call(kinesis.describe_stream_summary, StreamName="h"))["StreamDescriptionSummary"][
        "StreamARN"
    ]
    registered = await call(
        kinesis.register_stream_consumer, StreamARN=arn, ConsumerName="app", Tags={"team": "x"}
    )
    consumer = registered["Consumer"]
    assert consumer["ConsumerStatus"] == "CREATING"
    assert consumer["ConsumerARN"].startswith(f"{arn}/consumer/app:")
    assert isinstance(consumer["ConsumerCreationTimestamp"], datetime.datetime)

    clock.advance(ms=STATE_MS)
    described = (await call(kinesis.describe_stream_consumer, ConsumerARN=consumer["ConsumerARN"]))[
        "ConsumerDescription"
    ]
    assert described["ConsumerStatus"] == "ACTIVE"
    assert described["StreamARN"] == arn
    # Both doors give the same answers.
    over_grpc = await describe(grpc, ConsumerARN=consumer["ConsumerARN"])
    assert over_grpc == described

    listed = await call(kinesis.list_stream_consumers, StreamARN=arn)
    assert [c["ConsumerName"] for c in listed["Consumers"]] == ["app"]
    paginator = kinesis.get_paginator("list_stream_consumers")
    pages = await asyncio.to_thread(lambda: list(paginator.paginate(StreamARN=arn)))
    assert [c["ConsumerName"] for page in pages for c in page["Consumers"]] == ["app"]

    # Tags on the consumer ARN (TagResource & co. accept consumer ARNs on AWS).
    await call(kinesis.tag_resource, ResourceARN=consumer["ConsumerARN"], Tags={"env": "dev"})
    tags = await call(kinesis.list_tags_for_resource, ResourceARN=consumer["ConsumerARN"])
    assert tags["Tags"] == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "x"}]
    await call(kinesis.untag_resource, ResourceARN=consumer["ConsumerARN"], TagKeys=["team"])
    tags = await call(kinesis.list_tags_for_resource, ResourceARN=consumer["ConsumerARN"])
    assert tags["Tags"] == [{"Key": "env", "Value": "dev"}]
    stream_tags = await call(kinesis.list_tags_for_resource, ResourceARN=arn)
    assert stream_tags["Tags"] == []  # the consumer's tags are its own

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(kinesis.register_stream_consumer, StreamARN=arn, ConsumerName="app")
    assert caught.value.response["Error"]["Code"] == "ResourceInUseException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    await call(kinesis.deregister_stream_consumer, StreamARN=arn, ConsumerName="app")
    described = (await call(kinesis.describe_stream_consumer, StreamARN=arn, ConsumerName="app"))[
        "ConsumerDescription"
    ]
    assert described["ConsumerStatus"] == "DELETING"
    clock.advance(ms=STATE_MS)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(kinesis.describe_stream_consumer, ConsumerARN=consumer["ConsumerARN"])
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_the_consumers_cli(
    consumer_node: Node, grpc: AsyncShoalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_stream(grpc, "s")
    endpoint = ["--endpoint", f"127.0.0.1:{consumer_node.grpc_port}"]

    async def shoal(*argv: str) -> int:
        # The CLI is synchronous: give it a thread, this loop keeps serving the node.
        code: int = await asyncio.to_thread(main, [*endpoint, *argv])
        return code

    assert await shoal("consumers", "list", "--stream", "s") == 0
    assert capsys.readouterr().out.strip() == "(no consumers registered on s)"
    assert await shoal("consumers", "register", "--stream", "s", "--name", "fan") == 0
    arn = capsys.readouterr().out.strip()
    assert arn.startswith(f"{stream_arn('s')}/consumer/fan:")
    assert await shoal("consumers", "list", "--stream", "s") == 0
    fields = capsys.readouterr().out.split()
    assert (fields[0], fields[1], fields[-1]) == ("fan", "CREATING", arn)
    assert await shoal("--json", "consumers", "describe", "--arn", arn) == 0
    assert '"ConsumerStatus": "CREATING"' in capsys.readouterr().out
    assert await shoal("consumers", "register", "--stream", "s", "--name", "fan") == 1
    assert "ResourceInUseException" in capsys.readouterr().err
    assert await shoal("consumers", "deregister", "--stream", "s", "--name", "fan") == 0
    assert await shoal("consumers", "describe", "--stream", "s", "--name", "fan") == 0
    assert capsys.readouterr().out.split()[1] == "DELETING"
    assert await shoal("consumers", "list", "--stream", "missing") == 1
    assert "ResourceNotFoundException" in capsys.readouterr().err
    # DeleteStream refuses a stream with registered consumers unless told to delete them too.
    assert await shoal("consumers", "register", "--stream", "s", "--name", "other") == 0
    assert await shoal("delete-stream", "s") == 1
    assert "ResourceInUseException" in capsys.readouterr().err
    assert await shoal("delete-stream", "s", "--enforce-consumer-deletion") == 0
    await expect_error("ResourceNotFoundException", register(grpc, stream_arn("s"), "x"))
