"""Delivery-stream commands for the metadata tests (issue 11)."""

from __future__ import annotations

from broker.meta.commands import (
    ActivateDeliveryStream,
    ChangeDeliveryStreamTags,
    Command,
    CreateDeliveryStream,
    DeleteDeliveryStream,
    ForgetDeliveryStream,
    SetDeliveryStreamEncryption,
    SettleDeliveryStreamEncryption,
    UpdateDeliveryStreamDestination,
)
from broker.meta.delivery_streams import canonical_json, delivery_stream_arn

ARN = delivery_stream_arn(region="us-east-1", account_id="123456789012", name="orders")
S3 = canonical_json(
    {
        "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::1:role/r",
            "BucketARN": "arn:aws:s3:::b",
        }
    }
)


def create_command(*, now_ms: int, arn: str = ARN, uid: str = "u1") -> CreateDeliveryStream:
    return CreateDeliveryStream(
        now_ms=now_ms,
        arn=arn,
        name=arn.rsplit("/", 1)[1],
        account_id=arn.split(":")[4],
        region=arn.split(":")[3],
        uid=uid,
        delivery_stream_type="DirectPut",
        destination_json=S3,
        tags=(("team", "data"),),
    )


def every_delivery_stream_command(*, now_ms: int) -> list[Command]:
    return [
        create_command(now_ms=now_ms),
        ActivateDeliveryStream(now_ms=now_ms, arn=ARN, uid="u1"),
        UpdateDeliveryStreamDestination(
            now_ms=now_ms,
            arn=ARN,
            name="orders",
            current_version_id=1,
            destination_id="destinationId-000000000001",
            destination_json=S3,
        ),
        ChangeDeliveryStreamTags(now_ms=now_ms, arn=ARN, name="orders", added=(("a", "b"),)),
        SetDeliveryStreamEncryption(
            now_ms=now_ms, arn=ARN, name="orders", key_type="AWS_OWNED_CMK"
        ),
        SettleDeliveryStreamEncryption(now_ms=now_ms, arn=ARN, uid="u1", key_type="AWS_OWNED_CMK"),
        DeleteDeliveryStream(now_ms=now_ms, arn=ARN, name="orders"),
        ForgetDeliveryStream(now_ms=now_ms, arn=ARN, uid="u1"),
    ]
