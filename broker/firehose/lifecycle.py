"""The delivery streams' lifecycle reconciler: CREATING -> ACTIVE (or CREATING_FAILED), and
DELETING -> gone. Runs on the controller's node (the metadata quorum leader's), so one node
acts at a time; every step is idempotent, so a new controller simply carries on.

CREATING, DirectPut: create the internal stream (`DeliveryStreamMeta.internal_stream`, AWS's 24
hours of retention, the configured shard count, no per-shard rate limits: the delivery stream's
own limits apply at its door; encrypted from its creation when the delivery stream is, so no
replica can store a record of it in the clear), wait until it is ACTIVE, check that the
destination is usable (its S3 bucket exists), then activate. KinesisStreamAsSource: check that
the source stream exists. A destination that is definitely unusable (no such bucket, no such
stream) makes it CREATING_FAILED with a FailureDescription; one that cannot be reached is
retried until `creation_timeout_ms`, then fails the same way.

ACTIVE: ENABLING or DISABLING (Start/StopDeliveryStreamEncryption): bring the internal stream
to the key asked for (StartStreamEncryption) or to clear, then settle the delivery stream
ENABLED or DISABLED; a key that cannot be used settles it ENABLING_FAILED with the
FailureDescription AWS gives (KMS_KEY_NOT_FOUND, DISABLED_KMS_KEY, ...), and the internal stream
keeps the key it had. ENABLED or DISABLED: keep the internal stream so (a change made while it
could not be reached).

DELETING: delete the internal stream and the deliverer's leases, then forget the incarnation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.clock import Clock
from broker.consumers import leases
from broker.errors import ErrorCode, ShoalError
from broker.firehose import destinations
from broker.firehose.aws_clients import S3Store, StoreError
from broker.firehose.service import (
    KinesisCalls,
    UnusableKey,
    encrypt_internal_stream,
    internal_key_id,
    kms_failures_as_unusable,
)
from broker.meta import commands
from broker.meta.delivery_streams import DeliveryStreamMeta, DeliveryStreamStatus, EncryptionStatus
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import MetadataImage
from broker.meta.metadata_format import ENCRYPTED_CREATION_LEVEL
from broker.service.control import CREATE_ENCRYPTED_UNDER
from broker.streams.throttling import StreamLimits
from broker.types import StreamName

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleSettings:
    internal_shards: int = 2
    interval_ms: int = 250
    creation_timeout_ms: int = 60_000
    write_bytes_per_second: int = 5 * 1024 * 1024  # the delivery stream's; 0 = off
    write_records_per_second: int = 5_000

    def internal_limits(self) -> StreamLimits:
        """The internal stream's per-shard limits: an even share of the delivery stream's
        write limits (0 stays 0: off), reads unlimited (only the deliverer reads)."""

        def share(total: int) -> int:
            return 0 if total == 0 else max(1, -(-total // self.internal_shards))

        return StreamLimits(
            write_bytes_per_second=share(self.write_bytes_per_second),
            write_records_per_second=share(self.write_records_per_second),
            read_calls_per_second=0,
            read_bytes_per_second=0,
        )


def _encrypted_as_asked(image: MetadataImage, meta: DeliveryStreamMeta) -> bool:
    """Whether the internal stream's encryption already matches (a pure image check, so a
    pass over settled delivery streams makes no call)."""
    stream = image.streams.get(StreamName(meta.internal_stream))
    if stream is None:
        return True  # not created yet, or gone: nothing to reconcile
    wanted = internal_key_id(meta.encryption_key_type, meta.encryption_key_arn)
    if wanted is None:
        return stream.encryption_type != "KMS"
    return stream.encryption_type == "KMS" and stream.key_id == wanted


def source_stream_name(source: Mapping[str, Any]) -> str:
    """The Kinesis stream a KinesisStreamSourceConfiguration names: the stream's metadata key
    when the source carries one (a channel's, whose stream may be in any namespace), else the
    name in its stream ARN."""
    key = source.get("StreamKey")
    if isinstance(key, str) and key:
        return key
    return str(source["KinesisStreamARN"]).rsplit("/", 1)[-1]


class Lifecycle:
    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        kinesis: KinesisCalls,
        store: S3Store,
        clock: Clock,
        settings: LifecycleSettings,
        is_controller: Callable[[], bool],
    ) -> None:
        self._metadata = metadata
        self._kinesis = kinesis
        self._store = store
        self._clock = clock
        self._settings = settings
        self._is_controller = is_controller
        self._wakeup = asyncio.Event()

    def kick(self) -> None:
        """Run a pass soon (a delivery stream was created or deleted through this node)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Infinite on purpose: cancelled with the node's background tasks."""
        while True:
            if self._is_controller():
                try:
                    await self.pass_once()
                except Exception:
                    log.exception("firehose_lifecycle_pass_failed")
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self._settings.interval_ms / 1000):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def pass_once(self) -> None:
        image = self._metadata.image()
        for meta in list(image.delivery_streams.values()):
            if meta.status is DeliveryStreamStatus.CREATING:
                await self._advance_creation(meta)
            elif meta.status is DeliveryStreamStatus.DELETING:
                await self._finish_deletion(meta)
            elif meta.status is not DeliveryStreamStatus.ACTIVE:
                continue
            elif meta.encryption_status.in_progress:
                await self._settle_encryption(meta)
            elif (
                meta.encryption_status in _SETTLED
                and meta.source() is None
                and not _encrypted_as_asked(image, meta)
            ):
                await self._reconcile_encryption(meta)

    async def _settle_encryption(self, meta: DeliveryStreamMeta) -> None:
        """ENABLING -> ENABLED or ENABLING_FAILED; DISABLING -> DISABLED or DISABLING_FAILED.
        Anything else that goes wrong (the internal stream's shard unreachable, KMS
        throttling) is retried at the next pass."""
        enabling = meta.encryption_status is EncryptionStatus.ENABLING
        key_type = meta.encryption_key_type if enabling else ""
        key_arn = meta.encryption_key_arn if enabling else ""
        failure: UnusableKey | None = None
        if meta.source() is None:
            try:
                await encrypt_internal_stream(
                    self._kinesis, meta.internal_stream, key_type, key_arn
                )
            except UnusableKey as unusable:
                failure = unusable
            except ShoalError as error:
                log.warning(
                    "firehose_encryption_pending", extra={"arn": meta.arn, "error": str(error)}
                )
                return
        await self._metadata.propose(
            commands.SettleDeliveryStreamEncryption(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                uid=meta.uid,
                key_type=key_type,
                key_arn=key_arn,
                failure_type="" if failure is None else failure.failure_type,
                failure_details="" if failure is None else _key_failure_details(meta, failure),
            )
        )
        log.info(
            "firehose_encryption_settled",
            extra={
                "arn": meta.arn,
                "enabling": enabling,
                "failure": None if failure is None else failure.failure_type,
            },
        )

    async def _reconcile_encryption(self, meta: DeliveryStreamMeta) -> None:
        """The internal stream's encryption follows the delivery stream's (set at creation,
        or changed while the internal stream could not be reached)."""
        try:
            await encrypt_internal_stream(
                self._kinesis,
                meta.internal_stream,
                meta.encryption_key_type,
                meta.encryption_key_arn,
            )
        except ShoalError as error:
            log.warning("firehose_encryption_pending", extra={"arn": meta.arn, "error": str(error)})

    async def _advance_creation(self, meta: DeliveryStreamMeta) -> None:
        try:
            ready = await self._prepare_source(meta)
            if not ready:
                return
            await self._check_destination(meta)
        except _Unusable as unusable:
            await self._activate(meta, failure=str(unusable), failure_type=unusable.failure_type)
            return
        except (StoreError, ShoalError) as error:
            waited_ms = self._clock.wall_ms() - meta.created_ms
            if waited_ms < self._settings.creation_timeout_ms:
                log.info("firehose_creation_waiting", extra={"arn": meta.arn, "error": str(error)})
                return
            await self._activate(meta, failure=f"Gave up after {waited_ms} ms: {error}")
            return
        await self._activate(meta, failure=None)

    async def _prepare_source(self, meta: DeliveryStreamMeta) -> bool:
        """True once the source is ready; raises _Unusable for a source that cannot be."""
        source = meta.source()
        if source is not None:
            name = source_stream_name(source)
            try:
                await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
            except ShoalError as error:
                if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                    raise _Unusable(
                        f"The source stream {source['KinesisStreamARN']} does not exist."
                    ) from error
                raise
            return True
        name = meta.internal_stream
        request: dict[str, object] = {
            "StreamName": name,
            "ShardCount": self._settings.internal_shards,
        }
        wanted = internal_key_id(meta.encryption_key_type, meta.encryption_key_arn)
        if (
            wanted is not None
            and self._metadata.image().metadata_format >= ENCRYPTED_CREATION_LEVEL
        ):
            # Created encrypted: no node ever holds a replica of it without its key, so no
            # replica can store a record in the clear (the step below then finds it so).
            request[CREATE_ENCRYPTED_UNDER] = wanted
        try:
            await kms_failures_as_unusable(self._kinesis.call("CreateStream", request))
        except UnusableKey as unusable:
            raise _Unusable(
                _key_failure_details(meta, unusable), failure_type=unusable.failure_type
            ) from unusable
        except ShoalError as error:
            if error.code is not ErrorCode.RESOURCE_IN_USE:
                raise
        summary = await self._kinesis.call("DescribeStreamSummary", {"StreamName": name})
        if summary["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            return False
        await self._metadata.propose(
            commands.UpdateStreamLimits(
                now_ms=self._clock.wall_ms(), name=name, changes=self._settings.internal_limits()
            )
        )
        # Encrypted from the first record on, when the delivery stream was created so.
        try:
            await encrypt_internal_stream(
                self._kinesis, name, meta.encryption_key_type, meta.encryption_key_arn
            )
        except UnusableKey as unusable:
            raise _Unusable(
                _key_failure_details(meta, unusable), failure_type=unusable.failure_type
            ) from unusable
        return True

    async def _check_destination(self, meta: DeliveryStreamMeta) -> None:
        kind, configuration = meta.destination()
        bucket = destinations.storage_bucket(kind, configuration)
        try:
            await asyncio.to_thread(self._store.check_bucket, bucket)
        except StoreError as error:
            if error.missing_bucket:
                raise _Unusable(f"The S3 bucket {bucket} does not exist.") from error
            raise

    async def _activate(
        self, meta: DeliveryStreamMeta, *, failure: str | None, failure_type: str = "UNKNOWN_ERROR"
    ) -> None:
        await self._metadata.propose(
            commands.ActivateDeliveryStream(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                uid=meta.uid,
                failure_type="" if failure is None else failure_type,
                failure_details=failure or "",
            )
        )
        log.info("firehose_created", extra={"arn": meta.arn, "failure": failure})

    async def _finish_deletion(self, meta: DeliveryStreamMeta) -> None:
        if meta.source() is None:
            try:
                await self._kinesis.call(
                    "DeleteStream",
                    {"StreamName": meta.internal_stream, "EnforceConsumerDeletion": True},
                )
            except ShoalError as error:
                if error.code not in (ErrorCode.RESOURCE_NOT_FOUND, ErrorCode.RESOURCE_IN_USE):
                    raise
        try:
            await self._metadata.propose(
                commands.lease_command(
                    leases.DeleteApplication(application=meta.internal_stream),
                    now_ms=self._clock.wall_ms(),
                )
            )
        except ShoalError as error:
            if error.code is ErrorCode.UNAVAILABLE:
                raise
            # A refusal: the application has no leases left (the internal stream's went
            # with it), which is the state wanted.
        await self._metadata.propose(
            commands.ForgetDeliveryStream(now_ms=self._clock.wall_ms(), arn=meta.arn, uid=meta.uid)
        )


class _Unusable(Exception):
    """The delivery stream's source, destination or key cannot be used: CREATING_FAILED with
    this DeliveryStreamFailureType."""

    def __init__(self, details: str, *, failure_type: str = "UNKNOWN_ERROR") -> None:
        super().__init__(details)
        self.failure_type = failure_type


_SETTLED = (EncryptionStatus.ENABLED, EncryptionStatus.DISABLED)


def _key_failure_details(meta: DeliveryStreamMeta, unusable: UnusableKey) -> str:
    """A FailureDescription's Details for a key that cannot be used."""
    key = meta.encryption_key_arn or meta.encryption_key_type
    return f"The KMS key {key} cannot be used: {unusable.message}"
