"""The enhanced fan-out consumer registry: the pure table and its metadata commands.

Goal: the registry's rules (ARNs, CREATING -> ACTIVE and DELETING -> gone by time, unique names,
the per-stream and five-CREATING limits, refusals leave the table as it was) hold both in the
pure module and once they go through `state_machine.apply` (stream checks, DeleteStream drops
consumers, EnforceConsumerDeletion); replaying the same commands gives byte-identical images,
and images and commands with consumers round-trip through the codecs.
Method: plain calls on tables and on images built by the metadata factories.
"""

from __future__ import annotations

import dataclasses

import pytest

from broker.consumers import registry
from broker.consumers.registry import (
    ConsumerError,
    ConsumerRefusal,
    ConsumerStatus,
    ConsumerTable,
    StreamConsumer,
)
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    ChangeConsumerTags,
    Command,
    DeleteStream,
    DeregisterStreamConsumer,
    ForgetStream,
    decode_command,
    encode_command,
)
from broker.meta.image import MetadataImage
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import apply
from broker.types import StreamUid
from tests.consumers.registry_factories import (
    CONSUMER_CREATING_MS,
    CONSUMER_DELETING_MS,
    every_consumer_command,
    register_consumer,
)
from tests.meta.factories import CREATING_MS, arn, create_stream, nodes_image

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
UID = StreamUid(7)
T0 = 1_790_000_000_123


def register(
    table: ConsumerTable, name: str, *, now_ms: int = T0, creating_ms: int = 100, limit: int = 20
) -> tuple[ConsumerTable, StreamConsumer | ConsumerError]:
    return registry.register(
        table,
        name=name,
        stream_name="orders",
        stream_uid=UID,
        stream_arn=STREAM_ARN,
        now_ms=now_ms,
        creating_ms=creating_ms,
        limit=limit,
    )


def registered(
    table: ConsumerTable, name: str, **kwargs: int
) -> tuple[ConsumerTable, StreamConsumer]:
    table, result = register(table, name, **kwargs)
    assert isinstance(result, StreamConsumer), result
    return table, result


def refused(
    outcome: tuple[ConsumerTable, StreamConsumer | ConsumerError],
    before: ConsumerTable,
    refusal: ConsumerRefusal,
) -> str:
    table, result = outcome
    assert isinstance(result, ConsumerError), result
    assert result.refusal is refusal
    assert table is before
    return result.message


# --- The pure table ----------------------------------------------------------------------------


def test_arn_and_states_over_time() -> None:
    table, consumer = registered(registry.EMPTY, "app", creating_ms=100)
    assert consumer.arn == f"{STREAM_ARN}/consumer/app:{T0 // 1000}"
    assert registry.CONSUMER_ARN_PATTERN.match(consumer.arn)
    parts = registry.parse_consumer_arn(consumer.arn)
    assert parts is not None
    assert (parts.stream_arn, parts.stream_name, parts.consumer_name) == (
        STREAM_ARN,
        "orders",
        "app",
    )
    assert parts.created_seconds == T0 // 1000
    assert consumer.status(now_ms=T0) is ConsumerStatus.CREATING
    assert consumer.status(now_ms=T0 + 99) is ConsumerStatus.CREATING
    assert consumer.status(now_ms=T0 + 100) is ConsumerStatus.ACTIVE
    assert table.by_arn(consumer.arn, now_ms=T0) == consumer
    assert table.by_name(UID, "app", now_ms=T0) == consumer
    assert table.by_name(StreamUid(8), "app", now_ms=T0) is None

    later = T0 + 1_000
    table, deleting = registry.deregister(table, arn=consumer.arn, now_ms=later, deleting_ms=50)
    assert isinstance(deleting, StreamConsumer)
    assert deleting.status(now_ms=later) is ConsumerStatus.DELETING
    assert not deleting.is_gone(now_ms=later + 49)
    assert deleting.is_gone(now_ms=later + 50)
    assert table.by_arn(consumer.arn, now_ms=later + 49) == deleting
    assert table.by_arn(consumer.arn, now_ms=later + 50) is None
    assert table.for_stream(UID, now_ms=later + 50) == ()
    # Deregistering again while DELETING is accepted and changes nothing.
    again_table, again = registry.deregister(
        table, arn=consumer.arn, now_ms=later + 10, deleting_ms=50
    )
    assert again_table is table
    assert again == deleting
    refused(
        registry.deregister(table, arn=consumer.arn, now_ms=later + 50, deleting_ms=50),
        table,
        ConsumerRefusal.NOT_FOUND,
    )


