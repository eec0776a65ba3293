"""Server-side encryption of a DirectPut delivery stream seals its records at rest: they live
in its internal stream, which follows the delivery stream's encryption settings (at creation,
Start/StopDeliveryStreamEncryption), with the node's data keys (broker/crypto/). Start and Stop
are asynchronous, as on AWS: ENABLING then ENABLED (or ENABLING_FAILED with a
FailureDescription), DISABLING then DISABLED; through boto3 and the AWS CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from broker.node import Node
from tests.crypto.test_stream_encryption import stored_bytes
from tests.firehose.conftest import REGION, call, s3_destination, wait_encryption, wait_status
from tests.s3_server import S3Server
from tests.support import REPO

pytestmark = pytest.mark.integration

AWS = REPO / ".venv" / "bin" / "aws"
NO_SUCH_KEY = "arn:aws:kms:us-east-1:000000000000:key/no-such-key"


async def aws_firehose(node: Node, home: Path, *args: str) -> Any:
    """One `aws firehose ...` command (the AWS CLI v1, unmodified) against the node; its JSON
    output, None when empty."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
    }
    command = [str(AWS), "firehose", *args, "--output", "json"]
    command += ["--endpoint-url", f"http://127.0.0.1:{node.http_port}"]
    completed = await asyncio.to_thread(
        subprocess.run,
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if completed.stdout.strip() else None


async def internal_encryption(node: Node, name: str) -> str:
    assert node.service is not None
    image = node.service.ctx.image()
    (meta,) = [m for m in image.delivery_streams.values() if m.name == name]
    summary = await node.service.call("DescribeStreamSummary", {"StreamName": meta.internal_stream})
    return str(summary["StreamDescriptionSummary"]["EncryptionType"])


async def test_delivery_stream_encryption_seals_its_records(
    fh_node: Node, firehose: Any, s3_server: S3Server, tmp_path: Path
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

    # A customer managed key that cannot be used: the call returns at once (ENABLING), then
    # the attempt fails with AWS's failure type, and the records stay sealed with the key in use.
    home = tmp_path / "aws-cli"
    home.mkdir()
    key = json.dumps({"KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": NO_SUCH_KEY})
    started = await aws_firehose(
        fh_node,
        home,
        "start-delivery-stream-encryption",
        "--delivery-stream-name",
        "sealed",
        "--delivery-stream-encryption-configuration-input",
        key,
    )
    assert not started  # an empty answer: the change is asynchronous
    await wait_encryption(firehose, "sealed", "ENABLING_FAILED")
    described = await aws_firehose(
        fh_node, home, "describe-delivery-stream", "--delivery-stream-name", "sealed"
    )
    encryption = described["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"]
    assert encryption["Status"] == "ENABLING_FAILED"
    assert (encryption["KeyType"], encryption["KeyARN"]) == ("CUSTOMER_MANAGED_CMK", NO_SUCH_KEY)
    assert encryption["FailureDescription"]["Type"] == "KMS_KEY_NOT_FOUND"
    assert NO_SUCH_KEY in encryption["FailureDescription"]["Details"]
    assert described["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    assert await internal_encryption(fh_node, "sealed") == "KMS"
    put = await call(
        firehose.put_record, DeliveryStreamName="sealed", Record={"Data": b"FH-SEALED-x\n"}
    )
    assert put["Encrypted"] is True

    await call(firehose.stop_delivery_stream_encryption, DeliveryStreamName="sealed")
    disabled = await wait_encryption(firehose, "sealed", "DISABLED")
    assert disabled["DeliveryStreamEncryptionConfiguration"] == {"Status": "DISABLED"}
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
