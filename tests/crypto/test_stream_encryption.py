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
import cbor2
import httpx
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
from tests.conftest import connected_client, node_config, running_node

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


async def encryption_types_by_door(
    node: Node, kinesis: Any, clock: ManualClock, name: str
) -> dict[str, list[str]]:
    """Each record's EncryptionType ("absent" when it has none) from TRIM_HORIZON, as
    GetRecords answers it through boto3 (JSON), raw CBOR and gRPC, and as SubscribeToShard
    pushes it through boto3 and gRPC."""
    shard = (await call(kinesis.list_shards, StreamName=name))["Shards"][0]["ShardId"]
    start = {"StreamName": name, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
    types: dict[str, list[str]] = {}

    iterator = (await call(kinesis.get_shard_iterator, **start))["ShardIterator"]
    answer = await call(kinesis.get_records, ShardIterator=iterator)
    types["json"] = [record.get("EncryptionType", "absent") for record in answer["Records"]]

    iterator = (await call(kinesis.get_shard_iterator, **start))["ShardIterator"]
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"http://127.0.0.1:{node.http_port}",
            headers={
                "x-amz-target": "Kinesis_20131202.GetRecords",
                "content-type": "application/x-amz-cbor-1.1",
            },
            content=cbor2.dumps({"ShardIterator": iterator}),
        )
    assert response.status_code == 200, response.content
    # Tag 1 holds epoch milliseconds here (the Java SDK's reading), not cbor2's seconds.
    answer = cbor2.loads(response.content, semantic_decoders={1: lambda value, _: value})
    types["cbor"] = [record.get("EncryptionType", "absent") for record in answer["Records"]]

    stream_arn = (await summary(kinesis, name))["StreamARN"]
    consumer = await call(kinesis.register_stream_consumer, StreamARN=stream_arn, ConsumerName="t")
    consumer_arn = consumer["Consumer"]["ConsumerARN"]
    clock.advance(ms=200)  # the consumer is ACTIVE (consumer_creating_ms)
    async with connected_client(node) as grpc_client:
        token = (await grpc_client.call("GetShardIterator", start))["ShardIterator"]
        got = await grpc_client.call("GetRecords", {"ShardIterator": token})
        types["grpc"] = [record.get("EncryptionType", "absent") for record in got["Records"]]
        count = len(got["Records"])

        def subscribed_by_boto3() -> list[str]:
            seen: list[str] = []
            events = kinesis.subscribe_to_shard(
                ConsumerARN=consumer_arn, ShardId=shard, StartingPosition={"Type": "TRIM_HORIZON"}
            )["EventStream"]
            for message in events:  # bounded by botocore's read timeout
                seen += [
                    r.get("EncryptionType", "absent")
                    for r in message["SubscribeToShardEvent"]["Records"]
                ]
                if len(seen) >= count:
                    break
            events.close()
            return seen

        types["boto3-subscribe"] = await asyncio.to_thread(subscribed_by_boto3)
        stream = grpc_client.subscribe_to_shard(
            {
                "ConsumerARN": consumer_arn,
                "ShardId": shard,
                "StartingPosition": {"Type": "TRIM_HORIZON"},
            }
        )
        seen: list[str] = []
        while len(seen) < count:
            event = await stream.next_event(timeout_s=10)
            assert event is not None, seen
            seen += [
                r.get("EncryptionType", "absent") for r in event["SubscribeToShardEvent"]["Records"]
            ]
        await stream.aclose()
        types["grpc-subscribe"] = seen
    await call(kinesis.deregister_stream_consumer, ConsumerARN=consumer_arn)
    return types


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
    # Each record says how it was stored, on every door, as AWS does: a sealed record carries
    # EncryptionType KMS (and stays so after the stop), a clear one none (read as NONE).
    expected_types = ["absent"] * 3 + ["KMS"] * 4 + ["absent"] * 3
    doors = ("json", "cbor", "grpc", "boto3-subscribe", "grpc-subscribe")
    types = await encryption_types_by_door(node, kinesis, clock, "vault")
    assert types == dict.fromkeys(doors, expected_types)
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
