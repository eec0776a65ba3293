"""What the authorizer reads from the metadata image: resource policies, resource tags and
iterator streams.

`resource_policy(arn)` is the policy PutResourcePolicy stored on the stream or consumer the
ARN names (None when there is none, or the ARN names no live resource: then only identity
policies decide). `resource_tags(arn)` are the tags of the resource the ARN names (a data
stream, a consumer, a delivery stream, a video stream or signaling channel, an application),
for the `aws:ResourceTag/<key>` condition keys. `iterator_stream(token)` is the ARN of the
stream a shard iterator points into (GetRecords names its stream only through its iterator).
Each reads the node's latest image on each call.
"""

from __future__ import annotations

from collections.abc import Callable

from broker import arns
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
        if (parsed := arns.parse(arn)) is None or parsed.service != "kinesis":
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
        named = peek_stream_uid(token, secret=snapshot.iterator_secret)
        if named is None:
            return None
        uid, key = named
        meta = snapshot.stream_by_uid(StreamUid(uid))
        if meta is None and key is not None:
            # The stream was deleted and created again: GetRecords reads the new one.
            meta = snapshot.streams.get(StreamName(key))
        return None if meta is None else meta.arn

    return iterator_stream


Tags = tuple[tuple[str, str], ...]


def resource_tags_lookup(
    image: Callable[[], MetadataImage], wall_ms: Callable[[], int]
) -> Callable[[str], Tags]:
    def resource_tags(arn: str) -> Tags:
        snapshot = image()
        service = arn.split(":", 3)[2] if arn.count(":") >= 3 else ""
        if service == "kinesis":
            if "/consumer/" in arn:
                consumer = snapshot.consumers.by_arn(arn, now_ms=wall_ms())
                return () if consumer is None else consumer.tags
            meta = _stream_for_arn(snapshot, arn)
            return () if meta is None else meta.tags
        if service == "firehose":
            delivery = snapshot.delivery_streams.get(arn)
            return () if delivery is None else delivery.tags
        if service == "kinesisvideo":
            video = snapshot.video.by_arn(arn) or snapshot.video.channels.get(arn)
            return () if video is None else video.tags
        if service == "kinesisanalytics":
            app = snapshot.analytics.by_arn(arn, now_ms=wall_ms())
            return () if app is None else app.tags
        return ()

    return resource_tags
