"""`unary_service_handler`: the generic gRPC handler of one native unary service (limits,
capacity, leases, IAM, backup keys) from one async handler per method, with each method's
request and answer classes taken from the generated module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

UnaryHandler = Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]


def unary_service_handler(
    descriptor: ServiceDescriptor, module: ModuleType, handlers: Mapping[str, UnaryHandler]
) -> grpc.GenericRpcHandler:
    """Serves `handlers[name]` for every method of `descriptor` (exactly those: a method the
    proto declares without a handler, or a handler for none, is a programming error)."""
    assert set(handlers) == {method.name for method in descriptor.methods}
    method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in descriptor.methods:
        input_class = getattr(module, method.input_type.name)
        output_class = getattr(module, method.output_type.name)
        method_handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            handlers[method.name],
            request_deserializer=input_class.FromString,
            response_serializer=output_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(descriptor.full_name, method_handlers)
