"""Server-side encryption of a DirectPut delivery stream seals its records at rest: they live
in its internal stream, which follows the delivery stream's encryption settings (at creation,
Start/StopDeliveryStreamEncryption), with the node's data keys (broker/crypto/)."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from broker.node import Node
from tests.crypto.test_stream_encryption import stored_bytes
from tests.firehose.conftest import call, s3_destination, wait_status
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


async def internal_encryption(node: Node, name: str) -> str:
    assert node.service is not None
    image = node.service.ctx.image()
    (meta,) = [m for m in image.delivery_streams.values() if m.name == name]
    summary = await node.service.call("DescribeStreamSummary", {"StreamName": meta.internal_stream})
    return str(summary["StreamDescriptionSummary"]["EncryptionType"])


async def test_delivery_stream_encryption_seals_its_records(
    fh_node: Node, firehose: Any, s3_server: S3Server
) -> None:
    s3_server.client().create_bucket(Bucket="sealed")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="sealed",
        ExtendedS3DestinationConfiguration=s3_destination("sealed"),
        DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"},
    )
    await wait_status(firehose, "sealed", "ACTIVE")
    assert await internal_encryption(fh_node, "sealed") == "KMS"
    put = await call(
        firehose.put_record_batch,
        DeliveryStreamName="sealed",
        Records=[{"Data": b"FH-SEALED-%d\n" % i} for i in range(20)],
    )
    assert put["Encrypted"] is True and put["FailedPutCount"] == 0

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        await call(
            firehose.start_delivery_stream_encryption,
            DeliveryStreamName="sealed",
            DeliveryStreamEncryptionConfigurationInput={
                "KeyType": "CUSTOMER_MANAGED_CMK",
                "KeyARN": "arn:aws:kms:us-east-1:000000000000:key/no-such-key",
            },
        )
    assert refused.value.response["Error"]["Code"] == "InvalidKMSResourceException"

    await call(firehose.stop_delivery_stream_encryption, DeliveryStreamName="sealed")
    assert await internal_encryption(fh_node, "sealed") == "NONE"
    # Several: RocksDB's WAL splits a record across its 32 KiB blocks, so one short text
    # may straddle a block header.
    put = await call(
        firehose.put_record_batch,
        DeliveryStreamName="sealed",
        Records=[{"Data": b"FH-CLEAR\n"} for _ in range(10)],
    )
    assert put["Encrypted"] is False
    on_disk = stored_bytes(fh_node.data_dir)
    assert b"FH-CLEAR" in on_disk
    assert b"FH-SEALED-" not in on_disk
