"""A KCL-style worker: shares a stream's shards with other workers through leases.

    worker = Worker(
        application="orders-app", stream_name="orders", processor_factory=MyProcessor,
        lease_client=lease_client, kinesis=AsyncShoalClient("127.0.0.1:4566"),
        config=WorkerConfig(failover_ms=10_000),
    )
    run = asyncio.create_task(worker.run())   # until worker.shutdown() (graceful) or cancel
    ...
    await worker.shutdown()                   # checkpoint, hand the leases over, return

**The record-processor contract** is the KCL's (`RecordProcessor`; one instance per shard and
lease period, its methods awaited one at a time): `initialize`, then `process_records` for each
batch of (de-aggregated) user records, then exactly one of

* `lease_lost`: another worker owns the shard now. Do not checkpoint (it would fail anyway:
  the lease's counter moved, so the checkpoint's compare-and-set is refused).
* `shard_ended`: the shard is closed and fully read. The processor **must** call
  `checkpointer.checkpoint()` (which records SHARD_END); until it does, the shard's children stay
  blocked, and the worker logs `shard_end_not_checkpointed` and gives the lease up.
* `shutdown_requested`: the worker is shutting down gracefully; checkpoint what was processed.

**Lifecycle of the worker.** One task runs `run()`; every shard consumer runs in its TaskGroup.
The loop (infinite on purpose; it ends on `shutdown()` or cancellation) does, each when due
(1 and 3 as one background scan, so a slow scan never delays a renewal):

1. shard sync (every `shard_sync_interval_ms`): ListShards, create the missing leases
   (`leases.create_leases`, idempotent);
2. renew (every `lease_renew_interval_ms`, failover/3 - 25 ms by default): a renew refused by
   its compare-and-set, or no successful renew for `failover_ms`, loses the lease: the shard's
   consumer stops, calls `lease_lost`, and never checkpoints that lease again;
3. take (every `lease_take_interval_ms`, failover/10 by default): list the leases, update this
   worker's observations (its monotonic clock), and take or steal what `balancing.plan` says;
   each lease taken starts a shard consumer.

A shard consumer waits until its parents are finished (`leases.parents_done_in`, polled every
`parent_poll_interval_ms`), initializes a processor, and reads from the lease's checkpoint:
AT_SEQUENCE_NUMBER of the checkpoint, skipping every user record at or below it (so a
sub-sequence checkpoint inside a KPL aggregate resumes at the next user record, and a plain
record's checkpoint skips that record), or TRIM_HORIZON / LATEST / AT_TIMESTAMP for a lease
never checkpointed. At the shard's end it creates the children's leases from ChildShards, calls
`shard_ended`, and releases the lease.

**Graceful shutdown** stops taking, asks every consumer to stop after its current batch
(`shutdown_requested`, where the processor checkpoints), keeps renewing meanwhile, and releases
each lease (owner None), so other workers take the shards at their next take without waiting for
expiry. Bounded by `shutdown_timeout_ms`. **Cancelling** `run()` instead is a crash: no lease
operation happens, and other workers take the shards once they see them expire.

Delivery is at least once: records processed after the last checkpoint are processed again by
the next owner. Single task (asyncio), not thread-safe. Time comes from `config.clock` (leases'
expiry in this worker's eyes); pacing uses asyncio's sleeps, capped at `_WAIT_MS_MAX`, so a
manual clock is noticed promptly.

Retrieval goes through `RecordSource`, chosen by `WorkerConfig.retrieval`: "polling"
(`retrieval.PollingRecordSource`, GetRecords) or "fanout" (`fanout.py`: a stream consumer named
after the application, registered if absent, and SubscribeToShard per shard); or any source
through `Worker(record_source_factory=...)` (one that reads a node's log itself, as a SQL
application's `ShardReader` does, hands its user records over already de-aggregated:
`RecordBatch.users`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from broker import error_messages, limits
from broker.client.fanout import FanOutRetrieval
from broker.client.grpc_client import AsyncShoalClient
from broker.client.kpl import ExtendedSequenceNumber, UserRecord, deaggregate_batch
from broker.client.retrieval import (
    KinesisCalls,
    PollingRecordSource,
    RecordBatch,
    RecordSource,
    RecordSourceFactory,
    ShardInfo,
    hash_range,
)
from broker.client.worker_config import InitialPosition, WorkerConfig
from broker.consumers import balancing
from broker.consumers import leases as leases_core
from broker.consumers.leases import (
    Checkpoint,
    CheckpointLease,
    CreateLeases,
    DeleteApplication,
    Lease,
    LeaseError,
    LeaseRefusal,
    LeaseTable,
    NewLease,
    ReleaseLease,
    RenewLease,
    StealLease,
    TakeLease,
)
from broker.errors import ErrorCode, ShoalError

# The worker's public API: its knobs and record sources live in worker_config.py and
# retrieval.py, and are named here too (users import them from this module).
__all__ = [
    "Checkpointer",
    "InMemoryLeaseClient",
    "InitialPosition",
    "KinesisCalls",
    "LeaseClient",
    "LeaseLostError",
    "PollingRecordSource",
    "RecordBatch",
    "RecordProcessor",
    "RecordSource",
    "RecordSourceFactory",
    "ShardInfo",
    "Worker",
    "WorkerConfig",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The loop sleeps at most this long between checks, so a manual clock moved by a test, or a
# shutdown request, is noticed promptly.
_WAIT_MS_MAX = 50
_SHARD_LIST_PAGES_MAX = limits.shard_count_per_stream_max // 100 + 1


class LeaseLostError(Exception):
    """The worker no longer holds the shard's lease: the checkpoint was not recorded (the KCL's
    ShutdownException). Let it propagate out of the processor's method."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InitializationInput:
    shard_id: str
    extended_sequence_number: ExtendedSequenceNumber  # the checkpoint processing resumes after
    pending_checkpoint_sequence_number: ExtendedSequenceNumber | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRecordsInput:
    # De-aggregated, in order; empty only with WorkerConfig.process_empty_batches.
    records: Sequence[UserRecord]
    millis_behind_latest: int
    checkpointer: Checkpointer


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseLostInput:
    shard_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardEndedInput:
    shard_id: str
    checkpointer: Checkpointer  # must checkpoint (SHARD_END)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownRequestedInput:
    shard_id: str
    checkpointer: Checkpointer


