"""The lease commands in the metadata state machine: consumer leases in the MetadataImage.

Goal: the lease core's rules hold once they go through `state_machine.apply` (refusals become
the Kinesis errors of their codes, a zombie's checkpoint is refused, the table is untouched by a
refusal), CreateLeases only leases shards of a live stream, a deleted stream's leases are gone
so a recreated stream starts clean, and commands and images with leases encode exactly and
apply deterministically. Method: plain calls of `apply` on images built by the factories.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from broker.consumers import leases
from broker.consumers.leases import Checkpoint, Lease, NewLease
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import (
    Command,
    DeleteStream,
    ForgetStream,
    decode_command,
    encode_command,
    lease_command,
)
from broker.meta.image import MetadataImage
from broker.meta.image_codec import IMAGE_FORMAT_VERSION, decode_image, encode_image
from broker.meta.state_machine import apply
from tests.meta.factories import CREATING_MS, create_stream, every_lease_command, nodes_image

APP = "app"
STREAM = "s1"
SHARD_0 = "shardId-000000000000"
SHARD_1 = "shardId-000000000001"
NOW_MS = CREATING_MS + 1  # the stream is ACTIVE


def stream_image(shard_count: int = 2) -> MetadataImage:
    applied = apply(nodes_image(1), create_stream(STREAM, shard_count=shard_count))
    assert applied.error is None
    return applied.image


def ok(image: MetadataImage, operation: leases.LeaseOperation) -> tuple[MetadataImage, object]:
    applied = apply(image, lease_command(operation, now_ms=NOW_MS))
    assert applied.error is None, applied.error
    return applied.image, applied.result


def refused(image: MetadataImage, operation: leases.LeaseOperation) -> ShoalError:
    """The error of a refused operation; checks that only `applied_commands` moved."""
    applied = apply(image, lease_command(operation, now_ms=NOW_MS))
    assert applied.error is not None
    assert applied.image.leases is image.leases
    assert applied.image.applied_commands == image.applied_commands + 1
    return applied.error


def create(
    image: MetadataImage, *shard_ids: str, stream_name: str = STREAM
) -> tuple[MetadataImage, object]:
    return ok(
        image,
        leases.CreateLeases(
            application=APP,
            stream_name=stream_name,
            leases=tuple(NewLease(shard_id=s) for s in shard_ids),
        ),
    )


def take(
    image: MetadataImage, owner: str, expected_owner: str | None, counter: int
) -> tuple[MetadataImage, Lease]:
    image, result = ok(
        image,
        leases.TakeLease(
            application=APP,
            stream_name=STREAM,
            lease_key=SHARD_0,
            owner=owner,
            expected_owner=expected_owner,
            expected_counter=counter,
        ),
    )
    assert isinstance(result, Lease)
    return image, result


def checkpoint_op(owner: str, counter: int, value: Checkpoint, *, pending: bool = False):
    return leases.CheckpointLease(
        application=APP,
        stream_name=STREAM,
        lease_key=SHARD_0,
        owner=owner,
        expected_counter=counter,
        checkpoint=value,
        pending=pending,
    )


def test_create_leases_for_a_live_streams_shards() -> None:
    image, result = create(stream_image(), SHARD_0, SHARD_1)
    assert isinstance(result, tuple)
    assert [lease.lease_key for lease in result] == [SHARD_0, SHARD_1]
    assert all(lease.lease_owner is None and lease.lease_counter == 0 for lease in result)
    assert image.leases.lease_count() == 2
    # Idempotent: a second CreateLeases returns the leases as they are.
    again, second = create(image, SHARD_0)
    assert isinstance(second, tuple)
    assert second[0] == result[0]
    assert again.leases == image.leases


def test_create_leases_needs_the_stream_and_its_shards() -> None:
    image = stream_image()
    missing = leases.CreateLeases(
        application=APP, stream_name="nope", leases=(NewLease(shard_id=SHARD_0),)
    )
    assert refused(image, missing).code is ErrorCode.RESOURCE_NOT_FOUND
    unknown_shard = leases.CreateLeases(
        application=APP, stream_name=STREAM, leases=(NewLease(shard_id="shardId-000000000009"),)
    )
    error = refused(image, unknown_shard)
    assert error.code is ErrorCode.RESOURCE_NOT_FOUND
    assert "shardId-000000000009" in error.message
    bad_name = leases.CreateLeases(
        application="no spaces", stream_name=STREAM, leases=(NewLease(shard_id=SHARD_0),)
    )
    assert refused(image, bad_name).code is ErrorCode.INVALID_ARGUMENT
    deleting = apply(image, DeleteStream(now_ms=NOW_MS, name=STREAM, deleting_ms=10_000))
    assert deleting.error is None
    ok_shard = leases.CreateLeases(
        application=APP, stream_name=STREAM, leases=(NewLease(shard_id=SHARD_0),)
    )
    assert refused(deleting.image, ok_shard).code is ErrorCode.RESOURCE_NOT_FOUND


def test_take_renew_checkpoint_release() -> None:
    image, _ = create(stream_image(), SHARD_0)
    image, taken = take(image, "w1", None, 0)
    assert taken.lease_owner == "w1"
    assert taken.lease_counter == 1
    image, renewed = ok(
        image,
        leases.RenewLease(
            application=APP, stream_name=STREAM, lease_key=SHARD_0, owner="w1", expected_counter=1
        ),
    )
    assert isinstance(renewed, Lease)
    assert renewed.lease_counter == 2
    image, pending = ok(image, checkpoint_op("w1", 2, Checkpoint("100", 3), pending=True))
    assert isinstance(pending, Lease)
    assert pending.pending_checkpoint == Checkpoint("100", 3)
    assert pending.checkpoint == leases.TRIM_HORIZON
    image, done = ok(image, checkpoint_op("w1", 2, Checkpoint("100", 3)))
    assert isinstance(done, Lease)
    assert done.checkpoint == Checkpoint("100", 3)
    assert done.pending_checkpoint is None
    assert done.lease_counter == 2, "a checkpoint does not move the counter"
    image, released = ok(
        image,
        leases.ReleaseLease(
            application=APP, stream_name=STREAM, lease_key=SHARD_0, owner="w1", expected_counter=2
        ),
    )
    assert isinstance(released, Lease)
    assert released.lease_owner is None
    assert image.leases.get(APP, STREAM, SHARD_0) == released


def test_a_zombie_cannot_checkpoint() -> None:
    """w1 holds the lease, stalls; w2 sees the counter stand still and takes it. w1's
    checkpoint with its old counter is refused (ResourceInUseException) and changes nothing;
    w2's checkpoint in its own period is accepted."""
    image, _ = create(stream_image(), SHARD_0)
    image, _ = take(image, "w1", None, 0)
    image, _ = ok(image, checkpoint_op("w1", 1, Checkpoint("10")))
    image, stolen = take(image, "w2", "w1", 1)
    assert stolen.lease_counter == 2
    error = refused(image, checkpoint_op("w1", 1, Checkpoint("20")))
    assert error.code is ErrorCode.RESOURCE_IN_USE
    assert error.code.kinesis_name == "ResourceInUseException"
    lease = image.leases.get(APP, STREAM, SHARD_0)
    assert lease is not None
    assert lease.checkpoint == Checkpoint("10")
    # Neither renew nor release by the zombie either.
    renew = leases.RenewLease(
        application=APP, stream_name=STREAM, lease_key=SHARD_0, owner="w1", expected_counter=1
    )
    assert refused(image, renew).code is ErrorCode.RESOURCE_IN_USE
    image, done = ok(image, checkpoint_op("w2", 2, Checkpoint("20")))
    assert isinstance(done, Lease)
    assert done.checkpoint == Checkpoint("20")


