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

    server.add_generic_rpc_handlers((lease_handler(metadata_frontend, clock),))
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from broker.api.leases.v1 import leases_pb2 as pb
from broker.clock import Clock
from broker.consumers import leases
from broker.consumers.leases import Lease
from broker.gateway import lease_codec
from broker.gateway.error_mapping import NativeMethod, native_rpc
from broker.meta.commands import lease_command
from broker.meta.frontend import MetadataFrontend

log = logging.getLogger(__name__)

_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["LeaseService"]
SERVICE_NAME = _DESCRIPTOR.full_name


class _LeaseServicer:
    """One method per RPC: request message in, response message out, ShoalError on refusal."""

    def __init__(self, frontend: MetadataFrontend, clock: Clock) -> None:
        self._frontend = frontend
        self._clock = clock

    async def _propose(self, operation: leases.LeaseOperation) -> object:
        return await self._frontend.propose(lease_command(operation, now_ms=self._clock.wall_ms()))

    async def _propose_lease(self, operation: leases.LeaseOperation) -> pb.Lease:
        result = await self._propose(operation)
        assert isinstance(result, Lease), result
        return lease_codec.lease_to_message(result)

    async def create_leases(self, request: pb.CreateLeasesRequest) -> pb.CreateLeasesResponse:
        result = await self._propose(lease_codec.create_leases_from_message(request))
        assert isinstance(result, tuple), result
        return pb.CreateLeasesResponse(
            leases=[lease_codec.lease_to_message(lease) for lease in result]
        )

    async def list_leases(self, request: pb.ListLeasesRequest) -> pb.ListLeasesResponse:
        stream_name = request.stream_name if request.HasField("stream_name") else None
        listed = leases.list_leases(
            self._frontend.image().leases,
            application=request.application,
            stream_name=stream_name,
        )
        return pb.ListLeasesResponse(
            leases=[lease_codec.lease_to_message(lease) for lease in listed]
        )

    async def list_applications(
        self, request: pb.ListApplicationsRequest
    ) -> pb.ListApplicationsResponse:
        names = leases.list_applications(self._frontend.image().leases)
        return pb.ListApplicationsResponse(applications=names)

    async def take_lease(self, request: pb.TakeLeaseRequest) -> pb.TakeLeaseResponse:
        lease = await self._propose_lease(lease_codec.take_from_message(request))
        return pb.TakeLeaseResponse(lease=lease)

    async def steal_lease(self, request: pb.StealLeaseRequest) -> pb.StealLeaseResponse:
        lease = await self._propose_lease(lease_codec.steal_from_message(request))
        return pb.StealLeaseResponse(lease=lease)

    async def renew_lease(self, request: pb.RenewLeaseRequest) -> pb.RenewLeaseResponse:
        lease = await self._propose_lease(lease_codec.renew_from_message(request))
        return pb.RenewLeaseResponse(lease=lease)

    async def release_lease(self, request: pb.ReleaseLeaseRequest) -> pb.ReleaseLeaseResponse:
        lease = await self._propose_lease(lease_codec.release_from_message(request))
        return pb.ReleaseLeaseResponse(lease=lease)

    async def checkpoint(self, request: pb.CheckpointRequest) -> pb.CheckpointResponse:
        lease = await self._propose_lease(lease_codec.checkpoint_lease_from_message(request))
        return pb.CheckpointResponse(lease=lease)

    async def delete_lease(self, request: pb.DeleteLeaseRequest) -> pb.DeleteLeaseResponse:
        lease = await self._propose_lease(lease_codec.delete_lease_from_message(request))
        return pb.DeleteLeaseResponse(lease=lease)

    async def delete_application(
        self, request: pb.DeleteApplicationRequest
    ) -> pb.DeleteApplicationResponse:
        result = await self._propose(lease_codec.delete_application_from_message(request))
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


def lease_handler(frontend: MetadataFrontend, clock: Clock) -> grpc.GenericRpcHandler:
    """The generic handler serving every LeaseService RPC over `frontend`."""
    methods = _methods(_LeaseServicer(frontend, clock))
    assert set(methods) == {method.name for method in _DESCRIPTOR.methods}
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in _DESCRIPTOR.methods:
        input_class = getattr(pb, method.input_type.name)
        output_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            native_rpc("leases", method.name, methods[method.name]),
            request_deserializer=input_class.FromString,
            response_serializer=output_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
