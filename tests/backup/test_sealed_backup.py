"""Sealed backups of encrypted streams (broker/backup/sealing.py, the BackupKeyService),
against an in-process node through the real gRPC API.

Goal (s28): a backup of an encrypted stream holds none of its records' bytes (data and
partition keys) in the clear: each run's segments are AES-GCM under a data key made by the
cluster's master key under the stream's KeyId, kept only wrapped. A restore opens every key and
authenticates every segment before it creates anything: a tampered, truncated, reordered or
swapped segment is refused, a key this cluster lacks is KMSNotFoundException, and in both cases
no stream is created. A clear stream's backup is unchanged (manifest version 1, JSON lines).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.backup import logical
from broker.backup.logical import BackupError, back_up, manifest_key, restore
from broker.backup.store import DirectoryStore
from broker.client.backup_keys import BackupKeyClient
from broker.client.grpc_client import ShoalClient
from broker.errors import ShoalError
from broker.node import Node
from tests.conftest import shared_node_fixtures
from tests.support import read_shard

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

clock, node, client = shared_node_fixtures()

KEY_ID = "alias/aws/kinesis"
DATA = b"SECRET-RECORD-"  # every record's data starts with it
PARTITION = "SECRET-KEY-"  # and every partition key


class Api:
    def __init__(self, endpoint: str) -> None:
        self.client = ShoalClient(endpoint)
        self.keys = BackupKeyClient(endpoint)

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(operation, request)

    def wait_active(self, name: str) -> None:
        for _ in range(500):
            summary = self.call("DescribeStreamSummary", {"StreamName": name})
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
        raise AssertionError(f"{name} never became ACTIVE")

    def put(self, name: str, keys: range) -> None:
        records = [{"PartitionKey": f"{PARTITION}{i}", "Data": DATA + b"%d" % i} for i in keys]
        self.call("PutRecords", {"StreamName": name, "Records": records})

    def make(self, name: str, *, encrypted: bool) -> None:
        self.call("CreateStream", {"StreamName": name, "ShardCount": 2})
        self.wait_active(name)
        if encrypted:
            self.call(
                "StartStreamEncryption",
                {"StreamName": name, "EncryptionType": "KMS", "KeyId": KEY_ID},
            )
            self.wait_active(name)

    def contents(self, name: str) -> dict[str, list[tuple[str, bytes]]]:
        shards = self.call("ListShards", {"StreamName": name})["Shards"]
        return {
            s["ShardId"]: [
                (r["PartitionKey"], r["Data"]) for r in read_shard(self.client, name, s["ShardId"])
            ]
            for s in shards
        }

    def exists(self, name: str) -> bool:
        try:
            self.call("DescribeStreamSummary", {"StreamName": name})
        except ShoalError as error:
            if error.code.kinesis_name == "ResourceNotFoundException":
                return False
            raise
        return True

    def restore(self, store: DirectoryStore, name: str, as_name: str) -> logical.RestoreReport:
        return restore(
            self.call,
            store,
            name,
            as_name=as_name,
            wait_active=self.wait_active,
            wait_keyed=lambda _: None,
            keys=self.keys,
        )

    def close(self) -> None:
        self.client.close()
        self.keys.close()


@pytest.fixture
def api(node: Node) -> Iterator[Api]:
    opened = Api(f"127.0.0.1:{node.grpc_port}")
    yield opened
    opened.close()


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several segments per shard, so segments can be reordered and swapped."""
    monkeypatch.setattr(logical, "SEGMENT_RECORDS_MAX", 4)


