"""The region a native gRPC call is addressed to: the `x-shoal-region` metadata key.

The AWS door reads the region from the SigV4 credential scope; gRPC has none, so a native
client names the region it addresses with this key (the node's configured region when it is
absent), and every operation of the call acts in that region's namespace (streams, channels,
queues, leases, limits: `streams/namespaces.py`). The account is the caller's: the principal's
when access control identifies one, else the node's configured account.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from broker import error_messages
from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.gateway.authentication import with_identity
from broker.gateway.grpc_auth import current_identity
from broker.iam import grpc_signing
from broker.service.context import CURRENT_CALLER
from broker.streams import namespaces
from broker.wire.error_mapping import NativeMethod, native_rpc, to_grpc_status

REGION_METADATA = grpc_signing.REGION_HEADER


def addressed(caller: Caller, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    """`caller` addressed to the region the call's metadata names (unchanged when none)."""
    region = None
    for key, value in context.invocation_metadata() or ():
        if key == REGION_METADATA:
            region = value if isinstance(value, str) else value.decode()
    if region is None or region == caller.region:
        return caller
    if not namespaces.is_region(region):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.invalid_region(region))
    return dataclasses.replace(caller, region=region)


def namespaced_rpc(
    service: str, name: str, method: NativeMethod, *, caller: Caller
) -> Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
    """`native_rpc`, with the method run as `caller` (the node's region and account; the
    principal's account when the call is signed or comes with a mapped certificate) addressed
    to the region in the call's metadata, in `CURRENT_CALLER`: the stream names, applications
    and limits it touches are those of the caller's namespace."""
    inner = native_rpc(service, name, method)
    node_caller = dataclasses.replace(caller, door="grpc")

    async def handle(message: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        who = current_identity.get()  # set by grpc_auth's interceptor for a signed call
        caller = node_caller
        if who is not None and who.identity is not None:
            caller = with_identity(caller, who.identity, access_key_id=who.access_key_id)
        try:
            addressed_caller = addressed(caller, context)
        except ShoalError as error:
            await context.abort_with_status(to_grpc_status(error))
            raise AssertionError("abort_with_status returns only by raising") from None
        token = CURRENT_CALLER.set(addressed_caller)
        try:
            return await inner(message, context)
        finally:
            CURRENT_CALLER.reset(token)

    return handle