class RecordProcessor(Protocol):
    """One shard's processor for one lease period (the KCL's ShardRecordProcessor)."""

    async def initialize(self, initialization_input: InitializationInput) -> None: ...

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None: ...

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None: ...

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None: ...

    async def shutdown_requested(
        self, shutdown_requested_input: ShutdownRequestedInput
    ) -> None: ...


# --- Lease client ---------------------------------------------------------------------------


class LeaseClient(Protocol):
    """The lease operations of `broker.consumers.leases`, remote and async: each mutating call
    takes its operation value (`TakeLease`, `RenewLease`, ...), the lease API.

    Refusals come back as `LeaseError` values (CONFLICT, NOT_FOUND, INVALID, as in
    `leases`); a failure to reach the lease service raises `ShoalError`, and then the outcome
    of a mutating call is unknown (the worker's next call with the old counter is refused if it
    was applied, which a worker treats as a lost lease: safe, at worst a spurious handover).
    """

    async def create_leases(self, operation: CreateLeases) -> tuple[Lease, ...] | LeaseError: ...

    async def list_leases(self, *, application: str, stream_name: str) -> tuple[Lease, ...]: ...

    async def take(self, operation: TakeLease) -> Lease | LeaseError: ...

    async def steal(self, operation: StealLease) -> Lease | LeaseError: ...

    async def renew(self, operation: RenewLease) -> Lease | LeaseError: ...

    async def release(self, operation: ReleaseLease) -> Lease | LeaseError: ...

    async def checkpoint(self, operation: CheckpointLease) -> Lease | LeaseError: ...

    async def delete_application(self, operation: DeleteApplication) -> int | LeaseError: ...


