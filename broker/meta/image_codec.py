"""Explicit JSON encoding of metadata value types: the MetadataImage snapshot and its parts.

The metadata quorum writes the image to disk (pysyncobj's "full dump") and ships it to
followers that fell behind log compaction. Those bytes must be readable by another version of
Shoal, so they are a versioned JSON document, never a pickle of our classes.

The encoding is driven by each frozen dataclass's type hints, so the schema is the dataclass:
- int, str, bool as themselves (Python's json keeps big ints exact, so 128-bit hash keys
  survive); bytes as base64 text; enums by value; NewTypes as their base type;
- tuples as lists; dicts with str keys as objects; `X | None` as the value or null;
- dataclasses as objects with one member per field;
- consumer leases (`broker.consumers.leases`): a `Checkpoint` as
  `{"sequence_number", "sub_sequence_number"}` and a `LeaseTable` as the list of its leases in
  a stable order (application, stream, lease key), each lease a dataclass object as above. This
  is the same document `leases.table_to_list` writes.

Decoding is strict: an unknown member, a missing member without a default or a value of the
wrong JSON type raises `ValueError`. The same helpers encode commands (`commands.py`).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import types
import typing
from typing import Any

from broker.consumers import leases
from broker.consumers.leases import Checkpoint, Lease, LeaseTable
from broker.meta.image import MetadataImage, NodeMeta, StreamMeta
from broker.meta.metadata_format import (
    FIRST_FORMAT,
    METADATA_FORMAT_MAX,
    image_version,
    members_after,
)
from broker.streams.sequence_numbers import api_form, stored_form

# 6: delivery streams (issue 11) and Kinesis Data Analytics applications (issue 12). 5: video
# streams (issue 13). 4: fan-out consumers, shard loads and scaling events, per-stream limits,
# account settings, leaders' start times (issues 5 and 6). 3: consumer leases (issue 5). 2:
# nodes, shard placement and replication factors (issue 4). Version 1 images (issue 2's
# single-node snapshots) are refused rather than guessed at: their shards have no replicas.
# Versions 2 to 10 are read as version 11 images whose newer members take their defaults (they
# are exactly that); an older node refuses a newer image by its version. 7: the cluster's
# metadata format (`metadata_format.py`), which also decides the version written: 4 at format
# 1, with none of the members a binary of that format cannot read; 7 at format 2; 8 from
# format 3 (issue 15: principals, access keys and identity policies; streams' data keys); 9
# from format 4 on (delivery streams' transitional encryption states); 10 from format 5 (video
# edge configurations and storage tiers); 11 from format 7 (nodes removed as absent).
IMAGE_FORMAT_VERSION = image_version(METADATA_FORMAT_MAX)
_IMAGE_FORMAT_VERSIONS_READ = (2, 3, 4, 5, 6, 7, 8, 9, 10, IMAGE_FORMAT_VERSION)

JsonValue = Any  # what json.loads returns; checked member by member while decoding


@functools.cache
def _field_types(cls: Any) -> tuple[tuple[str, Any, bool], ...]:
    """(name, resolved type, has a default) per field; cached because hints are slow."""
    hints = typing.get_type_hints(cls)
    result = []
    for field in dataclasses.fields(cls):
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        result.append((field.name, hints[field.name], has_default))
    return tuple(result)


@functools.cache
def _gated_defaults(cls: Any) -> dict[str, Any]:
    """Members of `cls` first written at a later metadata format, with their defaults. They
    are left out of an encoding while they hold their default (an absent member reads as its
    default), so an encoding that uses nothing newer stays readable by the older binaries."""
    gated = members_after(FIRST_FORMAT, cls.__name__)
    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name not in gated:
            continue
        if field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
        else:
            defaults[field.name] = field.default
    return defaults


def _base_type(tp: Any) -> Any:
    """Unwraps NewTypes (StreamUid -> int), which exist only for the type checker."""
    while hasattr(tp, "__supertype__"):
        tp = tp.__supertype__
    return tp


@functools.cache
def _shape(declared: Any) -> tuple[str, Any, Any]:
    """(kind, resolved type, detail) of a declared type; cached, because the codec meets the
    same few types for every value of every image and command it encodes or decodes."""
    tp = _base_type(declared)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(inner) != 1:
            return "unknown", tp, None  # only `X | None` has an encoding
        return "optional", tp, inner[0]
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return "sequence", tp, args[0]
        return "tuple", tp, args
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        return "dict", tp, (key_type, value_type)
    if tp is Checkpoint:
        return "checkpoint", tp, None
    if tp is LeaseTable:
        return "leases", tp, None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "dataclass", tp, None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "enum", tp, None
    if tp in (bytes, bool, int, str):
        return tp.__name__, tp, None
    return "unknown", tp, None


def to_document(value: Any, tp: Any) -> JsonValue:
    """The JSON-ready form of `value`, whose declared type is `tp`."""
    kind, tp, detail = _shape(tp)
    if kind == "optional":
        return None if value is None else to_document(value, detail)
    if kind == "sequence":
        return [to_document(item, detail) for item in value]
    if kind == "tuple":
        assert len(detail) == len(value)
        return [to_document(item, arg) for item, arg in zip(value, detail, strict=True)]
    if kind == "dict":
        key_type, value_type = detail
        assert _base_type(key_type) is str
        return {str(key): to_document(item, value_type) for key, item in value.items()}
    if kind == "checkpoint":
        assert isinstance(value, Checkpoint)
        return {
            # The previous release's 38-digit layout: it applies these commands too during a
            # rolling upgrade (streams/sequence_numbers.py `stored_form`).
            "sequence_number": stored_form(value.sequence_number),
            "sub_sequence_number": value.sub_sequence_number,
        }
    if kind == "leases":
        assert isinstance(value, LeaseTable)
        return [
            to_document(lease, Lease)
            for application in value.application_names()
            for lease in leases.list_leases(value, application=application)
        ]
    if kind == "dataclass":
        gated = _gated_defaults(tp)
        return {
            name: to_document(getattr(value, name), field_type)
            for name, field_type, _ in _field_types(tp)
            if name not in gated or getattr(value, name) != gated[name]
        }
    if kind == "enum":
        assert isinstance(value, tp)
        return value.value
    if kind == "bytes":
        assert isinstance(value, bytes)
        return base64.b64encode(value).decode("ascii")
    if kind == "bool":
        assert isinstance(value, bool)
        return value
    if kind == "int":
        assert isinstance(value, int)
        assert not isinstance(value, bool)
        return value
    if kind == "str":
        assert isinstance(value, str)
        return value
    raise AssertionError(f"no encoding for type {tp!r}")


def from_document(document: JsonValue, tp: Any) -> Any:
    """The value of type `tp` that `document` encodes; raises ValueError when malformed."""
    kind, tp, detail = _shape(tp)
    if kind == "optional":
        return None if document is None else from_document(document, detail)
    if kind == "sequence":
        _expect(document, list, tp)
        return tuple(from_document(item, detail) for item in document)
    if kind == "tuple":
        _expect(document, list, tp)
        if len(detail) != len(document):
            raise ValueError(f"expected {len(detail)} items for {tp!r}, got {len(document)}")
        return tuple(from_document(item, arg) for item, arg in zip(document, detail, strict=True))
    if kind == "dict":
        _expect(document, dict, tp)
        _, value_type = detail
        return {str(key): from_document(item, value_type) for key, item in document.items()}
    if kind == "checkpoint":
        return _checkpoint_from_document(document)
    if kind == "leases":
        return _lease_table_from_document(document)
    if kind == "dataclass":
        return _dataclass_from_document(document, tp)
    if kind == "enum":
        try:
            return tp(document)
        except ValueError as exc:
            raise ValueError(f"{document!r} is not a {tp.__name__}") from exc
    if kind == "bytes":
        _expect(document, str, tp)
        try:
            return base64.b64decode(document.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"bad base64 for bytes: {document!r}") from exc
    if kind == "bool":
        _expect(document, bool, tp)
        return document
    if kind == "int":
        if isinstance(document, bool) or not isinstance(document, int):
            raise ValueError(f"expected an integer, got {document!r}")
        return document
    if kind == "str":
        _expect(document, str, tp)
        return document
    raise AssertionError(f"no decoding for type {tp!r}")


def dataclass_from_members(document: JsonValue, cls: type, *, skip: frozenset[str]) -> Any:
    """Builds dataclass `cls` from a JSON object, ignoring the envelope members in `skip`."""
    _expect(document, dict, cls)
    known = {name for name, _, _ in _field_types(cls)}
    unknown = set(document) - known - skip
    if unknown:
        raise ValueError(f"unknown members for {cls.__name__}: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, field_type, has_default in _field_types(cls):
        if name not in document:
            if not has_default:
                raise ValueError(f"missing member {name!r} for {cls.__name__}")
            continue
        kwargs[name] = from_document(document[name], field_type)
    return cls(**kwargs)


def _dataclass_from_document(document: JsonValue, cls: type) -> Any:
    return dataclass_from_members(document, cls, skip=frozenset())


def _checkpoint_from_document(document: JsonValue) -> Checkpoint:
    _expect(document, dict, Checkpoint)
    if set(document) != {"sequence_number", "sub_sequence_number"}:
        raise ValueError(f"expected a checkpoint, got {document!r}")
    sequence_number = api_form(from_document(document["sequence_number"], str))
    sub_sequence_number = from_document(document["sub_sequence_number"], int)
    return Checkpoint(sequence_number, sub_sequence_number)  # ValueError if not a checkpoint


def _lease_table_from_document(document: JsonValue) -> LeaseTable:
    _expect(document, list, LeaseTable)
    decoded: list[Lease] = []
    for item in document:
        try:
            decoded.append(from_document(item, Lease))
        except AssertionError as exc:  # Lease.__post_init__'s invariants
            raise ValueError(f"inconsistent lease {item!r}") from exc
    table = leases.EMPTY.with_leases(decoded)
    if table.lease_count() != len(decoded):
        raise ValueError("a lease appears twice in the lease table")
    return table


def _expect(document: JsonValue, json_type: type, tp: Any) -> None:
    if not isinstance(document, json_type):
        raise ValueError(f"expected {json_type.__name__} for {tp!r}, got {document!r}")


def image_to_document(image: MetadataImage) -> dict[str, JsonValue]:
    """The image as a JSON object with a format version: the version of the cluster's metadata
    format, readable by every binary that reads that format. ValueError if the image holds
    something that format cannot carry (a command gated by `commands.required_format` got
    through: a bug)."""
    level = image.metadata_format
    document: dict[str, JsonValue] = {"v": image_version(level)}
    encoded = to_document(image, MetadataImage)
    assert isinstance(encoded, dict)
    if level == FIRST_FORMAT:
        del encoded["metadata_format"]  # implied by the version
    document.update(encoded)
    too_new = [m for m in members_after(level, "MetadataImage") if m in encoded]
    stream_members = members_after(level, StreamMeta.__name__)
    for name, stream in encoded["streams"].items():
        too_new.extend(f"streams.{name}.{m}" for m in stream_members if m in stream)
    node_members = members_after(level, NodeMeta.__name__)
    for node_id, node in encoded["nodes"].items():
        too_new.extend(f"nodes.{node_id}.{m}" for m in node_members if m in node)
    if too_new:
        raise ValueError(f"metadata format {level} cannot carry {sorted(too_new)}")
    return document


def image_from_document(document: JsonValue) -> MetadataImage:
    if not isinstance(document, dict) or document.get("v") not in _IMAGE_FORMAT_VERSIONS_READ:
        version = document.get("v") if isinstance(document, dict) else None
        raise ValueError(f"unsupported metadata image format version {version!r}")
    image = dataclass_from_members(document, MetadataImage, skip=frozenset({"v"}))
    assert isinstance(image, MetadataImage)
    if "metadata_format" not in document:
        # Up to version 4 the first format; 5 and 6 came from the binaries that wrote the
        # second format's content before the negotiation existed.
        level = FIRST_FORMAT if document["v"] <= 4 else 2
        image = dataclasses.replace(image, metadata_format=level)
    if image.metadata_format > METADATA_FORMAT_MAX:
        raise ValueError(f"unsupported metadata format {image.metadata_format}")
    return image


def encode_image(image: MetadataImage) -> bytes:
    """Canonical bytes: equal images encode to equal bytes (keys sorted, no whitespace)."""
    return json.dumps(
        image_to_document(image), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


def decode_image(data: bytes) -> MetadataImage:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("metadata image is not valid JSON") from exc
    return image_from_document(document)
