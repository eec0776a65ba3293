"""No analytics request shape answers 500: every operation of botocore's kinesisanalytics and
kinesisanalyticsv2 models, with nothing, with only its required members and with each required
member missing, through boto3 (HTTP, the client's own validation off) and through gRPC. A
missing member is AWS's ValidationException naming it (`tests/required_members.py`).

The requests name one SQL application of each API that exists, so "required only" reaches the
service's own checks, not just the not-found answer. One node for the module; each door's
sweep of both models is one test (~250 calls)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import pytest_asyncio

from broker.api.analytics.v1 import analytics_pb2 as v1_pb2
from broker.api.analytics.v2 import analytics_pb2 as v2_pb2
from broker.gateway.validation import service_model
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP, analytics_client
from tests.analytics.test_api import ACCOUNT, ROLE
from tests.compat.conftest import REGION, call
from tests.required_members import boto3_ask, grpc_ask, grpc_operations, sweep

pytestmark = [pytest.mark.integration, MODULE_LOOP]

V1 = "kinesisanalytics"
V2 = "kinesisanalyticsv2"
V1_APP = "required-v1"
V2_APP = "required-v2"
SERVICES = {
    V1: v1_pb2.DESCRIPTOR.services_by_name["KinesisAnalyticsService"],
    V2: v2_pb2.DESCRIPTOR.services_by_name["KinesisAnalyticsV2Service"],
}


def _samples(application: str) -> dict[str, Any]:
    """Values for members whose model shape alone does not give a useful value."""
    return {
        "ApplicationName": application,
        "ResourceARN": f"arn:aws:kinesisanalytics:{REGION}:{ACCOUNT}:application/{application}",
        "ServiceExecutionRole": ROLE,
        "RoleARN": ROLE,
        "CurrentApplicationVersionId": 1,
        "ApplicationVersionId": 1,
        "RuntimeEnvironment": "SQL-1_0",
        "InputId": "1.1",
        "OutputId": "1.1",
        "ReferenceId": "1.1",
        "CloudWatchLoggingOptionId": "1.1",
        "SnapshotName": "snap",
        "OperationId": "op",
        "SnapshotOperationId": "op",
        "UrlType": "FLINK_DASHBOARD_URL",
        "LogStreamARN": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g:log-stream:s",
        "BucketARN": "arn:aws:s3:::bucket",
        "FileKey": "key",
        "TagKeys": ["missing"],
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def applications(node: Node) -> None:
    """One SQL application per API (v1's has no input; v2's is created with its role)."""
    v1 = analytics_client(node)
    v2 = analytics_client(node, service=V2)
    try:
        await call(v1.create_application, ApplicationName=V1_APP)
        await call(
            v2.create_application,
            ApplicationName=V2_APP,
            RuntimeEnvironment="SQL-1_0",
            ServiceExecutionRole=ROLE,
        )
    finally:
        v1.close()
        v2.close()


@pytest.mark.usefixtures("applications")
async def test_boto3_never_answers_500(node: Node) -> None:
    problems: list[str] = []
    for model, application in ((V1, V1_APP), (V2, V2_APP)):
        client = analytics_client(node, parameter_validation=False, service=model)
        try:
            operations = service_model(model).operation_names
            problems += await sweep(model, operations, _samples(application), boto3_ask(client))
        finally:
            client.close()
    assert not problems, "\n".join(problems)


@pytest.mark.usefixtures("applications")
async def test_grpc_never_answers_internal(node: Node) -> None:
    problems: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        for model, application in ((V1, V1_APP), (V2, V2_APP)):
            service = SERVICES[model]
            served = grpc_operations(service)
            assert served == set(service_model(model).operation_names), model
            ask = grpc_ask(channel, service)
            problems += await sweep(model, served, _samples(application), ask)
    assert not problems, "\n".join(problems)
