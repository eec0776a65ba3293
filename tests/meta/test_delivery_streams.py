"""The delivery-stream transitions of the metadata state machine (issue 11)."""

from __future__ import annotations

import dataclasses

from broker.errors import ErrorCode
from broker.meta.commands import (
    ActivateDeliveryStream,
    ChangeDeliveryStreamTags,
    DeleteDeliveryStream,
    ForgetDeliveryStream,
    SetDeliveryStreamEncryption,
    SettleDeliveryStreamEncryption,
    UpdateDeliveryStreamDestination,
)
from broker.meta.delivery_streams import (
    DeliveryStreamStatus,
    EncryptionStatus,
    delivery_stream_arn,
)
from broker.meta.image import MetadataImage
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.metadata_format import DELIVERY_ENCRYPTION_STATES_LEVEL
from broker.meta.state_machine import apply
from broker.meta.transitions.delivery_streams import ENCRYPTION_CHANGES_MAX
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


CMK = "arn:aws:kms:us-east-1:123456789012:key/k1"


def _active() -> MetadataImage:
    return apply(_created(), ActivateDeliveryStream(now_ms=2, arn=ARN, uid="u1")).image


def _start(image: MetadataImage, now_ms: int, key_arn: str = CMK) -> MetadataImage:
    applied = apply(
        image,
        SetDeliveryStreamEncryption(
            now_ms=now_ms, arn=ARN, name="orders", key_type="CUSTOMER_MANAGED_CMK", key_arn=key_arn
        ),
    )
    assert applied.error is None, applied.error
    return applied.image


def _settle(image: MetadataImage, key_arn: str = "", failure: str = "") -> MetadataImage:
    key_type = "CUSTOMER_MANAGED_CMK" if key_arn else ""
    command = SettleDeliveryStreamEncryption(
        now_ms=9, arn=ARN, uid="u1", key_type=key_type, key_arn=key_arn, failure_type=failure
    )
    return apply(image, command).image


def test_encryption_goes_through_enabling_and_disabling_and_keeps_a_failure() -> None:
    enabling = _start(_active(), now_ms=3)
    meta = enabling.delivery_streams[ARN]
    assert meta.encryption_status is EncryptionStatus.ENABLING
    again = apply(
        enabling, SetDeliveryStreamEncryption(now_ms=4, arn=ARN, name="orders", key_type="")
    )
    assert again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE
    # Another attempt's outcome changes nothing; this one's settles it once.
    assert _settle(enabling, key_arn=CMK + "-other").delivery_streams == enabling.delivery_streams
    failed = _settle(enabling, key_arn=CMK, failure="KMS_KEY_NOT_FOUND")
    meta = failed.delivery_streams[ARN]
    assert meta.encryption_status is EncryptionStatus.ENABLING_FAILED
    assert meta.encryption_failure_type == "KMS_KEY_NOT_FOUND"
    assert _settle(failed, key_arn=CMK).delivery_streams == failed.delivery_streams
    # Durable in the quorum's snapshot, in a format the previous binaries refuse by version.
    assert decode_image(encode_image(failed)) == failed
    enabled = _settle(_start(failed, now_ms=5), key_arn=CMK)
    meta = enabled.delivery_streams[ARN]
    assert meta.encryption_status is EncryptionStatus.ENABLED
    assert (meta.encryption_failure_type, meta.encryption_key_arn) == ("", CMK)
    disabling = apply(
        enabled, SetDeliveryStreamEncryption(now_ms=6, arn=ARN, name="orders", key_type="")
    ).image
    assert disabling.delivery_streams[ARN].encryption_status is EncryptionStatus.DISABLING
    assert disabling.delivery_streams[ARN].encryption_key_arn == CMK  # described meanwhile
    disabled = _settle(disabling).delivery_streams[ARN]
    assert disabled.encryption_status is EncryptionStatus.DISABLED
    assert (disabled.encryption_key_type, disabled.encryption_key_arn) == ("", "")


def test_start_and_stop_are_limited_to_25_per_24_hours() -> None:
    image = _active()
    hour = 3600 * 1000
    for call in range(ENCRYPTION_CHANGES_MAX):
        image = _settle(_start(image, now_ms=10 + call * hour // 2), key_arn=CMK)
    refused = apply(
        image,
        SetDeliveryStreamEncryption(now_ms=13 * hour, arn=ARN, name="orders", key_type=""),
    )
    assert refused.error is not None and refused.error.code is ErrorCode.LIMIT_EXCEEDED
    # 24 hours after the first call, one slot is free again.
    assert _start(image, now_ms=10 + 24 * hour + 1).delivery_streams[ARN].encryption_status is (
        EncryptionStatus.ENABLING
    )


def test_below_level_4_encryption_is_settled_at_once() -> None:
    image = dataclasses.replace(_active(), metadata_format=DELIVERY_ENCRYPTION_STATES_LEVEL - 1)
    meta = _start(image, now_ms=3).delivery_streams[ARN]
    assert meta.encryption_status is EncryptionStatus.ENABLED
    assert meta.encryption_changes_ms == ()  # nothing a binary of level 3 cannot read


def test_a_key_that_fails_the_creation_fails_the_encryption_too() -> None:
    command = dataclasses.replace(
        create_command(now_ms=1), encryption_key_type="CUSTOMER_MANAGED_CMK", encryption_key_arn=CMK
    )
    created = apply(MetadataImage(), command).image
    failed = apply(
        created,
        ActivateDeliveryStream(
            now_ms=2, arn=ARN, uid="u1", failure_type="KMS_KEY_NOT_FOUND", failure_details="gone"
        ),
    ).image.delivery_streams[ARN]
    assert failed.status is DeliveryStreamStatus.CREATING_FAILED
    assert failed.encryption_status is EncryptionStatus.ENABLING_FAILED
    assert (failed.encryption_failure_type, failed.encryption_failure_details) == (
        "KMS_KEY_NOT_FOUND",
        "gone",
    )
