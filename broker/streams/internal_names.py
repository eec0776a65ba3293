"""Internal streams: Kinesis streams that the node's other services keep their data in.

A DirectPut delivery stream buffers its records in one, a video stream its fragments
(DESIGN §8): the replicated shard log then makes them durable, and the lease table places
their consumers. Their names carry a reserved prefix; the public doors never show them
(ListStreams skips them) and refuse to touch them (ResourceNotFoundException, as for a stream
that does not exist), and no caller may create a stream with that prefix. The node's own
services reach them by calling `KinesisService.call` with no outside caller.

The prefix is inside the StreamName pattern `[a-zA-Z0-9_.-]+`, so these names are names AWS
would accept: Shoal reserves them (documented in docs/ARCHITECTURE.md).
"""

from __future__ import annotations

INTERNAL_PREFIX = "__shoal."


def is_internal(stream_name: str) -> bool:
    return stream_name.startswith(INTERNAL_PREFIX)


def internal_stream_name(service: str, resource: str) -> str:
    """The internal stream of `resource` (a name or id unique within `service`), e.g.
    `__shoal.firehose.orders-to-s3`. Internal calls are not validated against the public
    StreamName length, so a long resource name is kept whole."""
    assert service, "an internal stream belongs to a service"
    assert "." not in service, service
    return f"{INTERNAL_PREFIX}{service}.{resource}"
