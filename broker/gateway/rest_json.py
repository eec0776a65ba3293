"""The AWS REST-JSON protocol, driven by a botocore service model: a request's members from
its URI, query string, headers and JSON body, and a response dict back to headers and a
body. One generic codec for every REST-JSON operation (the Kinesis Video APIs), written from
the model's `location` traits, never per operation.

Types follow the protocol: timestamps travel as epoch seconds (numbers) in bodies, blobs as
base64 text, headers and query values as text converted by the member's shape. A member of the
wrong JSON type is left as it came; `validation.validate_request` then names it.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.model

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.gateway.validation import service_model


def _from_wire(shape: botocore.model.Shape, value: Any) -> Any:
    """A JSON value as the model's type (timestamps, blobs, nested shapes)."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        assert isinstance(shape, botocore.model.StructureShape)
        members = shape.members
        return {
            name: _from_wire(members[name], item) if name in members else item
            for name, item in value.items()
        }
    if kind == "list" and isinstance(value, list):
        assert isinstance(shape, botocore.model.ListShape)
        return [_from_wire(shape.member, item) for item in value]
    if kind == "map" and isinstance(value, dict):
        assert isinstance(shape, botocore.model.MapShape)
        return {key: _from_wire(shape.value, item) for key, item in value.items()}
    if kind == "timestamp" and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            return value
    return value


def _from_text(shape: botocore.model.Shape, text: str) -> Any:
    """A header, query or URI value as the model's type."""
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("double", "float"):
            return float(text)
        if kind == "boolean":
            return {"true": True, "false": False}.get(text.lower(), text)
        if kind == "timestamp":
            return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        return text
    return text


def decode_request(
    operation: str,
    *,
    model: str,
    headers: Mapping[str, str],
    query_string: bytes,
    body: bytes,
) -> dict[str, Any]:
    """The AWS-shaped request dict of one REST-JSON call. A body that is not a JSON object is
    SerializationException."""
    operation_model = service_model(model).operation_model(operation)
    shape = operation_model.input_shape
    request: dict[str, Any] = {}
    if shape is None:
        return request
    document: Any = {}
    if body.strip():
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ShoalError(ErrorCode.SERIALIZATION, error_messages.BODY_NOT_JSON) from error
        if not isinstance(document, dict):
            raise ShoalError(ErrorCode.SERIALIZATION, error_messages.BODY_NOT_JSON_OBJECT)
    query = urllib.parse.parse_qs(query_string.decode("latin-1"))
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if location == "header":
            value = headers.get(wire_name.lower())
            if value is not None:
                request[name] = _from_text(member, value)
        elif location == "querystring":
            values = query.get(wire_name)
            if values:
                request[name] = _from_text(member, values[0])
        elif location is None and wire_name in document:
            request[name] = _from_wire(member, document[wire_name])
    return request


def _to_wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _to_wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_wire(item) for item in value]
    return value


def encode_response(
    operation: str, response: Mapping[str, Any], *, model: str
) -> tuple[list[tuple[str, str]], bytes]:
    """(headers, JSON body) of a response dict: header members as headers, the rest in the
    body."""
    shape = service_model(model).operation_model(operation).output_shape
    headers: list[tuple[str, str]] = [("content-type", "application/json")]
    document: dict[str, Any] = {}
    members = shape.members if shape is not None else {}
    for name, value in response.items():
        member = members.get(name)
        if member is not None and member.serialization.get("location") == "header":
            headers.append((member.serialization.get("name", name).lower(), str(value)))
        else:
            document[name] = _to_wire(value)
    return headers, json.dumps(document, separators=(",", ":")).encode("utf-8")


def routes(model: str) -> dict[str, str]:
    """requestUri -> operation name, for every POST operation of a REST-JSON model."""
    service = service_model(model)
    found: dict[str, str] = {}
    for name in service.operation_names:
        http = service.operation_model(name).http
        if http.get("method") == "POST":
            found[http["requestUri"]] = name
    return found


def json_error(message: str) -> bytes:
    """A REST-JSON error body; the error's name travels in `x-amzn-ErrorType`."""
    return json.dumps({"message": message}, separators=(",", ":")).encode("utf-8")
