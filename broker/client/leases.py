"""GrpcLeaseClient: the worker's `LeaseClient` over the gRPC LeaseService of any node.

    lease_client = GrpcLeaseClient("127.0.0.1:50051")
    worker = Worker(..., lease_client=lease_client, kinesis=AsyncShoalClient(...))
    ...
    await lease_client.close()

Refusals come back as `LeaseError` values, as from the lease core: ResourceInUseException is
CONFLICT (the lease API has no other use for it), ResourceNotFoundException NOT_FOUND and
InvalidArgumentException INVALID. Anything else (the node unreachable, no quorum leader, the
deadline passed) raises `ShoalError`: the outcome of a change is then unknown, which the worker
handles (`worker.LeaseClient`). asyncio; create and use it on one event loop.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from broker.api.leases.v1 import leases_pb2 as pb
from broker.consumers.leases import (
    CheckpointLease,
    CreateLeases,
    DeleteApplication,
    DeleteLease,
    Lease,
    LeaseError,
    LeaseRefusal,
    ReleaseLease,
    RenewLease,
    StealLease,
    TakeLease,
)
from broker.errors import ShoalError
from broker.iam.grpc_signing import SigningKey, call_metadata
from broker.tls import open_aio_channel
from broker.wire import lease_codec
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = pb.DESCRIPTOR.services_by_name["LeaseService"]
# Lease calls are small and the worker paces them; a call slower than this is treated as an
# unknown outcome (ShoalError), well within the default failover time of 10 s.
DEFAULT_TIMEOUT_S = 5.0
_REFUSALS = {refusal.error_code: refusal for refusal in LeaseRefusal}


class GrpcLeaseClient:
    """A `broker.client.worker.LeaseClient` over gRPC, plus the listing and deletion calls the
    CLI uses. Each mutating call takes its operation value (`broker.consumers.leases`). One
    channel; the target is any node of the cluster."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        signing_key: SigningKey | None = None,
        region: str | None = None,
    ) -> None:
        """`signing_key` and `region` as `broker.client.grpc_client.ShoalClient`'s: the calls
        act in that region's namespace (None: the node's), signed with the key if one is given."""
        assert timeout_s > 0
        self._signing_key = signing_key
        self._region = region
        self._channel = open_aio_channel(target, credentials)
        self._timeout_s = timeout_s

    async def _call(self, method: str, request: Message) -> Any:
        """The response message, or the call's error as a ShoalError."""
        descriptor = _SERVICE.methods_by_name[method]
        output_class = getattr(pb, descriptor.output_type.name)
        path = f"/{_SERVICE.full_name}/{method}"
        stub = self._channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=output_class.FromString,
        )
        try:
            return await stub(
                request,
                timeout=self._timeout_s,
                metadata=call_metadata(path, region=self._region, key=self._signing_key),
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc_error(exc) from exc

    async def _lease_call(self, method: str, request: Message) -> Lease | LeaseError:
        try:
            response = await self._call(method, request)
        except ShoalError as error:
            return _refusal(error)
        return lease_codec.lease_from_message(response.lease)

    async def create_leases(self, operation: CreateLeases) -> tuple[Lease, ...] | LeaseError:
        request = lease_codec.create_leases_to_message(operation)
        try:
            response: pb.CreateLeasesResponse = await self._call("CreateLeases", request)
        except ShoalError as error:
            return _refusal(error)
        return tuple(lease_codec.lease_from_message(lease) for lease in response.leases)

    async def list_leases(
        self, *, application: str, stream_name: str | None = None
    ) -> tuple[Lease, ...]:
        """The application's leases on `stream_name` (None: every stream), by stream then
        lease key, as the answering node knows them."""
        request = pb.ListLeasesRequest(application=application)
        if stream_name is not None:
            request.stream_name = stream_name
        response: pb.ListLeasesResponse = await self._call("ListLeases", request)
        return tuple(lease_codec.lease_from_message(lease) for lease in response.leases)

    async def list_applications(self) -> tuple[str, ...]:
        response: pb.ListApplicationsResponse = await self._call(
            "ListApplications", pb.ListApplicationsRequest()
        )
        return tuple(response.applications)

    async def take(self, operation: TakeLease) -> Lease | LeaseError:
        return await self._lease_call("TakeLease", lease_codec.take_to_message(operation))

    async def steal(self, operation: StealLease) -> Lease | LeaseError:
        return await self._lease_call("StealLease", lease_codec.steal_to_message(operation))

    async def renew(self, operation: RenewLease) -> Lease | LeaseError:
        return await self._lease_call("RenewLease", lease_codec.renew_to_message(operation))

    async def release(self, operation: ReleaseLease) -> Lease | LeaseError:
        return await self._lease_call("ReleaseLease", lease_codec.release_to_message(operation))

    async def checkpoint(self, operation: CheckpointLease) -> Lease | LeaseError:
        request = lease_codec.checkpoint_lease_to_message(operation)
        return await self._lease_call("Checkpoint", request)

    async def delete_lease(self, operation: DeleteLease) -> Lease | LeaseError:
        request = lease_codec.delete_lease_to_message(operation)
        return await self._lease_call("DeleteLease", request)

    async def delete_application(self, operation: DeleteApplication) -> int | LeaseError:
        request = lease_codec.delete_application_to_message(operation)
        try:
            response: pb.DeleteApplicationResponse = await self._call("DeleteApplication", request)
        except ShoalError as error:
            return _refusal(error)
        return response.lease_count

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> GrpcLeaseClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def _refusal(error: ShoalError) -> LeaseError:
    """The lease refusal an error stands for; re-raises errors that are not refusals."""
    refusal = _REFUSALS.get(error.code)
    if refusal is None:
        raise error
    return LeaseError(refusal=refusal, message=error.message)
