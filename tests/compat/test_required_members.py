"""No request shape answers 500: every operation of botocore's Kinesis model, with its required
members missing and with only its required members given, over both doors.

The requests are built from the model itself (`sample_request`), so an operation added to the
model or to Shoal is covered without touching this file. Each door gets the whole sweep in one
node (a node per operation would cost more than the sweep); failures are collected and reported
together, so one run names the whole class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
import botocore.model
import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api.kinesis.v1 import kinesis_pb2
from broker.client.grpc_client import AsyncShoalClient
from broker.errors import ShoalError
from broker.gateway.aws_codec import WireFormat, encode_body
from broker.gateway.validation import service_model
from broker.node import Node
from tests.compat.conftest import boto_client, call

pytestmark = pytest.mark.integration

STREAM = "required"
CONSUMER = "reader"
JSON = "application/x-amz-json-1.1"
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_MODEL = service_model()
_IN_FLIGHT = 8  # requests a sweep has in flight at once
_REMOVING = ("DeleteStream", "DeregisterStreamConsumer")


def _samples(node: Node, consumer_arn: str) -> dict[str, Any]:
    """Values for members whose model shape alone does not give a useful value."""
    stream_arn = node.config.stream_arn(STREAM)
    return {
        "StreamName": STREAM,
        "StreamARN": stream_arn,
        "ResourceARN": stream_arn,
        "ConsumerARN": consumer_arn,
        "ConsumerName": "another",
        "ShardId": "shardId-000000000000",
        "ShardToSplit": "shardId-000000000000",
        "ShardToMerge": "shardId-000000000000",
        "AdjacentShardToMerge": "shardId-000000000001",
        "NewStartingHashKey": "1",
        "PartitionKey": "k",
        "Policy": "{}",
        "KeyId": "alias/aws/kinesis",
        "ShardIterator": "not-an-iterator",
    }


def sample_value(shape: botocore.model.Shape, name: str, samples: dict[str, Any]) -> Any:
    """A value of `shape` that passes the model's constraints (required members only)."""
    if name in samples:
        return samples[name]
    metadata = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, botocore.model.StructureShape)
        return sample_request(shape, samples)
    if kind == "list":
        assert isinstance(shape, botocore.model.ListShape)
        return [sample_value(shape.member, "", samples)]
    if kind == "map":
        assert isinstance(shape, botocore.model.MapShape)
        return {"k": sample_value(shape.value, "", samples)}
    if kind == "string":
        enum = getattr(shape, "enum", None)
        if enum:
            return "KMS" if "KMS" in enum else enum[0]
        return "a" * max(1, metadata.get("min", 1))
    if kind in ("integer", "long"):
        return max(1, metadata.get("min", 1))
    if kind == "boolean":
        return False
    if kind == "blob":
        return b"x"
    if kind == "timestamp":
        return datetime(2020, 1, 1, tzinfo=UTC)
    raise AssertionError(f"no sample for {shape.name} ({kind})")


def sample_request(shape: botocore.model.StructureShape, samples: dict[str, Any]) -> dict[str, Any]:
    return {
        name: sample_value(shape.members[name], name, samples) for name in shape.required_members
    }


# Every operation of the model is served (`test_every_model_operation_is_served` pins it).
NOT_SERVED: frozenset[str] = frozenset()


def operations() -> list[str]:
    return sorted(set(_MODEL.operation_names) - NOT_SERVED)


def grpc_operations() -> set[str]:
    service = kinesis_pb2.DESCRIPTOR.services_by_name["KinesisService"]
    return {method.name for method in service.methods}


def test_every_model_operation_is_served(node: Node) -> None:
    assert node.service is not None
    served = node.service.operations
    assert set(operations()) - served == set()
    assert grpc_operations() == served