def test_refusals_map_to_their_error_codes() -> None:
    image, _ = create(stream_image(), SHARD_0)
    image, _ = take(image, "w1", None, 0)
    image, _ = ok(image, checkpoint_op("w1", 1, Checkpoint("50")))
    backwards = refused(image, checkpoint_op("w1", 1, Checkpoint("49")))
    assert backwards.code is ErrorCode.INVALID_ARGUMENT
    self_steal = leases.StealLease(
        application=APP,
        stream_name=STREAM,
        lease_key=SHARD_0,
        owner="w1",
        expected_owner="w1",
        expected_counter=1,
    )
    assert refused(image, self_steal).code is ErrorCode.INVALID_ARGUMENT
    no_lease = leases.RenewLease(
        application=APP, stream_name=STREAM, lease_key=SHARD_1, owner="w1", expected_counter=0
    )
    assert refused(image, no_lease).code is ErrorCode.RESOURCE_NOT_FOUND
    unfinished = leases.DeleteLease(application=APP, stream_name=STREAM, lease_key=SHARD_0)
    assert refused(image, unfinished).code is ErrorCode.INVALID_ARGUMENT
    no_app = leases.DeleteApplication(application="other")
    assert refused(image, no_app).code is ErrorCode.RESOURCE_NOT_FOUND


