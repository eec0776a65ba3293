"""Unary calls to other nodes' replication and liveness RPCs (the gRPC adapter).

- `GrpcReplicaControl`: the controller's `ReplicaControl` (`meta/controller.py`) over
  `ReplicationService.Prepare` / `Seal` / `ReplicaStatus`.
  `refuses_connections` is the controller's crash probe: a plain TCP connect.
- `send_heartbeat`: a node's heartbeat to the controller's node (`NodeService.Heartbeat`).

Every call has a deadline; gRPC failures are translated here, at this one boundary, into
`ShoalError(UNAVAILABLE)` (STYLE B.8). Calls share the per-address channels of `Channels`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import grpc

from broker import error_messages, limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.errors import ErrorCode, ShoalError
from broker.meta.controller_core import Promise, RejoiningReplica, ReplicaStatus
from broker.rpc.channels import NODE_SERVICE, REPLICATION_SERVICE, Channels, map_rpc_errors, unary
from broker.types import NodeId, Offset, ShardUid


class GrpcReplicaControl:
    """`ReplicaControl` over the internal API; `resolve` maps a node id to its address."""

    def __init__(
        self,
        *,
        channels: Channels,
        resolve: Callable[[NodeId], str | None],
        node_id: NodeId,
        timeout_ms: int = limits.replication_prepare_timeout_ms,
    ) -> None:
        self._channels = channels
        self._resolve = resolve
        self._node_id = node_id
        self._timeout_s = timeout_ms / 1000

    def _channel(self, node_id: NodeId) -> grpc.aio.Channel:
        address = self._resolve(node_id)
        if address is None:
            raise ShoalError(
                ErrorCode.UNAVAILABLE, error_messages.node_has_no_address(node_id=node_id)
            )
        return self._channels.get(address)

    async def prepare(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Promise:
        call = unary(self._channel(node_id), REPLICATION_SERVICE, "Prepare", pb.PrepareResponse)
        with map_rpc_errors(f"Prepare to {node_id}"):
            answer = await call(
                pb.PrepareRequest(shard_uid=shard_uid, epoch=epoch, controller=self._node_id),
                timeout=self._timeout_s,
            )
        return Promise(
            ok=answer.ok,
            last_epoch=answer.last_epoch,
            log_end=Offset(answer.log_end),
            promised_epoch=answer.promised_epoch,
        )

    async def seal(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> Offset | None:
        call = unary(self._channel(node_id), REPLICATION_SERVICE, "Seal", pb.SealResponse)
        with map_rpc_errors(f"Seal to {node_id}"):
            answer = await call(
                pb.SealRequest(
                    shard_uid=shard_uid, epoch=epoch, wait_ms=limits.replication_seal_wait_ms_max
                ),
                timeout=self._timeout_s,
            )
        return Offset(answer.end_offset) if answer.sealed else None

    async def replica_status(self, node_id: NodeId, shard_uid: ShardUid) -> ReplicaStatus:
        call = unary(
            self._channel(node_id), REPLICATION_SERVICE, "ReplicaStatus", pb.ReplicaStatusResponse
        )
        with map_rpc_errors(f"ReplicaStatus to {node_id}"):
            answer = await call(
                pb.ReplicaStatusRequest(shard_uids=[shard_uid]), timeout=self._timeout_s
            )
        for state in answer.replicas:
            if state.shard_uid == shard_uid:
                return ReplicaStatus(
                    log_end=Offset(state.log_end),
                    hw=Offset(state.high_watermark),
                    last_epoch=state.last_epoch,
                )
        raise ShoalError(
            ErrorCode.UNAVAILABLE,
            error_messages.node_holds_no_replica(node_id=node_id, shard_uid=shard_uid),
        )

    async def refuses_connections(self, node_id: NodeId) -> bool:
        address = self._resolve(node_id)
        if address is None:
            return False
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(limits.rpc_probe_connect_timeout_ms / 1000):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except ConnectionRefusedError:
            return True
        except (OSError, TimeoutError, ValueError):
            return False  # unreachable or slow is no proof of a dead process
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return False

    async def statuses(self, address: str) -> pb.ReplicaStatusResponse:
        """Every replica on the node at `address` (diagnostics, tests)."""
        call = unary(
            self._channels.get(address),
            REPLICATION_SERVICE,
            "ReplicaStatus",
            pb.ReplicaStatusResponse,
        )
        with map_rpc_errors(f"ReplicaStatus to {address}"):
            answer: pb.ReplicaStatusResponse = await call(
                pb.ReplicaStatusRequest(), timeout=self._timeout_s
            )
        return answer


async def send_heartbeat(
    channels: Channels,
    address: str,
    *,
    node_id: NodeId,
    incarnation: int,
    sent_ms: int,
    shutting_down: bool,
    rejoining: Sequence[RejoiningReplica] = (),
    disk_full: bool = False,
    fenced: Sequence[tuple[ShardUid, int]] = (),
    metadata_format_max: int,
    timeout_ms: int,
) -> pb.HeartbeatResponse:
    call = unary(channels.get(address), NODE_SERVICE, "Heartbeat", pb.HeartbeatResponse)
    with map_rpc_errors(f"Heartbeat to {address}"):
        answer: pb.HeartbeatResponse = await call(
            pb.HeartbeatRequest(
                node_id=node_id,
                incarnation=incarnation,
                sent_ms=sent_ms,
                shutting_down=shutting_down,
                rejoining=[
                    pb.RejoiningReplica(shard_uid=r.shard_uid, epoch=r.epoch, caught_up=r.caught_up)
                    for r in rejoining
                ],
                disk_full=disk_full,
                fenced=[pb.FencedLeadership(shard_uid=u, epoch=e) for u, e in fenced],
                metadata_format_max=metadata_format_max,
            ),
            timeout=timeout_ms / 1000,
        )
    return answer
