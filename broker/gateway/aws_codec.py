"""AWS JSON 1.1 and CBOR bodies ⇄ AWS-shaped dicts: the AWS HTTP door's only format code.

Two steps per request, so that the HTTP door can check the operation and the signature between
them, as AWS does: `parse_body` turns bytes into plain JSON/CBOR values (a body that is not a
JSON/CBOR object is a SerializationException), then `decode_request` walks the operation's
input shape in botocore's Kinesis model and converts each member to the AWS-shaped dict the
service speaks (blobs as `bytes`, timestamps as aware UTC `datetime`). A member of the wrong
type is a SerializationException worded as AWS (and kinesalite's `checkTypes`) words it, e.g.
"class java.lang.String can not be converted to an Integer". Unknown members and nulls are
dropped, as AWS's JSON protocol does. Constraints (lengths, patterns, ranges) are not checked
here: `validation.validate_request` does that for both front doors.

Wire forms:

- JSON (`application/x-amz-json-1.1`): blobs base64 strings; timestamps epoch seconds as
  numbers (botocore sends and parses floats). Responses use the same forms.
- CBOR (`application/x-amz-cbor-1.1`, the Java SDKs' default): blobs byte strings; timestamps
  CBOR tag 1 holding epoch *milliseconds* (the AWS Java SDK writes `writeTag(1)` then
  `Date.getTime()`, and reads responses the same way), not the seconds RFC 8949 specifies.
  Plain numbers are read as milliseconds too. Responses carry tag 1 with integer milliseconds.

Responses are encoded by value type (a `datetime` is a timestamp, `bytes` a blob), which is
exactly what the service returns for the output shapes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.model
import cbor2

from broker.errors import ErrorCode, ShoalError
from broker.gateway.validation import service_model
from broker.timestamps import ms_from_datetime

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
CBOR_CONTENT_TYPE = "application/x-amz-cbor-1.1"

_CBOR_EPOCH_TAG = 1
# Nesting deeper than any Kinesis shape (PutRecords is 3 levels) is refused, so a hostile body
# cannot exhaust the stack of either parser.
_NESTING_DEPTH_MAX = 32
_ECHOED_CHARS_MAX = 64  # a 10 MiB bad blob is not echoed back in full
_TIMESTAMP_SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z, datetime's last year


class WireFormat(enum.Enum):
    """The two body formats of the AWS door; the response uses the request's."""

    JSON = JSON_CONTENT_TYPE
    CBOR = CBOR_CONTENT_TYPE

    @property
    def content_type(self) -> str:
        value: str = self.value
        return value


def wire_format_for(content_type: str) -> WireFormat | None:
    """The format named by a Content-Type header (parameters ignored), if we speak it."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    for wire in WireFormat:
        if wire.content_type == media_type:
            return wire
    return None


class _EpochTag:
    """A CBOR tag-1 value kept raw, so that it is read as milliseconds, not seconds."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _serialization_error(message: str) -> ShoalError:
    return ShoalError(ErrorCode.SERIALIZATION, message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes, wire: WireFormat) -> dict[str, Any]:
    """The body as plain values; a body that is not one object is a SerializationException."""
    try:
        if wire is WireFormat.JSON:
            value = json.loads(body, parse_constant=_reject_constant)
        else:
            value = cbor2.loads(
                body,
                semantic_decoders={_CBOR_EPOCH_TAG: lambda raw, _immutable: _EpochTag(raw)},
                max_depth=_NESTING_DEPTH_MAX,
            )
    except (ValueError, TypeError, RecursionError, cbor2.CBORError) as exc:
        # json raises ValueError (UnicodeDecodeError included); cbor2 raises CBORDecodeError,
        # or TypeError for an unhashable map key, which is a malformed body too.
        raise _serialization_error("Unable to parse the request body.") from exc
    if not isinstance(value, dict):
        raise _serialization_error("Start of structure or map found where not expected.")
    return value


def decode_request(operation: str, body: Mapping[str, Any], wire: WireFormat) -> dict[str, Any]:
    """The parsed body as the AWS-shaped request of `operation` (a model operation name)."""
    input_shape = service_model().operation_model(operation).input_shape
    assert input_shape is not None
    return _structure(input_shape, body, wire, depth=0)


