"""The shards a stream shows its readers while a reshard makes it UPDATING.

AWS keeps a stream's previous topology on view until the reshard is done: SplitShard,
MergeShards and UpdateShardCount "return immediately and set the stream status to UPDATING
… When the operation completes, Kinesis Data Streams sets the stream status to ACTIVE"
(their API reference pages), and DescribeStream, DescribeStreamSummary and ListShards show the
parents open and no children until then (kinesalite recorded 2 shards during UPDATING of a
2 -> 4 UpdateShardCount). Shoal completes a reshard before it answers, then shows UPDATING
for `stream_updating_ms`; during that window this module renders the stream as it was before
the reshard: the shards its last reshard created (children, and the closed intermediate
shards of a uniform scaling) are left out, and the parents it closed are shown open again.
While the parents are still SEALING (the reshard under way) they already show as open.

The last reshard is read from the image, with no member of its own: its parents are the
closed shards with the latest `closed_ms` (`complete_reshard` closes them all at one
instant), and its new shards are those descending from them, which hold the highest indices.
It applies only while the stream's transient UPDATING began at that instant, within
`updating_ms`; once the stream is ACTIVE, or UPDATING for another reason, every shard shows as
it is. Pure code: time arrives as `now_ms`.
"""

from __future__ import annotations

import dataclasses

from broker.meta.image import ShardMeta, ShardState, StreamMeta, StreamStatus


def published(stream: StreamMeta, *, now_ms: int, updating_ms: int) -> StreamMeta:
    """`stream` as DescribeStream, DescribeStreamSummary and ListShards show it at `now_ms`."""
    if stream.reshard is not None or stream.transient_status is not StreamStatus.UPDATING:
        return stream
    if now_ms >= stream.status_until_ms:
        return stream
    closed_at = [s.closed_ms for s in stream.shards if s.state is ShardState.CLOSED]
    if not closed_at:
        return stream
    completed_ms = max(ms for ms in closed_at if ms is not None)
    if stream.status_until_ms - completed_ms > updating_ms:
        return stream  # UPDATING since later than the last reshard: not its window
    parents = {
        s.index
        for s in stream.shards
        if s.state is ShardState.CLOSED and s.closed_ms == completed_ms
    }
    created: set[int] = set()
    for shard in stream.shards:
        if _descends_from(shard, parents | created):
            created.add(shard.index)
    if not created:
        return stream
    first_created = min(created)
    # New shards take the indices after every older one, so dropping them keeps each
    # remaining shard at its index.
    assert created == set(range(first_created, len(stream.shards)))
    shards = tuple(
        _reopened(shard) if shard.index in parents else shard
        for shard in stream.shards[:first_created]
    )
    return dataclasses.replace(stream, shards=shards)


def _descends_from(shard: ShardMeta, indices: set[int]) -> bool:
    return shard.parent_index in indices or shard.adjacent_parent_index in indices


def _reopened(shard: ShardMeta) -> ShardMeta:
    return dataclasses.replace(shard, state=ShardState.OPEN, closed_ms=None, end_offset=None)
