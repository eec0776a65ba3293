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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from functools import cache
from typing import Any, TypeVar

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
        return _Kind.REPEATED_MESSAGE if is_message and not is_timestamp else _Kind.REPEATED_SCALAR
    if is_timestamp:
        return _Kind.TIMESTAMP
    return _Kind.MESSAGE if is_message else _Kind.SCALAR


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
    result: dict[str, Any] = {}
    for field in _plan(message.DESCRIPTOR):
        kind = field.kind
        if kind is _Kind.SCALAR:
            if message.HasField(field.name):
                result[field.json_name] = getattr(message, field.name)
        elif kind is _Kind.REPEATED_MESSAGE:
            items = getattr(message, field.name)
            if items or empty_lists:
                result[field.json_name] = [
                    message_to_dict(item, empty_lists=empty_lists) for item in items
                ]
        elif kind is _Kind.REPEATED_SCALAR:
            items = getattr(message, field.name)
            if items or empty_lists:
                result[field.json_name] = list(items)
        elif kind is _Kind.MAP:
            entries = getattr(message, field.name)
            if entries or empty_lists:
                result[field.json_name] = dict(entries)
        elif message.HasField(field.name):
            value = getattr(message, field.name)
            result[field.json_name] = (
                value.ToDatetime(tzinfo=UTC)
                if kind is _Kind.TIMESTAMP
                else message_to_dict(value, empty_lists=empty_lists)
            )
    return result


def dict_to_message(data: Mapping[str, Any], message_class: type[MessageT]) -> MessageT:
    """An AWS-shaped dict as a message of `message_class`. None values are left unset."""
    descriptor: Any = message_class.DESCRIPTOR  # the stubs type it as a union of two classes
    return message_class(**_constructor_arguments(data, descriptor))


def _constructor_arguments(data: Mapping[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """The keyword arguments of the message's constructor: proto field names, nested dicts for
    nested messages, datetimes for timestamps (the constructor converts both)."""
    fields = _by_json_name(descriptor)
    arguments: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key)
        assert field is not None, f"{descriptor.name} has no member {key}"
        nested = field.descriptor
        if nested is None:
            arguments[field.name] = value
        elif field.kind is _Kind.REPEATED_MESSAGE:
            arguments[field.name] = [_constructor_arguments(item, nested) for item in value]
        else:
            arguments[field.name] = _constructor_arguments(value, nested)
    return arguments
