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
# The metadata format level from which the audit trail's stream counts against no account
# limit (listed with the level's other changes in broker/meta/metadata_format.py).
AUDIT_UNCOUNTED_LEVEL = 3


def is_internal(stream_name: str) -> bool:
    return stream_name.startswith(INTERNAL_PREFIX)


def internal_stream_name(service: str, resource: str) -> str:
    """The internal stream of `resource` (a name or id unique within `service`), e.g.
    `__shoal.firehose.orders-to-s3`. Internal calls are not validated against the public
    StreamName length, so a long resource name is kept whole."""
    assert service, "an internal stream belongs to a service"
    assert "." not in service, service
    return f"{INTERNAL_PREFIX}{service}.{resource}"


# The cluster's audit trail (`broker/audit/trail.py`). Kept whether or not access control is
# on, so unlike the other internal streams (which exist because a caller made a delivery or
# video stream) it is no caller's doing: it counts against no account limit.
AUDIT_TRAIL_STREAM = internal_stream_name("audit", "trail")


def counts_against_account(stream_key: str, *, metadata_format: int) -> bool:
    """Whether a stream's open shards and mode count toward the account's limits: all but the
    audit trail's, from the metadata format level that says so (`AUDIT_UNCOUNTED_LEVEL`: a
    limit check is a state-machine decision, which every member must make alike)."""
    return stream_key != AUDIT_TRAIL_STREAM or metadata_format < AUDIT_UNCOUNTED_LEVEL
