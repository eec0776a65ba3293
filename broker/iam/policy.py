"""AWS's JSON policy language: documents parsed into values, and the evaluation (pure).

`parse_policy(text)` turns an identity or resource policy into `Policy` (refusing what AWS
refuses with the reason), `evaluate(request, identity_policies, resource_policy)` answers
allow or deny and why, the way AWS's evaluation logic does for one account and a resource
policy (no SCPs, permission boundaries or session policies: Shoal has none):

1. Every statement that applies (action, resource, principal for a resource policy, and its
   conditions) is collected. An applicable Deny anywhere wins: explicit deny.
2. Same account (the caller's account owns the resource): an Allow in an identity policy, or
   an Allow in the resource policy naming the caller's own ARN, grants. The account's root
   user is allowed everything in its account.
3. Another account's resource: the caller's side must allow (identity policy, or being its
   account's root) AND the resource policy must allow the caller (by ARN, account id,
   `arn:aws:iam::<account>:root` or `*`).
4. Otherwise: implicit deny (default deny).

Refusals carry AWS's message shape: "User: <arn> is not authorized to perform: <action> on
resource: <arn> because no identity-based policy allows the <action> action" (or "with an
explicit deny in an identity-based policy", "... resource-based policy", "because no
resource-based policy allows the <action> action").
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker import arns
from broker.iam.conditions import ContextValues, conditions_hold, is_known_operator
from broker.iam.wildcards import wildcard_match

POLICY_VERSIONS = ("2012-10-17", "2008-10-17")
# IAM's own bound on a managed policy document (6,144 characters without whitespace is the
# account-level quota; 10,240 the most it can be raised to). Bounds evaluation cost too.
POLICY_DOCUMENT_CHARS_MAX = 10_240
STATEMENTS_MAX = 100

_STATEMENT_MEMBERS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
     "NotResource", "Condition"}
)  # fmt: skip


class PolicyError(ValueError):
    """The document is not a policy AWS would accept; the text says why."""


class Effect(enum.Enum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    sid: str
    effect: Effect
    actions: tuple[str, ...]  # Action patterns, or NotAction's when `not_action`
    not_action: bool
    resources: tuple[str, ...]  # Resource patterns ("*" when absent in a resource policy)
    not_resource: bool
    # Resource policies: who the statement names ({"AWS": [...]} flattened; "*" for anyone).
    principals: tuple[str, ...] | None = None
    not_principal: bool = False
    conditions: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.sid, self.effect, self.actions, self.resources))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    name: str  # the attached policy's name, or "resource policy"
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What is asked: who (`principal_arn`, `principal_account`), what (`action`, e.g.
    `kinesis:PutRecord`), on what (`resource`, an ARN or `*`) and the condition context."""

    principal_arn: str
    principal_account: str
    action: str
    resource: str
    context: ContextValues = field(default_factory=dict)

    @property
    def resource_account(self) -> str | None:
        parts = self.resource.split(":", 5)
        if len(parts) == 6 and parts[4]:
            return parts[4]
        return None  # "*" or an ARN without an account: the caller's own scope

    @property
    def is_root(self) -> bool:
        return self.principal_arn == root_arn(
            self.principal_account, partition=partition_of_principal(self.principal_arn)
        )


class Reason(enum.Enum):
    ROOT = "the account's root user"
    IDENTITY_ALLOW = "allowed by an identity-based policy"
    RESOURCE_ALLOW = "allowed by a resource-based policy"
    CROSS_ACCOUNT_ALLOW = "allowed by an identity-based policy and the resource-based policy"
    IDENTITY_DENY = "with an explicit deny in an identity-based policy"
    RESOURCE_DENY = "with an explicit deny in a resource-based policy"
    NO_IDENTITY_ALLOW = "because no identity-based policy allows the {action} action"
    NO_RESOURCE_ALLOW = "because no resource-based policy allows the {action} action"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    allowed: bool
    reason: Reason
    # The statements that decided: (policy name, Sid) pairs, for `shoal iam simulate`.
    matched: tuple[tuple[str, str], ...] = ()

    def denial_message(self, request: Request) -> str:
        assert not self.allowed
        because = self.reason.value.format(action=request.action)
        return (
            f"User: {request.principal_arn} is not authorized to perform: {request.action} "
            f"on resource: {request.resource} {because}"
        )


