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

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from broker.api.capacity.v1 import capacity_pb2 as pb
from broker.tls import open_channel
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = pb.DESCRIPTOR.services_by_name["CapacityService"]
DEFAULT_TIMEOUT_S = 10.0  # a read of the node's image: fast unless the node is unreachable


class CapacityClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        assert timeout_s > 0
        self._channel = open_channel(target, credentials)
        self._timeout_s = timeout_s

    def _call(self, method: str, request: Message) -> dict[str, Any]:
        descriptor = _SERVICE.methods_by_name[method]
        output_class = getattr(pb, descriptor.output_type.name)
        stub: Any = self._channel.unary_unary(
            f"/{_SERVICE.full_name}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=output_class.FromString,
        )
        try:
            answer = stub(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return json_format.MessageToDict(
            answer,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )

    def describe_hot_shards(self, stream_name: str, *, limit: int | None = None) -> dict[str, Any]:
        """{"stream_name", "stream_mode", "open_shard_count", "shards": [ShardLoad, ...]},
        busiest first; time fields (span_ms, reported_ms) are strings, as JSON prints uint64."""
        request = pb.DescribeHotShardsRequest(stream_name=stream_name)
        if limit is not None:
            request.limit = limit
        return self._call("DescribeHotShards", request)

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
        return self._call("DescribeHotKeys", request)

    def list_scaling_events(self, stream_name: str, *, limit: int | None = None) -> dict[str, Any]:
        """{"stream_name", "stream_mode", "events": [{"time_ms", "kind", "shard_ids",
        "reason"}, ...]}, oldest first."""
        request = pb.ListScalingEventsRequest(stream_name=stream_name)
        if limit is not None:
            request.limit = limit
        return self._call("ListScalingEvents", request)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CapacityClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
