"""The scrubber survives a store that is being reopened: the node's background tasks (and the
node) must not end because a pass met the store between a failure and its reopening (seen in a
chaos run: a corrupted SST, the store reopened, the scrubber's next read raised)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from broker.clock import ManualClock
from broker.log.records import LogCorruptionError
from broker.log.store import LogStore, LogStoreError
from broker.replication.replica import ReplicaStatistics
from broker.replication.scrubber import Scrubber, ScrubSettings
from broker.types import Offset, ShardUid


class _ReopeningStore:
    """verify() raises LogStoreError while `reopening`, else checks the whole range at once."""

    def __init__(self) -> None:
        self.reopening = True
        self.calls = 0

    def verify(
        self, shard_uid: ShardUid, *, start_offset: Offset, end_offset: Offset, bytes_max: int
    ) -> tuple[Offset, int]:
        self.calls += 1
        if self.reopening:
            raise LogStoreError("the log store at /data/log is being reopened")
        return end_offset, 100


async def test_a_store_being_reopened_ends_the_pass_not_the_node() -> None:
    store = _ReopeningStore()
    reported: list[LogCorruptionError] = []
    stats = cast(
        "ReplicaStatistics",
        SimpleNamespace(shard_uid=ShardUid(1), log_start=Offset(0), high_watermark=Offset(10)),
    )
    scrubber = Scrubber(
        store=cast("LogStore", cast("Any", store)),
        replicas=lambda: [stats],
        report_corruption=reported.append,
        settings=ScrubSettings(bytes_per_second=10**9, pass_interval_ms=0),
        clock=ManualClock(),
    )
    await scrubber.scrub_once()  # must not raise
    assert (scrubber.passes, scrubber.bytes_checked, reported) == (1, 0, [])
    store.reopening = False
    await scrubber.scrub_once()  # the next pass looks again
    assert (scrubber.passes, scrubber.bytes_checked, store.calls) == (2, 100, 2)
