"""The internal front door: the NodeService and ClusterAdminService servers.

Thin like the public door: decode, call, encode (STYLE B.14). Served on the node's gRPC port
beside KinesisService and ReplicationService (`rpc/transport.py`).

- `NodeService.ShardAppend` / `ShardRead`: another node's gateway forwards a shard append or
  read here because this node leads the shard (or, for reads, holds a caught-up replica);
  `ShardClient.serve_append` / `serve_read` run the shard's throttle and the local replica,
  the same code as a request that arrived here. Routing refusals leave as FAILED_PRECONDITION
  with a `google.rpc.ErrorInfo` (domain `internal.shoal.dev`, reason NOT_SHARD_LEADER,
  STALE_EPOCH, SHARD_SEALED or UNAVAILABLE, metadata `leader` and `epoch`), the rich error
  model of ECOSYSTEM §4.5; Kinesis errors leave as the public door's do.
- `NodeService.Heartbeat`: a node's liveness report, for the controller on this node.
- `ClusterAdminService`: status, voters and drain, for the `shoal cluster` CLI.

The calling side of NodeService is `forwarder.py`; refusals on the wire are `refusals.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from broker import error_messages, limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.errors import ErrorCode, ShoalError
from broker.log.records import NewRecords
from broker.meta.controller_core import RejoiningReplica
from broker.meta.image import MetadataImage
from broker.meta.image_codec import encode_image
from broker.meta.metadata_format import FIRST_FORMAT, METADATA_FORMAT_MAX
from broker.meta.quorum import QuorumStatistics
from broker.replication.refusals import ShardRefusedError
from broker.rpc.channels import CLUSTER_ADMIN_SERVICE, NODE_SERVICE, unary_handler
from broker.rpc.refusals import refusal_status
from broker.rpc.replication_codec import records_from_proto
from broker.rpc.shard_codec import columns_of, hash_keys_from_wire, stored_to_proto
from broker.service.shards import ReadRequest, ReadThrottle, ShardClient
from broker.streams.subscription_claims import Claim
from broker.types import NodeId, Offset, ShardUid
from broker.wire.error_mapping import to_grpc_status

log = logging.getLogger(__name__)
_T = TypeVar("_T")


# --- The serving side ------------------------------------------------------------------------


class AdminBackend(Protocol):
    """What ClusterAdminService needs from the node (node.py implements it)."""

    def cluster_view(self) -> ClusterView: ...

    async def add_voter(self, raft_address: str) -> None: ...

    async def remove_voter(self, raft_address: str) -> None: ...

    async def drain(self, node_id: NodeId, *, timeout_ms: int) -> int:
        """Moves the node's shard leaderships away; returns how many it still leads."""
        ...

    def metadata_image(self, applied_commands: int | None) -> tuple[MetadataImage | None, int]:
        """The image after `applied_commands` commands (None: the current one), if still
        kept, and the Raft index applied now."""

    async def remove_node(self, node_id: NodeId) -> bool:
        """Takes a node holding no replica out of the quorum (if a voter) and marks it
        REMOVED; returns whether it was a voter."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    node_id: NodeId
    image: MetadataImage
    quorum: QuorumStatistics
    controller: NodeId | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """A node's heartbeat as the controller takes it (NodeService.Heartbeat)."""

    node_id: NodeId
    incarnation: int
    shutting_down: bool
    rejoining: tuple[RejoiningReplica, ...]
    disk_full: bool
    fenced: tuple[tuple[ShardUid, int], ...]
    metadata_format_max: int  # FIRST_FORMAT from a binary that does not say


