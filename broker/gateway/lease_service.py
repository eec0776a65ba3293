"""The gRPC LeaseService (proto/broker/api/leases/v1/leases.proto): consumer leases over the
metadata quorum.

Thin by design: decode the request into a lease operation (`lease_codec`), propose it as a
metadata command (`meta.commands.lease_command`, stamped with this node's wall clock, which the
lease rules never compare), and encode the result. Every rule and every compare-and-set is
checked in `state_machine.apply` against the image at apply time, so two workers racing for one
lease get one success and one ResourceInUseException whichever nodes they asked. ListLeases and
ListApplications read this node's image (it may lag the quorum leader a little; a worker acting
on a stale counter is refused by the compare-and-set and looks again).

Errors leave through `error_mapping`, as on KinesisService: a refusal's ErrorInfo.reason is the
Kinesis error name of its code (CONFLICT: ResourceInUseException, NOT_FOUND:
ResourceNotFoundException, INVALID: InvalidArgumentException).

    server.add_generic_rpc_handlers((lease_handler(metadata_frontend, clock, caller=caller),))
"""

from __future__ import annotations

import logging
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from broker.api.leases.v1 import leases_pb2 as pb
from broker.caller import Caller
from broker.clock import Clock
from broker.consumers import leases
from broker.consumers.leases import Lease
from broker.gateway.grpc_namespace import namespaced_rpc
from broker.gateway.unary_handlers import unary_service_handler
from broker.meta.commands import lease_command
from broker.meta.frontend import MetadataFrontend
from broker.service.context import CURRENT_CALLER
from broker.streams import namespaces
from broker.streams.namespaces import Namespace
from broker.wire import lease_codec
from broker.wire.error_mapping import NativeMethod

log = logging.getLogger(__name__)

_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["LeaseService"]
SERVICE_NAME = _DESCRIPTOR.full_name
_M = TypeVar("_M", bound=Message)


class _Namespaced:
    """Names in the caller's namespace (`CURRENT_CALLER`, set by
    `grpc_namespace.namespaced_rpc`): applications and streams of the node's default namespace
    keep their bare names in the lease table; any other's are keyed `<account>/<region>/<name>`,
    as streams are (`streams/namespaces.py`), so two accounts or regions never share an
    application's leases."""

    def __init__(self, default: Namespace) -> None:
        self.default = default

    def current(self) -> Namespace:
        caller = CURRENT_CALLER.get()
        if caller is None:
            return self.default
        return Namespace(account_id=caller.account_id, region=caller.region)

    def key(self, name: str) -> str:
        if not name or namespaces.is_stream_key(name):
            return name  # empty: refused by the lease rules; a key: refused by its pattern
        return namespaces.stream_key(name, self.current(), default=self.default)

    def mine(self, key: str) -> bool:
        return namespaces.namespace_of(key, default=self.default) == self.current()

    def request(self, request: _M) -> _M:
        """A copy of `request` with its application and stream name as keys."""
        keyed = type(request)()
        keyed.CopyFrom(request)
        for field in ("application", "stream_name"):
            descriptor = keyed.DESCRIPTOR.fields_by_name.get(field)
            if descriptor is None or (descriptor.has_presence and not keyed.HasField(field)):
                continue
            setattr(keyed, field, self.key(getattr(keyed, field)))
        return keyed

    @staticmethod
    def lease(lease: pb.Lease) -> pb.Lease:
        """`lease` as its caller names it: the bare application and stream names."""
        lease.application = namespaces.name_of(lease.application)
        lease.stream_name = namespaces.name_of(lease.stream_name)
        return lease