class InMemoryLeaseClient:
    """A `LeaseClient` over a `LeaseTable` in this process: for tests and single-process use.

    Every call applies one pure operation atomically (one event loop; no awaits inside), which
    is what the metadata quorum will do for the remote client.
    """

    def __init__(self, table: LeaseTable | None = None) -> None:
        self.table = table if table is not None else leases_core.EMPTY

    async def create_leases(self, operation: CreateLeases) -> tuple[Lease, ...] | LeaseError:
        self.table, result = leases_core.create_leases(self.table, operation)
        return result

    async def list_leases(self, *, application: str, stream_name: str) -> tuple[Lease, ...]:
        return leases_core.list_leases(self.table, application=application, stream_name=stream_name)

    async def take(self, operation: TakeLease) -> Lease | LeaseError:
        self.table, result = leases_core.take(self.table, operation)
        return result

    async def steal(self, operation: StealLease) -> Lease | LeaseError:
        self.table, result = leases_core.steal(self.table, operation)
        return result

    async def renew(self, operation: RenewLease) -> Lease | LeaseError:
        self.table, result = leases_core.renew(self.table, operation)
        return result

    async def release(self, operation: ReleaseLease) -> Lease | LeaseError:
        self.table, result = leases_core.release(self.table, operation)
        return result

    async def checkpoint(self, operation: CheckpointLease) -> Lease | LeaseError:
        self.table, result = leases_core.checkpoint(self.table, operation)
        return result

    async def delete_application(self, operation: DeleteApplication) -> int | LeaseError:
        self.table, result = leases_core.delete_application(self.table, operation)
        return result


def to_extended(value: Checkpoint) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(value.sequence_number, value.sub_sequence_number)


def to_checkpoint(value: ExtendedSequenceNumber) -> Checkpoint:
    sub = 0 if value.is_sentinel else value.sub_sequence_number
    return Checkpoint(value.sequence_number, sub)


# --- Checkpointer ---------------------------------------------------------------------------


class _Holding:
    """One lease period of one shard in this worker: from a take to its loss or release.

    `lease` is the latest copy (its counter is what the next call expects); `lock` orders this
    period's lease calls (renew, checkpoint, release), so none invalidates another's expected
    counter. Once `lost`, no call is made for this period again, even if the worker takes the
    same lease later (that is a new `_Holding`: the KCL's concurrency token).
    """

    def __init__(self, lease: Lease, *, now_ms: int) -> None:
        self.lease = lease
        self.lost = False
        self.released = False
        self.lock = asyncio.Lock()
        self.last_renewed_ms = now_ms
        self.stop = asyncio.Event()  # graceful stop requested, or lease lost
        self.task: asyncio.Task[None] | None = None


class Checkpointer:
    """Records a shard's progress in its lease (the KCL's RecordProcessorCheckpointer).

    `checkpoint()` records the last user record delivered (SHARD_END in `shard_ended`);
    `checkpoint(sequence_number, sub_sequence_number)` a record delivered earlier. A value below
    the last checkpoint or above the last delivered record raises ValueError; a lost lease
    raises `LeaseLostError`.
    """

    def __init__(self, worker: Worker, holding: _Holding) -> None:
        self._worker = worker
        self._holding = holding
        self.largest_permitted: ExtendedSequenceNumber = to_extended(holding.lease.checkpoint)

    @property
    def last_checkpoint(self) -> ExtendedSequenceNumber:
        return to_extended(self._holding.lease.checkpoint)

    async def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int = 0
    ) -> None:
        await self._record(sequence_number, sub_sequence_number, pending=False)

    async def prepare_checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int = 0
    ) -> None:
        """Record a pending checkpoint (two-phase), handed to the next owner's initialize."""
        await self._record(sequence_number, sub_sequence_number, pending=True)

    async def _record(
        self, sequence_number: str | None, sub_sequence_number: int, *, pending: bool
    ) -> None:
        if sequence_number is None:
            value = self.largest_permitted
        else:
            value = ExtendedSequenceNumber(sequence_number, sub_sequence_number)
        if value < self.last_checkpoint or value > self.largest_permitted:
            raise ValueError(
                f"checkpoint {value} is outside [{self.last_checkpoint}, {self.largest_permitted}]"
            )
        await self._worker._checkpoint(self._holding, to_checkpoint(value), pending=pending)


# --- Worker ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatistics:
    held_shard_ids: tuple[str, ...]
    user_records_delivered: int
    leases_taken: int
    leases_stolen: int
    leases_lost: int
    empty_batches: int  # reads that returned no record (the processor hears of them only
    # with WorkerConfig.process_empty_batches)


