"""The node's own services as clients, for work a node does as a consumer of its own streams.

A delivery stream's deliverer and a running SQL application are consumer applications (DESIGN
§8): they run the KCL-style `broker.client.worker.Worker` inside a node, so their shards are
leased through the same lease table as any worker's and move to another node when this one
dies. These two classes give that worker what it gets from gRPC elsewhere, without a network
hop:

- `LocalKinesis`: the `call(operation, request)` of `AsyncShoalClient`, answered by this
  node's `KinesisService` as the node itself (no outside `Caller`);
- `LocalLeaseClient`: the worker's `LeaseClient` protocol, proposing the lease operations as
  metadata commands exactly as the gRPC LeaseService does (`gateway/lease_service.py`), with
  refusals returned as `LeaseError` values and anything else (no quorum, a deadline) raised.

Loop-bound, like the services they wrap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.caller import Caller
from broker.clock import Clock
from broker.consumers import leases
from broker.consumers.leases import Lease, LeaseError, LeaseRefusal
from broker.errors import ShoalError
from broker.meta.commands import lease_command
from broker.meta.frontend import MetadataFrontend
from broker.service.kinesis import KinesisService

_REFUSALS = {refusal.error_code: refusal for refusal in LeaseRefusal}


class LocalKinesis:
    """`AsyncShoalClient.call` over this node's KinesisService, as the node itself: `caller`
    (door "internal") names the region and account to act in; None means the node's own."""

    def __init__(self, service: KinesisService, *, caller: Caller | None = None) -> None:
        assert caller is None or caller.door == "internal", caller
        self._service = service
        self._caller = caller

    async def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        return await self._service.call(operation, request, self._caller)


class LocalLeaseClient:
    """A `broker.client.worker.LeaseClient` over this node's metadata frontend."""

    def __init__(self, frontend: MetadataFrontend, clock: Clock) -> None:
        self._frontend = frontend
        self._clock = clock

    async def _propose(self, operation: leases.LeaseOperation) -> object:
        command = lease_command(operation, now_ms=self._clock.wall_ms())
        try:
            return await self._frontend.propose(command)
        except ShoalError as error:
            refusal = _REFUSALS.get(error.code)
            if refusal is None:
                raise
            return LeaseError(refusal=refusal, message=error.message)

    async def _lease(self, operation: leases.LeaseOperation) -> Lease | LeaseError:
        result = await self._propose(operation)
        assert isinstance(result, Lease | LeaseError), result
        return result

    async def create_leases(self, operation: leases.CreateLeases) -> tuple[Lease, ...] | LeaseError:
        result = await self._propose(operation)
        assert isinstance(result, tuple | LeaseError), result
        return result

    async def list_leases(
        self, *, application: str, stream_name: str | None = None
    ) -> tuple[Lease, ...]:
        return leases.list_leases(
            self._frontend.image().leases, application=application, stream_name=stream_name
        )

    async def list_applications(self) -> tuple[str, ...]:
        return leases.list_applications(self._frontend.image().leases)

    async def take(self, operation: leases.TakeLease) -> Lease | LeaseError:
        return await self._lease(operation)

    async def steal(self, operation: leases.StealLease) -> Lease | LeaseError:
        return await self._lease(operation)

    async def renew(self, operation: leases.RenewLease) -> Lease | LeaseError:
        return await self._lease(operation)

    async def release(self, operation: leases.ReleaseLease) -> Lease | LeaseError:
        return await self._lease(operation)

    async def checkpoint(self, operation: leases.CheckpointLease) -> Lease | LeaseError:
        return await self._lease(operation)

    async def delete_lease(self, operation: leases.DeleteLease) -> Lease | LeaseError:
        return await self._lease(operation)

    async def delete_application(self, operation: leases.DeleteApplication) -> int | LeaseError:
        result = await self._propose(operation)
        assert isinstance(result, int | LeaseError), result
        return result
