"""SNS notifications of tagged fragments (UpdateNotificationConfiguration), sent at least once.

A producer asks for a notification by writing an MKV Tags element holding a SimpleTag named
AWS_KINESISVIDEO_NOTIFICATION before a fragment's Cluster (`mkv.notification_of`); PutMedia
stores the request with the fragment (`FragmentMetadata.notification`), so the obligation is
as durable as the fragment: it exists once the fragment is PERSISTED. While the stream's
notification configuration is ENABLED, the message AWS sends goes to its SNS topic:

    Subject "Kinesis Video Streams Notification", Message (JSON):
    {"StreamArn", "FragmentNumber", "FragmentStartProducerTimestamp",
     "FragmentStartServerTimestamp" (epoch milliseconds), "NotificationType": "PERSISTED",
     "NotificationPayload": {the producer's other SimpleTags}}

Delivery: each stream is served by its home node (`signaling_rules.home_node`, as for image
generation), whose progress is a KCL-style lease of the application `APPLICATION` on the
stream's internal stream (`consumers/leases.py`, in the metadata quorum): the node takes the
lease (or steals it from a node that is no longer placeable, or that the hash no longer
names), reads the fragments after the lease's checkpoint, publishes each tagged one, and only
then checkpoints past them, fenced by the lease counter. A node that dies between a publish
and the checkpoint leaves the checkpoint behind, and the next owner publishes again: at least
once, never lost (a message may be repeated, as SNS itself may). Fragments without a tag move
the checkpoint at most every `_IDLE_CHECKPOINT_MS`, so a quiet stream costs no quorum writes.
The lease is created by the first pass that finds the stream's configuration ENABLED, before
anything is published, with its checkpoint just before the first fragment of the last
`_LOOKBACK_MS` (or at the log's end when there is none), so from then on every fragment is
covered whatever node fails: the moment a configuration starts to act is not exact (AWS: "at
least one minute" after the update), and it is durable from the first pass on.
A refused publish (an SNS error) stops the pass; the next pass (every
`limits.video_notification_pass_interval_ms`) retries it.

The SNS client is injected (`Publisher`; the node passes boto3's, `AWS_ENDPOINT_URL_SNS`
selecting an SNS-compatible server). Loop-bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from broker import limits
from broker.clock import Clock
from broker.consumers import leases
from broker.consumers.leases import Checkpoint, Lease
from broker.errors import ShoalError
from broker.meta.commands import lease_command
from broker.meta.frontend import MetadataFrontend
from broker.meta.video_table import VideoStreamMeta
from broker.streams.sequence_numbers import (
    decode_sequence_number,
    encode_aws_sequence_number,
    encode_sequence_number,
    is_aws_layout,
)
from broker.video.archive import SHARD_ID, FragmentArchive, Position, internal_name
from broker.video.fragment_records import StoredFragment
from broker.video.signaling_rules import home_node

log = logging.getLogger(__name__)

APPLICATION = "__shoal.video.notifications"
SUBJECT = "Kinesis Video Streams Notification"
_LOOKBACK_MS = 10_000  # a new configuration covers the fragments this recent
_FRAGMENTS_PER_PASS = 100
_IDLE_CHECKPOINT_MS = 10_000  # untagged fragments move the checkpoint at most this often


class Publisher(Protocol):
    def publish(self, *, topic_arn: str, subject: str, message: str) -> None: ...


def notification_message(stream: VideoStreamMeta, fragment: StoredFragment) -> str:
    """The SNS message of a tagged fragment, in AWS's shape."""
    meta = fragment.metadata
    assert meta.notification is not None
    return json.dumps(
        {
            "StreamArn": stream.arn,
            "FragmentNumber": fragment.fragment_number,
            "FragmentStartProducerTimestamp": meta.producer_timestamp_ms,
            "FragmentStartServerTimestamp": meta.server_timestamp_ms,
            "NotificationType": "PERSISTED",
            "NotificationPayload": dict(meta.notification),
        },
        separators=(",", ":"),
    )