def every_byte(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def segments_of(root: Path, stream: str, shard: str) -> list[Path]:
    return sorted((root / "streams" / stream / "shards" / shard).iterdir())


async def test_an_encrypted_streams_backup_holds_no_record_in_the_clear(
    api: Api, tmp_path: Path, small_segments: None
) -> None:
    await asyncio.to_thread(api.make, "vault", encrypted=True)
    await asyncio.to_thread(api.put, "vault", range(20))
    store = DirectoryStore(tmp_path)
    await asyncio.to_thread(lambda: back_up(api.call, store, "vault", keys=api.keys))
    await asyncio.to_thread(api.put, "vault", range(20, 30))  # an incremental run: a new key
    await asyncio.to_thread(lambda: back_up(api.call, store, "vault", keys=api.keys))

    stored = every_byte(tmp_path)
    assert DATA not in stored and PARTITION.encode() not in stored
    assert base64.b64encode(DATA[:12]) not in stored  # a clear segment's data is base64
    manifest = json.loads((tmp_path / manifest_key("vault")).read_text())
    assert manifest["v"] == 2
    assert [k["id"] for k in manifest["data_keys"]] == [0, 1]
    assert {k["wrapped"]["key_id"] for k in manifest["data_keys"]} == {KEY_ID}
    assert all(s["sealed"] for s in manifest["shards"])

    opened: list[str] = []
    real_open = api.keys.open

    def counted_open(wrapped: dict[str, str]) -> bytes:
        opened.append(wrapped["ciphertext"])
        return real_open(wrapped)

    api.keys.open = counted_open  # type: ignore[method-assign]
    try:
        report = await asyncio.to_thread(api.restore, store, "vault", "vault-restored")
    finally:
        api.keys.open = real_open  # type: ignore[method-assign]
    assert report.records_written == 30
    # Each key opened once: the last run's also sealed the manifest, and is not opened twice.
    assert sorted(opened) == sorted(k["wrapped"]["ciphertext"] for k in manifest["data_keys"])
    source = await asyncio.to_thread(api.contents, "vault")
    restored = await asyncio.to_thread(api.contents, "vault-restored")
    assert restored == source and sum(len(r) for r in restored.values()) == 30

    # A run builds only on an authenticated manifest: one edited since is not re-sealed.
    manifest["shards"][0]["last_sequence"] = manifest["shards"][0]["sealed"][
        manifest["shards"][0]["segments"][0]
    ]["last"]
    (tmp_path / manifest_key("vault")).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="does not authenticate"):
        await asyncio.to_thread(lambda: back_up(api.call, store, "vault", keys=api.keys))


def _tampered(root: Path, stream: str) -> Iterator[tuple[str, Callable[[], None], str]]:
    """(what, how, the refusal's words): each damages a copy of the backup one way."""
    zero, one = "shardId-000000000000", "shardId-000000000001"

    def flip_a_byte() -> None:
        path = segments_of(root, stream, zero)[0]
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))

    def reorder() -> None:
        first, second = segments_of(root, stream, zero)[:2]
        a, b = first.read_bytes(), second.read_bytes()
        first.write_bytes(b)
        second.write_bytes(a)

    def swap_shards() -> None:
        shutil.copyfile(segments_of(root, stream, zero)[0], segments_of(root, stream, one)[0])

    def truncate() -> None:
        path = segments_of(root, stream, zero)[0]
        path.write_bytes(path.read_bytes()[:-20])

    def drop_the_last() -> None:
        manifest_path = root / manifest_key(stream)
        manifest = json.loads(manifest_path.read_text())
        manifest["shards"][0]["segments"].pop()
        manifest_path.write_text(json.dumps(manifest))

    def claim_clear() -> None:
        manifest_path = root / manifest_key(stream)
        manifest = json.loads(manifest_path.read_text())
        manifest["shards"][0]["sealed"] = {}
        manifest_path.write_text(json.dumps(manifest))

    def grant_access() -> None:  # the policy a restore would put on the new stream
        manifest_path = root / manifest_key(stream)
        manifest = json.loads(manifest_path.read_text())
        manifest["resource_policy"] = '{"Statement": [{"Effect": "Allow", "Action": "*"}]}'
        manifest_path.write_text(json.dumps(manifest))

    def unseal() -> None:  # a sealed backup's manifest without its seal
        manifest_path = root / manifest_key(stream)
        manifest = json.loads(manifest_path.read_text())
        del manifest["seal"]
        manifest_path.write_text(json.dumps(manifest))

    unauthentic = "does not authenticate as the manifest places it"
    yield from (
        ("a flipped byte", flip_a_byte, unauthentic),
        ("two segments reordered", reorder, unauthentic),
        ("another shard's segment", swap_shards, unauthentic),
        ("a truncated segment", truncate, unauthentic),
        # The manifest is sealed too: any edit of it is refused.
        ("the last segment dropped", drop_the_last, "manifest .* does not authenticate"),
        ("a sealed segment listed as clear", claim_clear, "manifest .* does not authenticate"),
        ("the resource policy edited", grant_access, "manifest .* does not authenticate"),
        ("the manifest's seal removed", unseal, "has no seal"),
    )


