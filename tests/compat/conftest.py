"""Fixtures for the AWS-protocol tests: boto3 clients for the in-process `node`.

boto3 is synchronous and the node runs on the test's event loop, so every boto3 call goes
through `asyncio.to_thread` (`call`). Retries are off unless a test asks for them, so that an
error reaches the test as the error the node sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import pytest

from broker.node import Node

T = TypeVar("T")

REGION = "us-east-1"
# Bounds every boto3 call: a hung server fails the test instead of hanging it.
_CONNECT_TIMEOUT_S = 5
_READ_TIMEOUT_S = 30


def boto_client(
    endpoint_url: str,
    *,
    access_key: str = "x",
    secret_key: str = "y",
    retries: dict[str, Any] | None = None,
    parameter_validation: bool = True,
    signature_version: Any = None,
    **client_kwargs: Any,
) -> Any:
    """A boto3 Kinesis client for `endpoint_url`, retries off by default: botocore's
    `total_max_attempts` counts the first attempt (1: no retry), while `max_attempts` counts
    retries only (1 would retry once)."""
    retry_policy: Any = (
        retries if retries is not None else {"mode": "standard", "total_max_attempts": 1}
    )
    config = botocore.config.Config(
        retries=retry_policy,
        connect_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=_READ_TIMEOUT_S,
        parameter_validation=parameter_validation,
        signature_version=signature_version,
    )
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
        **client_kwargs,
    )


async def call(function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run one blocking boto3 call off the loop that serves it."""
    return await asyncio.to_thread(function, **kwargs)


async def error_of(function: Any, **kwargs: Any) -> tuple[str, str]:
    """The error code and message of a boto3 call that must fail."""
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(function, **kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error.get("Message", "")


async def on_demand_stream(kinesis: Any, name: str) -> str:
    """Creates an on-demand stream through boto3; its ARN."""
    await call(
        kinesis.create_stream, StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"}
    )
    summary = await call(kinesis.describe_stream_summary, StreamName=name)
    arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
    return arn


@pytest.fixture
def endpoint(node: Node) -> str:
    return f"http://127.0.0.1:{node.http_port}"


@pytest.fixture
def kinesis(endpoint: str) -> Iterator[Any]:
    client = boto_client(endpoint)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def calls_seen(kinesis: Any) -> set[str]:
    """The operation names `kinesis` has called, collected from botocore's events."""
    seen: set[str] = set()

    def record(model: Any, **_: Any) -> None:
        seen.add(model.name)

    kinesis.meta.events.register("before-call.kinesis", record)
    return seen
