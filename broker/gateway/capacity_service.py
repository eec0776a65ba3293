"""The gRPC CapacityService (proto/broker/api/capacity/v1/capacity.proto): hot shards, hot keys
and the on-demand scaling log, read from this node's metadata image.

Thin by design: the views are `service/capacity.py`'s; this module decodes requests, encodes
answers, and maps a ShoalError to the rich gRPC status as every other door does.

    server.add_generic_rpc_handlers((capacity_handler(image, clock, settings),))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from broker.api.capacity.v1 import capacity_pb2 as pb
from broker.clock import Clock
from broker.gateway.unary_handlers import unary_service_handler
from broker.meta.image import MetadataImage, StreamMeta
from broker.service import capacity
from broker.wire.error_mapping import NativeMethod, native_rpc

log = logging.getLogger(__name__)

_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["CapacityService"]
SERVICE_NAME = _DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacitySettings:
    account_id: str
    load_stale_ms: int  # Knobs.load_report_stale_ms: older reports are shown as none


class _CapacityServicer:
    def __init__(
        self, image: Callable[[], MetadataImage], clock: Clock, settings: CapacitySettings
    ) -> None:
        self._image = image
        self._clock = clock
        self._settings = settings

    def _stream(self, image: MetadataImage, name: str) -> StreamMeta:
        return capacity.live_stream(
            image, name, now_ms=self._clock.wall_ms(), account_id=self._settings.account_id
        )

    async def describe_hot_shards(
        self, request: pb.DescribeHotShardsRequest
    ) -> pb.DescribeHotShardsResponse:
        limit = capacity.check_limit(request.limit if request.HasField("limit") else None)
        image = self._image()
        stream = self._stream(image, request.stream_name)
        views = capacity.hot_shards(
            image,
            stream,
            now_ms=self._clock.wall_ms(),
            stale_ms=self._settings.load_stale_ms,
            limit=limit,
        )
        return pb.DescribeHotShardsResponse(
            stream_name=stream.name,
            stream_mode=stream.mode.value,
            open_shard_count=len(stream.open_shards()),
            shards=[_shard_load(view) for view in views],
        )

    async def describe_hot_keys(
        self, request: pb.DescribeHotKeysRequest
    ) -> pb.DescribeHotKeysResponse:
        limit = capacity.check_limit(request.limit if request.HasField("limit") else None)
        image = self._image()
        stream = self._stream(image, request.stream_name)
        views = capacity.hot_keys(
            image,
            stream,
            shard_id=request.shard_id if request.HasField("shard_id") else None,
            now_ms=self._clock.wall_ms(),
            stale_ms=self._settings.load_stale_ms,
            limit=limit,
        )
        return pb.DescribeHotKeysResponse(
            stream_name=stream.name,
            keys=[
                pb.KeyLoad(
                    partition_key=view.key.partition_key,
                    shard_id=view.shard_id,
                    records_per_second=view.records_per_second,
                    records_per_second_error=view.records_per_second_error,
                    bytes_per_second=view.bytes_per_second,
                    bytes_per_second_error=view.bytes_per_second_error,
                    shard_share=view.shard_share,
                )
                for view in views
            ],
        )

    async def list_scaling_events(
        self, request: pb.ListScalingEventsRequest
    ) -> pb.ListScalingEventsResponse:
        image = self._image()
        stream = self._stream(image, request.stream_name)
        events = capacity.scaling_events(
            image, stream, limit=request.limit if request.HasField("limit") else None
        )
        return pb.ListScalingEventsResponse(
            stream_name=stream.name,
            stream_mode=stream.mode.value,
            events=[
                pb.ScalingEvent(
                    time_ms=event.time_ms,
                    kind=event.kind.value,
                    shard_ids=list(event.shard_ids),
                    reason=event.reason,
                )
                for event in events
            ],
        )


def _shard_load(view: capacity.ShardLoadView) -> pb.ShardLoad:
    shard, report = view.shard, view.report
    message = pb.ShardLoad(
        shard_id=shard.shard_id,
        hash_key_start=str(shard.hash_key_start),
        hash_key_end=str(shard.hash_key_end),
        leader=shard.leader or "",
        records_per_second=view.records_per_second,
        bytes_per_second=view.bytes_per_second,
        utilization=view.utilization,
        reported=report is not None,
    )
    if report is not None:
        message.span_ms = report.span_ms
        message.reported_ms = report.reported_ms
        message.hot_key_share = report.hot_key_share_ppm / 1_000_000
        split_key = report.split_key(
            hash_key_start=shard.hash_key_start, hash_key_end=shard.hash_key_end
        )
        if split_key is not None:
            message.split_hash_key = str(split_key)
        if report.hot_key is not None:
            message.hot_partition_key = report.hot_key
    return message


_Method = NativeMethod


def capacity_handler(
    image: Callable[[], MetadataImage], clock: Clock, settings: CapacitySettings
) -> grpc.GenericRpcHandler:
    """The generic handler serving every CapacityService RPC from `image()`."""
    servicer = _CapacityServicer(image, clock, settings)
    methods: dict[str, _Method] = {
        "DescribeHotShards": servicer.describe_hot_shards,
        "DescribeHotKeys": servicer.describe_hot_keys,
        "ListScalingEvents": servicer.list_scaling_events,
    }
    return unary_service_handler(
        _DESCRIPTOR,
        pb,
        {name: native_rpc("capacity", name, method) for name, method in methods.items()},
    )
