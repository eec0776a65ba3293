"""How a metric family is declared: `Family`, and `FAMILIES`, every family a node exposes.

Every group module (`api`, `streams`, `cluster`, ...) declares its families with `declare`,
which registers each in `FAMILIES` (the test and the dashboard check walk it) and checks the
naming rules: prefix `kinesis_`, counters end in `_total`, histograms have buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PREFIX = "kinesis"

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as Prometheus shows it (`name` is what PromQL uses)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    cloudwatch: str = ""  # the Kinesis CloudWatch metric this stands for, if any
    buckets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        assert self.name.startswith(PREFIX + "_")
        assert (self.kind == "counter") == self.name.endswith("_total")
        assert (self.kind == "histogram") == bool(self.buckets)


FAMILIES: dict[str, Family] = {}  # every family, by name, in the order the modules declare them


def declare(
    name: str,
    kind: Kind,
    help_: str,
    labels: tuple[str, ...] = (),
    *,
    cloudwatch: str = "",
    buckets: tuple[float, ...] = (),
) -> Family:
    family = Family(name, kind, help_, labels, cloudwatch, buckets)
    assert name not in FAMILIES, name
    FAMILIES[name] = family
    return family
