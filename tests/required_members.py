"""The required-members sweep for the services of the family beyond Kinesis (analytics, video):
every operation of a botocore model, with nothing, with only its required members, and with
each required member missing, asked through one door; the answers that are wrong are
collected and returned together, so one run names the whole class.

A request with a required member missing must answer ValidationException (400) naming each
missing member as AWS does (`Value null at 'applicationName' failed to satisfy constraint`);
no request may answer a 5xx, InternalFailure or UnknownOperationException. The requests come
from the model (`tests/compat/test_required_members.sample_request`), so an operation added to
a model or to Shoal is swept without touching the tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import botocore.exceptions
import grpc
import httpx
from google.protobuf import symbol_database
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from broker.error_messages import member_path
from broker.errors import ShoalError
from broker.gateway.validation import service_model
from broker.wire.codec import dict_to_message
from broker.wire.error_mapping import error_from_rpc_error
from tests.compat.conftest import call
from tests.compat.test_required_members import sample_request

_IN_FLIGHT = 8  # requests a sweep has in flight at once

Answer = tuple[int, str, str]  # HTTP status, error name ("" when it succeeded), message
Ask = Callable[[str, dict[str, Any]], Awaitable[Answer]]


def requests_of(
    model: str, operation: str, samples: dict[str, Any], naming: tuple[str, ...] = ()
) -> list[tuple[str, dict[str, Any]]]:
    """(label, request) pairs: nothing; only the required members; those and one optional
    member of `naming` (a resource named either way, as Kinesis Video's StreamName or
    StreamARN); each required one missing."""
    shape = service_model(model).operation_model(operation).input_shape
    if shape is None:
        return [("empty", {})]
    full = sample_request(shape, samples)
    cases: list[tuple[str, dict[str, Any]]] = [("empty", {}), ("required only", full)]
    cases.extend(
        (f"required and {member}", {**full, member: samples[member]})
        for member in naming
        if member in shape.members and member not in full
    )
    cases.extend(
        (f"no {missing}", {k: v for k, v in full.items() if k != missing})
        for missing in shape.required_members
    )
    return cases


def judge(
    model: str, operation: str, label: str, request: dict[str, Any], answer: Answer
) -> str | None:
    """What is wrong with one answer, or None."""
    status, name, message = answer
    where = f"{model}.{operation} ({label}): {status} {name}: {message[:160]}"
    if status >= 500 or name in ("InternalFailure", "UnknownOperationException"):
        return where
    shape = service_model(model).operation_model(operation).input_shape
    absent = [m for m in (shape.required_members if shape else ()) if m not in request]
    if not absent:
        return None
    if (status, name) != (400, "ValidationException"):
        return where
    for member in absent:
        if f"Value null at '{member_path(member)}' failed to satisfy constraint" not in message:
            return where + f" (does not name {member_path(member)})"
    return None


async def sweep(
    model: str,
    operations: Iterable[str],
    samples: dict[str, Any],
    ask: Ask,
    naming: tuple[str, ...] = (),
) -> list[str]:
    """The problems of every request of every operation; the deletions come last, so the
    resources the samples name exist for the others."""
    ordered = sorted(operations, key=lambda name: (name.startswith("Delete"), name))
    cases = [
        (operation, label, request)
        for operation in ordered
        for label, request in requests_of(model, operation, samples, naming)
    ]
    deleting = [case for case in cases if case[0].startswith("Delete")]
    slots = asyncio.Semaphore(_IN_FLIGHT)

    async def judged(operation: str, label: str, request: dict[str, Any]) -> str | None:
        async with slots:
            return judge(model, operation, label, request, await ask(operation, request))

    # A few requests in flight at a time (the sweep is hundreds of calls); the deletions after
    # the rest, one at a time.
    found = await asyncio.gather(*(judged(*case) for case in cases if case not in deleting))
    found += [await judged(*case) for case in deleting]
    return [problem for problem in found if problem is not None]


def boto3_ask(client: Any) -> Ask:
    """Ask through an unmodified boto3 client (built with `parameter_validation=False`, so
    the request reaches the node as given); a streamed body is closed unread."""

    async def ask(operation: str, request: dict[str, Any]) -> Answer:
        method = getattr(client, botocore.xform_name(operation))
        try:
            response = await call(method, **request)
        except botocore.exceptions.ClientError as error:
            details = error.response
            return (
                details["ResponseMetadata"]["HTTPStatusCode"],
                details["Error"]["Code"],
                details["Error"].get("Message", ""),
            )
        for value in response.values():
            if hasattr(value, "close"):
                value.close()
        return 200, "", ""

    return ask


def grpc_operations(service: ServiceDescriptor) -> set[str]:
    return {method.name for method in service.methods}


def grpc_ask(channel: grpc.aio.Channel, service: ServiceDescriptor) -> Ask:
    """Ask through the gRPC door: the request as the RPC's message (the codec the doors use)."""
    database = symbol_database.Default()

    async def ask(operation: str, request: dict[str, Any]) -> Answer:
        method = service.methods_by_name[operation]
        input_class: type[Message] = database.GetSymbol(method.input_type.full_name)
        output_class: type[Message] = database.GetSymbol(method.output_type.full_name)
        stub: Any = channel.unary_unary(
            f"/{service.full_name}/{operation}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=output_class.FromString,
        )
        try:
            await stub(dict_to_message(request, input_class), timeout=30)
        except grpc.RpcError as failed:
            error: ShoalError = error_from_rpc_error(failed)
            return error.code.spec.http_status, error.code.kinesis_name, error.message
        return 200, "", ""

    return ask


