"""AWS JSON 1.1 and CBOR bodies ⇄ AWS-shaped dicts: the AWS HTTP door's only format code.

Two steps per request, so that the HTTP door can check the operation and the signature between
them, as AWS does: `parse_body` turns bytes into plain JSON/CBOR values (a body that is not a
JSON/CBOR object is a SerializationException), then `decode_request` walks the operation's
input shape in the botocore model of its service (Kinesis, Firehose, ...) and converts each
member to the AWS-shaped dict the service speaks (blobs as `bytes`, timestamps as aware UTC
`datetime`). A member of the wrong type is a SerializationException worded as AWS (and
kinesalite's `checkTypes`) words it, e.g. "class java.lang.String can not be converted to an
Integer". Unknown members and nulls are dropped, as AWS's JSON protocol does. Constraints
(lengths, patterns, ranges) are not checked here: `validation.validate_request` does that for
both front doors.

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

import binascii
import enum
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.model
import cbor2
import orjson
import pybase64

from broker.error_messages import NO_MESSAGE
from broker.errors import ErrorCode, ShoalError
from broker.gateway import cbor_page, json_page
from broker.gateway.validation import KINESIS, service_model
from broker.service.records import ShardPage, shaped_answer
from broker.timestamps import ms_from_datetime
from broker.wire.put_entries import compiled_reader, split_base64

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
CBOR_CONTENT_TYPE = "application/x-amz-cbor-1.1"

_CBOR_EPOCH_TAG = 1
_CBOR_TAG_MAJOR_TYPE = 6
_CBOR_MAP_MAJOR_TYPE = 5
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


def parse_body(body: bytes, wire: WireFormat) -> dict[str, Any]:
    """The body as plain values; a body that is not one object is a SerializationException."""
    try:
        if wire is WireFormat.JSON:
            # orjson refuses NaN/Infinity and invalid UTF-8, as a strict JSON parser must, and
            # parses a 500-record PutRecords four times faster than the standard library.
            value = orjson.loads(body)
        else:
            value = cbor2.loads(
                body,
                semantic_decoders={_CBOR_EPOCH_TAG: lambda raw, _immutable: _EpochTag(raw)},
                max_depth=_NESTING_DEPTH_MAX,
            )
    except (ValueError, TypeError, RecursionError, cbor2.CBORError) as exc:
        # json raises ValueError (UnicodeDecodeError included); cbor2 raises CBORDecodeError,
        # or TypeError for an unhashable map key, which is a malformed body too.
        raise _serialization_error(NO_MESSAGE) from exc
    if not isinstance(value, dict):
        raise _serialization_error(NO_MESSAGE)  # AWS names no reason for either
    return value


def decode_request(
    operation: str, body: Mapping[str, Any], wire: WireFormat, *, model: str = KINESIS
) -> dict[str, Any]:
    """The parsed body as the AWS-shaped request of `operation` (an operation name of the
    botocore service `model`)."""
    decoded: dict[str, Any] = _request_decoder(model, operation, wire)(body, 0)
    return decoded


Decoder = Callable[[Any, int], Any]  # (value, nesting depth) -> decoded value


@cache
def _request_decoder(model: str, operation: str, wire: WireFormat) -> Decoder:
    """One decoder per operation and format, compiled from the model once: a PutRecords body
    holds 500 entries, so the per-member work must be a closure call, not a model walk."""
    input_shape = service_model(model).operation_model(operation).input_shape
    assert input_shape is not None
    return _decoder(input_shape, wire, {})


def _decoder(shape: botocore.model.Shape, wire: WireFormat, done: dict[str, Decoder]) -> Decoder:
    cached = done.get(shape.name)
    if cached is not None:
        return cached
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, botocore.model.StructureShape)
        return _structure_decoder(shape, wire, done)
    if kind == "list":
        assert isinstance(shape, botocore.model.ListShape)
        item_decoder = _decoder(shape.member, wire, done)

        def decode_list(value: Any, depth: int) -> Any:
            _check_depth(depth)
            if isinstance(value, dict):
                raise _serialization_error("Start of structure or map found where not expected.")
            if not isinstance(value, list):
                raise _serialization_error("Expected list or null")
            return [item_decoder(item, depth + 1) for item in value if item is not None]

        member = shape.member
        if isinstance(member, botocore.model.StructureShape) and _is_flat(member):
            return _flat_list_decoder(member, wire, decode_list)
        return decode_list
    if kind == "map":
        assert isinstance(shape, botocore.model.MapShape)
        key_decoder = _decoder(shape.key, wire, done)
        value_decoder = _decoder(shape.value, wire, done)

        def decode_map(value: Any, depth: int) -> Any:
            _check_depth(depth)
            if isinstance(value, list):
                raise _serialization_error("Start of list found where not expected")
            if not isinstance(value, dict):
                raise _serialization_error("Expected map or null")
            return {
                key_decoder(key, depth + 1): value_decoder(item, depth + 1)
                for key, item in value.items()
                if item is not None
            }

        return decode_map
    if kind == "string":
        return _decode_string
    if kind == "blob":
        return _decode_blob
    return lambda value, _depth: _scalar(kind, value, wire)


def _structure_decoder(
    shape: botocore.model.StructureShape, wire: WireFormat, done: dict[str, Decoder]
) -> Decoder:
    members: dict[str, Decoder] = {}

    def decode_structure(value: Any, depth: int) -> Any:
        _check_depth(depth)
        if isinstance(value, list):
            raise _serialization_error("Start of list found where not expected")
        if not isinstance(value, dict):
            raise _serialization_error("Expected null")
        result: dict[str, Any] = {}
        for name, member_value in value.items():
            member = members.get(name)
            if member is None or member_value is None:
                continue  # unknown members and nulls are ignored, as on AWS
            result[name] = member(member_value, depth + 1)
        return result

    done[shape.name] = decode_structure  # before the members: shapes may be recursive
    members.update({name: _decoder(m, wire, done) for name, m in shape.members.items()})
    return decode_structure


def _is_flat(shape: botocore.model.StructureShape) -> bool:
    """A structure of strings and blobs only (a PutRecords or PutRecordBatch entry)."""
    return bool(shape.members) and all(
        member.type_name in ("string", "blob") for member in shape.members.values()
    )


def _flat_list_decoder(
    shape: botocore.model.StructureShape, wire: WireFormat, generic: Decoder
) -> Decoder:
    """A list of flat structures (`_is_flat`) decoded in one loop: the 500 entries of a
    PutRecords are the door's hottest input. It takes only the well-formed case (every item
    an object of known members, strings as strings, blobs as canonical base64 or, in CBOR,
    byte strings); anything else, including a null, goes to the generic decoder from the
    start, so every error is the generic one, raised at the same item."""
    blobs = frozenset(name for name, m in shape.members.items() if m.type_name == "blob")
    strings = frozenset(name for name, m in shape.members.items() if m.type_name == "string")
    json = wire is WireFormat.JSON

    def decode_flat_list(value: Any, depth: int) -> Any:
        if type(value) is not list or depth >= _NESTING_DEPTH_MAX:
            return generic(value, depth)
        decoded: list[dict[str, Any]] = []
        append = decoded.append
        # JSON's blobs, decoded together once every item passed (`canonical_blobs`): one
        # base64 call per request rather than one per entry, whose overhead was most of it.
        texts: list[str] = []
        places: list[tuple[dict[str, Any], str]] = []
        for item in value:
            if type(item) is not dict:
                return generic(value, depth)
            entry: dict[str, Any] = {}
            for name, member in item.items():
                kind = type(member)
                if name in blobs:
                    if kind is str and json:
                        texts.append(member)
                        places.append((entry, name))  # the text stands in until decoded
                    elif kind is not bytes or json:
                        return generic(value, depth)
                elif kind is not str or name not in strings:
                    return generic(value, depth)
                entry[name] = member
            append(entry)
        if texts:
            blobs_decoded = canonical_blobs(texts)
            if blobs_decoded is None:
                return generic(value, depth)
            for (entry, name), blob in zip(places, blobs_decoded, strict=True):
                entry[name] = blob
        return decoded

    return decode_flat_list


# The last character before the padding of canonical base64: its unused low bits are zero (2
# bits of data then 4 zero bits before "==", 4 then 2 zero bits before "=").
_CANONICAL_BEFORE_TWO_PADS = frozenset("AQgw")
_CANONICAL_BEFORE_ONE_PAD = frozenset("AEIMQUYcgkosw048")


def canonical_blobs(texts: list[str]) -> list[bytes] | None:
    """`_blob` of each of `texts` when every one is well-formed base64 (canonical: what
    `_blob` takes), or None when any is not (the caller then takes the generic decoder, which
    raises `_blob`'s error at the first bad one).

    Decoded in one call: each text's padding (only its last one or two characters, checked
    here) becomes "A", whose zero bits decode to as many zero bytes past the text's own, so
    the texts joined decode as a run of 3-byte groups, each text's bytes at a known place;
    the base64 call validates the alphabet of all of them at once. The checks of each text and
    the cut into blobs run in C where the install step built it (`wire.put_entries`), in the
    Python loop below otherwise: the same results."""
    if compiled_reader():
        try:
            decoded: bytes = pybase64.b64decode("".join(texts).replace("=", "A"), validate=True)
        except (binascii.Error, ValueError):
            return None
        return split_base64(decoded, texts)
    sizes: list[int] = []
    add_size = sizes.append
    for text in texts:
        length = len(text)
        if length % 4:
            return None
        pads = 0
        if length and text[-1] == "=":
            if text[-2] == "=":
                if text[-3] not in _CANONICAL_BEFORE_TWO_PADS:
                    return None
                pads = 2
            elif text[-2] in _CANONICAL_BEFORE_ONE_PAD:
                pads = 1
            else:
                return None
        if text.find("=") != (length - pads if pads else -1):
            return None  # padding before the end: refused, as one text's decode refuses it
        add_size(length // 4 * 3 - pads)
    try:
        joined: bytes = pybase64.b64decode("".join(texts).replace("=", "A"), validate=True)
    except (binascii.Error, ValueError):
        return None
    blobs: list[bytes] = []
    add_blob = blobs.append
    start = 0
    for text, size in zip(texts, sizes, strict=True):
        add_blob(joined[start : start + size])
        start += len(text) // 4 * 3
    return blobs


def _check_depth(depth: int) -> None:
    if depth > _NESTING_DEPTH_MAX:
        raise _serialization_error("Nesting too deep.")


def _decode_string(value: Any, _depth: int) -> str:
    if isinstance(value, str):
        return value
    mismatch = _container_mismatch(value)
    if mismatch is not None:
        raise mismatch
    return _string(value)


def _decode_blob(value: Any, _depth: int) -> bytes:
    mismatch = _container_mismatch(value)
    if mismatch is not None:
        raise mismatch
    return _blob(value)


def _container_mismatch(value: Any) -> ShoalError | None:
    """AWS's wording for a list or an object where a scalar was expected."""
    if isinstance(value, list):
        return _serialization_error("Start of list found where not expected")
    if isinstance(value, dict):
        return _serialization_error("Start of structure or map found where not expected.")
    return None


