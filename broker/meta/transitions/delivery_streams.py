"""Delivery streams (Data Firehose): create, activate, delete, forget, update the destination,
tags and server-side encryption state (issue 11).

Every rule is checked here against the image at apply time: two racing CreateDeliveryStream
calls for one name resolve to one ACTIVE-bound stream and one ResourceInUseException, and an
UpdateDestination whose version id is stale is refused even when it raced another. Messages
follow Firehose's.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    ActivateDeliveryStream,
    ChangeDeliveryStreamTags,
    CreateDeliveryStream,
    DeleteDeliveryStream,
    ForgetDeliveryStream,
    SetDeliveryStreamEncryption,
    SettleDeliveryStreamEncryption,
    UpdateDeliveryStreamDestination,
)
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus, EncryptionStatus
from broker.meta.image import MetadataImage
from broker.meta.metadata_format import DELIVERY_ENCRYPTION_STATES_LEVEL

FIRST_DESTINATION_ID = "destinationId-000000000001"

# AWS: "The StartDeliveryStreamEncryption and StopDeliveryStreamEncryption operations have a
# combined limit of 25 calls per Firehose stream per 24 hours."
ENCRYPTION_CHANGES_MAX = 25
ENCRYPTION_CHANGES_WINDOW_MS = 24 * 3600 * 1000

# The DeliveryStreamFailureTypes a KMS key that cannot be used gives (CreateDeliveryStream and
# StartDeliveryStreamEncryption): they also mark the encryption itself failed.
KMS_FAILURE_TYPES = frozenset(
    {"KMS_ACCESS_DENIED", "DISABLED_KMS_KEY", "INVALID_KMS_KEY", "KMS_KEY_NOT_FOUND"}
    | {"KMS_OPT_IN_REQUIRED", "CREATE_KMS_GRANT_FAILED", "RETIRE_KMS_GRANT_FAILED"}
)


def not_found(name: str, account_id: str) -> ShoalError:
    return ShoalError(
        ErrorCode.RESOURCE_NOT_FOUND,
        error_messages.delivery_stream_not_found(name=name, account_id=account_id),
    )


def _with(image: MetadataImage, meta: DeliveryStreamMeta) -> MetadataImage:
    table = dict(image.delivery_streams)
    table[meta.arn] = meta
    return dataclasses.replace(image, delivery_streams=table)


def _existing(image: MetadataImage, arn: str, name: str) -> DeliveryStreamMeta:
    meta = image.delivery_streams.get(arn)
    if meta is None:
        account_id = arn.split(":")[4] if arn.count(":") >= 5 else ""
        raise not_found(name, account_id)
    return meta


def _require_active(meta: DeliveryStreamMeta, action: str) -> None:
    if meta.status is not DeliveryStreamStatus.ACTIVE:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.delivery_stream_not_active(
                name=meta.name, account_id=meta.account_id, status=meta.status.value, action=action
            ),
        )


def create(image: MetadataImage, command: CreateDeliveryStream) -> tuple[MetadataImage, object]:
    if command.arn in image.delivery_streams:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.delivery_stream_exists(name=command.name, account_id=command.account_id),
        )
    in_region = sum(
        1
        for meta in image.delivery_streams.values()
        if meta.account_id == command.account_id and meta.region == command.region
    )
    if in_region >= command.delivery_streams_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.delivery_streams_quota(
                maximum=command.delivery_streams_max,
                region=command.region,
                account_id=command.account_id,
            ),
        )
    encrypted = bool(command.encryption_key_type)
    meta = DeliveryStreamMeta(
        arn=command.arn,
        name=command.name,
        account_id=command.account_id,
        region=command.region,
        uid=command.uid,
        delivery_stream_type=command.delivery_stream_type,
        status=DeliveryStreamStatus.CREATING,
        created_ms=command.now_ms,
        updated_ms=command.now_ms,
        version_id=1,
        destination_id=FIRST_DESTINATION_ID,
        destination_json=command.destination_json,
        source_json=command.source_json,
        encryption_status=EncryptionStatus.ENABLED if encrypted else EncryptionStatus.DISABLED,
        encryption_key_type=command.encryption_key_type,
        encryption_key_arn=command.encryption_key_arn,
        tags=tuple(sorted(dict(command.tags).items())),
    )
    return _with(image, meta), meta


def activate(image: MetadataImage, command: ActivateDeliveryStream) -> tuple[MetadataImage, object]:
    meta = image.delivery_streams.get(command.arn)
    if meta is None or meta.uid != command.uid or meta.status is not DeliveryStreamStatus.CREATING:
        return image, meta
    if command.failure_type:
        changed = dataclasses.replace(
            meta,
            status=DeliveryStreamStatus.CREATING_FAILED,
            failure_type=command.failure_type,
            failure_details=command.failure_details,
        )
        if (
            command.failure_type in KMS_FAILURE_TYPES
            and meta.encryption_status is EncryptionStatus.ENABLED
            and image.metadata_format >= DELIVERY_ENCRYPTION_STATES_LEVEL
        ):
            # The key it was created with cannot be used: the encryption failed with it.
            changed = dataclasses.replace(
                changed,
                encryption_status=EncryptionStatus.ENABLING_FAILED,
                encryption_failure_type=command.failure_type,
                encryption_failure_details=command.failure_details,
            )
    else:
        changed = dataclasses.replace(meta, status=DeliveryStreamStatus.ACTIVE)
    return _with(image, changed), changed


def delete(image: MetadataImage, command: DeleteDeliveryStream) -> tuple[MetadataImage, object]:
    meta = _existing(image, command.arn, command.name)
    # A Kinesis channel may be deleted while CREATING (its creation only checks the stream and
    # the bucket; an ActivateDeliveryStream after this finds it DELETING and does nothing).
    if meta.status is DeliveryStreamStatus.CREATING and not meta.is_channel:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.delivery_stream_still_creating(
                name=meta.name, account_id=meta.account_id
            ),
        )
    if meta.status is DeliveryStreamStatus.DELETING:
        return image, meta
    changed = dataclasses.replace(meta, status=DeliveryStreamStatus.DELETING)
    return _with(image, changed), changed


def forget(image: MetadataImage, command: ForgetDeliveryStream) -> tuple[MetadataImage, object]:
    meta = image.delivery_streams.get(command.arn)
    if meta is None or meta.uid != command.uid or meta.status is not DeliveryStreamStatus.DELETING:
        return image, None
    table = dict(image.delivery_streams)
    del table[command.arn]
    return dataclasses.replace(image, delivery_streams=table), None


def update_destination(
    image: MetadataImage, command: UpdateDeliveryStreamDestination
) -> tuple[MetadataImage, object]:
    meta = _existing(image, command.arn, command.name)
    _require_active(meta, "UpdateDestination")
    if command.current_version_id != meta.version_id:
        raise ShoalError(
            ErrorCode.CONCURRENT_MODIFICATION,
            error_messages.delivery_stream_version_mismatch(
                name=meta.name, current=meta.version_id, specified=command.current_version_id
            ),
        )
    if command.destination_id != meta.destination_id:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.delivery_stream_destination_not_found(
                destination_id=command.destination_id, name=meta.name
            ),
        )
    changed = dataclasses.replace(
        meta,
        destination_json=command.destination_json,
        version_id=meta.version_id + 1,
        updated_ms=command.now_ms,
    )
    return _with(image, changed), changed


def change_tags(
    image: MetadataImage, command: ChangeDeliveryStreamTags
) -> tuple[MetadataImage, object]:
    meta = _existing(image, command.arn, command.name)
    if meta.status is DeliveryStreamStatus.DELETING:
        _require_active(meta, "tagging")
    tags = dict(meta.tags)
    tags.update(command.added)
    for key in command.removed:
        tags.pop(key, None)
    if len(tags) > command.tags_max:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.delivery_stream_tags_limit(
                name=meta.name, tags=len(tags), maximum=command.tags_max
            ),
        )
    changed = dataclasses.replace(meta, tags=tuple(sorted(tags.items())))
    return _with(image, changed), changed


def set_encryption(
    image: MetadataImage, command: SetDeliveryStreamEncryption
) -> tuple[MetadataImage, object]:
    meta = _existing(image, command.arn, command.name)
    _require_active(meta, "changing server-side encryption")
    if image.metadata_format < DELIVERY_ENCRYPTION_STATES_LEVEL:
        # As the binaries of level 3 apply it: settled at once.
        if command.key_type:
            changed = dataclasses.replace(
                meta,
                encryption_status=EncryptionStatus.ENABLED,
                encryption_key_type=command.key_type,
                encryption_key_arn=command.key_arn,
            )
        else:
            changed = dataclasses.replace(
                meta,
                encryption_status=EncryptionStatus.DISABLED,
                encryption_key_type="",
                encryption_key_arn="",
            )
        return _with(image, changed), changed
    if meta.encryption_status.in_progress:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.delivery_stream_encryption_unsettled(
                name=meta.name, account_id=meta.account_id, status=meta.encryption_status.value
            ),
        )
    since_ms = command.now_ms - ENCRYPTION_CHANGES_WINDOW_MS
    recent = tuple(at for at in meta.encryption_changes_ms if at > since_ms)
    if len(recent) >= ENCRYPTION_CHANGES_MAX:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.delivery_stream_encryption_changes_limit(
                name=meta.name, account_id=meta.account_id, maximum=ENCRYPTION_CHANGES_MAX
            ),
        )
    if command.key_type:
        changed = dataclasses.replace(
            meta,
            encryption_status=EncryptionStatus.ENABLING,
            encryption_key_type=command.key_type,
            encryption_key_arn=command.key_arn,
        )
    else:
        # The key stays described while it is being disabled.
        changed = dataclasses.replace(meta, encryption_status=EncryptionStatus.DISABLING)
    changed = dataclasses.replace(
        changed,
        encryption_failure_type="",
        encryption_failure_details="",
        encryption_changes_ms=(*recent, command.now_ms),
    )
    return _with(image, changed), changed


def settle_encryption(
    image: MetadataImage, command: SettleDeliveryStreamEncryption
) -> tuple[MetadataImage, object]:
    meta = image.delivery_streams.get(command.arn)
    if meta is None or meta.uid != command.uid:
        return image, meta
    enabling = bool(command.key_type)
    expected = EncryptionStatus.ENABLING if enabling else EncryptionStatus.DISABLING
    if meta.encryption_status is not expected or (
        enabling
        and (meta.encryption_key_type, meta.encryption_key_arn)
        != (command.key_type, command.key_arn)
    ):
        return image, meta  # another attempt's outcome, or this one's applied already
    if command.failure_type:
        failed = EncryptionStatus.ENABLING_FAILED if enabling else EncryptionStatus.DISABLING_FAILED
        changed = dataclasses.replace(
            meta,
            encryption_status=failed,
            encryption_failure_type=command.failure_type,
            encryption_failure_details=command.failure_details,
        )
    elif enabling:
        changed = dataclasses.replace(meta, encryption_status=EncryptionStatus.ENABLED)
    else:
        changed = dataclasses.replace(
            meta,
            encryption_status=EncryptionStatus.DISABLED,
            encryption_key_type="",
            encryption_key_arn="",
        )
    return _with(image, changed), changed


def refuse_if_stream_has_channels(image: MetadataImage, stream_key: str, stream_name: str) -> None:
    """DeleteStream, and switching the stream to provisioned, need every channel reading the
    stream deleted first (channels are for on-demand streams, as on AWS)."""
    for meta in image.delivery_streams.values():
        if not meta.is_channel or meta.status is DeliveryStreamStatus.DELETING:
            continue
        source = meta.source() or {}
        if source.get("StreamKey") == stream_key:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.stream_has_channels(stream_name, meta.account_id),
            )
