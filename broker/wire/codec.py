"""Protobuf messages ⇄ AWS-shaped dicts: the only place the native API's wire types are touched.

Every field in `proto/broker/api/kinesis/v1/kinesis.proto` carries the AWS member name as its
`json_name`, so one plan per message descriptor translates both ways. The AWS-shaped dict is
what the service layer speaks, whichever front door a request came through:

- keys are AWS member names (`StreamName`, `Records`, ...); absent members are absent keys;
- blobs are `bytes`, timestamps are timezone-aware `datetime` in UTC, integers are `int`.

Plans are computed once per descriptor: PutRecords and GetRecords carry up to 10,000 nested
messages, so the per-field work is a table lookup, and messages are built by their C
constructors (which accept nested dicts and datetimes) rather than field by field.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, TypeVar, assert_never

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

MessageT = TypeVar("MessageT", bound=Message)

_TIMESTAMP_NAME = Timestamp.DESCRIPTOR.full_name


class _Kind(enum.Enum):
    SCALAR = 1  # with presence: read only when set
    TIMESTAMP = 2
    MESSAGE = 3
    REPEATED_SCALAR = 4
    REPEATED_MESSAGE = 5
    MAP = 6
    # A list of lists (kinesisanalytics' ParsedInputRecords): protobuf has no nested repeated
    # field, so each inner list is a message whose one repeated field has json_name "member"
    # (AWS's name for a list's element), read and written as the plain inner list.
    REPEATED_LIST = 7


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # the proto field name (snake_case)
    json_name: str  # the AWS member name
    kind: _Kind
    descriptor: Descriptor | None  # nested message type (MESSAGE, REPEATED_MESSAGE)


def _kind(field: FieldDescriptor) -> _Kind:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        return _Kind.MAP
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    is_timestamp = (
        is_message and message_type is not None and (message_type.full_name == _TIMESTAMP_NAME)
    )
    if field.is_repeated:
        if is_message and message_type is not None and _is_list_wrapper(message_type):
            return _Kind.REPEATED_LIST
        return _Kind.REPEATED_MESSAGE if is_message and not is_timestamp else _Kind.REPEATED_SCALAR
    if is_timestamp:
        return _Kind.TIMESTAMP
    return _Kind.MESSAGE if is_message else _Kind.SCALAR


def _is_list_wrapper(descriptor: Descriptor) -> bool:
    fields = descriptor.fields
    return len(fields) == 1 and fields[0].is_repeated and fields[0].json_name == "member"


@cache
def _plan(descriptor: Descriptor) -> tuple[_Field, ...]:
    return tuple(
        _Field(
            name=field.name,
            json_name=field.json_name,
            kind=_kind(field),
            descriptor=field.message_type if _kind(field) in _NESTED else None,
        )
        for field in descriptor.fields
    )


_NESTED = (_Kind.MESSAGE, _Kind.REPEATED_MESSAGE)


@cache
def _by_json_name(descriptor: Descriptor) -> dict[str, _Field]:
    return {field.json_name: field for field in _plan(descriptor)}


def message_to_dict(message: Message, *, empty_lists: bool = False) -> dict[str, Any]:
    """A message as an AWS-shaped dict with the fields that are present.

    Protobuf cannot tell an empty list from an absent one. Requests keep absent lists absent (so
    validation reports a missing required list as null); responses decoded by clients pass
    `empty_lists=True` and get `[]`, as an AWS response shows an empty `Records`.
    """
    reader: Callable[[Message, bool], dict[str, Any]] = _reader(message.DESCRIPTOR)
    return reader(message, empty_lists)


@cache
def _reader(descriptor: Descriptor) -> Callable[[Message, bool], dict[str, Any]]:
    """A reader function generated for one message type.

    Like `dataclasses` and `attrs`, this writes the straight-line code a person would write by
    hand for each message (one `HasField` and one attribute read per field) and compiles it
    once: a PutRecords of 500 entries then costs 500 plain calls instead of 500 walks over the
    descriptor. The source only ever contains field names from our own proto.
    """
    namespace: dict[str, Any] = {"UTC": UTC}
    lines = [f"def read_{descriptor.name}(m, empty_lists):", "    r = {}"]
    for field in _plan(descriptor):
        name, key = field.name, repr(field.json_name)
        assert name.isidentifier()
        match field.kind:
            case _Kind.SCALAR:
                # A value other than the default proves presence; HasField (as costly as the
                # read itself) is asked only for default values.
                lines += [f"    v = m.{name}", f"    if v or m.HasField({name!r}): r[{key}] = v"]
            case _Kind.TIMESTAMP:
                lines.append(
                    f"    if m.HasField({name!r}): r[{key}] = m.{name}.ToDatetime(tzinfo=UTC)"
                )
            case _Kind.MESSAGE:
                assert field.descriptor is not None
                namespace[f"read_{name}"] = _reader(field.descriptor)
                lines.append(
                    f"    if m.HasField({name!r}): r[{key}] = read_{name}(m.{name}, empty_lists)"
                )
            case _Kind.REPEATED_MESSAGE:
                assert field.descriptor is not None
                namespace[f"read_{name}"] = _reader(field.descriptor)
                lines += [
                    f"    v = m.{name}",
                    f"    if v or empty_lists: r[{key}] = [read_{name}(i, empty_lists) for i in v]",
                ]
            case _Kind.REPEATED_SCALAR:
                lines += [f"    v = m.{name}", f"    if v or empty_lists: r[{key}] = list(v)"]
            case _Kind.REPEATED_LIST:
                lines += [
                    f"    v = m.{name}",
                    f"    if v or empty_lists: r[{key}] = [list(i.member) for i in v]",
                ]
            case _Kind.MAP:
                lines += [f"    v = m.{name}", f"    if v or empty_lists: r[{key}] = dict(v)"]
            case unreachable:
                assert_never(unreachable)
    lines.append("    return r")
    exec("\n".join(lines), namespace)  # generated from our own descriptors only
    reader: Callable[[Message, bool], dict[str, Any]] = namespace[f"read_{descriptor.name}"]
    return reader


def dict_to_message(data: Mapping[str, Any], message_class: type[MessageT]) -> MessageT:
    """An AWS-shaped dict as a message of `message_class`. None values are left unset."""
    descriptor: Any = message_class.DESCRIPTOR  # the stubs type it as a union of two classes
    return message_class(**_writer(descriptor)(data))


_ABSENT = object()


@lru_cache(maxsize=256)
def _timestamp(moment: datetime) -> Timestamp:
    """A datetime as a Timestamp, converted once per distinct value: protobuf's own
    conversion is Python code, and a GetRecords page repeats one arrival time per batch (up to
    10,000 records). The constructor copies the message it is given, so sharing one is safe."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _unknown_members(data: Mapping[str, Any], descriptor: Descriptor) -> None:
    known = _by_json_name(descriptor)
    unknown = sorted(key for key in data if key not in known)
    raise AssertionError(f"{descriptor.name} has no member {', '.join(unknown)}")


