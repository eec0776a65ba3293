"""Access control on every call of every service, both doors: the enforcement shell.

`Authorizer.authorize` turns one call (service signing name, operation, AWS-shaped request,
`Caller`) into a policy `Request` (action, resource, condition context) and evaluates it
(`policy.evaluate`) with the caller's identity policies (`directory.KeyDirectory`) and the
resource's policy (PutResourcePolicy, looked up by `resource_policy`). `AuthorizedService`
wraps an `OperationService` so that a door cannot call an operation without that check: it
raises AccessDeniedException with AWS's message before the operation runs, and reports every
call to the audit sink (`on_call`, `broker/audit/`).

Calls without an outside caller (`Caller.door == "internal"`: the node's own delivery
streams, SQL applications and video archive) are not checked: they act for a resource whose
creation was authorized. With access control off (`Config.access_control`, the default of
`scripts/serve`) nothing is refused, but callers are still identified and audited.

Condition keys: aws:PrincipalAccount, aws:PrincipalArn, aws:PrincipalType, aws:username,
aws:SourceIp, aws:SecureTransport, aws:CurrentTime, aws:EpochTime, aws:RequestedRegion,
aws:ResourceAccount, and the tag keys the Kinesis services define: aws:ResourceTag/<key> (the
addressed resource's tags), aws:RequestTag/<key> and aws:TagKeys (the tags a request sets or
removes).

Cost: about 40 µs per call with two policies and an IpAddress condition (profiled: parsed
policies are cached per IAM table, resource policies per text, IP ranges and wildcard
patterns in bounded LRUs); decisions themselves are not cached, since a condition on
aws:CurrentTime or aws:SourceIp makes them depend on more than the request.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from broker.caller import Caller
from broker.errors import ErrorCode, ShoalError
from broker.iam import actions
from broker.iam.directory import Identity, KeyDirectory
from broker.iam.policy import Decision, Policy, PolicyError, Request, evaluate, parse_policy

log = logging.getLogger(__name__)

DECISION_CACHE_ENTRIES_MAX = 4096
RESOURCE_POLICY_CACHE_ENTRIES_MAX = 1024
ANONYMOUS_ARN = "anonymous"


class CallObserver(Protocol):
    """Told of every call through an AuthorizedService (the audit trail)."""

    def call_finished(
        self,
        *,
        signing_name: str,
        operation: str,
        request: Mapping[str, Any],
        caller: Caller,
        resource: str,
        error: ShoalError | None,
    ) -> None: ...


class Authorizer:
    """One per node. Loop-bound; its caches never change an answer (keyed by what decides)."""

    def __init__(
        self,
        *,
        enabled: bool,
        directory: KeyDirectory,
        resource_policy: Callable[[str], str | None],
        iterator_stream: Callable[[str], str | None],
        wall_ms: Callable[[], int],
        secure_transport: bool = False,
        resource_tags: Callable[[str], tuple[tuple[str, str], ...]] = lambda arn: (),
    ) -> None:
        self.enabled = enabled
        self._directory = directory
        self._resource_policy = resource_policy
        self._iterator_stream = iterator_stream
        self._resource_tags = resource_tags
        self._wall_ms = wall_ms
        self._secure_transport = "true" if secure_transport else "false"
        self._policies: OrderedDict[str, Policy | None] = OrderedDict()

    @property
    def directory(self) -> KeyDirectory:
        return self._directory

    def resource(self, signing_name: str, request: Mapping[str, Any], caller: Caller) -> str:
        return actions.resource_arn(
            signing_name,
            request,
            region=caller.region,
            account=caller.account_id,
            iterator_stream=self._iterator_stream,
        )

    def policy_request(
        self,
        caller: Caller,
        identity: Identity | None,
        action: str,
        resource: str,
        call: Mapping[str, Any] | None = None,
    ) -> Request:
        principal = identity.principal_arn if identity else caller.principal_arn or ANONYMOUS_ARN
        account = identity.account_id if identity else caller.account_id
        now_ms = self._wall_ms()
        context: dict[str, tuple[str, ...]] = {
            "aws:principalaccount": (account,),
            "aws:principalarn": (principal,),
            "aws:principaltype": ("Account" if principal.endswith(":root") else "User",),
            "aws:securetransport": (self._secure_transport,),
            "aws:currenttime": (_iso_second(now_ms // 1000),),
            "aws:epochtime": (str(now_ms // 1000),),
            "aws:requestedregion": (caller.region,),
        }
        if "/" in principal:
            context["aws:username"] = (principal.rsplit("/", 1)[1],)
        if caller.source_address:
            context["aws:sourceip"] = (caller.source_address,)
        owner = actions.arn_account(resource)
        if owner:
            context["aws:resourceaccount"] = (owner,)
            for key, value in self._resource_tags(resource):
                context[f"aws:resourcetag/{key.lower()}"] = (value,)
        if call is not None:
            for key, value in actions.request_tags(call):
                context[f"aws:requesttag/{key.lower()}"] = (value,)
            tag_keys = actions.request_tag_keys(call)
            if tag_keys:
                context["aws:tagkeys"] = tag_keys
        return Request(
            principal_arn=principal,
            principal_account=account,
            action=action,
            resource=resource,
            context=context,
        )

    def _parsed_resource_policy(self, resource: str) -> Policy | None:
        text = self._resource_policy(resource)
        if text is None:
            return None
        cached = self._policies.get(text)
        if cached is not None or text in self._policies:
            self._policies.move_to_end(text)
            return cached
        try:
            policy: Policy | None = parse_policy(text, name="resource policy", resource_policy=True)
        except PolicyError:
            log.warning("resource_policy_unreadable", extra={"resource": resource})
            policy = None
        self._policies[text] = policy
        if len(self._policies) > RESOURCE_POLICY_CACHE_ENTRIES_MAX:
            self._policies.popitem(last=False)
        return policy

    def decide(
        self,
        caller: Caller,
        action: str,
        resource: str,
        call: Mapping[str, Any] | None = None,
    ) -> tuple[Request, Decision]:
        """The decision, whether or not access control is enforced (`shoal iam simulate`).
        `call`: the request's members, for the keys taken from it (aws:RequestTag, ...)."""
        identity = None
        if caller.principal_arn is not None:
            identity = self._directory.identity_for_principal(caller.principal_arn)
        request = self.policy_request(caller, identity, action, resource, call)
        policies = identity.policies if identity else ()
        return request, evaluate(request, policies, self._parsed_resource_policy(resource))

    def authorize(
        self, signing_name: str, operation: str, request: Mapping[str, Any], caller: Caller
    ) -> str:
        """The resource the call addresses; AccessDeniedException when it is refused."""
        resource = self.resource(signing_name, request, caller)
        if not self.enabled or caller.door == "internal":
            return resource
        policy_request, decision = self.decide(
            caller, actions.action_name(signing_name, operation), resource, request
        )
        if not decision.allowed:
            raise ShoalError(ErrorCode.ACCESS_DENIED, decision.denial_message(policy_request))
        return resource

    def with_grant(self, caller: Caller, resource: str) -> Caller:
        """`caller`, allowed to reach `resource` of another account when `authorize` let the
        call through with access control on (only a resource policy can allow that)."""
        owner = actions.arn_account(resource)
        if not self.enabled or caller.door == "internal" or owner in (None, caller.account_id):
            return caller
        return dataclasses.replace(caller, granted_account=owner)


