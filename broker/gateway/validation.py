"""Request validation driven by botocore's service models, the APIs' reference.

Both front doors call `validate_request(operation, request, model=...)` on the AWS-shaped dict
before the service sees it (`model` names the botocore service: "kinesis" by default,
"firehose", "kinesisanalytics", ... for the other services of the family), so the limits,
patterns and enums AWS enforces are enforced here from the one machine-readable source instead
of being written out by hand. Failures become one ValidationException whose message follows
AWS's wording:

    2 validation errors detected: Value null at 'streamName' failed to satisfy constraint:
    Member must not be null; Value '0' at 'shardCount' failed to satisfy constraint: ...

Semantic checks that need state (does the stream exist, is a key inside a shard's range) belong
to the service and the metadata state machine, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import Any

import botocore.loaders
import botocore.model
import regex

from broker.error_messages import (
    MUST_NOT_BE_NULL,
    constraint_violation,
    member_path,
    validation_errors,
)
from broker.errors import ErrorCode, ShoalError

_COLLECTION_RENDERED_MAX = 1024  # characters of a list or map echoed in a violation
_VALIDATION_ERRORS_REPORTED_MAX = 10  # AWS lists a handful; a huge PutRecords must not list 500


KINESIS = "kinesis"  # botocore's name of the Kinesis Data Streams model
# The services whose resources belong to the caller's region (and account), on both doors:
# data streams, and the SQL applications over them (both analytics APIs). The rest of the
# family serves the node's region.
REGIONAL_MODELS = frozenset({KINESIS, "kinesisanalytics", "kinesisanalyticsv2"})


@cache
def service_model(name: str = KINESIS) -> botocore.model.ServiceModel:
    """botocore's model of service `name` (shapes, limits, documentation; its newest API
    version), loaded once per process."""
    loader = botocore.loaders.Loader()
    return botocore.model.ServiceModel(loader.load_service_model(name, "service-2"), name)


# Java's Unicode property classes, which some models' patterns use (the Kinesis Video tag
# keys: `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`), as Python's `re` classes closest to them: letters
# as word characters (a little broader: digits and marks too), separators as whitespace,
# numbers as decimal digits.
_UNICODE_CLASSES = {r"\p{L}": r"\w", r"\p{Z}": r"\s", r"\p{N}": r"\d"}


# Patterns Shoal widens on purpose, by shape name. Firehose's ClusterJDBCURL: a Redshift
# destination is loaded into PostgreSQL (broker/firehose/warehouse.py), which any host may
# serve, not only the `*.redshift.*` names of AWS's pattern.
WIDENED_PATTERNS = {
    "ClusterJDBCURL": r"jdbc:(redshift|postgresql)://[A-Za-z0-9.\-]+:\d{1,5}/[a-zA-Z0-9_$-]+",
}


def _pattern_text(shape: botocore.model.Shape) -> str | None:
    widened = WIDENED_PATTERNS.get(shape.name)
    return widened if widened is not None else shape.metadata.get("pattern")


@cache
def _pattern(text: str) -> regex.Pattern[str]:
    """The model's patterns are Java regexes; `regex` reads their Unicode classes (`\\p{L}`)."""
    return regex.compile(text)


def _render(value: Any) -> str:
    """A value as AWS's messages show it: quoted, blobs as the Java buffer AWS holds them in,
    lists as `[a, b]` and maps as `{k=v}` (Java's toString); `null` for a missing value."""
    if value is None:
        return "null"
    text = _java_string(value)
    if isinstance(value, list | Mapping) and len(text) > _COLLECTION_RENDERED_MAX:
        # A PutRecords of 500 entries must not echo all of them (gRPC caps its metadata).
        text = text[: _COLLECTION_RENDERED_MAX - 4] + "...]"
    return f"'{text}'"


