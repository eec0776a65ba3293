"""Encryption at rest with a KMS-compatible service (`encryption_master_key = "kms"`): moto's
server on loopback, reached through boto3 and the standard AWS_ENDPOINT_URL_KMS.

Data keys come from KMS GenerateDataKey under the stream's KeyId (key id, key ARN, alias);
KMS's refusals are Kinesis's KMS* exceptions; records are sealed on disk and read back."""

from __future__ import annotations

import asyncio
import json
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


async def test_a_kms_streams_backup_is_sealed_by_kms_and_a_disabled_key_stops_its_restore(
    node: Node, kms: Any, tmp_path: Path
) -> None:
    """The backup's data keys come from KMS under the stream's key (encryption context: the
    backup label, KeyId and stream ARN); with the key disabled, the restore fails with
    KMSDisabledException before it creates anything, and restores once it is enabled again."""
    from broker.backup.logical import back_up, restore
    from broker.backup.store import DirectoryStore
    from broker.client.backup_keys import BackupKeyClient
    from broker.client.grpc_client import ShoalClient
    from broker.errors import ShoalError

    key = kms.create_key(Description="backups")["KeyMetadata"]
    endpoint = f"127.0.0.1:{node.grpc_port}"
    root = tmp_path / "backup"
    store = DirectoryStore(root)

    def wait_active(shoal: ShoalClient, name: str) -> None:
        for _ in range(500):
            summary = shoal.call("DescribeStreamSummary", {"StreamName": name})
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
        raise AssertionError(name)

    def restored(shoal: ShoalClient, keys: BackupKeyClient) -> int:
        report = restore(
            shoal.call,
            store,
            "sealed",
            as_name="sealed-copy",
            wait_active=lambda name: wait_active(shoal, name),
            wait_keyed=lambda _: None,
            keys=keys,
        )
        return report.records_written

    def scenario() -> None:  # blocking clients: off the loop serving the node
        with ShoalClient(endpoint) as shoal, BackupKeyClient(endpoint) as keys:
            shoal.call("CreateStream", {"StreamName": "sealed", "ShardCount": 1})
            wait_active(shoal, "sealed")
            shoal.call(
                "StartStreamEncryption",
                {"StreamName": "sealed", "EncryptionType": "KMS", "KeyId": key["Arn"]},
            )
            wait_active(shoal, "sealed")
            records = [{"PartitionKey": "k", "Data": b"KMS-BACKUP-%d" % i} for i in range(5)]
            shoal.call("PutRecords", {"StreamName": "sealed", "Records": records})
            back_up(shoal.call, store, "sealed", keys=keys)
            backed_up = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
            assert b"KMS-BACKUP-" not in backed_up
            manifest = json.loads((root / "streams/sealed/manifest.json").read_text())
            assert manifest["data_keys"][0]["wrapped"]["wrapping"] == f"kms:{key['Arn']}"

            kms.disable_key(KeyId=key["KeyId"])
            with pytest.raises(ShoalError) as raised:
                restored(shoal, keys)
            assert raised.value.code.kinesis_name == "KMSDisabledException"
            assert "sealed-copy" not in shoal.call("ListStreams", {})["StreamNames"]

            kms.enable_key(KeyId=key["KeyId"])
            assert restored(shoal, keys) == 5

    await asyncio.to_thread(scenario)