async def test_a_tampered_or_swapped_segment_is_refused_before_anything_is_created(
    api: Api, tmp_path: Path, small_segments: None
) -> None:
    await asyncio.to_thread(api.make, "ledger", encrypted=True)
    await asyncio.to_thread(api.put, "ledger", range(40))  # ~20 per shard: 5 segments each
    pristine = tmp_path / "pristine"
    await asyncio.to_thread(
        lambda: back_up(api.call, DirectoryStore(pristine), "ledger", keys=api.keys)
    )
    assert len(segments_of(pristine, "ledger", "shardId-000000000000")) >= 2
    for index, (what, damage, expected) in enumerate(_tampered(tmp_path / "copy", "ledger")):
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(pristine, copy)
        damage()
        target = f"ledger-{index}"
        with pytest.raises(BackupError, match=expected):
            await asyncio.to_thread(api.restore, DirectoryStore(copy), "ledger", target)
        assert not await asyncio.to_thread(api.exists, target), what
    # The pristine backup restores (the damage, not the test, made each restore fail).
    report = await asyncio.to_thread(api.restore, DirectoryStore(pristine), "ledger", "ledger-ok")
    assert report.records_written == 40


async def test_a_key_this_cluster_lacks_is_a_kms_error_before_anything_is_created(
    api: Api, tmp_path: Path
) -> None:
    await asyncio.to_thread(api.make, "keyed", encrypted=True)
    await asyncio.to_thread(api.put, "keyed", range(5))
    await asyncio.to_thread(
        lambda: back_up(api.call, DirectoryStore(tmp_path), "keyed", keys=api.keys)
    )
    manifest_path = tmp_path / manifest_key("keyed")
    original = manifest_path.read_text()
    wrapped = json.loads(original)["data_keys"][0]["wrapped"]
    assert wrapped["wrapping"].startswith("cluster:")
    cases = {
        # Another cluster's (or raft_password's) master key wrapped it.
        "KMSNotFoundException": {"wrapping": "cluster:00000000-0000-0000-0000-000000000000"},
        # A KeyId this cluster does not know.
        "KMSNotFoundException ": {"key_id": "alias/not-here"},
        # The key bound to another stream: it does not open.
        "KMSInvalidStateException": {"stream_arn": wrapped["stream_arn"] + "-other"},
    }
    for code, change in cases.items():
        manifest = json.loads(original)
        manifest["data_keys"][0]["wrapped"].update(change)
        manifest["seal"]["wrapped"].update(change)  # the same key seals the manifest
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(ShoalError) as raised:
            await asyncio.to_thread(api.restore, DirectoryStore(tmp_path), "keyed", "keyed-copy")
        assert raised.value.code.kinesis_name == code.strip(), change
        assert not await asyncio.to_thread(api.exists, "keyed-copy")