def test_delete_lease_and_application() -> None:
    image, _ = create(stream_image(), SHARD_0, SHARD_1)
    image, _ = take(image, "w1", None, 0)
    image, _ = ok(image, checkpoint_op("w1", 1, leases.SHARD_END))
    image, deleted = ok(
        image, leases.DeleteLease(application=APP, stream_name=STREAM, lease_key=SHARD_0)
    )
    assert isinstance(deleted, Lease)
    assert deleted.checkpoint.is_shard_end
    assert image.leases.get(APP, STREAM, SHARD_0) is None
    image, count = ok(image, leases.DeleteApplication(application=APP))
    assert count == 1
    assert image.leases.application_names() == ()


def test_deleting_a_stream_drops_its_leases_and_a_recreated_stream_starts_clean() -> None:
    image = stream_image()
    image = apply(image, create_stream("other", shard_count=1)).image
    image, _ = create(image, SHARD_0, SHARD_1)
    image, _ = create(image, SHARD_0, stream_name="other")
    applied = apply(image, DeleteStream(now_ms=NOW_MS, name=STREAM, deleting_ms=100))
    assert applied.error is None
    image = applied.image
    assert leases.list_leases(image.leases, application=APP, stream_name=STREAM) == ()
    assert len(leases.list_leases(image.leases, application=APP, stream_name="other")) == 1
    # Recreated once gone: no lease of the old incarnation comes back.
    later = NOW_MS + 1_000
    recreated = apply(image, create_stream(STREAM, now_ms=later, shard_count=2))
    assert recreated.error is None
    assert leases.list_leases(recreated.image.leases, application=APP, stream_name=STREAM) == ()


def test_forget_and_recreate_drop_leases_left_on_a_gone_stream() -> None:
    """Belt and braces: an image holding leases of a deleted stream (none can be created
    while it is deleting) loses them on ForgetStream and on CreateStream under the name."""
    image = stream_image()
    image, _ = create(image, SHARD_0)
    leases_before = image.leases
    deleted = apply(image, DeleteStream(now_ms=NOW_MS, name=STREAM, deleting_ms=100)).image
    with_stale = dataclasses.replace(deleted, leases=leases_before)
    uid = with_stale.streams[STREAM].uid  # type: ignore[index]
    forgotten = apply(with_stale, ForgetStream(now_ms=NOW_MS + 1_000, uid=uid))
    assert forgotten.error is None
    assert forgotten.image.leases.lease_count() == 0
    recreated = apply(with_stale, create_stream(STREAM, now_ms=NOW_MS + 1_000))
    assert recreated.error is None
    assert recreated.image.leases.lease_count() == 0


