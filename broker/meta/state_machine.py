"""The metadata state machine: `apply(image, command) -> Applied`, pure and deterministic.

Every replica of the metadata quorum, leader or follower, applies the same commands in the
same order through this one function (Kafka's records-and-replay), so it must compute the same
image everywhere: it reads no clock, environment or randomness. Time comes only from
`command.now_ms`, the proposer's clock; generated values (secrets, ARNs) come in the command.

Every precondition is checked here, against the image at apply time, not only by the caller
before proposing: two racing CreateStream calls for one name both pass the gateway's early
check, and exactly one of them must win. A failed precondition is a value
(`Applied.error`, a ShoalError with AWS's name and message), never an exception, because the
quorum must keep applying the next command. The image is still advanced
(`applied_commands` counts every command), so a failed command leaves a trace that replicas
agree on.

Exceptions other than ShoalError (an assertion, a bug in a rule) escape: they mean replicas can
no longer be trusted to agree, and the node must stop rather than guess.

Messages follow AWS's texts as reproduced by kinesalite (`actions/*.js`).

The rules themselves live in `broker/meta/transitions/`, one module per domain (streams'
lifecycle and settings, resharding, nodes and placement, consumers, account limits); capacity
loads and scaling events in `broker/meta/capacity.py`. This module is the entry point: `apply`,
`Applied` and the dispatch from each command type to its transition.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import assert_never

from broker.errors import ShoalError
from broker.meta import capacity
from broker.meta.commands import (
    ActivateDeliveryStream,
    AddTags,
    BeginReshard,
    ChangeAnalyticsApplication,
    ChangeAnalyticsSnapshot,
    ChangeConsumerTags,
    ChangeDeliveryStreamTags,
    ChangeQueueTags,
    ChangeRetention,
    CheckpointLeaseCommand,
    ClaimQueueRecords,
    Command,
    CompleteReshard,
    CreateAccessKey,
    CreateAnalyticsApplication,
    CreateDeliveryStream,
    CreateLeasesCommand,
    CreatePrincipal,
    CreateQueue,
    CreateSignalingChannel,
    CreateStream,
    CreateVideoStream,
    DeleteAccessKey,
    DeleteApplicationCommand,
    DeleteDeliveryStream,
    DeleteLeaseCommand,
    DeletePrincipal,
    DeletePrincipalPolicy,
    DeleteQueue,
    DeleteResourcePolicy,
    DeleteSignalingChannel,
    DeleteStream,
    DeleteVideoEdgeConfiguration,
    DeleteVideoStream,
    DeregisterStreamConsumer,
    ForgetDeliveryStream,
    ForgetStream,
    InitCluster,
    PutPrincipalPolicy,
    PutResourcePolicy,
    RecordAnalyticsProgress,
    RecordScalingEvent,
    RegisterNode,
    RegisterStreamConsumer,
    ReleaseLeaseCommand,
    RemoveNode,
    RemoveTags,
    RenewLeaseCommand,
    ReportShardLoads,
    ResealAccessKeys,
    RewrapStreamDataKeys,
    RotateAccessKey,
    SetChannelMediaStorage,
    SetDeliveryStreamEncryption,
    SetEnhancedMonitoring,
    SetMetadataFormat,
    SetNodeState,
    SetShardLeader,
    SetStreamEncryption,
    SettleDeliveryStreamEncryption,
    SettleQueueRecords,
    SetVideoEdgeConfiguration,
    SetVideoStreamConfiguration,
    StealLeaseCommand,
    TagVideoStream,
    TakeLeaseCommand,
    UntagVideoStream,
    UpdateAccessKey,
    UpdateAccountLimits,
    UpdateAccountSettings,
    UpdateDeliveryStreamDestination,
    UpdateMaxRecordSize,
    UpdateQueue,
    UpdateRecordDistribution,
    UpdateSignalingChannel,
    UpdateStreamLimits,
    UpdateStreamMode,
    UpdateStreamWarmThroughput,
    UpdateVideoRetention,
    UpdateVideoStorageTier,
    UpdateVideoStream,
)
from broker.meta.image import MetadataImage
from broker.meta.transitions import (
    account_limits,
    analytics_applications,
    delivery_streams,
    iam,
    nodes,
    queues,
    reshards,
    signaling_channels,
    stream_consumers,
    stream_features,
    stream_lifecycle,
    stream_settings,
    video_streams,
)
from broker.meta.transitions.common import ACCOUNT_ID_FALLBACK, DAY_MS, REGION_FALLBACK

__all__ = ["ACCOUNT_ID_FALLBACK", "DAY_MS", "REGION_FALLBACK", "Applied", "apply"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """The outcome of one command: the next image, and a result or an error (never both)."""

    image: MetadataImage
    result: object = None
    error: ShoalError | None = None


def apply(image: MetadataImage, command: Command) -> Applied:
    """Applies `command` to `image` and returns the next image; never mutates `image`."""
    assert command.now_ms >= 0
    try:
        next_image, result = _dispatch(image, command)
    except ShoalError as error:
        counted = dataclasses.replace(image, applied_commands=image.applied_commands + 1)
        return Applied(image=counted, error=error)
    assert next_image.applied_commands == image.applied_commands
    assert next_image.next_stream_uid >= image.next_stream_uid
    assert next_image.next_shard_uid >= image.next_shard_uid
    counted = dataclasses.replace(next_image, applied_commands=image.applied_commands + 1)
    return Applied(image=counted, result=result)


def _dispatch(image: MetadataImage, command: Command) -> tuple[MetadataImage, object]:
    match command:
        case InitCluster():
            return stream_lifecycle.init_cluster(image, command)
        case SetMetadataFormat():
            return stream_lifecycle.set_metadata_format(image, command)
        case CreateStream():
            return stream_lifecycle.create_stream(image, command)
        case DeleteStream():
            return stream_lifecycle.delete_stream(image, command)
        case ForgetStream():
            return stream_lifecycle.forget_stream(image, command)
        case ChangeRetention():
            return stream_settings.change_retention(image, command)
        case AddTags():
            return stream_settings.add_tags(image, command)
        case RemoveTags():
            return stream_settings.remove_tags(image, command)
        case SetEnhancedMonitoring():
            return stream_settings.set_enhanced_monitoring(image, command)
        case BeginReshard():
            return reshards.begin_reshard(image, command)
        case CompleteReshard():
            return reshards.complete_reshard(image, command)
        case UpdateStreamMode():
            return stream_settings.update_stream_mode(image, command)
        case UpdateMaxRecordSize():
            return stream_settings.update_max_record_size(image, command)
        case RegisterNode():
            return nodes.register_node(image, command)
        case SetNodeState():
            return nodes.set_node_state(image, command)
        case SetShardLeader():
            return nodes.set_shard_leader(image, command)
        case RemoveNode():
            return nodes.remove_node(image, command)
        case (
            CreateLeasesCommand()
            | TakeLeaseCommand()
            | StealLeaseCommand()
            | RenewLeaseCommand()
            | ReleaseLeaseCommand()
            | CheckpointLeaseCommand()
            | DeleteLeaseCommand()
            | DeleteApplicationCommand()
        ):
            return stream_consumers.lease_operation(image, command)
        case RegisterStreamConsumer():
            return stream_consumers.register_consumer(image, command)
        case DeregisterStreamConsumer():
            return stream_consumers.deregister_consumer(image, command)
        case ChangeConsumerTags():
            return stream_consumers.change_consumer_tags(image, command)
        case UpdateStreamLimits():
            return account_limits.update_stream_limits(image, command)
        case UpdateAccountSettings() | UpdateAccountLimits():
            return account_limits.update_account(image, command)
        case ReportShardLoads():
            return capacity.apply_report(image, command)
        case RecordScalingEvent():
            return capacity.apply_event(image, command)
        case PutResourcePolicy():
            return stream_features.put_resource_policy(image, command)
        case DeleteResourcePolicy():
            return stream_features.delete_resource_policy(image, command)
        case SetStreamEncryption():
            return stream_features.set_stream_encryption(image, command)
        case RewrapStreamDataKeys():
            return stream_features.rewrap_data_keys(image, command)
        case UpdateStreamWarmThroughput():
            return stream_features.update_warm_throughput(image, command)
        case UpdateRecordDistribution():
            return stream_features.update_record_distribution(image, command)
        case CreateVideoStream():
            return video_streams.create(image, command)
        case DeleteVideoStream():
            return video_streams.delete(image, command)
        case UpdateVideoStream():
            return video_streams.update(image, command)
        case UpdateVideoRetention():
            return video_streams.update_retention(image, command)
        case TagVideoStream():
            return video_streams.tag(image, command)
        case UntagVideoStream():
            return video_streams.untag(image, command)
        case SetVideoStreamConfiguration():
            return signaling_channels.set_stream_configuration(image, command)
        case SetVideoEdgeConfiguration():
            return video_streams.set_edge(image, command)
        case DeleteVideoEdgeConfiguration():
            return video_streams.delete_edge(image, command)
        case UpdateVideoStorageTier():
            return video_streams.update_storage_tier(image, command)
        case CreateSignalingChannel():
            return signaling_channels.create(image, command)
        case DeleteSignalingChannel():
            return signaling_channels.delete(image, command)
        case UpdateSignalingChannel():
            return signaling_channels.update(image, command)
        case SetChannelMediaStorage():
            return signaling_channels.set_media_storage(image, command)
        case CreateAnalyticsApplication():
            return analytics_applications.create_application(image, command)
        case ChangeAnalyticsApplication():
            return analytics_applications.change_application(image, command)
        case RecordAnalyticsProgress():
            return analytics_applications.record_progress(image, command)
        case ChangeAnalyticsSnapshot():
            return analytics_applications.change_snapshot(image, command)
        case CreateDeliveryStream():
            return delivery_streams.create(image, command)
        case ActivateDeliveryStream():
            return delivery_streams.activate(image, command)
        case DeleteDeliveryStream():
            return delivery_streams.delete(image, command)
        case ForgetDeliveryStream():
            return delivery_streams.forget(image, command)
        case UpdateDeliveryStreamDestination():
            return delivery_streams.update_destination(image, command)
        case ChangeDeliveryStreamTags():
            return delivery_streams.change_tags(image, command)
        case SetDeliveryStreamEncryption():
            return delivery_streams.set_encryption(image, command)
        case SettleDeliveryStreamEncryption():
            return delivery_streams.settle_encryption(image, command)
        case (
            CreatePrincipal()
            | DeletePrincipal()
            | CreateAccessKey()
            | UpdateAccessKey()
            | DeleteAccessKey()
            | RotateAccessKey()
            | ResealAccessKeys()
            | PutPrincipalPolicy()
            | DeletePrincipalPolicy()
        ):
            return iam.apply_iam(image, command)
        case CreateQueue():
            return queues.create(image, command)
        case UpdateQueue():
            return queues.update(image, command)
        case DeleteQueue():
            return queues.delete(image, command)
        case ClaimQueueRecords():
            return queues.claim(image, command)
        case SettleQueueRecords():
            return queues.settle(image, command)
        case ChangeQueueTags():
            return queues.change_tags(image, command)
        case _:
            assert_never(command)
