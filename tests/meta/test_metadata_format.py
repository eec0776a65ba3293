"""The cluster's metadata format (broker/meta/metadata_format.py): what a cluster at the first
format writes is readable by the previous release's own decoders (its code taken from git, as
tests/cluster/test_rolling_upgrade.py does), commands the first format cannot carry are
refused before they are proposed, and the level only goes up."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from broker.errors import ErrorCode, ShoalError
from broker.log.records import AppendBatch, NewRecord
from broker.meta.commands import (
    AddTags,
    Command,
    InitCluster,
    PutResourcePolicy,
    RewrapStreamDataKeys,
    SetMetadataFormat,
    SetStreamEncryption,
    WrappedDataKey,
    encode_command,
    required_format,
)
from broker.meta.controller_core import ControllerCore, RaiseMetadataFormat
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import MetadataImage, RecordDistribution
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.metadata_format import (
    ENCRYPTED_CREATION_LEVEL,
    FIRST_FORMAT,
    STORED_BATCHES_LEVEL,
    VIDEO_EDGE_LEVEL,
    command_level,
    image_version,
    members_after,
)
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.replication.messages import Append, Envelope
from broker.replication.replica import batch_format_for
from broker.rpc.replication_codec import envelope_to_proto
from broker.types import NodeId, Offset, ShardUid
from tests.cluster.test_rolling_upgrade import PREVIOUS
from tests.meta.factories import create_stream, init_cluster, nodes_image, register_node
from tests.meta.iam_factories import every_iam_command
from tests.meta.test_controller import SETTINGS
from tests.meta.video_factories import every_video_command
from tests.support import REPO, export_code


def _image_at_first_format() -> MetadataImage:
    image = apply(MetadataImage(), init_cluster()).image
    assert image.metadata_format == FIRST_FORMAT
    image = nodes_image(3, image)
    for command in (
        create_stream("s1"),
        AddTags(now_ms=1, name="s1", tags=(("team", "a"),)),
    ):
        applied = apply(image, command)
        assert applied.error is None, applied.error
        image = applied.image
    return image


@pytest.fixture(scope="module")
def previous_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_code(PREVIOUS, tmp_path_factory.mktemp("previous"))


def _previous_decodes(code: Path, items: list[tuple[str, bytes]]) -> list[str]:
    """Runs the previous release's decoders on each (`image` or `command`, bytes): the type
    name decoded, or the error's text. One interpreter for all (an import costs a second)."""
    script = (
        "import base64, json, sys\n"
        "from broker.meta.image_codec import decode_image\n"
        "from broker.meta.commands import decode_command\n"
        "out = []\n"
        "for kind, data in json.load(sys.stdin):\n"
        "    decode = decode_image if kind == 'image' else decode_command\n"
        "    try:\n"
        "        out.append(type(decode(base64.b64decode(data))).__name__)\n"
        "    except Exception as exc:\n"
        "        out.append(str(exc))\n"
        "print(json.dumps(out))\n"
    )
    request = json.dumps([(kind, base64.b64encode(data).decode()) for kind, data in items])
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=request.encode(),
        capture_output=True,
        cwd=code,
        env={"PYTHONPATH": str(code)},
        check=True,
        timeout=60,
    )
    answers: list[str] = json.loads(done.stdout)
    return answers


def test_the_first_format_is_what_the_previous_release_reads(previous_code: Path) -> None:
    image = _image_at_first_format()
    data = encode_image(image)
    assert json.loads(data)["v"] == image_version(FIRST_FORMAT) == 4
    assert "metadata_format" not in json.loads(data)
    assert decode_image(data) == image
    commands: list[Command] = [
        create_stream("s2"),
        init_cluster(),
        AddTags(now_ms=1, name="s2", tags=(("k", "v"),)),
    ]
    assert all(required_format(command) == FIRST_FORMAT for command in commands)
    # What the second format adds is not readable by it: the reason for the negotiation.
    raised = dataclasses.replace(image, metadata_format=2)
    answers = _previous_decodes(
        previous_code,
        [
            ("image", data),
            *(("command", encode_command(command)) for command in commands),
            ("image", encode_image(raised)),
        ],
    )
    assert answers[:-1] == ["MetadataImage", *(type(c).__name__ for c in commands)]
    assert "unsupported metadata image format version 7" in answers[-1]