def _java_string(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        size = len(value)
        return f"java.nio.HeapByteBuffer[pos=0 lim={size} cap={size}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_java_string(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_java_string(v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# Structures whose members AWS reports in an order of its own, ahead of the rest, as
# kinesalite's tests recorded the real service reporting them (ListTagsForStream says `limit`
# before `exclusiveStartTagKey`, where the model lists them the other way round; SplitShard
# names `streamName` between its own two members). Members the recording names are reported in
# its order, StreamName included; the rest follow in the model's order.
_RECORDED_ORDER = {
    "ListTagsForStreamInput": ("Limit", "ExclusiveStartTagKey"),
    "GetRecordsInput": ("Limit", "ShardIterator"),
    "ListShardsInput": (
        "ExclusiveStartShardId",
        "MaxResults",
        "NextToken",
        "StreamCreationTimestamp",
    ),
    "PutRecordInput": (
        "SequenceNumberForOrdering",
        "PartitionKey",
        "ExplicitHashKey",
        "Data",
    ),
    "PutRecordsRequestEntry": ("PartitionKey", "ExplicitHashKey", "Data"),
    "SplitShardInput": ("NewStartingHashKey", "StreamName", "ShardToSplit"),
}


def _member_order(model: str, shape: botocore.model.StructureShape) -> tuple[str, ...]:
    """The order AWS reports a structure's members in: the model's, except that Kinesis
    reports the stream-naming member StreamName after the operation's own members (as
    recorded by kinesalite: `shardId`, `shardIteratorType`, ..., `streamName`; `tags`,
    `streamName`), and the recorded exceptions of `_RECORDED_ORDER`."""
    names = tuple(shape.members)
    if model != KINESIS:
        return names
    first = tuple(n for n in _RECORDED_ORDER.get(shape.name, ()) if n in names)
    rest = tuple(n for n in names if n not in first)
    if "StreamName" in first or "StreamName" not in rest:
        return (*first, *rest)
    return (*first, *(n for n in rest if n != "StreamName"), "StreamName")


def validate_request(operation: str, request: Mapping[str, Any], *, model: str = KINESIS) -> None:
    """Raise ShoalError(VALIDATION) when `request` breaks the model's constraints.

    Two passes by design: a compiled yes/no check runs on every request (a PutRecords of 500
    entries is on the hot path), and only a request that fails it is walked again to collect
    AWS's detailed messages."""
    if _compiled_check(model, operation)(request):
        return
    input_shape = service_model(model).operation_model(operation).input_shape
    assert input_shape is not None
    problems = _Problems(model)
    _check_structure(input_shape, request, "", problems)
    assert problems, f"the compiled and the detailed checks of {operation} disagree"
    raise ShoalError(ErrorCode.VALIDATION, validation_errors(problems))


def passes(operation: str, request: Mapping[str, Any], *, model: str = KINESIS) -> bool:
    """Whether `request` satisfies the model's constraints: `validate_request`'s compiled
    check alone, no messages (a caller that finds False calls `validate_request` for them)."""
    return _compiled_check(model, operation)(request)


class _Problems(list[str]):
    """The violations found so far; AWS stops looking after ten (and counts ten)."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    @property
    def full(self) -> bool:
        return len(self) >= _VALIDATION_ERRORS_REPORTED_MAX


Check = Callable[[Any], bool]


@cache
def _compiled_check(model: str, operation: str) -> Check:
    input_shape = service_model(model).operation_model(operation).input_shape
    assert input_shape is not None
    return _compile(input_shape, {})


def _compile(shape: botocore.model.Shape, done: dict[str, Check]) -> Check:
    """A closure answering "does this value satisfy the shape?" with no messages."""
    cached = done.get(shape.name)
    if cached is not None:
        return cached
    kind = shape.type_name
    metadata = shape.metadata
    low = metadata.get("min")
    high = metadata.get("max")
    if kind == "structure":
        assert isinstance(shape, botocore.model.StructureShape)
        return _compile_structure(shape, done)
    if kind == "list":
        assert isinstance(shape, botocore.model.ListShape)
        item = _compile(shape.member, done)

        def check_list(value: Any) -> bool:
            return (
                isinstance(value, list)
                and _within(len(value), low, high)
                and all(item(v) for v in value)
            )

        return check_list
    if kind == "map":
        assert isinstance(shape, botocore.model.MapShape)
        key_check = _compile(shape.key, done)
        value_check = _compile(shape.value, done)

        def check_map(value: Any) -> bool:
            return (
                isinstance(value, Mapping)
                and _within(len(value), low, high)
                and all(key_check(k) and value_check(v) for k, v in value.items())
            )

        return check_map
    if kind == "string":
        pattern_text = _pattern_text(shape)
        pattern = _pattern(pattern_text) if pattern_text is not None else None
        enum = frozenset(shape.enum) if isinstance(shape, botocore.model.StringShape) else None

        def check_string(value: Any) -> bool:
            if type(value) is not str and not isinstance(value, str):
                return False
            size = len(value)
            if (low is not None and size < low) or (high is not None and size > high):
                return False
            if pattern is not None and pattern.fullmatch(value) is None:
                return False
            return not enum or value in enum

        return check_string
    if kind in ("integer", "long"):
        return lambda value: (
            isinstance(value, int) and not isinstance(value, bool) and _within(value, low, high)
        )
    if kind in ("double", "float"):
        return lambda value: (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and _within_number(value, low, high)
        )
    if kind == "blob":

        def check_blob(value: Any) -> bool:
            if type(value) is not bytes and not isinstance(value, bytes | bytearray):
                return False
            size = len(value)
            return (low is None or size >= low) and (high is None or size <= high)

        return check_blob
    if kind == "boolean":
        return lambda value: isinstance(value, bool)
    if kind == "timestamp":
        return lambda value: isinstance(value, datetime)
    return lambda value: True  # shapes Kinesis inputs do not use (float, double, document)


def _compile_structure(shape: botocore.model.StructureShape, done: dict[str, Check]) -> Check:
    required = tuple(shape.required_members)
    members: dict[str, Check] = {}

    def check_structure(value: Any) -> bool:
        if type(value) is not dict and not isinstance(value, Mapping):  # the ABC check is slow
            return False
        for name in required:
            if value.get(name) is None:
                return False
        for name, member_value in value.items():
            check = members.get(name)
            if check is not None and member_value is not None and not check(member_value):
                return False
        return True

    done[shape.name] = check_structure  # before the members: shapes may be recursive
    members.update({name: _compile(member, done) for name, member in shape.members.items()})
    return check_structure


def _within(number: int, low: int | None, high: int | None) -> bool:
    return (low is None or number >= low) and (high is None or number <= high)


def _within_number(number: float, low: float | None, high: float | None) -> bool:
    return (low is None or number >= low) and (high is None or number <= high)


def _check_structure(
    shape: botocore.model.StructureShape,
    value: Any,
    prefix: str,
    problems: _Problems,
) -> None:
    if not isinstance(value, Mapping):
        _fail(prefix.rstrip("."), value, "Member must be a structure", problems)
        return
    required = set(shape.required_members)
    for name in _member_order(problems.model, shape):
        member_value = value.get(name)
        path = prefix + member_path(name)
        if member_value is None:
            if name in required:
                _fail(path, None, MUST_NOT_BE_NULL, problems)
            continue
        # Unknown members are ignored, as AWS's JSON protocol does.
        _check_value(shape.members[name], member_value, path, problems)


def _fail(path: str, value: Any, constraint: str, problems: _Problems) -> None:
    if not problems.full:
        problems.append(constraint_violation(_render(value), path, constraint))


def _check_value(shape: botocore.model.Shape, value: Any, path: str, problems: _Problems) -> None:
    metadata = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, botocore.model.StructureShape)
        _check_structure(shape, value, path + ".", problems)
    elif kind == "list":
        assert isinstance(shape, botocore.model.ListShape)
        if not isinstance(value, list):
            _fail(path, value, "Member must be a list", problems)
            return
        _check_length(len(value), metadata, path, value, problems)
        if _is_scalar_string(shape.member):
            _check_strings_together(shape.member, value, "Member", path, value, problems)
            return
        for position, item in enumerate(value, start=1):
            _check_value(shape.member, item, f"{path}.{position}.member", problems)
    elif kind == "map":
        assert isinstance(shape, botocore.model.MapShape)
        if not isinstance(value, Mapping):
            _fail(path, value, "Member must be a map", problems)
            return
        _check_length(len(value), metadata, path, value, problems)
        if _is_scalar_string(shape.key):
            _check_strings_together(shape.key, list(value), "Map keys", path, value, problems)
        else:
            for key in value:
                _check_value(shape.key, key, f"{path}.key", problems)
        if _is_scalar_string(shape.value):
            values = list(value.values())
            _check_strings_together(shape.value, values, "Map value", path, value, problems)
        else:
            for item in value.values():
                _check_value(shape.value, item, f"{path}.value", problems)
    elif kind == "string":
        _check_string(shape, value, path, problems)
    elif kind in ("integer", "long", "double", "float"):
        _check_number(metadata, value, path, problems)
    elif kind == "blob":
        if not isinstance(value, bytes | bytearray):
            _fail(path, value, "Member must be a blob", problems)
            return
        _check_length(len(value), metadata, path, value, problems)
    elif kind == "boolean" and not isinstance(value, bool):
        _fail(path, value, "Member must be a boolean", problems)
    elif kind == "timestamp" and not isinstance(value, datetime):
        _fail(path, value, "Member must be a timestamp", problems)


def _is_scalar_string(shape: botocore.model.Shape) -> bool:
    return shape.type_name == "string"


def _string_constraints(shape: botocore.model.Shape) -> list[str]:
    """A string shape's constraints as AWS lists them inside `[...]`."""
    metadata = shape.metadata
    constraints = []
    if "max" in metadata:
        constraints.append(f"Member must have length less than or equal to {metadata['max']}")
    if "min" in metadata:
        constraints.append(f"Member must have length greater than or equal to {metadata['min']}")
    pattern = _pattern_text(shape)
    if pattern is not None:
        constraints.append(f"Member must satisfy regular expression pattern: {pattern}")
    enum = shape.enum if isinstance(shape, botocore.model.StringShape) else None
    if enum:
        constraints.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    return constraints


def _check_strings_together(
    shape: botocore.model.Shape,
    items: list[Any],
    subject: str,
    path: str,
    whole: Any,
    problems: _Problems,
) -> None:
    """AWS reports the strings of a list (or a map's keys, or its values) as one violation of
    the collection: `Value '[a, ]' at 'tagKeys' failed to satisfy constraint: Member must
    satisfy constraint: [Member must have length less than or equal to 128, ...]`."""
    scratch = _Problems(problems.model)
    for item in items:
        _check_string(shape, item, path, scratch)
    if scratch:
        listed = ", ".join(_string_constraints(shape))
        _fail(path, whole, f"{subject} must satisfy constraint: [{listed}]", problems)


def _check_string(shape: botocore.model.Shape, value: Any, path: str, problems: _Problems) -> None:
    """AWS's order: the pattern (checked on empty strings too), the length bounds, the enum."""
    if not isinstance(value, str):
        _fail(path, value, "Member must be a string", problems)
        return
    pattern = _pattern_text(shape)
    if pattern is not None and _pattern(pattern).fullmatch(value) is None:
        _fail(path, value, f"Member must satisfy regular expression pattern: {pattern}", problems)
    _check_length(len(value), shape.metadata, path, value, problems)
    enum = shape.enum if isinstance(shape, botocore.model.StringShape) else None
    if enum and value not in enum:
        _fail(path, value, f"Member must satisfy enum value set: [{', '.join(enum)}]", problems)


def _check_number(metadata: Mapping[str, Any], value: Any, path: str, problems: _Problems) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, value, "Member must be a number", problems)
        return
    minimum = metadata.get("min")
    maximum = metadata.get("max")
    if minimum is not None and value < minimum:
        _fail(path, value, f"Member must have value greater than or equal to {minimum}", problems)
    if maximum is not None and value > maximum:
        _fail(path, value, f"Member must have value less than or equal to {maximum}", problems)


def _check_length(
    length: int, metadata: Mapping[str, Any], path: str, value: Any, problems: _Problems
) -> None:
    minimum = metadata.get("min")
    maximum = metadata.get("max")
    if minimum is not None and length < minimum:
        _fail(path, value, f"Member must have length greater than or equal to {minimum}", problems)
    if maximum is not None and length > maximum:
        _fail(path, value, f"Member must have length less than or equal to {maximum}", problems)
