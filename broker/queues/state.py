"""Queues as metadata values, and the pure rules of delivery state.

A queue reads one data stream. For each shard it keeps a cursor: the log offset after the
last record it took from the stream. Every record taken and not yet acknowledged has a
`QueueRecord`: its receive count, the current receipt's token, when it becomes visible again,
and whether it is a dead-letter record. Acknowledging a record removes its entry; a record at
or before its shard's cursor with no entry has been acknowledged. So the state a queue holds
is bounded by the records in flight or dead-lettered (`limits.queue_records_held_max`), not by
the stream's length.

Every change is a metadata command applied by every replica in the same order
(`meta/transitions/queues.py` calls the functions here), so the rules are functions of values
with `now_ms` passed in. A receive is proposed by whichever node served the request, after it
read the records from the stream; it names what it expects (each cursor it advances from, each
receipt token it replaces), and a claim that lost a race with another node's is skipped rather
than delivered twice.

Receipt handles are `<queue id>.<record id>.<token>`: the record id is the record's sequence
number (unique in the stream, AWS's pattern `[a-z0-9]+`), the token is new on every receive,
so a handle from an earlier receive of a redelivered record no longer acts on it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError


class QueueStatus(enum.Enum):
    CREATING = "CREATING"
    ACTIVE = "ACTIVE"
    UPDATING = "UPDATING"
    DELETING = "DELETING"


class StartingPosition(enum.Enum):
    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"


DEFAULT_VISIBILITY_TIMEOUT_S = 30  # AWS: "If you omit this attribute ... 30 seconds"
DEFAULT_MAX_RECEIVE_COUNT = 6  # AWS: dead-letter handling on, MaxReceiveCount 6


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueRecord:
    """The delivery state of one record taken from the stream and not yet acknowledged."""

    shard_id: str
    offset: int  # in the shard's log: where a redelivery reads the record again
    sequence_number: str
    receive_count: int
    first_receive_ms: int
    visible_at_ms: int  # in flight until then; visible again (redeliverable) afterwards
    token: str  # of the current receipt handle
    dead_letter: bool = False

    def visible(self, *, now_ms: int) -> bool:
        return self.visible_at_ms <= now_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMeta:
    arn: str
    queue_id: str
    name: str
    account_id: str
    region: str
    stream_name: str
    stream_arn: str
    stream_uid: int
    stream_created_ms: int
    created_ms: int
    starting_position: StartingPosition
    # Where delivery begins on every shard that has no cursor yet: LATEST is the creation
    # time (records that arrive after the queue was created), AT_TIMESTAMP the caller's.
    start_timestamp_ms: int | None
    visibility_timeout_s: int
    dead_letter_enabled: bool
    max_receive_count: int
    tags: tuple[tuple[str, str], ...] = ()
    cursors: dict[str, int] = field(default_factory=dict)  # shard id -> next offset to take
    records: dict[str, QueueRecord] = field(default_factory=dict)  # by record id

    def __hash__(self) -> int:  # dict fields: identity is enough, queues are never keys
        return id(self)

    def belongs_to(self, account_id: str, region: str) -> bool:
        return self.account_id == account_id and self.region == region

    def is_dead_letter(self, record: QueueRecord, *, now_ms: int) -> bool:
        """A record received MaxReceiveCount times is a dead-letter record once its last
        visibility timeout ends (or once marked so by the receive that noticed)."""
        if record.dead_letter:
            return True
        return (
            self.dead_letter_enabled
            and record.receive_count >= self.max_receive_count
            and record.visible(now_ms=now_ms)
        )

    def candidates(self, *, dead_letter: bool, now_ms: int, limit: int) -> list[QueueRecord]:
        """Held records a receive may claim again: visible, on the asked path, oldest
        visibility first."""
        found = [
            record
            for record in self.records.values()
            if record.visible(now_ms=now_ms)
            and self.is_dead_letter(record, now_ms=now_ms) == dead_letter
        ]
        found.sort(key=lambda record: (record.visible_at_ms, int(record.sequence_number)))
        return found[:limit]

    def room(self) -> int:
        """How many more records the queue may take from the stream."""
        return max(0, limits.queue_records_held_max - len(self.records))


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueTable:
    """Every queue of every account and region, by ARN."""

    queues: dict[str, QueueMeta] = field(default_factory=dict)

    def __hash__(self) -> int:
        return id(self)

    def by_arn(self, arn: str) -> QueueMeta | None:
        return self.queues.get(arn)

    def by_name(self, account_id: str, region: str, name: str) -> QueueMeta | None:
        for queue in self.queues.values():
            if queue.name == name and queue.belongs_to(account_id, region):
                return queue
        return None

    def on_stream(self, stream_uid: int) -> list[QueueMeta]:
        return sorted(
            (q for q in self.queues.values() if q.stream_uid == stream_uid),
            key=lambda queue: queue.arn,
        )

    def listed(self, account_id: str, region: str) -> list[QueueMeta]:
        """The account's queues in the region, by ARN (a stable order for paging)."""
        return sorted(
            (q for q in self.queues.values() if q.belongs_to(account_id, region)),
            key=lambda queue: queue.arn,
        )

    def with_queue(self, queue: QueueMeta) -> QueueTable:
        queues = dict(self.queues)
        queues[queue.arn] = queue
        return dataclasses.replace(self, queues=queues)

    def without(self, arn: str) -> QueueTable:
        queues = dict(self.queues)
        del queues[arn]
        return dataclasses.replace(self, queues=queues)


