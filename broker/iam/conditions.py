"""IAM Condition operators over a request's context keys (pure).

A statement's `Condition` block maps operator -> {key: value or [values]}. Every operator
block and every key in it must hold (AND); the values of one key are alternatives (OR), except
for the negated operators (`StringNotEquals`, `NotIpAddress`, ...), which hold only when the
request's value matches none of them. As in AWS:

- a key missing from the request makes a positive operator false and a negated one true;
  `...IfExists` makes any operator true for a missing key; `Null` tests presence;
- `ForAnyValue:` / `ForAllValues:` prefixes apply the operator to multi-valued keys (any value
  matches / every value matches, true when the key is absent);
- context keys are case-insensitive, values of `String*` operators case-sensitive (except the
  `IgnoreCase` ones), `*` and `?` are wildcards in `StringLike` and `ArnLike`.

An unknown operator makes the statement never match (a Deny with one does not apply either);
`policy.parse_policy` refuses such documents before they are stored.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from broker.iam.wildcards import wildcard_match

ContextValues = Mapping[str, tuple[str, ...]]  # lower-cased key -> the request's values
Matcher = Callable[[str, str], bool]  # (request value, policy value) -> match


def _date_ms(text: str) -> float | None:
    """ISO-8601 dates and times, or epoch seconds, as epoch milliseconds."""
    try:
        return float(text) * 1000
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def _numeric(compare: Callable[[float, float], bool]) -> Matcher:
    def match(value: str, wanted: str) -> bool:
        try:
            return compare(float(value), float(wanted))
        except ValueError:
            return False

    return match


def _dated(compare: Callable[[float, float], bool]) -> Matcher:
    def match(value: str, wanted: str) -> bool:
        left, right = _date_ms(value), _date_ms(wanted)
        return left is not None and right is not None and compare(left, right)

    return match


@functools.lru_cache(maxsize=4096)
def _ip_match(value: str, wanted: str) -> bool:
    """Cached: the same client addresses and policy ranges come back on every request, and
    parsing both is most of an evaluation's cost (bounded LRU)."""
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(wanted, strict=False)
    except ValueError:
        return False


def _arn_like(value: str, wanted: str) -> bool:
    """ArnLike compares the six colon-separated parts one by one (the last may hold colons)."""
    value_parts = value.split(":", 5)
    wanted_parts = wanted.split(":", 5)
    if len(value_parts) != 6 or len(wanted_parts) != 6:
        return False
    return all(
        wildcard_match(part, pattern)
        for part, pattern in zip(value_parts, wanted_parts, strict=True)
    )


# Positive operators; each negated one is the NOR of its positive twin.
_POSITIVE: dict[str, Matcher] = {
    "stringequals": lambda v, w: v == w,
    "stringequalsignorecase": lambda v, w: v.lower() == w.lower(),
    "stringlike": wildcard_match,
    "arnequals": lambda v, w: v == w,
    "arnlike": _arn_like,
    "numericequals": _numeric(lambda a, b: a == b),
    "numericlessthan": _numeric(lambda a, b: a < b),
    "numericlessthanequals": _numeric(lambda a, b: a <= b),
    "numericgreaterthan": _numeric(lambda a, b: a > b),
    "numericgreaterthanequals": _numeric(lambda a, b: a >= b),
    "dateequals": _dated(lambda a, b: a == b),
    "datelessthan": _dated(lambda a, b: a < b),
    "datelessthanequals": _dated(lambda a, b: a <= b),
    "dategreaterthan": _dated(lambda a, b: a > b),
    "dategreaterthanequals": _dated(lambda a, b: a >= b),
    "bool": lambda v, w: v.lower() == w.lower(),
    "ipaddress": _ip_match,
}
_NEGATED: dict[str, str] = {
    "stringnotequals": "stringequals",
    "stringnotequalsignorecase": "stringequalsignorecase",
    "stringnotlike": "stringlike",
    "arnnotequals": "arnequals",
    "arnnotlike": "arnlike",
    "numericnotequals": "numericequals",
    "datenotequals": "dateequals",
    "notipaddress": "ipaddress",
}


def is_known_operator(operator: str) -> bool:
    name = operator.lower()
    for prefix in ("foranyvalue:", "forallvalues:"):
        name = name.removeprefix(prefix)
    name = name.removesuffix("ifexists")
    return name in _POSITIVE or name in _NEGATED or name == "null"


def _one_value(name: str, value: str, wanted: Sequence[str]) -> bool:
    """Does one request value satisfy the operator against the policy's values?"""
    if name in _NEGATED:
        positive = _POSITIVE[_NEGATED[name]]
        return not any(positive(value, item) for item in wanted)
    matcher = _POSITIVE[name]
    return any(matcher(value, item) for item in wanted)


def operator_holds(operator: str, values: tuple[str, ...] | None, wanted: Sequence[str]) -> bool:
    """One (operator, key) pair: `values` are the request's values for the key (None when the
    request has no such key), `wanted` the policy's."""
    name = operator.lower()
    set_mode = ""
    for prefix in ("foranyvalue:", "forallvalues:"):
        if name.startswith(prefix):
            set_mode, name = prefix, name.removeprefix(prefix)
    if_exists = name.endswith("ifexists") and name != "ifexists"
    name = name.removesuffix("ifexists")
    if name == "null":
        absent = values is None or not values
        return any(absent == (item.lower() == "true") for item in wanted)
    if name not in _POSITIVE and name not in _NEGATED:
        return False
    if values is None or not values:
        if if_exists or set_mode == "forallvalues:":
            return True
        return name in _NEGATED and set_mode == ""
    if set_mode == "forallvalues:":
        return all(_one_value(name, value, wanted) for value in values)
    # Single-valued keys and ForAnyValue: some value of the request satisfies the operator.
    return any(_one_value(name, value, wanted) for value in values)


def conditions_hold(
    block: Mapping[str, Mapping[str, tuple[str, ...]]], context: ContextValues
) -> bool:
    """Every operator, every key: the whole Condition block of one statement."""
    for operator, keys in block.items():
        for key, wanted in keys.items():
            if not operator_holds(operator, context.get(key.lower()), wanted):
                return False
    return True