class Worker:
    """One member of an application's fleet (module docstring). Create, then `run()` it."""

    def __init__(
        self,
        *,
        application: str,
        stream_name: str,
        processor_factory: Callable[[], RecordProcessor],
        lease_client: LeaseClient,
        kinesis: KinesisCalls,
        config: WorkerConfig | None = None,
        record_source_factory: RecordSourceFactory | None = None,
        lease_stream_name: str | None = None,
    ) -> None:
        self.application = application
        self.stream_name = stream_name
        # The stream as the lease table names it: its name, or (an in-process worker reading
        # a stream outside the node's default namespace) its namespaced key.
        self.lease_stream_name = lease_stream_name or stream_name
        self.config = config if config is not None else WorkerConfig()
        self._processor_factory = processor_factory
        self._lease_client = lease_client
        self._kinesis = kinesis
        if record_source_factory is None and self.config.retrieval == "fanout":
            if not isinstance(kinesis, AsyncShoalClient):
                raise ValueError("fan-out retrieval needs an AsyncShoalClient")
            # The stream consumer is named after the application, as the KCL names it.
            record_source_factory = FanOutRetrieval(
                kinesis, stream_name=stream_name, consumer_name=application, config=self.config
            )
        if record_source_factory is None:
            record_source_factory = self._polling_source
        self._record_source_factory = record_source_factory
        self._clock = self.config.clock
        self._shards: dict[str, ShardInfo] = {}
        self._holdings: dict[str, _Holding] = {}
        self._observations: dict[str, balancing.Observation] = {}
        self._shutdown = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._done = asyncio.Event()
        self._delivered = 0
        self._empty_batches = 0
        self._taken = 0
        self._stolen = 0
        self._lost = 0

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            held_shard_ids=tuple(sorted(self._holdings)),
            user_records_delivered=self._delivered,
            leases_taken=self._taken,
            leases_stolen=self._stolen,
            leases_lost=self._lost,
            empty_batches=self._empty_batches,
        )

    def _polling_source(self, shard: ShardInfo) -> RecordSource:
        return PollingRecordSource(
            self._kinesis, stream_name=self.stream_name, shard_id=shard.shard_id, config=self.config
        )

    async def shutdown(self) -> None:
        """Graceful shutdown (module docstring); returns once `run()` has returned."""
        self._shutdown.set()
        self._wakeup.set()
        await self._done.wait()

    async def run(self) -> None:
        """Run until `shutdown()`; cancelling it is a crash (no lease is released)."""
        assert self._tasks is None, "run once"
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._loop()
        finally:
            self._done.set()

    async def _loop(self) -> None:
        config = self.config
        now = self._clock.monotonic_ms()
        next_sync = next_renew = next_take = now
        shutdown_deadline: int | None = None
        # Shard sync and take run as one background scan (at most one at a time, sync first so
        # a new stream's leases exist before the take), never inline: a slow lease service can
        # make a scan (a listing, then one call per lease taken) outlast the failover time, and
        # the renewals below must keep their schedule meanwhile (tests/client/
        # test_worker_renewal.py).
        scan: asyncio.Task[None] | None = None
        assert self._tasks is not None
        # Infinite on purpose: ends when a graceful shutdown has handed every lease over (or
        # timed out), or when the task is cancelled.
        while True:
            now = self._clock.monotonic_ms()
            if self._shutdown.is_set() and shutdown_deadline is None:
                shutdown_deadline = now + config.shutdown_timeout_ms
                for holding in self._holdings.values():
                    holding.stop.set()
            scanning = scan is not None and not scan.done()
            if shutdown_deadline is not None and not self._holdings and not scanning:
                return
            if shutdown_deadline is not None and now >= shutdown_deadline:
                log.warning("worker_shutdown_timed_out", extra={"worker": self.worker_id})
                for holding in self._holdings.values():
                    assert holding.task is not None
                    holding.task.cancel()
                return
            if now >= next_renew:
                await self._renew_all(now)
                next_renew = now + config.renew_interval_ms
            sync_due = now >= next_sync
            take_due = now >= next_take
            if shutdown_deadline is None and not scanning and (sync_due or take_due):
                scan = self._tasks.create_task(self._scan(sync=sync_due, take=take_due))
                if sync_due:
                    next_sync = now + config.shard_sync_interval_ms
                if take_due:
                    next_take = now + config.take_interval_ms
            due = min(next_renew, next_take, next_sync)
            wait_ms = min(max(due - self._clock.monotonic_ms(), 0), _WAIT_MS_MAX)
            self._wakeup.clear()
            await self._clock.wait(self._wakeup, wait_ms)  # the loop's timers: on its clock

    async def _scan(self, *, sync: bool, take: bool) -> None:
        """Shard sync, then take: the loop's background scan."""
        if sync:
            await self._with_retry("shard_sync", self._sync_shards)
        if take:
            await self._with_retry("take", self._take_leases)
        self._wakeup.set()

    async def _with_retry(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run one step; a lease-service or Kinesis error is logged and the step runs again at
        its next interval (the loop itself is the retry)."""
        try:
            await step()
        except ShoalError as error:
            log.warning("worker_step_failed", extra={"step": what, "error": str(error)})

    # --- shard sync ------------------------------------------------------------------------

    async def _list_shards(self) -> dict[str, ShardInfo]:
        shards: dict[str, ShardInfo] = {}
        request: dict[str, Any] = {"StreamName": self.stream_name}
        for _ in range(_SHARD_LIST_PAGES_MAX):
            response = await self._kinesis.call("ListShards", request)
            for shape in response["Shards"]:
                parents = (shape.get("ParentShardId"), shape.get("AdjacentParentShardId"))
                shards[shape["ShardId"]] = ShardInfo(
                    shard_id=shape["ShardId"],
                    parent_shard_ids=tuple(p for p in parents if p is not None),
                    hash_range=hash_range(shape["HashKeyRange"]),
                    closed="EndingSequenceNumber" in shape["SequenceNumberRange"],
                )
            token = response.get("NextToken")
            if not token:
                return shards
            request = {"NextToken": token}
        raise ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.LIST_SHARDS_DID_NOT_END)

    async def _sync_shards(self) -> None:
        """ListShards, then create the leases that are missing (the KCL's ShardSyncTask)."""
        shards = await self._list_shards()
        self._shards.update(shards)
        existing = {
            lease.lease_key
            for lease in await self._lease_client.list_leases(
                application=self.application, stream_name=self.lease_stream_name
            )
        }
        new = _leases_to_create(shards, existing, self.config.initial_position)
        if new:
            await self._create_leases(new)

    async def _create_leases(self, new: Sequence[NewLease]) -> None:
        result = await self._lease_client.create_leases(
            CreateLeases(
                application=self.application, stream_name=self.lease_stream_name, leases=tuple(new)
            )
        )
        if isinstance(result, LeaseError):
            raise ShoalError(result.error_code, result.message)

    # --- renew and take ---------------------------------------------------------------------

    async def _renew_all(self, now_ms: int) -> None:
        holdings = [h for h in self._holdings.values() if not h.lost and not h.released]
        await asyncio.gather(*(self._renew(holding, now_ms) for holding in holdings))

    async def _renew(self, holding: _Holding, now_ms: int) -> None:
        async with holding.lock:
            if holding.lost or holding.released:
                return
            try:
                result = await self._lease_client.renew(
                    RenewLease(
                        application=self.application,
                        stream_name=self.lease_stream_name,
                        lease_key=holding.lease.lease_key,
                        owner=self.worker_id,
                        expected_counter=holding.lease.lease_counter,
                    )
                )
            except ShoalError as error:
                # Unknown outcome. Past the failover time others may have taken it: stop.
                if now_ms - holding.last_renewed_ms > self.config.failover_ms:
                    self._lose(holding, reason=f"renew failing: {error}")
                return
            if isinstance(result, LeaseError):
                self._lose(holding, reason=result.message)
                return
            holding.lease = result
            holding.last_renewed_ms = now_ms

    def _lose(self, holding: _Holding, *, reason: str) -> None:
        """Mark the period lost; the consumer notices, calls lease_lost, and exits."""
        assert holding.lock.locked()
        if holding.lost:
            return
        holding.lost = True
        holding.stop.set()
        self._lost += 1
        log.info(
            "lease_lost",
            extra={"shard_id": holding.lease.lease_key, "worker": self.worker_id, "why": reason},
        )

    async def _take_leases(self) -> None:
        listed = await self._lease_client.list_leases(
            application=self.application, stream_name=self.lease_stream_name
        )
        now_ms = self._clock.monotonic_ms()
        self._observations = balancing.observe(self._observations, listed, now_ms=now_ms)
        plan = balancing.plan(
            listed,
            worker_id=self.worker_id,
            observations=self._observations,
            failover_ms=self.config.failover_ms,
            now_ms=now_ms,
            rng=self.config.rng,
            held=set(self._holdings),
            max_leases_to_steal_at_one_time=self.config.max_leases_to_steal_at_one_time,
            max_leases_for_worker=self.config.max_leases_for_worker,
        )
        # The takes at once (one quorum round for all, not one each): a worker starting on a
        # stream of many shards reads them all from its first scan.
        takes = await asyncio.gather(
            *(
                self._lease_client.take(
                    TakeLease(
                        application=self.application,
                        stream_name=self.lease_stream_name,
                        lease_key=lease.lease_key,
                        owner=self.worker_id,
                        expected_owner=lease.lease_owner,
                        expected_counter=lease.lease_counter,
                    )
                )
                for lease in plan.take
            ),
            return_exceptions=True,
        )
        failure: ShoalError | None = None
        for taken in takes:
            if isinstance(taken, ShoalError):
                failure = taken  # unknown outcome: the next scan sees what happened
            elif isinstance(taken, BaseException):
                raise taken
            else:
                self._start(taken, stolen=False)
        if failure is not None:
            raise failure
        for lease in plan.steal:
            assert lease.lease_owner is not None
            stolen = await self._lease_client.steal(
                StealLease(
                    application=self.application,
                    stream_name=self.lease_stream_name,
                    lease_key=lease.lease_key,
                    owner=self.worker_id,
                    expected_owner=lease.lease_owner,
                    expected_counter=lease.lease_counter,
                )
            )
            self._start(stolen, stolen=True)

    def _start(self, result: Lease | LeaseError, *, stolen: bool) -> None:
        """Start consuming a lease just taken; a refused take (someone moved first) is
        nothing to do: the next scan sees the new state."""
        if isinstance(result, LeaseError):
            log.debug("lease_take_refused", extra={"why": result.message})
            return
        assert result.lease_owner == self.worker_id
        assert result.lease_key not in self._holdings
        assert self._tasks is not None
        if stolen:
            self._stolen += 1
        else:
            self._taken += 1
        holding = _Holding(result, now_ms=self._clock.monotonic_ms())
        if self._shutdown.is_set():
            # Taken by a scan that began before the shutdown: hand it straight back.
            holding.stop.set()
        self._holdings[result.lease_key] = holding
        holding.task = self._tasks.create_task(self._consume(holding))

    # --- lease calls on behalf of consumers -------------------------------------------------

    async def _checkpoint(self, holding: _Holding, value: Checkpoint, *, pending: bool) -> None:
        async with holding.lock:
            if holding.lost or holding.released:
                raise LeaseLostError(holding.lease.lease_key)
            result = await self._lease_client.checkpoint(
                CheckpointLease(
                    application=self.application,
                    stream_name=self.lease_stream_name,
                    lease_key=holding.lease.lease_key,
                    owner=self.worker_id,
                    expected_counter=holding.lease.lease_counter,
                    checkpoint=value,
                    pending=pending,
                )
            )
            if isinstance(result, LeaseError):
                if result.refusal is LeaseRefusal.INVALID:
                    raise ValueError(result.message)
                self._lose(holding, reason=result.message)
                raise LeaseLostError(holding.lease.lease_key)
            holding.lease = result

    async def _release(self, holding: _Holding) -> None:
        async with holding.lock:
            if holding.lost or holding.released:
                return
            result = await self._lease_client.release(
                ReleaseLease(
                    application=self.application,
                    stream_name=self.lease_stream_name,
                    lease_key=holding.lease.lease_key,
                    owner=self.worker_id,
                    expected_counter=holding.lease.lease_counter,
                )
            )
            holding.released = True
            if isinstance(result, LeaseError):
                log.info("lease_release_refused", extra={"why": result.message})

    async def _current_lease(self, lease_key: str) -> tuple[Lease | None, Mapping[str, Lease]]:
        listed = await self._lease_client.list_leases(
            application=self.application, stream_name=self.lease_stream_name
        )
        by_key = {lease.lease_key: lease for lease in listed}
        return by_key.get(lease_key), by_key

    # --- one shard --------------------------------------------------------------------------

    async def _consume(self, holding: _Holding) -> None:
        """One lease period of one shard, then release it unless lost or killed."""
        shard_id = holding.lease.lease_key
        task = asyncio.current_task()
        assert task is not None
        try:
            await _ShardConsumer(self, holding).run()
        except ShoalError as error:
            log.warning("shard_consumer_failed", extra={"shard_id": shard_id, "error": str(error)})
        except Exception:
            # The processor's own code failed. Its checkpoint stands; give the shard up so it
            # is processed again from there (here or elsewhere) rather than skipping records.
            log.exception("record_processor_failed", extra={"shard_id": shard_id})
        finally:
            # On cancellation (a crash) nothing is released: the lease expires.
            if not task.cancelling():
                with contextlib.suppress(ShoalError):
                    await self._release(holding)
            if self._holdings.get(shard_id) is holding:
                del self._holdings[shard_id]
            self._wakeup.set()

    async def _shard_info(self, shard_id: str) -> ShardInfo:
        if shard_id not in self._shards:
            self._shards.update(await self._list_shards())
        shard = self._shards.get(shard_id)
        if shard is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.shard_not_listed(shard_id=shard_id)
            )
        return shard

    def _count_delivered(self, count: int) -> None:
        self._delivered += count

    def _count_empty_batch(self) -> None:
        self._empty_batches += 1


class _ShardConsumer:
    """The KCL's ShardConsumer for one lease period: block on parents, initialize, process,
    then end with lease_lost, shard_ended or shutdown_requested."""

    def __init__(self, worker: Worker, holding: _Holding) -> None:
        self._worker = worker
        self._holding = holding
        self._shard_id = holding.lease.lease_key
        self._checkpointer = Checkpointer(worker, holding)
        self._config = worker.config

    async def _pause(self, ms: int) -> None:
        """Wait `ms`, or less if the period ends (lost lease, shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ms / 1000):
                await self._holding.stop.wait()

    async def _wait_parents(self) -> bool:
        """Whether the parents finished before this period ended. Infinite on purpose: a
        parent's owner may take arbitrarily long; ends with the period."""
        while not self._holding.stop.is_set():
            lease, by_key = await self._worker._current_lease(self._shard_id)
            if lease is None:
                return False
            if leases_core.parents_done_in(by_key, lease):
                return True
            await self._pause(self._config.parent_poll_interval_ms)
        return False

    async def run(self) -> None:
        if not await self._wait_parents():
            return
        shard = await self._worker._shard_info(self._shard_id)
        processor = self._worker._processor_factory()
        lease = self._holding.lease
        pending = lease.pending_checkpoint
        await processor.initialize(
            InitializationInput(
                shard_id=self._shard_id,
                extended_sequence_number=to_extended(lease.checkpoint),
                pending_checkpoint_sequence_number=(
                    to_extended(pending) if pending is not None else None
                ),
            )
        )
        # A LeaseLostError the processor let propagate ends processing like a failed renew.
        with contextlib.suppress(LeaseLostError):
            await self._process(processor, shard)
        if self._holding.lost:
            await processor.lease_lost(LeaseLostInput(shard_id=self._shard_id))

    async def _process(self, processor: RecordProcessor, shard: ShardInfo) -> None:
        source = self._worker._record_source_factory(shard)
        try:
            await self._process_from(processor, shard, source)
        finally:
            await source.aclose()

    async def _process_from(
        self, processor: RecordProcessor, shard: ShardInfo, source: RecordSource
    ) -> None:
        start = self._holding.lease.checkpoint
        await self._retrying(lambda: source.start(start))
        resume_after = to_extended(start)
        resuming = not start.is_sentinel
        # Infinite on purpose: ends at the shard's end, on a lost lease, or on shutdown.
        while True:
            if self._holding.lost:
                return
            if self._holding.stop.is_set():
                await processor.shutdown_requested(
                    ShutdownRequestedInput(shard_id=self._shard_id, checkpointer=self._checkpointer)
                )
                return
            batch = await self._retrying(source.next_batch)
            users: Sequence[UserRecord] = (
                batch.users
                if batch.users is not None
                else deaggregate_batch(batch.records, shard_hash_range=shard.hash_range)
            )
            if resuming and users:
                # Only the user records past the checkpoint (an aggregate's records up to it
                # were processed); once a batch starts past it, so does every later one. They
                # are in order, so those past it are a suffix (sliced: a source's own sequence
                # type is kept).
                resuming = not users[0].extended_sequence_number > resume_after
                if resuming:
                    past = next(
                        (
                            i
                            for i, u in enumerate(users)
                            if u.extended_sequence_number > resume_after
                        ),
                        len(users),
                    )
                    users = users[past:]
            empty_delivered = batch.empty and self._worker.config.process_empty_batches
            if (users or empty_delivered) and not self._holding.lost:
                if users:
                    self._checkpointer.largest_permitted = users[-1].extended_sequence_number
                    self._worker._count_delivered(len(users))
                await processor.process_records(
                    ProcessRecordsInput(
                        records=users,
                        millis_behind_latest=batch.millis_behind_latest,
                        checkpointer=self._checkpointer,
                    )
                )
            if batch.child_shards is not None:
                await self._shard_end(processor, batch.child_shards)
                return
            if batch.empty:
                self._worker._count_empty_batch()
                await self._pause(source.idle_wait_ms)

    async def _shard_end(self, processor: RecordProcessor, children: Sequence[ShardInfo]) -> None:
        """Create the children's leases, then let the processor checkpoint SHARD_END."""
        for child in children:
            self._worker._shards.setdefault(child.shard_id, child)
        new = [NewLease(shard_id=c.shard_id, parent_shard_ids=c.parent_shard_ids) for c in children]
        if new:
            await self._retrying(lambda: self._worker._create_leases(new))
        if self._holding.lost:
            return
        self._checkpointer.largest_permitted = to_extended(leases_core.SHARD_END)
        await processor.shard_ended(
            ShardEndedInput(shard_id=self._shard_id, checkpointer=self._checkpointer)
        )
        if not self._holding.lease.checkpoint.is_shard_end and not self._holding.lost:
            log.error(
                "shard_end_not_checkpointed",
                extra={"shard_id": self._shard_id, "worker": self._worker.worker_id},
            )

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry a Kinesis or lease-service call with exponential backoff while the period
        lasts. Infinite on purpose (a stream may be unavailable for long); ends with success,
        a lost lease or shutdown (then the error propagates)."""
        backoff_ms = self._config.retry_backoff_ms_min
        while True:
            try:
                return await call()
            except ShoalError as error:
                code = error.code
                if not code.spec.retryable or self._holding.stop.is_set():
                    raise
                jitter = self._config.rng.uniform(0.5, 1.0)
                await self._pause(int(backoff_ms * jitter))
                backoff_ms = min(2 * backoff_ms, self._config.retry_backoff_ms_max)


def _leases_to_create(
    shards: Mapping[str, ShardInfo], existing: set[str], initial_position: InitialPosition
) -> list[NewLease]:
    """The leases a shard sync creates (the KCL's HierarchicalShardSyncer, simplified).

    A shard whose parent is leased (or being leased now) starts at TRIM_HORIZON, so nothing
    between a parent's end and its child is skipped. Other shards start at the initial
    position; with LATEST only open shards get a lease (a closed one has nothing new), and
    their unleased parents count as finished.
    """
    new: list[NewLease] = []
    leased = set(existing)
    # Shard ids grow with creation, so parents come before their children.
    for shard_id in sorted(shards):
        if shard_id in leased:
            continue
        shard = shards[shard_id]
        if any(parent in leased for parent in shard.parent_shard_ids):
            start = leases_core.TRIM_HORIZON
        elif initial_position is InitialPosition.LATEST and shard.closed:
            continue
        else:
            start = Checkpoint(initial_position.value)
        new.append(
            NewLease(shard_id=shard_id, parent_shard_ids=shard.parent_shard_ids, checkpoint=start)
        )
        leased.add(shard_id)
    return new
