"""One of each queue command, with every field set, for the codec and state-machine tests."""

from __future__ import annotations

from broker.meta.commands import (
    ChangeQueueTags,
    ClaimQueueRecords,
    CreateQueue,
    DeleteQueue,
    QueueCommand,
    SettleQueueRecords,
    UpdateQueue,
)
from broker.queues.state import (
    CursorAdvance,
    Redelivery,
    SettleEntry,
    Settlement,
    StartingPosition,
    TakenRecord,
)

QUEUE_ARN = "arn:aws:kinesis:us-east-1:000000000000:queue/0f0e"


def every_queue_command(*, now_ms: int) -> list[QueueCommand]:
    return [
        CreateQueue(
            now_ms=now_ms,
            arn=QUEUE_ARN,
            queue_id="0f0e",
            name="q",
            account_id="000000000000",
            region="us-east-1",
            stream_uid=1,
            starting_position=StartingPosition.AT_TIMESTAMP,
            start_timestamp_ms=1_790_000_000_000,
            visibility_timeout_s=30,
            dead_letter_enabled=True,
            max_receive_count=6,
            tags=(("team", "pay"),),
            consumers_per_stream_max=20,
        ),
        UpdateQueue(now_ms=now_ms, arn=QUEUE_ARN, visibility_timeout_s=5),
        ClaimQueueRecords(
            now_ms=now_ms,
            arn=QUEUE_ARN,
            dead_letter=False,
            advances=(
                CursorAdvance(
                    shard_id="shardId-000000000000",
                    expected=None,
                    through=3,
                    records=(TakenRecord(record_id="42", sequence_number="42", offset=2),),
                ),
            ),
            redeliveries=(Redelivery(record_id="41", token="ab0"),),
            dropped=("40",),
            token_seed="c0ffee",
            visibility_ms=30_000,
            limit=10,
        ),
        SettleQueueRecords(
            now_ms=now_ms,
            arn=QUEUE_ARN,
            settlement=Settlement.CHANGE_VISIBILITY,
            entries=(SettleEntry(receipt_handle="0f0e.42.c0ffee0", visibility_timeout_s=9),),
        ),
        ChangeQueueTags(
            now_ms=now_ms, arn=QUEUE_ARN, added=(("a", "b"),), removed=("team",), tags_max=50
        ),
        DeleteQueue(now_ms=now_ms, arn=QUEUE_ARN),
    ]
