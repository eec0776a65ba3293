"""LeaseService protobuf messages <-> the lease core's values (`broker.consumers.leases`).

The only place the lease service's wire types meet domain values: the servicer
(`gateway/lease_service.py`) decodes requests into lease operations and encodes leases, and the
client (`client/leases.py`) does the reverse (`*_to_message` of an operation value). Decoding a
request is strict: a checkpoint that is neither a sequence number nor a sentinel raises
ShoalError(INVALID_ARGUMENT) before anything is proposed. Name, owner and size rules are the
lease core's, checked when the operation applies.
"""

from __future__ import annotations

from broker import error_messages
from broker.api.leases.v1 import leases_pb2 as pb
from broker.consumers import leases
from broker.consumers.leases import Checkpoint, Lease, NewLease
from broker.errors import ErrorCode, ShoalError


def checkpoint_to_message(value: Checkpoint) -> pb.Checkpoint:
    return pb.Checkpoint(
        sequence_number=value.sequence_number, sub_sequence_number=value.sub_sequence_number
    )


def checkpoint_from_message(message: pb.Checkpoint) -> Checkpoint:
    """The checkpoint a message carries; INVALID_ARGUMENT if it is not one."""
    try:
        return Checkpoint(message.sequence_number, message.sub_sequence_number)
    except ValueError as exc:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc


def lease_to_message(lease: Lease) -> pb.Lease:
    message = pb.Lease(
        application=lease.application,
        stream_name=lease.stream_name,
        lease_key=lease.lease_key,
        lease_counter=lease.lease_counter,
        checkpoint=checkpoint_to_message(lease.checkpoint),
        owner_switches_since_checkpoint=lease.owner_switches_since_checkpoint,
        parent_shard_ids=lease.parent_shard_ids,
        child_shard_ids=lease.child_shard_ids,
    )
    if lease.lease_owner is not None:
        message.lease_owner = lease.lease_owner
    if lease.pending_checkpoint is not None:
        message.pending_checkpoint.CopyFrom(checkpoint_to_message(lease.pending_checkpoint))
    return message


def lease_from_message(message: pb.Lease) -> Lease:
    """The lease a response carries. A lease the core would not hold (a server bug, or a
    server of another version) is INTERNAL_FAILURE."""
    try:
        pending = message.pending_checkpoint if message.HasField("pending_checkpoint") else None
        return Lease(
            application=message.application,
            stream_name=message.stream_name,
            lease_key=message.lease_key,
            lease_owner=message.lease_owner if message.HasField("lease_owner") else None,
            lease_counter=message.lease_counter,
            checkpoint=Checkpoint(
                message.checkpoint.sequence_number, message.checkpoint.sub_sequence_number
            ),
            pending_checkpoint=(
                Checkpoint(pending.sequence_number, pending.sub_sequence_number)
                if pending is not None
                else None
            ),
            owner_switches_since_checkpoint=message.owner_switches_since_checkpoint,
            parent_shard_ids=tuple(message.parent_shard_ids),
            child_shard_ids=tuple(message.child_shard_ids),
        )
    except (ValueError, AssertionError) as exc:
        raise ShoalError(
            ErrorCode.INTERNAL_FAILURE, error_messages.invalid_lease_answer(problem=exc)
        ) from exc


def new_lease_to_message(new: NewLease) -> pb.NewLease:
    return pb.NewLease(
        shard_id=new.shard_id,
        parent_shard_ids=new.parent_shard_ids,
        checkpoint=checkpoint_to_message(new.checkpoint),
    )


def new_lease_from_message(message: pb.NewLease) -> NewLease:
    checkpoint = (
        checkpoint_from_message(message.checkpoint)
        if message.HasField("checkpoint")
        else leases.TRIM_HORIZON
    )
    return NewLease(
        shard_id=message.shard_id,
        parent_shard_ids=tuple(message.parent_shard_ids),
        checkpoint=checkpoint,
    )


def create_leases_from_message(message: pb.CreateLeasesRequest) -> leases.CreateLeases:
    if len(message.leases) > leases.LEASES_PER_REQUEST_MAX:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.too_many_leases(leases_max=leases.LEASES_PER_REQUEST_MAX),
        )
    return leases.CreateLeases(
        application=message.application,
        stream_name=message.stream_name,
        leases=tuple(new_lease_from_message(new) for new in message.leases),
    )