@cache
def _writer(descriptor: Descriptor) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """The keyword arguments of the message's constructor, from an AWS-shaped dict: proto
    field names, nested dicts for nested messages, Timestamps for datetimes (the constructor
    converts the rest). Generated once per message type, as `_reader`: a GetRecords page of
    10,000 records then costs 10,000 straight-line calls, not 10,000 walks over the fields."""
    namespace: dict[str, Any] = {
        "ABSENT": _ABSENT,
        "datetime": datetime,
        "timestamp": _timestamp,
        "unknown": _unknown_members,
        "descriptor": descriptor,
    }
    lines = [f"def write_{descriptor.name}(d):", "    a = {}", "    seen = 0"]
    for field in _plan(descriptor):
        name, key = field.name, repr(field.json_name)
        assert name.isidentifier()
        lines += [
            f"    v = d.get({key}, ABSENT)",
            "    if v is not ABSENT:",
            "        seen += 1",
            "        if v is not None:",
        ]
        match field.kind:
            case _Kind.SCALAR | _Kind.REPEATED_SCALAR | _Kind.MAP:
                lines.append(f"            a[{name!r}] = v")
            case _Kind.TIMESTAMP:
                lines.append(
                    f"            a[{name!r}] = timestamp(v) if isinstance(v, datetime) else v"
                )
            case _Kind.MESSAGE:
                assert field.descriptor is not None
                namespace[f"write_{name}"] = _writer(field.descriptor)
                lines.append(f"            a[{name!r}] = write_{name}(v)")
            case _Kind.REPEATED_MESSAGE:
                assert field.descriptor is not None
                namespace[f"write_{name}"] = _writer(field.descriptor)
                lines.append(f"            a[{name!r}] = [write_{name}(i) for i in v]")
            case _Kind.REPEATED_LIST:
                lines.append(f"            a[{name!r}] = [{{'member': list(i)}} for i in v]")
            case unreachable:
                assert_never(unreachable)
    lines += ["    if seen != len(d):", "        unknown(d, descriptor)", "    return a"]
    exec("\n".join(lines), namespace)  # generated from our own descriptors only
    writer: Callable[[Mapping[str, Any]], dict[str, Any]] = namespace[f"write_{descriptor.name}"]
    return writer
