"""Resource policy documents (PutResourcePolicy): is this text an IAM policy document AWS
would attach to a stream or consumer?

The checks are the grammar of IAM's policy language for resource-based policies: a JSON
object with an optional `Version` (2012-10-17 or 2008-10-17), an optional `Id`, and a
`Statement` (one object or a non-empty list of them); every statement has an `Effect` of
Allow or Deny, exactly one of `Principal`/`NotPrincipal` (resource policies name who they
grant), exactly one of `Action`/`NotAction` with Kinesis actions (`kinesis:<Name>`, wildcards
allowed, or `*`), at most one of `Resource`/`NotResource`, and optionally `Sid` and
`Condition`. The document is stored and returned exactly as given; nothing here enforces it
(enforcement belongs to the access-control issue). Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from broker import limits
from broker.error_messages import invalid_policy
from broker.errors import ErrorCode, ShoalError

POLICY_VERSIONS = ("2012-10-17", "2008-10-17")
_STATEMENT_MEMBERS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_DOCUMENT_MEMBERS = frozenset({"Version", "Id", "Statement"})
_KINESIS_ACTION = re.compile(r"kinesis:[A-Za-z*?]+|\*")


def _refuse(reason: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, invalid_policy(reason))


def check_policy_document(text: str) -> None:
    """Raise InvalidArgumentException when `text` is not a resource policy document."""
    if len(text.encode()) > limits.resource_policy_bytes_max:
        raise _refuse(f"the policy is larger than {limits.resource_policy_bytes_max} bytes.")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise _refuse("the policy is not valid JSON.") from None
    if not isinstance(document, dict):
        raise _refuse("the policy must be a JSON object.")
    unknown = sorted(set(document) - _DOCUMENT_MEMBERS)
    if unknown:
        raise _refuse(f"unknown element {unknown[0]}.")
    version = document.get("Version")
    if version is not None and version not in POLICY_VERSIONS:
        raise _refuse(f"unsupported Version {version!r}.")
    if "Id" in document and not isinstance(document["Id"], str):
        raise _refuse("Id must be a string.")
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise _refuse("the policy needs a Statement (an object or a non-empty list).")
    for position, statement in enumerate(statements, start=1):
        _check_statement(statement, position)


def _check_statement(statement: Any, position: int) -> None:
    where = f"statement {position}"
    if not isinstance(statement, Mapping):
        raise _refuse(f"{where} is not an object.")
    unknown = sorted(set(statement) - _STATEMENT_MEMBERS)
    if unknown:
        raise _refuse(f"{where} has an unknown element {unknown[0]}.")
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise _refuse(f"{where} needs an Effect of Allow or Deny.")
    if ("Principal" in statement) == ("NotPrincipal" in statement):
        raise _refuse(f"{where} needs exactly one of Principal and NotPrincipal.")
    principal = statement.get("Principal", statement.get("NotPrincipal"))
    if principal != "*" and not (isinstance(principal, Mapping) and principal):
        raise _refuse(f"{where} has a malformed Principal.")
    if ("Action" in statement) == ("NotAction" in statement):
        raise _refuse(f"{where} needs exactly one of Action and NotAction.")
    actions = statement.get("Action", statement.get("NotAction"))
    for action in _strings(actions, where, "Action"):
        if _KINESIS_ACTION.fullmatch(action) is None:
            raise _refuse(f"{where} has an action that is not a Kinesis action: {action}.")
    if "Resource" in statement and "NotResource" in statement:
        raise _refuse(f"{where} has both Resource and NotResource.")
    resources = statement.get("Resource", statement.get("NotResource"))
    if resources is not None:
        _strings(resources, where, "Resource")
    condition = statement.get("Condition")
    if condition is not None and not isinstance(condition, Mapping):
        raise _refuse(f"{where} has a malformed Condition.")


def _strings(value: Any, where: str, element: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise _refuse(f"{where} has a malformed {element} (a string or a list of strings).")
    return items
