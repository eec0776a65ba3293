"""The native front door: one gRPC service per service of the family, one RPC per operation.

Thin by design: decode the message into an AWS-shaped dict (`codec`), validate it against the
service's botocore model (`validation`), call the service, encode the response (a GetRecords
page straight to bytes, `grpc_page`). PutRecords, the hot write path, is read and checked in
one loop over its entries and answered straight to bytes (`put_records`). A server-streaming
RPC (SubscribeToShard) encodes each event of the operation's `EventStream` as one message.
Errors leave through `error_mapping`; bytes that do not parse as the RPC's message are a
SerializationException (INVALID_ARGUMENT), parsed here rather than by gRPC's deserializer.
The RPC table is built from the proto's service descriptor, so an RPC added to the proto is
served as soon as the service implements it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from broker.api.kinesis.v1 import kinesis_pb2
from broker.caller import Caller
from broker.error_messages import malformed_message
from broker.errors import ErrorCode, ShoalError
from broker.gateway.authentication import with_identity
from broker.gateway.grpc_auth import current_identity, peer_address
from broker.gateway.grpc_namespace import addressed
from broker.gateway.grpc_page import get_records_output, subscribe_to_shard_event_stream
from broker.gateway.probe import GatewayProbe
from broker.gateway.put_records import put_records_output, put_records_request
from broker.gateway.services import OperationService
from broker.gateway.validation import KINESIS, REGIONAL_MODELS, validate_request
from broker.wire.codec import dict_to_message, message_to_dict
from broker.wire.error_mapping import to_grpc_status

log = logging.getLogger(__name__)

SERVICE_NAME = kinesis_pb2.DESCRIPTOR.services_by_name["KinesisService"].full_name


def _message_class(full_name: str) -> type[Message]:
    cls: type[Message] = symbol_database.Default().GetSymbol(full_name)
    return cls


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Bound:
    """What every RPC of one gRPC service shares."""

    service: OperationService
    model: str  # the botocore service name its requests are validated against
    caller: Caller  # the node's region and account; each call adds the peer's address
    probe: GatewayProbe | None
    label_prefix: str  # "" for Kinesis; "<service>:" for the others (metrics labels)


def _caller(bound: _Bound, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    """The node's region and account, the peer's address and, when the call was signed or
    came with a mapped client certificate, its principal (`grpc_auth`); a Kinesis or analytics
    call is addressed to the region its `x-shoal-region` metadata names (`grpc_namespace`)."""
    caller = dataclasses.replace(bound.caller, source_address=peer_address(context))
    who = current_identity.get()
    if who is not None and who.identity is not None:
        caller = with_identity(caller, who.identity, access_key_id=who.access_key_id)
    if bound.model not in REGIONAL_MODELS:
        return caller  # the rest of the family serves the node's region, on both doors
    return addressed(caller, context)


def _parse(raw: bytes, input_class: type[Message]) -> Message:
    """The request message; bytes that are not one are the client's error (the default
    deserializer would answer UNKNOWN with a Python exception text)."""
    try:
        return input_class.FromString(raw)
    except DecodeError:
        raise ShoalError(
            ErrorCode.SERIALIZATION, malformed_message(input_class.DESCRIPTOR.full_name)
        ) from None


def _decoder(
    operation: str, input_class: type[Message], model: str
) -> Callable[[bytes], dict[str, Any]]:
    """How an RPC's request bytes become its validated AWS-shaped request: PutRecords' entries
    are read and checked in one loop (`put_records`), the rest through `message_to_dict` and
    `validate_request`."""
    if input_class is kinesis_pb2.PutRecordsInput and model == KINESIS:

        def decode_put_records(raw: bytes) -> dict[str, Any]:
            message = _parse(raw, input_class)
            assert isinstance(message, kinesis_pb2.PutRecordsInput)
            return put_records_request(message, raw)

        return decode_put_records

    def decode(raw: bytes) -> dict[str, Any]:
        request = message_to_dict(_parse(raw, input_class))
        validate_request(operation, request, model=model)
        return request

    return decode


def _encoder(output: type[Message]) -> Callable[[dict[str, Any]], Message | bytes]:
    """How an operation's answer (or a stream's event) becomes its output: GetRecords pages,
    PutRecords answers and SubscribeToShard events are written straight to bytes (`grpc_page`:
    from the stored batch bytes; `put_records`: no message per record), the rest through
    `dict_to_message`."""
    if output is kinesis_pb2.GetRecordsOutput:
        return get_records_output
    if output is kinesis_pb2.PutRecordsOutput:
        return put_records_output
    if output is kinesis_pb2.SubscribeToShardEventStream:
        return subscribe_to_shard_event_stream
    return functools.partial(dict_to_message, message_class=output)


def _serialize(message: Message | bytes) -> bytes:
    """The response serializer: bytes an encoder already wrote go out as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def _rpc(
    bound: _Bound, operation: str, input_class: type[Message], output: type[Message]
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | bytes]]:
    """One unary RPC bound to one operation (a coroutine function, as grpc.aio needs)."""
    service, probe = bound.service, bound.probe
    label = bound.label_prefix + operation
    decode = _decoder(operation, input_class, bound.model)
    encode = _encoder(output)

    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message | bytes:
        started = time.perf_counter()
        code = "OK"
        try:
            request = decode(raw)
            response = await service.call(operation, request, _caller(bound, context))
            return encode(response)
        except ShoalError as error:
            code = error.code.kinesis_name
            await context.abort_with_status(to_grpc_status(error))
        except Exception:
            code = ErrorCode.INTERNAL_FAILURE.kinesis_name
            log.exception("operation_failed", extra={"operation": operation})
            await context.abort_with_status(to_grpc_status(ShoalError(ErrorCode.INTERNAL_FAILURE)))
        finally:
            if probe is not None:
                probe.request_finished(label, code, time.perf_counter() - started)
        raise AssertionError("abort_with_status returns only by raising")

    return handle


