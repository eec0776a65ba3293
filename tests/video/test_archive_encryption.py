"""A video stream's internal stream during a rolling upgrade (broker/video/archive.py): while
the cluster is below the metadata format that carries data keys (3), fragments are stored
in the clear rather than refused, and the stream is encrypted on the first fragment after the
format rises. Pure: fakes of the in-process Kinesis door and the metadata frontend."""

from __future__ import annotations

import dataclasses
from typing import Any

from broker.meta.image import MetadataImage
from broker.video.archive import ENCRYPTION_FORMAT, FragmentArchive
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
