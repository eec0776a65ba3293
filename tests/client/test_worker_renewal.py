"""The worker keeps renewing its leases while a lease scan is slow.

Goal: a worker's renewals must keep their schedule whatever the lease taker does. Found with
worker processes on a loaded cluster (tests/consumers/test_worker_processes.py): a node slow to
answer made one take scan (a listing, then one take call per lease the plan chose) last longer
than the failover time, during which the worker renewed nothing; the others took its leases as
expired while it kept processing them, and a killed worker's shards waited for that scan.

Method: an in-process node and an `InMemoryLeaseClient` whose listing can be made slow; once the
worker holds the shard, every listing takes 2 s (the take scan calls it every 200 ms); the
lease's counter, which only renewals move while nobody else touches it, must keep growing at
about the renew interval meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.client.worker import (
    InitializationInput,
    InMemoryLeaseClient,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
    Worker,
    WorkerConfig,
)
from broker.clock import VirtualClock
from broker.consumers.leases import Lease

pytestmark = pytest.mark.integration

APP = "app"
STREAM = "s"
SHARD = "shardId-000000000000"
SLOW_LIST_S = 2.0


class SlowListingLeaseClient(InMemoryLeaseClient):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.list_delay_s = 0.0

    async def list_leases(self, *, application: str, stream_name: str) -> tuple[Lease, ...]:
        if self.list_delay_s:
            await self.clock.sleep(self.list_delay_s * 1000)  # virtual, as the worker's timers
        return await super().list_leases(application=application, stream_name=stream_name)


class QuietProcessor:
    async def initialize(self, initialization_input: InitializationInput) -> None:
        pass

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        pass

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        pass

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        pass


def _counter(lease_client: InMemoryLeaseClient) -> tuple[str | None, int]:
    lease = lease_client.table.get(APP, STREAM, SHARD)
    assert lease is not None
    return lease.lease_owner, lease.lease_counter


async def _wait(predicate: object, *, deadline_s: float, what: str) -> None:
    assert callable(predicate)
    give_up = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < give_up, f"timed out after {deadline_s} s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_renewals_keep_their_schedule_during_a_slow_take_scan(
    client: AsyncShoalClient,
) -> None:
    await client.call("CreateStream", {"StreamName": STREAM, "ShardCount": 1})
    clock = VirtualClock()  # the worker's loop and the slow listing wait on it
    lease_client = SlowListingLeaseClient(clock)
    config = WorkerConfig(
        worker_id="w0",
        failover_ms=1_500,  # renew every 475 ms
        lease_take_interval_ms=200,
        polling_idle_interval_ms=20,
        rng=random.Random(0),
        clock=clock,
    )
    worker = Worker(
        application=APP,
        stream_name=STREAM,
        processor_factory=QuietProcessor,
        lease_client=lease_client,
        kinesis=client,
        config=config,
    )
    task = asyncio.create_task(worker.run())
    try:
        await clock.run_until(
            lambda: worker.statistics().held_shard_ids == (SHARD,), step_ms=20, deadline_s=10
        )
        await clock.run_for(300)  # the consumer's one listing (its parents) is done
        lease_client.list_delay_s = SLOW_LIST_S
        owner, before = _counter(lease_client)
        assert owner == "w0"
        # Two and a half renew intervals (virtual): at least two renewals, although every take
        # scan meanwhile spends 2 s in its listing.
        await clock.run_for(int(2.5 * config.renew_interval_ms))
        owner, after = _counter(lease_client)
        assert owner == "w0"
        assert after - before >= 2, f"{after - before} renewals during a slow take scan"
        assert worker.statistics().leases_lost == 0
        lease_client.list_delay_s = 0.0
        stopping = asyncio.ensure_future(worker.shutdown())
        await clock.run_until(lambda: stopping.done() and task.done(), step_ms=20, deadline_s=15)
        await task
    finally:
        task.cancel()
    owner, _ = _counter(lease_client)
    assert owner is None, "released on shutdown"
