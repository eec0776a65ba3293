"""`GrpcShardForwarder`: the calling side of NodeService (`service.shards.ShardForwarder`).

A shard append or read for a shard this node does not lead (or, for reads, holds no caught-up
replica of) goes to the node that does. The forwarder turns the serving node's statuses back
into `ShardRefusedError` and Kinesis errors (`refusals.py`), and a node that does not answer
within `limits.forward_timeout_ms` into a refusal with an unknown outcome. A forwarded append
carries the hash key each record was routed by (`ShardAppendRequest.hash_keys`), so the
leader's load tracker files a record with an ExplicitHashKey where the router put it, not at
its partition key's MD5.

An append to a node this one has a framed replication connection to (`framed.py`), whose
listener serves them, goes over that connection instead of a gRPC call: the same request, the
same answer or status, decoded here the same way (`refusals.error_from_wire_status`); a lost
connection or the deadline passed is an unknown outcome, as on gRPC. Reads stay gRPC calls.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from broker import limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import NewRecords, RecordPage
from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.rpc.channels import NODE_SERVICE, Channels, unary
from broker.rpc.framed import FramedTransport
from broker.rpc.refusals import error_from_wire_status, refusal_from_rpc_error
from broker.rpc.replication_codec import records_to_proto
from broker.rpc.shard_codec import hash_keys_to_wire, put_columns, stored_from_proto
from broker.service.shards import AppendResult, ReadRequest, ReadResult
from broker.types import NodeId, Offset, ShardUid, StreamUid


class GrpcShardForwarder:
    """`ShardForwarder` over NodeService; one deadline per call (module docstring)."""

    def __init__(
        self,
        channels: Channels,
        *,
        timeout_ms: int = limits.forward_timeout_ms,
        framed: FramedTransport | None = None,
        node_at: Callable[[str], NodeId | None] = lambda address: None,
    ) -> None:
        """`framed`: this node's framed replication sender (None: the port is off), and
        `node_at` the node whose gRPC address that is (None: unknown, the append goes over
        gRPC)."""
        self._channels = channels
        self._timeout_s = timeout_ms / 1000
        self._framed = framed
        self._node_at = node_at

    async def append(
        self,
        address: str,
        *,
        stream_uid: StreamUid,
        shard_uid: ShardUid,
        epoch: int,
        records: NewRecords,
    ) -> AppendResult:
        request = pb.ShardAppendRequest(
            stream_uid=stream_uid,
            shard_uid=shard_uid,
            epoch=epoch,
            hash_keys=hash_keys_to_wire(records.hash_keys),
        )
        answer = await self._append_framed(address, request, records)
        if answer is None:
            request.records.extend(records_to_proto(records))  # what every release reads
            call = unary(
                self._channels.get(address), NODE_SERVICE, "ShardAppend", pb.ShardAppendResponse
            )
            try:
                answer = await call(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise refusal_from_rpc_error(exc, shard_uid) from exc
        return AppendResult(
            first_offset=Offset(answer.first_offset),
            arrival_ms=answer.arrival_ms,
            throttled=tuple(answer.throttled),
        )

    async def _append_framed(
        self, address: str, request: pb.ShardAppendRequest, records: NewRecords
    ) -> pb.ShardAppendResponse | None:
        """The answer over the framed connection, `records` sent as columns (shard_codec);
        None when the append did not go that way (it was not sent: the caller uses gRPC, and
        `request` is as it was). Raises what a gRPC call's failure becomes."""
        framed = self._framed
        node_id = None if framed is None else self._node_at(address)
        if framed is None or node_id is None or not framed.serves_appends(node_id):
            return None
        shard_uid = ShardUid(request.shard_uid)
        columns = pb.ShardAppendRequest()
        columns.CopyFrom(request)
        put_columns(columns, records)
        try:
            answer = await framed.append(node_id, columns, timeout_s=self._timeout_s)
        except (TimeoutError, ConnectionError) as error:
            # Sent, perhaps served, answer lost: the node may have stored the records.
            raise ShardRefusedError(
                RefusalReason.OUTCOME_UNKNOWN,
                shard_uid=shard_uid,
                detail=str(error) or type(error).__name__,
            ) from error
        if answer is None:
            return None
        if answer.HasField("response"):
            return answer.response
        raise error_from_wire_status(answer.status, shard_uid)

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
            records=RecordPage.of(stored_from_proto(answer.records)),
            log_start=Offset(answer.log_start),
            readable_end=Offset(answer.readable_end),
            next_offset=Offset(answer.next_offset),
            timestamp_offset=(
                Offset(answer.timestamp_offset) if answer.HasField("timestamp_offset") else None
            ),
            throttled=answer.throttled,
            end_is_committed_end=not answer.end_may_lag,
        )