@functools.lru_cache(maxsize=4)
def _iso_second(epoch_s: int) -> str:
    """aws:CurrentTime, formatted once per second rather than once per request."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CallableService(Protocol):
    """What AuthorizedService wraps: a service's `call` (its `operations` when it has them)."""

    async def call(self, operation: str, request: Mapping[str, Any], caller: Caller) -> Any: ...


class AuthorizedService:
    """An OperationService whose every outside call is authorized first and observed."""

    def __init__(
        self,
        inner: CallableService,
        *,
        signing_name: str,
        authorizer: Authorizer,
        observer: CallObserver | None = None,
    ) -> None:
        self._inner = inner
        self._signing_name = signing_name
        self._authorizer = authorizer
        self._observer = observer

    @property
    def operations(self) -> frozenset[str]:
        operations: frozenset[str] = getattr(self._inner, "operations", frozenset())
        return operations

    def __getattr__(self, name: str) -> Any:
        # The wrapped service's other members (e.g. VideoService.put_media, .hls) stay reachable.
        return getattr(self._inner, name)

    def authorize(self, operation: str, request: Mapping[str, Any], caller: Caller) -> str:
        """For operations outside `call` (PutMedia's streamed body): authorize and audit."""
        try:
            resource = self._authorizer.authorize(self._signing_name, operation, request, caller)
        except ShoalError as refused:
            self._observe(operation, request, caller, actions.ANY_RESOURCE, refused)
            raise
        self._observe(operation, request, caller, resource, None)
        return resource

    def _observe(
        self,
        operation: str,
        request: Mapping[str, Any],
        caller: Caller,
        resource: str,
        error: ShoalError | None,
    ) -> None:
        if self._observer is not None:
            self._observer.call_finished(
                signing_name=self._signing_name,
                operation=operation,
                request=request,
                caller=caller,
                resource=resource,
                error=error,
            )

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> Any:
        if caller is None or caller.door == "internal":
            inner: Any = self._inner  # services that take no caller treat None as the node's
            return await inner.call(operation, request, caller)
        resource = actions.ANY_RESOURCE
        error: ShoalError | None = None
        try:
            resource = self._authorizer.authorize(self._signing_name, operation, request, caller)
            granted = self._authorizer.with_grant(caller, resource)
            return await self._inner.call(operation, request, granted)
        except ShoalError as refused:
            error = refused
            raise
        finally:
            self._observe(operation, request, caller, resource, error)
