"""kinesisanalyticsv2 descriptions of a stored application configuration, from the model.

A FLINK or ZEPPELIN application keeps its configuration as CreateApplication's create form
(`ApplicationConfiguration`, with updates merged in by `applications.merge_update`). AWS
answers it in the description form, whose members are the create form's renamed
(`CheckpointConfiguration` -> `CheckpointConfigurationDescription`, `PropertyGroups` ->
`PropertyGroupDescriptions`, ...). `describe` walks the description shape of botocore's
`kinesisanalyticsv2` model and fills each member from the create-form member of the same stem,
so every member the model knows is carried without a hand-written table per shape; then the
Flink defaults AWS shows for DEFAULT configurations are filled in.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.model import ListShape, Shape, StructureShape

Document = dict[str, Any]

MODEL = "kinesisanalyticsv2"

# Description members whose create-form member has another stem.
_ALIASES = {
    "S3ApplicationCodeLocationDescription": "S3ContentLocation",
    "EnvironmentPropertyDescriptions": "EnvironmentProperties",
}

# What AWS shows for a Flink application's DEFAULT configurations (the Managed Service for
# Apache Flink developer guide, "Checkpointing", "Parallelism" and "Monitoring").
_FLINK_DEFAULTS: dict[str, Document] = {
    "CheckpointConfigurationDescription": {
        "ConfigurationType": "DEFAULT",
        "CheckpointingEnabled": True,
        "CheckpointInterval": 60_000,
        "MinPauseBetweenCheckpoints": 5_000,
    },
    "MonitoringConfigurationDescription": {
        "ConfigurationType": "DEFAULT",
        "MetricsLevel": "APPLICATION",
        "LogLevel": "INFO",
    },
    "ParallelismConfigurationDescription": {
        "ConfigurationType": "DEFAULT",
        "Parallelism": 1,
        "ParallelismPerKPU": 1,
        "AutoScalingEnabled": False,
    },
}


@functools.cache
def _shapes() -> Any:
    return botocore.session.get_session().get_service_model(MODEL)


def _stem(name: str) -> str:
    """A member's name without its form (Description, Update) and plural, for matching."""
    for suffix in ("Descriptions", "Description", "Updates", "Update"):
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    lowered = name.lower()
    if lowered.endswith("ies"):
        return lowered[:-3] + "y"
    return lowered.removesuffix("s")


def _create_member(description_member: str, value: Mapping[str, Any]) -> str | None:
    alias = _ALIASES.get(description_member)
    if alias is not None and alias in value:
        return alias
    stem = _stem(description_member)
    for name in value:
        if _stem(name) == stem:
            return name
    return None


def _convert(value: Any, shape: Shape) -> Any:
    if isinstance(shape, StructureShape) and isinstance(value, Mapping):
        return _structure(value, shape)
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [_convert(item, shape.member) for item in value]
    return value


def _structure(value: Mapping[str, Any], shape: StructureShape) -> Document:
    described: Document = {}
    for member, member_shape in shape.members.items():
        source = _create_member(member, value)
        if source is not None:
            described[member] = _convert(value[source], member_shape)
    return described


def describe_configuration(configuration: Mapping[str, Any], runtime: str) -> Document:
    """The ApplicationConfigurationDescription of a non-SQL application's stored create form."""
    shape = _shapes().shape_for("ApplicationConfigurationDescription")
    described = _structure(configuration, shape)
    if runtime.startswith("FLINK"):
        flink = described.setdefault("FlinkApplicationConfigurationDescription", {})
        for member, defaults in _FLINK_DEFAULTS.items():
            given = flink.get(member, {})
            if given.get("ConfigurationType", "DEFAULT") == "DEFAULT":
                flink[member] = {**given, **defaults}
        parallelism = flink["ParallelismConfigurationDescription"]
        parallelism.setdefault("CurrentParallelism", parallelism.get("Parallelism", 1))
    return described
