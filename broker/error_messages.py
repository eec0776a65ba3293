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
CREATED_ENCRYPTED_NEEDS_BOTH = "A stream created encrypted needs both its KeyId and its data key."


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
    "Unicode letters, digits, white space, _ . / = + - % @ :."
)


def tag_percent_refused(verb: str, stream_name: str, account_id: str) -> str:
    """`verb` is "add tags to" or "remove tags from"."""
    return (
        f"Failed to {verb} stream {stream_name} under account {account_id} because some tags "
        "contained illegal characters. The allowed characters are Unicode letters, "
        "white-spaces, '_',',','/','=','+','-','@',':'."
    )


# --- Resharding (SplitShard, MergeShards, UpdateShardCount; streams/resharding.py) ----------


def split_key_out_of_range(
    key: int, shard_id: str, stream: str, account_id: str, start: int, end: int
) -> str:
    return (
        f"NewStartingHashKey {key} used in SplitShard() on shard {shard_id} in stream {stream} "
        f"under account {account_id} is not both greater than one plus the shard's "
        f"StartingHashKey {start} and less than the shard's EndingHashKey {end}."
    )


def shards_not_adjacent(shard_id: str, adjacent_id: str, stream: str, account_id: str) -> str:
    return (
        f"Shards {shard_id} and {adjacent_id} in stream {stream} under account {account_id} "
        "are not an adjacent pair of shards eligible for merging"
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


def reshard_shard_not_found(shard_id: str, stream: str, account_id: str) -> str:
    """SplitShard's and MergeShards' text for a shard the stream does not have (kinesalite's
    recordings; GetShardIterator and the data plane say `shard_not_found`)."""
    return f"Could not find shard {shard_id} in stream {stream} under account {account_id}."


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


# --- Channels (broker/firehose/channels.py) --------------------------------------------------
# Like the queues': no recorded AWS texts yet; the wording follows the model's documentation.


def channel_not_found(arn: str) -> str:
    return f"Channel {arn} not found."


def channel_name_in_use(name: str, account_id: str) -> str:
    return f"Channel {name} under account {account_id} already exists."


def channel_needs_on_demand(stream_arn: str) -> str:
    return (
        "Channels are supported only on data streams in on-demand capacity mode; "
        f"stream {stream_arn} is in provisioned mode."
    )


def channel_not_active(arn: str, status: str) -> str:
    return f"Channel {arn} is in {status} state; the operation needs it ACTIVE."


def channel_other_destination(kind: str) -> str:
    return f"{kind} does not match the channel's destination, which cannot be changed."


def channel_freshness_out_of_range(seconds: int) -> str:
    return f"DataFreshnessInSeconds must be between 0 and 900 seconds; got {seconds}."


def stream_has_channels(stream_name: str, account_id: str) -> str:
    return (
        f"Stream {stream_name} under account {account_id} has channels; delete every channel "
        "on the stream first."
    )


CHANNEL_ONE_DESTINATION = (
    "Exactly one of S3DestinationConfiguration and S3TablesDestinationConfiguration must be "
    "specified."
)
CHANNEL_ONE_STREAM = (
    "Shoal's channels read a single data stream: StreamConfigurationList must contain exactly "
    "one entry."
)
CHANNEL_ONE_TABLE = (
    "Shoal's channels write to a single table: S3TablesConfigurationList must contain exactly "
    "one entry."
)
CHANNEL_SCHEMA_REQUIRED = "GSRSchemaARN is required when RecordFormatType is GSR_JSON."
CHANNEL_SCHEMA_NOT_ALLOWED = "GSRSchemaARN can only be specified when RecordFormatType is GSR_JSON."


# --- Texts moved here from the modules that raise them (issue 14) --------------------------
# Shoal's own wording where AWS publishes none (cluster administration, Shoal's limits);
# AWS's where it is known (recorded by kinesalite and kinesis-mock).

# service/account.py


def commitment_status_not_in_enum(*, status: object) -> str:
    return (
        f"1 validation error detected: Value '{status}' at "
        "'minimumThroughputBillingCommitment.status' failed to satisfy constraint: Member must "
        "satisfy enum value set: [ENABLED, DISABLED]"
    )


def unknown_names(*, what: object, unknown: object, known: object) -> str:
    return f"Unknown {what} {unknown}; expected one of {known}."


def account_limit_out_of_range(*, name: object, account_limit_max: object, value: object) -> str:
    return f"{name} must be within 0..{account_limit_max}, got {value}."


def limit_set_and_reset(*, name: object) -> str:
    return f"{name} is both set and reset."


def shard_rate_out_of_range(
    *, name: object, shard_rate_per_second_max: object, value: object
) -> str:
    return f"{name} must be 0 (unlimited) or a rate up to {shard_rate_per_second_max}, got {value}."


# service/capacity.py


def capacity_limit_out_of_range(*, limit_max: object, limit: object) -> str:
    return f"limit must be within 1..{limit_max}, got {limit}."


def open_shard_not_found(*, shard_id: object, name: object) -> str:
    return f"Could not find shard {shard_id} in stream {name}, or it is closed."


# service/context.py


def invalid_stream_arn(*, arn: object) -> str:
    return f"Invalid StreamARN {arn}."


def stream_arn_not_found(*, arn: object) -> str:
    return f"Stream {arn} not found."


def stream_name_arn_mismatch(*, name: object, arn: object) -> str:
    return f"StreamName {name} does not match the stream in StreamARN {arn}."


# service/control.py


def too_many_tags_at_creation(*, tags_per_stream_max: object) -> str:
    return f"A stream cannot have more than {tags_per_stream_max} tags."


SHARD_ID_REQUIRED_AFTER_SHARD_ID = "ShardId must be provided with AFTER_SHARD_ID."


def timestamp_required_for(*, kind: object) -> str:
    return f"Timestamp must be provided with {kind}."


def too_many_tags_in_request(*, tags_per_call_max: object) -> str:
    return f"Cannot add more than {tags_per_call_max} tags in one request."


SHARD_COUNT_NULL = (
    "1 validation error detected: Value null at 'shardCount' failed to satisfy constraint: Member "
    "must not be null"
)

NEXT_TOKEN_WITH_STREAM_NAME = "NextToken and StreamName cannot be provided together."

NEXT_TOKEN_STREAM_GONE = "The stream of NextToken is gone."

# service/kinesis.py


def reserved_stream_name(*, prefix: object) -> str:
    return f"Stream names starting with {prefix} are reserved by Shoal."


# service/records.py

INTERNAL_SERVICE_FAILURE = "Internal service failure."


def record_too_large(*, path: object, size_max: object) -> str:
    return (
        f"1 validation error detected: Value at '{path}' failed to satisfy constraint: Member "
        f"must have length less than or equal to {size_max} (partition key and data together)"
    )


def iterator_number_required(*, number_field: object, kind: object, type_field: object) -> str:
    return f"Must specify {number_field} for {kind} {type_field}."


def iterator_number_not_allowed(*, number_field: object, kind: object, type_field: object) -> str:
    return f"Request should not contain {number_field} for {kind} {type_field}."


ITERATOR_TIMESTAMP_REQUIRED = (
    "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP."
)


def iterator_timestamp_not_allowed(*, kind: object, type_field: object) -> str:
    return f"Request should not contain a timestamp for {kind} {type_field}."


def put_records_too_large(*, put_records_bytes_max: object) -> str:
    return f"Records size exceeds {put_records_bytes_max} MB limit"


def iterator_shard_gone(*, shard_index: object, account_phrase: object) -> str:
    return f"Shard {shard_index} in the iterator's stream {account_phrase} does not exist"


# service/shards.py

EXPIRED_READ_DID_NOT_CONVERGE = "reading past expired records did not converge"


def damaged_replica_range(*, shard_id: object, start_offset: object, damaged_on: object) -> str:
    return (
        f"Records of {shard_id} from sequence position {start_offset} cannot be read: the replica "
        f"on {damaged_on} is damaged there and no other replica could serve them."
    )


def subscription_exists_on_this_shard(*, consumer_arn: object) -> str:
    return f"Another active subscription exists for consumer {consumer_arn} and this shard."


# service/stream_consumers.py


def invalid_consumer_arn(*, arn: object) -> str:
    return f"Invalid ConsumerARN {arn}."


CONSUMER_ARN_OR_STREAM_AND_NAME = (
    "Either ConsumerARN or both StreamARN and ConsumerName must be provided."
)


def consumer_arn_mismatch(*, consumer_arn: object) -> str:
    return f"StreamARN and ConsumerName must match ConsumerARN {consumer_arn}."


NEXT_TOKEN_OTHER_STREAM = "NextToken is not for this stream."

# service/subscriptions.py


def subscription_taken_over(*, consumer_arn: object, shard_id: object) -> str:
    return f"Another subscription of consumer {consumer_arn} to shard {shard_id} took over."


def consumer_was_deregistered(*, consumer_arn: object) -> str:
    return f"Consumer {consumer_arn} was deregistered."


def subscription_exists(*, arn: object, shard_id: object) -> str:
    return f"Another active subscription exists for consumer {arn} and shard {shard_id}."


NODE_SHUTTING_DOWN = "The node is shutting down."


def consumer_not_active(*, arn: object, status: object) -> str:
    return f"Consumer {arn} is not in ACTIVE state (it is {status})."


def node_subscriptions_full(*, count: object) -> str:
    return f"This node holds {count} subscriptions, its limit."


# service/throughput.py


def shard_rate_exceeded(*, shard_id: object, stream_name: object, account_id: object) -> str:
    return f"Rate exceeded for shard {shard_id} in stream {stream_name} under account {account_id}."


def shard_read_rate_exceeded(*, account_id: object, stream_name: object, shard_id: object) -> str:
    return f"Rate exceeded for Shard - {account_id}/{stream_name}/{shard_id}"


# service/tokens.py

INVALID_NEXT_TOKEN = "Invalid NextToken."

NEXT_TOKEN_EXPIRED = "The NextToken has expired. Tokens are valid for 300 seconds."

# streams/hash_keys.py


def hash_key_out_of_range(*, field: object, text: object) -> str:
    return (
        f"Invalid {field}. {field} must be in the range: [0, 2^128-1]. Specified value was {text}"
    )


# streams/iterators.py


def iterator_expired(*, issued_ms: object, now_ms: object, iterator_age_ms_max: object) -> str:
    return (
        f"Iterator expired. The iterator was created at time {issued_ms} while right now it is "
        f"{now_ms} which is further in the future than the tolerated delay of "
        f"{iterator_age_ms_max} milliseconds."
    )


# streams/resharding.py


def single_key_shard_cannot_split(*, shard_id: object) -> str:
    return (
        f"UpdateShardCount cannot scale up: shard {shard_id} holds a single hash key and cannot "
        "be split in half. Merge it with a neighbour first."
    )


# streams/sequence_numbers.py


def invalid_sequence_number(*, text: object) -> str:
    return f"Invalid SequenceNumber {text}."


def sequence_number_other_shard(
    *, field: object, encoded_shard_id: object, shard_id: object
) -> str:
    return (
        f"Invalid {field}. It encodes {encoded_shard_id}, while it was used in a call to a shard "
        f"with {shard_id}"
    )


def sequence_number_other_stream(
    *,
    field: object,
    text: object,
    operation: object,
    shard_id: object,
    stream_name: object,
    account_id: object,
) -> str:
    return (
        f"{field} {text} used in {operation} on shard {shard_id} in stream {stream_name} under "
        f"account {account_id} is invalid because it did not come from this stream."
    )


def exclusive_minimum_invalid(*, text: object, stream_name: object, account_id: object) -> str:
    """PutRecord's SequenceNumberForOrdering that AWS cannot read (kinesalite's recordings)."""
    return (
        f"ExclusiveMinimumSequenceNumber {text} used in PutRecord on stream {stream_name} under "
        f"account {account_id} is invalid."
    )


def sequence_number_invalid(
    *,
    field: object,
    text: object,
    operation: object,
    shard_id: object,
    stream_name: object,
    account_id: object,
) -> str:
    return (
        f"{field} {text} used in {operation} on shard {shard_id} in stream {stream_name} under "
        f"account {account_id} is invalid."
    )


# streams/shard_listing.py

SHARD_FILTER_TIMESTAMP_REQUIRED = (
    "Timestamp must be supplied in a ShardFilter with a Type of FROM_TIMESTAMP or AT_TIMESTAMP"
)


def shard_filter_type_not_in_enum(*, filter_type: object, filter_types: object) -> str:
    return (
        f"1 validation error detected: Value '{filter_type}' at 'shardFilter.type' failed to "
        f"satisfy constraint: Member must satisfy enum value set: [{filter_types}]"
    )


SHARD_FILTER_SHARD_ID_REQUIRED = (
    "ShardId must be supplied in a ShardFilter with a Type of AFTER_SHARD_ID"
)

# queues/operations.py


def queue_tags_at_creation(*, tags_per_stream_max: object) -> str:
    return f"A queue cannot have more than {tags_per_stream_max} tags."


# meta/transitions/nodes.py


def replication_factor_too_small(*, replication_factor: object) -> str:
    return (
        f"1 validation error detected: Value '{replication_factor}' at 'replicationFactor' failed "
        "to satisfy constraint: Member must have value greater than or equal to 1"
    )


def requested_replication_factor_invalid(*, requested: object, placed: object) -> str:
    return (
        f"The requested replication factor {requested} must be above the {placed} replicas "
        "placed now and at most 7."
    )


def too_few_active_nodes(*, replication_factor: object, active: object) -> str:
    return f"Cannot place {replication_factor} replicas per shard: only {active} nodes are ACTIVE."


def node_not_registered(*, node_id: object) -> str:
    return f"Node {node_id} is not registered."


NODE_ID_AND_ADDRESS_REQUIRED = "A node needs a node id and an API address."

USE_REMOVE_NODE = "Use RemoveNode to remove a node."


def node_was_removed(*, node_id: object) -> str:
    return f"Node {node_id} was removed; it must register again first."


def node_incarnation_mismatch(
    *, node_id: object, incarnation: object, expected_incarnation: object
) -> str:
    return f"Node {node_id} is at incarnation {incarnation}, not {expected_incarnation}."


def stream_uid_not_found(*, stream_uid: object) -> str:
    return f"Stream with id {stream_uid} not found."


def shard_index_not_found(*, shard_index: object, name: object) -> str:
    return f"Shard {shard_index} of stream {name} not found."


def shard_epoch_mismatch(
    *, shard_id: object, name: object, epoch: object, expected_epoch: object
) -> str:
    return f"Shard {shard_id} of stream {name} is at epoch {epoch}, not {expected_epoch}."


def epoch_not_raised(*, expected_epoch: object, epoch: object) -> str:
    return f"A new epoch must exceed {expected_epoch}, got {epoch}."


def bad_replica_set(*, replicas: object) -> str:
    return f"Bad replica set {replicas}: empty or repeated."


def replica_set_changes_too_much(*, shard_id: object, current: object, proposed: object) -> str:
    return (
        f"The replica set of {shard_id} may change by one node per epoch: {current} -> {proposed}."
    )


def leader_not_a_replica(*, leader: object) -> str:
    return f"Leader {leader} is not one of the replicas."


def node_cannot_lead(*, leader: object, state: object) -> str:
    return f"Node {leader} is {state}; only an ACTIVE or DRAINING node may lead."


def api_address_in_use(*, node_id: object, api_address: object) -> str:
    return f"Node {node_id} already uses the API address {api_address}."


def replica_not_registered(*, node_id: object) -> str:
    return f"Replica {node_id} is not a registered node."


def node_still_holds_replica(*, node_id: object, shard_id: object, name: object) -> str:
    return f"Node {node_id} still holds a replica of {shard_id} of stream {name}; drain it first."


# meta/transitions/stream_consumers.py


def stream_not_active(*, name: object, account_id: object, status: object) -> str:
    return f"Stream {name} under account {account_id} not ACTIVE, instead in state {status}"


def consumer_tags_at_creation(*, tags_per_stream_max: object) -> str:
    return f"A consumer cannot have more than {tags_per_stream_max} tags."


def too_many_consumer_tags(*, name: object, tags_per_stream_max: object) -> str:
    return (
        f"Failed to add tags to consumer {name} because a given resource cannot have more than "
        f"{tags_per_stream_max} tags associated with it."
    )


def shard_does_not_exist(*, shard_id: object, name: object, account_id: object) -> str:
    return f"Shard {shard_id} in stream {name} under account {account_id} does not exist"


def consumer_name_not_found(*, consumer_name: object, name: object) -> str:
    return f"Consumer {consumer_name} under stream {name} not found."


# meta/transitions/stream_lifecycle.py


def stream_already_exists(*, name: object, account_id: object) -> str:
    return f"Stream {name} under account {account_id} already exists."


def shard_count_out_of_range(*, shard_count: object, shard_count_per_stream_max: object) -> str:
    return (
        f"1 validation error detected: Value '{shard_count}' at 'shardCount' failed to satisfy "
        f"constraint: Member must have value between 1 and {shard_count_per_stream_max}"
    )


def stream_has_consumers(*, name: object, account_id: object) -> str:
    return (
        f"Stream {name} under account {account_id} has registered consumers; deregister them or "
        "set EnforceConsumerDeletion."
    )


# meta/transitions/account_limits.py


def shard_limit_exceeded(
    *,
    account_id: object,
    region: object,
    count: object,
    limit: object,
    additional: object,
    limits_page: object,
) -> str:
    return (
        f"This request would exceed the shard limit for the account {account_id} in {region}. "
        f"Current shard count for the account: {count}. Limit: {limit}. Number of additional "
        f"shards that would have resulted from this request: {additional}. {limits_page}"
    )


def on_demand_limit_exceeded(
    *, account_id: object, region: object, count: object, limit: object, limits_page: object
) -> str:
    return (
        f"This request would exceed the on-demand stream limit for the account {account_id} in "
        f"{region}. Current on-demand stream count for the account: {count}. Limit: {limit}. "
        f"{limits_page}"
    )


# meta/transitions/common.py


# meta/transitions/reshards.py


def stream_uid_not_found_in_account(*, stream_uid: object, account_id: object) -> str:
    return f"Stream with id {stream_uid} under account {account_id} not found."


def reshard_sealed_mismatch(*, name: object, end_offsets: object, sealed: object) -> str:
    return (
        f"CompleteReshard for stream {name} names shards {end_offsets} but the pending reshard "
        f"sealed {sealed}."
    )


# meta/capacity.py


def stream_incarnation_not_found(*, stream_uid: object) -> str:
    return f"Stream incarnation {stream_uid} not found."


def autoscale_dropped(*, name: object) -> str:
    return (
        f"Stream {name} is no longer in ON_DEMAND capacity mode; the automatic reshard is dropped."
    )


def invalid_region(region: object) -> str:
    return f"The region {region!r} in x-shoal-region is not a region name (e.g. us-east-1)."


STREAM_NAME_EMPTY = "stream_name must not be empty."


# gateway/sigv4.py: the AWS door's signature texts, as AWS sends them

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
BOTH_AUTHORIZATION_FORMS = (
    "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
)
AUTHORIZATION_NEEDS_A_DATE = (
    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
)
QUERY_SIGNATURE_REEXAMINE = "Re-examine the query-string parameters."
EXPIRES_NOT_A_NUMBER = "X-Amz-Expires should be a number"
HOST_NOT_SIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
PAYLOAD_HASH_MISMATCH = (
    "The provided 'x-amz-content-sha256' header does not match what was computed."
)


def unsupported_signing_algorithm(*, algorithm: object, supported: object) -> str:
    return f"Unsupported AWS 'algorithm': '{algorithm}' (only {supported} for now). "


def credential_elements(*, credential: object) -> str:
    return (
        "Credential must have exactly 5 slash-delimited elements, "
        f"e.g. keyid/date/region/service/term, got '{credential}'"
    )


def credential_region(*, region: object) -> str:
    return f"Credential should be scoped to a valid region, not '{region}'."


def credential_service(*, service: object) -> str:
    return f"Credential should be scoped to correct service: '{service}'."


def credential_terminator(*, expected: object, terminator: object) -> str:
    return f"Credential should be scoped with a valid terminator: '{expected}', not '{terminator}'."


def credential_date(*, date: object, amz_date: object) -> str:
    return (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
        f"from HTTP: '{date}' != '{str(amz_date)[:8]}', from '{amz_date}'."
    )


def authorization_pair(*, pair: object, authorization: object) -> str:
    return (
        f"'{pair}' not a valid key=value pair (missing equal-sign) in Authorization "
        f"header: '{authorization}'."
    )


def authorization_needs(*, parameter: object) -> str:
    return f"Authorization header requires '{parameter}' parameter. "


def incomplete_authorization(*, problems: object, authorization: object) -> str:
    return f"{problems}Authorization={authorization}"


def query_signature_needs(*, parameter: object) -> str:
    return f"AWS query-string parameters must include '{parameter}'. "


def bad_signing_date(*, value: object) -> str:
    return (
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def expires_too_long(*, seconds_max: object) -> str:
    return f"X-Amz-Expires must be less than a week (in seconds) that is {seconds_max}"


def signature_not_yet_current(*, amz_date: object, latest: object, now: object) -> str:
    return f"Signature not yet current: {amz_date} is still later than {latest} ({now} + 5 min.)"


def signature_expired(*, amz_date: object, earliest: object, now: object, window: object) -> str:
    """`window`: "5 min." for a signed request, "<n> sec." for a presigned one."""
    return f"Signature expired: {amz_date} is now earlier than {earliest} ({now} - {window})"


def too_many_signed_headers(*, count_max: object, count: object) -> str:
    return f"At most {count_max} headers may be signed, got {count}."


def unsupported_payload_hash(*, declared: object) -> str:
    return f"The 'x-amz-content-sha256' value '{declared}' is not supported by this service."


# gateway/iam_service.py (IAM's texts for a missing principal or key)


def principal_not_found(*, arn: object) -> str:
    return f"The principal {arn} cannot be found."


def access_key_not_found(*, access_key_id: object) -> str:
    return f"The Access Key with id {access_key_id} cannot be found."


def key_status_not_in_enum(*, status: object) -> str:
    return (
        f"Value '{status}' at 'status' failed to satisfy constraint: "
        "Member must satisfy enum value set: [Active, Inactive]"
    )


# gateway/lease_codec.py

LEASE_CHECKPOINT_MISSING = "a checkpoint request needs a checkpoint"


def invalid_lease_answer(*, problem: object) -> str:
    return f"the lease service sent an invalid lease: {problem}"


def too_many_leases(*, leases_max: object) -> str:
    return f"at most {leases_max} leases per request"


# gateway/rest_json.py (the REST-JSON services' bodies)

BODY_NOT_JSON = "The body is not valid JSON."
BODY_NOT_JSON_OBJECT = "The body is not a JSON object."


# gateway/signaling_ws.py

SIGNALING_CHANNEL_ARN_REQUIRED = "X-Amz-ChannelARN is required."
SIGNALING_CLIENT_ID_INVALID = "X-Amz-ClientId is not valid."


# gateway/video_http.py


def video_operation_not_served(*, operation: object) -> str:
    return f"Shoal does not serve {operation} yet."


# gateway/iam_service.py: the IamService's request checks (Shoal's own API)

IAM_ACCOUNT_ID_INVALID = "account_id must be 12 digits."
IAM_NAME_INVALID = "name must be 1 to 64 characters of [A-Za-z0-9+=,.@_-]."
IAM_KIND_INVALID = "kind must be user or role."
IAM_POLICY_NAME_INVALID = "policy_name must be 1 to 128 characters of [A-Za-z0-9+=,.@_-]."
IAM_ACTION_INVALID = "action must look like service:Operation, e.g. kinesis:PutRecord."


def iam_max_results_out_of_range(*, results_max: object) -> str:
    return f"max_results must be between 1 and {results_max}."


# gateway/grpc_auth.py: the gRPC door's signature and node-identity refusals

GRPC_NODE_SIGNATURE_INVALID = "The node signature is not valid."
GRPC_SIGNATURE_INCOMPLETE = "The request signature is incomplete."
GRPC_SIGNATURE_MISMATCH = "The request signature does not match."


def grpc_signature_expired(*, date: object) -> str:
    return f"Signature expired: {date} is not within 5 minutes of the node's time."


def grpc_nodes_only(*, method: object) -> str:
    return f"Only cluster nodes may call {method}"


def grpc_not_for_nodes(*, method: object) -> str:
    return f"A node identity cannot call {method}"


# --- Kinesis Video Streams' metadata transitions (meta/transitions/video_streams.py, ---------
# --- signaling_channels.py; the rest of Kinesis Video's texts: broker/video/messages.py) ------


def video_stream_exists(*, name: object) -> str:
    return f"The stream {name} already exists."


def video_stream_not_active(*, name: object, status: object) -> str:
    return f"The stream {name} is {status}; it must be ACTIVE for this operation."


def video_retention_out_of_range(*, hours: object, maximum: object) -> str:
    return f"The data retention would be {hours} hours; it must be between 0 and {maximum}."


def signaling_channel_exists(*, name: object) -> str:
    return f"The signaling channel {name} already exists."


def signaling_channel_not_active(*, name: object, status: object) -> str:
    return f"The signaling channel {name} is {status}; it must be ACTIVE."


def video_edge_configuration_busy(*, name: object, status: object) -> str:
    return (
        f"The edge configuration of stream {name} is {status}; wait until it is IN_SYNC or "
        "SYNC_FAILED before updating it."
    )


def video_edge_other_hub_device(*, name: object, hub_device_arn: object) -> str:
    return (
        f"The edge configuration of stream {name} is for the hub device {hub_device_arn}; "
        "delete it (DeleteEdgeConfiguration) before configuring another hub device."
    )


# --- The metadata format gate (meta/frontend.py) ---------------------------------------------


def metadata_format_needed(*, needed: object, active: object) -> str:
    return (
        f"This needs metadata format {needed}; the cluster writes format {active} "
        "until every node runs a version that reads the newer one (a rolling upgrade "
        "in progress, or held by metadata_format_limit). Retry once the upgrade is done."
    )


# --- Firehose's metadata transitions (meta/transitions/delivery_streams.py; the rest of ------
# --- Firehose's texts: broker/firehose/messages.py, which broker/meta may not import) --------


def delivery_stream_not_found(*, name: object, account_id: object) -> str:
    return f"Firehose {name} under account {account_id} not found."


def delivery_stream_not_active(
    *, name: object, account_id: object, status: object, action: object
) -> str:
    return (
        f"Firehose {name} under account {account_id} is in state {status}; "
        f"{action} needs it ACTIVE."
    )


def delivery_stream_exists(*, name: object, account_id: object) -> str:
    return f"Firehose {name} under accountId {account_id} already exists"


def delivery_streams_quota(*, maximum: object, region: object, account_id: object) -> str:
    return (
        f"You have already consumed your firehose quota of {maximum} "
        f"hoses in {region} for account {account_id}."
    )


def delivery_stream_still_creating(*, name: object, account_id: object) -> str:
    return (
        f"Firehose {name} under account {account_id} is in CREATING state; "
        "it can be deleted once it is ACTIVE or CREATING_FAILED."
    )


def delivery_stream_version_mismatch(*, name: object, current: object, specified: object) -> str:
    return (
        f"Cannot update firehose: {name} since the current version id: "
        f"{current} and specified version id: {specified} "
        "do not match"
    )


def delivery_stream_destination_not_found(*, destination_id: object, name: object) -> str:
    return f"Destination Id {destination_id} not found for firehose {name}."


def delivery_stream_tags_limit(*, name: object, tags: object, maximum: object) -> str:
    return f"Firehose {name} would have {tags} tags; the limit is {maximum}."


def delivery_stream_encryption_unsettled(
    *, name: object, account_id: object, status: object
) -> str:
    return (
        f"Firehose {name} under account {account_id} has its encryption status "
        f"{status}; wait until it is settled before starting or "
        "stopping encryption again."
    )


def delivery_stream_encryption_changes_limit(
    *, name: object, account_id: object, maximum: object
) -> str:
    return (
        f"Firehose {name} under account {account_id} has reached the limit of "
        f"{maximum} StartDeliveryStreamEncryption and "
        "StopDeliveryStreamEncryption calls per 24 hours."
    )


# --- IAM's metadata transitions (meta/transitions/iam.py; principal_not_found and ------------
# --- access_key_not_found above) -------------------------------------------------------------


def iam_quota_exceeded(*, quota: object, maximum: object) -> str:
    return f"Cannot exceed quota for {quota}: {maximum}"


def iam_principal_exists(*, arn: object) -> str:
    return f"The principal {arn} already exists."


def iam_policy_not_found(*, policy_name: object, arn: object) -> str:
    return f"The policy {policy_name} of {arn} cannot be found."


def iam_certificate_subject_mapped(*, subject: object, arn: object) -> str:
    return f"The certificate subject {subject} is already mapped to {arn}."


def iam_key_of_another_principal(*, access_key_id: object) -> str:
    return f"The Access Key {access_key_id} belongs to another principal."


# --- The metadata quorum (meta/quorum.py, meta/pysyncobj_quorum.py, meta/frontend.py) -------

METADATA_QUORUM_NOT_STARTED = "The metadata quorum is not started."
METADATA_COMMAND_TIMED_OUT = (
    "Metadata unavailable: the metadata command timed out. The command may still be applied."
)
METADATA_NO_VOTER_TOOK_LEADERSHIP = "Metadata unavailable: no voter took over the leadership."
METADATA_MEMBERSHIP_CHANGE_IN_PROGRESS = (
    "Another metadata membership change is still in progress; retry."
)
LOCAL_QUORUM_ONE_VOTER = "A local quorum has one voter."


# Why the metadata is unavailable (the reason in `metadata_unavailable`'s text).
METADATA_QUORUM_STOPPED = "the metadata quorum stopped"
METADATA_COMMAND_TIMEOUT_REASON = "the metadata command timed out"
METADATA_NO_OTHER_LEADER = "the metadata quorum has no other leader"
METADATA_MEMBERSHIP_CHANGE_TIMED_OUT = "the membership change timed out"
METADATA_QUEUE_FULL = "too many metadata commands are waiting for a leader"
METADATA_NO_LEADER = "the metadata quorum has no leader"
METADATA_COMMAND_DISCARDED = "a new metadata leader replaced the command"
METADATA_LEADER_CHANGED_BEFORE_COMMIT = "the metadata leader changed before the command committed"
METADATA_LEADER_CHANGED = "the metadata leader changed; the outcome is unknown"
METADATA_COMMAND_DENIED = "the metadata leader denied the command"
METADATA_OUTCOME_UNKNOWN = "the outcome of the metadata command is unknown"


def metadata_leader_answered(*, answer: object) -> str:
    return f"the leader answered {answer!r}"


def metadata_unavailable(*, reason: object, outcome_unknown: bool) -> str:
    suffix = " The command may still be applied." if outcome_unknown else ""
    return f"Metadata unavailable: {reason}.{suffix}"


def not_a_host_port(*, address: str) -> str:
    return f"{address!r} is not a host:port address."


def metadata_quorum_cannot_listen(*, address: object) -> str:
    return f"The metadata quorum could not listen on {address}."


def metadata_state_not_reached(*, timeout_s: object) -> str:
    return f"The metadata did not reach the expected state within {timeout_s} s."


# --- The node, its shard logs and replicas (node.py, log/, replication/, rpc/) --------------

FIREHOSE_NOT_STARTED = "Firehose is not started yet."
SHARD_LOG_WRITE_FAILED = "writing the shard log failed"
LOG_WRITER_STOPPING = "the log writer is stopping"
REPLICA_PROMISE_NOT_PERSISTED = "the replica could not persist its promise"
FORWARDED_APPEND_EMPTY = "an append of no records"  # NodeService.ShardAppend


def node_holds_replicas(*, node_id: object, held: object) -> str:
    return f"Node {node_id} still holds {held} shard replicas; drain it first."


def node_rpc_failed(*, what: object, code: object, details: object) -> str:
    return f"{what}: {code} {details}"


def node_holds_no_replica(*, node_id: object, shard_uid: object) -> str:
    return f"node {node_id} holds no replica of {shard_uid}"


def node_has_no_address(*, node_id: object) -> str:
    return f"node {node_id} has no known address"


# --- Encryption keys (crypto/master_keys.py: KMS's words for a key it cannot use) -----------


def backup_stream_not_encrypted(*, stream: object) -> str:
    return f"Stream {stream} is not encrypted: its backup is not sealed."


BACKUP_KEY_INCOMPLETE = (
    "A wrapped backup key needs its key_id, stream_arn, wrapping and ciphertext."
)


def backup_master_key_missing(*, stream_arn: object, wrapping: object, error: object) -> str:
    return (
        f"The master key that wraps this backup of {stream_arn} ({wrapping}) is not available "
        f"on this cluster: {error}"
    )


def backup_key_unopenable(*, stream_arn: object, key_id: object, error: object) -> str:
    return f"The backup data key of {stream_arn} under {key_id} does not open: {error}"


def kms_key_disabled(*, arn: object) -> str:
    return f"{arn} is disabled."


def kms_key_state(*, arn: object, state_words: object) -> str:
    return f"{arn} is {state_words}."


def kms_key_not_symmetric(*, arn: object) -> str:
    return f"{arn} is not a symmetric encryption key."


def kms_unreachable(*, error: object) -> str:
    return f"KMS is not reachable: {error}"


# --- The audit trail (audit/trail.py) ---------------------------------------------------------

AUDIT_STREAM_NOT_ACTIVE = "the audit stream is not ACTIVE yet"
AUDIT_EVENTS_NOT_WRITTEN = "some audit events were not written"


# --- The lease table (consumers/leases.py, the lease service's rules) -----------------------


def lease_application_name_pattern(*, application: str) -> str:
    return f"application name {application!r} must match [a-zA-Z0-9_.-]{{1,255}}"


def lease_stream_name_pattern(*, stream_name: str) -> str:
    return f"stream name {stream_name!r} must match [a-zA-Z0-9_.-]{{1,128}}"


def lease_worker_id_invalid(*, chars_max: object) -> str:
    return f"a worker id has 1 to {chars_max} printable characters"


def lease_shard_id_length(*, shard_id: str) -> str:
    return f"shard id {shard_id!r} has 1 to 128 characters"


def lease_too_many_parents(*, shard_id: object) -> str:
    return f"shard {shard_id} has more than two parents"


def lease_own_parent(*, shard_id: object) -> str:
    return f"shard {shard_id} is its own parent"


def lease_steal_own(*, owner: str) -> str:
    return f"worker {owner!r} cannot steal its own lease"


def lease_checkpoint_below(*, checkpoint: object, current: object) -> str:
    return f"checkpoint {checkpoint} is below {current}"


def lease_not_finished(*, lease_key: object) -> str:
    return f"lease {lease_key} is not finished (checkpoint not SHARD_END)"


def lease_application_invalid(*, application: str) -> str:
    return f"application name {application!r} is not valid"


def lease_not_found(*, application: object, stream_name: object, lease_key: object) -> str:
    return f"no lease for {application}/{stream_name}/{lease_key}"


def lease_held_by_another(
    *,
    lease_key: object,
    owner: str | None,
    counter: object,
    expected_owner: str | None,
    expected_counter: object,
) -> str:
    return (
        f"lease {lease_key} is held by {owner!r} at counter "
        f"{counter}, not by {expected_owner!r} at {expected_counter}"
    )


def lease_no_application(*, application: object) -> str:
    return f"no application {application}"


# --- The Python client and the command line (client/, cli/) ---------------------------------

LIST_SHARDS_DID_NOT_END = "ListShards did not end"


def consumer_not_active_in_time(*, arn: object) -> str:
    return f"Consumer {arn} did not become ACTIVE in time."


def consumer_disappeared(*, arn: object) -> str:
    return f"Consumer {arn} disappeared."


def shard_not_listed(*, shard_id: object) -> str:
    return f"shard {shard_id} is not listed"


def delivery_stream_creating_failed(*, name: object, failure_type: object, details: object) -> str:
    return f"{name} is CREATING_FAILED: {failure_type}: {details}"


# --- The web console (console/app.py, console/actions.py) -------------------------------------

CONSOLE_KEY_UNKNOWN = "Unknown access key id or wrong secret."


def console_field_required(*, label: object) -> str:
    return f"{label} is required."


def console_not_a_whole_number(*, label: object, raw: str) -> str:
    return f"{label} must be a whole number, got {raw!r}."


def console_too_many_shards(*, maximum: object, name: object, shards: object) -> str:
    return (
        f"Reading every shard at once is offered up to {maximum} shards; "
        f"{name} has {shards}: pick one."
    )
