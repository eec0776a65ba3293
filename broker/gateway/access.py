"""The node's access control, assembled once: keys, authorizer, authenticator, interceptor.

`build_access_control` wires `broker/iam` to this node: the key directory reads the IAM table
of the node's latest metadata image (so a change applied by the quorum is in force on the
next request this node serves: the bound is this node's apply lag, measured in
tests/iam/test_cluster_iam.py), the authorizer reads resource policies from the same image,
and `guard` wraps each service a door serves in an `AuthorizedService`. `node_signer` is
what this node adds to its own calls to other nodes (the node signature), when access
control is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.clock import Clock
from broker.config import Config
from broker.gateway.authentication import Authenticator
from broker.gateway.grpc_auth import GrpcAuthInterceptor
from broker.iam import grpc_signing
from broker.iam.directory import KeyDirectory
from broker.iam.enforcer import AuthorizedService, Authorizer, CallableService, CallObserver
from broker.iam.lookups import (
    iterator_stream_lookup,
    resource_policy_lookup,
    resource_tags_lookup,
)
from broker.iam.sealing import SecretBox
from broker.meta.image import MetadataImage
from broker.meta.metadata_format import RESEALED_SECRETS_LEVEL


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessControl:
    directory: KeyDirectory
    authorizer: Authorizer
    authenticator: Authenticator
    interceptor: GrpcAuthInterceptor
    observer: CallObserver | None
    raft_password: str
    clock: Clock

    def guard(self, service: CallableService, signing_name: str) -> AuthorizedService:
        return AuthorizedService(
            service, signing_name=signing_name, authorizer=self.authorizer, observer=self.observer
        )


def node_signer(raft_password: str, clock: Clock) -> Callable[[str], tuple[tuple[str, str], ...]]:
    """What this node adds to each call it makes to another node: the node signature."""

    def node_metadata(method: str) -> tuple[tuple[str, str], ...]:
        date = grpc_signing.amz_date(clock.wall_ms())
        signature = grpc_signing.node_signature(
            raft_password=raft_password, method=method, date=date
        )
        return ((grpc_signing.DATE_HEADER, date), (grpc_signing.NODE_SIGNATURE_HEADER, signature))

    return node_metadata


def secret_box(config: Config, image: Callable[[], MetadataImage]) -> SecretBox:
    """The IAM key file's key, or the cluster's derived IAM key (`iam/sealing.py`)."""
    if config.iam_key_file is not None:
        return SecretBox.from_file(config.iam_key_file)
    return SecretBox.derived(
        password=config.raft_password,
        previous_passwords=(config.raft_password_previous,)
        if config.raft_password_previous
        else (),
        cluster_secret=lambda: image().iterator_secret,
        sealing_is_derived=lambda: image().metadata_format >= RESEALED_SECRETS_LEVEL,
    )


def build_access_control(
    config: Config,
    clock: Clock,
    image: Callable[[], MetadataImage],
    *,
    observer: CallObserver | None = None,
) -> AccessControl:
    directory = KeyDirectory(
        static_keys=config.access_keys,
        account_id=config.account_id,
        region=config.region,
        box=secret_box(config, image),
        iam_table=lambda: image().iam,
    )
    authorizer = Authorizer(
        enabled=config.access_control,
        directory=directory,
        resource_policy=resource_policy_lookup(image),
        iterator_stream=iterator_stream_lookup(image),
        resource_tags=resource_tags_lookup(image, clock.wall_ms),
        wall_ms=clock.wall_ms,
        secure_transport=config.tls_cert_file is not None,
    )
    authenticator = Authenticator(
        directory=directory,
        clock=clock,
        access_control=config.access_control,
        observer=observer,
        region=config.region,
    )
    interceptor = GrpcAuthInterceptor(
        authenticator=authenticator,
        authorizer=authorizer,
        clock=clock,
        region=config.region,
        raft_password=config.raft_password,
        observer=observer,
    )
    return AccessControl(
        directory=directory,
        authorizer=authorizer,
        authenticator=authenticator,
        interceptor=interceptor,
        observer=observer,
        raft_password=config.raft_password,
        clock=clock,
    )
