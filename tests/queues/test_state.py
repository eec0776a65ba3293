"""The pure rules of queue delivery state (broker/queues/state.py), on values and a given
clock: claims that lost a race are skipped, receipts go stale on redelivery, records become
dead letters after MaxReceiveCount receives, acknowledgements are idempotent."""

from __future__ import annotations

from broker.queues import state
from broker.queues.state import (
    CursorAdvance,
    QueueMeta,
    Redelivery,
    SettleEntry,
    Settlement,
    StartingPosition,
    TakenRecord,
)

SHARD = "shardId-000000000000"


def queue(**overrides: object) -> QueueMeta:
    fields: dict[str, object] = {
        "arn": "arn:aws:kinesis:us-east-1:000000000000:queue/q1",
        "queue_id": "q1",
        "name": "q",
        "account_id": "000000000000",
        "region": "us-east-1",
        "stream_name": "s",
        "stream_arn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
        "stream_uid": 1,
        "stream_created_ms": 0,
        "created_ms": 0,
        "starting_position": StartingPosition.TRIM_HORIZON,
        "start_timestamp_ms": None,
        "visibility_timeout_s": 30,
        "dead_letter_enabled": True,
        "max_receive_count": 2,
    }
    fields.update(overrides)
    return QueueMeta(**fields)  # type: ignore[arg-type]


def advance(expected: int | None, *offsets: int) -> CursorAdvance:
    return CursorAdvance(
        shard_id=SHARD,
        expected=expected,
        through=(offsets[-1] + 1) if offsets else (expected or 0),
        records=tuple(
            TakenRecord(record_id=str(100 + o), sequence_number=str(100 + o), offset=o)
            for o in offsets
        ),
    )


def take(
    q: QueueMeta,
    *,
    now_ms: int,
    advances: tuple[CursorAdvance, ...] = (),
    redeliveries: tuple[Redelivery, ...] = (),
    dead_letter: bool = False,
) -> tuple[QueueMeta, list[state.Delivered]]:
    return state.receive(
        q,
        dead_letter=dead_letter,
        advances=advances,
        redeliveries=redeliveries,
        dropped=(),
        token_seed=f"t{now_ms}",
        visibility_ms=1_000,
        limit=10,
        now_ms=now_ms,
    )


def test_a_cursor_moved_by_another_receive_is_not_taken_twice() -> None:
    q, delivered = take(queue(), now_ms=0, advances=(advance(None, 0, 1),))
    assert [d.record_id for d in delivered] == ["100", "101"]
    assert q.cursors == {SHARD: 2}
    # A second node read from the same (old) cursor: its claim is skipped.
    q2, again = take(q, now_ms=0, advances=(advance(None, 0, 1),))
    assert again == []
    assert q2.records == q.records


def test_redelivery_after_visibility_and_stale_receipts() -> None:
    q, (first,) = take(queue(), now_ms=0, advances=(advance(None, 0),))
    assert q.candidates(dead_letter=False, now_ms=999, limit=10) == []
    (held,) = q.candidates(dead_letter=False, now_ms=1_000, limit=10)
    q, (second,) = take(
        q, now_ms=1_000, redeliveries=(Redelivery(record_id="100", token=held.token),)
    )
    assert second.receive_count == 2
    assert second.first_receive_ms == 0
    # The first receipt no longer acts on the record; the second does.
    q, ok, failed = state.settle(
        q, Settlement.ACKNOWLEDGE, (SettleEntry(receipt_handle=first.receipt_handle),), now_ms=1_001
    )
    assert ok == []
    assert failed[0].error.code.kinesis_name == "InvalidArgumentException"
    q, ok, failed = state.settle(
        q,
        Settlement.ACKNOWLEDGE,
        (SettleEntry(receipt_handle=second.receipt_handle),),
        now_ms=1_001,
    )
    assert ok == [second.receipt_handle]
    assert q.records == {}
    # Acknowledging again succeeds (idempotent consumers).
    _, ok, _ = state.settle(
        q,
        Settlement.ACKNOWLEDGE,
        (SettleEntry(receipt_handle=second.receipt_handle),),
        now_ms=1_002,
    )
    assert ok == [second.receipt_handle]


def test_max_receive_count_makes_a_dead_letter_and_restore_resets_it() -> None:
    q, _ = take(queue(), now_ms=0, advances=(advance(None, 0),))
    (held,) = q.candidates(dead_letter=False, now_ms=1_000, limit=10)
    q, _ = take(q, now_ms=1_000, redeliveries=(Redelivery(record_id="100", token=held.token),))
    # Received twice (the maximum) and visible again: a dead letter, not redelivered.
    assert q.candidates(dead_letter=False, now_ms=2_000, limit=10) == []
    (dead,) = q.candidates(dead_letter=True, now_ms=2_000, limit=10)
    q, (letter,) = take(
        q,
        now_ms=2_000,
        dead_letter=True,
        redeliveries=(Redelivery(record_id="100", token=dead.token),),
    )
    q, ok, _ = state.settle(
        q,
        Settlement.RESTORE_DEAD_LETTER,
        (SettleEntry(receipt_handle=letter.receipt_handle),),
        now_ms=2_001,
    )
    assert ok == [letter.receipt_handle]
    (back,) = q.candidates(dead_letter=False, now_ms=2_001, limit=10)
    assert back.receive_count == 0
    assert not back.dead_letter


def test_no_dead_letters_when_disabled_and_visibility_changes() -> None:
    q, (first,) = take(queue(dead_letter_enabled=False), now_ms=0, advances=(advance(None, 0),))
    for now in (1_000, 2_000, 3_000):
        (held,) = q.candidates(dead_letter=False, now_ms=now, limit=10)
        q, (first,) = take(
            q, now_ms=now, redeliveries=(Redelivery(record_id="100", token=held.token),)
        )
    assert first.receive_count == 4
    q, ok, _ = state.settle(
        q,
        Settlement.CHANGE_VISIBILITY,
        (SettleEntry(receipt_handle=first.receipt_handle, visibility_timeout_s=60),),
        now_ms=3_500,
    )
    assert ok == [first.receipt_handle]
    assert q.candidates(dead_letter=False, now_ms=63_499, limit=10) == []
    assert len(q.candidates(dead_letter=False, now_ms=63_500, limit=10)) == 1