def test_zero_durations() -> None:
    table, consumer = registered(registry.EMPTY, "app", creating_ms=0)
    assert consumer.status(now_ms=T0) is ConsumerStatus.ACTIVE
    table, _ = registry.deregister(table, arn=consumer.arn, now_ms=T0, deleting_ms=0)
    assert table.by_arn(consumer.arn, now_ms=T0) is None
    # The name is free at once; a registration in the same second gets the same ARN, and the
    # old (gone) record is pruned, so the ARN names exactly one consumer.
    table, again = registered(table, "app", creating_ms=0)
    assert again.arn == consumer.arn
    assert table.consumers == (again,)


def test_names_are_unique_per_stream_while_not_gone() -> None:
    table, first = registered(registry.EMPTY, "app")
    message = refused(register(table, "app"), table, ConsumerRefusal.IN_USE)
    assert "app" in message
    table, _ = registry.deregister(table, arn=first.arn, now_ms=T0 + 200, deleting_ms=100)
    refused(register(table, "app", now_ms=T0 + 299), table, ConsumerRefusal.IN_USE)
    table, second = registered(table, "app", now_ms=T0 + 2_000)
    assert second.arn != first.arn
    assert table.by_arn(first.arn, now_ms=T0 + 2_000) is None
    # The same name on another stream is another consumer.
    other, _ = registry.register(
        table,
        name="app",
        stream_name="other",
        stream_uid=StreamUid(9),
        stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/other",
        now_ms=T0,
        creating_ms=0,
        limit=20,
    )
    assert len(other.consumers) == 2


@pytest.mark.parametrize("name", ["", "bad name", "x" * 129, "ü"])
def test_bad_names_are_invalid(name: str) -> None:
    refused(register(registry.EMPTY, name), registry.EMPTY, ConsumerRefusal.INVALID)


def test_limits() -> None:
    table = registry.EMPTY
    for i in range(3):
        table, _ = registered(table, f"c{i}", creating_ms=0, limit=3)
    refused(register(table, "c3", creating_ms=0, limit=3), table, ConsumerRefusal.LIMIT)
    # At most five CREATING at once, whatever the per-stream limit.
    table = registry.EMPTY
    for i in range(registry.CONSUMERS_CREATING_MAX):
        table, _ = registered(table, f"c{i}", creating_ms=100)
    refused(register(table, "c5", creating_ms=100), table, ConsumerRefusal.LIMIT)
    table, _ = registered(table, "c5", now_ms=T0 + 100)
    assert ConsumerRefusal.LIMIT.error_code is ErrorCode.LIMIT_EXCEEDED


def test_for_stream_is_oldest_first_and_tags_are_sorted() -> None:
    table = registry.EMPTY
    for offset, name in ((0, "b"), (0, "a"), (5, "0")):
        table, _ = registered(table, name, now_ms=T0 + offset)
    assert [c.name for c in table.for_stream(UID, now_ms=T0 + 5)] == ["a", "b", "0"]
    consumer = table.consumers[0]
    table, tagged = registry.set_tags(
        table, arn=consumer.arn, tags=(("z", "1"), ("a", "2")), now_ms=T0
    )
    assert isinstance(tagged, StreamConsumer)
    assert tagged.tags == (("a", "2"), ("z", "1"))
    assert table.by_arn(consumer.arn, now_ms=T0) == tagged


