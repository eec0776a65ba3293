"""Amazon Resource Names as AWS writes them: `arn:<partition>:<service>:<region>:<account>:…`.

The partition follows the region, as on AWS: `aws-cn` for the China regions (`cn-north-1`),
`aws-us-gov` for GovCloud (`us-gov-east-1`), the isolated partitions for theirs, and `aws`
for every other region. Which region belongs to which partition is read from botocore's
endpoint data (`endpoints.json`: each partition's region list and `regionRegex`), the table
the AWS SDKs resolve endpoints with, so a new partition needs no change here. A region no
partition claims (a made-up local name) is `aws`'s.

Every ARN Shoal makes is built here; readers of ARNs use `parse` and `of_region_partition`
to refuse an ARN whose partition is not its region's. Pure: botocore's data file is read once.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import botocore.loaders

DEFAULT_PARTITION = "aws"


@functools.cache
def _partitions() -> tuple[tuple[str, frozenset[str], re.Pattern[str]], ...]:
    data = botocore.loaders.create_loader().load_data("endpoints")
    return tuple(
        (entry["partition"], frozenset(entry.get("regions", {})), re.compile(entry["regionRegex"]))
        for entry in data["partitions"]
    )


@functools.cache
def partition_of(region: str) -> str:
    """The partition `region` belongs to (`aws` when none claims it)."""
    for name, regions, _pattern in _partitions():
        if region in regions:
            return name
    for name, _regions, pattern in _partitions():
        if pattern.match(region):
            return name
    return DEFAULT_PARTITION


def regional(service: str, region: str, account_id: str, resource: str) -> str:
    """The ARN of a regional resource: `arn:<region's partition>:<service>:<region>:…`."""
    return _written(partition_of(region), service, region, account_id, resource)


def global_resource(service: str, account_id: str, resource: str, *, partition: str) -> str:
    """The ARN of a resource with no region field (IAM principals, S3 buckets) in
    `partition` (`partition_of` the region the caller is in, or the partition of an ARN of
    the same principal)."""
    return _written(partition, service, "", account_id, resource)


def _written(partition: str, service: str, region: str, account_id: str, resource: str) -> str:
    return f"arn:{partition}:{service}:{region}:{account_id}:{resource}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Arn:
    partition: str
    service: str
    region: str
    account_id: str
    resource: str


def parse(text: str) -> Arn | None:
    """The six fields of an ARN, or None for text that is not one."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1].startswith("aws"):
        return None
    _, partition, service, region, account_id, resource = parts
    return Arn(
        partition=partition,
        service=service,
        region=region,
        account_id=account_id,
        resource=resource,
    )


def of_region_partition(arn: Arn) -> bool:
    """Whether the ARN's partition is its region's (AWS resolves an ARN in its region's
    partition only: `arn:aws:kinesis:cn-north-1:…` names nothing)."""
    return arn.partition == partition_of(arn.region)


def s3_bucket(text: str) -> str | None:
    """The bucket an S3 bucket ARN (`arn:<partition>:s3:::<bucket>`) names, or None."""
    arn = parse(text)
    if arn is None or arn.service != "s3" or arn.region or arn.account_id or not arn.resource:
        return None
    return arn.resource