def requests_of(operation: str, samples: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, request) pairs: nothing; only the required members; each required one missing."""
    shape = _MODEL.operation_model(operation).input_shape
    if shape is None:
        return [("empty", {})]
    full = sample_request(shape, samples)
    cases = [("empty", {}), ("required only", full)]
    cases.extend(
        (f"required and {naming}", {**full, naming: samples[naming]})
        for naming in ("StreamARN", "StreamName")
        if naming in shape.members and naming not in full
    )
    cases.extend(
        (f"no {missing}", {k: v for k, v in full.items() if k != missing})
        for missing in shape.required_members
    )
    return cases


def missing_required(operation: str, request: dict[str, Any]) -> list[str]:
    shape = _MODEL.operation_model(operation).input_shape
    assert shape is not None
    return [name for name in shape.required_members if name not in request]


def judge(
    operation: str, label: str, request: dict[str, Any], status: int, name: str, message: str
) -> str | None:
    """What is wrong with one answer, or None."""
    where = f"{operation} ({label}): {status} {name}: {message[:160]}"
    if status >= 500 or name in ("InternalFailure", "UnknownOperationException"):
        return where
    absent = missing_required(operation, request) if request or label == "empty" else []
    if absent:
        if name != "ValidationException":
            return where
        for member in absent:
            path = member[:1].lower() + member[1:]
            if f"Value null at '{path}' failed to satisfy constraint" not in message:
                return where + f" (does not name {path})"
    return None


async def _setup(endpoint: str) -> str:
    kinesis = boto_client(endpoint)
    try:
        await call(kinesis.create_stream, StreamName=STREAM, ShardCount=2)
        arn = (await call(kinesis.describe_stream_summary, StreamName=STREAM))[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        consumer = await call(
            kinesis.register_stream_consumer, StreamARN=arn, ConsumerName=CONSUMER
        )
        consumer_arn: str = consumer["Consumer"]["ConsumerARN"]
        return consumer_arn
    finally:
        kinesis.close()


async def _sweep(
    node: Node,
    ask: Callable[[str, dict[str, Any]], Awaitable[tuple[int, str, str]]],
    only: set[str] | None = None,
) -> list[str]:
    consumer_arn = await _setup(f"http://127.0.0.1:{node.http_port}")
    samples = _samples(node, consumer_arn)
    cases = [
        (operation, label, request)
        for operation in operations()
        if only is None or operation in only
        for label, request in requests_of(operation, samples)
    ]
    slots = asyncio.Semaphore(_IN_FLIGHT)

    async def judged(operation: str, label: str, request: dict[str, Any]) -> str | None:
        async with slots:
            status, name, message = await ask(operation, request)
        return judge(operation, label, request, status, name, message)

    # A few requests in flight at a time (hundreds of calls); the ones that remove the stream
    # or the consumer the others name come after the rest, one at a time.
    removing = [case for case in cases if case[0].startswith(_REMOVING)]
    found = await asyncio.gather(*(judged(*case) for case in cases if case not in removing))
    found += [await judged(*case) for case in removing]
    return [problem for problem in found if problem is not None]


async def test_raw_http_never_answers_500(node: Node) -> None:
    url = f"http://127.0.0.1:{node.http_port}"
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:

        async def ask(operation: str, request: dict[str, Any]) -> tuple[int, str, str]:
            body = encode_body(request, WireFormat.JSON)
            response = await client.post(
                url,
                headers={"x-amz-target": f"Kinesis_20131202.{operation}", "content-type": JSON},
                content=body,
            )
            if response.status_code == 200:
                return 200, "", ""
            document = response.json() if response.content else {}
            text = document.get("message") or document.get("Message") or ""
            return response.status_code, str(document.get("__type", "")), str(text)

        problems = await _sweep(node, ask)
    assert not problems, "\n".join(problems)


async def test_boto3_without_validation_never_answers_500(node: Node) -> None:
    kinesis = boto_client(f"http://127.0.0.1:{node.http_port}", parameter_validation=False)

    async def ask(operation: str, request: dict[str, Any]) -> tuple[int, str, str]:
        method = getattr(kinesis, botocore.xform_name(operation))
        try:
            response = await call(method, **request)
            if operation == "SubscribeToShard":
                response["EventStream"].close()
        except botocore.exceptions.ClientError as error:
            details = error.response
            return (
                details["ResponseMetadata"]["HTTPStatusCode"],
                details["Error"]["Code"],
                details["Error"].get("Message", ""),
            )
        return 200, "", ""

    try:
        problems = await _sweep(node, ask)
    finally:
        kinesis.close()
    assert not problems, "\n".join(problems)


async def test_grpc_never_answers_internal(node: Node, client: AsyncShoalClient) -> None:
    async def ask(operation: str, request: dict[str, Any]) -> tuple[int, str, str]:
        try:
            if operation == "SubscribeToShard":
                events = client.subscribe_to_shard(request, timeout_s=5)
                async for _ in events:
                    break
                await events.aclose()
            else:
                await client.call(operation, request)
        except ShoalError as error:
            return error.code.spec.http_status, error.code.kinesis_name, error.message
        return 200, "", ""

    problems = await _sweep(node, ask, only=grpc_operations())
    assert not problems, "\n".join(problems)


async def test_malformed_protobuf_is_invalid_argument(node: Node) -> None:
    """Bytes that are not the RPC's message: INVALID_ARGUMENT, SerializationException."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        put_record: Any = channel.unary_unary(
            "/broker.api.kinesis.v1.KinesisService/PutRecord",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await put_record(b"\xff\xff\xff\xff", timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    failed: Any = caught.value  # an AioRpcError is a grpc.Call at run time
    status = rpc_status.from_call(failed)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "SerializationException"
    assert "Traceback" not in str(caught.value.details())