def test_drop_stream() -> None:
    table, _ = registered(registry.EMPTY, "app")
    assert registry.drop_stream(table, stream_name="nope") is table
    assert registry.drop_stream(table, stream_name="orders") == registry.EMPTY


@pytest.mark.parametrize(
    "text",
    [
        "arn:aws:kinesis:us-east-1:123456789012:stream/s",
        "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c",
        "arn:aws:kinesis:us-east-1:1234:stream/s/consumer/c:1",
        "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1x",
    ],
)
def test_parse_refuses_what_is_not_a_consumer_arn(text: str) -> None:
    assert registry.parse_consumer_arn(text) is None


# --- Through the state machine -----------------------------------------------------------------

NOW = CREATING_MS + 1  # the stream s1 is ACTIVE


def stream_image() -> MetadataImage:
    applied = apply(nodes_image(1), create_stream("s1"))
    assert applied.error is None
    return applied.image


def ok(image: MetadataImage, command: Command) -> tuple[MetadataImage, StreamConsumer]:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    assert isinstance(applied.result, StreamConsumer)
    return applied.image, applied.result


def error(image: MetadataImage, command: Command) -> ShoalError:
    applied = apply(image, command)
    assert applied.error is not None
    assert applied.image.consumers is image.consumers
    assert applied.image.applied_commands == image.applied_commands + 1
    return applied.error


def test_register_and_deregister_through_apply() -> None:
    image, consumer = ok(stream_image(), register_consumer("c1", now_ms=NOW))
    assert consumer.stream_arn == arn("s1")
    assert consumer.stream_uid == image.streams["s1"].uid  # type: ignore[index]
    assert consumer.status(now_ms=NOW) is ConsumerStatus.CREATING
    assert image.consumers.by_arn(consumer.arn, now_ms=NOW + CONSUMER_CREATING_MS) is not None
    assert error(image, register_consumer("c1", now_ms=NOW)).code is ErrorCode.RESOURCE_IN_USE

    by_name = DeregisterStreamConsumer(
        now_ms=NOW + 1,
        consumer_arn=None,
        stream_arn=arn("s1"),
        consumer_name="c1",
        deleting_ms=CONSUMER_DELETING_MS,
    )
    deleted, deleting = ok(image, by_name)
    assert deleting.status(now_ms=NOW + 1) is ConsumerStatus.DELETING
    by_arn = DeregisterStreamConsumer(
        now_ms=NOW + 1,
        consumer_arn=consumer.arn,
        stream_arn=None,
        consumer_name=None,
        deleting_ms=CONSUMER_DELETING_MS,
    )
    assert ok(image, by_arn)[1] == deleting
    neither = DeregisterStreamConsumer(
        now_ms=NOW, consumer_arn=None, stream_arn=arn("s1"), consumer_name=None, deleting_ms=0
    )
    assert error(image, neither).code is ErrorCode.INVALID_ARGUMENT
    missing = DeregisterStreamConsumer(
        now_ms=NOW, consumer_arn=None, stream_arn=arn("s1"), consumer_name="zz", deleting_ms=0
    )
    assert error(image, missing).code is ErrorCode.RESOURCE_NOT_FOUND
    assert deleted.consumers.by_arn(consumer.arn, now_ms=NOW + 1 + CONSUMER_DELETING_MS) is None


def test_register_checks_the_stream() -> None:
    image = stream_image()
    creating = register_consumer("c1", now_ms=CREATING_MS - 1)
    assert error(image, creating).code is ErrorCode.RESOURCE_IN_USE
    assert error(image, register_consumer("c1", stream="nope", now_ms=NOW)).code is (
        ErrorCode.RESOURCE_NOT_FOUND
    )
    other_account = dataclasses.replace(
        register_consumer("c1", now_ms=NOW),
        stream_arn="arn:aws:kinesis:eu-west-1:999999999999:stream/s1",
    )
    assert error(image, other_account).code is ErrorCode.RESOURCE_NOT_FOUND
    assert error(image, register_consumer("c1", now_ms=NOW, limit=0)).code is (
        ErrorCode.LIMIT_EXCEEDED
    )