def _history() -> list[Command]:
    """A run of lease commands, including refused ones."""
    base = {"application": APP, "stream_name": STREAM, "lease_key": SHARD_0}
    operations: list[leases.LeaseOperation] = [
        leases.CreateLeases(
            application=APP,
            stream_name=STREAM,
            leases=(
                NewLease(shard_id=SHARD_0),
                NewLease(shard_id=SHARD_1, checkpoint=leases.LATEST),
            ),
        ),
        leases.TakeLease(**base, owner="w1", expected_owner=None, expected_counter=0),
        leases.TakeLease(**base, owner="w2", expected_owner=None, expected_counter=0),  # refused
        leases.CheckpointLease(
            **base, owner="w1", expected_counter=1, checkpoint=Checkpoint("7", 1), pending=True
        ),
        leases.StealLease(**base, owner="w2", expected_owner="w1", expected_counter=1),
        leases.CheckpointLease(
            **base, owner="w1", expected_counter=1, checkpoint=Checkpoint("8"), pending=False
        ),  # refused: a zombie
        leases.RenewLease(**base, owner="w2", expected_counter=2),
    ]
    commands: list[Command] = [create_stream(STREAM, shard_count=2)]
    commands.extend(
        lease_command(operation, now_ms=NOW_MS + i) for i, operation in enumerate(operations)
    )
    return commands


def test_replay_through_the_codec_is_deterministic() -> None:
    """Two replicas applying the same encoded log reach byte-identical images."""
    log = [encode_command(command) for command in _history()]
    images = []
    for _ in range(2):
        image = nodes_image(1)
        for data in log:
            image = apply(image, decode_command(data)).image
        images.append(encode_image(image))
    assert images[0] == images[1]
    final = decode_image(images[0])
    lease = final.leases.get(APP, STREAM, SHARD_0)
    assert lease is not None
    assert lease.lease_owner == "w2"
    assert lease.lease_counter == 3
    assert lease.pending_checkpoint == Checkpoint("7", 1)


@pytest.mark.parametrize("command", every_lease_command(), ids=lambda c: type(c).__name__)
def test_lease_commands_round_trip(command: Command) -> None:
    data = encode_command(command)
    assert decode_command(data) == command
    assert encode_command(decode_command(data)) == data


def test_a_malformed_checkpoint_in_a_command_is_refused() -> None:
    command = lease_command(checkpoint_op("w1", 1, Checkpoint("5")), now_ms=1)
    document = json.loads(encode_command(command))
    document["operation"]["checkpoint"]["sequence_number"] = "five"
    with pytest.raises(ValueError, match="sequence number"):
        decode_command(json.dumps(document).encode())
    document["operation"]["checkpoint"] = {"sequence_number": "5"}
    with pytest.raises(ValueError, match="checkpoint"):
        decode_command(json.dumps(document).encode())


def test_image_with_leases_round_trips_in_the_lease_core_format() -> None:
    image = nodes_image(1)
    for command in _history():
        image = apply(image, command).image
    data = encode_image(image)
    decoded = decode_image(data)
    assert decoded == image
    assert encode_image(decoded) == data
    # The snapshot's lease list is the lease core's own plain encoding.
    assert json.loads(data)["leases"] == leases.table_to_list(image.leases)
    assert json.loads(data)["v"] == IMAGE_FORMAT_VERSION


def test_version_2_images_read_without_leases_and_version_1_is_refused() -> None:
    document = json.loads(encode_image(stream_image()))
    del document["leases"]
    document["v"] = 2
    decoded = decode_image(json.dumps(document).encode())
    assert decoded.leases.lease_count() == 0
    assert STREAM in decoded.streams
    document["v"] = 1
    with pytest.raises(ValueError, match="version 1"):
        decode_image(json.dumps(document).encode())


def test_a_lease_table_listing_one_lease_twice_is_refused() -> None:
    image, _ = create(stream_image(), SHARD_0)
    document = json.loads(encode_image(image))
    document["leases"] = document["leases"] * 2
    with pytest.raises(ValueError, match="twice"):
        decode_image(json.dumps(document).encode())
