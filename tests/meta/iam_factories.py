"""One of each IAM command (issue 15), for the codec and state-machine tests."""

from __future__ import annotations

from broker.iam.identities import (
    AccessKey,
    KeyStatus,
    Principal,
    PrincipalKind,
    principal_arn,
)
from broker.meta.commands import (
    Command,
    CreateAccessKey,
    CreatePrincipal,
    DeleteAccessKey,
    DeletePrincipal,
    DeletePrincipalPolicy,
    PutPrincipalPolicy,
    ResealAccessKeys,
    RotateAccessKey,
    UpdateAccessKey,
)

ALICE = principal_arn("111122223333", PrincipalKind.USER, "alice", region="us-east-1")
POLICY = '{"Statement": {"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}}'


def access_key(key_id: str, *, now_ms: int) -> AccessKey:
    return AccessKey(
        access_key_id=key_id,
        principal_arn=ALICE,
        sealed_secret=b"\x00" * 12 + b"sealed-" + key_id.encode(),
        status=KeyStatus.ACTIVE,
        created_ms=now_ms,
    )


def every_iam_command(*, now_ms: int) -> list[Command]:
    """In an order that applies cleanly to an image without principals."""
    return [
        CreatePrincipal(
            now_ms=now_ms,
            principal=Principal(
                arn=ALICE,
                account_id="111122223333",
                kind=PrincipalKind.USER,
                name="alice",
                created_ms=now_ms,
                certificate_subjects=("alice.example.com",),
            ),
        ),
        CreateAccessKey(now_ms=now_ms, key=access_key("AKIAONE", now_ms=now_ms)),
        UpdateAccessKey(now_ms=now_ms, access_key_id="AKIAONE", status=KeyStatus.INACTIVE),
        RotateAccessKey(
            now_ms=now_ms, old_access_key_id="AKIAONE", key=access_key("AKIATWO", now_ms=now_ms)
        ),
        PutPrincipalPolicy(
            now_ms=now_ms, principal_arn=ALICE, policy_name="streams", document=POLICY
        ),
        ResealAccessKeys(now_ms=now_ms, resealed=(("AKIATWO", b"resealed"), ("AKIAGONE", b"x"))),
        DeletePrincipalPolicy(now_ms=now_ms, principal_arn=ALICE, policy_name="streams"),
        DeleteAccessKey(now_ms=now_ms, access_key_id="AKIATWO"),
        DeletePrincipal(now_ms=now_ms, arn=ALICE),
    ]
