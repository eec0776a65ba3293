"""`LimitsClient`: the LimitsService (proto/broker/api/limits/v1/limits.proto) for scripts and
the `shoal limits` CLI. Blocking; one channel to any node; answers are plain dicts.

    with LimitsClient("127.0.0.1:50051") as limits:
        limits.update_stream("orders", {"write_bytes_per_second": 4 * 1024 * 1024})
        limits.update_stream("orders", {}, reset=["write_bytes_per_second"])
        print(limits.describe_stream("orders")["effective"])

Rates: 0 lifts a limit; a rate absent from `overrides` follows the cluster default.
Errors raise `ShoalError` with the Kinesis error name (ResourceNotFoundException, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from broker.api.limits.v1 import limits_pb2 as pb
from broker.iam.grpc_signing import SigningKey, call_metadata
from broker.streams.throttling import RATE_NAMES
from broker.tls import open_channel
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = pb.DESCRIPTOR.services_by_name["LimitsService"]
DEFAULT_TIMEOUT_S = 30.0  # a change waits for one metadata command (bounded by the node too)


class LimitsClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        signing_key: SigningKey | None = None,
        region: str | None = None,
    ) -> None:
        """`signing_key` and `region` as `broker.client.grpc_client.ShoalClient`'s: the calls
        act in that region's namespace (None: the node's), signed with the key if one is given."""
        assert timeout_s > 0
        self._signing_key = signing_key
        self._region = region
        self._channel = open_channel(target, credentials)
        self._timeout_s = timeout_s

    def _call(self, method: str, request: Message) -> Any:
        descriptor = _SERVICE.methods_by_name[method]
        output_class = getattr(pb, descriptor.output_type.name)
        path = f"/{_SERVICE.full_name}/{method}"
        stub: Any = self._channel.unary_unary(
            path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=output_class.FromString,
        )
        try:
            return stub(
                request,
                timeout=self._timeout_s,
                metadata=call_metadata(path, region=self._region, key=self._signing_key),
            )
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc

    def describe_stream(self, stream_name: str) -> dict[str, Any]:
        """{"stream_name", "overrides": {set rates}, "effective": {every rate}}."""
        answer = self._call(
            "DescribeStreamLimits", pb.DescribeStreamLimitsRequest(stream_name=stream_name)
        )
        return _stream_limits(answer)

    def update_stream(
        self, stream_name: str, rates: Mapping[str, int], *, reset: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Sets `rates` (others unchanged) and returns the `reset` ones to the cluster default."""
        answer = self._call(
            "UpdateStreamLimits",
            pb.UpdateStreamLimitsRequest(
                stream_name=stream_name, rates=pb.ShardRates(**rates), reset=list(reset)
            ),
        )
        return _stream_limits(answer)

    def describe_account(self) -> dict[str, Any]:
        return _account_limits(
            self._call("DescribeAccountLimits", pb.DescribeAccountLimitsRequest())
        )

    def update_account(
        self,
        *,
        shard_limit: int | None = None,
        on_demand_stream_limit: int | None = None,
        reset: Sequence[str] = (),
    ) -> dict[str, Any]:
        request = pb.UpdateAccountLimitsRequest(
            shard_limit=shard_limit, on_demand_stream_limit=on_demand_stream_limit, reset=reset
        )
        return _account_limits(self._call("UpdateAccountLimits", request))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LimitsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _rates(message: Message) -> dict[str, int]:
    return {name: getattr(message, name) for name in RATE_NAMES if message.HasField(name)}


def _stream_limits(answer: pb.StreamLimitsResponse) -> dict[str, Any]:
    return {
        "stream_name": answer.stream_name,
        "overrides": _rates(answer.overrides),
        "effective": _rates(answer.effective),
    }


def _account_limits(answer: pb.AccountLimitsResponse) -> dict[str, Any]:
    result: dict[str, Any] = {
        "shard_limit": answer.shard_limit,
        "on_demand_stream_limit": answer.on_demand_stream_limit,
        "open_shard_count": answer.open_shard_count,
        "on_demand_stream_count": answer.on_demand_stream_count,
    }
    for name in ("shard_limit_override", "on_demand_stream_limit_override"):
        result[name] = getattr(answer, name) if answer.HasField(name) else None
    return result
