"""The policy evaluator (broker/iam/policy.py, conditions.py): AWS's evaluation logic as
values, no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.iam.policy import (
    Decision,
    Policy,
    PolicyError,
    Reason,
    Request,
    evaluate,
    parse_policy,
    root_arn,
)

A = "111122223333"
B = "444455556666"
ALICE = f"arn:aws:iam::{A}:user/alice"
BOB = f"arn:aws:iam::{B}:user/bob"
STREAM_A = f"arn:aws:kinesis:us-east-1:{A}:stream/orders"


def identity(*statements: dict[str, Any], name: str = "p") -> Policy:
    return parse_policy(
        json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), name=name
    )


def resource(*statements: dict[str, Any]) -> Policy:
    text = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    return parse_policy(text, name="resource policy", resource_policy=True)


def ask(
    action: str = "kinesis:PutRecord",
    resource_arn: str = STREAM_A,
    principal: str = ALICE,
    account: str = A,
    **context: str,
) -> Request:
    return Request(
        principal_arn=principal,
        principal_account=account,
        action=action,
        resource=resource_arn,
        context={key.lower(): (value,) for key, value in context.items()},
    )


def allow(action: Any = "kinesis:*", res: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": res, **extra}


def deny(action: Any = "kinesis:*", res: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": res, **extra}


def test_default_deny_with_aws_message() -> None:
    request = ask()
    decision = evaluate(request, [])
    assert not decision.allowed
    assert decision.denial_message(request) == (
        f"User: {ALICE} is not authorized to perform: kinesis:PutRecord on resource: "
        f"{STREAM_A} because no identity-based policy allows the kinesis:PutRecord action"
    )


def test_allow_by_action_wildcards_case_insensitive() -> None:
    assert evaluate(ask(), [identity(allow("kinesis:Put*"))]).allowed
    assert evaluate(ask(), [identity(allow("KINESIS:putrecord"))]).allowed
    assert evaluate(ask(), [identity(allow("kinesis:PutRecor?"))]).allowed
    assert not evaluate(ask(), [identity(allow("kinesis:Get*"))]).allowed
    assert not evaluate(ask(), [identity(allow("firehose:*"))]).allowed


def test_not_action_and_not_resource() -> None:
    assert evaluate(
        ask(), [identity({"Effect": "Allow", "NotAction": "kinesis:Delete*", "Resource": "*"})]
    ).allowed
    assert not evaluate(
        ask("kinesis:DeleteStream"),
        [identity({"Effect": "Allow", "NotAction": "kinesis:Delete*", "Resource": "*"})],
    ).allowed
    other = f"arn:aws:kinesis:us-east-1:{A}:stream/secret"
    policy = identity({"Effect": "Allow", "Action": "kinesis:*", "NotResource": other})
    assert evaluate(ask(), [policy]).allowed
    assert not evaluate(ask(resource_arn=other), [policy]).allowed


def test_resource_wildcards() -> None:
    policy = identity(allow(res=f"arn:aws:kinesis:*:{A}:stream/ord*"))
    assert evaluate(ask(), [policy]).allowed
    assert not evaluate(
        ask(resource_arn=f"arn:aws:kinesis:us-east-1:{A}:stream/x"), [policy]
    ).allowed


def test_explicit_deny_wins_over_allow() -> None:
    request = ask()
    decision = evaluate(request, [identity(allow()), identity(deny("kinesis:PutRecord"), name="d")])
    assert decision == Decision(
        allowed=False, reason=Reason.IDENTITY_DENY, matched=(("d", "statement 1"),)
    )
    assert decision.denial_message(request).endswith(
        "with an explicit deny in an identity-based policy"
    )


def test_root_allowed_in_own_account_only() -> None:
    root = root_arn(A)
    assert evaluate(ask(principal=root), []).allowed
    b_root = root_arn(B)
    assert not evaluate(ask(principal=b_root, account=B), []).allowed
    # A root of another partition is that partition's root (IAM is per partition).
    china_root = root_arn(A, partition="aws-cn")
    assert china_root == f"arn:aws-cn:iam::{A}:root"
    assert evaluate(ask(principal=china_root), []).allowed


def test_a_resource_policy_names_roots_in_their_own_partition() -> None:
    china_bob = f"arn:aws-cn:iam::{B}:user/bob"
    request = ask(principal=china_bob, account=B)
    bob_allows = identity(allow())

    def granted_to(principal: str) -> bool:
        grant = resource(
            {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "kinesis:*"}
        )
        return evaluate(request, [bob_allows], grant).allowed

    assert granted_to(f"arn:aws-cn:iam::{B}:root")
    assert not granted_to(f"arn:aws:iam::{B}:root")


@pytest.mark.parametrize(
    ("operator", "key", "wanted", "value", "expected"),
    [
        ("StringEquals", "aws:PrincipalAccount", A, A, True),
        ("StringEquals", "aws:PrincipalAccount", B, A, False),
        ("StringNotEquals", "aws:PrincipalAccount", B, A, True),
        ("StringLike", "aws:username", "al*", "alice", True),
        ("StringNotLike", "aws:username", "al*", "alice", False),
        ("StringEqualsIgnoreCase", "aws:username", "ALICE", "alice", True),
        ("ArnLike", "aws:PrincipalArn", f"arn:aws:iam::{A}:user/*", ALICE, True),
        ("ArnNotLike", "aws:PrincipalArn", f"arn:aws:iam::{B}:*", ALICE, True),
        ("IpAddress", "aws:SourceIp", "10.0.0.0/8", "10.1.2.3", True),
        ("IpAddress", "aws:SourceIp", "10.0.0.0/8", "192.168.0.1", False),
        ("NotIpAddress", "aws:SourceIp", "10.0.0.0/8", "192.168.0.1", True),
        ("Bool", "aws:SecureTransport", "true", "true", True),
        ("Bool", "aws:SecureTransport", "true", "false", False),
        ("DateLessThan", "aws:CurrentTime", "2030-01-01T00:00:00Z", "2026-01-01T00:00:00Z", True),
        (
            "DateGreaterThan",
            "aws:CurrentTime",
            "2030-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            False,
        ),
        ("NumericLessThan", "aws:EpochTime", "100", "99", True),
    ],
)
def test_condition_operators(
    operator: str, key: str, wanted: str, value: str, expected: bool
) -> None:
    policy = identity(allow(Condition={operator: {key: wanted}}))
    assert evaluate(ask(**{key: value}), [policy]).allowed is expected


def test_missing_keys_positive_false_negated_true_if_exists_true() -> None:
    assert not evaluate(
        ask(), [identity(allow(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))]
    ).allowed
    assert evaluate(
        ask(), [identity(allow(Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))]
    ).allowed
    assert evaluate(
        ask(), [identity(allow(Condition={"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}))]
    ).allowed
    assert evaluate(ask(), [identity(allow(Condition={"Null": {"aws:SourceIp": "true"}}))]).allowed


def test_condition_values_or_keys_and() -> None:
    policy = identity(
        allow(
            Condition={
                "StringEquals": {"aws:PrincipalAccount": [B, A], "aws:username": "alice"},
                "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "127.0.0.1/32"]},
            }
        )
    )
    assert evaluate(
        ask(**{"aws:PrincipalAccount": A, "aws:username": "alice", "aws:SourceIp": "127.0.0.1"}),
        [policy],
    ).allowed
    assert not evaluate(
        ask(**{"aws:PrincipalAccount": A, "aws:username": "bob", "aws:SourceIp": "127.0.0.1"}),
        [policy],
    ).allowed


def test_deny_with_condition_applies_only_when_it_holds() -> None:
    policies = [
        identity(allow()),
        identity(deny(Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), name="net"),
    ]
    assert evaluate(ask(**{"aws:SourceIp": "10.0.0.1"}), policies).allowed
    assert not evaluate(ask(**{"aws:SourceIp": "8.8.8.8"}), policies).allowed


def test_cross_account_needs_both_sides() -> None:
    bob_allows = identity(allow())
    request = ask(principal=BOB, account=B)
    denied = evaluate(request, [bob_allows])
    assert denied.reason is Reason.NO_RESOURCE_ALLOW
    assert denied.denial_message(request).endswith(
        "because no resource-based policy allows the kinesis:PutRecord action"
    )
    grant = resource(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
            "Action": "kinesis:PutRecord",
            "Resource": STREAM_A,
        }
    )
    assert evaluate(request, [bob_allows], grant).allowed
    # The resource policy alone does not do: bob's own account must allow him too.
    assert evaluate(request, [], grant).reason is Reason.NO_IDENTITY_ALLOW
    by_account_id = resource({"Effect": "Allow", "Principal": {"AWS": B}, "Action": "kinesis:*"})
    assert evaluate(request, [bob_allows], by_account_id).allowed
    other = resource({"Effect": "Allow", "Principal": {"AWS": A}, "Action": "kinesis:*"})
    assert not evaluate(request, [bob_allows], other).allowed


def test_resource_policy_deny_and_same_account_grant_by_arn() -> None:
    request = ask()
    refusal = resource({"Effect": "Deny", "Principal": "*", "Action": "kinesis:PutRecord"})
    decision = evaluate(request, [identity(allow())], refusal)
    assert decision.reason is Reason.RESOURCE_DENY
    grant = resource(
        {"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kinesis:PutRecord"}
    )
    assert evaluate(request, [], grant).allowed
    # Naming the account (not alice) delegates to the account's identity policies.
    account_grant = resource({"Effect": "Allow", "Principal": {"AWS": A}, "Action": "kinesis:*"})
    assert not evaluate(request, [], account_grant).allowed


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        '{"Statement": []}',
        '{"Version": "2020-01-01", '
        '"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}',
        '{"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}',
        '{"Statement": {"Effect": "Allow", "Resource": "*"}}',
        '{"Statement": {"Effect": "Allow", "Action": "*"}}',
        '{"Statement": {"Effect": "Allow", "Action": "PutRecord", "Resource": "*"}}',
        '{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}}',
        '{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", '
        '"Condition": {"Sometimes": {"a": "b"}}}}',
    ],
)
def test_refused_documents(document: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(document, name="p")
