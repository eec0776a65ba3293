"""A video stream's internal stream during a rolling upgrade (broker/video/archive.py): while
the cluster is below the metadata format that carries data keys (3), fragments are stored
in the clear rather than refused, and the stream is encrypted on the first fragment after the
format rises (fakes of the in-process Kinesis door and the metadata frontend). From the
format that carries a stream's first data key in CreateStream, the internal stream is created
encrypted: no image the metadata log passes through holds a replica of it without its key
(the real service over an in-memory quorum)."""

from __future__ import annotations

import dataclasses
from typing import Any

from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import WrappedDataKey
from broker.meta.image import MetadataImage, StreamDataKey
from broker.meta.state_machine import apply
from broker.types import StreamName
from broker.video.archive import ENCRYPTION_FORMAT, FragmentArchive
from tests.crypto.late_replicas import (
    RecordingQuorum,
    replicas_without_key,
    service_over,
    three_nodes_at_the_newest_format,
)
from tests.meta.factories import create_stream
from tests.meta.video_factories import video_stream


class FakeKinesis:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(operation)
        summary = {"StreamStatus": "ACTIVE", "RetentionPeriodHours": 24, "EncryptionType": "NONE"}
        return {"StreamDescriptionSummary": summary}


class FakeMetadata:
    def __init__(self, level: int) -> None:
        self.level = level

    def image(self) -> MetadataImage:
        return dataclasses.replace(MetadataImage(), metadata_format=self.level)

    async def propose(self, command: object) -> object:
        return None


async def test_fragments_wait_in_the_clear_until_the_format_carries_data_keys() -> None:
    assert ENCRYPTION_FORMAT == 3
    kinesis, metadata = FakeKinesis(), FakeMetadata(level=2)
    archive = FragmentArchive(kinesis, metadata)  # type: ignore[arg-type]
    meta = video_stream("cam")
    name = await archive.ensure(meta, now_ms=1)
    assert "CreateStream" in kinesis.calls and "StartStreamEncryption" not in kinesis.calls
    kinesis.calls.clear()
    assert await archive.ensure(meta, now_ms=2) == name
    assert kinesis.calls == []  # ready: nothing to do per fragment while the format is 2
    metadata.level = 3  # the upgrade is done
    await archive.ensure(meta, now_ms=3)
    assert kinesis.calls == ["DescribeStreamSummary", "StartStreamEncryption"]
    kinesis.calls.clear()
    await archive.ensure(meta, now_ms=4)
    assert kinesis.calls == []  # encrypted once


# --- A node that applies metadata late never holds a replica without the key ------------------


async def test_no_metadata_image_holds_the_internal_shard_without_its_key() -> None:
    """The session-26 gap, made deterministic: replay every image the metadata log went
    through while the first fragment's internal stream was set up. A follower whose node is
    at any of them when the first fragment reaches it seals it: none holds a replica of the
    internal shard without the data key (the old create-then-encrypt left one that did)."""
    quorum = RecordingQuorum(three_nodes_at_the_newest_format())
    await quorum.start()
    kinesis, frontend, master = service_over(quorum)
    archive = FragmentArchive(kinesis, frontend)
    meta = video_stream("cam")
    name = await archive.ensure(meta, now_ms=1)
    stream = quorum.image().streams[StreamName(name)]
    assert stream.encryption_type == "KMS" and stream.key_id == meta.kms_key_id
    assert [key.version for key in stream.data_keys] == [1]  # one key: created encrypted
    assert replicas_without_key(quorum.images, name, master) == []
    await quorum.stop()


def test_a_stream_created_encrypted_needs_its_key_id_and_its_data_key() -> None:
    image = three_nodes_at_the_newest_format()
    key = WrappedDataKey(wrapped=b"wrapped", wrapping="cluster:c1")
    created = apply(image, create_stream("s", now_ms=5, key_id="alias/aws/kinesis", data_key=key))
    assert created.error is None, created.error
    stream = created.image.streams[StreamName("s")]
    assert (stream.encryption_type, stream.key_id) == ("KMS", "alias/aws/kinesis")
    assert stream.data_keys == (
        StreamDataKey(version=1, wrapped=b"wrapped", wrapping="cluster:c1", created_ms=5),
    )
    for half in ({"key_id": "alias/aws/kinesis"}, {"data_key": key}):
        refused = apply(image, create_stream("s", **half))
        assert isinstance(refused.error, ShoalError)
        assert refused.error.code is ErrorCode.INVALID_ARGUMENT