def root_arn(account_id: str, *, partition: str = arns.DEFAULT_PARTITION) -> str:
    """The account's root user, in `partition` (IAM is per partition: `aws-cn` accounts'
    principals are `arn:aws-cn:iam::…`)."""
    return arns.global_resource("iam", account_id, "root", partition=partition)


def partition_of_principal(principal_arn: str) -> str:
    parsed = arns.parse(principal_arn)
    return arns.DEFAULT_PARTITION if parsed is None else parsed.partition


# --- Parsing --------------------------------------------------------------------------------


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise PolicyError(f"{what} must be a string or a non-empty list of strings.")


def _principals(value: Any) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or not value:
        raise PolicyError('Principal must be "*" or an object such as {"AWS": [...]}.')
    names: list[str] = []
    for kind, entries in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise PolicyError(f"unknown principal type {kind}.")
        names.extend(_strings(entries, f"Principal.{kind}"))
    return tuple(names)


def _conditions(value: Any) -> dict[str, dict[str, tuple[str, ...]]]:
    if not isinstance(value, dict):
        raise PolicyError("Condition must be an object.")
    block: dict[str, dict[str, tuple[str, ...]]] = {}
    for operator, keys in value.items():
        if not is_known_operator(operator):
            raise PolicyError(f"unknown condition operator {operator}.")
        if not isinstance(keys, dict) or not keys:
            raise PolicyError(f"Condition {operator} must map keys to values.")
        block[operator] = {}
        for key, wanted in keys.items():
            if isinstance(wanted, bool | int | float):
                wanted = json.dumps(wanted)
            if isinstance(wanted, list):
                wanted = [json.dumps(w) if isinstance(w, bool | int | float) else w for w in wanted]
            block[operator][key] = _strings(wanted, f"Condition {operator} {key}")
    return block


def _statement(raw: Any, position: int, *, resource_policy: bool) -> Statement:
    where = f"statement {position}"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} is not an object.")
    unknown = sorted(set(raw) - _STATEMENT_MEMBERS)
    if unknown:
        raise PolicyError(f"{where} has an unknown element {unknown[0]}.")
    try:
        effect = Effect(raw.get("Effect"))
    except ValueError:
        raise PolicyError(f"{where}: Effect must be Allow or Deny.") from None
    if ("Action" in raw) == ("NotAction" in raw):
        raise PolicyError(f"{where} needs exactly one of Action and NotAction.")
    if "Resource" in raw and "NotResource" in raw:
        raise PolicyError(f"{where} has both Resource and NotResource.")
    if not resource_policy and "Resource" not in raw and "NotResource" not in raw:
        raise PolicyError(f"{where} needs a Resource or NotResource.")
    has_principal = "Principal" in raw or "NotPrincipal" in raw
    if resource_policy and ("Principal" in raw) == ("NotPrincipal" in raw):
        raise PolicyError(f"{where} needs exactly one of Principal and NotPrincipal.")
    if not resource_policy and has_principal:
        raise PolicyError(f"{where}: an identity-based policy names no Principal.")
    actions = _strings(raw.get("Action", raw.get("NotAction")), f"{where} Action")
    for action in actions:
        if action != "*" and ":" not in action:
            raise PolicyError(f"{where}: action {action} must be service:Name.")
    resources = _strings(raw.get("Resource", raw.get("NotResource", "*")), f"{where} Resource")
    principals = None
    if resource_policy:
        principals = _principals(raw.get("Principal", raw.get("NotPrincipal")))
    sid = raw.get("Sid", "")
    if not isinstance(sid, str):
        raise PolicyError(f"{where}: Sid must be a string.")
    return Statement(
        sid=sid or f"statement {position}",
        effect=effect,
        actions=actions,
        not_action="NotAction" in raw,
        resources=resources,
        not_resource="NotResource" in raw,
        principals=principals,
        not_principal="NotPrincipal" in raw,
        conditions=_conditions(raw.get("Condition", {})),
    )


