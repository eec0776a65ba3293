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


# --- Queues (broker/queues/) ---------------------------------------------------------------
# AWS publishes no recorded texts for these yet: the wording follows the model's
# documentation of each rule, in the shape of Kinesis' other messages.


def queue_not_found(arn: str) -> str:
    return f"Queue {arn} not found."


def queue_name_in_use(name: str, account_id: str) -> str:
    return f"Queue {name} under account {account_id} already exists."


def queue_needs_on_demand(stream_arn: str) -> str:
    return (
        f"Queues are supported only on data streams in on-demand capacity mode; "
        f"stream {stream_arn} is in provisioned mode."
    )


def stream_has_queues(stream_name: str, account_id: str) -> str:
    return (
        f"Stream {stream_name} under account {account_id} has queues; delete every queue on "
        "the stream first."
    )


def queue_not_active(arn: str, status: str) -> str:
    return f"Queue {arn} is in {status} state and cannot deliver records."


QUEUE_ONE_STREAM = (
    "StreamConfigurationList must contain exactly one entry: a queue delivers records from a "
    "single data stream."
)
QUEUE_TIMESTAMP_REQUIRED = "Timestamp is required when StartingPosition Type is AT_TIMESTAMP."
QUEUE_TIMESTAMP_NOT_ALLOWED = (
    "Timestamp can only be specified when StartingPosition Type is AT_TIMESTAMP."
)
QUEUE_MAX_RECEIVE_COUNT_REQUIRED = (
    "MaxReceiveCount is required when DeadLetterConfiguration TargetType is BUILT_IN."
)
QUEUE_MAX_RECEIVE_COUNT_NOT_ALLOWED = (
    "MaxReceiveCount can only be specified when DeadLetterConfiguration TargetType is BUILT_IN."
)
QUEUE_FILTER_ONE_STREAM = "StreamFilter must contain exactly one entry."


def queue_consumers_exceeded(stream_name: str, limit: int) -> str:
    return f"Stream {stream_name} already has {limit} registered consumers and queues, its limit."


def too_many_queue_tags(limit: int) -> str:
    return f"A queue cannot have more than {limit} tags."


def receipt_handle_invalid(handle: str) -> str:
    return f"The receipt handle {handle} is not valid for this queue."


def receipt_handle_expired(handle: str) -> str:
    return (
        f"The receipt handle {handle} has expired: the record was received again or is no "
        "longer in the queue."
    )


def record_is_dead_letter(record_id: str) -> str:
    return f"Record {record_id} is a dead-letter record; use the dead-letter queue operations."


def record_is_not_dead_letter(record_id: str) -> str:
    return f"Record {record_id} is not a dead-letter record."


def invalid_next_token(token: str) -> str:
    return f"Invalid NextToken {token}."


# --- Tag characters (AddTagsToStream, RemoveTagsFromStream, TagResource, CreateStream) -----
# AWS's texts as kinesalite recorded them (actions/addTagsToStream.js, removeTagsFromStream.js).

TAG_INVALID_CHARACTERS = (
    "Some tags contain invalid characters. Valid characters: "
    "Unicode letters, digits, white space, _ . / = + - % @."
)


def tag_percent_refused(verb: str, stream_name: str, account_id: str) -> str:
    """`verb` is "add tags to" or "remove tags from"."""
    return (
        f"Failed to {verb} stream {stream_name} under account {account_id} because some tags "
        "contained illegal characters. The allowed characters are Unicode letters, "
        "white-spaces, '_',',','/','=','+','-','@'."
    )


# --- Resharding (SplitShard, MergeShards, UpdateShardCount; streams/resharding.py) ----------


def split_key_out_of_range(key: int, shard_id: str, stream: str, start: int, end: int) -> str:
    return (
        f"NewStartingHashKey {key} used in SplitShard() on shard {shard_id} in stream {stream} "
        f"is not both greater than one plus the shard's StartingHashKey {start} and less than "
        f"the shard's EndingHashKey {end}."
    )


def shards_not_adjacent(shard_id: str, adjacent_id: str, stream: str) -> str:
    return (
        f"Shards {shard_id} and {adjacent_id} in stream {stream} are not an adjacent pair of "
        "shards eligible for merging"
    )


def shard_count_counts(open_count: int, target: int) -> str:
    return f"Current open shard count: {open_count}, Target shard count: {target}"


def shard_count_above_maximum(maximum: int, open_count: int, target: int) -> str:
    return (
        f"Target shard count or number of open shards cannot be greater than {maximum}. "
        + shard_count_counts(open_count, target)
    )


def shard_count_over_double(open_count: int, target: int) -> str:
    return "UpdateShardCount cannot scale up over double your current open shard count. " + (
        shard_count_counts(open_count, target)
    )


def shard_count_below_half(open_count: int, target: int) -> str:
    return "UpdateShardCount cannot scale down below half your current open shard count. " + (
        shard_count_counts(open_count, target)
    )


def shard_count_updates_per_day(limit: int, stream: str, calls: int) -> str:
    return (
        f"UpdateShardCount can be called at most {limit} times in a rolling 24-hour period "
        f"for stream {stream}; it was called {calls} times."
    )


def reshard_shard_not_found(shard_id: str, stream: str) -> str:
    return f"Could not find shard {shard_id} in stream {stream}."


def shard_not_eligible(shard_id: str, stream: str) -> str:
    return (
        f"Shard {shard_id} in stream {stream} has already been merged or split, and thus is "
        "not eligible for merging or splitting."
    )


def only_in_provisioned_mode(stream: str, account_id: str) -> str:
    return (
        f"Stream {stream} under account {account_id} is in ON_DEMAND capacity mode; this "
        "operation is only supported in PROVISIONED mode."
    )


# --- Stream settings (retention, record size, tags, capacity mode) ---------------------------


def retention_too_short(minimum: int, hours: int) -> str:
    return (
        f"Minimum allowed retention period is {minimum} hours. Requested retention period "
        f"({hours} hours) is too short."
    )


def retention_too_long(maximum: int, hours: int) -> str:
    return (
        f"Maximum allowed retention period is {maximum} hours. Requested retention period "
        f"({hours} hours) is too long."
    )


def retention_not_an_increase(requested: int, stream: str, existing: int) -> str:
    return (
        f"Requested retention period ({requested} hours) for stream {stream} can not be "
        f"shorter than existing retention period ({existing} hours). Use "
        "DecreaseRetentionPeriod API."
    )


def retention_not_a_decrease(requested: int, stream: str, existing: int) -> str:
    return (
        f"Requested retention period ({requested} hours) for stream {stream} can not be "
        f"longer than existing retention period ({existing} hours). Use "
        "IncreaseRetentionPeriod API."
    )


def too_many_stream_tags(stream: str, account_id: str, limit: int) -> str:
    return (
        f"Failed to add tags to stream {stream} under account {account_id} because a given "
        f"stream cannot have more than {limit} tags associated with it."
    )


def stream_mode_updates_per_day(stream: str, account_id: str, calls: int, limit: int) -> str:
    return (
        f"Stream {stream} under account {account_id} has already had its capacity mode "
        f"updated {calls} times in the last 24 hours. Limit: {limit}."
    )
