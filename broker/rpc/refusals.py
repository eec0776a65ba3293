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


def status_to_wire(status: grpc.Status) -> bytes:
    """A status a NodeService handler ends with, as the google.rpc.Status a framed ANSWER
    carries (`FramedAppendAnswer.status`): its rich details when it has them (refusals and
    Kinesis errors do), else its code and message."""
    for key, value in status.trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    plain = status_pb2.Status(code=status.code.value[0], message=status.details or "")
    encoded: bytes = plain.SerializeToString()
    return encoded


def error_from_wire_status(raw: bytes, shard_uid: ShardUid) -> Exception:
    """What `refusal_from_rpc_error` makes of the failed gRPC call that `status_to_wire`'s
    status stands for (one decoding for both paths)."""
    status = status_pb2.Status.FromString(raw)
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    failed = grpc.aio.AioRpcError(
        code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata((STATUS_DETAILS_KEY, raw)),
        details=status.message,
    )
    return refusal_from_rpc_error(failed, shard_uid)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """gRPC's UNAVAILABLE before a connection existed (refused, unreachable): the request
    never left this node. Any other UNAVAILABLE may have reached the server."""
    details = (exc.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details
