"""Internal routing refusals on the wire (`replication.refusals.ShardRefusedError`).

The serving node sends a refusal as FAILED_PRECONDITION with a `google.rpc.ErrorInfo` (domain
`internal.shoal.dev`, reason NOT_SHARD_LEADER, STALE_EPOCH, SHARD_SEALED or UNAVAILABLE,
metadata `leader` and `epoch`), the rich error model of ECOSYSTEM §4.5; the calling node turns
it back into the refusal, an unreachable node into UNAVAILABLE or OUTCOME_UNKNOWN, and anything
else into the Kinesis error it carries (`wire/error_mapping.py`).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from broker.replication.refusals import RefusalReason, ShardRefusedError
from broker.types import NodeId, ShardUid
from broker.wire.error_mapping import STATUS_DETAILS_KEY, error_from_rpc_error

INTERNAL_ERROR_DOMAIN = "internal.shoal.dev"


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
        if key != STATUS_DETAILS_KEY:
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