def enabled_topic(stream: VideoStreamMeta) -> str | None:
    """The SNS topic ARN of an ENABLED notification configuration, else None."""
    if not stream.notification_json:
        return None
    config = json.loads(stream.notification_json)
    if config.get("Status") != "ENABLED":
        return None
    topic: str = config["DestinationConfig"]["Uri"]
    return topic


class NotificationDelivery:
    def __init__(
        self,
        *,
        archive: FragmentArchive,
        metadata: MetadataFrontend,
        clock: Clock,
        node_id: str,
        publisher: Callable[[], Publisher],
    ) -> None:
        self._archive = archive
        self._metadata = metadata
        self._clock = clock
        self._node_id = node_id
        self._publisher = publisher
        self._checkpointed_ms: dict[str, int] = {}  # per stream ARN: the last checkpoint here
        # Per stream ARN: (lease counter, last fragment read), ahead of the durable checkpoint
        # by untagged fragments only, so a pass does not read them again.
        self._cursors: dict[str, tuple[int, str]] = {}

    async def run(self) -> None:
        while True:  # until cancelled with the node
            try:
                await self.deliver_once()
            except Exception:
                log.exception("video_notification_delivery_failed")
            await asyncio.sleep(limits.video_notification_pass_interval_ms / 1000)

    async def deliver_once(self) -> int:
        """One pass over the streams this node is home to; the number of messages sent."""
        image = self._metadata.image()
        placeable = [node_id for node_id, node in image.nodes.items() if node.is_placeable()]
        sent = 0
        for stream in list(image.video.streams.values()):
            topic = enabled_topic(stream)
            here = (home_node(stream.arn, placeable) or self._node_id) == self._node_id
            if topic is None or not here or not await self._archive.exists(stream):
                self._cursors.pop(stream.arn, None)
                continue
            sent += await self._deliver(stream, topic, placeable)
        await self._forget_leases(placeable)
        return sent

    async def _forget_leases(self, placeable: Sequence[str]) -> None:
        """Deletes the leases of streams deleted or no longer notifying, once nobody alive
        holds them (or this node does)."""
        image = self._metadata.image()
        wanted = {
            internal_name(stream)
            for stream in image.video.streams.values()
            if enabled_topic(stream) is not None
        }
        for lease in leases.list_leases(image.leases, application=APPLICATION):
            owner = lease.lease_owner
            mine = owner is None or owner == self._node_id or owner not in placeable
            if lease.stream_name not in wanted and mine:
                await self._propose(
                    leases.DeleteLease(
                        application=APPLICATION, stream_name=lease.stream_name, lease_key=SHARD_ID
                    )
                )

    def _lease(self, stream: VideoStreamMeta) -> Lease | None:
        found = leases.list_leases(
            self._metadata.image().leases,
            application=APPLICATION,
            stream_name=internal_name(stream),
        )
        return found[0] if found else None

    async def _propose(self, operation: leases.LeaseOperation) -> Lease | None:
        """The lease after `operation`, or None when it was refused (a race another node won,
        or a lease that changed under us: the next pass looks again)."""
        try:
            result = await self._metadata.propose(
                lease_command(operation, now_ms=self._clock.wall_ms())
            )
        except ShoalError as error:
            log.info("video_notification_lease_refused", extra={"error": str(error)})
            return None
        if isinstance(result, tuple):
            return result[0] if result and isinstance(result[0], Lease) else None
        return result if isinstance(result, Lease) else None

    async def _create_lease(self, stream: VideoStreamMeta) -> None:
        """The stream's lease, checkpointed just before the first fragment of the last
        `_LOOKBACK_MS`, or at the log's end when none arrived in that time."""
        now_ms = self._clock.wall_ms()
        since = Position(iterator_type="AT_TIMESTAMP", timestamp_ms=now_ms - _LOOKBACK_MS)
        first = None
        first_number = ""
        async for read in self._archive.read(stream, since):
            first_number = read.fragment.fragment_number
            first = decode_sequence_number(first_number)
            break
        if first is None:
            last = await self._archive.last_record(stream, now_ms=now_ms)
            checkpoint = leases.TRIM_HORIZON if last is None else Checkpoint(last)
        elif first.offset == 0:
            checkpoint = leases.TRIM_HORIZON
        else:  # the record before the first fragment: reading after it starts there
            before = dataclasses.replace(first, offset=first.offset - 1)
            aws = is_aws_layout(first_number)
            encode = encode_aws_sequence_number if aws else encode_sequence_number
            checkpoint = Checkpoint(encode(before))
        await self._propose(
            leases.CreateLeases(
                application=APPLICATION,
                stream_name=internal_name(stream),
                leases=(leases.NewLease(shard_id=SHARD_ID, checkpoint=checkpoint),),
            )
        )

    async def _owned_lease(self, stream: VideoStreamMeta, placeable: Sequence[str]) -> Lease | None:
        lease = self._lease(stream)
        if lease is None or lease.lease_owner == self._node_id:
            return lease
        name = internal_name(stream)
        if lease.lease_owner is None or lease.lease_owner not in placeable:
            operation: leases.LeaseOperation = leases.TakeLease(
                application=APPLICATION,
                stream_name=name,
                lease_key=SHARD_ID,
                owner=self._node_id,
                expected_owner=lease.lease_owner,
                expected_counter=lease.lease_counter,
            )
        else:  # alive, but the hash names this node now: the owner's next checkpoint fails
            operation = leases.StealLease(
                application=APPLICATION,
                stream_name=name,
                lease_key=SHARD_ID,
                owner=self._node_id,
                expected_owner=lease.lease_owner,
                expected_counter=lease.lease_counter,
            )
        return await self._propose(operation)

    async def _deliver(self, stream: VideoStreamMeta, topic: str, placeable: Sequence[str]) -> int:
        if self._lease(stream) is None:
            await self._create_lease(stream)
            return 0
        lease = await self._owned_lease(stream, placeable)
        if lease is None:
            return 0  # another node won the lease
        cursor = self._cursors.get(stream.arn)
        if cursor is not None and cursor[0] == lease.lease_counter:
            position = Position.after(cursor[1])
        elif lease.checkpoint.is_sentinel:  # TRIM_HORIZON: the log was empty at the start
            position = Position(iterator_type="TRIM_HORIZON")
        else:
            position = Position.after(lease.checkpoint.sequence_number)
        sent = 0
        last: str | None = None
        publisher = self._publisher()
        async for fragment in self._archive.read_pass(stream, position, limit=_FRAGMENTS_PER_PASS):
            if fragment.metadata.notification is not None:
                message = notification_message(stream, fragment)
                await asyncio.to_thread(
                    publisher.publish, topic_arn=topic, subject=SUBJECT, message=message
                )
                sent += 1
            last = fragment.fragment_number
        if last is None:
            return sent
        self._cursors[stream.arn] = (lease.lease_counter, last)
        now_ms = self._clock.wall_ms()
        idle_due = now_ms - self._checkpointed_ms.get(stream.arn, 0) >= _IDLE_CHECKPOINT_MS
        if sent or idle_due:
            checkpointed = await self._propose(
                leases.CheckpointLease(
                    application=APPLICATION,
                    stream_name=internal_name(stream),
                    lease_key=SHARD_ID,
                    owner=self._node_id,
                    expected_counter=lease.lease_counter,
                    checkpoint=Checkpoint(last),
                )
            )
            if checkpointed is None:  # the lease moved on: its new owner starts from there
                self._cursors.pop(stream.arn, None)
            self._checkpointed_ms[stream.arn] = now_ms
        return sent
