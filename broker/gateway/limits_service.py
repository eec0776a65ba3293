"""The gRPC LimitsService (proto/broker/api/limits/v1/limits.proto): per-stream throughput
limits and account limits set at runtime.

Thin by design: decode the request, call `service/account.py` (which validates and proposes one
metadata command), encode the answer. The rates are enforced on each shard's leader
(`service/throughput.Throttles` reads them from the metadata image), so a change takes effect on
every node as soon as its image has it.

Errors leave through `error_mapping`, as on KinesisService (ErrorInfo.reason is the Kinesis
error name).

    server.add_generic_rpc_handlers((limits_handler(service_context),))
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import Message

from broker import error_messages
from broker.api.limits.v1 import limits_pb2 as pb
from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.gateway.grpc_namespace import namespaced_rpc
from broker.gateway.unary_handlers import unary_service_handler
from broker.service import account
from broker.service.context import ServiceContext
from broker.streams.throttling import RATE_NAMES, StreamLimits, ThroughputLimits
from broker.wire.error_mapping import NativeMethod

log = logging.getLogger(__name__)

_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["LimitsService"]
SERVICE_NAME = _DESCRIPTOR.full_name


def rates_from_message(message: Message) -> dict[str, int]:
    """The rates a message sets (its present fields), by name."""
    return {name: getattr(message, name) for name in RATE_NAMES if message.HasField(name)}


def overrides_to_message(overrides: StreamLimits) -> pb.ShardRates:
    message = pb.ShardRates()
    for name in RATE_NAMES:
        value = getattr(overrides, name)
        if value is not None:
            setattr(message, name, value)
    return message


def effective_to_message(effective: ThroughputLimits) -> pb.ShardRates:
    return pb.ShardRates(**{name: getattr(effective, name) for name in RATE_NAMES})


def _stream_response(view: account.StreamLimitsView) -> pb.StreamLimitsResponse:
    return pb.StreamLimitsResponse(
        stream_name=view.stream_name,
        overrides=overrides_to_message(view.overrides),
        effective=effective_to_message(view.effective),
    )


def _account_response(view: account.AccountLimitsView) -> pb.AccountLimitsResponse:
    return pb.AccountLimitsResponse(
        shard_limit=view.shard_limit,
        on_demand_stream_limit=view.on_demand_stream_limit,
        shard_limit_override=view.shard_limit_override,
        on_demand_stream_limit_override=view.on_demand_stream_limit_override,
        open_shard_count=view.open_shard_count,
        on_demand_stream_count=view.on_demand_stream_count,
    )


class _LimitsServicer:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def describe_stream_limits(
        self, request: pb.DescribeStreamLimitsRequest
    ) -> pb.StreamLimitsResponse:
        view = await account.describe_stream_limits(self._ctx, _stream_name(request.stream_name))
        return _stream_response(view)

    async def update_stream_limits(
        self, request: pb.UpdateStreamLimitsRequest
    ) -> pb.StreamLimitsResponse:
        view = await account.update_stream_limits(
            self._ctx,
            _stream_name(request.stream_name),
            rates_from_message(request.rates),
            list(request.reset),
        )
        return _stream_response(view)

    async def describe_account_limits(
        self, request: pb.DescribeAccountLimitsRequest
    ) -> pb.AccountLimitsResponse:
        return _account_response(account.account_limits_view(self._ctx, self._ctx.image()))

    async def update_account_limits(
        self, request: pb.UpdateAccountLimitsRequest
    ) -> pb.AccountLimitsResponse:
        view = await account.update_account_limits(
            self._ctx,
            shard_limit=request.shard_limit if request.HasField("shard_limit") else None,
            on_demand_stream_limit=(
                request.on_demand_stream_limit
                if request.HasField("on_demand_stream_limit")
                else None
            ),
            reset=list(request.reset),
        )
        return _account_response(view)


def _stream_name(name: str) -> str:
    if not name:
        raise ShoalError(ErrorCode.VALIDATION, error_messages.STREAM_NAME_EMPTY)
    return name


_Method = NativeMethod


def _methods(servicer: _LimitsServicer) -> dict[str, _Method]:
    return {
        "DescribeStreamLimits": servicer.describe_stream_limits,
        "UpdateStreamLimits": servicer.update_stream_limits,
        "DescribeAccountLimits": servicer.describe_account_limits,
        "UpdateAccountLimits": servicer.update_account_limits,
    }


def limits_handler(ctx: ServiceContext) -> grpc.GenericRpcHandler:
    """The generic handler serving every LimitsService RPC of this node."""
    methods = _methods(_LimitsServicer(ctx))
    # Each call acts in its caller's namespace: the region its metadata names (grpc_namespace).
    node_caller = Caller(region=ctx.config.region, account_id=ctx.config.account_id)
    return unary_service_handler(
        _DESCRIPTOR,
        pb,
        {
            name: namespaced_rpc("limits", name, method, caller=node_caller)
            for name, method in methods.items()
        },
    )
