"""The cluster's metadata format: which encodings of commands and snapshots the nodes agree on.

One integer for the whole cluster, like Kafka's `metadata.version` or Redpanda's feature
table. A binary reads every format up to `METADATA_FORMAT_MAX`, and writes the one the
cluster has activated (`MetadataImage.metadata_format`), so nodes of two versions can share a
cluster during a rolling upgrade: until every member runs a binary that reads the next format,
the new binaries write the old one (images in the old version, no command or member the old
binary cannot decode). The controller raises the level once every registered node reported
that it reads the next one (`controller_core`), as Redpanda's `features_auto_enable` does;
the `metadata_format_limit` setting holds it lower, to keep a rollback possible. A level is
never lowered. docs/operations.md "Rolling upgrades".

Pure values; no I/O. `FORMAT_CHANGES` lists, per level, what a binary of the level before
cannot read: the command types and the members (of commands and image records) first
written at that level. A member absent from an encoding takes its default, so a new member
left at its default is simply not written, and costs no level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from broker.streams import internal_names

FIRST_FORMAT = 1  # the format of every cluster from before this negotiation existed


@dataclass(frozen=True, slots=True, kw_only=True)
class FormatChange:
    """What level `level` adds to the level before it."""

    level: int
    image_version: int  # the image format version written at this level
    commands: frozenset[str]  # command types first written at this level
    members: Mapping[str, frozenset[str]]  # per class name: members first written here
    summary: str


# Level 1: images in version 4, commands in encoding 2 with the types and members of Shoal
# before issue 16 (commit 1faf780).
_FIRST_IMAGE_VERSION = 4

# From this level on (this release's level, shared with its other format changes), shard
# leaders write their log batches in format 3 (CRC32C, broker/log/records.py) and send each
# batch to their followers as its stored bytes (the `value` of the internal `Batch`), which the
# followers verify and store as they are (issue 18). Below it, batches are written in format 2
# and travel as records, which every release reads: a follower stores what its leader sends,
# so the format is the whole cluster's choice.
STORED_BATCHES_LEVEL = 3

# From this level on (the level of the audit trail kept with access control off too), the audit
# trail's internal stream counts against no account limit (`streams/internal_names.py`). A
# limit check is a state-machine decision, so every member must make it alike: below the level
# a binary that counts every stream may still apply the same commands.
AUDIT_UNCOUNTED_LEVEL = internal_names.AUDIT_UNCOUNTED_LEVEL

# From this level on, Start/StopDeliveryStreamEncryption go through AWS's transitional states
# (ENABLING, DISABLING, and ENABLING_FAILED or DISABLING_FAILED with a FailureDescription): the
# transitions decide by the image's level, so below it every member still answers ENABLED or
# DISABLED at once, as the binaries of level 3 do.
DELIVERY_ENCRYPTION_STATES_LEVEL = 4

# From this level on, access-key secrets are sealed with the cluster's derived IAM key (the
# master key's derivation under its own label, `iam/sealing.py`), and the secrets sealed with
# the Raft password alone are re-sealed (`ResealAccessKeys`); a binary of level 3 opens only
# the latter.
RESEALED_SECRETS_LEVEL = 4

# From this level on, CreateStream gives a stream's shards sequence numbers in AWS's layout
# (`ShardMeta.aws_sequence_numbers`; their children inherit it). Streams created below it keep
# the layout their consumers stored.
AWS_SEQUENCE_NUMBERS_LEVEL = 4

# From this level on, video streams carry an edge configuration and a storage tier
# (Start/DeleteEdgeConfiguration, UpdateStreamStorageConfiguration, CreateStream's WARM tier).
VIDEO_EDGE_LEVEL = 5

# From this level on, CreateStream may carry the stream's first data key (an internal stream
# whose encryption is decided before its first record: a video stream's fragments, an
# encrypted delivery stream's records), so no node ever holds one of its replicas without its
# key. Below it, such a stream is created, then encrypted: a replica whose node applies the
# encryption late may store the first records in the clear.
ENCRYPTED_CREATION_LEVEL = 6

# From this level on, a stream created while fewer nodes than the configured replication factor
# are ACTIVE keeps the factor it asked for (CreateStream's `requested_replication_factor`): its
# shards start on the nodes there are and the controller grows each replica set to the factor
# as nodes join. Below it, such a stream keeps the smaller factor for good. And a node the
# controller removed as absent is marked so (RemoveNode's `absent`, NodeMeta's
# `removed_absent`): one that was alive after all registers again, while a node an operator
# decommissioned stays REMOVED.
REQUESTED_FACTOR_LEVEL = 7

FORMAT_CHANGES: tuple[FormatChange, ...] = (
    FormatChange(
        level=2,
        image_version=7,
        commands=frozenset(
            {
                "SetMetadataFormat",
                # Stream features (issue 14).
                "PutResourcePolicy",
                "DeleteResourcePolicy",
                "SetStreamEncryption",
                "UpdateStreamWarmThroughput",
                "UpdateRecordDistribution",
                # Video streams (issue 13).
                "CreateVideoStream",
                "DeleteVideoStream",
                "UpdateVideoStream",
                "UpdateVideoRetention",
                "TagVideoStream",
                "UntagVideoStream",
                # SQL applications (issue 12).
                "CreateAnalyticsApplication",
                "ChangeAnalyticsApplication",
                "RecordAnalyticsProgress",
                # Delivery streams (issue 11).
                "CreateDeliveryStream",
                "ActivateDeliveryStream",
                "ChangeDeliveryStreamTags",
                "DeleteDeliveryStream",
                "ForgetDeliveryStream",
                "SetDeliveryStreamEncryption",
                "UpdateDeliveryStreamDestination",
                # Video configurations and signaling channels (issue 13).
                "SetVideoStreamConfiguration",
                "CreateSignalingChannel",
                "DeleteSignalingChannel",
                "UpdateSignalingChannel",
                "SetChannelMediaStorage",
                # Kinesis queues (issue 14).
                "CreateQueue",
                "UpdateQueue",
                "DeleteQueue",
                "ClaimQueueRecords",
                "SettleQueueRecords",
                "ChangeQueueTags",
            }
        ),
        members={
            "CreateStream": frozenset({"record_distribution", "warm_throughput_mibps"}),
            # (and `metadata_format` itself, written from level 2 on: image_codec)
            "MetadataImage": frozenset({"video", "analytics", "delivery_streams", "queues"}),
            "StreamMeta": frozenset(
                {
                    "resource_policy",
                    "consumer_policies",
                    "encryption_type",
                    "key_id",
                    "warm_throughput_mibps",
                    "previous_warm_throughput_mibps",
                    "record_distribution",
                }
            ),
        },
        summary="video streams and signaling channels, SQL applications, delivery streams, "
        "Kinesis queues, stream resource policies, encryption, warm throughput and record "
        "distribution",
    ),
    FormatChange(
        level=3,
        image_version=8,
        commands=frozenset(
            {
                # Identities and identity policies (issue 15).
                "CreatePrincipal",
                "DeletePrincipal",
                "CreateAccessKey",
                "UpdateAccessKey",
                "DeleteAccessKey",
                "RotateAccessKey",
                "PutPrincipalPolicy",
                "DeletePrincipalPolicy",
                # Encryption at rest (issue 15): a master-key rotation re-wraps data keys.
                "RewrapStreamDataKeys",
                # kinesisanalyticsv2's enhanced snapshots (issue 12).
                "ChangeAnalyticsSnapshot",
            }
        ),
        members={
            "MetadataImage": frozenset({"iam"}),
            # kinesisanalyticsv2's maintenance windows and application operations (issue 12).
            "Application": frozenset({"maintenance_window_start", "operations", "operations_made"}),
            "ApplicationTable": frozenset({"snapshots"}),
            # StartStreamEncryption's data key, and the stream's wrapped data keys.
            "SetStreamEncryption": frozenset({"data_key"}),
            "StreamMeta": frozenset({"data_keys"}),
        },
        # And, with no command or member of its own: shard leaders write log batches in format
        # 3 and replicate them as their stored bytes (STORED_BATCHES_LEVEL, issue 18); the
        # audit trail's stream leaves the account's limit counts (AUDIT_UNCOUNTED_LEVEL).
        summary="principals, access keys and identity policies; streams' wrapped data keys; "
        "shard-log batches written in format 3 (CRC32C) and replicated as their stored bytes; "
        "the audit trail's stream counted against no account limit",
    ),
    FormatChange(
        level=DELIVERY_ENCRYPTION_STATES_LEVEL,
        # EncryptionStatus gains ENABLING, DISABLING, ENABLING_FAILED and DISABLING_FAILED:
        # a binary of level 3 cannot decode an image holding them.
        image_version=9,
        commands=frozenset({"SettleDeliveryStreamEncryption", "ResealAccessKeys"}),
        members={
            "DeliveryStreamMeta": frozenset(
                {
                    "encryption_failure_type",
                    "encryption_failure_details",
                    "encryption_changes_ms",
                }
            ),
            # Sequence numbers in AWS's layout for the streams created from this level on.
            "ShardMeta": frozenset({"aws_sequence_numbers"}),
        },
        summary="delivery-stream encryption through ENABLING and DISABLING, with "
        "ENABLING_FAILED and DISABLING_FAILED and their FailureDescription; access-key "
        "secrets sealed with the cluster's derived IAM key; sequence numbers in AWS's layout "
        "for new streams",
    ),
    FormatChange(
        level=VIDEO_EDGE_LEVEL,
        image_version=10,
        commands=frozenset(
            {
                # Kinesis Video Streams' edge configurations and storage tiers (issue 14).
                "SetVideoEdgeConfiguration",
                "DeleteVideoEdgeConfiguration",
                "UpdateVideoStorageTier",
            }
        ),
        members={"VideoStreamMeta": frozenset({"storage_tier", "edge"})},
        summary="video streams' edge configurations and storage tiers",
    ),
    FormatChange(
        level=ENCRYPTED_CREATION_LEVEL,
        image_version=10,  # the image gains nothing: a stream's data keys are level 3's
        commands=frozenset(),
        members={"CreateStream": frozenset({"key_id", "data_key"})},
        summary="streams created encrypted (their first data key in CreateStream)",
    ),
    FormatChange(
        level=REQUESTED_FACTOR_LEVEL,
        image_version=11,  # NodeMeta gains `removed_absent`
        commands=frozenset(),
        members={
            "CreateStream": frozenset({"requested_replication_factor"}),
            "RemoveNode": frozenset({"absent"}),
            "NodeMeta": frozenset({"removed_absent"}),
        },
        summary="streams grown to the replication factor they asked for; nodes removed as "
        "absent register again",
    ),
)

METADATA_FORMAT_MAX = FORMAT_CHANGES[-1].level


def validate_level(level: int) -> None:
    if not FIRST_FORMAT <= level <= METADATA_FORMAT_MAX:
        raise ValueError(
            f"metadata format {level} is not one this version reads "
            f"({FIRST_FORMAT}-{METADATA_FORMAT_MAX})"
        )


def image_version(level: int) -> int:
    """The image format version written at `level`."""
    validate_level(level)
    written = _FIRST_IMAGE_VERSION
    for change in FORMAT_CHANGES:
        if change.level <= level:
            written = change.image_version
    return written


def command_level(type_name: str) -> int:
    """The lowest level whose members can decode a command of this type."""
    for change in FORMAT_CHANGES:
        if type_name in change.commands:
            return change.level
    return FIRST_FORMAT


def members_after(level: int, type_name: str) -> Mapping[str, int]:
    """Members of `type_name` that a binary of `level` cannot decode, with their level."""
    return {
        member: change.level
        for change in FORMAT_CHANGES
        if change.level > level
        for member in change.members.get(type_name, ())
    }
