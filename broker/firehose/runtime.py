"""The Firehose parts of one node, built and run together: the service behind both doors, the
lifecycle reconciler and the deliverers. `broker/node.py` creates one `FirehoseRuntime`,
serves `service` on its doors (the AWS door under the `firehose` model, the gRPC server as
`FirehoseService` of `proto/broker/api/firehose/v1/firehose.proto`), runs `run()` among its
background tasks and awaits `stop()` first when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.caller import Caller
from broker.clock import Clock
from broker.config import Config
from broker.firehose.aws_clients import GlueCatalog, LambdaInvoker, S3Store
from broker.firehose.deliverers import Deliverers, DelivererSettings
from broker.firehose.lifecycle import Lifecycle, LifecycleSettings
from broker.firehose.probe import FirehoseProbe
from broker.firehose.service import FirehoseService
from broker.meta.frontend import MetadataFrontend
from broker.service.in_process import LocalKinesis, LocalLeaseClient
from broker.service.kinesis import KinesisService

FIREHOSE = "firehose"  # the botocore model, and the SigV4 signing name


class FirehoseRuntime:
    def __init__(
        self,
        *,
        config: Config,
        clock: Clock,
        metadata: MetadataFrontend,
        kinesis: KinesisService,
        is_controller: Callable[[], bool],
        probe: FirehoseProbe | None = None,
    ) -> None:
        knobs = config.knobs
        local = LocalKinesis(kinesis)
        store = S3Store(region=config.region)
        self.lifecycle = Lifecycle(
            metadata=metadata,
            kinesis=local,
            store=store,
            clock=clock,
            settings=LifecycleSettings(
                internal_shards=knobs.firehose_internal_shards,
                interval_ms=knobs.firehose_reconcile_interval_ms,
                write_bytes_per_second=knobs.firehose_write_bytes_per_second,
                write_records_per_second=knobs.firehose_write_records_per_second,
            ),
            is_controller=is_controller,
        )
        self.service = FirehoseService(
            metadata=metadata,
            kinesis=local,
            clock=clock,
            default_caller=Caller(region=config.region, account_id=config.account_id),
            on_change=self.lifecycle.kick,
            probe=probe,
        )
        self.deliverers = Deliverers(
            node_id=config.node_id,
            image=metadata.image,
            kinesis=local,
            lease_client=LocalLeaseClient(metadata, clock),
            store=store,
            lambda_invoker=LambdaInvoker(region=config.region),
            glue=GlueCatalog(region=config.region),
            clock=clock,
            settings=DelivererSettings(
                failover_ms=knobs.firehose_failover_ms,
                poll_interval_ms=knobs.firehose_poll_interval_ms,
            ),
        )
        self.deliverers.statistics.probe = probe

    async def run(self) -> None:
        """The reconciler and the deliverers; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.lifecycle.run(), name="firehose-lifecycle")
            group.create_task(self.deliverers.run(), name="firehose-deliverers")

    async def stop(self) -> None:
        await self.deliverers.stop()
