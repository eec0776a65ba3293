"""The console's actions as the Kinesis API calls they are: a submitted form becomes one
operation and its AWS-shaped request, which the console shows for confirmation and then runs
through the same validation and `KinesisService.call` as the API doors. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import StreamMeta
from broker.streams.throttling import RATE_NAMES


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedCall:
    operation: str
    request: dict[str, Any]
    summary: str  # one sentence saying what will happen
    destructive: bool = False


Form = Mapping[str, str]


def _integer(form: Form, name: str, label: str) -> int:
    raw = form.get(name, "").strip()
    try:
        return int(raw)
    except ValueError:
        raise ShoalError(
            ErrorCode.VALIDATION, error_messages.console_not_a_whole_number(label=label, raw=raw)
        ) from None


def _text(form: Form, name: str, label: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise ShoalError(ErrorCode.VALIDATION, error_messages.console_field_required(label=label))
    return value


def create(_: StreamMeta | None, form: Form) -> PlannedCall:
    name = _text(form, "name", "Stream name")
    mode = form.get("mode", "PROVISIONED")
    request: dict[str, Any] = {"StreamName": name, "StreamModeDetails": {"StreamMode": mode}}
    if mode == "PROVISIONED":
        request["ShardCount"] = _integer(form, "shard_count", "Shard count")
        summary = f"Create the provisioned stream {name} with {request['ShardCount']} shards."
    else:
        summary = f"Create the on-demand stream {name}."
    return PlannedCall(operation="CreateStream", request=request, summary=summary)


def delete(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    enforce = form.get("enforce_consumer_deletion") == "on"
    return PlannedCall(
        operation="DeleteStream",
        request={"StreamName": stream.name, "EnforceConsumerDeletion": enforce},
        summary=f"Delete the stream {stream.name} and every record it holds. "
        "This cannot be undone.",
        destructive=True,
    )


def shard_count(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    target = _integer(form, "target_shard_count", "Target shard count")
    return PlannedCall(
        operation="UpdateShardCount",
        request={
            "StreamName": stream.name,
            "TargetShardCount": target,
            "ScalingType": "UNIFORM_SCALING",
        },
        summary=(
            f"Reshard {stream.name} from {len(stream.open_shards())} to {target} open shards "
            "(uniform scaling)."
        ),
    )


def split(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    shard_id = _text(form, "shard_id", "Shard")
    key = _text(form, "new_starting_hash_key", "New starting hash key")
    return PlannedCall(
        operation="SplitShard",
        request={"StreamName": stream.name, "ShardToSplit": shard_id, "NewStartingHashKey": key},
        summary=f"Split {shard_id} of {stream.name} at hash key {key} into two child shards.",
    )


def merge(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    shard_id = _text(form, "shard_id", "Shard")
    adjacent = _text(form, "adjacent_shard_id", "Adjacent shard")
    return PlannedCall(
        operation="MergeShards",
        request={
            "StreamName": stream.name,
            "ShardToMerge": shard_id,
            "AdjacentShardToMerge": adjacent,
        },
        summary=f"Merge {shard_id} and {adjacent} of {stream.name} into one child shard.",
    )


def retention(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    hours = _integer(form, "retention_hours", "Retention")
    increase = hours >= stream.retention_hours
    operation = "IncreaseStreamRetentionPeriod" if increase else "DecreaseStreamRetentionPeriod"
    summary = (
        f"Change the retention of {stream.name} from {stream.retention_hours} to {hours} hours."
    )
    if not increase:
        summary += " Records older than that become unreadable."
    return PlannedCall(
        operation=operation,
        request={"StreamName": stream.name, "RetentionPeriodHours": hours},
        summary=summary,
        destructive=not increase,
    )


def mode(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    wanted = _text(form, "mode", "Capacity mode")
    return PlannedCall(
        operation="UpdateStreamMode",
        request={"StreamARN": stream.arn, "StreamModeDetails": {"StreamMode": wanted}},
        summary=f"Switch {stream.name} from {stream.mode.value} to {wanted} capacity mode.",
    )


def tag(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    key = _text(form, "tag_key", "Tag key")
    value = form.get("tag_value", "")
    return PlannedCall(
        operation="AddTagsToStream",
        request={"StreamName": stream.name, "Tags": {key: value}},
        summary=f"Tag {stream.name} with {key} = {value!r}.",
    )


def untag(stream: StreamMeta | None, form: Form) -> PlannedCall:
    assert stream is not None
    key = _text(form, "tag_key", "Tag key")
    return PlannedCall(
        operation="RemoveTagsFromStream",
        request={"StreamName": stream.name, "TagKeys": [key]},
        summary=f"Remove the tag {key} from {stream.name}.",
    )


LIMIT_FIELDS = RATE_NAMES  # the form's field names are the rates' names


def stream_limits(stream: StreamMeta | None, form: Form) -> PlannedCall:
    """LimitsService.UpdateStreamLimits (the native API; Kinesis has no such call): a field
    left empty returns that rate to the cluster default, 0 lifts it."""
    assert stream is not None
    rates = {
        name: _integer(form, name, name.replace("_", " "))
        for name in LIMIT_FIELDS
        if form.get(name, "").strip()
    }
    reset = [name for name in LIMIT_FIELDS if not form.get(name, "").strip()]
    shown = ", ".join(
        [f"{name} = {value}" for name, value in rates.items()]
        + [f"{name} = cluster default" for name in reset]
    )
    return PlannedCall(
        operation="UpdateStreamLimits",
        request={"StreamName": stream.name, "Rates": rates, "Reset": reset},
        summary=f"Set the per-shard limits of {stream.name}: {shown}.",
    )


STREAM_ACTIONS: dict[str, Callable[[StreamMeta | None, Form], PlannedCall]] = {
    "delete": delete,
    "shard-count": shard_count,
    "split": split,
    "merge": merge,
    "retention": retention,
    "mode": mode,
    "tag": tag,
    "untag": untag,
    "limits": stream_limits,
}

# The form fields each action reads (the confirmation page carries them over).
ACTION_FIELDS = (
    "name",
    "mode",
    "shard_count",
    "enforce_consumer_deletion",
    "target_shard_count",
    "shard_id",
    "adjacent_shard_id",
    "new_starting_hash_key",
    "retention_hours",
    "tag_key",
    "tag_value",
    *LIMIT_FIELDS,
)