def _structure(
    shape: botocore.model.StructureShape, value: Mapping[str, Any], wire: WireFormat, depth: int
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, member_value in value.items():
        member_shape = shape.members.get(name)
        if member_shape is None or member_value is None:
            continue  # unknown members and nulls are ignored, as on AWS
        result[name] = _member(member_shape, member_value, wire, depth + 1)
    return result


def _container_mismatch(value: Any) -> ShoalError | None:
    """AWS's wording for a list or an object where a scalar was expected."""
    if isinstance(value, list):
        return _serialization_error("Start of list found where not expected")
    if isinstance(value, dict):
        return _serialization_error("Start of structure or map found where not expected.")
    return None


def _member(shape: botocore.model.Shape, value: Any, wire: WireFormat, depth: int) -> Any:
    if depth > _NESTING_DEPTH_MAX:
        raise _serialization_error("Nesting too deep.")
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, botocore.model.StructureShape)
        if isinstance(value, list):
            raise _serialization_error("Start of list found where not expected")
        if not isinstance(value, dict):
            raise _serialization_error("Expected null")
        return _structure(shape, value, wire, depth)
    if kind == "list":
        assert isinstance(shape, botocore.model.ListShape)
        if isinstance(value, dict):
            raise _serialization_error("Start of structure or map found where not expected.")
        if not isinstance(value, list):
            raise _serialization_error("Expected list or null")
        return [_member(shape.member, item, wire, depth + 1) for item in value if item is not None]
    if kind == "map":
        assert isinstance(shape, botocore.model.MapShape)
        if isinstance(value, list):
            raise _serialization_error("Start of list found where not expected")
        if not isinstance(value, dict):
            raise _serialization_error("Expected map or null")
        return {
            _member(shape.key, key, wire, depth + 1): _member(shape.value, item, wire, depth + 1)
            for key, item in value.items()
            if item is not None
        }
    return _scalar(kind, value, wire)


def _scalar(kind: str, value: Any, wire: WireFormat) -> Any:
    mismatch = _container_mismatch(value)
    if mismatch is not None:
        raise mismatch
    if kind == "string":
        return _string(value)
    if kind in ("integer", "long"):
        return _integer(value, "Integer" if kind == "integer" else "Long")
    if kind == "boolean":
        return _boolean(value)
    if kind == "blob":
        return _blob(value)
    if kind == "timestamp":
        return _timestamp(value, wire)
    raise AssertionError(f"the Kinesis model has no {kind} members")


def _java_class(value: Any) -> str:
    """The Java class AWS names when a JSON value has the wrong type."""
    if isinstance(value, bool):
        return "class java.lang.Boolean"
    if isinstance(value, int | float):
        return "class java.math.BigDecimal"
    if isinstance(value, str):
        return "class java.lang.String"
    if isinstance(value, bytes | bytearray):
        return "class [B"
    return "class java.lang.Object"


def _echo(value: str) -> str:
    return value if len(value) <= _ECHOED_CHARS_MAX else value[:_ECHOED_CHARS_MAX] + "..."


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _serialization_error(f"{_java_class(value)} can not be converted to an String")
    return value


def _integer(value: Any, java_type: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _serialization_error(f"{_java_class(value)} can not be converted to an {java_type}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _serialization_error(f"'{value}' can not be converted to an {java_type}")
        return math.floor(value)  # AWS (and kinesalite) truncate a fractional number
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        raise _serialization_error(f"'{_echo(value.upper())}' can not be converted to an Boolean")
    raise _serialization_error(f"{_java_class(value)} can not be converted to an Boolean")


def _blob(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)  # CBOR's byte string
    if not isinstance(value, str):
        raise _serialization_error(f"{_java_class(value)} can not be converted to a Blob")
    prefix = f"'{_echo(value)}' can not be converted to a Blob: "
    if len(value) % 4:
        raise _serialization_error(
            prefix + f"Base64 encoded length is expected a multiple of 4 bytes but found: "
            f"{len(value)}"
        )
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _serialization_error(prefix + "Invalid Base64 character") from exc
    if base64.b64encode(decoded).decode("ascii") != value:
        raise _serialization_error(prefix + "Invalid last non-pad Base64 character dectected")
    return decoded


def _timestamp(value: Any, wire: WireFormat) -> datetime:
    if isinstance(value, _EpochTag):
        value = value.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _serialization_error("CBOR tag 1 must hold a number")
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)  # CBOR tag 0 (an RFC 3339 string), decoded by cbor2
    if isinstance(value, str) and wire is WireFormat.JSON:
        return _iso_timestamp(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _serialization_error(f"{_java_class(value)} can not be converted to an Timestamp")
    seconds = value / 1000 if wire is WireFormat.CBOR else value
    if not (math.isfinite(seconds) and 0 <= seconds <= _TIMESTAMP_SECONDS_MAX):
        raise _serialization_error(f"'{value}' can not be converted to an Timestamp")
    return datetime.fromtimestamp(seconds, UTC)


def _iso_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp string; AWS's JSON protocol accepts these besides epoch seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _serialization_error(
            f"'{_echo(value)}' can not be converted to an Timestamp"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def encode_body(document: Mapping[str, Any], wire: WireFormat) -> bytes:
    """A response (or an error document) in `wire`'s format."""
    if wire is WireFormat.JSON:
        return json.dumps(_to_json(document), separators=(",", ":")).encode()
    return cbor2.dumps(_to_cbor(document))


def _to_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _to_json(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return ms_from_datetime(value) / 1000  # epoch seconds with millisecond precision
    return value


def _to_cbor(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _to_cbor(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_to_cbor(item) for item in value]
    if isinstance(value, datetime):
        return cbor2.CBORTag(_CBOR_EPOCH_TAG, ms_from_datetime(value))
    return value
