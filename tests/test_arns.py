"""broker.arns: the partition follows the region (botocore's endpoint data), one builder."""

from __future__ import annotations

import pytest

from broker import arns


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("us-east-1", "aws"),
        ("eu-west-1", "aws"),
        ("ap-southeast-7", "aws"),  # matched by the aws partition's pattern, listed or not
        ("cn-north-1", "aws-cn"),
        ("cn-northwest-1", "aws-cn"),
        ("us-gov-east-1", "aws-us-gov"),
        ("us-gov-west-1", "aws-us-gov"),
        ("us-iso-east-1", "aws-iso"),
        ("us-isob-east-1", "aws-iso-b"),
        ("local", "aws"),  # a region no partition claims
    ],
)
def test_the_partition_follows_the_region(region: str, partition: str) -> None:
    assert arns.partition_of(region) == partition


def test_arns_are_built_and_read_back() -> None:
    arn = arns.regional("kinesis", "cn-north-1", "123456789012", "stream/s")
    assert arn == "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/s"
    parsed = arns.parse(arn)
    assert parsed is not None
    assert (parsed.partition, parsed.service, parsed.region) == ("aws-cn", "kinesis", "cn-north-1")
    assert (parsed.account_id, parsed.resource) == ("123456789012", "stream/s")
    assert arns.of_region_partition(parsed)
    foreign = arns.parse("arn:aws:kinesis:cn-north-1:123456789012:stream/s")
    assert foreign is not None and not arns.of_region_partition(foreign)
    assert arns.global_resource("iam", "123456789012", "root", partition="aws-us-gov") == (
        "arn:aws-us-gov:iam::123456789012:root"
    )
    # A resource may hold colons (consumer ARNs: `…/consumer/<name>:<created>`).
    consumer = arns.parse("arn:aws:kinesis:us-east-1:1:stream/s/consumer/c:17")
    assert consumer is not None and consumer.resource == "stream/s/consumer/c:17"
    assert arns.parse("not-an-arn") is None
    assert arns.parse("arn:azure:x:y:z:w") is None


def test_s3_bucket_arns_of_every_partition() -> None:
    assert arns.s3_bucket("arn:aws:s3:::logs") == "logs"
    assert arns.s3_bucket("arn:aws-cn:s3:::logs") == "logs"
    assert arns.s3_bucket("arn:aws:s3:::") is None
    assert arns.s3_bucket("arn:aws:s3:us-east-1::logs") is None
    assert arns.s3_bucket("arn:aws:sqs:::logs") is None
