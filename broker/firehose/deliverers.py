"""Every node's deliverers: one KCL-style worker per ACTIVE delivery stream.

Each node runs a `broker.client.worker.Worker` for every ACTIVE delivery stream, as members of
one consumer application per delivery stream (named after its internal stream). The lease
table in the metadata quorum shares the source's shards among the nodes, so each shard is
delivered by one node at a time, and a dead node's shards are taken over by the others after
`failover_ms`, from the last checkpoint. The source is the internal stream (DirectPut) or the
user's stream (KinesisStreamAsSource, read from the delivery stream's creation time on: what
Firehose's LATEST start means, resolved once for every owner of a lease).

`run()` follows the metadata: workers start for new ACTIVE delivery streams and stop for those
gone or DELETING. `stop()` shuts every worker down gracefully (leases released, so another node
takes them at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.client.worker import InitialPosition, LeaseClient, Worker, WorkerConfig
from broker.clock import Clock
from broker.firehose.aws_clients import GlueCatalog, LambdaInvoker, RequestSigner, S3Store
from broker.firehose.delivery import DeliveryProcessor, DeliveryStatistics
from broker.firehose.lifecycle import source_stream_name
from broker.firehose.service import KinesisCalls
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus
from broker.meta.image import MetadataImage

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DelivererSettings:
    failover_ms: int = 10_000
    poll_interval_ms: int = 200
    watch_interval_ms: int = 250


@dataclass(slots=True)
class _Running:
    worker: Worker
    task: asyncio.Task[None]


class Deliverers:
    def __init__(
        self,
        *,
        node_id: str,
        image: Callable[[], MetadataImage],
        kinesis: KinesisCalls,
        lease_client: LeaseClient,
        store: S3Store,
        lambda_invoker: LambdaInvoker,
        glue: GlueCatalog,
        clock: Clock,
        settings: DelivererSettings,
    ) -> None:
        self._node_id = node_id
        self._image = image
        self._kinesis = kinesis
        self._lease_client = lease_client
        self._store = store
        self._lambda = lambda_invoker
        self._glue = glue
        self._signer = RequestSigner()  # one credential lookup per node
        self._clock = clock
        self._settings = settings
        self._running: dict[tuple[str, str], _Running] = {}  # (arn, uid) -> worker
        self.statistics = DeliveryStatistics()

    def running(self) -> tuple[str, ...]:
        """The ARNs this node runs a deliverer for."""
        return tuple(sorted(arn for arn, _ in self._running))

    async def run(self) -> None:
        """Infinite on purpose: cancelled with the node's background tasks (`stop()` first)."""
        while True:
            self.reconcile()
            await asyncio.sleep(self._settings.watch_interval_ms / 1000)

    def reconcile(self) -> None:
        wanted = {
            (meta.arn, meta.uid): meta
            for meta in self._image().delivery_streams.values()
            if meta.status is DeliveryStreamStatus.ACTIVE
        }
        for key in list(self._running):
            if key not in wanted:
                self._running.pop(key).task.cancel()  # deleted: no checkpoint matters now
        for key, meta in wanted.items():
            current = self._running.get(key)
            if current is not None:
                if not current.task.done():
                    continue
                if not current.task.cancelled():
                    error = current.task.exception()
                    log.error("firehose_deliverer_died", extra={"arn": meta.arn}, exc_info=error)
            self._running[key] = self._start(meta)

    def _start(self, meta: DeliveryStreamMeta) -> _Running:
        source = meta.source()
        stream_name = meta.internal_stream if source is None else source_stream_name(source)
        arn, uid = meta.arn, meta.uid

        def target() -> DeliveryStreamMeta | None:
            current = self._image().delivery_streams.get(arn)
            return current if current is not None and current.uid == uid else None

        rng = random.Random()
        worker = Worker(
            application=meta.internal_stream,
            stream_name=stream_name,
            processor_factory=lambda: DeliveryProcessor(
                target=target,
                store=self._store,
                lambda_invoker=self._lambda,
                glue=self._glue,
                clock=self._clock,
                statistics=self.statistics,
                rng=rng,
                signer=self._signer,
            ),
            lease_client=self._lease_client,
            kinesis=self._kinesis,
            config=WorkerConfig(
                worker_id=f"{self._node_id}:{uuid.uuid4()}",
                failover_ms=self._settings.failover_ms,
                polling_idle_interval_ms=self._settings.poll_interval_ms,
                # A source stream is read from the delivery stream's creation on (Firehose's
                # LATEST, resolved once): with LATEST resolved by each new owner, records put
                # before a lease's first checkpoint were skipped when the lease moved (a
                # takeover after kill -9, or a balancing steal).
                initial_position=(
                    InitialPosition.TRIM_HORIZON if source is None else InitialPosition.AT_TIMESTAMP
                ),
                initial_timestamp=datetime.fromtimestamp(meta.created_ms / 1000, tz=UTC),
                clock=self._clock,
                rng=rng,
            ),
        )
        task = asyncio.create_task(worker.run(), name=f"firehose-deliverer-{meta.name}")
        log.info("firehose_deliverer_started", extra={"arn": arn, "node_id": self._node_id})
        return _Running(worker=worker, task=task)

    async def stop(self) -> None:
        """Graceful: every worker delivers what it buffered, checkpoints and releases its
        leases (bounded); what does not finish in time is cancelled (a crash, covered by the
        at-least-once contract)."""
        running, self._running = list(self._running.values()), {}
        if not running:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await asyncio.gather(
                    *(r.worker.shutdown() for r in running), return_exceptions=True
                )
        for r in running:
            r.task.cancel()
        await asyncio.gather(*(r.task for r in running), return_exceptions=True)
