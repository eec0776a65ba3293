"""Protobuf messages ⇄ AWS-shaped dicts: the only place the native API's wire types are touched.

Every field in `proto/broker/api/kinesis/v1/kinesis.proto` carries the AWS member name as its
`json_name`, so one generic walk over the message descriptor translates both ways. The AWS-shaped
dict is what the service layer speaks, whichever front door a request came through:

- keys are AWS member names (`StreamName`, `Records`, ...); absent members are absent keys;
- blobs are `bytes`, timestamps are timezone-aware `datetime` in UTC, integers are `int`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

MessageT = TypeVar("MessageT", bound=Message)

_TIMESTAMP_NAME = Timestamp.DESCRIPTOR.full_name


@cache
def _fields_by_json_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {field.json_name: field for field in descriptor.fields}


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def message_to_dict(message: Message, *, empty_lists: bool = False) -> dict[str, Any]:
    """A message as an AWS-shaped dict with the fields that are present.

    Protobuf cannot tell an empty list from an absent one. Requests keep absent lists absent (so
    validation reports a missing required list as null); responses decoded by clients pass
    `empty_lists=True` and get `[]`, as an AWS response shows an empty `Records`.
    """
    result: dict[str, Any] = {}
    for field, value in message.ListFields():
        result[field.json_name] = _value_to_python(field, value, empty_lists)
    if empty_lists:
        for declared in cast("list[FieldDescriptor]", message.DESCRIPTOR.fields):
            if declared.is_repeated and declared.json_name not in result:
                result[declared.json_name] = {} if _is_map(declared) else []
    return result


def _value_to_python(field: FieldDescriptor, value: Any, empty_lists: bool) -> Any:
    if _is_map(field):
        return dict(value)
    if field.is_repeated:
        return [_scalar_or_message_to_python(field, item, empty_lists) for item in value]
    return _scalar_or_message_to_python(field, value, empty_lists)


def _scalar_or_message_to_python(field: FieldDescriptor, value: Any, empty_lists: bool) -> Any:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return value
    assert field.message_type is not None
    if field.message_type.full_name == _TIMESTAMP_NAME:
        return value.ToDatetime(tzinfo=UTC)
    return message_to_dict(value, empty_lists=empty_lists)


def dict_to_message(data: Mapping[str, Any], message_class: type[MessageT]) -> MessageT:
    """An AWS-shaped dict as a message of `message_class`. None values are left unset."""
    message = message_class()
    _fill(message, data)
    return message


def _fill(message: Message, data: Mapping[str, Any]) -> None:
    fields = _fields_by_json_name(message.DESCRIPTOR)
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key)
        assert field is not None, f"{message.DESCRIPTOR.name} has no member {key}"
        if _is_map(field):
            getattr(message, field.name).update(value)
        elif field.is_repeated:
            container = getattr(message, field.name)
            for item in value:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    _fill(container.add(), item)
                else:
                    container.append(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target = getattr(message, field.name)
            assert field.message_type is not None
            if field.message_type.full_name == _TIMESTAMP_NAME:
                assert isinstance(value, datetime)
                target.FromDatetime(value)
            else:
                _fill(target, value)
                target.SetInParent()  # an empty nested structure is still present
        else:
            setattr(message, field.name, value)
