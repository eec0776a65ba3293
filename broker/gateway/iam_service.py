"""The gRPC IamService (proto/broker/api/iam/v1/iam.proto): principals, access keys,
identity policies and the policy simulator, for `shoal iam ...`.

Thin: check the request, generate what is random (access key ids, secrets, sealing nonces:
commands carry them, so every replica stores the same bytes), propose one metadata command,
answer from the result. A new secret is returned once, by the RPC that made it; it is never
logged. Who may call: `grpc_auth` (the action `shoal:<Rpc>`).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from broker import error_messages
from broker.api.iam.v1 import iam_pb2 as pb
from broker.audit.trail import AuditTrail, EventFilter
from broker.caller import Caller
from broker.clock import Clock
from broker.error_messages import invalid_policy
from broker.errors import ErrorCode, ShoalError
from broker.gateway.grpc_auth import current_identity
from broker.gateway.unary_handlers import unary_service_handler
from broker.iam import identities
from broker.iam.directory import KeyDirectory
from broker.iam.enforcer import Authorizer
from broker.iam.identities import AccessKey, KeyStatus, Principal, PrincipalKind
from broker.iam.policy import PolicyError, Reason, parse_policy
from broker.meta import commands
from broker.meta.image import MetadataImage
from broker.wire.error_mapping import native_rpc

_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["IamService"]
SERVICE_NAME = _DESCRIPTOR.full_name
LOOKUP_RESULTS_MAX = 10_000
_KEY_ID_ALPHABET_BYTES = 10  # 80 random bits: 16 base32 characters after "AKIA"


def new_access_key_id() -> str:
    return "AKIA" + base64.b32encode(secrets.token_bytes(_KEY_ID_ALPHABET_BYTES)).decode()


def new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, as AWS's secret access keys


def principal_message(principal: Principal) -> pb.Principal:
    return pb.Principal(
        arn=principal.arn,
        account_id=principal.account_id,
        kind=principal.kind.value,
        name=principal.name,
        created_ms=principal.created_ms,
        policies=[pb.Policy(name=p.name, document=p.document) for p in principal.policies],
        certificate_subjects=list(principal.certificate_subjects),
    )


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.VALIDATION, message)


class _IamServicer:
    def __init__(
        self,
        *,
        image: Callable[[], MetadataImage],
        propose: Callable[[commands.Command], Awaitable[object]],
        directory: KeyDirectory,
        authorizer: Authorizer,
        clock: Clock,
        region: str,
        trail: AuditTrail | None = None,
    ) -> None:
        self._trail = trail
        self._image = image
        self._propose = propose
        self._directory = directory
        self._authorizer = authorizer
        self._clock = clock
        self._region = region

    def _principal(self, arn: str) -> Principal:
        principal = self._image().iam.principals.get(arn)
        if principal is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.principal_not_found(arn=arn)
            )
        return principal

    def _new_key(self, principal_arn: str) -> tuple[AccessKey, str]:
        key_id, secret = new_access_key_id(), new_secret()
        key = AccessKey(
            access_key_id=key_id,
            principal_arn=principal_arn,
            sealed_secret=self._directory.box.seal(key_id, secret),
            status=KeyStatus.ACTIVE,
            created_ms=self._clock.wall_ms(),
        )
        return key, secret

    async def create_principal(self, request: pb.CreatePrincipalRequest) -> pb.Principal:
        if not identities.ACCOUNT_PATTERN.fullmatch(request.account_id):
            raise _invalid(error_messages.IAM_ACCOUNT_ID_INVALID)
        name = request.name
        if not identities.NAME_PATTERN.fullmatch(name) or len(name) > 64:
            raise _invalid(error_messages.IAM_NAME_INVALID)
        try:
            kind = PrincipalKind(request.kind or "user")
        except ValueError:
            raise _invalid(error_messages.IAM_KIND_INVALID) from None
        principal = Principal(
            arn=identities.principal_arn(request.account_id, kind, name, region=self._region),
            account_id=request.account_id,
            kind=kind,
            name=name,
            created_ms=self._clock.wall_ms(),
            certificate_subjects=tuple(sorted(set(request.certificate_subjects))),
        )
        await self._propose(
            commands.CreatePrincipal(now_ms=principal.created_ms, principal=principal)
        )
        return principal_message(principal)

    async def delete_principal(
        self, request: pb.DeletePrincipalRequest
    ) -> pb.DeletePrincipalResponse:
        await self._propose(commands.DeletePrincipal(now_ms=self._clock.wall_ms(), arn=request.arn))
        return pb.DeletePrincipalResponse()

    async def list_principals(self, request: pb.ListPrincipalsRequest) -> pb.ListPrincipalsResponse:
        table = self._image().iam
        return pb.ListPrincipalsResponse(
            principals=[
                principal_message(table.principals[arn])
                for arn in sorted(table.principals)
                if not request.account_id or table.principals[arn].account_id == request.account_id
            ]
        )

    async def create_access_key(self, request: pb.CreateAccessKeyRequest) -> pb.NewAccessKey:
        self._principal(request.principal_arn)
        key, secret = self._new_key(request.principal_arn)
        await self._propose(commands.CreateAccessKey(now_ms=key.created_ms, key=key))
        return pb.NewAccessKey(
            access_key_id=key.access_key_id,
            secret_access_key=secret,
            principal_arn=key.principal_arn,
        )

    async def rotate_access_key(self, request: pb.RotateAccessKeyRequest) -> pb.NewAccessKey:
        old = self._image().iam.keys.get(request.access_key_id)
        if old is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.access_key_not_found(access_key_id=request.access_key_id),
            )
        key, secret = self._new_key(old.principal_arn)
        await self._propose(
            commands.RotateAccessKey(
                now_ms=key.created_ms, old_access_key_id=old.access_key_id, key=key
            )
        )
        return pb.NewAccessKey(
            access_key_id=key.access_key_id,
            secret_access_key=secret,
            principal_arn=key.principal_arn,
        )

    async def delete_access_key(
        self, request: pb.DeleteAccessKeyRequest
    ) -> pb.DeleteAccessKeyResponse:
        await self._propose(
            commands.DeleteAccessKey(
                now_ms=self._clock.wall_ms(), access_key_id=request.access_key_id
            )
        )
        return pb.DeleteAccessKeyResponse()

    async def update_access_key(self, request: pb.UpdateAccessKeyRequest) -> pb.AccessKey:
        try:
            status = identities.KeyStatus(request.status)
        except ValueError:
            raise ShoalError(
                ErrorCode.VALIDATION,
                error_messages.key_status_not_in_enum(status=request.status),
            ) from None
        await self._propose(
            commands.UpdateAccessKey(
                now_ms=self._clock.wall_ms(), access_key_id=request.access_key_id, status=status
            )
        )
        key = self._image().iam.keys[request.access_key_id]
        return pb.AccessKey(
            access_key_id=key.access_key_id,
            principal_arn=key.principal_arn,
            status=key.status.value,
            created_ms=key.created_ms,
        )

    async def list_access_keys(
        self, request: pb.ListAccessKeysRequest
    ) -> pb.ListAccessKeysResponse:
        table = self._image().iam
        self._principal(request.principal_arn)
        return pb.ListAccessKeysResponse(
            keys=[
                pb.AccessKey(
                    access_key_id=key.access_key_id,
                    principal_arn=key.principal_arn,
                    status=key.status.value,
                    created_ms=key.created_ms,
                )
                for key in table.keys_of(request.principal_arn)
            ]
        )

    async def attach_policy(self, request: pb.AttachPolicyRequest) -> pb.Principal:
        name = request.policy_name
        if (
            not identities.NAME_PATTERN.fullmatch(name)
            or len(name) > identities.POLICY_NAME_CHARS_MAX
        ):
            raise _invalid(error_messages.IAM_POLICY_NAME_INVALID)
        try:
            parse_policy(request.document, name=name)
        except PolicyError as error:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, invalid_policy(str(error))) from None
        self._principal(request.principal_arn)
        await self._propose(
            commands.PutPrincipalPolicy(
                now_ms=self._clock.wall_ms(),
                principal_arn=request.principal_arn,
                policy_name=name,
                document=request.document,
            )
        )
        return principal_message(self._principal(request.principal_arn))

    async def detach_policy(self, request: pb.DetachPolicyRequest) -> pb.Principal:
        await self._propose(
            commands.DeletePrincipalPolicy(
                now_ms=self._clock.wall_ms(),
                principal_arn=request.principal_arn,
                policy_name=request.policy_name,
            )
        )
        return principal_message(self._principal(request.principal_arn))

    async def simulate(self, request: pb.SimulateRequest) -> pb.SimulateResponse:
        identity = self._directory.identity_for_principal(request.principal_arn)
        if identity is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                error_messages.principal_not_found(arn=request.principal_arn),
            )
        if ":" not in request.action:
            raise _invalid(error_messages.IAM_ACTION_INVALID)
        caller = Caller(
            region=self._region,
            account_id=identity.account_id,
            principal_arn=identity.principal_arn,
            source_address=request.source_ip or None,
            door="grpc",
        )
        policy_request, decision = self._authorizer.decide(
            caller, request.action, request.resource or "*"
        )
        if decision.allowed:
            verdict = "allowed"
        elif decision.reason in (Reason.IDENTITY_DENY, Reason.RESOURCE_DENY):
            verdict = "explicitDeny"
        else:
            verdict = "implicitDeny"
        return pb.SimulateResponse(
            allowed=decision.allowed,
            decision=verdict,
            reason=decision.reason.value.format(action=request.action),
            matched_statements=[f"{name}/{sid}" for name, sid in decision.matched],
            message="" if decision.allowed else decision.denial_message(policy_request),
        )

    async def lookup_events(self, request: pb.LookupEventsRequest) -> pb.LookupEventsResponse:
        if self._trail is None:
            return pb.LookupEventsResponse()
        if request.max_results < 0 or request.max_results > LOOKUP_RESULTS_MAX:
            raise _invalid(
                error_messages.iam_max_results_out_of_range(results_max=LOOKUP_RESULTS_MAX)
            )
        await self._trail.wait_written(timeout_s=5)  # what was done before this call
        events = await self._trail.lookup(
            EventFilter(
                start_ms=request.start_ms,
                end_ms=request.end_ms or None,
                principal_arn=request.principal_arn,
                event_name=request.event_name,
                account_id=request.account_id,
                only_errors=request.only_errors,
                limit=request.max_results or 1_000,
            )
        )
        return pb.LookupEventsResponse(events=[json.dumps(event) for event in events])


def _audited(
    name: str, method: Callable[[Any], Awaitable[Message]], trail: AuditTrail | None, region: str
) -> Callable[[Any], Awaitable[Message]]:
    """Every IamService call except the read-only audit lookup is recorded in the trail,
    with the caller `grpc_auth` identified (a request never carries a secret)."""
    if trail is None or name == "LookupEvents":
        return method

    async def audited(request: Message) -> Message:
        who = current_identity.get()
        identity = who.identity if who is not None else None
        caller = Caller(
            region=region,
            account_id=identity.account_id if identity else trail.account_id,
            principal_arn=identity.principal_arn if identity else None,
            access_key_id=who.access_key_id if who is not None else None,
            door="grpc",
        )
        parameters = MessageToDict(request, preserving_proto_field_name=True)
        resource = str(parameters.get("principal_arn") or parameters.get("arn") or "*")
        error: ShoalError | None = None
        try:
            return await method(request)
        except ShoalError as refused:
            error = refused
            raise
        finally:
            trail.call_finished(
                signing_name="iam",
                operation=name,
                request=parameters,
                caller=caller,
                resource=resource,
                error=error,
            )

    return audited


def iam_handler(
    *,
    image: Callable[[], MetadataImage],
    propose: Callable[[commands.Command], Awaitable[object]],
    directory: KeyDirectory,
    authorizer: Authorizer,
    clock: Clock,
    region: str,
    trail: AuditTrail | None = None,
) -> grpc.GenericRpcHandler:
    servicer = _IamServicer(
        image=image,
        propose=propose,
        directory=directory,
        authorizer=authorizer,
        clock=clock,
        region=region,
        trail=trail,
    )
    methods: dict[str, Callable[[Any], Awaitable[Message]]] = {
        "CreatePrincipal": servicer.create_principal,
        "DeletePrincipal": servicer.delete_principal,
        "ListPrincipals": servicer.list_principals,
        "CreateAccessKey": servicer.create_access_key,
        "RotateAccessKey": servicer.rotate_access_key,
        "DeleteAccessKey": servicer.delete_access_key,
        "UpdateAccessKey": servicer.update_access_key,
        "ListAccessKeys": servicer.list_access_keys,
        "AttachPolicy": servicer.attach_policy,
        "DetachPolicy": servicer.detach_policy,
        "Simulate": servicer.simulate,
        "LookupEvents": servicer.lookup_events,
    }
    return unary_service_handler(
        _DESCRIPTOR,
        pb,
        {
            name: native_rpc("iam", name, _audited(name, method, trail, region))
            for name, method in methods.items()
        },
    )
