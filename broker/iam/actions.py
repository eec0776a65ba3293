"""The IAM action and resource ARN a request names, for every service the node serves (pure).

The action is `<signing name>:<Operation>`, as in AWS's service authorization reference
(`kinesis:PutRecord`, `firehose:PutRecordBatch`, `kinesisanalytics:CreateApplication`,
`kinesisvideo:GetMedia`). The resource is what the request addresses, in this order: an ARN
member the request carries (ConsumerARN before StreamARN: a consumer's actions are authorized
on the consumer), else the name member made into the caller's own ARN (region and account of
the `Caller`), else `*` for account-wide operations (ListStreams, DescribeLimits, ...).
GetRecords names its stream through the shard iterator; the enforcer resolves that one to
the stream's ARN (`iterator_stream`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from broker import arns

ANY_RESOURCE = "*"

# Per signing name: (ARN members in priority order, (name member, service, resource) triples).
# Resources take the name; the ARN is built in the request's region and account.
_ARN_MEMBERS: dict[str, tuple[str, ...]] = {
    "kinesis": ("ConsumerARN", "ResourceARN", "StreamARN", "QueueARN", "ChannelARN"),
    "firehose": ("DeliveryStreamARN",),
    "kinesisanalytics": ("ResourceARN",),
    "kinesisvideo": ("ResourceARN", "StreamARN", "ChannelARN"),
}
_NAME_MEMBERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "kinesis": (("StreamName", "kinesis", "stream/{name}"),),
    "firehose": (("DeliveryStreamName", "firehose", "deliverystream/{name}"),),
    "kinesisanalytics": (("ApplicationName", "kinesisanalytics", "application/{name}"),),
    # A video stream's ARN ends in its creation time, which a name does not tell: `/*`
    # stands for it, so a policy naming `stream/<name>/*` matches the stream by name too.
    "kinesisvideo": (
        ("StreamName", "kinesisvideo", "stream/{name}/*"),
        ("ChannelName", "kinesisvideo", "channel/{name}/*"),
    ),
}


def action_name(signing_name: str, operation: str) -> str:
    return f"{signing_name}:{operation}"


def stream_arn(region: str, account: str, name: str) -> str:
    return arns.regional("kinesis", region, account, f"stream/{name}")


def resource_arn(
    signing_name: str,
    request: Mapping[str, Any],
    *,
    region: str,
    account: str,
    iterator_stream: Callable[[str], str | None] | None = None,
) -> str:
    """The resource `request` addresses (module docstring). `iterator_stream` maps a shard
    iterator to its stream's ARN (None when the token names no live stream)."""
    for member in _ARN_MEMBERS.get(signing_name, ()):
        value = request.get(member)
        if isinstance(value, str) and value:
            return value
    for member, service, resource in _NAME_MEMBERS.get(signing_name, ()):
        value = request.get(member)
        if isinstance(value, str) and value:
            return arns.regional(service, region, account, resource.format(name=value))
    iterator = request.get("ShardIterator")
    if signing_name == "kinesis" and isinstance(iterator, str) and iterator_stream is not None:
        arn = iterator_stream(iterator)
        if arn is not None:
            return arn
    return ANY_RESOURCE


def arn_account(arn: str) -> str | None:
    """The account an ARN belongs to (None for `*` or an ARN without one)."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and parts[4]:
        return parts[4]
    return None


def request_tags(request: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The tags a request sets (`aws:RequestTag/<key>`): `Tags` as a map (Kinesis, Kinesis
    Video) or as a list of `{Key, Value}` (Firehose, Kinesis Analytics)."""
    tags = request.get("Tags")
    if isinstance(tags, Mapping):
        return tuple((str(key), str(value)) for key, value in tags.items())
    if isinstance(tags, list):
        return tuple(
            (str(tag["Key"]), str(tag.get("Value", "")))
            for tag in tags
            if isinstance(tag, Mapping) and "Key" in tag
        )
    return ()


def request_tag_keys(request: Mapping[str, Any]) -> tuple[str, ...]:
    """The tag keys a request names (`aws:TagKeys`): those it sets, or those it removes."""
    keys = [key for key, _ in request_tags(request)]
    for member in ("TagKeys", "TagKeyList"):
        listed = request.get(member)
        if isinstance(listed, list):
            keys.extend(str(key) for key in listed)
    return tuple(keys)
