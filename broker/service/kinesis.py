"""KinesisService: operation name -> implementation. The one entry point of both front doors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker.service import control, reshard
from broker.service.context import ServiceContext
from broker.service.records import RecordsApi

Request = Mapping[str, Any]
Response = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]


class KinesisService:
    """Every implemented Kinesis operation of one node. Loop only; one per node."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        records = RecordsApi(ctx)
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
            "TagResource": lambda r: control.add_tags(
                ctx, ctx.stream_name_from_arn(r["ResourceARN"]), r["Tags"]
            ),
            "UntagResource": lambda r: control.remove_tags(
                ctx, ctx.stream_name_from_arn(r["ResourceARN"]), r["TagKeys"]
            ),
            "ListTagsForResource": lambda r: control.list_tags_for_resource(ctx, r),
            "EnableEnhancedMonitoring": lambda r: control.set_enhanced_monitoring(
                ctx, r, enable=True
            ),
            "DisableEnhancedMonitoring": lambda r: control.set_enhanced_monitoring(
                ctx, r, enable=False
            ),
            "DescribeLimits": lambda r: control.describe_limits(ctx, r),
            "UpdateStreamMode": lambda r: control.update_stream_mode(ctx, r),
            "UpdateMaxRecordSize": lambda r: control.update_max_record_size(ctx, r),
            "SplitShard": lambda r: reshard.split_shard(ctx, r),
            "MergeShards": lambda r: reshard.merge_shards(ctx, r),
            "UpdateShardCount": lambda r: reshard.update_shard_count(ctx, r),
            "PutRecord": records.put_record,
            "PutRecords": records.put_records,
            "GetShardIterator": records.get_shard_iterator,
            "GetRecords": records.get_records,
        }

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def call(self, operation: str, request: Request) -> Response:
        """Run one validated operation. Raises ShoalError for every client-visible failure."""
        handler = self._handlers[operation]
        return await handler(request)