def test_commands_are_gated_by_what_they_carry() -> None:
    assert required_format(create_stream("s")) == FIRST_FORMAT
    routed = create_stream("s", record_distribution=RecordDistribution.AUTO)
    assert required_format(routed) == 2
    assert required_format(create_stream("s", warm_throughput_mibps=100)) == 2
    assert required_format(InitCluster(now_ms=0, cluster_id="c", iterator_secret=b"x")) == 1
    policy = PutResourcePolicy(now_ms=0, resource_arn="arn", stream_name="s", policy="{}")
    assert required_format(policy) == 2
    assert required_format(SetMetadataFormat(now_ms=0, level=2)) == 2
    # Identities (issue 15): refused while any node reads only format 2.
    assert required_format(every_iam_command(now_ms=0)[0]) == 3
    # Encryption at rest (issue 15): a stream's data keys are format 3.
    stop = SetStreamEncryption(
        now_ms=0, name="s", encryption_type="NONE", key_id=None, updating_ms=0
    )
    assert required_format(stop) == 2
    key = WrappedDataKey(wrapped=b"k", wrapping="cluster:c")
    start = dataclasses.replace(stop, encryption_type="KMS", key_id="alias/aws/kinesis")
    assert required_format(dataclasses.replace(start, data_key=key)) == 3
    rewrap = RewrapStreamDataKeys(now_ms=0, name="s", stream_uid=1, rewrapped=())
    assert required_format(rewrap) == 3
    # A stream created encrypted (its first data key in CreateStream).
    created_encrypted = create_stream("s", key_id="alias/aws/kinesis", data_key=key)
    assert required_format(created_encrypted) == ENCRYPTED_CREATION_LEVEL
    # Video streams' edge configurations and storage tiers (issue 14).
    edge_and_storage = {
        "SetVideoEdgeConfiguration",
        "DeleteVideoEdgeConfiguration",
        "UpdateVideoStorageTier",
    }
    for command in every_video_command(now_ms=0):
        if type(command).__name__ in edge_and_storage:
            assert required_format(command) == VIDEO_EDGE_LEVEL


def test_an_image_at_the_first_format_cannot_carry_what_it_cannot_encode() -> None:
    image = _image_at_first_format()
    stream = image.streams[next(iter(image.streams))]
    carrying = dataclasses.replace(
        image,
        streams={stream.name: dataclasses.replace(stream, encryption_type="KMS", key_id="k")},
    )
    with pytest.raises(ValueError, match="metadata format 1 cannot carry"):
        encode_image(carrying)


def test_the_level_only_goes_up_and_changes_what_is_written() -> None:
    image = _image_at_first_format()
    raised = apply(image, SetMetadataFormat(now_ms=2, level=2))
    assert raised.error is None
    assert raised.image.metadata_format == 2
    assert json.loads(encode_image(raised.image))["v"] == image_version(2)
    assert decode_image(encode_image(raised.image)) == raised.image
    again = apply(raised.image, SetMetadataFormat(now_ms=3, level=1))
    assert again.image.metadata_format == 2


def test_images_from_before_the_negotiation_keep_their_content() -> None:
    """Version 5 and 6 images (written before the format was negotiated) hold the second
    format's content; versions up to 4 the first's."""
    image = dataclasses.replace(_image_at_first_format(), metadata_format=2)
    document = json.loads(encode_image(image))
    del document["metadata_format"]
    for version, level in ((4, FIRST_FORMAT), (5, 2), (6, 2)):
        document["v"] = version
        assert decode_image(json.dumps(document).encode()).metadata_format == level


async def test_the_frontend_refuses_a_command_the_cluster_cannot_carry_yet() -> None:
    quorum = LocalQuorum(_image_at_first_format())
    await quorum.start()
    frontend = MetadataFrontend(quorum, propose_timeout_ms=1_000)
    stream = next(iter(quorum.image().streams.values()))
    policy = PutResourcePolicy(
        now_ms=5, resource_arn=stream.arn, stream_name=stream.name, policy="{}"
    )
    with pytest.raises(ShoalError) as refused:
        await frontend.propose(policy)
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert "metadata format 2" in refused.value.message
    # Its proposer knows every member reads it (the controller, or a new cluster's node).
    await frontend.propose(SetMetadataFormat(now_ms=6, level=2))
    await frontend.propose(policy)
    assert quorum.image().streams[stream.name].resource_policy == "{}"
    # A member nested where required_format cannot see it (CreateStream's WARM storage tier
    # inside the VideoStreamMeta) is gated by its proposer through require_format.
    with pytest.raises(ShoalError) as refused:
        frontend.require_format(VIDEO_EDGE_LEVEL)
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert f"metadata format {VIDEO_EDGE_LEVEL}" in refused.value.message
    await frontend.propose(SetMetadataFormat(now_ms=7, level=VIDEO_EDGE_LEVEL))
    frontend.require_format(VIDEO_EDGE_LEVEL)


