"""Encryption at rest with a KMS-compatible service (`encryption_master_key = "kms"`): moto's
server on loopback, reached through boto3 and the standard AWS_ENDPOINT_URL_KMS.

Data keys come from KMS GenerateDataKey under the stream's KeyId (key id, key ARN, alias);
KMS's refusals are Kinesis's KMS* exceptions; records are sealed on disk and read back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config, running_node
from tests.crypto.test_stream_encryption import error_of, read_all, stored_bytes
from tests.s3_server import REGION, S3Server, s3_server  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kms(s3_server: S3Server) -> Iterator[Any]:  # noqa: F811 (the fixture)
    client = boto3.client(
        "kms",
        endpoint_url=s3_server.endpoint_url,
        region_name=REGION,
        aws_access_key_id="shoal-test",
        aws_secret_access_key="shoal-test-secret",
    )
    yield client
    client.close()


@pytest.fixture
async def node(
    tmp_path: Path,
    clock: ManualClock,
    s3_server: S3Server,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Node]:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", s3_server.endpoint_url)
    config = node_config(tmp_path / "node", settings={"encryption_master_key": "kms"})
    async with running_node(config, clock) as started:
        yield started


@pytest.fixture
def kinesis(node: Node) -> Iterator[Any]:
    client = boto_client(f"http://127.0.0.1:{node.http_port}")
    yield client
    client.close()


async def test_kms_data_keys_seal_records_and_refusals_are_kms_exceptions(
    node: Node, kinesis: Any, kms: Any
) -> None:
    """One node for both halves (a node start is most of the cost)."""
    key = kms.create_key(Description="kinesis")["KeyMetadata"]
    kms.create_alias(AliasName="alias/streams", TargetKeyId=key["KeyId"])
    await call(kinesis.create_stream, StreamName="kms", ShardCount=1)
    for key_id in (key["Arn"], "alias/streams", key["KeyId"]):
        await call(
            kinesis.start_stream_encryption, StreamName="kms", EncryptionType="KMS", KeyId=key_id
        )
        await call(
            kinesis.put_record, StreamName="kms", PartitionKey="k", Data=b"KMS-SEALED-" + b"x"
        )
    summary = (await call(kinesis.describe_stream_summary, StreamName="kms"))[
        "StreamDescriptionSummary"
    ]
    assert (summary["EncryptionType"], summary["KeyId"]) == ("KMS", key["KeyId"])
    assert await read_all(kinesis, "kms") == [b"KMS-SEALED-x"] * 3
    assert b"KMS-SEALED-" not in stored_bytes(node.data_dir)
    assert node.service is not None
    stream = next(iter(node.service.ctx.image().streams.values()))
    assert [k.wrapping for k in stream.data_keys] == [f"kms:{key['Arn']}"] * 3

    await call(kinesis.create_stream, StreamName="refused", ShardCount=1)
    disabled = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=disabled)
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    for key_id, expected in (
        ("alias/none-such", "KMSNotFoundException"),
        (
            "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
            "KMSNotFoundException",
        ),
        (disabled, "KMSDisabledException"),
        (doomed, "KMSInvalidStateException"),
    ):
        code, _ = await error_of(
            kinesis.start_stream_encryption,
            StreamName="refused",
            EncryptionType="KMS",
            KeyId=key_id,
        )
        assert code == expected, key_id
    summary = (await call(kinesis.describe_stream_summary, StreamName="refused"))[
        "StreamDescriptionSummary"
    ]
    assert summary["EncryptionType"] == "NONE"
