"""The leader's load tracker counts a put while its records are written, not after the answer.

Goal (issue 18): the tracker's per-batch work (about 0.4 ms for 500 records: each key's MD5,
two Space-Saving summaries, the histogram) is done while the log writer fsyncs, when the loop
has nothing else to do, instead of after the answer, where a sequential producer's next call
waits for the loop. Method: `ShardClient.serve_append` over a stand-in local replica that calls
`placed` as the driver does (while the group is written) and looks at the tracker there; and
the tracker's figures for a one-shard stream (hash keys unclamped) against the same records
carrying their MD5s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from broker.clock import VirtualClock
from broker.log.memory_store import MemoryLogStore
from broker.log.records import NewRecord, NewRecords
from broker.meta.image import MetadataImage
from broker.meta.state_machine import apply
from broker.service.shard_load import ShardLoadRecorder
from broker.service.shards import AppendResult, ShardClient
from broker.service.throughput import Throttles
from broker.streams.hot_keys import LoadTrackerConfig
from broker.streams.throttling import ThroughputLimits
from broker.types import NodeId, Offset, ShardUid, StreamName
from tests.meta.factories import create_stream, nodes_image

N1 = NodeId("n1")
UNLIMITED = ThroughputLimits(
    write_bytes_per_second=0,
    write_records_per_second=0,
    read_bytes_per_second=0,
    read_calls_per_second=0,
)


def _image(shards: int) -> MetadataImage:
    result = apply(nodes_image(1), create_stream("s", shard_count=shards))
    assert result.error is None, result.error
    return result.image


def _recorder(image: MetadataImage, clock: VirtualClock) -> ShardLoadRecorder:
    return ShardLoadRecorder(
        node_id=N1,
        clock=clock,
        image=lambda: image,
        config=LoadTrackerConfig(window_ms=1_000, window_count=3),
    )


class WritingReplica:
    """The local replica: `placed` runs while the records are written (the driver calls it
    from the log writer's `when_writing`), then the append is committed."""

    def __init__(self, seen: Callable[[], object]) -> None:
        self._seen = seen
        self.during_write: list[object] = []

    async def append(
        self,
        shard_uid: ShardUid,
        *,
        placed: Callable[[Offset, int], object] | None = None,
        **_: Any,
    ) -> tuple[Offset, int]:
        assert placed is not None, "the load tracker counts through `placed`"
        placed(Offset(7), 1_000)
        self.during_write.append(self._seen())
        return Offset(7), 1_000


async def test_the_put_is_counted_while_it_is_written() -> None:
    image = _image(1)
    clock = VirtualClock(wall_ms=1_800_000_000_000, monotonic_ms=0)
    recorder = _recorder(image, clock)
    shard_uid = image.streams[StreamName("s")].shards[0].uid

    def counted() -> tuple[int, int]:
        tracked = recorder._trackers.get(shard_uid)
        return (0, 0) if tracked is None else tracked.tracker.totals(clock.monotonic_ms())

    local = WritingReplica(counted)
    client = ShardClient(
        node_id=N1,
        clock=clock,
        store=MemoryLogStore(),
        local=local,  # type: ignore[arg-type]
        throttles=Throttles(UNLIMITED),
        load=recorder,
    )
    records = NewRecords.of([NewRecord(f"k{i}", b"x" * 10) for i in range(5)])
    answers: list[AppendResult] = []
    result = await client.serve_append(shard_uid, epoch=1, records=records, placed=answers.append)
    assert local.during_write == [(5, 5 * 12)]  # counted before the append returned
    assert answers == [result]  # the caller's answer prepared there too, with the result
    # A forwarded append (no `placed` of its caller) is counted the same way.
    await client.serve_append(shard_uid, epoch=1, records=records)
    assert local.during_write[-1] == (10, 10 * 12)


def _md5(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def test_a_whole_range_shard_counts_keys_at_their_md5() -> None:
    """A one-shard stream's tracker takes the MD5s as they are (no clamp into its range): the
    same figures as records that carry those hash keys."""
    image = _image(1)
    shard_uid = image.streams[StreamName("s")].shards[0].uid
    keys = [f"key-{i % 37}" for i in range(500)]
    figures = []
    for hash_keys in (None, [_md5(key) for key in keys]):
        clock = VirtualClock(wall_ms=1_800_000_000_000, monotonic_ms=0)
        recorder = _recorder(image, clock)
        records = NewRecords.of([NewRecord(key, b"y" * (len(key) % 5 + 1)) for key in keys])
        if hash_keys is not None:
            records = NewRecords.of(list(records), hash_keys)
        recorder.written(shard_uid, records)
        clock.advance(ms=1_500)
        tracker = recorder._trackers[shard_uid].tracker
        figures.append((tracker.snapshot(clock.monotonic_ms()), tracker.key_estimates(1_500)))
    assert figures[0] == figures[1]
    assert figures[0][0].split_key is not None