class _LeaseServicer:
    """One method per RPC: request message in, response message out, ShoalError on refusal."""

    def __init__(self, frontend: MetadataFrontend, clock: Clock, default: Namespace) -> None:
        self._frontend = frontend
        self._clock = clock
        self._names = _Namespaced(default)

    async def _propose(self, operation: leases.LeaseOperation) -> object:
        return await self._frontend.propose(lease_command(operation, now_ms=self._clock.wall_ms()))

    async def _propose_lease(self, operation: leases.LeaseOperation) -> pb.Lease:
        result = await self._propose(operation)
        assert isinstance(result, Lease), result
        return self._names.lease(lease_codec.lease_to_message(result))

    async def create_leases(self, request: pb.CreateLeasesRequest) -> pb.CreateLeasesResponse:
        keyed = self._names.request(request)
        result = await self._propose(lease_codec.create_leases_from_message(keyed))
        assert isinstance(result, tuple), result
        return pb.CreateLeasesResponse(
            leases=[self._names.lease(lease_codec.lease_to_message(lease)) for lease in result]
        )

    async def list_leases(self, request: pb.ListLeasesRequest) -> pb.ListLeasesResponse:
        keyed = self._names.request(request)
        stream_name = keyed.stream_name if keyed.HasField("stream_name") else None
        listed = leases.list_leases(
            self._frontend.image().leases,
            application=keyed.application,
            stream_name=stream_name,
        )
        return pb.ListLeasesResponse(
            leases=[self._names.lease(lease_codec.lease_to_message(lease)) for lease in listed]
        )

    async def list_applications(
        self, request: pb.ListApplicationsRequest
    ) -> pb.ListApplicationsResponse:
        keys = leases.list_applications(self._frontend.image().leases)
        names = sorted(namespaces.name_of(key) for key in keys if self._names.mine(key))
        return pb.ListApplicationsResponse(applications=names)

    async def take_lease(self, request: pb.TakeLeaseRequest) -> pb.TakeLeaseResponse:
        lease = await self._propose_lease(
            lease_codec.take_from_message(self._names.request(request))
        )
        return pb.TakeLeaseResponse(lease=lease)

    async def steal_lease(self, request: pb.StealLeaseRequest) -> pb.StealLeaseResponse:
        lease = await self._propose_lease(
            lease_codec.steal_from_message(self._names.request(request))
        )
        return pb.StealLeaseResponse(lease=lease)

    async def renew_lease(self, request: pb.RenewLeaseRequest) -> pb.RenewLeaseResponse:
        lease = await self._propose_lease(
            lease_codec.renew_from_message(self._names.request(request))
        )
        return pb.RenewLeaseResponse(lease=lease)

    async def release_lease(self, request: pb.ReleaseLeaseRequest) -> pb.ReleaseLeaseResponse:
        lease = await self._propose_lease(
            lease_codec.release_from_message(self._names.request(request))
        )
        return pb.ReleaseLeaseResponse(lease=lease)

    async def checkpoint(self, request: pb.CheckpointRequest) -> pb.CheckpointResponse:
        lease = await self._propose_lease(
            lease_codec.checkpoint_lease_from_message(self._names.request(request))
        )
        return pb.CheckpointResponse(lease=lease)

    async def delete_lease(self, request: pb.DeleteLeaseRequest) -> pb.DeleteLeaseResponse:
        lease = await self._propose_lease(
            lease_codec.delete_lease_from_message(self._names.request(request))
        )
        return pb.DeleteLeaseResponse(lease=lease)

    async def delete_application(
        self, request: pb.DeleteApplicationRequest
    ) -> pb.DeleteApplicationResponse:
        result = await self._propose(
            lease_codec.delete_application_from_message(self._names.request(request))
        )
        assert isinstance(result, int), result
        return pb.DeleteApplicationResponse(lease_count=result)


_Method = NativeMethod


def _methods(servicer: _LeaseServicer) -> dict[str, _Method]:
    return {
        "CreateLeases": servicer.create_leases,
        "ListLeases": servicer.list_leases,
        "ListApplications": servicer.list_applications,
        "TakeLease": servicer.take_lease,
        "StealLease": servicer.steal_lease,
        "RenewLease": servicer.renew_lease,
        "ReleaseLease": servicer.release_lease,
        "Checkpoint": servicer.checkpoint,
        "DeleteLease": servicer.delete_lease,
        "DeleteApplication": servicer.delete_application,
    }


def lease_handler(
    frontend: MetadataFrontend, clock: Clock, *, caller: Caller
) -> grpc.GenericRpcHandler:
    """The generic handler serving every LeaseService RPC over `frontend`; `caller` is the
    node's region and account (the default namespace; each call's region is its metadata's)."""
    default = Namespace(account_id=caller.account_id, region=caller.region)
    methods = _methods(_LeaseServicer(frontend, clock, default))
    return unary_service_handler(
        _DESCRIPTOR,
        pb,
        {
            name: namespaced_rpc("leases", name, method, caller=caller)
            for name, method in methods.items()
        },
    )
