"""Enhanced fan-out consumer registry operations: Register/Deregister/Describe/ListStreamConsumers.

Register and Deregister each become one metadata command (`commands.RegisterStreamConsumer`,
`commands.DeregisterStreamConsumer`); the state machine checks the stream, the name and the
limits at apply time (`broker.consumers.registry`), so racing calls resolve there. Describe and
List read this node's image. The rules for states and ARNs are in the registry module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker import error_messages, limits
from broker.consumers.registry import StreamConsumer, parse_consumer_arn
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.image import StreamMeta
from broker.service import control
from broker.service.context import ServiceContext
from broker.service.tokens import decode_token, encode_token
from broker.streams import tag_rules
from broker.timestamps import datetime_from_ms, ms_from_datetime

Request = Mapping[str, Any]
Response = dict[str, Any]

LIST_CONSUMERS_LIMIT_DEFAULT = 100  # ListStreamConsumers' MaxResults default (1..10000)


def consumer_shape(consumer: StreamConsumer, *, now_ms: int) -> dict[str, Any]:
    """The AWS `Consumer` shape (RegisterStreamConsumer, ListStreamConsumers)."""
    return {
        "ConsumerName": consumer.name,
        "ConsumerARN": consumer.arn,
        "ConsumerStatus": consumer.status(now_ms=now_ms).value,
        "ConsumerCreationTimestamp": datetime_from_ms(consumer.created_ms),
    }


def consumer_description_shape(consumer: StreamConsumer, *, now_ms: int) -> dict[str, Any]:
    """The AWS `ConsumerDescription` shape (DescribeStreamConsumer): a Consumer + StreamARN."""
    return {**consumer_shape(consumer, now_ms=now_ms), "StreamARN": consumer.stream_arn}


def _consumer_not_found(what: str) -> ShoalError:
    return ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.consumer_not_found(arn=what))


def _stream_of_arn(ctx: ServiceContext, arn: str) -> StreamMeta:
    """The live stream this StreamARN names, in any status but gone."""
    name = ctx.stream_name_from_arn(arn)  # InvalidArgument / ResourceNotFound for bad ARNs
    stream = ctx.image().stream(name, now_ms=ctx.now_ms())
    if stream is None or stream.arn != arn:
        raise ctx.stream_not_found(name)
    return stream


def _checked_consumer_arn(ctx: ServiceContext, arn: str) -> str:
    """A consumer ARN of this region and account, or the error AWS gives for it."""
    parts = parse_consumer_arn(arn)
    if parts is None:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.invalid_consumer_arn(arn=arn))
    ctx.stream_name_from_arn(parts.stream_arn)  # another account or region: not found
    return arn


def _consumer_target(
    ctx: ServiceContext, request: Request
) -> tuple[str | None, str | None, str | None]:
    """(ConsumerARN, StreamARN, ConsumerName) of a Describe/Deregister request: either the
    consumer ARN, or the stream ARN and the consumer name (AWS accepts both ways)."""
    consumer_arn = request.get("ConsumerARN")
    stream_arn = request.get("StreamARN")
    name = request.get("ConsumerName")
    if consumer_arn is not None:
        _checked_consumer_arn(ctx, consumer_arn)
        parts = parse_consumer_arn(consumer_arn)
        assert parts is not None
        if (stream_arn is not None and stream_arn != parts.stream_arn) or (
            name is not None and name != parts.consumer_name
        ):
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.consumer_arn_mismatch(consumer_arn=consumer_arn),
            )
        return consumer_arn, None, None
    if stream_arn is None or name is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.CONSUMER_ARN_OR_STREAM_AND_NAME,
        )
    return None, stream_arn, name


def find_consumer(ctx: ServiceContext, request: Request) -> StreamConsumer:
    """The consumer a Describe-style request names (ConsumerARN, or StreamARN + ConsumerName)."""
    now_ms = ctx.now_ms()
    consumer_arn, stream_arn, name = _consumer_target(ctx, request)
    consumers = ctx.image().consumers
    if consumer_arn is not None:
        consumer = consumers.by_arn(consumer_arn, now_ms=now_ms)
        if consumer is None:
            raise _consumer_not_found(consumer_arn)
        return consumer
    assert stream_arn is not None
    assert name is not None
    stream = _stream_of_arn(ctx, stream_arn)
    consumer = consumers.by_name(stream.uid, name, now_ms=now_ms)
    if consumer is None:
        raise _consumer_not_found(f"{name} under stream {stream.display_name}")
    return consumer


async def register_stream_consumer(ctx: ServiceContext, request: Request) -> Response:
    stream_arn = request["StreamARN"]
    ctx.stream_name_from_arn(stream_arn)
    tags = request.get("Tags") or {}
    result = await ctx.metadata.propose(
        commands.RegisterStreamConsumer(
            now_ms=ctx.now_ms(),
            stream_arn=stream_arn,
            consumer_name=request["ConsumerName"],
            tags=tuple(sorted(tags.items())),
            creating_ms=ctx.config.knobs.consumer_creating_ms,
            consumers_per_stream_max=ctx.config.consumers_per_stream_max,
        )
    )
    assert isinstance(result, StreamConsumer)
    # Judged at the registration time: a client sees CREATING (unless creating takes 0 ms).
    return {"Consumer": consumer_shape(result, now_ms=result.created_ms)}


async def deregister_stream_consumer(ctx: ServiceContext, request: Request) -> Response:
    consumer_arn, stream_arn, name = _consumer_target(ctx, request)
    if stream_arn is not None:
        _stream_of_arn(ctx, stream_arn)  # a missing stream is ResourceNotFound, as on AWS
    await ctx.metadata.propose(
        commands.DeregisterStreamConsumer(
            now_ms=ctx.now_ms(),
            consumer_arn=consumer_arn,
            stream_arn=stream_arn,
            consumer_name=name,
            deleting_ms=ctx.config.knobs.consumer_deleting_ms,
        )
    )
    return {}


async def describe_stream_consumer(ctx: ServiceContext, request: Request) -> Response:
    consumer = find_consumer(ctx, request)
    return {"ConsumerDescription": consumer_description_shape(consumer, now_ms=ctx.now_ms())}


async def list_stream_consumers(ctx: ServiceContext, request: Request) -> Response:
    now_ms = ctx.now_ms()
    image = ctx.image()
    stream = _stream_of_arn(ctx, request["StreamARN"])
    created = request.get("StreamCreationTimestamp")
    if created is not None and ms_from_datetime(created) // 1000 != stream.created_ms // 1000:
        raise ctx.stream_not_found(stream.name)
    consumers = image.consumers.for_stream(stream.uid, now_ms=now_ms)
    token = request.get("NextToken")
    if token is not None:
        payload = decode_token(token, secret=image.iterator_secret, now_ms=now_ms, expires=True)
        if payload.get("stream_uid") != stream.uid:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.NEXT_TOKEN_OTHER_STREAM)
        after = (int(payload["after_ms"]), str(payload["after_name"]))
        consumers = tuple(c for c in consumers if (c.created_ms, c.name) > after)
    limit = request.get("MaxResults", LIST_CONSUMERS_LIMIT_DEFAULT)
    page = consumers[:limit]
    response: Response = {"Consumers": [consumer_shape(c, now_ms=now_ms) for c in page]}
    if len(consumers) > limit:
        last = page[-1]
        response["NextToken"] = encode_token(
            {"stream_uid": stream.uid, "after_ms": last.created_ms, "after_name": last.name},
            issued_ms=now_ms,
            secret=image.iterator_secret,
        )
    return response


# --- Tags on consumer ARNs ------------------------------------------------------------------
# TagResource, UntagResource and ListTagsForResource take a stream ARN or a consumer ARN on
# AWS. These three route a consumer ARN here and a stream ARN to `control` as before.


def _check_consumer_tags(
    ctx: ServiceContext, consumer_arn: str, texts: list[str], *, verb: str
) -> None:
    parts = parse_consumer_arn(consumer_arn)
    assert parts is not None
    tag_rules.check_tag_characters(
        texts,
        verb=verb,
        stream_name=ctx.stream_name_from_arn(parts.stream_arn),
        account_id=ctx.config.account_id,
    )


async def tag_resource(ctx: ServiceContext, request: Request) -> Response:
    arn = request["ResourceARN"]
    if parse_consumer_arn(arn) is None:
        return await control.add_tags(ctx, ctx.stream_name_from_arn(arn), request["Tags"])
    tags = request["Tags"]
    consumer_arn = _checked_consumer_arn(ctx, arn)
    _check_consumer_tags(ctx, consumer_arn, [*tags, *tags.values()], verb=tag_rules.ADD)
    if len(tags) > limits.tags_per_call_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.too_many_tags_in_request(tags_per_call_max=limits.tags_per_call_max),
        )
    await ctx.metadata.propose(
        commands.ChangeConsumerTags(
            now_ms=ctx.now_ms(),
            consumer_arn=consumer_arn,
            added=tuple(sorted(tags.items())),
        )
    )
    return {}


async def untag_resource(ctx: ServiceContext, request: Request) -> Response:
    arn = request["ResourceARN"]
    if parse_consumer_arn(arn) is None:
        return await control.remove_tags(ctx, ctx.stream_name_from_arn(arn), request["TagKeys"])
    consumer_arn = _checked_consumer_arn(ctx, arn)
    _check_consumer_tags(ctx, consumer_arn, request["TagKeys"], verb=tag_rules.REMOVE)
    await ctx.metadata.propose(
        commands.ChangeConsumerTags(
            now_ms=ctx.now_ms(),
            consumer_arn=consumer_arn,
            removed=tuple(request["TagKeys"]),
        )
    )
    return {}


async def list_tags_for_resource(ctx: ServiceContext, request: Request) -> Response:
    arn = request["ResourceARN"]
    if parse_consumer_arn(arn) is None:
        return await control.list_tags_for_resource(ctx, request)
    consumer = find_consumer(ctx, {"ConsumerARN": arn})
    return {"Tags": [{"Key": key, "Value": value} for key, value in consumer.tags]}
