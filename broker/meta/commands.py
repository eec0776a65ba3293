"""Metadata commands: one frozen dataclass per change to the MetadataImage.

Each command carries everything that is not deterministic: the proposer's wall clock
(`now_ms`), secrets it generated, durations from its configuration. `state_machine.apply` never
reads a clock, the environment or `random`, so every replica computes the same image.

Commands cross the Raft log as explicit, versioned bytes (`encode_command`/`decode_command`),
never as pickled objects of our classes: a replica on another version can still read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.meta.image import ReshardKind, StreamMode
from broker.meta.image_codec import dataclass_from_members, to_document
from broker.types import Offset, ShardIndex, StreamUid

COMMAND_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class InitCluster:
    """Sets the cluster id and the iterator HMAC secret, once; later calls are no-ops."""

    now_ms: int
    cluster_id: str
    iterator_secret: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateStream:
    now_ms: int
    name: str
    arn: str
    shard_count: int
    mode: StreamMode
    retention_hours: int
    max_record_size_kib: int
    tags: tuple[tuple[str, str], ...]
    creating_ms: int  # how long the stream shows CREATING
    shard_count_per_account_max: int
    on_demand_streams_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteStream:
    now_ms: int
    name: str
    deleting_ms: int  # how long the stream shows DELETING before it is gone


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetStream:
    """Drops a deleted incarnation from the image once its DELETING timer has passed."""

    now_ms: int
    uid: StreamUid


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRetention:
    now_ms: int
    name: str
    retention_hours: int
    increase: bool  # True: IncreaseStreamRetentionPeriod; False: Decrease


@dataclass(frozen=True, slots=True, kw_only=True)
class AddTags:
    now_ms: int
    name: str
    tags: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveTags:
    now_ms: int
    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetEnhancedMonitoring:
    """Result: (current metrics, desired metrics), both sorted tuples."""

    now_ms: int
    name: str
    metrics: tuple[str, ...]  # "ALL" is expanded by the caller
    enable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginReshard:
    """Validates a split, merge or uniform scaling and puts the parents in SEALING.

    Result: the sealed shard indices. The stream is UPDATING until CompleteReshard and then
    until `updating_ms` after `now_ms` of the completion."""

    now_ms: int
    name: str
    kind: ReshardKind
    shard_index: ShardIndex | None = None
    adjacent_shard_index: ShardIndex | None = None
    new_starting_hash_key: int | None = None
    target_shard_count: int | None = None
    updating_ms: int = 0
    shard_count_per_account_max: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteReshard:
    """Closes the sealed parents at their final log ends and opens the children."""

    now_ms: int
    stream_uid: StreamUid
    end_offsets: tuple[tuple[ShardIndex, Offset], ...]  # every sealed shard's record count
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateStreamMode:
    now_ms: int
    name: str
    mode: StreamMode
    updating_ms: int
    on_demand_streams_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateMaxRecordSize:
    now_ms: int
    name: str
    max_record_size_kib: int


Command = (
    InitCluster
    | CreateStream
    | DeleteStream
    | ForgetStream
    | ChangeRetention
    | AddTags
    | RemoveTags
    | SetEnhancedMonitoring
    | BeginReshard
    | CompleteReshard
    | UpdateStreamMode
    | UpdateMaxRecordSize
)


_COMMAND_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        InitCluster,
        CreateStream,
        DeleteStream,
        ForgetStream,
        ChangeRetention,
        AddTags,
        RemoveTags,
        SetEnhancedMonitoring,
        BeginReshard,
        CompleteReshard,
        UpdateStreamMode,
        UpdateMaxRecordSize,
    )
}
_ENVELOPE_MEMBERS = frozenset({"v", "type"})


def encode_command(command: Command) -> bytes:
    """A JSON object `{"v": COMMAND_FORMAT_VERSION, "type": "<class name>", <fields>}`.

    Bytes are base64, enums their value, tuples lists, ints exact (hash keys reach 2**128).
    Keys are sorted so that equal commands encode to equal bytes."""
    name = type(command).__name__
    assert _COMMAND_TYPES.get(name) is type(command)
    document: dict[str, Any] = {"v": COMMAND_FORMAT_VERSION, "type": name}
    document.update(to_document(command, type(command)))
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def decode_command(data: bytes) -> Command:
    """The inverse of `encode_command`; raises ValueError for anything it did not write.

    A newer format version is refused rather than guessed at: every replica must compute the
    same image, so a replica that cannot read a command must stop, not skip it."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("metadata command is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ValueError("metadata command is not a JSON object")
    if document.get("v") != COMMAND_FORMAT_VERSION:
        raise ValueError(f"unsupported metadata command format version {document.get('v')!r}")
    cls = _COMMAND_TYPES.get(str(document.get("type")))
    if cls is None:
        raise ValueError(f"unknown metadata command type {document.get('type')!r}")
    command: Command = dataclass_from_members(document, cls, skip=_ENVELOPE_MEMBERS)
    return command