async def malformed_request_answer(
    channel: grpc.aio.Channel, service: ServiceDescriptor, operation: str
) -> tuple[grpc.StatusCode, str]:
    """The status and ErrorInfo reason of bytes that are not the RPC's request message (the
    door parses them itself: INVALID_ARGUMENT, SerializationException, never UNKNOWN)."""
    stub: Any = channel.unary_unary(
        f"/{service.full_name}/{operation}", request_serializer=None, response_deserializer=None
    )
    try:
        await stub(b"\xff\xff\xff\xff", timeout=10)
    except grpc.aio.AioRpcError as failed:
        error: ShoalError = error_from_rpc_error(failed)
        return failed.code(), error.code.kinesis_name
    raise AssertionError(f"{operation} accepted bytes that are not its request")


# --- Members of a wrong JSON type (the AWS JSON and REST-JSON doors) ----------------------------

_WRONG_JSON = {  # a value of another JSON type than the member's shape
    "string": 7,
    "integer": "seven",
    "long": "seven",
    "float": "seven",
    "double": "seven",
    "boolean": "yes",
    "blob": 7,
    "timestamp": "not a time",
    "list": "not a list",
    "map": ["not", "a", "map"],
    "structure": "not an object",
}


def _jsonable(value: object) -> Any:
    """What the JSON protocols send for a value JSON has no type for."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def wrong_type_bodies(model: str, samples: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """(operation, label, body) for every operation of `model`: its required members (from
    `samples` and the model) with each member, top level and one level down, replaced by a
    value of another JSON type (one nested member of each type per member: the doors check
    each type the same way wherever it is); and bodies that are a JSON array or not JSON."""
    service = service_model(model)
    bodies: list[tuple[str, str, bytes]] = []
    for operation in service.operation_names:
        shape = service.operation_model(operation).input_shape
        bodies += [(operation, "array", b"[]"), (operation, "not JSON", b"{")]
        if shape is None:
            continue
        valid = json.loads(json.dumps(sample_request(shape, samples), default=_jsonable))
        for name, member in shape.members.items():
            if member.serialization.get("location"):
                continue  # a header, query or path member: not in the body
            wrong = {**valid, name: _WRONG_JSON[member.type_name]}
            bodies.append((operation, name, json.dumps(wrong).encode()))
            seen_types: set[str] = set()
            for inner_name, inner in getattr(member, "members", {}).items():
                if inner.type_name in seen_types:
                    continue
                seen_types.add(inner.type_name)
                inner_wrong = {**valid.get(name, {}), inner_name: _WRONG_JSON[inner.type_name]}
                wrong = {**valid, name: inner_wrong}
                bodies.append((operation, f"{name}.{inner_name}", json.dumps(wrong).encode()))
    return bodies


async def wrong_type_problems(
    endpoint: str, requests: Iterable[tuple[str, str, dict[str, str], bytes]]
) -> list[str]:
    """POSTs each (label, path, headers, body), 8 in flight; the answers that are not 4xx."""
    problems: list[str] = []
    slots = asyncio.Semaphore(_IN_FLIGHT)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:

        async def ask(label: str, path: str, headers: dict[str, str], body: bytes) -> None:
            async with slots:
                answer = await client.post(endpoint + path, headers=headers, content=body)
            if not 400 <= answer.status_code < 500:
                problems.append(f"{label}: {answer.status_code} {answer.text[:160]}")

        await asyncio.gather(*(ask(*request) for request in requests))
    return problems