# --- Receiving ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TakenRecord:
    """A record read from the stream for the first time."""

    record_id: str
    sequence_number: str
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CursorAdvance:
    """The records a receive read from one shard after `expected` (None: the shard had no
    cursor), moving the cursor to `through`. Applied whole or not at all."""

    shard_id: str
    expected: int | None
    through: int
    records: tuple[TakenRecord, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Redelivery:
    """A held record claimed again, expected still to carry receipt token `token`."""

    record_id: str
    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """One record a receive hands out: the caller reads its data by shard and sequence."""

    record_id: str
    shard_id: str
    offset: int
    sequence_number: str
    receipt_handle: str
    receive_count: int
    first_receive_ms: int


def receipt_handle(queue_id: str, record_id: str, token: str) -> str:
    return f"{queue_id}.{record_id}.{token}"


def parse_receipt_handle(handle: str) -> tuple[str, str, str] | None:
    """(queue id, record id, token), or None when `handle` is not one of ours."""
    parts = handle.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    queue_id, record_id, token = parts
    if not record_id.isdigit():
        return None
    return queue_id, record_id, token


def receive(
    queue: QueueMeta,
    *,
    dead_letter: bool,
    advances: tuple[CursorAdvance, ...],
    redeliveries: tuple[Redelivery, ...],
    dropped: tuple[str, ...],
    token_seed: str,
    visibility_ms: int,
    limit: int,
    now_ms: int,
) -> tuple[QueueMeta, list[Delivered]]:
    """Claims records for one receive. Redeliveries first (records that are visible again),
    then the records read from the stream. A claim that no longer matches the state (another
    receive got there first) is skipped; a held record received MaxReceiveCount times becomes a
    dead-letter record instead of being delivered again. `dropped` are held records the stream
    no longer has (past its retention): they are forgotten."""
    assert visibility_ms >= 0
    assert 1 <= limit <= limits.queue_receive_limit_max
    records = dict(queue.records)
    cursors = dict(queue.cursors)
    for record_id in dropped:
        records.pop(record_id, None)
    delivered: list[Delivered] = []

    def deliver(record_id: str, held: QueueRecord) -> None:
        token = f"{token_seed}{len(delivered):x}"
        count = held.receive_count + 1
        first = held.first_receive_ms if held.receive_count > 0 else now_ms
        records[record_id] = dataclasses.replace(
            held,
            dead_letter=dead_letter,
            receive_count=count,
            first_receive_ms=first,
            visible_at_ms=now_ms + visibility_ms,
            token=token,
        )
        delivered.append(
            Delivered(
                record_id=record_id,
                shard_id=held.shard_id,
                offset=held.offset,
                sequence_number=held.sequence_number,
                receipt_handle=receipt_handle(queue.queue_id, record_id, token),
                receive_count=count,
                first_receive_ms=first,
            )
        )

    for claim in redeliveries:
        held = records.get(claim.record_id)
        if len(delivered) >= limit:
            break
        if held is None or held.token != claim.token or not held.visible(now_ms=now_ms):
            continue
        dead = queue.is_dead_letter(held, now_ms=now_ms)
        if dead and not dead_letter:
            records[claim.record_id] = dataclasses.replace(held, dead_letter=True, token="")
            continue
        if dead == dead_letter:
            deliver(claim.record_id, held)
    if not dead_letter:
        for advance in advances:
            if cursors.get(advance.shard_id) != advance.expected:
                continue  # another receive moved this shard's cursor first
            if len(delivered) + len(advance.records) > limit:
                continue
            if len(records) + len(advance.records) > limits.queue_records_held_max:
                continue
            cursors[advance.shard_id] = advance.through
            for taken in advance.records:
                fresh = QueueRecord(
                    shard_id=advance.shard_id,
                    offset=taken.offset,
                    sequence_number=taken.sequence_number,
                    receive_count=0,
                    first_receive_ms=now_ms,
                    visible_at_ms=now_ms,
                    token="",
                )
                deliver(taken.record_id, fresh)
    changed = dataclasses.replace(queue, records=records, cursors=cursors)
    return changed, delivered


# --- Acknowledging, changing visibility, restoring ----------------------------------------


class Settlement(enum.Enum):
    """What a batch of receipt handles asks for. The *_DEAD_LETTER ones act on dead-letter
    records only, the others on records on the normal receive path only."""

    ACKNOWLEDGE = "ACKNOWLEDGE"
    CHANGE_VISIBILITY = "CHANGE_VISIBILITY"
    ACKNOWLEDGE_DEAD_LETTER = "ACKNOWLEDGE_DEAD_LETTER"
    CHANGE_DEAD_LETTER_VISIBILITY = "CHANGE_DEAD_LETTER_VISIBILITY"
    RESTORE_DEAD_LETTER = "RESTORE_DEAD_LETTER"

    @property
    def on_dead_letters(self) -> bool:
        return self in (
            Settlement.ACKNOWLEDGE_DEAD_LETTER,
            Settlement.CHANGE_DEAD_LETTER_VISIBILITY,
            Settlement.RESTORE_DEAD_LETTER,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleEntry:
    receipt_handle: str
    visibility_timeout_s: int = 0  # the CHANGE_* settlements only


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleFailure:
    receipt_handle: str
    error: ShoalError


def settle(
    queue: QueueMeta,
    settlement: Settlement,
    entries: tuple[SettleEntry, ...],
    *,
    now_ms: int,
) -> tuple[QueueMeta, list[str], list[SettleFailure]]:
    """Applies one batch entry by entry: (queue, succeeded handles, failures). Acknowledging
    a record that is already acknowledged succeeds again (AWS: idempotent consumers)."""
    records = dict(queue.records)
    succeeded: list[str] = []
    failed: list[SettleFailure] = []
    for entry in entries:
        handle = entry.receipt_handle
        problem = _settle_one(queue, records, settlement, entry, now_ms=now_ms)
        if problem is None:
            succeeded.append(handle)
        else:
            failed.append(SettleFailure(receipt_handle=handle, error=problem))
    return dataclasses.replace(queue, records=records), succeeded, failed


def _settle_one(
    queue: QueueMeta,
    records: dict[str, QueueRecord],
    settlement: Settlement,
    entry: SettleEntry,
    *,
    now_ms: int,
) -> ShoalError | None:
    parsed = parse_receipt_handle(entry.receipt_handle)
    if parsed is None or parsed[0] != queue.queue_id:
        return _invalid(error_messages.receipt_handle_invalid(entry.receipt_handle))
    _, record_id, token = parsed
    held = records.get(record_id)
    if held is None:
        # Only a receive makes a handle, so its record was taken: it has been acknowledged
        # (or passed the stream's retention) since. Acknowledging it again succeeds.
        if settlement in (Settlement.ACKNOWLEDGE, Settlement.ACKNOWLEDGE_DEAD_LETTER):
            return None
        return _invalid(error_messages.receipt_handle_expired(entry.receipt_handle))
    if held.token != token:
        return _invalid(error_messages.receipt_handle_expired(entry.receipt_handle))
    dead = queue.is_dead_letter(held, now_ms=now_ms)
    if dead != settlement.on_dead_letters:
        return _invalid(
            error_messages.record_is_dead_letter(record_id)
            if dead
            else error_messages.record_is_not_dead_letter(record_id)
        )
    match settlement:
        case Settlement.ACKNOWLEDGE | Settlement.ACKNOWLEDGE_DEAD_LETTER:
            del records[record_id]
        case Settlement.CHANGE_VISIBILITY | Settlement.CHANGE_DEAD_LETTER_VISIBILITY:
            visible_at = now_ms + entry.visibility_timeout_s * 1000
            records[record_id] = dataclasses.replace(held, visible_at_ms=visible_at)
        case Settlement.RESTORE_DEAD_LETTER:
            records[record_id] = dataclasses.replace(
                held, dead_letter=False, receive_count=0, visible_at_ms=now_ms, token=""
            )
    return None


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, message)