def take_from_message(message: pb.TakeLeaseRequest) -> leases.TakeLease:
    return leases.TakeLease(
        application=message.application,
        stream_name=message.stream_name,
        lease_key=message.lease_key,
        owner=message.owner,
        expected_owner=message.expected_owner if message.HasField("expected_owner") else None,
        expected_counter=message.expected_counter,
    )


def steal_from_message(message: pb.StealLeaseRequest) -> leases.StealLease:
    return leases.StealLease(
        application=message.application,
        stream_name=message.stream_name,
        lease_key=message.lease_key,
        owner=message.owner,
        expected_owner=message.expected_owner,
        expected_counter=message.expected_counter,
    )


def renew_from_message(message: pb.RenewLeaseRequest) -> leases.RenewLease:
    return leases.RenewLease(
        application=message.application,
        stream_name=message.stream_name,
        lease_key=message.lease_key,
        owner=message.owner,
        expected_counter=message.expected_counter,
    )


def release_from_message(message: pb.ReleaseLeaseRequest) -> leases.ReleaseLease:
    return leases.ReleaseLease(
        application=message.application,
        stream_name=message.stream_name,
        lease_key=message.lease_key,
        owner=message.owner,
        expected_counter=message.expected_counter,
    )


def checkpoint_lease_from_message(message: pb.CheckpointRequest) -> leases.CheckpointLease:
    if not message.HasField("checkpoint"):
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.LEASE_CHECKPOINT_MISSING)
    return leases.CheckpointLease(
        application=message.application,
        stream_name=message.stream_name,
        lease_key=message.lease_key,
        owner=message.owner,
        expected_counter=message.expected_counter,
        checkpoint=checkpoint_from_message(message.checkpoint),
        pending=message.pending,
    )


def delete_lease_from_message(message: pb.DeleteLeaseRequest) -> leases.DeleteLease:
    return leases.DeleteLease(
        application=message.application,
        stream_name=message.stream_name,
        lease_key=message.lease_key,
    )


def delete_application_from_message(
    message: pb.DeleteApplicationRequest,
) -> leases.DeleteApplication:
    return leases.DeleteApplication(application=message.application)


# --- Operation values -> requests (the client side) --------------------------------------------


def create_leases_to_message(operation: leases.CreateLeases) -> pb.CreateLeasesRequest:
    return pb.CreateLeasesRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        leases=[new_lease_to_message(new) for new in operation.leases],
    )


def take_to_message(operation: leases.TakeLease) -> pb.TakeLeaseRequest:
    request = pb.TakeLeaseRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        lease_key=operation.lease_key,
        owner=operation.owner,
        expected_counter=operation.expected_counter,
    )
    if operation.expected_owner is not None:
        request.expected_owner = operation.expected_owner
    return request


def steal_to_message(operation: leases.StealLease) -> pb.StealLeaseRequest:
    return pb.StealLeaseRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        lease_key=operation.lease_key,
        owner=operation.owner,
        expected_owner=operation.expected_owner,
        expected_counter=operation.expected_counter,
    )


def renew_to_message(operation: leases.RenewLease) -> pb.RenewLeaseRequest:
    return pb.RenewLeaseRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        lease_key=operation.lease_key,
        owner=operation.owner,
        expected_counter=operation.expected_counter,
    )


def release_to_message(operation: leases.ReleaseLease) -> pb.ReleaseLeaseRequest:
    return pb.ReleaseLeaseRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        lease_key=operation.lease_key,
        owner=operation.owner,
        expected_counter=operation.expected_counter,
    )


def checkpoint_lease_to_message(operation: leases.CheckpointLease) -> pb.CheckpointRequest:
    return pb.CheckpointRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        lease_key=operation.lease_key,
        owner=operation.owner,
        expected_counter=operation.expected_counter,
        checkpoint=checkpoint_to_message(operation.checkpoint),
        pending=operation.pending,
    )


def delete_lease_to_message(operation: leases.DeleteLease) -> pb.DeleteLeaseRequest:
    return pb.DeleteLeaseRequest(
        application=operation.application,
        stream_name=operation.stream_name,
        lease_key=operation.lease_key,
    )


def delete_application_to_message(
    operation: leases.DeleteApplication,
) -> pb.DeleteApplicationRequest:
    return pb.DeleteApplicationRequest(application=operation.application)
