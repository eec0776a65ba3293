"""The enhanced fan-out consumer registry: registered stream consumers as an immutable table.

A registered consumer (RegisterStreamConsumer) is what SubscribeToShard reads through: AWS
gives each one its own 2 MB/s per shard. This module holds only the registry (names, ARNs,
states, tags), as pure functions over an immutable table, like `leases.py`: every operation is
`op(table, ..., now_ms) -> (new table, consumer | ConsumerError)`, deterministic, with the
proposer's `now_ms` passed in, so the metadata state machine applies it identically on every
replica. On an error the table comes back unchanged (the same object).

**States.** AWS shows CREATING for a few seconds after RegisterStreamConsumer and DELETING for
a few seconds after DeregisterStreamConsumer; then the consumer is ACTIVE, or gone. As for
streams (`image.StreamMeta.status`), the table stores the times the transitions happen and
`StreamConsumer.status(now_ms=...)` computes the state, so no command is needed to move on.
A gone consumer stays in the table until the next change to it prunes it; every reader treats
it as absent.

**Names.** A consumer name is unique per stream incarnation while its consumer is not gone: a
DELETING consumer still holds its name (ResourceInUseException), as on AWS. The ARN carries
the creation time in epoch seconds, so a name registered again gets a different ARN and the
old ARN finds nothing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from broker.errors import ErrorCode
from broker.types import StreamUid

# AWS's ConsumerName and ConsumerARN patterns (botocore's Kinesis model).
CONSUMER_NAME_PATTERN = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
CONSUMER_ARN_PATTERN = re.compile(
    r"^(arn):aws.*:kinesis:.*:\d{12}:.*stream\/[a-zA-Z0-9_.-]+\/consumer\/[a-zA-Z0-9_.-]+:[0-9]+"
)
_CONSUMER_ARN_PARTS = re.compile(
    r"(?P<stream_arn>arn:[^:]+:kinesis:[^:]*:[0-9]{12}:stream/(?P<stream>[a-zA-Z0-9_.-]{1,128}))"
    r"/consumer/(?P<name>[a-zA-Z0-9_.-]{1,128}):(?P<seconds>[0-9]{1,20})"
)
CONSUMERS_PER_STREAM_DEFAULT = 20  # AWS's default quota (configurable per cluster)
CONSUMERS_CREATING_MAX = 5  # AWS: at most 5 consumers of a stream CREATING at once


class ConsumerStatus(enum.Enum):
    """ConsumerDescription.ConsumerStatus."""

    CREATING = "CREATING"
    ACTIVE = "ACTIVE"
    DELETING = "DELETING"


def consumer_arn(stream_arn: str, name: str, *, created_ms: int) -> str:
    """AWS's consumer ARN: `<stream ARN>/consumer/<name>:<creation epoch seconds>`."""
    return f"{stream_arn}/consumer/{name}:{created_ms // 1000}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerArnParts:
    stream_arn: str
    stream_name: str
    consumer_name: str
    created_seconds: int