def _scalar(kind: str, value: Any, wire: WireFormat) -> Any:
    mismatch = _container_mismatch(value)
    if mismatch is not None:
        raise mismatch
    if kind == "string":
        return _string(value)
    if kind in ("integer", "long"):
        return _integer(value, "Integer" if kind == "integer" else "Long")
    if kind in ("double", "float"):
        return _number(value, "Double" if kind == "double" else "Float")
    if kind == "boolean":
        return _boolean(value)
    if kind == "blob":
        return _blob(value)
    if kind == "timestamp":
        return _timestamp(value, wire)
    raise AssertionError(f"the service models have no {kind} members")


def _java_class(value: Any) -> str:
    """The Java class AWS names when a JSON value has the wrong type."""
    if isinstance(value, bool):
        return "class java.lang.Boolean"
    if isinstance(value, int | float):
        # AWS's JSON reader (Coral) keeps every JSON number as this class: its texts name it
        # whatever the number ("... TruncatingBigNumber can not be converted to an String").
        return "class com.amazon.coral.value.json.numbers.TruncatingBigNumber"
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


def _number(value: Any, java_type: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _serialization_error(f"{_java_class(value)} can not be converted to an {java_type}")
    if not math.isfinite(value):
        raise _serialization_error(f"'{value}' can not be converted to an {java_type}")
    return float(value)


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
    if len(value) % 4:
        raise _blob_error(
            value,
            f"Base64 encoded length is expected a multiple of 4 bytes but found: {len(value)}",
        )
    try:
        # pybase64 (SIMD) validates the alphabet and padding at about 6x the standard
        # library's speed; every PutRecords entry carries a blob.
        decoded: bytes = pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _blob_error(value, _invalid_base64_reason(value)) from exc
    if value and not _canonical_tail(value, decoded):
        raise _blob_error(value, "Invalid last non-pad Base64 character dectected")
    return decoded


_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _invalid_base64_reason(value: str) -> str:
    """AWS's reason naming the first character that cannot stand where it is (kinesalite's
    recording: `'=+/='` is refused for its leading `=`): outside the alphabet, or padding
    anywhere but the last two places or followed by anything but padding."""
    for position, char in enumerate(value):
        if char in _BASE64_ALPHABET:
            continue
        if (
            char == "="
            and position >= len(value) - 2
            and value[position:] == "=" * (len(value) - position)
        ):
            continue
        return f"Invalid Base64 character: '{_echo(char)}'"
    return "Invalid Base64 character"


def _blob_error(value: str, reason: str) -> ShoalError:
    return _serialization_error(f"'{_echo(value)}' can not be converted to a Blob: {reason}")


def _canonical_tail(text: str, decoded: bytes) -> bool:
    """Whether the last 4-character group is the canonical encoding of the bytes it holds
    (AWS refuses non-zero padding bits); the groups before it cannot be non-canonical."""
    tail_bytes = len(decoded) % 3 or 3
    return pybase64.b64encode_as_string(decoded[-tail_bytes:]) == text[-4:]


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
    """A response (or an error document) in `wire`'s format. Service responses never hold
    None values (absent members are absent keys), so nothing needs stripping. GetRecords'
    page (`ShardPage`) is written from its batch bytes, in JSON by `json_page` and in CBOR by
    `cbor_page.runs_array`."""
    if wire is WireFormat.JSON:
        page = json_page.get_records_json(document, _json)
        if page is not None:
            return page
        # orjson walks the document in C and calls back only for blobs and timestamps; a
        # 10,000-record GetRecords page is the largest thing this door writes.
        return _json(shaped_answer(document))
    page = document.get("Records")
    if isinstance(page, ShardPage) and page.page.runs is not None:
        runs, number_base = page.page.runs, page.number_base
        return _cbor_document(document, lambda: cbor_page.runs_array(runs, number_base))
    document = shaped_answer(document)
    records = document.get("Records")
    if type(records) is list and records:
        array = cbor_page.records_array(records)
        if array is not None:
            return _cbor_document(document, lambda: array)
    # cbor2 walks the document in C; only timestamps call back (`_CBOR_ENCODERS`).
    return cbor2.dumps(document, encoders=_CBOR_ENCODERS)


def _json(document: Mapping[str, Any]) -> bytes:
    encoded: bytes = orjson.dumps(
        document, default=_JsonDefault(), option=orjson.OPT_PASSTHROUGH_DATETIME
    )
    return encoded


def _cbor_document(document: Mapping[str, Any], records: Callable[[], bytes]) -> bytes:
    """A document holding a page of records (GetRecords, a SubscribeToShard event) with its
    Records written by `records()` (`cbor_page`) and its other members by cbor2, in the
    document's order."""
    parts = [cbor_page.item_head(_CBOR_MAP_MAJOR_TYPE, len(document))]
    for name, value in document.items():
        parts.append(cbor2.dumps(name))
        if name == "Records":
            parts.append(records())
        else:
            parts.append(cbor2.dumps(value, encoders=_CBOR_ENCODERS))
    return b"".join(parts)


class _JsonDefault:
    """orjson's callback for what JSON has no type for, one per document: blobs as base64,
    timestamps as epoch seconds with millisecond precision. The records of a batch share one
    arrival time object (`records_shape`), so the last timestamp's seconds are kept: a
    10,000-record page converts a handful of times instead of 10,000 (half its encoding)."""

    __slots__ = ("_moment", "_seconds")

    def __init__(self) -> None:
        self._moment: datetime | None = None
        self._seconds = 0.0

    def __call__(self, value: Any) -> Any:
        if type(value) is bytes or isinstance(value, bytes | bytearray):
            return pybase64.b64encode_as_string(value)
        if value is self._moment:
            return self._seconds
        if isinstance(value, datetime):
            self._moment, self._seconds = value, ms_from_datetime(value) / 1000
            return self._seconds
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _cbor_timestamp(encoder: cbor2.CBOREncoder, value: datetime) -> None:
    """A timestamp as the Java SDK reads it: tag 1 holding integer epoch milliseconds."""
    encoder.encode_length(_CBOR_TAG_MAJOR_TYPE, _CBOR_EPOCH_TAG)  # a CBORTag costs twice this
    encoder.encode_int(ms_from_datetime(value))


_CBOR_ENCODERS: Mapping[type, Callable[[cbor2.CBOREncoder, Any], None]] = {
    datetime: _cbor_timestamp
}
