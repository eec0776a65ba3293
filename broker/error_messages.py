"""AWS's error texts, written down once: the messages of `errors.ErrorCode` errors.

`errors.py` names every error (its Kinesis name and statuses); this module holds the words AWS
sends with them, so that a text an application logs or matches is spelled in one place and
every module that raises it (the gateway's validation, the services, the metadata transitions,
the pure rules in `streams/`) says it the same way. Pure: strings in, strings (or ShoalErrors)
out; importable from every layer, like `errors.py`.

The validation texts follow AWS's Coral framework:

    2 validation errors detected: Value null at 'streamName' failed to satisfy constraint:
    Member must not be null; Value '0' at 'shardCount' failed to satisfy constraint: ...
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.errors import ErrorCode, ShoalError

# --- ValidationException ------------------------------------------------------------------

MUST_NOT_BE_NULL = "Member must not be null"


def member_path(name: str) -> str:
    """AWS reports members in lowerCamelCase: `StreamARN` -> `streamARN`."""
    return name[:1].lower() + name[1:]


def constraint_violation(rendered_value: str, path: str, constraint: str) -> str:
    """One violation: `Value 'x' at 'path' failed to satisfy constraint: Member must ...`.
    `rendered_value` is already quoted (or `null`)."""
    return f"Value {rendered_value} at '{path}' failed to satisfy constraint: {constraint}"


def validation_errors(problems: Sequence[str], *, shown_max: int | None = None) -> str:
    """`N validation error(s) detected: ` and the violations joined with `; `."""
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    shown = problems if shown_max is None else problems[:shown_max]
    return f"{count} validation {noun} detected: " + "; ".join(shown)


def validation_error(rendered_value: str, path: str, constraint: str) -> ShoalError:
    """A ValidationException with one violation."""
    return ShoalError(
        ErrorCode.VALIDATION,
        validation_errors([constraint_violation(rendered_value, path, constraint)]),
    )


def missing_member(path: str) -> ShoalError:
    """A member AWS requires although the model leaves it optional (the model's `StreamId`
    alternative makes `StreamARN` optional; a `USER_PARTITION_KEY` stream needs a key)."""
    return validation_error("null", path, MUST_NOT_BE_NULL)


STREAM_NAME_OR_ARN = "Either StreamName or StreamARN should be provided."

NO_MESSAGE = ""  # errors AWS sends with no message at all (the body has only `__type`)

# --- SerializationException ---------------------------------------------------------------

NOT_A_STRUCTURE = "Start of structure or map found where not expected."


def malformed_message(message_name: str) -> str:
    """The gRPC door's answer to bytes that do not parse as the RPC's request message."""
    return f"The request is not a valid {message_name} message."


# --- ResourceNotFoundException ------------------------------------------------------------


def stream_not_found(name: str, account_id: str) -> str:
    return f"Stream {name} under account {account_id} not found."


def resource_policy_not_found(arn: str) -> str:
    return f"No resource policy found for resource ARN {arn}."


def consumer_not_found(arn: str) -> str:
    return f"Consumer {arn} not found."


# --- InvalidArgumentException -------------------------------------------------------------


def invalid_policy(reason: str) -> str:
    return f"Invalid policy document: {reason}"


def on_demand_only(what: str, stream_name: str, account_id: str) -> str:
    return (
        f"{what} is supported only for streams in ON_DEMAND capacity mode; stream "
        f"{stream_name} under account {account_id} is PROVISIONED."
    )


def warm_throughput_needs_on_demand(stream_name: str, account_id: str) -> str:
    return on_demand_only("Warm throughput", stream_name, account_id)


def distribution_needs_on_demand(stream_name: str, account_id: str) -> str:
    return on_demand_only("The AUTO record distribution strategy", stream_name, account_id)


WARM_THROUGHPUT_NEEDS_COMMITMENT = (
    "Warm throughput requires MinimumThroughputBillingCommitment to be enabled for the account."
)


def warm_throughput_too_high(requested: int, maximum: int) -> str:
    return f"Requested warm throughput {requested} MiBps exceeds the maximum of {maximum} MiBps."


ENCRYPTION_TYPE_MUST_BE_KMS = "Only KMS is a valid EncryptionType for this operation."
ENCRYPTION_NOT_CONFIGURED = "Encryption at rest is not available on this node (no master keys)."


def encryption_key_mismatch(key_id: str, stream_name: str) -> str:
    return f"KeyId {key_id} is not the key stream {stream_name} is encrypted with."


# --- GetShardIterator and shard ids ---------------------------------------------------------


def shard_not_found(shard_id: str, stream_name: str, account_id: str) -> str:
    """A well-formed shard id (normalised to `shardId-%012d`) the stream does not have."""
    return f"Shard {shard_id} in stream {stream_name} under account {account_id} does not exist"


def shard_id_not_understood(raw_shard_id: str, stream_name: str, account_id: str) -> str:
    """A shard id AWS cannot read a shard number from: echoed as the caller sent it."""
    return (
        f"Could not find shard {raw_shard_id} in stream {stream_name} under account {account_id}."
    )


def iterator_position_mismatch(kind: str, *, has_number: bool) -> str:
    """GetShardIterator with a StartingSequenceNumber where its type takes none, or without
    one where it needs one."""
    specified = (
        f"{kind} and also a StartingSequenceNumber"
        if has_number
        else f"{kind} and no StartingSequenceNumber"
    )
    return (
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
        "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. "
        f"Request specified {specified}."
    )


def timestamp_in_the_future(timestamp_ms: int, now_ms: int) -> str:
    return (
        f"The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. "
        f"timestampInMillis: {timestamp_ms}, currentTimestampInMillis: {now_ms}"
    )