def parse_consumer_arn(arn: str) -> ConsumerArnParts | None:
    """The parts of a well-formed consumer ARN, or None (the caller's InvalidArgument)."""
    match = _CONSUMER_ARN_PARTS.fullmatch(arn)
    if match is None:
        return None
    return ConsumerArnParts(
        stream_arn=match["stream_arn"],
        stream_name=match["stream"],
        consumer_name=match["name"],
        created_seconds=int(match["seconds"]),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamConsumer:
    """One registered consumer of one stream incarnation (`stream_uid`).

    CREATING until `active_ms`, then ACTIVE; once deregistered, DELETING until `deleting_until_ms`,
    then gone. `tags` are sorted by key (TagResource on the consumer ARN)."""

    name: str
    arn: str
    stream_name: str
    stream_uid: StreamUid
    stream_arn: str
    created_ms: int
    active_ms: int
    deleting_until_ms: int | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def status(self, *, now_ms: int) -> ConsumerStatus:
        if self.deleting_until_ms is not None:
            return ConsumerStatus.DELETING  # gone for clients once past it: see `is_gone`
        if now_ms < self.active_ms:
            return ConsumerStatus.CREATING
        return ConsumerStatus.ACTIVE

    def is_gone(self, *, now_ms: int) -> bool:
        """True once a DELETING consumer's timer has passed: treated as nonexistent."""
        return self.deleting_until_ms is not None and now_ms >= self.deleting_until_ms

    @property
    def created_seconds(self) -> int:
        """ConsumerCreationTimestamp's whole seconds (the ARN's suffix)."""
        return self.created_ms // 1000


class ConsumerRefusal(enum.Enum):
    NOT_FOUND = ErrorCode.RESOURCE_NOT_FOUND
    IN_USE = ErrorCode.RESOURCE_IN_USE
    LIMIT = ErrorCode.LIMIT_EXCEEDED
    INVALID = ErrorCode.INVALID_ARGUMENT

    @property
    def error_code(self) -> ErrorCode:
        code: ErrorCode = self.value
        return code


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerError:
    """A refused registry operation, as a value."""

    refusal: ConsumerRefusal
    message: str

    @property
    def error_code(self) -> ErrorCode:
        return self.refusal.error_code


@dataclass(frozen=True, slots=True)
class ConsumerTable:
    """Every registered consumer, in registration order (a plain tuple, so the image codec
    encodes it like any dataclass). Immutable: the operations return a new table.

    Tables are small (20 consumers per stream by default), so lookups scan."""

    consumers: tuple[StreamConsumer, ...] = ()

    def by_arn(self, arn: str, *, now_ms: int) -> StreamConsumer | None:
        """The consumer with this ARN, or None when absent or gone."""
        for consumer in self.consumers:
            if consumer.arn == arn and not consumer.is_gone(now_ms=now_ms):
                return consumer
        return None

    def by_name(self, stream_uid: StreamUid, name: str, *, now_ms: int) -> StreamConsumer | None:
        """The stream incarnation's consumer with this name, or None when absent or gone."""
        for consumer in self.consumers:
            if (
                consumer.stream_uid == stream_uid
                and consumer.name == name
                and not consumer.is_gone(now_ms=now_ms)
            ):
                return consumer
        return None

    def for_stream(self, stream_uid: StreamUid, *, now_ms: int) -> tuple[StreamConsumer, ...]:
        """The stream incarnation's consumers that are not gone, oldest first (then by name)."""
        found = [
            c for c in self.consumers if c.stream_uid == stream_uid and not c.is_gone(now_ms=now_ms)
        ]
        return tuple(sorted(found, key=lambda c: (c.created_ms, c.name)))

    def pruned(self, *, now_ms: int) -> ConsumerTable:
        """This table without gone consumers (the same object when there are none)."""
        kept = tuple(c for c in self.consumers if not c.is_gone(now_ms=now_ms))
        return self if len(kept) == len(self.consumers) else ConsumerTable(kept)

    def _replaced(self, old: StreamConsumer, new: StreamConsumer | None) -> ConsumerTable:
        consumers: list[StreamConsumer] = []
        for consumer in self.consumers:
            if consumer is not old:
                consumers.append(consumer)
            elif new is not None:
                consumers.append(new)
        return ConsumerTable(tuple(consumers))


EMPTY = ConsumerTable()


# --- Operations --------------------------------------------------------------------------


def register(
    table: ConsumerTable,
    *,
    name: str,
    stream_name: str,
    stream_uid: StreamUid,
    stream_arn: str,
    tags: tuple[tuple[str, str], ...] = (),
    now_ms: int,
    creating_ms: int,
    limit: int,
) -> tuple[ConsumerTable, StreamConsumer | ConsumerError]:
    """Register `name` on the stream incarnation: CREATING for `creating_ms`, then ACTIVE.

    The caller has checked the stream exists and is ACTIVE or UPDATING. A name held by a
    consumer that is not gone is IN_USE; more than `limit` consumers (DELETING ones count) or
    more than CONSUMERS_CREATING_MAX of them CREATING at once is LIMIT, as on AWS."""
    if CONSUMER_NAME_PATTERN.fullmatch(name) is None:
        return table, _error(ConsumerRefusal.INVALID, f"bad consumer name {name!r}")
    shown = stream_name.rsplit("/", 1)[-1]  # a namespaced key's name (streams/namespaces.py)
    if table.by_name(stream_uid, name, now_ms=now_ms) is not None:
        return table, _error(
            ConsumerRefusal.IN_USE, f"Consumer {name} under stream {shown} already exists."
        )
    registered = table.for_stream(stream_uid, now_ms=now_ms)
    if len(registered) >= limit:
        return table, _error(
            ConsumerRefusal.LIMIT,
            f"Stream {shown} already has {limit} registered consumers, the limit.",
        )
    creating = sum(1 for c in registered if c.status(now_ms=now_ms) is ConsumerStatus.CREATING)
    if creating >= CONSUMERS_CREATING_MAX:
        return table, _error(
            ConsumerRefusal.LIMIT,
            f"Stream {shown} already has {creating} consumers in CREATING status; "
            f"at most {CONSUMERS_CREATING_MAX} can be created simultaneously.",
        )
    consumer = StreamConsumer(
        name=name,
        arn=consumer_arn(stream_arn, name, created_ms=now_ms),
        stream_name=stream_name,
        stream_uid=stream_uid,
        stream_arn=stream_arn,
        created_ms=now_ms,
        active_ms=now_ms + creating_ms,
        tags=tuple(sorted(dict(tags).items())),
    )
    pruned = table.pruned(now_ms=now_ms)
    return ConsumerTable((*pruned.consumers, consumer)), consumer


def deregister(
    table: ConsumerTable, *, arn: str, now_ms: int, deleting_ms: int
) -> tuple[ConsumerTable, StreamConsumer | ConsumerError]:
    """Start deleting the consumer with this ARN: DELETING for `deleting_ms`, then gone.

    Deregistering a consumer that is already DELETING returns it unchanged (AWS accepts the
    repeat); a consumer that is absent or gone is NOT_FOUND."""
    consumer = table.by_arn(arn, now_ms=now_ms)
    if consumer is None:
        return table, _error(ConsumerRefusal.NOT_FOUND, f"Consumer {arn} not found.")
    if consumer.deleting_until_ms is not None:
        return table, consumer
    deleting = replace(consumer, deleting_until_ms=now_ms + deleting_ms)
    return table._replaced(consumer, deleting).pruned(now_ms=now_ms), deleting


def set_tags(
    table: ConsumerTable, *, arn: str, tags: tuple[tuple[str, str], ...], now_ms: int
) -> tuple[ConsumerTable, StreamConsumer | ConsumerError]:
    """Replace the consumer's tags (the caller merged and checked them)."""
    consumer = table.by_arn(arn, now_ms=now_ms)
    if consumer is None:
        return table, _error(ConsumerRefusal.NOT_FOUND, f"Consumer {arn} not found.")
    tagged = replace(consumer, tags=tuple(sorted(dict(tags).items())))
    return table._replaced(consumer, tagged), tagged


def drop_stream(table: ConsumerTable, *, stream_name: str) -> ConsumerTable:
    """Forget every consumer of every incarnation of the stream (DeleteStream: AWS deletes
    them with the stream, and a stream recreated under the name starts with none)."""
    kept = tuple(c for c in table.consumers if c.stream_name != stream_name)
    return table if len(kept) == len(table.consumers) else ConsumerTable(kept)


def _error(refusal: ConsumerRefusal, message: str) -> ConsumerError:
    return ConsumerError(refusal=refusal, message=message)
