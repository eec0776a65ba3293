"""KinesisService: operation name -> implementation. The one entry point of both front doors."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker import error_messages
from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.queues.operations import QueueOperations
from broker.service import account, control, reshard, stream_consumers, stream_features
from broker.service.context import CURRENT_CALLER, ServiceContext
from broker.service.records import RecordsApi, shaped_answer
from broker.service.subscriptions import Subscription, Subscriptions
from broker.streams.internal_names import INTERNAL_PREFIX, is_internal

Request = Mapping[str, Any]
Response = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]

# The doors that write GetRecords' `ShardPage` (and SubscribeToShard events') to their wire
# themselves (gateway/grpc_page.py, gateway/aws_codec.py); every other caller gets its Records
# as record dicts.
_PAGE_WRITING_DOORS = frozenset({"grpc", "http"})
_STREAM_NAMING_MEMBERS = ("StreamName", "StreamARN", "ConsumerARN", "ResourceARN")
_STREAM_IN_ARN = re.compile(r":stream/([^/]+)")
_QUEUE_ARN = re.compile(r"arn:aws[\w-]*:kinesis:[\w-]+:\d{12}:queue/\S+")


class KinesisService:
    """Every implemented Kinesis operation of one node. Loop only; one per node."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        records = RecordsApi(ctx)
        # SubscribeToShard answers {"EventStream": Subscription} (an async iterator of events)
        # that the front doors stream; `subscriptions` is the node's table of open ones.
        self.subscriptions = Subscriptions(ctx)
        self._handlers: dict[str, Handler] = {
            "CreateStream": lambda r: control.create_stream(ctx, r),
            "DeleteStream": lambda r: control.delete_stream(ctx, r),
            "DescribeStream": lambda r: control.describe_stream(ctx, r),
            "DescribeStreamSummary": lambda r: control.describe_stream_summary(ctx, r),
            "ListStreams": lambda r: control.list_streams(ctx, r),
            "ListShards": lambda r: control.list_shards(ctx, r),
            "IncreaseStreamRetentionPeriod": lambda r: control.change_retention(
                ctx, r, increase=True
            ),
            "DecreaseStreamRetentionPeriod": lambda r: control.change_retention(
                ctx, r, increase=False
            ),
            "AddTagsToStream": lambda r: control.add_tags(
                ctx, ctx.requested_stream_name(r), r["Tags"]
            ),
            "RemoveTagsFromStream": lambda r: control.remove_tags(
                ctx, ctx.requested_stream_name(r), r["TagKeys"]
            ),
            "ListTagsForStream": lambda r: control.list_tags_for_stream(ctx, r),
            # A stream ARN or a consumer ARN (stream_consumers routes streams to control).
            "TagResource": lambda r: stream_consumers.tag_resource(ctx, r),
            "UntagResource": lambda r: stream_consumers.untag_resource(ctx, r),
            "ListTagsForResource": lambda r: stream_consumers.list_tags_for_resource(ctx, r),
            "EnableEnhancedMonitoring": lambda r: control.set_enhanced_monitoring(
                ctx, r, enable=True
            ),
            "DisableEnhancedMonitoring": lambda r: control.set_enhanced_monitoring(
                ctx, r, enable=False
            ),
            "DescribeLimits": lambda r: account.describe_limits(ctx, r),
            "DescribeAccountSettings": lambda r: account.describe_account_settings(ctx, r),
            "UpdateAccountSettings": lambda r: account.update_account_settings(ctx, r),
            "UpdateStreamMode": lambda r: control.update_stream_mode(ctx, r),
            "UpdateMaxRecordSize": lambda r: control.update_max_record_size(ctx, r),
            "SplitShard": lambda r: reshard.split_shard(ctx, r),
            "MergeShards": lambda r: reshard.merge_shards(ctx, r),
            "UpdateShardCount": lambda r: reshard.update_shard_count(ctx, r),
            "PutRecord": records.put_record,
            "PutRecords": records.put_records,
            "GetShardIterator": records.get_shard_iterator,
            "GetRecords": records.get_records,
            "SubscribeToShard": self.subscriptions.subscribe,
            "RegisterStreamConsumer": lambda r: stream_consumers.register_stream_consumer(ctx, r),
            "DeregisterStreamConsumer": lambda r: stream_consumers.deregister_stream_consumer(
                ctx, r
            ),
            "DescribeStreamConsumer": lambda r: stream_consumers.describe_stream_consumer(ctx, r),
            "ListStreamConsumers": lambda r: stream_consumers.list_stream_consumers(ctx, r),
            "PutResourcePolicy": lambda r: stream_features.put_resource_policy(ctx, r),
            "GetResourcePolicy": lambda r: stream_features.get_resource_policy(ctx, r),
            "DeleteResourcePolicy": lambda r: stream_features.delete_resource_policy(ctx, r),
            "StartStreamEncryption": lambda r: stream_features.start_stream_encryption(ctx, r),
            "StopStreamEncryption": lambda r: stream_features.stop_stream_encryption(ctx, r),
            "UpdateStreamWarmThroughput": lambda r: stream_features.update_stream_warm_throughput(
                ctx, r
            ),
            "UpdateStreamRecordDistributionStrategy": lambda r: (
                stream_features.update_record_distribution(ctx, r)
            ),
        }
        # Queues (broker/queues/): records delivered one by one with acknowledgements. The
        # tagging operations take a queue ARN as well as a stream's or a consumer's.
        queues = QueueOperations(ctx)
        self._handlers.update(queues.handlers())
        for operation, on_queue in (
            ("TagResource", queues.tag_queue),
            ("UntagResource", queues.untag_queue),
            ("ListTagsForResource", queues.list_queue_tags),
        ):
            self._handlers[operation] = _queue_or(on_queue, self._handlers[operation])

    def add_operations(
        self,
        handlers: Mapping[str, Handler],
        *,
        resource_arn: re.Pattern[str],
        tagging: Mapping[str, Handler],
    ) -> None:
        """Serve operations implemented above this layer (the channels of broker/firehose/),
        and route the tagging operations `tagging` names to them for a ResourceARN matching
        `resource_arn`. Called by node.py before the doors start."""
        self._handlers.update(handlers)
        for operation, on_resource in tagging.items():
            self._handlers[operation] = _resource_or(
                resource_arn, on_resource, self._handlers[operation]
            )

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def call(
        self, operation: str, request: Request, caller: Caller | None = None
    ) -> Response:
        """Run one validated operation. Raises ShoalError for every client-visible failure.
        `caller` is the doors' `Caller`, None (or a Caller with door "internal") for the
        node's own calls: only those may name an internal stream (`streams.internal_names`).
        Its account and region are the namespace stream names resolve in
        (`streams/namespaces.py`; `ServiceContext.namespace`)."""
        handler = self._handlers[operation]
        if caller is not None and caller.door != "internal":
            self._refuse_internal_streams(operation, request)
        token = CURRENT_CALLER.set(caller)
        try:
            response = await handler(request)
        finally:
            CURRENT_CALLER.reset(token)
        if caller is None or caller.door not in _PAGE_WRITING_DOORS:
            return shaped_answer(response)
        events = response.get("EventStream")
        if isinstance(events, Subscription):
            events.pages_for_doors = True  # events queued before this one carry dicts: fine
        return response

    def _refuse_internal_streams(self, operation: str, request: Request) -> None:
        """An outside caller naming an internal stream (by name or in any ARN) is answered as
        if it did not exist; creating one with the reserved prefix is refused."""
        for key in _STREAM_NAMING_MEMBERS:
            value = request.get(key)
            if not isinstance(value, str):
                continue
            name = value if key == "StreamName" else _stream_in_arn(value)
            if name is None or not is_internal(name):
                continue
            if operation == "CreateStream":
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    error_messages.reserved_stream_name(prefix=INTERNAL_PREFIX),
                )
            raise self.ctx.stream_not_found(name)


def _queue_or(on_queue: Handler, otherwise: Handler) -> Handler:
    """`on_queue` for a request whose ResourceARN names a queue, `otherwise` for the rest."""
    return _resource_or(_QUEUE_ARN, on_queue, otherwise)


def _resource_or(arn: re.Pattern[str], on_resource: Handler, otherwise: Handler) -> Handler:
    """`on_resource` for a request whose ResourceARN matches `arn`, `otherwise` for the rest."""

    async def handle(request: Request) -> Response:
        if arn.fullmatch(str(request.get("ResourceARN", ""))):
            return await on_resource(request)
        return await otherwise(request)

    return handle


def _stream_in_arn(arn: str) -> str | None:
    match = _STREAM_IN_ARN.search(arn)
    return None if match is None else match.group(1)
