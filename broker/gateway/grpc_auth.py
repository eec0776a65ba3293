"""Authentication and access control on the gRPC door: one server interceptor for every RPC.

Who calls (in this order):
1. a node: `x-shoal-node-signature` (HMAC from the Raft password, `iam/grpc_signing.py`);
2. an access key: `x-shoal-access-key-id`, `x-shoal-date`, `x-shoal-signature` (the same keys
   as the AWS door, same 5-minute replay window, brute force throttled per address);
3. a client certificate (mutual TLS) whose common name is mapped to a principal
   (`shoal iam create-principal --certificate-cn`); a certificate from the cluster CA that is
   mapped to nobody is node-level trust (docs/operations.md, threat model);
4. nobody.

What each may call, with access control on (`Config.access_control`):
- the node-to-node services (ReplicationService, NodeService): nodes and unmapped cluster
  certificates only; a principal's key, even the root's, is refused (they bypass policies);
- the operation services (Kinesis, Firehose, Analytics, Video): any authenticated principal,
  then each call is authorized by `iam.enforcer.AuthorizedService` like on the AWS door;
- the other native services (ClusterAdmin, Iam, Lease, Capacity, Limits, BackupKey): the action
  `shoal:<Method>` on `*` must be allowed (the root user is; others need a policy), or a node;
- health checks: anyone.
With access control off, nothing is refused for lack of credentials, but a signed call is
still identified (its account is the `Caller`'s) and a bad signature is still refused.

The identity reaches the handlers through `current_identity` (a context variable set by the
wrapped handler, so it is the calling task's own).
"""

from __future__ import annotations

import contextvars
import hmac
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from broker import error_messages
from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.gateway.authentication import Authenticator
from broker.iam import grpc_signing
from broker.iam.directory import Identity
from broker.iam.enforcer import Authorizer, CallObserver
from broker.wire.error_mapping import to_grpc_status


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcIdentity:
    identity: Identity | None  # None: a node (or an unmapped cluster certificate)
    access_key_id: str | None = None
    node: bool = False


current_identity: contextvars.ContextVar[GrpcIdentity | None] = contextvars.ContextVar(
    "shoal_grpc_identity", default=None
)

_NODE_SERVICES = (
    "/broker.api.internal.v1.ReplicationService/",
    "/broker.api.internal.v1.NodeService/",
)
_OPERATION_SERVICES = (
    "/broker.api.kinesis.v1.KinesisService/",
    "/broker.api.firehose.v1.FirehoseService/",
    "/broker.api.analytics.v1.KinesisAnalyticsService/",
    "/broker.api.video.v1.VideoStreamsService/",
)
_OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def _refuse(code: ErrorCode, message: str | None = None) -> ShoalError:
    return ShoalError(code, message)


class GrpcAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        authorizer: Authorizer,
        clock: Clock,
        region: str,
        raft_password: str,
        observer: CallObserver | None = None,
    ) -> None:
        self._observer = observer
        self._authenticator = authenticator
        self._authorizer = authorizer
        self._clock = clock
        self._region = region
        self._raft_password = raft_password

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        found = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if found is None or method.startswith(_OPEN_SERVICES):
            return found
        handler: Any = found  # grpc's RpcMethodHandler namedtuple (`_replace` below)
        pairs: Any = handler_call_details.invocation_metadata
        metadata = {k: v for k, v in (pairs or ()) if isinstance(v, str)}
        gate = self

        async def check(context: grpc.aio.ServicerContext[Any, Any]) -> GrpcIdentity | None:
            try:
                return gate._admit(method, metadata, context)
            except ShoalError as error:
                gate._audit_refusal(method, context, error)
                await context.abort_with_status(to_grpc_status(error))
                raise AssertionError("abort_with_status returns only by raising") from None

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                token = current_identity.set(await check(context))
                try:
                    return await inner_unary(request, context)
                finally:
                    current_identity.reset(token)

            return handler._replace(unary_unary=unary)  # type: ignore[no-any-return]
        # A streaming handler is an async generator or a coroutine writing with
        # `context.write`; each kind is wrapped as its own kind.
        for kind in ("unary_stream", "stream_stream", "stream_unary"):
            inner = getattr(handler, kind)
            if inner is not None:
                wrapped = _streaming(inner, check)
                return handler._replace(**{kind: wrapped})  # type: ignore[no-any-return]
        return found

    # --- Who calls, and may they call this ---------------------------------------------------

    def _audit_refusal(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], error: ShoalError
    ) -> None:
        """Refusals before the call is identified (bad or missing signature, a principal on
        the node-to-node services); signature failures are audited by `Authenticator`."""
        if error.code in (ErrorCode.INVALID_SIGNATURE, ErrorCode.UNRECOGNIZED_CLIENT):
            return
        if self._observer is None:
            return
        operation = method.rsplit("/", 1)[1]
        self._authenticator.refused("shoal", operation, peer_address(context), error)

    def _admit(
        self, method: str, metadata: Mapping[str, str], context: grpc.aio.ServicerContext[Any, Any]
    ) -> GrpcIdentity | None:
        who = self._identify(method, metadata, context)
        if not self._authenticator.access_control:
            return who
        if who is None:
            raise _refuse(ErrorCode.MISSING_AUTHENTICATION_TOKEN)
        if method.startswith(_NODE_SERVICES):
            if not who.node:
                raise _refuse(
                    ErrorCode.ACCESS_DENIED, error_messages.grpc_nodes_only(method=method)
                )
            return who
        if method.startswith(_OPERATION_SERVICES) or who.node:
            if who.node and method.startswith(_OPERATION_SERVICES):
                raise _refuse(
                    ErrorCode.ACCESS_DENIED, error_messages.grpc_not_for_nodes(method=method)
                )
            return who
        assert who.identity is not None
        action = "shoal:" + method.rsplit("/", 1)[1]
        caller = Caller(
            region=metadata.get(grpc_signing.REGION_HEADER, self._region),
            account_id=who.identity.account_id,
            principal_arn=who.identity.principal_arn,
            source_address=peer_address(context),
            door="grpc",
        )
        request, decision = self._authorizer.decide(caller, action, "*")
        if not decision.allowed:
            raise _refuse(ErrorCode.ACCESS_DENIED, decision.denial_message(request))
        return who

    def _identify(
        self, method: str, metadata: Mapping[str, str], context: grpc.aio.ServicerContext[Any, Any]
    ) -> GrpcIdentity | None:
        now_ms = self._clock.wall_ms()
        date = metadata.get(grpc_signing.DATE_HEADER, "")
        node_signature = metadata.get(grpc_signing.NODE_SIGNATURE_HEADER)
        if node_signature is not None:
            expected = grpc_signing.node_signature(
                raft_password=self._raft_password, method=method, date=date
            )
            if not grpc_signing.fresh(date, now_ms=now_ms) or not _equal(node_signature, expected):
                self._authenticator.failed(peer_address(context))
                raise _refuse(
                    ErrorCode.INVALID_SIGNATURE, error_messages.GRPC_NODE_SIGNATURE_INVALID
                )
            return GrpcIdentity(identity=None, node=True)
        access_key_id = metadata.get(grpc_signing.ACCESS_KEY_HEADER)
        if access_key_id is not None:
            key_id = self._authenticator.verify(
                lambda: self._check_key(method, metadata, access_key_id, now_ms),
                peer_address(context),
                operation=method.rsplit("/", 1)[1],
            )
            identity = self._authenticator.directory.identity_for_key(key_id)
            if identity is None:
                raise _refuse(ErrorCode.UNRECOGNIZED_CLIENT)
            return GrpcIdentity(identity=identity, access_key_id=key_id)
        subject = _certificate_subject(context)
        if subject is not None:
            identity = self._authenticator.directory.identity_for_certificate(subject)
            if identity is None:
                return GrpcIdentity(identity=None, node=True)  # a cluster-CA certificate
            return GrpcIdentity(identity=identity)
        return None

    def _check_key(
        self, method: str, metadata: Mapping[str, str], access_key_id: str, now_ms: int
    ) -> str:
        date = metadata.get(grpc_signing.DATE_HEADER, "")
        provided = metadata.get(grpc_signing.SIGNATURE_HEADER, "")
        if grpc_signing.date_ms(date) is None or not provided:
            raise _refuse(ErrorCode.INCOMPLETE_SIGNATURE, error_messages.GRPC_SIGNATURE_INCOMPLETE)
        if not grpc_signing.fresh(date, now_ms=now_ms):
            raise _refuse(
                ErrorCode.INVALID_SIGNATURE,
                error_messages.grpc_signature_expired(date=date),
            )
        secret = self._authenticator.directory.secret(access_key_id)
        if secret is None:
            raise _refuse(ErrorCode.UNRECOGNIZED_CLIENT)
        if not any(
            _equal(
                provided, grpc_signing.signature(secret=secret, region=r, method=method, date=date)
            )
            for r in self._signing_regions(metadata)
        ):
            raise _refuse(ErrorCode.INVALID_SIGNATURE, error_messages.GRPC_SIGNATURE_MISMATCH)
        return access_key_id

    def _signing_regions(self, metadata: Mapping[str, str]) -> tuple[str, ...]:
        """The regions a call's signature may be scoped to: the region it addresses
        (`x-shoal-region`), or, naming none, the node's (by name, or the empty scope)."""
        addressed = metadata.get(grpc_signing.REGION_HEADER)
        if addressed is not None:
            return (addressed,)
        return (self._region, grpc_signing.NODE_REGION_SCOPE)


def _streaming(
    inner: Any, check: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
) -> Any:
    """`inner` behind `check`, keeping its kind (async generator, or coroutine)."""
    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            current_identity.set(await check(context))
            async for item in inner(request, context):
                yield item

        return generator

    async def coroutine(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        current_identity.set(await check(context))
        return await inner(request, context)

    return coroutine


def _equal(provided: str, expected: str) -> bool:
    return hmac.compare_digest(provided.encode("utf-8", "surrogateescape"), expected.encode())


def peer_address(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The peer's IP address from gRPC's `ipv4:1.2.3.4:5` / `ipv6:[::1]:5`."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or None


def _certificate_subject(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The common name of a verified client certificate (mutual TLS), if any."""
    auth = context.auth_context()
    names = list(auth.get("x509_common_name", ())) if auth else []
    if not names:
        return None
    name: Any = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