# --- The controller raises the format once every node reads it ------------------------------


def _format_actions(core: ControllerCore, image: MetadataImage, now_ms: int) -> list[int]:
    return [
        a.level
        for a in core.decide(image, now_ms=now_ms, wall_ms=10_000)
        if isinstance(a, RaiseMetadataFormat)
    ]


def test_the_controller_raises_the_format_when_the_last_node_reads_it() -> None:
    image = _image_at_first_format()
    core = ControllerCore(settings=SETTINGS, now_ms=0)
    old, *new = sorted(image.nodes.values(), key=lambda n: n.node_id)
    for node in new:
        core.on_heartbeat(
            node_id=node.node_id, incarnation=node.incarnation, now_ms=1, metadata_format_max=2
        )
    assert _format_actions(core, image, 2) == []  # one node not heard yet
    # A binary from before the negotiation says nothing (0 on the wire: the first format).
    core.on_heartbeat(node_id=old.node_id, incarnation=old.incarnation, now_ms=3)
    assert _format_actions(core, image, 4) == []
    # Its restart on the new binary is a new incarnation, which says it reads format 2.
    image = apply(image, register_node(old.node_id, now_ms=5)).image
    restarted = image.nodes[old.node_id]
    assert restarted.incarnation > old.incarnation
    core.on_heartbeat(
        node_id=old.node_id, incarnation=old.incarnation, now_ms=6, metadata_format_max=2
    )
    assert _format_actions(core, image, 7) == []  # the old incarnation's word does not count
    core.on_heartbeat(
        node_id=old.node_id, incarnation=restarted.incarnation, now_ms=8, metadata_format_max=2
    )
    assert _format_actions(core, image, 9) == [2]
    raised = apply(image, SetMetadataFormat(now_ms=10, level=2)).image
    assert _format_actions(core, raised, 11) == []


def test_the_limit_holds_the_format() -> None:
    image = _image_at_first_format()
    held = dataclasses.replace(SETTINGS, metadata_format_limit=FIRST_FORMAT)
    core = ControllerCore(settings=held, now_ms=0)
    for node in image.nodes.values():
        core.on_heartbeat(
            node_id=node.node_id, incarnation=node.incarnation, now_ms=1, metadata_format_max=2
        )
    assert _format_actions(core, image, 2) == []


_RECORD_MODULES = (
    "broker.meta.commands",
    "broker.meta.image",
    "broker.meta.capacity_table",
    "broker.consumers.leases",
    "broker.consumers.registry",
)
_LIST_FIELDS = (
    "import dataclasses, importlib, json\n"
    "out = {}\n"
    "for name in MODULES:\n"
    "    module = importlib.import_module(name)\n"
    "    for value in vars(module).values():\n"
    "        if dataclasses.is_dataclass(value) and isinstance(value, type):\n"
    "            out[value.__name__] = [f.name for f in dataclasses.fields(value)]\n"
    "print(json.dumps(out))\n"
)


def _dataclass_members(code: Path) -> dict[str, list[str]]:
    script = f"MODULES = {list(_RECORD_MODULES)!r}\n{_LIST_FIELDS}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        cwd=code,
        env={"PYTHONPATH": str(code)},
        check=True,
        timeout=60,
    )
    members: dict[str, list[str]] = json.loads(done.stdout)
    return members


def test_everything_added_since_the_first_format_is_gated(previous_code: Path) -> None:
    """A command type or member added after the first format must be listed in
    FORMAT_CHANGES, else a cluster at format 1 would write it for older nodes to fail on.
    (A new command or image member: add it to the newest format change.)"""
    before = _dataclass_members(previous_code)
    now = _dataclass_members(REPO)
    from broker.meta import commands

    ungated = [
        name
        for name in commands._COMMAND_TYPES
        if name not in before and command_level(name) == FIRST_FORMAT
    ]
    for name, members in now.items():
        if name not in before:
            continue  # a new record type is reachable only through a gated member or command
        gated = members_after(FIRST_FORMAT, name)
        ungated.extend(
            f"{name}.{member}"
            for member in members
            if member not in before[name] and member not in gated and member != "metadata_format"
        )
    assert not ungated, f"not in metadata_format.FORMAT_CHANGES: {ungated}"


