"""`Scrubber`: reads every local replica's committed log at a bounded rate, so corruption is
found (and repaired from a healthy replica) before a reader or a failover needs the data.

Each pass walks the replicas on this node, shard by shard, from the log start to the high
watermark, in pieces of `piece_bytes` (`LogStore.verify`: RocksDB's block checksums, each
batch's CRC and layout, dense offsets; no record objects). After each piece it waits as long
as the piece took at the configured rate, so the scrubber's reads never exceed
`bytes_per_second`. A damaged range goes to the replication driver (`report_corruption`),
which marks it, serves readers from another replica and repairs it (decisions/0002,
"Corruption"); the pass moves on to the next shard. A new pass starts at most every
`pass_interval_ms`; a pass longer than that starts the next at once.

Lifecycle: `await run()` in the node's TaskGroup; infinite on purpose, cancelled at node stop.
Loop-bound; the reads run in worker threads. A node view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from broker.clock import Clock
from broker.log.records import LogCorruptionError
from broker.log.store import LogStore, LogStoreError
from broker.replication.probe import ReplicationProbe
from broker.replication.replica import ReplicaStatistics
from broker.types import Offset, ShardUid

log = logging.getLogger(__name__)

PIECE_BYTES = 1 << 20  # one verify call: long enough to amortise, short enough to pace


@dataclass(frozen=True, slots=True, kw_only=True)
class ScrubSettings:
    bytes_per_second: int  # > 0
    pass_interval_ms: int
    piece_bytes: int = PIECE_BYTES

    def __post_init__(self) -> None:
        assert self.bytes_per_second > 0
        assert self.pass_interval_ms >= 0
        assert self.piece_bytes > 0


def pause_s(checked_bytes: int, elapsed_s: float, bytes_per_second: int) -> float:
    """How long to wait after verifying `checked_bytes` in `elapsed_s` to stay at the rate."""
    assert checked_bytes >= 0
    assert bytes_per_second > 0
    return max(0.0, checked_bytes / bytes_per_second - elapsed_s)


class Scrubber:
    """See the module docstring."""

    def __init__(
        self,
        *,
        store: LogStore,
        replicas: Callable[[], list[ReplicaStatistics]],
        report_corruption: Callable[[LogCorruptionError], None],
        settings: ScrubSettings,
        clock: Clock,
        probe: ReplicationProbe | None = None,
    ) -> None:
        self._clock = clock
        self._store = store
        self._replicas = replicas
        self._report = report_corruption
        self._settings = settings
        self._probe = probe
        self.passes = 0
        self.bytes_checked = 0

    async def run(self) -> None:
        """Passes until cancelled: infinite on purpose."""
        while True:
            started_ms = self._clock.monotonic_ms()
            await self.scrub_once()
            rest_ms = self._settings.pass_interval_ms - (self._clock.monotonic_ms() - started_ms)
            await asyncio.sleep(max(0, rest_ms) / 1000)  # the pass interval, not a synchronisation

    async def scrub_once(self) -> None:
        """One pass over every replica on this node (as they stand when it reaches each)."""
        for stats in sorted(self._replicas(), key=lambda s: s.shard_uid):
            await self._scrub_replica(stats.shard_uid, stats.log_start, stats.high_watermark)
        self.passes += 1
        if self._probe is not None:
            self._probe.scrub_pass_done()
        log.debug("scrub_pass_done", extra={"passes": self.passes, "bytes": self.bytes_checked})

    async def _scrub_replica(self, shard_uid: ShardUid, start: Offset, end: Offset) -> None:
        rate = self._settings.bytes_per_second
        while start < end:
            began_ms = self._clock.monotonic_ms()
            try:
                reached, checked = await asyncio.to_thread(
                    self._store.verify,
                    shard_uid,
                    start_offset=start,
                    end_offset=end,
                    bytes_max=self._settings.piece_bytes,
                )
            except LogCorruptionError as error:
                log.error("scrub_found_corruption", extra={"shard_uid": shard_uid})
                self._report(error)
                return  # the driver takes it from here; the next pass looks again
            except LogStoreError as error:
                # The store failed or is being reopened after a failure: the driver owns that
                # (it reopens the store and its replicas); the next pass looks again. Letting
                # it escape would end the node's background tasks, and the node with them.
                log.warning(
                    "scrub_store_unavailable", extra={"shard_uid": shard_uid, "error": str(error)}
                )
                return
            self.bytes_checked += checked
            if self._probe is not None:
                self._probe.scrubbed(checked)
            if reached <= start:
                return  # trimmed or cut meanwhile: nothing left here this pass
            start = reached
            elapsed_s = (self._clock.monotonic_ms() - began_ms) / 1000
            await asyncio.sleep(pause_s(checked, elapsed_s, rate))  # holds the rate
