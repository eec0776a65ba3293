"""Stream namespaces: every data stream belongs to one (account, region), as on AWS.

A caller acts in the account of its principal and the region its request is signed for
(`broker/caller.py`); the same stream name may exist in two regions or two accounts, and the
two are different streams. The metadata image keys streams by a *stream key*:

* a stream of the cluster's default namespace (the node's configured account and region) is
  keyed by its bare name, exactly as before namespaces existed, so every image and journal
  written before keeps its meaning (the existing streams are the default namespace's) and
  nodes of the previous release, which know only bare names, apply the same commands to the
  same keys in a rolling upgrade;
* a stream of any other namespace is keyed `<account>/<region>/<name>`. Stream names cannot
  contain "/" (the model's pattern `[a-zA-Z0-9_.-]+`), so no key of one form can equal a key
  of the other, and the name after the last "/" is always the stream's name.

Internal streams (`__shoal.*`, Firehose's and video's) live in the default namespace.
Pure code: the default namespace is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker import arns

_SEPARATOR = "/"
# A well-formed AWS region name (us-east-1, eu-central-2, us-gov-west-1, ...).
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")


def is_region(text: str) -> bool:
    """Whether `text` is a well-formed region name: one a namespace may be in."""
    return _REGION.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Namespace:
    account_id: str  # 12 digits
    region: str


def stream_key(name: str, namespace: Namespace, *, default: Namespace) -> str:
    """The key of the stream `name` of `namespace` in the metadata image."""
    assert _SEPARATOR not in name, name
    if namespace == default:
        return name
    return _SEPARATOR.join((namespace.account_id, namespace.region, name))


def namespace_of(key: str, *, default: Namespace) -> Namespace:
    """The namespace a stream key belongs to."""
    parts = key.split(_SEPARATOR)
    if len(parts) == 1:
        return default
    assert len(parts) == 3, key
    return Namespace(account_id=parts[0], region=parts[1])


def name_of(key: str) -> str:
    """The stream's name, as clients see it (the key without its namespace)."""
    return key.rsplit(_SEPARATOR, 1)[-1]


def is_stream_key(text: str) -> bool:
    """Whether `text` is a namespaced key rather than a bare name."""
    return _SEPARATOR in text


def stream_arn(name: str, namespace: Namespace) -> str:
    return arns.regional("kinesis", namespace.region, namespace.account_id, f"stream/{name}")


def keys_for_arn(arn: str) -> tuple[str, ...]:
    """The keys a stream ARN's stream may be stored under (bare first, then namespaced): the
    caller then keeps the one whose stream has exactly this ARN. Needs no default namespace,
    so the state machine can resolve ARNs on any replica alike."""
    head, separator, name = arn.partition(":stream/")
    if not separator or not name or _SEPARATOR in name:
        return ()
    parts = head.split(":")
    if len(parts) < 5:
        return (name,)
    region, account = parts[3], parts[4]
    return (name, _SEPARATOR.join((account, region, name)))


def namespace_of_arn(arn: str) -> tuple[str, str]:
    """(region, account) of a stream ARN: the budget its stream counts against (an ARN of
    another shape, which only hand-made images hold, is a namespace of its own)."""
    parts = arn.split(":")
    if len(parts) < 6:
        return "", arn
    return parts[3], parts[4]
