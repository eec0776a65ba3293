"""Who a credential is: access key id or certificate subject -> principal, secret, policies.

Two sources, looked up in this order:
- the configured static keys (`Config.access_keys`): the bootstrap administrators, each the
  root user of the node's account (`arn:aws:iam::<account>:root`, allowed everything in it);
- the principals and keys in the metadata image (`IamTable`), whose secrets are opened with
  the cluster's IAM key. An Inactive key authenticates nobody (AWS's InvalidClientTokenId).

Lifecycle: one per node, built by `node.py`; `iam_table` returns the latest applied table, so
a change applied by the quorum is seen by the next request on this node. Opened secrets and
parsed policies are cached per table object (an image changes its table only when an IAM
command applies), bounded by the table's size. Loop-bound, not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from broker import arns
from broker.iam.identities import IamTable, KeyStatus, Principal
from broker.iam.policy import Policy, PolicyError, parse_policy, root_arn
from broker.iam.sealing import SecretBox


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """An authenticated caller: its principal, account and identity policies."""

    principal_arn: str
    account_id: str
    policies: tuple[Policy, ...] = ()


class KeyDirectory:
    def __init__(
        self,
        *,
        static_keys: Mapping[str, str],
        account_id: str,
        region: str,
        box: SecretBox,
        iam_table: Callable[[], IamTable],
    ) -> None:
        self._static = dict(static_keys)
        self.account_id = account_id  # the node's account (its root holds the static keys)
        root = root_arn(account_id, partition=arns.partition_of(region))
        self._root = Identity(principal_arn=root, account_id=account_id)
        self._box = box
        self._iam_table = iam_table
        self._cached_table: IamTable | None = None
        self._secrets: dict[str, str | None] = {}
        self._identities: dict[str, Identity] = {}

    @property
    def box(self) -> SecretBox:
        return self._box

    def _table(self) -> IamTable:
        table = self._iam_table()
        if table is not self._cached_table:
            self._cached_table = table
            self._secrets = {}
            self._identities = {}
        return table

    def secret(self, access_key_id: str) -> str | None:
        """The secret a SigV4 signature must be made with; None for an unknown or inactive
        key (the verifier's UnrecognizedClientException)."""
        static = self._static.get(access_key_id)
        if static is not None:
            return static
        table = self._table()
        if access_key_id in self._secrets:
            return self._secrets[access_key_id]
        key = table.keys.get(access_key_id)
        secret = None
        if key is not None and key.status is KeyStatus.ACTIVE:
            secret = self._box.open(access_key_id, key.sealed_secret)
        self._secrets[access_key_id] = secret
        return secret

    def identity_for_key(self, access_key_id: str) -> Identity | None:
        if access_key_id in self._static:
            return self._root
        key = self._table().keys.get(access_key_id)
        if key is None or key.status is not KeyStatus.ACTIVE:
            return None
        return self.identity_for_principal(key.principal_arn)

    def identity_for_certificate(self, subject: str) -> Identity | None:
        principal = self._table().by_certificate_subject(subject)
        return None if principal is None else self.identity_for_principal(principal.arn)

    def identity_for_principal(self, arn: str) -> Identity | None:
        if arn == self._root.principal_arn:
            return self._root
        table = self._table()
        cached = self._identities.get(arn)
        if cached is not None:
            return cached
        principal = table.principals.get(arn)
        if principal is None:
            return None
        identity = Identity(
            principal_arn=principal.arn,
            account_id=principal.account_id,
            policies=_parsed_policies(principal),
        )
        self._identities[arn] = identity
        return identity


def _parsed_policies(principal: Principal) -> tuple[Policy, ...]:
    """The principal's policies as values. Documents are checked before they are stored, so a
    failure here means a newer node stored what this one cannot read: such a policy becomes a
    Deny of everything, never silently dropped (a Deny this node cannot read must not be lost)."""
    parsed = []
    for attached in principal.policies:
        try:
            parsed.append(parse_policy(attached.document, name=attached.name))
        except PolicyError:
            parsed.append(_DENY_ALL)
    return tuple(parsed)


_DENY_ALL = parse_policy(
    '{"Statement": {"Sid": "unreadable policy", "Effect": "Deny", "Action": "*", "Resource": "*"}}',
    name="unreadable policy",
)