def parse_policy(text: str, *, name: str, resource_policy: bool = False) -> Policy:
    """The policy `text` as values; PolicyError (with the reason) when AWS would refuse it."""
    if len(text) > POLICY_DOCUMENT_CHARS_MAX:
        raise PolicyError(f"the policy is longer than {POLICY_DOCUMENT_CHARS_MAX} characters.")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise PolicyError("the policy is not valid JSON.") from None
    if not isinstance(document, dict):
        raise PolicyError("the policy must be a JSON object.")
    unknown = sorted(set(document) - {"Version", "Id", "Statement"})
    if unknown:
        raise PolicyError(f"unknown element {unknown[0]}.")
    if document.get("Version", POLICY_VERSIONS[0]) not in POLICY_VERSIONS:
        raise PolicyError(f"unsupported Version {document.get('Version')!r}.")
    raw_statements = document.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise PolicyError("the policy needs a Statement (an object or a non-empty list).")
    if len(raw_statements) > STATEMENTS_MAX:
        raise PolicyError(f"the policy has more than {STATEMENTS_MAX} statements.")
    statements = tuple(
        _statement(raw, position, resource_policy=resource_policy)
        for position, raw in enumerate(raw_statements, start=1)
    )
    return Policy(name=name, statements=statements)


# --- Evaluation -----------------------------------------------------------------------------


def _action_matches(statement: Statement, action: str) -> bool:
    hit = any(wildcard_match(action, pattern, ignore_case=True) for pattern in statement.actions)
    return hit != statement.not_action


def _resource_matches(statement: Statement, resource: str) -> bool:
    hit = any(wildcard_match(resource, pattern) for pattern in statement.resources)
    return hit != statement.not_resource


def _principal_named(statement: Statement, request: Request) -> tuple[bool, bool]:
    """(does the statement name the caller, does it name them by their own ARN or `*`)."""
    assert statement.principals is not None
    named = by_arn = False
    for entry in statement.principals:
        if entry == "*" or entry == request.principal_arn:
            named = by_arn = True
        elif entry in (
            request.principal_account,
            root_arn(
                request.principal_account,
                partition=partition_of_principal(request.principal_arn),
            ),
        ):
            named = True
    if statement.not_principal:
        return not named, not named
    return named, by_arn


def _applies(statement: Statement, request: Request) -> bool:
    return (
        _action_matches(statement, request.action)
        and _resource_matches(statement, request.resource)
        and conditions_hold(statement.conditions, request.context)
    )


def evaluate(
    request: Request,
    identity_policies: Sequence[Policy],
    resource_policy: Policy | None = None,
) -> Decision:
    """Allow or deny `request`, and why (module docstring)."""
    identity_allows: list[tuple[str, str]] = []
    for policy in identity_policies:
        for statement in policy.statements:
            if not _applies(statement, request):
                continue
            if statement.effect is Effect.DENY:
                return Decision(
                    allowed=False,
                    reason=Reason.IDENTITY_DENY,
                    matched=((policy.name, statement.sid),),
                )
            identity_allows.append((policy.name, statement.sid))
    resource_allows: list[tuple[str, str]] = []
    resource_allows_by_arn = False
    if resource_policy is not None:
        for statement in resource_policy.statements:
            named, by_arn = _principal_named(statement, request)
            if not named or not _applies(statement, request):
                continue
            if statement.effect is Effect.DENY:
                return Decision(
                    allowed=False,
                    reason=Reason.RESOURCE_DENY,
                    matched=((resource_policy.name, statement.sid),),
                )
            resource_allows.append((resource_policy.name, statement.sid))
            resource_allows_by_arn = resource_allows_by_arn or by_arn
    owner = request.resource_account
    same_account = owner is None or owner == request.principal_account
    caller_side = request.is_root or bool(identity_allows)
    if same_account:
        if request.is_root:
            return Decision(allowed=True, reason=Reason.ROOT)
        if identity_allows:
            return Decision(
                allowed=True, reason=Reason.IDENTITY_ALLOW, matched=tuple(identity_allows)
            )
        if resource_allows_by_arn:
            return Decision(
                allowed=True, reason=Reason.RESOURCE_ALLOW, matched=tuple(resource_allows)
            )
        return Decision(allowed=False, reason=Reason.NO_IDENTITY_ALLOW)
    if not caller_side:
        return Decision(allowed=False, reason=Reason.NO_IDENTITY_ALLOW)
    if not resource_allows:
        return Decision(allowed=False, reason=Reason.NO_RESOURCE_ALLOW)
    return Decision(
        allowed=True,
        reason=Reason.CROSS_ACCOUNT_ALLOW,
        matched=(*identity_allows, *resource_allows),
    )
