"""`CapacityClient`: the CapacityService (proto/broker/api/capacity/v1/capacity.proto) for
scripts and the `shoal hot-shards / hot-keys / scaling-events` CLI. Blocking; one channel to
any node; answers are plain dicts with the proto's field names.

    with CapacityClient("127.0.0.1:50051") as capacity:
        for shard in capacity.describe_hot_shards("orders", limit=5)["shards"]:
            print(shard["shard_id"], shard["records_per_second"])
        print(capacity.describe_hot_keys("orders")["keys"][0]["partition_key"])
        print(capacity.list_scaling_events("orders")["events"])

Figures come from the answering node's metadata image (up to one load report interval old).
Errors raise `ShoalError` with the Kinesis error name (ResourceNotFoundException, ...).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from broker.api.capacity.v1 import capacity_pb2 as pb
from broker.client.unary import UnaryServiceClient


class CapacityClient(UnaryServiceClient):
    _MODULE = pb
    _SERVICE_NAME = "CapacityService"
    DEFAULT_TIMEOUT_S = 10.0  # a read of the node's image: fast unless the node is unreachable

    def _call_dict(self, method: str, request: Message) -> dict[str, Any]:
        return json_format.MessageToDict(
            self._call(method, request),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )

    def describe_hot_shards(self, stream_name: str, *, limit: int | None = None) -> dict[str, Any]:
        """{"stream_name", "stream_mode", "open_shard_count", "shards": [ShardLoad, ...]},
        busiest first; time fields (span_ms, reported_ms) are strings, as JSON prints uint64."""
        request = pb.DescribeHotShardsRequest(stream_name=stream_name)
        if limit is not None:
            request.limit = limit
        return self._call_dict("DescribeHotShards", request)

    def describe_hot_keys(
        self, stream_name: str, *, shard_id: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """{"stream_name", "keys": [KeyLoad, ...]}, busiest first; rates are upper bounds,
        each with its error."""
        request = pb.DescribeHotKeysRequest(stream_name=stream_name)
        if shard_id is not None:
            request.shard_id = shard_id
        if limit is not None:
            request.limit = limit
        return self._call_dict("DescribeHotKeys", request)

    def list_scaling_events(self, stream_name: str, *, limit: int | None = None) -> dict[str, Any]:
        """{"stream_name", "stream_mode", "events": [{"time_ms", "kind", "shard_ids",
        "reason"}, ...]}, oldest first."""
        request = pb.ListScalingEventsRequest(stream_name=stream_name)
        if limit is not None:
            request.limit = limit
        return self._call_dict("ListScalingEvents", request)
