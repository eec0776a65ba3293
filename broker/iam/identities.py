"""Principals, their access keys and attached policies: metadata values (pure).

A principal is an account id and a user or role name, known by its ARN
(`arn:aws:iam::<account>:user/<name>`, `...:role/<name>`). It holds its identity policies by
name (IAM's inline policies: attach = put a named document, detach = delete it) and the client
certificate subjects mapped to it (the gRPC door's mutual TLS). An access key belongs to one
principal; its secret is stored sealed with the cluster's IAM key (`sealing.py`), so neither
the Raft log, the snapshots nor a metadata digest hold it in the clear. Changed only by the
IAM commands (`broker/meta/transitions/iam.py`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field

from broker import arns

# IAM's own limits: 2 access keys per user, 64-character user names, 128-character policy
# names; 10 inline policies per principal keeps the per-request evaluation bounded.
ACCESS_KEYS_PER_PRINCIPAL_MAX = 2
PRINCIPAL_NAME_CHARS_MAX = 64
POLICY_NAME_CHARS_MAX = 128
POLICIES_PER_PRINCIPAL_MAX = 10
PRINCIPALS_MAX = 5_000  # IAM's default users-per-account quota, cluster-wide here
NAME_PATTERN = re.compile(r"[\w+=,.@-]+")
ACCOUNT_PATTERN = re.compile(r"[0-9]{12}")


class PrincipalKind(enum.Enum):
    USER = "user"
    ROLE = "role"


class KeyStatus(enum.Enum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachedPolicy:
    name: str
    document: str  # the JSON text as given (checked by `policy.parse_policy` before storing)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    arn: str
    account_id: str
    kind: PrincipalKind
    name: str
    created_ms: int
    policies: tuple[AttachedPolicy, ...] = ()  # sorted by name
    certificate_subjects: tuple[str, ...] = ()  # client-certificate common names

    def policy(self, name: str) -> AttachedPolicy | None:
        return next((p for p in self.policies if p.name == name), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessKey:
    access_key_id: str
    principal_arn: str
    sealed_secret: bytes  # nonce + AES-256-GCM ciphertext (`sealing.SecretBox.seal`)
    status: KeyStatus
    created_ms: int


def principal_arn(account_id: str, kind: PrincipalKind, name: str, *, region: str) -> str:
    """A user's or role's ARN, in the partition of the node's region."""
    return arns.global_resource(
        "iam", account_id, f"{kind.value}/{name}", partition=arns.partition_of(region)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IamTable:
    """Every principal of every account (by ARN) and every access key (by id)."""

    principals: dict[str, Principal] = field(default_factory=dict)
    keys: dict[str, AccessKey] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict fields: identity is enough, tables are never keys
        return id(self)

    def keys_of(self, arn: str) -> list[AccessKey]:
        return sorted(
            (key for key in self.keys.values() if key.principal_arn == arn),
            key=lambda key: key.access_key_id,
        )

    def by_certificate_subject(self, subject: str) -> Principal | None:
        for arn in sorted(self.principals):
            if subject in self.principals[arn].certificate_subjects:
                return self.principals[arn]
        return None

    def with_principal(self, principal: Principal) -> IamTable:
        principals = dict(self.principals)
        principals[principal.arn] = principal
        return dataclasses.replace(self, principals=principals)

    def without_principal(self, arn: str) -> IamTable:
        principals = {k: v for k, v in self.principals.items() if k != arn}
        keys = {k: v for k, v in self.keys.items() if v.principal_arn != arn}
        return IamTable(principals=principals, keys=keys)

    def with_key(self, key: AccessKey) -> IamTable:
        keys = dict(self.keys)
        keys[key.access_key_id] = key
        return dataclasses.replace(self, keys=keys)

    def without_key(self, access_key_id: str) -> IamTable:
        keys = {k: v for k, v in self.keys.items() if k != access_key_id}
        return dataclasses.replace(self, keys=keys)
