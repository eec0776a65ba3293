"""An encrypted DirectPut delivery stream's internal stream is created encrypted
(broker/firehose/lifecycle.py): no image the metadata log passes through while the lifecycle
creates and activates it holds a replica of it without its key, so a node applying the log
late cannot store a record of it in the clear. A key that cannot be used still fails the
creation with AWS's FailureDescription. The real service over an in-memory quorum, an S3
store whose bucket exists."""

from __future__ import annotations

import dataclasses

from broker.clock import SystemClock
from broker.firehose.lifecycle import Lifecycle, LifecycleSettings
from broker.meta.delivery_streams import DeliveryStreamStatus
from tests.crypto.late_replicas import (
    RecordingQuorum,
    replicas_without_key,
    service_over,
    three_nodes_at_the_newest_format,
)
from tests.meta.delivery_stream_factories import ARN, create_command


class BucketExists:
    def check_bucket(self, bucket: str) -> None:
        return None


async def _created(key_type: str, key_arn: str = "") -> tuple[RecordingQuorum, object]:
    quorum = RecordingQuorum(three_nodes_at_the_newest_format())
    await quorum.start()
    kinesis, frontend, master = service_over(quorum)
    command = dataclasses.replace(
        create_command(now_ms=SystemClock().wall_ms()),
        encryption_key_type=key_type,
        encryption_key_arn=key_arn,
    )
    await frontend.propose(command)
    lifecycle = Lifecycle(
        metadata=frontend,
        kinesis=kinesis,
        store=BucketExists(),  # type: ignore[arg-type]
        clock=SystemClock(),
        settings=LifecycleSettings(internal_shards=2),
        is_controller=lambda: True,
    )
    for _ in range(10):  # a pass per step: bounded
        if quorum.image().delivery_streams[ARN].status is not DeliveryStreamStatus.CREATING:
            break
        await lifecycle.pass_once()
    await quorum.stop()
    return quorum, master


async def test_the_internal_stream_of_an_encrypted_delivery_stream_is_created_encrypted() -> None:
    quorum, master = await _created("AWS_OWNED_CMK")
    meta = quorum.image().delivery_streams[ARN]
    assert meta.status is DeliveryStreamStatus.ACTIVE
    stream = next(s for s in quorum.image().streams.values() if s.name == meta.internal_stream)
    assert stream.encryption_type == "KMS" and stream.key_id == "alias/aws/kinesis"
    assert [key.version for key in stream.data_keys] == [1]
    assert replicas_without_key(quorum.images, meta.internal_stream, master) == []  # type: ignore[arg-type]


async def test_a_key_that_cannot_be_used_fails_the_creation_as_before() -> None:
    missing = "arn:aws:kms:us-east-1:123456789012:key/no-such-key"
    quorum, _ = await _created("CUSTOMER_MANAGED_CMK", missing)
    meta = quorum.image().delivery_streams[ARN]
    assert meta.status is DeliveryStreamStatus.CREATING_FAILED
    assert meta.failure_type == "KMS_KEY_NOT_FOUND", meta.failure_details
