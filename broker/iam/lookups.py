"""What the authorizer reads from the metadata image: resource policies and iterator streams.

`resource_policy(arn)` is the policy PutResourcePolicy stored on the stream or consumer the
ARN names (None when there is none, or the ARN names no live resource: then only identity
policies decide). `iterator_stream(token)` is the ARN of the stream a shard iterator points
into (GetRecords names its stream only through its iterator). Both read the node's latest
image on each call.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.consumers.registry import parse_consumer_arn
from broker.meta.image import MetadataImage, StreamMeta
from broker.streams import namespaces
from broker.streams.iterators import peek_stream_uid
from broker.types import StreamName, StreamUid


def _stream_for_arn(image: MetadataImage, arn: str) -> StreamMeta | None:
    if ":stream/" not in arn:
        return None
    for key in namespaces.keys_for_arn(arn):
        meta = image.streams.get(StreamName(key))
        if meta is not None and meta.arn == arn:  # the stream of exactly this account/region
            return meta
    return None


def resource_policy_lookup(image: Callable[[], MetadataImage]) -> Callable[[str], str | None]:
    def resource_policy(arn: str) -> str | None:
        if not arn.startswith("arn:aws:kinesis:"):
            return None
        snapshot = image()
        consumer = parse_consumer_arn(arn)
        if consumer is not None:
            meta = _stream_for_arn(snapshot, consumer.stream_arn)
            if meta is None:
                return None
            for entry in meta.consumer_policies:
                if entry.consumer_arn == arn:
                    return entry.policy
            return None
        meta = _stream_for_arn(snapshot, arn)
        return None if meta is None else meta.resource_policy

    return resource_policy


def iterator_stream_lookup(image: Callable[[], MetadataImage]) -> Callable[[str], str | None]:
    def iterator_stream(token: str) -> str | None:
        snapshot = image()
        if not snapshot.iterator_secret:
            return None
        uid = peek_stream_uid(token, secret=snapshot.iterator_secret)
        if uid is None:
            return None
        meta = snapshot.stream_by_uid(StreamUid(uid))
        return None if meta is None else meta.arn

    return iterator_stream
