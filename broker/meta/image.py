"""MetadataImage: the immutable table the metadata quorum replicates.

Every replica holds the same image, produced by applying the same commands in the same order
(`state_machine.apply`). Images are frozen dataclasses; a command produces a new image with
`dataclasses.replace`, so a reader holding an image never sees it change. Time-dependent views
(a stream that was CREATING is ACTIVE once its timer has passed; a closed shard past retention
is EXPIRED) are computed from an explicit `now_ms`, never from a clock.

This is a cluster view: one image describes every stream and shard, wherever their data lives,
every node of the cluster (`nodes`) and every consumer lease (`leases`). Shard placement
(`ShardMeta.replicas`, `leader`, `epoch`) is the configuration the shard-log replication obeys
(docs/decisions/0002): an epoch is handed out only by a metadata command, so two shard leaders
can never share one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from broker.analytics.applications import ApplicationTable
from broker.consumers.leases import LeaseTable
from broker.consumers.registry import ConsumerTable
from broker.iam.identities import IamTable
from broker.meta.capacity_table import CapacityTable
from broker.meta.delivery_streams import DeliveryStreamMeta
from broker.meta.metadata_format import METADATA_FORMAT_MAX
from broker.meta.video_table import VideoTable
from broker.queues.state import QueueTable
from broker.streams.account_settings import AccountSettings
from broker.streams.throttling import StreamLimits
from broker.types import NodeId, Offset, ShardIndex, ShardUid, StreamName, StreamUid

HOUR_MS = 3_600_000


class StreamStatus(enum.Enum):
    """The status a client sees (StreamDescription.StreamStatus)."""

    CREATING = "CREATING"
    DELETING = "DELETING"
    ACTIVE = "ACTIVE"
    UPDATING = "UPDATING"


class StreamMode(enum.Enum):
    PROVISIONED = "PROVISIONED"
    ON_DEMAND = "ON_DEMAND"


class RecordDistribution(enum.Enum):
    """How records find their shard (RecordDistributionStrategy; on-demand streams only)."""

    USER_PARTITION_KEY = "USER_PARTITION_KEY"  # the partition key's MD5 (or ExplicitHashKey)
    AUTO = "AUTO"  # spread evenly; partition keys and explicit hash keys are ignored


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerPolicy:
    """A resource policy attached to an enhanced fan-out consumer of the stream. The ARN
    names the consumer; `consumer_created_ms` tells its registrations apart (a name registered
    again within the same second gets the same ARN)."""

    consumer_arn: str
    consumer_created_ms: int
    policy: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDataKey:
    """One data key of an encrypted stream (envelope encryption, `broker/crypto/`): the
    AES-256 key that seals its batches, kept here only wrapped (encrypted) by a master key.

    `version` counts from 1 per stream and is written into every batch it seals; `wrapping`
    names the master key that wrapped it (`cluster:<key id>` for the cluster key, `local:<key
    id>` for a key file, `kms:<key ARN>` for a KMS key), so a master-key rotation can find and
    re-wrap it."""

    version: int
    wrapped: bytes
    wrapping: str
    created_ms: int


class ShardState(enum.Enum):
    """OPEN takes writes; SEALING refuses them while a reshard completes; CLOSED is final."""

    OPEN = "OPEN"
    SEALING = "SEALING"
    CLOSED = "CLOSED"


class NodeState(enum.Enum):
    """A node's standing with the controller (KRaft's registered/fenced brokers, KIP-631).

    ACTIVE: takes replicas and shard leaderships. DRAINING: an operator asked it to leave;
    its leaderships are moved away and it is placed nowhere new, but it keeps serving until
    then. FENCED: it missed heartbeats for the session timeout; it leads nothing and is placed
    nowhere new until it heartbeats again. REMOVED: gone for good; it holds no replica."""

    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    FENCED = "FENCED"
    REMOVED = "REMOVED"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMeta:
    """One node of the cluster, as it registered (RegisterNode) and as the controller judges it.

    `incarnation` rises with every registration (a restart), so a state change decided about an
    earlier incarnation (SetNodeState's expected_incarnation) cannot hit a restarted node.
    `voter` is what the node declared at registration (it runs as a metadata-quorum voter);
    the quorum's real membership lives in pysyncobj's log, not here."""

    node_id: NodeId
    api_address: str  # gRPC host:port, for clients and node-to-node traffic
    http_address: str  # the AWS HTTP door, host:port
    raft_address: str  # the metadata quorum's host:port ("" for none)
    voter: bool
    state: NodeState
    incarnation: int
    registered_ms: int  # the proposer's wall clock at the last registration
    # REMOVED by the controller as absent (RemoveNode's `absent`), not by an operator: a node
    # that sees this of its own incarnation was alive after all, and registers again.
    removed_absent: bool = False
    # The framed replication port's host:port ("" for none: peers replicate to it over gRPC),
    # from the metadata format REPLICATION_ADDRESS_LEVEL on.
    replication_address: str = ""

    def is_placeable(self) -> bool:
        """New replicas and leaderships may go here (ACTIVE only)."""
        return self.state is NodeState.ACTIVE


class ReshardKind(enum.Enum):
    SPLIT = "SPLIT"
    MERGE = "MERGE"
    UNIFORM_SCALING = "UNIFORM_SCALING"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReshardRequest:
    """A reshard between its two commands (BeginReshard seals parents, CompleteReshard closes
    them and opens the children). Exactly one of the parameter groups is set, by `kind`."""

    kind: ReshardKind
    shard_index: ShardIndex | None = None  # SPLIT: the shard; MERGE: ShardToMerge
    adjacent_shard_index: ShardIndex | None = None  # MERGE: AdjacentShardToMerge
    new_starting_hash_key: int | None = None  # SPLIT
    target_shard_count: int | None = None  # UNIFORM_SCALING
    sealed: tuple[ShardIndex, ...] = ()  # the shards BeginReshard put in SEALING


# A shard's epoch when it is created (CreateStream, a reshard's children): its replica set is
# the one it was created with, its logs are empty, and nothing was committed in an earlier
# epoch (the controller's first-epoch rule, `controller_core._current_epoch_quorum`).
FIRST_SHARD_EPOCH = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardMeta:
    """One shard of one stream incarnation."""

    index: ShardIndex
    uid: ShardUid
    hash_key_start: int
    hash_key_end: int  # inclusive, as in Kinesis' HashKeyRange
    parent_index: ShardIndex | None
    adjacent_parent_index: ShardIndex | None
    created_ms: int  # never earlier than any parent's created_ms (sequence numbers rely on it)
    state: ShardState
    closed_ms: int | None = None
    end_offset: Offset | None = None  # CLOSED: the number of records the shard holds
    # Placement (0002). The replica set in preference order: the first is the preferred
    # leader. The leader is one of them (or None while none can lead). The epoch starts at
    # FIRST_SHARD_EPOCH and only SetShardLeader raises it; 0 only for shards built without
    # placement.
    replicas: tuple[NodeId, ...] = ()
    leader: NodeId | None = None
    epoch: int = 0
    # When the current epoch began (its SetShardLeader's proposer clock; 0 for the first):
    # a new leader's throttle buckets refill from empty since then (streams/throttling.py).
    leader_since_ms: int = 0
    # Sequence numbers in AWS's layout (streams created at metadata format 4 or later, and
    # their children); False: the 0x3 layout the stream was created with, kept for good
    # (streams/sequence_numbers.py).
    aws_sequence_numbers: bool = False

    @property
    def shard_id(self) -> str:
        return f"shardId-{self.index:012d}"

    def is_expired(self, *, now_ms: int, retention_hours: int) -> bool:
        """A closed shard whose every record is past retention: no longer listed (AWS)."""
        if self.state is not ShardState.CLOSED:
            return False
        assert self.closed_ms is not None
        return self.closed_ms + retention_hours * HOUR_MS <= now_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamMeta:
    """One incarnation of a stream. A deleted and recreated stream gets a new `uid`."""

    name: StreamName
    uid: StreamUid
    arn: str
    created_ms: int
    mode: StreamMode
    retention_hours: int
    shards: tuple[ShardMeta, ...]  # ordered by index; index i is at position i
    next_shard_index: ShardIndex
    tags: tuple[tuple[str, str], ...] = ()  # sorted by key
    enhanced_metrics: tuple[str, ...] = ()  # sorted shard-level metric names
    max_record_size_kib: int = 1024
    # The status the stream shows until `status_until_ms`; ACTIVE afterwards (gone, if DELETING).
    transient_status: StreamStatus | None = StreamStatus.CREATING
    status_until_ms: int = 0
    reshard: ReshardRequest | None = None
    shard_count_updates_ms: tuple[int, ...] = ()  # UpdateShardCount calls in the last 24 h
    mode_updates_ms: tuple[int, ...] = ()  # UpdateStreamMode calls in the last 24 h
    # Replicas per shard, fixed at CreateStream: the factor asked for. A shard may hold fewer
    # (created while fewer nodes were ACTIVE, or a replica lost): the controller adds them.
    replication_factor: int = 1
    # Per-shard rate overrides for this stream (UpdateStreamLimits); unset fields follow
    # the cluster's configuration.
    throughput_limits: StreamLimits = field(default_factory=StreamLimits)
    # Issue 14: the settings of the operations AWS added since (all kept with the incarnation,
    # so a stream recreated under the same name starts without them).
    # PutResourcePolicy: the stream's own policy document, exactly as given; its consumers'.
    resource_policy: str | None = None
    consumer_policies: tuple[ConsumerPolicy, ...] = ()
    # StartStreamEncryption / StopStreamEncryption: what DescribeStream reports ("NONE" or
    # "KMS" and the key). While "KMS", new batches are sealed with the last of `data_keys`;
    # the keys stay after StopStreamEncryption, so every batch ever sealed still opens
    # (docs/ARCHITECTURE.md, "Encryption at rest").
    encryption_type: str = "NONE"
    key_id: str | None = None
    data_keys: tuple[StreamDataKey, ...] = ()
    # UpdateStreamWarmThroughput (on-demand streams): the target, and the value it replaces,
    # which DescribeStreamSummary reports as current until the update's UPDATING ends.
    warm_throughput_mibps: int | None = None
    previous_warm_throughput_mibps: int | None = None
    record_distribution: RecordDistribution = RecordDistribution.USER_PARTITION_KEY

    @property
    def display_name(self) -> str:
        """The name clients see: `name` is the stream's key in the image, which carries the
        namespace for streams outside the default one (`broker/streams/namespaces.py`)."""
        return self.name.rsplit("/", 1)[-1]

    def status(self, *, now_ms: int) -> StreamStatus:
        if self.reshard is not None:
            return StreamStatus.UPDATING
        if self.transient_status is not None and now_ms < self.status_until_ms:
            return self.transient_status
        if self.transient_status is StreamStatus.DELETING:
            return StreamStatus.DELETING  # gone for clients: see `is_gone`
        return StreamStatus.ACTIVE

    def is_gone(self, *, now_ms: int) -> bool:
        """True once a DELETING stream's timer has passed: treated as nonexistent."""
        return self.transient_status is StreamStatus.DELETING and now_ms >= self.status_until_ms

    def shard_by_index(self, index: int) -> ShardMeta | None:
        if 0 <= index < len(self.shards):
            shard = self.shards[index]
            assert shard.index == index
            return shard
        return None

    def open_shards(self) -> tuple[ShardMeta, ...]:
        return tuple(s for s in self.shards if s.state is not ShardState.CLOSED)

    def current_warm_throughput_mibps(self, *, now_ms: int) -> int | None:
        """The warm throughput in effect: the previous target while the update is UPDATING."""
        if self.status(now_ms=now_ms) is StreamStatus.UPDATING:
            return self.previous_warm_throughput_mibps
        return self.warm_throughput_mibps

    @property
    def sealing_data_key(self) -> StreamDataKey | None:
        """The data key new batches are sealed with; None while the stream is not encrypted."""
        if self.encryption_type != "KMS" or not self.data_keys:
            return None
        return self.data_keys[-1]

    def consumer_policy(self, consumer_arn: str, *, created_ms: int) -> str | None:
        for entry in self.consumer_policies:
            if entry.consumer_arn == consumer_arn and entry.consumer_created_ms == created_ms:
                return entry.policy
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataImage:
    """The whole replicated metadata. `streams` is keyed by name; deleted incarnations that
    are not yet forgotten stay under their name until replaced or forgotten."""

    cluster_id: str = ""
    iterator_secret: bytes = b""  # HMAC key for shard iterators; set once by InitCluster
    streams: dict[StreamName, StreamMeta] = field(default_factory=dict)
    nodes: dict[NodeId, NodeMeta] = field(default_factory=dict)
    next_stream_uid: int = 1
    next_shard_uid: int = 1
    applied_commands: int = 0
    # Consumer leases and checkpoints (issue 5), keyed by application, stream name and shard
    # id. Changed only by the lease commands; DeleteStream and ForgetStream drop a stream's
    # leases, so a stream recreated under the same name starts with none.
    leases: LeaseTable = field(default_factory=LeaseTable)
    # Account-wide settings (DescribeAccountSettings, runtime account limits).
    account: AccountSettings = field(default_factory=AccountSettings)
    # Enhanced fan-out consumers (RegisterStreamConsumer), keyed by stream incarnation; changed
    # only by the consumer commands; DeleteStream drops a stream's consumers.
    consumers: ConsumerTable = field(default_factory=ConsumerTable)
    # Shard loads reported by their leaders and each stream's scaling event log (issue 6);
    # changed only by ReportShardLoads, RecordScalingEvent and automatic BeginReshards.
    capacity: CapacityTable = field(default_factory=CapacityTable)
    # Video streams (Kinesis Video Streams, issue 13) of every account and region; changed
    # only by the video commands (`transitions/video_streams.py`).
    video: VideoTable = field(default_factory=VideoTable)
    # Kinesis Data Analytics SQL applications (issue 12), keyed by account, region and name;
    # changed only by the analytics commands.
    analytics: ApplicationTable = field(default_factory=ApplicationTable)
    # Data Firehose delivery streams (issue 11), keyed by ARN (so account and region are part
    # of the key); changed only by the delivery-stream commands.
    delivery_streams: dict[str, DeliveryStreamMeta] = field(default_factory=dict)
    # Principals, access keys and identity policies (issue 15); changed only by the IAM
    # commands (`transitions/iam.py`).
    iam: IamTable = field(default_factory=IamTable)
    # The cluster's metadata format (`meta/metadata_format.py`): what every node writes, so
    # that every member can read it. Set by InitCluster, raised by SetMetadataFormat.
    metadata_format: int = METADATA_FORMAT_MAX
    # Kinesis queues and every held record's delivery state (issue 14), keyed by queue ARN;
    # changed only by the queue commands (`transitions/queues.py`).
    queues: QueueTable = field(default_factory=QueueTable)

    def __hash__(self) -> int:  # dict field: identity is enough, images are never keys
        return id(self)

    def stream(self, name: str, *, now_ms: int) -> StreamMeta | None:
        """The live stream with this name, or None when absent or deleted."""
        meta = self.streams.get(StreamName(name))
        if meta is None or meta.is_gone(now_ms=now_ms):
            return None
        return meta

    def stream_by_uid(self, uid: StreamUid) -> StreamMeta | None:
        for meta in self.streams.values():
            if meta.uid == uid:
                return meta
        return None

    def node_by_raft_address(self, raft_address: str) -> NodeMeta | None:
        """The registered, not removed node whose metadata-quorum address this is (to find the
        controller's node from `MetadataQuorum.quorum_leader_address`)."""
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if node.raft_address == raft_address and node.state is not NodeState.REMOVED:
                return node
        return None

    def active_node_ids(self) -> tuple[NodeId, ...]:
        """The nodes that may take new replicas and leaderships, sorted by id."""
        return tuple(sorted(n.node_id for n in self.nodes.values() if n.is_placeable()))

    def shard_uids(self) -> frozenset[ShardUid]:
        """Every shard uid whose log data must be kept on disk."""
        return frozenset(s.uid for meta in self.streams.values() for s in meta.shards)
