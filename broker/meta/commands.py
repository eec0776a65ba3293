"""Metadata commands: one frozen dataclass per change to the MetadataImage.

Each command carries everything that is not deterministic: the proposer's wall clock
(`now_ms`), secrets it generated, durations from its configuration. `state_machine.apply` never
reads a clock, the environment or `random`, so every replica computes the same image.

Commands cross the Raft log as explicit, versioned bytes (`encode_command`/`decode_command`),
never as pickled objects of our classes: a replica on another version can still read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, assert_never

from broker.consumers import leases
from broker.iam.identities import AccessKey, KeyStatus, Principal
from broker.meta.capacity_table import ReportedLoad, ScalingEvent
from broker.meta.image import (
    NodeState,
    RecordDistribution,
    ReshardKind,
    StreamDataKey,
    StreamMode,
)
from broker.meta.image_codec import dataclass_from_members, to_document
from broker.meta.metadata_format import FIRST_FORMAT, command_level, members_after
from broker.meta.video_table import SignalingChannelMeta, VideoStreamMeta
from broker.queues.state import (
    CursorAdvance,
    Redelivery,
    SettleEntry,
    Settlement,
    StartingPosition,
)
from broker.streams.throttling import StreamLimits
from broker.types import NodeId, Offset, ShardIndex, StreamUid

# 2: cluster membership and shard placement (issue 4). Version 1 entries (issue 2's single-node
# journals) are refused: their CreateStream carries no replication factor and no node was
# registered to place shards on, so replaying them could not rebuild the same image.
# The lease commands (issue 5) are new types in the same format: existing commands encode as
# before, and a replica that does not know a type refuses it by name ("unknown metadata command
# type") and stops, as it would for a newer version.
COMMAND_FORMAT_VERSION = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class InitCluster:
    """Sets the cluster id and the iterator HMAC secret, once; later calls are no-ops. The
    cluster starts at the first metadata format: every node proposes this at start, before
    its image shows whether the cluster exists, so it must be readable by every version; the
    node whose InitCluster created the cluster raises the format next (SetMetadataFormat)."""

    now_ms: int
    cluster_id: str
    iterator_secret: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMetadataFormat:
    """Raises the cluster's metadata format (`metadata_format.py`); the controller proposes
    it once every registered node reads `level`. A lower or equal level is a no-op: a level
    is never lowered."""

    now_ms: int
    level: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateStream:
    now_ms: int
    name: str
    arn: str
    shard_count: int
    mode: StreamMode
    retention_hours: int
    max_record_size_kib: int
    tags: tuple[tuple[str, str], ...]
    creating_ms: int  # how long the stream shows CREATING
    shard_count_per_account_max: int
    on_demand_streams_max: int
    # Replicas per shard placed now. The proposer passes min(its configured default, ACTIVE
    # nodes it sees); apply re-checks against the ACTIVE nodes at apply time (LimitExceeded if
    # fewer).
    replication_factor: int = 1
    # On-demand streams only (InvalidArgumentException for a provisioned one).
    record_distribution: RecordDistribution = RecordDistribution.USER_PARTITION_KEY
    warm_throughput_mibps: int | None = None
    # Created encrypted (internal streams whose encryption is decided before their first
    # record): the KeyId and the first data key, wrapped. Every image holding the stream's
    # shards then holds its key, so no replica can store a record of it in the clear.
    key_id: str | None = None
    data_key: WrappedDataKey | None = None
    # The factor asked for when it is above `replication_factor` (fewer nodes ACTIVE than the
    # configured default): the stream keeps it and the controller adds the missing replicas
    # as nodes join. 0: `replication_factor` is the stream's factor.
    requested_replication_factor: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteStream:
    now_ms: int
    name: str
    deleting_ms: int  # how long the stream shows DELETING before it is gone
    # False: refused (ResourceInUse) while the stream has registered consumers, as on AWS.
    # The default keeps entries written before consumers existed meaning what they meant.
    enforce_consumer_deletion: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetStream:
    """Drops a deleted incarnation from the image once its DELETING timer has passed."""

    now_ms: int
    uid: StreamUid


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRetention:
    now_ms: int
    name: str
    retention_hours: int
    increase: bool  # True: IncreaseStreamRetentionPeriod; False: Decrease


@dataclass(frozen=True, slots=True, kw_only=True)
class AddTags:
    now_ms: int
    name: str
    tags: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveTags:
    now_ms: int
    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetEnhancedMonitoring:
    """Result: (current metrics, desired metrics), both sorted tuples."""

    now_ms: int
    name: str
    metrics: tuple[str, ...]  # "ALL" is expanded by the caller
    enable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginReshard:
    """Validates a split, merge or uniform scaling and puts the parents in SEALING.

    Result: the sealed shard indices. The stream is UPDATING until CompleteReshard and then
    until `updating_ms` after `now_ms` of the completion."""

    now_ms: int
    name: str
    kind: ReshardKind
    shard_index: ShardIndex | None = None
    adjacent_shard_index: ShardIndex | None = None
    new_starting_hash_key: int | None = None
    target_shard_count: int | None = None
    updating_ms: int = 0
    shard_count_per_account_max: int = 0
    # Set by the on-demand autoscaler (meta/autoscaler.py): the reshard is allowed on an
    # ON_DEMAND stream (and only there), and this sentence goes to the stream's scaling log.
    automatic_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteReshard:
    """Closes the sealed parents at their final log ends and opens the children."""

    now_ms: int
    stream_uid: StreamUid
    end_offsets: tuple[tuple[ShardIndex, Offset], ...]  # every sealed shard's record count
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateStreamMode:
    now_ms: int
    name: str
    mode: StreamMode
    updating_ms: int
    on_demand_streams_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateMaxRecordSize:
    now_ms: int
    name: str
    max_record_size_kib: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterNode:
    """Adds a node, or refreshes one that restarted: raises its incarnation and makes it ACTIVE
    (a DRAINING node stays DRAINING: a restart does not cancel an operator's drain).

    Result: the NodeMeta as registered."""

    now_ms: int
    node_id: NodeId
    api_address: str
    http_address: str
    raft_address: str
    voter: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SetNodeState:
    """ACTIVE, DRAINING or FENCED, applied only to the incarnation it was decided about.

    Result: the NodeMeta after the change. REMOVED is RemoveNode's, never set here."""

    now_ms: int
    node_id: NodeId
    state: NodeState
    expected_incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetShardLeader:
    """A new shard epoch with its leader and replica set (0002, leader change step 3).

    Compare-and-set: applied only while the shard's epoch is `expected_epoch`, and `epoch`
    must be greater. The replica set may change only here, by one node added or removed per
    command (Raft's single-server change: any majority of the old set meets any of the new).
    The leader must be one of the replicas and ACTIVE or DRAINING (never FENCED or REMOVED);
    None leaves the shard leaderless.
    Result: the ShardMeta after the change."""

    now_ms: int
    stream_uid: StreamUid
    shard_index: ShardIndex
    leader: NodeId | None
    epoch: int
    expected_epoch: int
    replicas: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNode:
    """Marks a node REMOVED; only when no shard of a live stream lists it as a replica.

    The metadata quorum's own membership (pysyncobj voters) is not in the image: the admin
    flow removes the node from the voters first (`MetadataQuorum.remove_voter`).
    Result: the NodeMeta after the change."""

    now_ms: int
    node_id: NodeId
    # The controller's removal of a node gone for `absent_node_replace_after_ms` (not an
    # operator's decommission): the node, should it be alive after all, registers again.
    absent: bool = False


# --- Consumer leases (issue 5) -------------------------------------------------------------------
# One command per operation of `broker.consumers.leases`, wrapping the operation's value; the
# state machine applies it with `leases.apply_lease_operation`. Results: the Lease after the
# change (take, steal, renew, release, checkpoint; the deleted lease for DeleteLease), the
# leases in request order (CreateLeases), the number of leases deleted (DeleteApplication).
# A refusal (`LeaseError`) becomes the ShoalError of its code: CONFLICT -> RESOURCE_IN_USE,
# NOT_FOUND -> RESOURCE_NOT_FOUND, INVALID -> INVALID_ARGUMENT. `now_ms` judges only whether
# the stream is live (CreateLeases); lease rules never compare times.


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateLeasesCommand:
    """Creates the missing leases of a live stream's shards (idempotent). Refused with
    RESOURCE_NOT_FOUND when the stream is absent or deleting, or a shard id is not one of its
    shards."""

    now_ms: int
    operation: leases.CreateLeases


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeLeaseCommand:
    now_ms: int
    operation: leases.TakeLease


@dataclass(frozen=True, slots=True, kw_only=True)
class StealLeaseCommand:
    now_ms: int
    operation: leases.StealLease


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewLeaseCommand:
    now_ms: int
    operation: leases.RenewLease


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseLeaseCommand:
    now_ms: int
    operation: leases.ReleaseLease


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointLeaseCommand:
    now_ms: int
    operation: leases.CheckpointLease


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteLeaseCommand:
    now_ms: int
    operation: leases.DeleteLease


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteApplicationCommand:
    now_ms: int
    operation: leases.DeleteApplication


LeaseCommand = (
    CreateLeasesCommand
    | TakeLeaseCommand
    | StealLeaseCommand
    | RenewLeaseCommand
    | ReleaseLeaseCommand
    | CheckpointLeaseCommand
    | DeleteLeaseCommand
    | DeleteApplicationCommand
)


def lease_command(operation: leases.LeaseOperation, *, now_ms: int) -> LeaseCommand:
    """The metadata command that applies `operation`, proposed at `now_ms`."""
    match operation:
        case leases.CreateLeases():
            return CreateLeasesCommand(now_ms=now_ms, operation=operation)
        case leases.TakeLease():
            return TakeLeaseCommand(now_ms=now_ms, operation=operation)
        case leases.StealLease():
            return StealLeaseCommand(now_ms=now_ms, operation=operation)
        case leases.RenewLease():
            return RenewLeaseCommand(now_ms=now_ms, operation=operation)
        case leases.ReleaseLease():
            return ReleaseLeaseCommand(now_ms=now_ms, operation=operation)
        case leases.CheckpointLease():
            return CheckpointLeaseCommand(now_ms=now_ms, operation=operation)
        case leases.DeleteLease():
            return DeleteLeaseCommand(now_ms=now_ms, operation=operation)
        case leases.DeleteApplication():
            return DeleteApplicationCommand(now_ms=now_ms, operation=operation)
        case _:
            assert_never(operation)


# --- Enhanced fan-out consumers (issue 5) ----------------------------------------------------
# The registry's rules live in `broker.consumers.registry`; apply also checks the stream.


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStreamConsumer:
    """Registers `consumer_name` on the live stream `stream_arn` names (ACTIVE or UPDATING).
    Result: the StreamConsumer as registered (CREATING for `creating_ms`)."""

    now_ms: int
    stream_arn: str
    consumer_name: str
    tags: tuple[tuple[str, str], ...]
    creating_ms: int
    consumers_per_stream_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeregisterStreamConsumer:
    """Starts deleting a consumer named by `consumer_arn`, or by `stream_arn` and
    `consumer_name` (resolved at apply time). Result: the StreamConsumer, now DELETING."""

    now_ms: int
    consumer_arn: str | None
    stream_arn: str | None
    consumer_name: str | None
    deleting_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeConsumerTags:
    """TagResource / UntagResource on a consumer ARN: adds `added`, then removes `removed`.
    Result: the StreamConsumer after the change."""

    now_ms: int
    consumer_arn: str
    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[str, ...] = ()


ConsumerCommand = RegisterStreamConsumer | DeregisterStreamConsumer | ChangeConsumerTags


# --- Limits and account settings (issue 6) ----------------------------------------------------
# The rules live in `broker.streams.throttling` (merge_overrides) and
# `broker.streams.account_settings`; apply only finds the stream and stores the result.


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateStreamLimits:
    """Sets a live stream's per-shard rate overrides: the fields set in `changes` take their
    value (0: unlimited), the fields named in `reset` follow the cluster default again.
    Result: the StreamMeta after the change."""

    now_ms: int
    name: str
    changes: StreamLimits
    reset: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAccountSettings:
    """The minimum throughput billing commitment, ENABLED (True) or DISABLED (False), judged
    at `now_ms`. Result: the AccountSettings after the change."""

    now_ms: int
    commitment_enabled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAccountLimits:
    """Sets account limits at runtime (None: unchanged); `reset` names the ones that follow
    each node's configuration again. Result: the AccountSettings after the change."""

    now_ms: int
    shard_limit: int | None = None
    on_demand_stream_limit: int | None = None
    reset: tuple[str, ...] = ()


AccountCommand = UpdateStreamLimits | UpdateAccountSettings | UpdateAccountLimits


# --- Shard load and scaling events (issue 6; rules in `broker.meta.capacity`) -------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportShardLoads:
    """One node's periodic report of the shards it leads that carry load (an entry with no
    records: the shard turned idle). Entries that are not current (the node does not lead the
    shard at that epoch) are ignored. Result: the number of entries accepted."""

    now_ms: int
    node_id: NodeId
    loads: tuple[ReportedLoad, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordScalingEvent:
    """Appends an event to a live stream incarnation's scaling log (a hot-key notice, or a
    decision the metadata refused). Result: None."""

    now_ms: int
    stream_uid: StreamUid
    event: ScalingEvent


CapacityCommand = ReportShardLoads | RecordScalingEvent


# --- Video streams (issue 13) -------------------------------------------------------------------
# Each names its stream by ARN (one incarnation); the proposer resolved the caller's name or ARN
# against its image, and apply checks again that the stream is still there. Result: the
# VideoStreamMeta after the change (None for DeleteVideoStream).


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateVideoStream:
    """Adds `stream` (built whole by the proposer: ARN, version, status timer); refused when
    the account already has a stream of that name in the region, or `streams_max` of them."""

    now_ms: int
    stream: VideoStreamMeta
    streams_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVideoStream:
    now_ms: int
    arn: str
    current_version: str | None = None  # VersionMismatchException unless it is current


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateVideoStream:
    """UpdateStream: new device name and media type (None: unchanged), and a new version."""

    now_ms: int
    arn: str
    current_version: str
    new_version: str
    device_name: str | None
    media_type: str | None
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateVideoRetention:
    """UpdateDataRetention: retention raised (`increase`) or lowered by `change_hours`."""

    now_ms: int
    arn: str
    current_version: str
    new_version: str
    increase: bool
    change_hours: int
    retention_hours_max: int
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TagVideoStream:
    now_ms: int
    arn: str
    tags: tuple[tuple[str, str], ...]
    tags_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UntagVideoStream:
    now_ms: int
    arn: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetVideoStreamConfiguration:
    """UpdateNotificationConfiguration (`kind` "notification") or
    UpdateImageGenerationConfiguration ("image_generation"): the validated configuration as
    canonical JSON, "" to remove it."""

    now_ms: int
    arn: str
    kind: str
    document: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetVideoEdgeConfiguration:
    """StartEdgeConfigurationUpdate: the stream's edge configuration becomes `document` (the
    validated EdgeConfig as canonical JSON) for `hub_device_arn`, SYNCING from `now_ms`.
    Refused while the current one is SYNCING or DELETING (ResourceInUseException), and for
    another hub device than the current one's (InvalidArgumentException: delete it first)."""

    now_ms: int
    arn: str
    document: str
    hub_device_arn: str
    sync_timeout_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVideoEdgeConfiguration:
    """DeleteEdgeConfiguration: the stream's edge configuration shows DELETING for
    `deleting_ms`, then is gone (StreamEdgeConfigurationNotFoundException if there is none)."""

    now_ms: int
    arn: str
    deleting_ms: int
    sync_timeout_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateVideoStorageTier:
    """UpdateStreamStorageConfiguration: a new DefaultStorageTier and version, UPDATING for
    `updating_ms`, as UpdateStream is."""

    now_ms: int
    arn: str
    current_version: str
    new_version: str
    storage_tier: str
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSignalingChannel:
    """Adds `channel` (built whole by the proposer); refused when the account already has a
    channel of that name in the region, or `channels_max` of them."""

    now_ms: int
    channel: SignalingChannelMeta
    channels_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteSignalingChannel:
    now_ms: int
    arn: str
    current_version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSignalingChannel:
    """UpdateSignalingChannel: a new message TTL (None: unchanged) and a new version."""

    now_ms: int
    arn: str
    current_version: str
    new_version: str
    message_ttl_seconds: int | None
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChannelMediaStorage:
    """UpdateMediaStorageConfiguration: the stream the channel ingests to, and its status.
    Refused when that stream is gone or keeps no data (NoDataRetentionException)."""

    now_ms: int
    arn: str
    stream_arn: str
    enabled: bool


# TagVideoStream and UntagVideoStream tag signaling channels too (by the channel's ARN).
VideoCommand = (
    CreateVideoStream
    | DeleteVideoStream
    | UpdateVideoStream
    | UpdateVideoRetention
    | TagVideoStream
    | UntagVideoStream
    | SetVideoStreamConfiguration
    | SetVideoEdgeConfiguration
    | DeleteVideoEdgeConfiguration
    | UpdateVideoStorageTier
    | CreateSignalingChannel
    | DeleteSignalingChannel
    | UpdateSignalingChannel
    | SetChannelMediaStorage
)
# --- Kinesis Data Analytics applications (issue 12; rules in `broker.analytics.applications`) --


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateAnalyticsApplication:
    """CreateApplication (either API) in the caller's account and region. `inputs`, `outputs`,
    `logging_options` and `reference_data_sources` are the request's members as canonical
    JSON. Result: the Application."""

    now_ms: int
    account_id: str
    region: str
    name: str
    description: str
    code: str
    inputs: str
    outputs: str
    logging_options: str
    tags: tuple[tuple[str, str], ...]
    applications_max: int
    # kinesisanalyticsv2's CreateApplication (defaults: a v1 request, a SQL application).
    reference_data_sources: str = "[]"
    runtime: str = "SQL-1_0"
    service_execution_role: str = ""
    mode: str = ""
    configuration: str = "{}"  # a non-SQL application's ApplicationConfiguration


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeAnalyticsApplication:
    """Any other change to one application: `operation` is the kinesisanalytics operation
    (UpdateApplication, AddApplicationOutput, StartApplication, DeleteApplication, TagResource,
    ...) and `request` its members as canonical JSON (timestamps as epoch milliseconds).
    Operations that carry CurrentApplicationVersionId are checked against it at apply time.
    `transition_ms` is how long the application shows STARTING, STOPPING, UPDATING or
    DELETING. Result: the Application after the change."""

    now_ms: int
    account_id: str
    region: str
    name: str
    operation: str
    request: str
    transition_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordAnalyticsProgress:
    """A running application's emitted-window and continuous-output marks (see
    `Application.emitted_through_ms`). Fenced: applied only while `owner` holds the
    application's placement lease, so a deposed node cannot move the marks of its successor.
    Result: the Application after the change."""

    now_ms: int
    account_id: str
    region: str
    name: str
    reader: str
    owner: str
    emitted_through_ms: int
    continuous_through: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeAnalyticsSnapshot:
    """A change to one enhanced snapshot of kinesisanalyticsv2 (`broker.analytics.snapshots`):
    `operation` is ImportSnapshot, ExportSnapshot, DeleteSnapshot, TagResource or UntagResource,
    `request` its members as canonical JSON (timestamps as epoch milliseconds) and `result` the
    canonical JSON of what the service found at S3 before proposing (an import's source
    objects, an export's copy) or "{}". `transition_ms` is how long the snapshot shows CREATING
    or DELETING and its operation IN_PROGRESS. Result: the Snapshot after the change."""

    now_ms: int
    account_id: str
    region: str
    name: str
    operation: str
    request: str
    result: str
    transition_ms: int


AnalyticsCommand = (
    CreateAnalyticsApplication
    | ChangeAnalyticsApplication
    | RecordAnalyticsProgress
    | ChangeAnalyticsSnapshot
)
# --- Delivery streams (Data Firehose, issue 11; rules in transitions/delivery_streams.py) -------
# Configurations travel as canonical AWS-shaped JSON text (`delivery_streams.canonical_json`).


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateDeliveryStream:
    """A new delivery stream, CREATING until ActivateDeliveryStream. Result: its meta."""

    now_ms: int
    arn: str
    name: str
    account_id: str
    region: str
    uid: str
    delivery_stream_type: str
    destination_json: str
    source_json: str = ""
    encryption_key_type: str = ""  # "" for no server-side encryption
    encryption_key_arn: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    delivery_streams_max: int = 5000  # per account and region, from the proposer's config


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivateDeliveryStream:
    """Ends a CREATING incarnation (`uid`): ACTIVE, or CREATING_FAILED when `failure_type`
    is set. Anything else (another incarnation, another status) is left alone. Result: meta."""

    now_ms: int
    arn: str
    uid: str
    failure_type: str = ""
    failure_details: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteDeliveryStream:
    """Marks a delivery stream DELETING (its deliverers stop; its data is dropped). Result: meta."""

    now_ms: int
    arn: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetDeliveryStream:
    """Removes a DELETING incarnation once its internal stream and leases are gone."""

    now_ms: int
    arn: str
    uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateDeliveryStreamDestination:
    """UpdateDestination: compare-and-set on the version id. Result: meta."""

    now_ms: int
    arn: str
    name: str
    current_version_id: int
    destination_id: str
    destination_json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeDeliveryStreamTags:
    """TagDeliveryStream (`added`) or UntagDeliveryStream (`removed`). Result: meta."""

    now_ms: int
    arn: str
    name: str
    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[str, ...] = ()
    tags_max: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class SetDeliveryStreamEncryption:
    """Start (key type set) or Stop ("") server-side encryption: ENABLING or DISABLING from
    metadata format 4 on, ENABLED or DISABLED at once below it. Result: meta."""

    now_ms: int
    arn: str
    name: str
    key_type: str
    key_arn: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleDeliveryStreamEncryption:
    """Ends an ENABLING (`key_type` set) or DISABLING (`key_type` "") of incarnation `uid`
    with that key: ENABLED or DISABLED, or ENABLING_FAILED / DISABLING_FAILED when
    `failure_type` (a DeliveryStreamFailureType) is set. Anything else (another attempt, another
    incarnation) is left alone. Result: meta, or None when the delivery stream is gone."""

    now_ms: int
    arn: str
    uid: str
    key_type: str
    key_arn: str = ""
    failure_type: str = ""
    failure_details: str = ""


DeliveryStreamCommand = (
    CreateDeliveryStream
    | ActivateDeliveryStream
    | DeleteDeliveryStream
    | ForgetDeliveryStream
    | UpdateDeliveryStreamDestination
    | ChangeDeliveryStreamTags
    | SetDeliveryStreamEncryption
    | SettleDeliveryStreamEncryption
)


# --- Issue 14: resource policies, encryption settings, warm throughput, record distribution.


@dataclass(frozen=True, slots=True, kw_only=True)
class PutResourcePolicy:
    """Attaches `policy` (already checked as a policy document) to a stream or one of its
    consumers: `resource_arn` is the stream's or the consumer's ARN; `stream_name` its stream."""

    now_ms: int
    resource_arn: str
    stream_name: str
    policy: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteResourcePolicy:
    now_ms: int
    resource_arn: str
    stream_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedDataKey:
    """A new data key as the proposer made it: the key wrapped by `wrapping`'s master key."""

    wrapped: bytes
    wrapping: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetStreamEncryption:
    """StartStreamEncryption (`encryption_type` "KMS", `key_id`, and a new data key, which
    the transition numbers after the stream's last one) or StopStreamEncryption ("NONE", no
    key); the stream shows UPDATING for `updating_ms`."""

    now_ms: int
    name: str
    encryption_type: str
    key_id: str | None
    updating_ms: int
    data_key: WrappedDataKey | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RewrapStreamDataKeys:
    """A master-key rotation: the stream `stream_uid`'s data keys of these versions, the same
    keys wrapped anew; versions the stream no longer has are ignored."""

    now_ms: int
    name: str
    stream_uid: int
    rewrapped: tuple[StreamDataKey, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateStreamWarmThroughput:
    now_ms: int
    name: str
    warm_throughput_mibps: int
    updating_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRecordDistribution:
    now_ms: int
    name: str
    strategy: RecordDistribution


# --- Identities and policies (issue 15) ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePrincipal:
    now_ms: int
    principal: Principal


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletePrincipal:
    """Deletes the principal with its access keys and policies."""

    now_ms: int
    arn: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateAccessKey:
    now_ms: int
    key: AccessKey  # the secret sealed by the proposer


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAccessKey:
    now_ms: int
    access_key_id: str
    status: KeyStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteAccessKey:
    now_ms: int
    access_key_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RotateAccessKey:
    """Replaces `old_access_key_id` by `key` in one step (no moment with neither or both)."""

    now_ms: int
    old_access_key_id: str
    key: AccessKey


@dataclass(frozen=True, slots=True, kw_only=True)
class ResealAccessKeys:
    """Replaces access keys' sealed secrets by the same secrets sealed with the cluster's
    current IAM key (`resealed`: access key id, sealed secret); ids no longer present are
    skipped. Result: the number replaced."""

    now_ms: int
    resealed: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PutPrincipalPolicy:
    """Attaches (or replaces) the named policy; the proposer checked the document."""

    now_ms: int
    principal_arn: str
    policy_name: str
    document: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletePrincipalPolicy:
    now_ms: int
    principal_arn: str
    policy_name: str


IamCommand = (
    CreatePrincipal
    | DeletePrincipal
    | CreateAccessKey
    | UpdateAccessKey
    | DeleteAccessKey
    | RotateAccessKey
    | ResealAccessKeys
    | PutPrincipalPolicy
    | DeletePrincipalPolicy
)


StreamFeatureCommand = (
    PutResourcePolicy
    | DeleteResourcePolicy
    | SetStreamEncryption
    | RewrapStreamDataKeys
    | UpdateStreamWarmThroughput
    | UpdateRecordDistribution
)


# --- Queues (issue 14; rules in broker/queues/state.py, transitions/queues.py) ------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateQueue:
    """A queue on the live stream incarnation `stream_uid`. Result: the QueueMeta."""

    now_ms: int
    arn: str
    queue_id: str
    name: str
    account_id: str
    region: str
    stream_uid: int
    starting_position: StartingPosition
    start_timestamp_ms: int | None
    visibility_timeout_s: int
    dead_letter_enabled: bool
    max_receive_count: int
    tags: tuple[tuple[str, str], ...] = ()
    consumers_per_stream_max: int = 20  # shared with enhanced fan-out consumers (AWS)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateQueue:
    """New attributes; None leaves one unchanged. Result: the QueueMeta."""

    now_ms: int
    arn: str
    visibility_timeout_s: int | None = None
    dead_letter_enabled: bool | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteQueue:
    now_ms: int
    arn: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimQueueRecords:
    """One ReceiveQueueRecords (or ReceiveDeadLetterQueueRecords, `dead_letter`): the claims
    the serving node read and expects to win. Result: the `Delivered` list, in order."""

    now_ms: int
    arn: str
    dead_letter: bool
    advances: tuple[CursorAdvance, ...]
    redeliveries: tuple[Redelivery, ...]
    dropped: tuple[str, ...]
    token_seed: str
    visibility_ms: int
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleQueueRecords:
    """Acknowledge, change visibility or restore a batch of receipt handles. Result:
    (succeeded handles, failures) as `broker.queues.state.settle` returns them."""

    now_ms: int
    arn: str
    settlement: Settlement
    entries: tuple[SettleEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeQueueTags:
    """TagResource (`added`) or UntagResource (`removed`) on a queue ARN. Result: QueueMeta."""

    now_ms: int
    arn: str
    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[str, ...] = ()
    tags_max: int = 50


QueueCommand = (
    CreateQueue
    | UpdateQueue
    | DeleteQueue
    | ClaimQueueRecords
    | SettleQueueRecords
    | ChangeQueueTags
)


Command = (
    InitCluster
    | SetMetadataFormat
    | CreateStream
    | DeleteStream
    | ForgetStream
    | ChangeRetention
    | AddTags
    | RemoveTags
    | SetEnhancedMonitoring
    | BeginReshard
    | CompleteReshard
    | UpdateStreamMode
    | UpdateMaxRecordSize
    | RegisterNode
    | SetNodeState
    | SetShardLeader
    | RemoveNode
    | LeaseCommand
    | AccountCommand
    | CapacityCommand
    | ConsumerCommand
    | VideoCommand
    | AnalyticsCommand
    | DeliveryStreamCommand
    | StreamFeatureCommand
    | IamCommand
    | QueueCommand
)


_COMMAND_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        InitCluster,
        SetMetadataFormat,
        CreateStream,
        DeleteStream,
        ForgetStream,
        ChangeRetention,
        AddTags,
        RemoveTags,
        SetEnhancedMonitoring,
        BeginReshard,
        CompleteReshard,
        UpdateStreamMode,
        UpdateMaxRecordSize,
        RegisterNode,
        SetNodeState,
        SetShardLeader,
        RemoveNode,
        CreateLeasesCommand,
        TakeLeaseCommand,
        StealLeaseCommand,
        RenewLeaseCommand,
        ReleaseLeaseCommand,
        CheckpointLeaseCommand,
        DeleteLeaseCommand,
        DeleteApplicationCommand,
        UpdateStreamLimits,
        UpdateAccountSettings,
        UpdateAccountLimits,
        RegisterStreamConsumer,
        DeregisterStreamConsumer,
        ChangeConsumerTags,
        ReportShardLoads,
        RecordScalingEvent,
        CreateVideoStream,
        DeleteVideoStream,
        UpdateVideoStream,
        UpdateVideoRetention,
        TagVideoStream,
        UntagVideoStream,
        SetVideoStreamConfiguration,
        SetVideoEdgeConfiguration,
        DeleteVideoEdgeConfiguration,
        UpdateVideoStorageTier,
        CreateSignalingChannel,
        DeleteSignalingChannel,
        UpdateSignalingChannel,
        SetChannelMediaStorage,
        CreateAnalyticsApplication,
        ChangeAnalyticsApplication,
        RecordAnalyticsProgress,
        ChangeAnalyticsSnapshot,
        CreateDeliveryStream,
        ActivateDeliveryStream,
        DeleteDeliveryStream,
        ForgetDeliveryStream,
        UpdateDeliveryStreamDestination,
        ChangeDeliveryStreamTags,
        SetDeliveryStreamEncryption,
        SettleDeliveryStreamEncryption,
        PutResourcePolicy,
        DeleteResourcePolicy,
        SetStreamEncryption,
        UpdateStreamWarmThroughput,
        UpdateRecordDistribution,
        CreatePrincipal,
        DeletePrincipal,
        CreateAccessKey,
        UpdateAccessKey,
        DeleteAccessKey,
        RotateAccessKey,
        ResealAccessKeys,
        PutPrincipalPolicy,
        DeletePrincipalPolicy,
        RewrapStreamDataKeys,
        CreateQueue,
        UpdateQueue,
        DeleteQueue,
        ClaimQueueRecords,
        SettleQueueRecords,
        ChangeQueueTags,
    )
}
_ENVELOPE_MEMBERS = frozenset({"v", "type"})


def encode_command(command: Command) -> bytes:
    """A JSON object `{"v": COMMAND_FORMAT_VERSION, "type": "<class name>", <fields>}`.

    Bytes are base64, enums their value, tuples lists, ints exact (hash keys reach 2**128).
    Keys are sorted so that equal commands encode to equal bytes."""
    name = type(command).__name__
    assert _COMMAND_TYPES.get(name) is type(command)
    document: dict[str, Any] = {"v": COMMAND_FORMAT_VERSION, "type": name}
    document.update(to_document(command, type(command)))
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def required_format(command: Command) -> int:
    """The lowest metadata format whose binaries decode `command` as `encode_command` writes
    it: its type's level, or a later member's when that member is not at its default."""
    name = type(command).__name__
    level = command_level(name)
    document = to_document(command, type(command))  # gated members at their default left out
    for member, member_level in members_after(FIRST_FORMAT, name).items():
        if isinstance(document, dict) and member in document:
            level = max(level, member_level)
    return level


def decode_command(data: bytes) -> Command:
    """The inverse of `encode_command`; raises ValueError for anything it did not write.

    A newer format version is refused rather than guessed at: every replica must compute the
    same image, so a replica that cannot read a command must stop, not skip it."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("metadata command is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ValueError("metadata command is not a JSON object")
    if document.get("v") != COMMAND_FORMAT_VERSION:
        raise ValueError(f"unsupported metadata command format version {document.get('v')!r}")
    cls = _COMMAND_TYPES.get(str(document.get("type")))
    if cls is None:
        raise ValueError(f"unknown metadata command type {document.get('type')!r}")
    command: Command = dataclass_from_members(document, cls, skip=_ENVELOPE_MEMBERS)
    return command
