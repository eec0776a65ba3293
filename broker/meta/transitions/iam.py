"""Principals, access keys and identity policies: the IAM commands' rules (pure).

Preconditions are checked at apply time, as for every transition: two racing CreatePrincipal
calls for one name both pass the admin service's early check, and exactly one wins here. The
errors are AWS IAM's: EntityAlreadyExists and NoSuchEntity become ResourceInUseException and
ResourceNotFoundException (the Kinesis names every client of this node already handles),
LimitExceeded stays LimitExceededException.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.iam import identities
from broker.iam.identities import AccessKey, AttachedPolicy, IamTable, Principal
from broker.meta.commands import (
    CreateAccessKey,
    CreatePrincipal,
    DeleteAccessKey,
    DeletePrincipal,
    DeletePrincipalPolicy,
    IamCommand,
    PutPrincipalPolicy,
    ResealAccessKeys,
    RotateAccessKey,
    UpdateAccessKey,
)
from broker.meta.image import MetadataImage


def _principal(table: IamTable, arn: str) -> Principal:
    principal = table.principals.get(arn)
    if principal is None:
        raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.principal_not_found(arn=arn))
    return principal


def _key(table: IamTable, access_key_id: str) -> AccessKey:
    key = table.keys.get(access_key_id)
    if key is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.access_key_not_found(access_key_id=access_key_id),
        )
    return key


def _add_key(table: IamTable, key: AccessKey) -> IamTable:
    _principal(table, key.principal_arn)
    assert key.access_key_id not in table.keys, key.access_key_id  # ids are random, 80 bits
    if len(table.keys_of(key.principal_arn)) >= identities.ACCESS_KEYS_PER_PRINCIPAL_MAX:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.iam_quota_exceeded(
                quota="AccessKeysPerUser", maximum=identities.ACCESS_KEYS_PER_PRINCIPAL_MAX
            ),
        )
    return table.with_key(key)


def _create_principal(table: IamTable, command: CreatePrincipal) -> IamTable:
    principal = command.principal
    if principal.arn in table.principals:
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE, error_messages.iam_principal_exists(arn=principal.arn)
        )
    if len(table.principals) >= identities.PRINCIPALS_MAX:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.iam_quota_exceeded(
                quota="UsersPerAccount", maximum=identities.PRINCIPALS_MAX
            ),
        )
    for subject in principal.certificate_subjects:
        owner = table.by_certificate_subject(subject)
        if owner is not None:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.iam_certificate_subject_mapped(subject=subject, arn=owner.arn),
            )
    return table.with_principal(principal)


def _put_policy(table: IamTable, command: PutPrincipalPolicy) -> IamTable:
    principal = _principal(table, command.principal_arn)
    others = tuple(p for p in principal.policies if p.name != command.policy_name)
    if len(others) >= identities.POLICIES_PER_PRINCIPAL_MAX:
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.iam_quota_exceeded(
                quota="PoliciesPerUser", maximum=identities.POLICIES_PER_PRINCIPAL_MAX
            ),
        )
    attached = AttachedPolicy(name=command.policy_name, document=command.document)
    policies = tuple(sorted((*others, attached), key=lambda p: p.name))
    return table.with_principal(dataclasses.replace(principal, policies=policies))


def _delete_policy(table: IamTable, command: DeletePrincipalPolicy) -> IamTable:
    principal = _principal(table, command.principal_arn)
    if principal.policy(command.policy_name) is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.iam_policy_not_found(policy_name=command.policy_name, arn=principal.arn),
        )
    policies = tuple(p for p in principal.policies if p.name != command.policy_name)
    return table.with_principal(dataclasses.replace(principal, policies=policies))


def _next_table(table: IamTable, command: IamCommand) -> tuple[IamTable, object]:
    match command:
        case CreatePrincipal():
            return _create_principal(table, command), command.principal
        case DeletePrincipal():
            _principal(table, command.arn)
            return table.without_principal(command.arn), None
        case CreateAccessKey():
            return _add_key(table, command.key), command.key.access_key_id
        case UpdateAccessKey():
            key = _key(table, command.access_key_id)
            return table.with_key(dataclasses.replace(key, status=command.status)), None
        case DeleteAccessKey():
            _key(table, command.access_key_id)
            return table.without_key(command.access_key_id), None
        case RotateAccessKey():
            old = _key(table, command.old_access_key_id)
            if old.principal_arn != command.key.principal_arn:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    error_messages.iam_key_of_another_principal(access_key_id=old.access_key_id),
                )
            rotated = _add_key(table.without_key(old.access_key_id), command.key)
            return rotated, command.key.access_key_id
        case ResealAccessKeys():
            replaced = 0
            for access_key_id, sealed in command.resealed:
                present = table.keys.get(access_key_id)
                if present is not None:  # deleted or rotated meanwhile: nothing to re-seal
                    table = table.with_key(dataclasses.replace(present, sealed_secret=sealed))
                    replaced += 1
            return table, replaced
        case PutPrincipalPolicy():
            return _put_policy(table, command), None
        case DeletePrincipalPolicy():
            return _delete_policy(table, command), None


def apply_iam(image: MetadataImage, command: IamCommand) -> tuple[MetadataImage, object]:
    table, result = _next_table(image.iam, command)
    return dataclasses.replace(image, iam=table), result
