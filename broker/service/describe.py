"""StreamMeta and ShardMeta rendered as the AWS response shapes (Shard, StreamDescription...)."""

from __future__ import annotations

from typing import Any

from broker.meta.image import ShardMeta, StreamMeta, StreamMode
from broker.streams.sequence_numbers import ending_sequence_number, starting_sequence_number
from broker.timestamps import datetime_from_ms

SHARD_LEVEL_METRICS = (
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
)


def shard_id_of(index: int) -> str:
    return f"shardId-{index:012d}"


def hash_key_range(shard: ShardMeta) -> dict[str, str]:
    return {
        "StartingHashKey": str(shard.hash_key_start),
        "EndingHashKey": str(shard.hash_key_end),
    }


def shard_shape(shard: ShardMeta) -> dict[str, Any]:
    sequence_range: dict[str, str] = {"StartingSequenceNumber": starting_sequence_number(shard)}
    ending = ending_sequence_number(shard)
    if ending is not None:
        sequence_range["EndingSequenceNumber"] = ending
    result: dict[str, Any] = {
        "ShardId": shard.shard_id,
        "HashKeyRange": hash_key_range(shard),
        "SequenceNumberRange": sequence_range,
    }
    if shard.parent_index is not None:
        result["ParentShardId"] = shard_id_of(shard.parent_index)
    if shard.adjacent_parent_index is not None:
        result["AdjacentParentShardId"] = shard_id_of(shard.adjacent_parent_index)
    return result


def child_shards_shape(stream: StreamMeta, parent: ShardMeta) -> list[dict[str, Any]]:
    """The ChildShards of a closed shard, as GetRecords returns them at its end."""
    children = []
    for shard in stream.shards:
        if parent.index not in (shard.parent_index, shard.adjacent_parent_index):
            continue
        parents = [
            shard_id_of(i)
            for i in (shard.parent_index, shard.adjacent_parent_index)
            if i is not None
        ]
        children.append(
            {
                "ShardId": shard.shard_id,
                "ParentShards": parents,
                "HashKeyRange": hash_key_range(shard),
            }
        )
    return children


def enhanced_monitoring_shape(stream: StreamMeta) -> list[dict[str, Any]]:
    return [{"ShardLevelMetrics": list(stream.enhanced_metrics)}]


def stream_mode_shape(stream: StreamMeta) -> dict[str, str]:
    return {"StreamMode": stream.mode.value}


def stream_summary_shape(stream: StreamMeta, *, now_ms: int) -> dict[str, Any]:
    """A ListStreams StreamSummaries entry."""
    return {
        "StreamName": stream.display_name,
        "StreamARN": stream.arn,
        "StreamStatus": stream.status(now_ms=now_ms).value,
        "StreamModeDetails": stream_mode_shape(stream),
        "StreamCreationTimestamp": datetime_from_ms(stream.created_ms),
    }


def encryption_shape(stream: StreamMeta) -> dict[str, str]:
    """EncryptionType, and KeyId when encrypted (as StreamDescription shows them)."""
    if stream.key_id is None:
        return {"EncryptionType": stream.encryption_type}
    return {"EncryptionType": stream.encryption_type, "KeyId": stream.key_id}


def warm_throughput_shape(stream: StreamMeta, *, now_ms: int) -> dict[str, int] | None:
    """WarmThroughput {TargetMiBps, CurrentMiBps}; None for a stream that never set one."""
    if stream.warm_throughput_mibps is None:
        return None
    shape = {"TargetMiBps": stream.warm_throughput_mibps}
    current = stream.current_warm_throughput_mibps(now_ms=now_ms)
    if current is not None:
        shape["CurrentMiBps"] = current
    return shape


def stream_description_summary_shape(stream: StreamMeta, *, now_ms: int) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "StreamName": stream.display_name,
        "StreamARN": stream.arn,
        "StreamStatus": stream.status(now_ms=now_ms).value,
        "StreamModeDetails": stream_mode_shape(stream),
        "RetentionPeriodHours": stream.retention_hours,
        "StreamCreationTimestamp": datetime_from_ms(stream.created_ms),
        "EnhancedMonitoring": enhanced_monitoring_shape(stream),
        **encryption_shape(stream),
        "OpenShardCount": len(stream.open_shards()),
        "ConsumerCount": 0,
        "MaxRecordSizeInKiB": stream.max_record_size_kib,
    }
    warm = warm_throughput_shape(stream, now_ms=now_ms)
    if warm is not None:
        summary["WarmThroughput"] = warm
    if stream.mode is StreamMode.ON_DEMAND:
        summary["RecordDistributionStrategy"] = stream.record_distribution.value
    return summary


def stream_description_shape(
    stream: StreamMeta, *, shards: list[ShardMeta], has_more_shards: bool, now_ms: int
) -> dict[str, Any]:
    return {
        "StreamName": stream.display_name,
        "StreamARN": stream.arn,
        "StreamStatus": stream.status(now_ms=now_ms).value,
        "StreamModeDetails": stream_mode_shape(stream),
        "Shards": [shard_shape(shard) for shard in shards],
        "HasMoreShards": has_more_shards,
        "RetentionPeriodHours": stream.retention_hours,
        "StreamCreationTimestamp": datetime_from_ms(stream.created_ms),
        "EnhancedMonitoring": enhanced_monitoring_shape(stream),
        **encryption_shape(stream),
    }