def node_handler(
    shards: ShardClient,
    *,
    on_heartbeat: Callable[[Heartbeat], bool],
    controller: Callable[[], NodeId | None],
) -> grpc.GenericRpcHandler:
    """NodeService: Heartbeat (for the controller here), ShardAppend and ShardRead."""

    async def heartbeat(
        request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        rejoining = tuple(
            RejoiningReplica(shard_uid=ShardUid(r.shard_uid), epoch=r.epoch, caught_up=r.caught_up)
            for r in request.rejoining
        )
        accepted = on_heartbeat(
            Heartbeat(
                node_id=NodeId(request.node_id),
                incarnation=request.incarnation,
                shutting_down=request.shutting_down,
                rejoining=rejoining,
                disk_full=request.disk_full,
                fenced=tuple((ShardUid(f.shard_uid), f.epoch) for f in request.fenced),
                metadata_format_max=request.metadata_format_max or FIRST_FORMAT,
            )
        )
        return pb.HeartbeatResponse(accepted=accepted, controller=controller() or "")

    async def shard_append(
        request: pb.ShardAppendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ShardAppendResponse:
        answer = await answer_shard_append(shards, request)
        if isinstance(answer, grpc.Status):
            await context.abort_with_status(answer)
            raise AssertionError("abort_with_status returns only by raising")
        return answer

    async def shard_read(
        request: pb.ShardReadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ShardReadResponse:
        read = ReadRequest(
            start_offset=Offset(request.start_offset),
            records_max=request.records_max,
            bytes_max=max(1, min(request.bytes_max, limits.get_records_bytes_max)),
            arrival_ms_min=request.arrival_ms_min,
            at_timestamp_ms=(
                request.at_timestamp_ms if request.HasField("at_timestamp_ms") else None
            ),
            throttle=ReadThrottle(request.throttle_kind),
            wait_ms=min(request.wait_ms, limits.read_wait_ms_max),
            claim=(
                Claim(
                    consumer_arn=request.claim.consumer_arn,
                    subscription_id=request.claim.subscription_id,
                    started_ms=request.claim.started_ms,
                    release=request.claim.release,
                )
                if request.HasField("claim")
                else None
            ),
        )
        result = await _served(context, shards.serve_read(ShardUid(request.shard_uid), read))
        response = pb.ShardReadResponse(
            records=stored_to_proto(result.records),
            log_start=result.log_start,
            readable_end=result.readable_end,
            throttled=result.throttled,
            next_offset=result.next_offset,
            end_may_lag=not result.end_is_committed_end,
        )
        if result.timestamp_offset is not None:
            response.timestamp_offset = result.timestamp_offset
        return response

    handlers = {
        "Heartbeat": unary_handler(heartbeat, pb.HeartbeatRequest, pb.HeartbeatResponse),
        "ShardAppend": unary_handler(shard_append, pb.ShardAppendRequest, pb.ShardAppendResponse),
        "ShardRead": unary_handler(shard_read, pb.ShardReadRequest, pb.ShardReadResponse),
    }
    return grpc.method_handlers_generic_handler(NODE_SERVICE, handlers)


async def answer_shard_append(
    shards: ShardClient, request: pb.ShardAppendRequest
) -> pb.ShardAppendResponse | grpc.Status:
    """A forwarded append served here: its answer, or the status the call ends with. The one
    server of both ways it arrives: the gRPC ShardAppend and the framed connection's APPEND
    frames (`framed.FramedListener`)."""
    try:
        records = _records_of(request)
    except ValueError as error:
        return _invalid(str(error))
    if not records:
        return _invalid(error_messages.FORWARDED_APPEND_EMPTY)
    result = await _outcome(
        shards.serve_append(ShardUid(request.shard_uid), epoch=request.epoch, records=records)
    )
    if isinstance(result, grpc.Status):
        return result
    return pb.ShardAppendResponse(
        first_offset=result.first_offset,
        arrival_ms=result.arrival_ms,
        throttled=list(result.throttled),
    )


def _records_of(request: pb.ShardAppendRequest) -> NewRecords:
    """The records of a forwarded append, from `records` or from the columns (shard_codec).
    Raises ValueError for columns or hash keys that do not add up, or both forms at once."""
    if request.data_sizes or request.datas or request.keys:
        if request.records:
            raise ValueError("an append with its records both as messages and as columns")
        keys, keys_utf8, datas = columns_of(request)
        sizes = map(operator.add, map(len, keys_utf8), map(len, datas))
        hash_keys = hash_keys_from_wire(request.hash_keys, len(datas))
        return NewRecords(keys, keys_utf8, datas, sizes, hash_keys)
    records = records_from_proto(request.records)
    return NewRecords.of(records, hash_keys_from_wire(request.hash_keys, len(records)))


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()


def _invalid(message: str) -> grpc.Status:
    return _Status(grpc.StatusCode.INVALID_ARGUMENT, message)


async def _outcome(call: Awaitable[_T]) -> _T | grpc.Status:
    """The call's result, or the status it ends the RPC with (a refusal, a Kinesis error, or
    INTERNAL_FAILURE for anything else, logged)."""
    try:
        return await call
    except ShardRefusedError as refusal:
        return refusal_status(refusal)
    except ShoalError as error:
        return to_grpc_status(error)
    except Exception:
        log.exception("internal_operation_failed")
        return to_grpc_status(ShoalError(ErrorCode.INTERNAL_FAILURE))


async def _served(context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[_T]) -> _T:
    outcome = await _outcome(call)
    if isinstance(outcome, grpc.Status):
        await context.abort_with_status(outcome)
        raise AssertionError("abort_with_status returns only by raising")
    return outcome


def admin_handler(backend: AdminBackend) -> grpc.GenericRpcHandler:
    """ClusterAdminService: what `shoal cluster ...` calls."""

    async def cluster_status(
        request: pb.ClusterStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ClusterStatusResponse:
        return cluster_status_to_proto(backend.cluster_view())

    async def add_voter(
        request: pb.AddVoterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AddVoterResponse:
        await _served(context, backend.add_voter(request.raft_address))
        return pb.AddVoterResponse()

    async def remove_voter(
        request: pb.RemoveVoterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RemoveVoterResponse:
        await _served(context, backend.remove_voter(request.raft_address))
        return pb.RemoveVoterResponse()

    async def drain(
        request: pb.DrainRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DrainResponse:
        timeout_ms = request.timeout_ms or limits.drain_timeout_ms
        left = await _served(
            context,
            backend.drain(
                NodeId(request.node_id), timeout_ms=min(timeout_ms, limits.drain_timeout_ms_max)
            ),
        )
        return pb.DrainResponse(leaderships_left=left)

    async def metadata_digest(
        request: pb.MetadataDigestRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MetadataDigestResponse:
        wanted = request.applied_commands if request.HasField("applied_commands") else None
        image, raft_applied = backend.metadata_image(wanted)
        if image is None:
            return pb.MetadataDigestResponse(found=False, raft_last_applied=raft_applied)
        digest = await asyncio.to_thread(lambda: hashlib.sha256(encode_image(image)).digest())
        return pb.MetadataDigestResponse(
            found=True,
            applied_commands=image.applied_commands,
            sha256=digest,
            raft_last_applied=raft_applied,
        )

    async def remove_node(
        request: pb.RemoveNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RemoveNodeResponse:
        was_voter = await _served(context, backend.remove_node(NodeId(request.node_id)))
        return pb.RemoveNodeResponse(was_voter=was_voter)

    handlers = {
        "RemoveNode": unary_handler(remove_node, pb.RemoveNodeRequest, pb.RemoveNodeResponse),
        "ClusterStatus": unary_handler(
            cluster_status, pb.ClusterStatusRequest, pb.ClusterStatusResponse
        ),
        "MetadataDigest": unary_handler(
            metadata_digest, pb.MetadataDigestRequest, pb.MetadataDigestResponse
        ),
        "AddVoter": unary_handler(add_voter, pb.AddVoterRequest, pb.AddVoterResponse),
        "RemoveVoter": unary_handler(remove_voter, pb.RemoveVoterRequest, pb.RemoveVoterResponse),
        "Drain": unary_handler(drain, pb.DrainRequest, pb.DrainResponse),
    }
    return grpc.method_handlers_generic_handler(CLUSTER_ADMIN_SERVICE, handlers)


def cluster_status_to_proto(view: ClusterView) -> pb.ClusterStatusResponse:
    image = view.image
    leaders: dict[str, int] = {}
    replicas: dict[str, int] = {}
    shards = []
    for name in sorted(image.streams):
        stream = image.streams[name]
        for shard in stream.shards:
            for node_id in shard.replicas:
                replicas[node_id] = replicas.get(node_id, 0) + 1
            if shard.leader is not None:
                leaders[shard.leader] = leaders.get(shard.leader, 0) + 1
            shards.append(
                pb.ShardStatus(
                    stream_name=stream.name,
                    shard_id=shard.shard_id,
                    shard_uid=shard.uid,
                    state=shard.state.value,
                    replicas=list(shard.replicas),
                    leader=shard.leader or "",
                    epoch=shard.epoch,
                )
            )
    nodes = [
        pb.NodeStatus(
            node_id=node.node_id,
            api_address=node.api_address,
            http_address=node.http_address,
            raft_address=node.raft_address,
            voter=node.voter,
            state=node.state.value,
            incarnation=node.incarnation,
            leader_count=leaders.get(node.node_id, 0),
            replica_count=replicas.get(node.node_id, 0),
        )
        for _, node in sorted(image.nodes.items())
    ]
    return pb.ClusterStatusResponse(
        cluster_id=image.cluster_id,
        answered_by=view.node_id,
        quorum_leader=view.quorum.quorum_leader or "",
        controller=view.controller or "",
        nodes=nodes,
        shards=shards,
        raft_term=view.quorum.term,
        raft_commit_index=view.quorum.commit_index,
        metadata_format=image.metadata_format,
        metadata_format_max=METADATA_FORMAT_MAX,
    )