def test_delete_stream_drops_consumers_unless_refused() -> None:
    image, consumer = ok(stream_image(), register_consumer("c1", now_ms=NOW))
    keep = DeleteStream(now_ms=NOW, name="s1", deleting_ms=10, enforce_consumer_deletion=False)
    assert error(image, keep).code is ErrorCode.RESOURCE_IN_USE
    # A deregistered (DELETING) consumer no longer holds the stream.
    deregister = DeregisterStreamConsumer(
        now_ms=NOW, consumer_arn=consumer.arn, stream_arn=None, consumer_name=None, deleting_ms=50
    )
    deregistered, _ = ok(image, deregister)
    assert apply(deregistered, keep).error is None
    applied = apply(image, DeleteStream(now_ms=NOW, name="s1", deleting_ms=10))
    assert applied.error is None
    assert applied.image.consumers == registry.EMPTY
    # A recreated stream under the name starts with no consumers; the old ARN finds nothing.
    gone = apply(applied.image, ForgetStream(now_ms=NOW + 10, uid=image.streams["s1"].uid))  # type: ignore[index]
    recreated = apply(gone.image, create_stream("s1", now_ms=NOW + 20))
    assert recreated.error is None
    assert recreated.image.consumers.by_arn(consumer.arn, now_ms=NOW + 20) is None


def test_consumer_tags_through_apply() -> None:
    image, consumer = ok(stream_image(), register_consumer("c1", now_ms=NOW, tags=(("k", "v"),)))
    change = ChangeConsumerTags(
        now_ms=NOW, consumer_arn=consumer.arn, added=(("a", "1"),), removed=("k", "absent")
    )
    image, tagged = ok(image, change)
    assert tagged.tags == (("a", "1"),)
    too_many = ChangeConsumerTags(
        now_ms=NOW, consumer_arn=consumer.arn, added=tuple((f"t{i}", "") for i in range(50))
    )
    assert error(image, too_many).code is ErrorCode.INVALID_ARGUMENT
    missing = ChangeConsumerTags(now_ms=NOW, consumer_arn=consumer.arn + "0", added=())
    assert error(image, missing).code is ErrorCode.RESOURCE_NOT_FOUND


def test_replay_is_deterministic_and_images_round_trip() -> None:
    log: list[Command] = [
        register_consumer("c1", now_ms=NOW),
        register_consumer("c2", now_ms=NOW + 1, tags=(("team", "x"),)),
        register_consumer("c1", now_ms=NOW + 2),  # refused: in use
        DeregisterStreamConsumer(
            now_ms=NOW + 3,
            consumer_arn=None,
            stream_arn=arn("s1"),
            consumer_name="c1",
            deleting_ms=CONSUMER_DELETING_MS,
        ),
        register_consumer("c3", now_ms=NOW + 4_000),  # prunes the gone c1
    ]

    def replay() -> MetadataImage:
        image = stream_image()
        for command in log:
            image = apply(image, decode_command(encode_command(command))).image
        return image

    first, second = replay(), replay()
    assert encode_image(first) == encode_image(second)
    assert [c.name for c in first.consumers.consumers] == ["c2", "c3"]
    decoded = decode_image(encode_image(first))
    assert decoded.consumers == first.consumers
    assert encode_image(decoded) == encode_image(first)
    # An image written before consumers existed reads as one without any.
    document = encode_image(stream_image()).replace(b'"consumers":{"consumers":[]},', b"")
    assert b"consumers" not in document
    assert decode_image(document).consumers == registry.EMPTY


@pytest.mark.parametrize("command", every_consumer_command(), ids=lambda c: type(c).__name__)
def test_command_round_trip(command: Command) -> None:
    data = encode_command(command)
    assert decode_command(data) == command
    assert encode_command(decode_command(data)) == data
