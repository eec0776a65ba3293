"""Video streams are encrypted at rest under their KmsKeyId (AWS's default: the AWS-managed
alias/aws/kinesisvideo key): the fragments' internal stream seals every record, so the media
is not on disk in the clear, and GetMedia still returns it."""

from __future__ import annotations

import pytest

from broker.caller import Caller
from broker.node import Node
from broker.video.archive import internal_name
from tests.crypto.test_stream_encryption import stored_bytes
from tests.video.media import h264_mkv
from tests.video.test_control_plane import call, video_client
from tests.video.test_media_end_to_end import _get_media, _upload

pytestmark = pytest.mark.integration


async def test_video_fragments_are_sealed_at_rest(node: Node) -> None:
    kvs = video_client(node)
    await call(kvs.create_stream, StreamName="private", DataRetentionInHours=24)
    video = h264_mkv(frames=50, fps=25)
    await _upload(node, "private", video)
    # Slices of the encoded frames (past the headers): what a clear copy would show.
    slices = [video[at : at + 32] for at in range(len(video) // 4, len(video), len(video) // 5)]
    body = await _get_media(node, "private", {"StartSelectorType": "EARLIEST"})
    assert all(piece in body for piece in slices)  # the media reads back whole
    on_disk = stored_bytes(node.data_dir)
    assert not any(piece in on_disk for piece in slices)

    assert node.video is not None and node.service is not None
    caller = Caller(door="internal", region="us-east-1", account_id="000000000000")
    meta = node.video.control.find(caller, name="private", arn=None)
    summary = await node.service.call("DescribeStreamSummary", {"StreamName": internal_name(meta)})
    described = summary["StreamDescriptionSummary"]
    assert described["EncryptionType"] == "KMS"
    assert described["KeyId"] == "arn:aws:kms:us-east-1:000000000000:alias/aws/kinesisvideo"
