"""Builders for the consumer-registry commands (shared by the registry and codec tests)."""

from __future__ import annotations

from broker.meta.commands import (
    ChangeConsumerTags,
    ConsumerCommand,
    DeregisterStreamConsumer,
    RegisterStreamConsumer,
)
from tests.meta.factories import arn

CONSUMER_CREATING_MS = 500
CONSUMER_DELETING_MS = 300


def register_consumer(
    name: str = "c1",
    *,
    stream: str = "s1",
    now_ms: int,
    limit: int = 20,
    tags: tuple[tuple[str, str], ...] = (),
) -> RegisterStreamConsumer:
    return RegisterStreamConsumer(
        now_ms=now_ms,
        stream_arn=arn(stream),
        consumer_name=name,
        tags=tags,
        creating_ms=CONSUMER_CREATING_MS,
        consumers_per_stream_max=limit,
    )


def every_consumer_command(now_ms: int = 30) -> list[ConsumerCommand]:
    """One of each consumer command, with every optional field set somewhere (codec tests)."""
    return [
        register_consumer("c1", now_ms=now_ms, tags=(("k", "v"), ("ü", "ß"))),
        DeregisterStreamConsumer(
            now_ms=now_ms,
            consumer_arn=f"{arn('s1')}/consumer/c1:1",
            stream_arn=None,
            consumer_name=None,
            deleting_ms=CONSUMER_DELETING_MS,
        ),
        DeregisterStreamConsumer(
            now_ms=now_ms,
            consumer_arn=None,
            stream_arn=arn("s1"),
            consumer_name="c1",
            deleting_ms=0,
        ),
        ChangeConsumerTags(
            now_ms=now_ms,
            consumer_arn=f"{arn('s1')}/consumer/c1:1",
            added=(("a", "b"),),
            removed=("k",),
        ),
    ]
