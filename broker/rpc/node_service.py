"""The internal front door: NodeService and ClusterAdminService, and the client that forwards.

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

`GrpcShardForwarder` is the calling side (`service.shards.ShardForwarder`): it turns those
statuses back into `ShardRefusedError` and Kinesis errors, and a node that does not answer
within `limits.forward_timeout_ms` into a refusal with an unknown outcome. A forwarded append
carries the hash key each record was routed by (`ShardAppendRequest.hash_keys`), so the leader's
load tracker files a record with an ExplicitHashKey where the router put it, not at its
partition key's MD5.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from broker import limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.errors import ErrorCode, ShoalError
from broker.log.records import NewRecord, StoredRecord
from broker.meta.controller_core import RejoiningReplica
from broker.meta.image import MetadataImage
from broker.meta.image_codec import encode_image
from broker.meta.metadata_format import FIRST_FORMAT, METADATA_FORMAT_MAX
from broker.meta.quorum import QuorumStatistics
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.rpc.peers import CLUSTER_ADMIN_SERVICE, NODE_SERVICE, unary
from broker.rpc.replication_codec import records_from_proto, records_to_proto
from broker.rpc.transport import Channels, unary_handler
from broker.service.shards import AppendResult, ReadRequest, ReadResult, ReadThrottle, ShardClient
from broker.streams.subscription_claims import Claim
from broker.types import NodeId, Offset, ShardUid, StreamUid
from broker.wire.error_mapping import error_from_rpc_error, to_grpc_status

log = logging.getLogger(__name__)
_T = TypeVar("_T")

INTERNAL_ERROR_DOMAIN = "internal.shoal.dev"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


# --- Hash keys on the wire ----------------------------------------------------------------------

_HASH_KEY_BYTES = 16  # a Kinesis hash key is 128 bits


def hash_keys_to_wire(hash_keys: Sequence[int] | None) -> bytes:
    """`ShardAppendRequest.hash_keys`: 16 bytes big-endian per key, in order (b"": none)."""
    if hash_keys is None:
        return b""
    return b"".join([key.to_bytes(_HASH_KEY_BYTES, "big") for key in hash_keys])


def hash_keys_from_wire(packed: bytes, records: int) -> list[int] | None:
    """The keys `hash_keys_to_wire` packed for `records` records; None when none were sent.
    Raises ValueError when the length does not match the records."""
    if not packed:
        return None
    if len(packed) != records * _HASH_KEY_BYTES:
        raise ValueError(f"{len(packed)} bytes of hash keys for {records} records")
    from_bytes = int.from_bytes
    return [
        from_bytes(packed[i : i + _HASH_KEY_BYTES], "big")
        for i in range(0, len(packed), _HASH_KEY_BYTES)
    ]


# --- Refusals on the wire -----------------------------------------------------------------------


def refusal_status(refusal: ShardRefusedError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=refusal.reason.value,
        domain=INTERNAL_ERROR_DOMAIN,
        metadata={"leader": refusal.leader or "", "epoch": str(refusal.epoch)},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message=str(refusal), details=[detail]
    )
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


def refusal_from_rpc_error(exc: grpc.aio.AioRpcError, shard_uid: ShardUid) -> Exception:
    """A ShardRefusedError for routing refusals and unreachable nodes; else the Kinesis error."""
    for key, value in exc.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY:
            continue
        assert isinstance(value, bytes)
        for detail in status_pb2.Status.FromString(value).details:
            info = error_details_pb2.ErrorInfo()
            if not (detail.Is(info.DESCRIPTOR) and detail.Unpack(info)):
                continue
            if info.domain == INTERNAL_ERROR_DOMAIN:
                leader = info.metadata.get("leader") or None
                return ShardRefusedError(
                    RefusalReason(info.reason),
                    shard_uid=shard_uid,
                    leader=NodeId(leader) if leader else None,
                    epoch=int(info.metadata.get("epoch", "0") or 0),
                )
    code = exc.code()
    if code is grpc.StatusCode.UNAVAILABLE and _never_sent(exc):
        return ShardRefusedError(RefusalReason.UNAVAILABLE, shard_uid=shard_uid, detail=str(code))
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    ):
        # Sent, perhaps served, answer lost: the node may have stored the records.
        return ShardRefusedError(
            RefusalReason.OUTCOME_UNKNOWN, shard_uid=shard_uid, detail=str(code)
        )
    return error_from_rpc_error(exc)


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """gRPC's UNAVAILABLE before a connection existed (refused, unreachable): the request
    never left this node. Any other UNAVAILABLE may have reached the server."""
    details = (exc.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details


def _stored_to_proto(records: Sequence[StoredRecord]) -> list[pb.StoredRecord]:
    return [
        pb.StoredRecord(
            offset=r.offset, arrival_ms=r.arrival_ms, partition_key=r.partition_key, data=r.data
        )
        for r in records
    ]


def _stored_from_proto(records: Sequence[pb.StoredRecord]) -> list[StoredRecord]:
    return [StoredRecord(Offset(r.offset), r.arrival_ms, r.partition_key, r.data) for r in records]


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
        records = records_from_proto(request.records)
        if not records:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an append of no records")
        try:
            hash_keys = hash_keys_from_wire(request.hash_keys, len(records))
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        sizes = [len(r.partition_key.encode()) + len(r.data) for r in records]
        result = await _served(
            context,
            shards.serve_append(
                ShardUid(request.shard_uid),
                epoch=request.epoch,
                records=records,
                sizes=sizes,
                hash_keys=hash_keys,
            ),
        )
        return pb.ShardAppendResponse(
            first_offset=result.first_offset,
            arrival_ms=result.arrival_ms,
            throttled=list(result.throttled),
        )

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
            records=_stored_to_proto(result.records),
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


async def _served(context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[_T]) -> _T:
    try:
        return await call
    except ShardRefusedError as refusal:
        await context.abort_with_status(refusal_status(refusal))
    except ShoalError as error:
        await context.abort_with_status(to_grpc_status(error))
    except Exception:
        log.exception("internal_operation_failed")
        await context.abort_with_status(to_grpc_status(ShoalError(ErrorCode.INTERNAL_FAILURE)))
    raise AssertionError("abort_with_status returns only by raising")


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
            backend.drain(NodeId(request.node_id), timeout_ms=min(timeout_ms, 600_000)),
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


# --- The calling side ------------------------------------------------------------------------


class GrpcShardForwarder:
    """`ShardForwarder` over NodeService; one deadline per call (module docstring)."""

    def __init__(self, channels: Channels, *, timeout_ms: int = limits.forward_timeout_ms) -> None:
        self._channels = channels
        self._timeout_s = timeout_ms / 1000

    async def append(
        self,
        address: str,
        *,
        stream_uid: StreamUid,
        shard_uid: ShardUid,
        epoch: int,
        records: Sequence[NewRecord],
        hash_keys: Sequence[int] | None = None,
    ) -> AppendResult:
        call = unary(
            self._channels.get(address), NODE_SERVICE, "ShardAppend", pb.ShardAppendResponse
        )
        request = pb.ShardAppendRequest(
            stream_uid=stream_uid,
            shard_uid=shard_uid,
            epoch=epoch,
            records=records_to_proto(records),
            hash_keys=hash_keys_to_wire(hash_keys),
        )
        try:
            answer: pb.ShardAppendResponse = await call(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise refusal_from_rpc_error(exc, shard_uid) from exc
        return AppendResult(
            first_offset=Offset(answer.first_offset),
            arrival_ms=answer.arrival_ms,
            throttled=tuple(answer.throttled),
        )

    async def read(
        self,
        address: str,
        *,
        stream_uid: StreamUid,
        shard_uid: ShardUid,
        epoch: int,
        request: ReadRequest,
    ) -> ReadResult:
        call = unary(self._channels.get(address), NODE_SERVICE, "ShardRead", pb.ShardReadResponse)
        message = pb.ShardReadRequest(
            stream_uid=stream_uid,
            shard_uid=shard_uid,
            epoch=epoch,
            start_offset=request.start_offset,
            records_max=request.records_max,
            bytes_max=request.bytes_max,
            arrival_ms_min=max(0, request.arrival_ms_min),
            throttle_kind=int(request.throttle),
            wait_ms=request.wait_ms,
        )
        if request.at_timestamp_ms is not None:
            message.at_timestamp_ms = max(0, request.at_timestamp_ms)
        if request.claim is not None:
            message.claim.CopyFrom(
                pb.SubscriptionClaim(
                    consumer_arn=request.claim.consumer_arn,
                    subscription_id=request.claim.subscription_id,
                    started_ms=max(0, request.claim.started_ms),
                    release=request.claim.release,
                )
            )
        try:
            answer: pb.ShardReadResponse = await call(message, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise refusal_from_rpc_error(exc, shard_uid) from exc
        return ReadResult(
            records=_stored_from_proto(answer.records),
            log_start=Offset(answer.log_start),
            readable_end=Offset(answer.readable_end),
            next_offset=Offset(answer.next_offset),
            timestamp_offset=(
                Offset(answer.timestamp_offset) if answer.HasField("timestamp_offset") else None
            ),
            throttled=answer.throttled,
            end_is_committed_end=not answer.end_may_lag,
        )
