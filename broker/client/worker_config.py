"""The KCL-style worker's knobs (`WorkerConfig`) and where a lease never checkpointed starts."""

from __future__ import annotations

import enum
import random
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from broker import limits
from broker.clock import Clock, SystemClock
from broker.consumers import leases as leases_core


class InitialPosition(enum.Enum):
    """Where a lease never checkpointed starts (the KCL's InitialPositionInStream)."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{uuid.uuid4()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """Worker knobs; the defaults are the KCL's where it has one."""

    worker_id: str = field(default_factory=_default_worker_id)
    failover_ms: int = limits.lease_failover_ms_default
    lease_renew_interval_ms: int | None = None  # None: failover/3 - 25 ms (3,308 ms)
    # None: failover/10 (1,000 ms). Not the KCL's 2 * (failover + 25 ms): a dead worker's
    # shards are taken at the first scan after they expired, so the takeover comes up to two
    # take intervals after the failover time (measured with the KCL's 20 s: 20-40 s for a 10 s
    # failover; with 1 s: 1.2 x the failover time at most). Scanning costs a ListLeases, a read
    # of the answering node's image, not a DynamoDB scan.
    lease_take_interval_ms: int | None = None
    max_leases_to_steal_at_one_time: int = limits.lease_steals_per_scan_default
    max_leases_for_worker: int | None = None
    retrieval: Literal["polling", "fanout"] = "polling"
    # Polling: the pause after a GetRecords that returned nothing (the KCL's
    # idleTimeBetweenReadsInMillis); a call that returned records is followed at once.
    polling_idle_interval_ms: int = 1_000
    # The KCL's callProcessRecordsEvenForEmptyRecordList: an empty GetRecords answer reaches the
    # processor too (records empty), so it learns MillisBehindLatest when nothing new came.
    process_empty_batches: bool = False
    get_records_limit: int = limits.get_records_count_max
    initial_position: InitialPosition = InitialPosition.TRIM_HORIZON
    initial_timestamp: datetime | None = None  # for AT_TIMESTAMP
    shard_sync_interval_ms: int = 60_000  # the KCL's shardSyncIntervalMillis
    parent_poll_interval_ms: int = 10_000  # the KCL's parentShardPollIntervalMillis
    retry_backoff_ms_min: int = 100
    retry_backoff_ms_max: int = 5_000
    shutdown_timeout_ms: int = 30_000  # graceful shutdown: wait this long for processors
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        assert 1 <= len(self.worker_id) <= leases_core.WORKER_ID_CHARS_MAX
        assert self.failover_ms > 3 * limits.lease_renew_epsilon_ms
        assert 0 < self.renew_interval_ms < self.failover_ms, "renew well within a failover"
        assert self.take_interval_ms > 0
        assert self.max_leases_to_steal_at_one_time >= 0
        if self.max_leases_for_worker is not None:
            assert self.max_leases_for_worker >= 1
        assert self.polling_idle_interval_ms >= 0
        assert 1 <= self.get_records_limit <= limits.get_records_count_max
        if self.initial_position is InitialPosition.AT_TIMESTAMP:
            assert self.initial_timestamp is not None
        assert self.shard_sync_interval_ms > 0
        assert self.parent_poll_interval_ms > 0
        assert 0 < self.retry_backoff_ms_min <= self.retry_backoff_ms_max
        assert self.shutdown_timeout_ms > 0

    @property
    def renew_interval_ms(self) -> int:
        if self.lease_renew_interval_ms is not None:
            return self.lease_renew_interval_ms
        return self.failover_ms // 3 - limits.lease_renew_epsilon_ms

    @property
    def take_interval_ms(self) -> int:
        if self.lease_take_interval_ms is not None:
            return self.lease_take_interval_ms
        return self.failover_ms // limits.lease_take_scans_per_failover


# --- The record-processor contract ----------------------------------------------------------
