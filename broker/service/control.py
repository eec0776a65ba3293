"""Control-plane operations: streams, retention, tags, monitoring, limits, listings.

Each mutation becomes one metadata command; the state machine validates it against the state at
apply time (so racing calls resolve there), and this module only turns requests into commands and
images into responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.image import RecordDistribution, StreamMeta, StreamMode, StreamStatus
from broker.meta.metadata_format import ENCRYPTED_CREATION_LEVEL, REQUESTED_FACTOR_LEVEL
from broker.service import describe, stream_features
from broker.service.context import ServiceContext
from broker.service.tokens import decode_token, encode_token
from broker.streams import namespaces, tag_rules
from broker.streams.internal_names import is_internal
from broker.streams.published_topology import published
from broker.streams.shard_listing import list_shards_filtered
from broker.timestamps import ms_from_datetime

Request = Mapping[str, Any]
Response = dict[str, Any]

# The node's own callers (door "internal") create an internal stream whose encryption is
# decided before its first record (a video stream's fragments, an encrypted delivery stream's)
# already encrypted, under the KeyId this request member names: one CreateStream command
# carries the stream's first data key, so no node holds a replica of it without the key. Not
# a member of AWS's CreateStream; honoured for internal stream names only, which outside
# callers cannot create.
CREATE_ENCRYPTED_UNDER = "ShoalEncryptedUnderKeyId"


def _requested_mode(request: Request) -> StreamMode:
    """The capacity mode CreateStream asks for. With neither a mode nor a shard count, AWS
    creates an on-demand stream of 4 shards (recorded by localstack's `test_create_stream_
    without_shard_count` against AWS, 2022-08-26; "for the data streams with a provisioned
    mode, you must specify the number of shards"); a shard count alone means provisioned."""
    mode_details = request.get("StreamModeDetails")
    if mode_details:
        return StreamMode(mode_details["StreamMode"])
    if request.get("ShardCount") is None:
        return StreamMode.ON_DEMAND
    return StreamMode.PROVISIONED


async def create_stream(ctx: ServiceContext, request: Request) -> Response:
    shard_count = request.get("ShardCount")
    mode = _requested_mode(request)
    if shard_count is None:
        if mode is StreamMode.PROVISIONED:
            raise ShoalError(
                ErrorCode.VALIDATION,
                error_messages.SHARD_COUNT_NULL,
            )
        shard_count = limits.on_demand_initial_shard_count
    tags = request.get("Tags") or {}
    if len(tags) > limits.tags_per_stream_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.too_many_tags_at_creation(
                tags_per_stream_max=limits.tags_per_stream_max
            ),
        )
    display_name = request["StreamName"]
    tag_rules.check_tag_characters(
        [*tags, *tags.values()],
        verb=tag_rules.ADD,
        stream_name=display_name,
        account_id=ctx.config.account_id,
    )
    name = ctx.stream_key(display_name)  # in the caller's account and region
    arn = ctx.stream_arn(name)
    key_id = request.get(CREATE_ENCRYPTED_UNDER) if is_internal(display_name) else None
    data_key = None
    if key_id is not None:
        ctx.metadata.require_format(ENCRYPTED_CREATION_LEVEL)
        data_key = await stream_features.new_data_key(ctx, key_id, stream_arn=arn)
    placed, requested = _replication_factors(ctx)
    await ctx.metadata.propose(
        commands.CreateStream(
            now_ms=ctx.now_ms(),
            name=name,
            arn=arn,
            shard_count=shard_count,
            mode=mode,
            retention_hours=limits.retention_hours_default,
            max_record_size_kib=request.get("MaxRecordSizeInKiB", limits.record_size_kib_min),
            record_distribution=RecordDistribution(
                request.get(
                    "RecordDistributionStrategy", RecordDistribution.USER_PARTITION_KEY.value
                )
            ),
            warm_throughput_mibps=request.get("WarmThroughputMiBps"),
            tags=tuple(sorted(tags.items())),
            creating_ms=ctx.config.knobs.stream_creating_ms,
            shard_count_per_account_max=ctx.config.shard_count_per_account_max,
            on_demand_streams_max=ctx.config.on_demand_streams_max,
            replication_factor=placed,
            requested_replication_factor=requested,
            key_id=key_id,
            data_key=data_key,
        )
    )
    return {}


def _replication_factors(ctx: ServiceContext) -> tuple[int, int]:
    """(replicas placed now, the factor the stream keeps if above them; 0: the same).

    The configured factor, capped by the nodes that can take replicas now (apply checks it
    again against its own image). When fewer nodes are ACTIVE (a StatefulSet starting its
    pods one by one), the stream still asks for the configured factor and the controller adds
    the replicas as nodes join; a cluster below `REQUESTED_FACTOR_LEVEL` (a rolling upgrade)
    cannot carry that, and keeps the smaller factor. A node started alone (no peers, nothing
    to join) keeps factor 1, as before: it expects no other node."""
    image = ctx.image()
    config = ctx.config
    configured = config.replication_factor
    placed = max(1, min(configured, len(image.active_node_ids())))
    alone = not (config.peers or config.join or config.peers_from_dns)
    if placed == configured or alone or image.metadata_format < REQUESTED_FACTOR_LEVEL:
        return placed, 0
    return placed, configured


async def delete_stream(ctx: ServiceContext, request: Request) -> Response:
    name = ctx.requested_stream_name(request)
    await ctx.metadata.propose(
        commands.DeleteStream(
            now_ms=ctx.now_ms(),
            name=name,
            deleting_ms=ctx.config.knobs.stream_deleting_ms,
            enforce_consumer_deletion=bool(request.get("EnforceConsumerDeletion", False)),
        )
    )
    if ctx.shards.meter is not None:  # other nodes forget it at their next housekeeping pass
        ctx.shards.meter.probe.stream_deleted(name)
    return {}


def _as_published(ctx: ServiceContext, stream: StreamMeta, *, now_ms: int) -> StreamMeta:
    """The stream with the topology AWS shows: the previous one while a reshard's UPDATING
    lasts (streams/published_topology.py)."""
    return published(stream, now_ms=now_ms, updating_ms=ctx.config.knobs.stream_updating_ms)


async def describe_stream(ctx: ServiceContext, request: Request) -> Response:
    now_ms = ctx.now_ms()
    stream = _as_published(ctx, ctx.stream_for(request), now_ms=now_ms)
    limit = min(
        request.get("Limit", limits.describe_stream_limit_default), limits.describe_stream_limit_max
    )
    shards = list_shards_filtered(
        stream, filter_type=None, shard_id=None, timestamp_ms=None, now_ms=now_ms
    )
    if stream.status(now_ms=now_ms) is StreamStatus.CREATING:
        shards = []  # AWS shows a stream's shards once it is ACTIVE
    start_after = request.get("ExclusiveStartShardId")
    if start_after is not None:
        shards = [s for s in shards if s.shard_id > start_after]
    page = shards[:limit]
    description = describe.stream_description_shape(
        stream, shards=page, has_more_shards=len(shards) > limit, now_ms=now_ms
    )
    return {"StreamDescription": description}


async def describe_stream_summary(ctx: ServiceContext, request: Request) -> Response:
    now_ms = ctx.now_ms()
    stream = _as_published(ctx, ctx.stream_for(request), now_ms=now_ms)
    summary = describe.stream_description_summary_shape(stream, now_ms=now_ms)
    summary["ConsumerCount"] = len(ctx.image().consumers.for_stream(stream.uid, now_ms=now_ms))
    return {"StreamDescriptionSummary": summary}


async def list_streams(ctx: ServiceContext, request: Request) -> Response:
    now_ms = ctx.now_ms()
    image = ctx.image()
    limit = request.get("Limit", limits.list_streams_limit_default)
    start_after = request.get("ExclusiveStartStreamName")
    token = request.get("NextToken")
    if token is not None:
        payload = decode_token(token, secret=image.iterator_secret, now_ms=now_ms, expires=False)
        start_after = payload.get("after")
    # One region of one account: the caller's (streams/namespaces.py), by name.
    streams = sorted(
        (meta.display_name, key)
        for key, meta in image.streams.items()
        if not meta.is_gone(now_ms=now_ms)
        and not is_internal(key)
        and ctx.in_callers_namespace(key)
    )
    if start_after is not None:
        streams = [(name, key) for name, key in streams if name > start_after]
    page = streams[:limit]
    has_more = len(streams) > limit
    response: Response = {
        "StreamNames": [name for name, _ in page],
        "HasMoreStreams": has_more,
        "StreamSummaries": [
            describe.stream_summary_shape(image.streams[key], now_ms=now_ms) for _, key in page
        ],
    }
    if has_more:
        response["NextToken"] = encode_token(
            {"after": page[-1][0]}, issued_ms=now_ms, secret=image.iterator_secret
        )
    return response


async def list_shards(ctx: ServiceContext, request: Request) -> Response:
    now_ms = ctx.now_ms()
    image = ctx.image()
    token = request.get("NextToken")
    start_after = request.get("ExclusiveStartShardId")
    shard_filter = request.get("ShardFilter")
    if token is not None:
        if request.get("StreamName") is not None or request.get("StreamARN") is not None:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.NEXT_TOKEN_WITH_STREAM_NAME,
            )
        payload = decode_token(token, secret=image.iterator_secret, now_ms=now_ms, expires=True)
        stream = image.stream_by_uid(payload["stream_uid"])
        if (
            stream is None
            or stream.is_gone(now_ms=now_ms)
            or not ctx.in_callers_namespace(stream.name)
        ):
            raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.NEXT_TOKEN_STREAM_GONE)
        start_after = payload["after"]
        shard_filter = payload.get("filter")
    else:
        stream = ctx.stream_for(request)
        created = request.get("StreamCreationTimestamp")
        if created is not None and ms_from_datetime(created) // 1000 != stream.created_ms // 1000:
            raise ctx.stream_not_found(stream.name)
    serialized_filter = _serialized_filter(shard_filter)
    shards = list_shards_filtered(
        _as_published(ctx, stream, now_ms=now_ms),
        filter_type=serialized_filter.get("Type"),
        shard_id=serialized_filter.get("ShardId"),
        timestamp_ms=serialized_filter.get("TimestampMs"),
        now_ms=now_ms,
    )
    if start_after is not None:
        shards = [s for s in shards if s.shard_id > start_after]
    limit = request.get("MaxResults", limits.list_shards_limit_default)
    page = shards[:limit]
    response: Response = {"Shards": [describe.shard_shape(shard) for shard in page]}
    if len(shards) > limit:
        response["NextToken"] = encode_token(
            {"stream_uid": stream.uid, "after": page[-1].shard_id, "filter": serialized_filter},
            issued_ms=now_ms,
            secret=image.iterator_secret,
        )
    return response


def _serialized_filter(shard_filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ShardFilter as plain JSON values, so it can ride inside a NextToken."""
    if not shard_filter:
        return {}
    if "TimestampMs" in shard_filter:  # already serialized (from a token)
        return dict(shard_filter)
    kind = shard_filter["Type"]
    shard_id = shard_filter.get("ShardId")
    timestamp = shard_filter.get("Timestamp")
    if kind == "AFTER_SHARD_ID" and shard_id is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, error_messages.SHARD_ID_REQUIRED_AFTER_SHARD_ID
        )
    if kind in ("AT_TIMESTAMP", "FROM_TIMESTAMP") and timestamp is None:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, error_messages.timestamp_required_for(kind=kind)
        )
    return {
        "Type": kind,
        "ShardId": shard_id,
        "TimestampMs": ms_from_datetime(timestamp) if timestamp is not None else None,
    }


async def change_retention(ctx: ServiceContext, request: Request, *, increase: bool) -> Response:
    await ctx.metadata.propose(
        commands.ChangeRetention(
            now_ms=ctx.now_ms(),
            name=ctx.requested_stream_name(request),
            retention_hours=request["RetentionPeriodHours"],
            increase=increase,
        )
    )
    return {}


def _require_stream(ctx: ServiceContext, name: str) -> None:
    """Not-found before any tag check, as AWS reports it (the transition checks again)."""
    if ctx.image().stream(name, now_ms=ctx.now_ms()) is None:
        raise ctx.stream_not_found(name)


async def add_tags(ctx: ServiceContext, name: str, tags: Mapping[str, str]) -> Response:
    _require_stream(ctx, name)
    tag_rules.check_tag_characters(
        [*tags, *tags.values()],
        verb=tag_rules.ADD,
        stream_name=name,
        account_id=ctx.config.account_id,
    )
    if len(tags) > limits.tags_per_call_max:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.too_many_tags_in_request(tags_per_call_max=limits.tags_per_call_max),
        )
    await ctx.metadata.propose(
        commands.AddTags(now_ms=ctx.now_ms(), name=name, tags=tuple(sorted(tags.items())))
    )
    return {}


async def remove_tags(ctx: ServiceContext, name: str, keys: list[str]) -> Response:
    _require_stream(ctx, name)
    tag_rules.check_tag_characters(
        keys, verb=tag_rules.REMOVE, stream_name=name, account_id=ctx.config.account_id
    )
    await ctx.metadata.propose(
        commands.RemoveTags(now_ms=ctx.now_ms(), name=name, keys=tuple(keys))
    )
    return {}


def _tag_list(stream: StreamMeta) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in stream.tags]


async def list_tags_for_stream(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for(request)
    limit = request.get("Limit", limits.tags_per_stream_max)
    start_after = request.get("ExclusiveStartTagKey")
    tags = [t for t in _tag_list(stream) if start_after is None or t["Key"] > start_after]
    return {"Tags": tags[:limit], "HasMoreTags": len(tags) > limit}


async def list_tags_for_resource(ctx: ServiceContext, request: Request) -> Response:
    name = ctx.stream_name_from_arn(request["ResourceARN"])
    stream = ctx.image().stream(name, now_ms=ctx.now_ms())
    if stream is None:
        raise ctx.stream_not_found(name)
    return {"Tags": _tag_list(stream)}


async def set_enhanced_monitoring(
    ctx: ServiceContext, request: Request, *, enable: bool
) -> Response:
    name = ctx.requested_stream_name(request)
    requested = request["ShardLevelMetrics"]
    metrics = describe.SHARD_LEVEL_METRICS if "ALL" in requested else tuple(requested)
    result = await ctx.metadata.propose(
        commands.SetEnhancedMonitoring(
            now_ms=ctx.now_ms(), name=name, metrics=tuple(sorted(set(metrics))), enable=enable
        )
    )
    assert isinstance(result, tuple)
    current, desired = result
    if ctx.shards.meter is not None:  # other nodes follow at their next housekeeping pass
        ctx.shards.meter.probe.enhanced_monitoring_changed(name, desired)
    return {
        "StreamName": namespaces.name_of(name),
        "StreamARN": ctx.stream_arn(name),
        "CurrentShardLevelMetrics": list(current),
        "DesiredShardLevelMetrics": list(desired),
    }


async def update_stream_mode(ctx: ServiceContext, request: Request) -> Response:
    name = ctx.stream_name_from_arn(ctx.required_stream_arn(request))
    await ctx.metadata.propose(
        commands.UpdateStreamMode(
            now_ms=ctx.now_ms(),
            name=name,
            mode=StreamMode(request["StreamModeDetails"]["StreamMode"]),
            updating_ms=ctx.config.knobs.stream_updating_ms,
            on_demand_streams_max=ctx.config.on_demand_streams_max,
        )
    )
    return {}


async def update_max_record_size(ctx: ServiceContext, request: Request) -> Response:
    name = ctx.stream_name_from_arn(ctx.required_stream_arn(request))
    await ctx.metadata.propose(
        commands.UpdateMaxRecordSize(
            now_ms=ctx.now_ms(), name=name, max_record_size_kib=request["MaxRecordSizeInKiB"]
        )
    )
    return {}


def is_active(stream: StreamMeta, *, now_ms: int) -> bool:
    return stream.status(now_ms=now_ms) is StreamStatus.ACTIVE
