"""Encryption at rest through boto3 on one in-process node with a master key file (the
default, the cluster key, is what tests/cluster/test_encryption.py and the Firehose tests
run): Start/StopStreamEncryption's states and errors, records sealed on disk from the start on
and readable throughout, data-key rotation, the KeyIds, master-key rotation. One node for all
(its start is most of the cost)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from broker.clock import ManualClock
from broker.crypto.master_keys import (
    LocalKeyFile,
    WithClusterKey,
    create_key_file,
    rotate_key_file,
)
from broker.node import Node
from broker.types import StreamName
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

UPDATING_MS = 1_000
ALIAS = "alias/aws/kinesis"


@pytest.fixture
async def node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    key_file = tmp_path / "keys" / "master-keys.json"
    create_key_file(key_file)
    settings = {"encryption_master_key": "file", "encryption_key_file": key_file}
    config = node_config(
        tmp_path / "node",
        settings=settings,
        stream_updating_ms=UPDATING_MS,
        key_rewrap_interval_ms=100,
    )
    async with running_node(config, clock) as started:
        yield started


@pytest.fixture
def kinesis(node: Node) -> Any:
    client = boto_client(f"http://127.0.0.1:{node.http_port}")
    yield client
    client.close()


def stored_bytes(data_dir: Path) -> bytes:
    """Every byte of the node's shard log as it sits on disk: SST files, WAL, manifests.

    RocksDB's WAL splits a record across its 32 KiB blocks (a 7-byte header between the
    pieces), so a check that some text IS on disk writes it several times."""
    return b"".join(path.read_bytes() for path in (data_dir / "log").rglob("*") if path.is_file())


async def summary(kinesis: Any, name: str) -> dict[str, Any]:
    answer = await call(kinesis.describe_stream_summary, StreamName=name)
    result: dict[str, Any] = answer["StreamDescriptionSummary"]
    return result


async def read_all(kinesis: Any, name: str) -> list[bytes]:
    shard = (await call(kinesis.list_shards, StreamName=name))["Shards"][0]["ShardId"]
    iterator = (
        await call(
            kinesis.get_shard_iterator,
            StreamName=name,
            ShardId=shard,
            ShardIteratorType="TRIM_HORIZON",
        )
    )["ShardIterator"]
    answer = await call(kinesis.get_records, ShardIterator=iterator)
    return [record["Data"] for record in answer["Records"]]


async def error_of(function: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(function, **kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error.get("Message", "")


async def test_records_are_sealed_from_start_to_stop_and_keys_rotate(
    node: Node, kinesis: Any, clock: ManualClock
) -> None:
    await call(kinesis.create_stream, StreamName="vault", ShardCount=1)
    for _ in range(3):
        await call(
            kinesis.put_record, StreamName="vault", PartitionKey="k", Data=b"BEFORE-cleartext"
        )

    await call(
        kinesis.start_stream_encryption, StreamName="vault", EncryptionType="KMS", KeyId=ALIAS
    )
    described = await summary(kinesis, "vault")
    assert described["StreamStatus"] == "UPDATING"
    assert (described["EncryptionType"], described["KeyId"]) == ("KMS", ALIAS)
    clock.advance(ms=UPDATING_MS)
    assert (await summary(kinesis, "vault"))["StreamStatus"] == "ACTIVE"

    put = await call(
        kinesis.put_records,
        StreamName="vault",
        Records=[{"PartitionKey": "k", "Data": b"SEALED-secret-%d" % i} for i in range(3)],
    )
    assert put["EncryptionType"] == "KMS"
    # Calling it again rotates the data key; batches sealed before keep theirs.
    await call(
        kinesis.start_stream_encryption, StreamName="vault", EncryptionType="KMS", KeyId=ALIAS
    )
    clock.advance(ms=UPDATING_MS)
    await call(kinesis.put_record, StreamName="vault", PartitionKey="k", Data=b"SEALED-rotated")
    await call(
        kinesis.stop_stream_encryption, StreamName="vault", EncryptionType="KMS", KeyId=ALIAS
    )
    clock.advance(ms=UPDATING_MS)
    for _ in range(3):
        put = await call(
            kinesis.put_record, StreamName="vault", PartitionKey="k", Data=b"AFTER-clear"
        )
        assert put["EncryptionType"] == "NONE"

    assert await read_all(kinesis, "vault") == [
        *[b"BEFORE-cleartext"] * 3,
        *(b"SEALED-secret-%d" % i for i in range(3)),
        b"SEALED-rotated",
        *[b"AFTER-clear"] * 3,
    ]
    on_disk = stored_bytes(node.data_dir)
    # The scan sees what is stored in the clear (so it can fail), and none of the sealed.
    assert b"BEFORE-cleartext" in on_disk
    assert b"AFTER-clear" in on_disk
    assert b"SEALED-" not in on_disk
    assert node.service is not None
    image = node.service.ctx.image()
    assert [key.version for key in image.streams[StreamName("vault")].data_keys] == [1, 2]

    # KeyIds: unknown ones are KMS exceptions; the file's key by id and ARN, and the
    # AWS-managed alias's ARN, work.
    await call(kinesis.create_stream, StreamName="keys", ShardCount=1)
    code, message = await error_of(
        kinesis.start_stream_encryption, StreamName="keys", EncryptionType="KMS", KeyId="alias/x"
    )
    assert code == "KMSNotFoundException"
    assert "alias/x" in message
    code, _ = await error_of(
        kinesis.start_stream_encryption,
        StreamName="keys",
        EncryptionType="KMS",
        KeyId="arn:aws:kms:us-east-1:000000000000:key/12345678-1234-1234-1234-123456789012",
    )
    assert code == "KMSNotFoundException"
    assert (await summary(kinesis, "keys"))["EncryptionType"] == "NONE"
    assert node.keyring is not None
    configured = node.keyring.master
    assert isinstance(configured, WithClusterKey) and isinstance(configured.primary, LocalKeyFile)
    keys = configured.primary
    key_id = keys.current_key_id()
    for key in (key_id, keys.key_arn(key_id), "arn:aws:kms:us-east-1:000000000000:" + ALIAS):
        await call(
            kinesis.start_stream_encryption, StreamName="keys", EncryptionType="KMS", KeyId=key
        )
        assert (await summary(kinesis, "keys"))["KeyId"] == key
        clock.advance(ms=UPDATING_MS)

    # Master-key rotation: a key appended to the file (`shoal encryption rotate-master-key`)
    # re-wraps every data key on the running node; the records still read.
    assert node.config.encryption_key_file is not None
    new_id = rotate_key_file(node.config.encryption_key_file)
    assert node.service is not None
    ctx = node.service.ctx

    async def rewrapped() -> None:
        while True:
            streams = ctx.image().streams
            wrappings = {k.wrapping for s in streams.values() for k in s.data_keys}
            if wrappings == {f"local:{new_id}"}:
                return
            await asyncio.sleep(0.1)

    async with asyncio.timeout(20):  # the controller's node looks every 0.1 s here
        await rewrapped()
    assert (await read_all(kinesis, "vault"))[3:7] == [
        *(b"SEALED-secret-%d" % i for i in range(3)),
        b"SEALED-rotated",
    ]
