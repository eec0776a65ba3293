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

from google.protobuf.message import Message

from broker.api.limits.v1 import limits_pb2 as pb
from broker.client.unary import UnaryServiceClient
from broker.streams.throttling import RATE_NAMES


class LimitsClient(UnaryServiceClient):
    _MODULE = pb
    _SERVICE_NAME = "LimitsService"
    DEFAULT_TIMEOUT_S = 30.0  # a change waits for one metadata command (bounded by the node too)

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