async def test_a_clear_streams_backup_is_unchanged_and_an_encrypted_one_needs_keys(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Segments are bounded in bytes as well as records: here one record each.
    monkeypatch.setattr(logical, "SEGMENT_BYTES_MAX", 1)
    await asyncio.to_thread(api.make, "plain", encrypted=False)
    await asyncio.to_thread(api.put, "plain", range(6))
    store = DirectoryStore(tmp_path)
    await asyncio.to_thread(back_up, api.call, store, "plain")  # no keys needed
    manifest = json.loads((tmp_path / manifest_key("plain")).read_text())
    assert manifest["v"] == 1 and "data_keys" not in manifest
    assert [len(s["segments"]) for s in manifest["shards"]] == [
        s["records"] for s in manifest["shards"]
    ]
    segment = segments_of(tmp_path, "plain", "shardId-000000000000")[0]
    assert segment.suffix == ".jsonl"
    assert all(
        json.loads(line)["pk"].startswith(PARTITION) for line in segment.read_text().splitlines()
    )
    report = await asyncio.to_thread(
        lambda: restore(
            api.call,
            store,
            "plain",
            as_name="plain-restored",
            wait_active=api.wait_active,
            wait_keyed=lambda _: None,
        )
    )
    assert report.records_written == 6

    await asyncio.to_thread(api.make, "locked", encrypted=True)
    with pytest.raises(BackupError, match="encrypted"):
        await asyncio.to_thread(back_up, api.call, store, "locked")
    with pytest.raises(ShoalError) as raised:  # the service refuses a clear stream's key
        await asyncio.to_thread(api.keys.generate, "plain")
    assert raised.value.code.kinesis_name == "InvalidArgumentException"


async def test_a_stream_encrypted_between_two_backups_restores_from_both_kinds(
    api: Api, tmp_path: Path
) -> None:
    """The first run copies the clear stream in the clear; once it is encrypted, the next run
    seals what it copies (manifest version 2); the restore reads both kinds, in order."""
    await asyncio.to_thread(api.make, "turned", encrypted=False)
    await asyncio.to_thread(api.put, "turned", range(8))
    store = DirectoryStore(tmp_path)
    await asyncio.to_thread(lambda: back_up(api.call, store, "turned", keys=api.keys))
    await asyncio.to_thread(
        api.call,
        "StartStreamEncryption",
        {"StreamName": "turned", "EncryptionType": "KMS", "KeyId": KEY_ID},
    )
    await asyncio.to_thread(api.wait_active, "turned")
    await asyncio.to_thread(api.put, "turned", range(8, 16))
    await asyncio.to_thread(lambda: back_up(api.call, store, "turned", keys=api.keys))
    manifest = json.loads((tmp_path / manifest_key("turned")).read_text())
    assert manifest["v"] == 2
    suffixes = {Path(key).suffix for s in manifest["shards"] for key in s["segments"]}
    assert suffixes == {".jsonl", ".sealed"}
    report = await asyncio.to_thread(api.restore, store, "turned", "turned-restored")
    assert report.records_written == 16
    assert await asyncio.to_thread(api.contents, "turned-restored") == await asyncio.to_thread(
        api.contents, "turned"
    )
    # Encryption stopped: new segments are clear, and the manifest stays sealed (its key is
    # the previous seal's, opened again), so the sealed part stays authenticated.
    await asyncio.to_thread(
        api.call,
        "StopStreamEncryption",
        {"StreamName": "turned", "EncryptionType": "KMS", "KeyId": KEY_ID},
    )
    await asyncio.to_thread(api.wait_active, "turned")
    await asyncio.to_thread(api.put, "turned", range(16, 20))
    await asyncio.to_thread(lambda: back_up(api.call, store, "turned", keys=api.keys))
    manifest = json.loads((tmp_path / manifest_key("turned")).read_text())
    assert manifest["v"] == 2 and "seal" in manifest and len(manifest["data_keys"]) == 1
    report = await asyncio.to_thread(api.restore, store, "turned", "turned-again")
    assert report.records_written == 20