def _previous_reads_batches(code: Path, items: list[tuple[str, bytes]]) -> list[str]:
    """Runs the previous release's shard-log and replication decoders on each (`stored`
    batch value or `envelope` bytes): the records' data it decodes, or the error's text."""
    script = (
        "import base64, json, sys\n"
        "from broker.api.internal.v1 import internal_pb2 as pb\n"
        "from broker.log.records import BatchHeader, decode_new_records\n"
        # The module's home before s24 first: the editable install's finder would otherwise
        # find the new home in this checkout, not in the previous release.
        "try:\n"
        "    from broker.replication.wire import envelope_from_proto\n"
        "except ImportError:\n"
        "    from broker.rpc.replication_codec import envelope_from_proto\n"
        "out = []\n"
        "for kind, data in json.load(sys.stdin):\n"
        "    raw = base64.b64decode(data)\n"
        "    try:\n"
        "        if kind == 'stored':\n"
        "            header = BatchHeader.parse(raw)\n"
        "            records = decode_new_records(raw, header, begin=0, stop=header.count)\n"
        "        else:\n"
        "            message = envelope_from_proto(pb.ReplicationEnvelope.FromString(raw))\n"
        "            records = [r for b in message.batches for r in b.records]\n"
        "        out.append(','.join(r.data.decode() for r in records))\n"
        "    except Exception as exc:\n"
        "        out.append(repr(exc))\n"
        "print(json.dumps(out))\n"
    )
    request = json.dumps([(kind, base64.b64encode(data).decode()) for kind, data in items])
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=request.encode(),
        capture_output=True,
        cwd=code,
        env={"PYTHONPATH": str(code)},
        check=True,
        timeout=60,
    )
    answers: list[str] = json.loads(done.stdout)
    return answers


def _leader_output(level: int) -> tuple[bytes, bytes]:
    """A batch as a leader at metadata format `level` stores it and sends it (issue 18)."""
    batch = AppendBatch(
        shard_uid=ShardUid(3),
        first_offset=Offset(0),
        arrival_ms=5,
        records=(NewRecord("k1", b"one"), NewRecord("k2", b"two")),
        epoch=1,
        version=batch_format_for(level),
    )
    append = Append(
        shard_uid=ShardUid(3),
        epoch=1,
        leader=NodeId("a"),
        first_offset=Offset(0),
        prev_epoch=0,
        batches=(batch,),
        leader_hw=Offset(0),
        leader_log_start=Offset(0),
    )
    envelope = envelope_to_proto(Envelope(to=NodeId("b"), message=append), sender=NodeId("a"))
    return batch.value, envelope.SerializeToString()


def test_shard_log_batches_below_the_stored_level_are_what_the_previous_release_reads(
    previous_code: Path,
) -> None:
    """Below STORED_BATCHES_LEVEL a leader's batches (on disk and on the wire) are read by the
    previous release; from it on they are not (format 3, stored bytes on the wire), which is
    why a leader waits for the level to write them."""
    for level in range(FIRST_FORMAT, STORED_BATCHES_LEVEL):
        stored, wire = _leader_output(level)
        assert _previous_reads_batches(previous_code, [("stored", stored), ("envelope", wire)]) == [
            "one,two",
            "one,two",
        ]
    stored, wire = _leader_output(STORED_BATCHES_LEVEL)
    answers = _previous_reads_batches(previous_code, [("stored", stored), ("envelope", wire)])
    assert "unknown format version 3" in answers[0]
    assert "one,two" not in answers[1]


def test_the_audit_trail_leaves_the_account_counts_at_level_3() -> None:
    """Limit checks are state-machine decisions: below the level, a binary that counts every
    stream may apply the same commands, so the audit trail's stream counts there too."""
    from broker.meta.metadata_format import AUDIT_UNCOUNTED_LEVEL
    from broker.streams.internal_names import AUDIT_TRAIL_STREAM, counts_against_account

    assert AUDIT_UNCOUNTED_LEVEL == 3
    assert counts_against_account(AUDIT_TRAIL_STREAM, metadata_format=2)
    assert not counts_against_account(AUDIT_TRAIL_STREAM, metadata_format=3)
    assert counts_against_account("orders", metadata_format=3)