def _stream_rpc(
    bound: _Bound, operation: str, input_class: type[Message], output: type[Message]
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message | bytes]]:
    """One server-streaming RPC (SubscribeToShard): the operation answers `{"EventStream":
    async iterator of event dicts}`; each event becomes one message of the stream.

    Errors before the first event end the call with their status, as unary calls do, and are
    what the probe counts; an error event ends it the same way. The next event is taken only
    once gRPC accepted the previous one (its flow control), which is the subscriber's
    backpressure; the stream is closed however the call ends (client gone included)."""

    service, probe = bound.service, bound.probe
    label = bound.label_prefix + operation
    encode = _encoder(output)

    async def handle(
        raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Message | bytes]:
        started = time.perf_counter()
        code = "OK"
        try:
            request = message_to_dict(_parse(raw, input_class))
            validate_request(operation, request, model=bound.model)
            response = await service.call(operation, request, _caller(bound, context))
        except ShoalError as error:
            code = error.code.kinesis_name
            await context.abort_with_status(to_grpc_status(error))
        except Exception:
            code = ErrorCode.INTERNAL_FAILURE.kinesis_name
            log.exception("operation_failed", extra={"operation": operation})
            await context.abort_with_status(to_grpc_status(ShoalError(ErrorCode.INTERNAL_FAILURE)))
        finally:
            if probe is not None:
                probe.request_finished(label, code, time.perf_counter() - started)
        events = response["EventStream"]
        try:
            async for event in events:
                yield encode(event)
        except ShoalError as error:
            await context.abort_with_status(to_grpc_status(error))
        finally:
            await events.aclose()

    return handle


def operation_handler(
    descriptor: ServiceDescriptor,
    service: OperationService,
    *,
    model: str,
    caller: Caller,
    probe: GatewayProbe | None = None,
) -> grpc.GenericRpcHandler:
    """The generic handler serving the proto service `descriptor` by `service`: every RPC is
    the operation of the same name in the botocore model `model` (its messages mirror the
    model's shapes, `codec`). `caller` carries the node's region and account for every call;
    each answered request is reported to `probe` (operation, result code, latency)."""
    bound = _Bound(
        service=service,
        model=model,
        caller=dataclasses.replace(caller, door="grpc"),
        probe=probe,
        label_prefix="" if model == KINESIS else f"{model}:",
    )
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in descriptor.methods:
        assert method.name in service.operations, f"{method.name} is in the proto only"
        input_class = _message_class(method.input_type.full_name)
        output_class = _message_class(method.output_type.full_name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream_rpc(bound, method.name, input_class, output_class),
                response_serializer=_serialize,
            )
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _rpc(bound, method.name, input_class, output_class),
            response_serializer=_serialize,
        )
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)


def kinesis_handler(
    service: OperationService, *, caller: Caller, probe: GatewayProbe | None = None
) -> grpc.GenericRpcHandler:
    """The public KinesisService (`proto/broker/api/kinesis/v1/kinesis.proto`)."""
    descriptor = kinesis_pb2.DESCRIPTOR.services_by_name["KinesisService"]
    return operation_handler(descriptor, service, model=KINESIS, caller=caller, probe=probe)
