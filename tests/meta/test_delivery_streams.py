"""The delivery-stream transitions of the metadata state machine (issue 11)."""

from __future__ import annotations

from broker.errors import ErrorCode
from broker.meta.commands import (
    ActivateDeliveryStream,
    ChangeDeliveryStreamTags,
    DeleteDeliveryStream,
    ForgetDeliveryStream,
    UpdateDeliveryStreamDestination,
)
from broker.meta.delivery_streams import DeliveryStreamStatus, delivery_stream_arn
from broker.meta.image import MetadataImage
from broker.meta.state_machine import apply
from tests.meta.delivery_stream_factories import ARN, S3, create_command


def _created(image: MetadataImage | None = None) -> MetadataImage:
    applied = apply(image or MetadataImage(), create_command(now_ms=1))
    assert applied.error is None
    return applied.image


def test_a_name_is_unique_per_account_and_region_only() -> None:
    image = _created()
    again = apply(image, create_command(now_ms=2, uid="u2"))
    assert again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE
    for other in (
        delivery_stream_arn(region="eu-west-1", account_id="123456789012", name="orders"),
        delivery_stream_arn(region="us-east-1", account_id="210987654321", name="orders"),
    ):
        applied = apply(image, create_command(now_ms=2, arn=other, uid="u3"))
        assert applied.error is None
        image = applied.image
    assert len(image.delivery_streams) == 3
    internal = {meta.internal_stream for meta in image.delivery_streams.values()}
    assert len(internal) == 3


def test_activation_ends_creating_once_and_only_for_its_incarnation() -> None:
    image = _created()
    assert image.delivery_streams[ARN].status is DeliveryStreamStatus.CREATING
    stale = apply(image, ActivateDeliveryStream(now_ms=2, arn=ARN, uid="other"))
    assert stale.image.delivery_streams[ARN].status is DeliveryStreamStatus.CREATING
    failed = apply(
        image,
        ActivateDeliveryStream(
            now_ms=2, arn=ARN, uid="u1", failure_type="UNKNOWN_ERROR", failure_details="no bucket"
        ),
    ).image.delivery_streams[ARN]
    assert failed.status is DeliveryStreamStatus.CREATING_FAILED
    assert failed.failure_details == "no bucket"
    active = apply(image, ActivateDeliveryStream(now_ms=2, arn=ARN, uid="u1")).image
    assert active.delivery_streams[ARN].status is DeliveryStreamStatus.ACTIVE
    late_failure = apply(
        active, ActivateDeliveryStream(now_ms=3, arn=ARN, uid="u1", failure_type="UNKNOWN_ERROR")
    )
    assert late_failure.image.delivery_streams[ARN].status is DeliveryStreamStatus.ACTIVE


def test_update_destination_is_a_compare_and_set_on_the_version_id() -> None:
    image = apply(_created(), ActivateDeliveryStream(now_ms=2, arn=ARN, uid="u1")).image

    def update(version: int) -> UpdateDeliveryStreamDestination:
        return UpdateDeliveryStreamDestination(
            now_ms=3,
            arn=ARN,
            name="orders",
            current_version_id=version,
            destination_id="destinationId-000000000001",
            destination_json=S3,
        )

    first = apply(image, update(1))
    assert first.error is None
    assert first.image.delivery_streams[ARN].version_id == 2
    racing = apply(first.image, update(1))
    assert racing.error is not None
    assert racing.error.code is ErrorCode.CONCURRENT_MODIFICATION


def test_delete_refuses_creating_then_forget_removes_the_incarnation() -> None:
    image = _created()
    refused = apply(image, DeleteDeliveryStream(now_ms=2, arn=ARN, name="orders"))
    assert refused.error is not None and refused.error.code is ErrorCode.RESOURCE_IN_USE
    image = apply(image, ActivateDeliveryStream(now_ms=2, arn=ARN, uid="u1")).image
    image = apply(image, DeleteDeliveryStream(now_ms=3, arn=ARN, name="orders")).image
    assert image.delivery_streams[ARN].status is DeliveryStreamStatus.DELETING
    image = apply(image, ForgetDeliveryStream(now_ms=4, arn=ARN, uid="u1")).image
    assert ARN not in image.delivery_streams
    missing = apply(image, DeleteDeliveryStream(now_ms=5, arn=ARN, name="orders"))
    assert missing.error is not None and missing.error.code is ErrorCode.RESOURCE_NOT_FOUND


def test_tags_are_bounded() -> None:
    image = _created()
    many = tuple((f"k{i}", "v") for i in range(50))
    refused = apply(image, ChangeDeliveryStreamTags(now_ms=2, arn=ARN, name="orders", added=many))
    assert refused.error is not None and refused.error.code is ErrorCode.LIMIT_EXCEEDED
    image = apply(
        image, ChangeDeliveryStreamTags(now_ms=2, arn=ARN, name="orders", removed=("team",))
    ).image
    assert image.delivery_streams[ARN].tags == ()
