"""Metadata voters in the simulation (issue 20): every voter's applied image is identical after
the same number of applied commands, whatever path brought it there.

The replication simulation (`cluster.py`) models the metadata quorum as one authoritative
image. This one models what pysyncobj does with the committed log on each voter: voters apply
the log's commands at their own pace (encoded and decoded as on the wire, `commands.py`), take
snapshots (`image_codec`, as `pysyncobj_quorum` writes them), crash and restart from their
last snapshot plus their journal, lose their disk and come back from a peer's snapshot (a
wiped voter caught up by an install-snapshot). After every event, each voter's image is
compared with the first image any voter had after the same number of applied commands; a
difference is a violation (nondeterminism in `apply`, or a codec that loses something in a
snapshot round trip).

The committed log is generated from the seed: nodes register and change state, streams are
created, tagged, re-configured, resharded, deleted and forgotten, shards change leaders; many
commands are refused by `apply` (an error value, which still counts, as on every voter).
Pure and deterministic: `run_metadata_seed(seed)` returns the same result every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker import arns
from broker.meta import commands as cmd
from broker.meta.image import MetadataImage, NodeState, ReshardKind, StreamMode
from broker.meta.image_codec import image_from_document, image_to_document
from broker.meta.state_machine import apply
from broker.types import NodeId, Offset, ShardIndex, StreamName, StreamUid

_NODES = tuple(NodeId(f"n{i}") for i in range(1, 6))
CHECK_EVERY = 8
_STREAMS = ("a", "b", "c")


@dataclass(slots=True)
class _Voter:
    image: MetadataImage = field(default_factory=MetadataImage)
    applied: int = 0  # log entries applied
    # (entries, image): images are immutable, so the snapshot's document is written only
    # when a restart or an install reads it back (`_snapshot_document`): the same bytes.
    snapshot: tuple[int, MetadataImage] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataSimResult:
    seed: int
    entries: int
    events: int
    violation: str | None

    @property
    def ok(self) -> bool:
        return self.violation is None


def _command(rng: random.Random, image: MetadataImage, now_ms: int) -> cmd.Command:
    """One command a proposer could send against `image` (valid or not: apply decides)."""
    name = StreamName(rng.choice(_STREAMS))
    node = rng.choice(_NODES)
    stream = image.streams.get(name)
    kind = rng.randrange(10)
    if kind == 0 or not image.nodes:
        return cmd.RegisterNode(
            now_ms=now_ms,
            node_id=node,
            api_address=f"{node}:1",
            http_address=f"{node}:2",
            raft_address=f"{node}:3",
            voter=True,
        )
    if kind == 1:
        return cmd.CreateStream(
            now_ms=now_ms,
            name=name,
            arn=arns.regional("kinesis", "us-east-1", "000000000000", f"stream/{name}"),
            shard_count=rng.randint(1, 4),
            mode=rng.choice((StreamMode.PROVISIONED, StreamMode.ON_DEMAND)),
            retention_hours=24,
            max_record_size_kib=1024,
            tags=(),
            creating_ms=rng.choice((0, 50)),
            shard_count_per_account_max=64,
            on_demand_streams_max=2,
            replication_factor=rng.randint(1, 3),
        )
    if kind == 2:
        return cmd.AddTags(now_ms=now_ms, name=name, tags=((f"k{rng.randrange(3)}", "v"),))
    if kind == 3:
        return cmd.ChangeRetention(
            now_ms=now_ms, name=name, retention_hours=rng.choice((24, 48)), increase=True
        )
    if kind == 4:
        return cmd.DeleteStream(now_ms=now_ms, name=name, deleting_ms=rng.choice((0, 100)))
    if kind == 5 and image.nodes:
        target = image.nodes[rng.choice(sorted(image.nodes))]
        return cmd.SetNodeState(
            now_ms=now_ms,
            node_id=target.node_id,
            state=rng.choice((NodeState.ACTIVE, NodeState.FENCED, NodeState.DRAINING)),
            expected_incarnation=target.incarnation,
        )
    if kind == 6 and stream is not None and stream.shards:
        shard = rng.choice(stream.shards)
        replicas = shard.replicas
        leader = rng.choice(replicas) if replicas else None
        return cmd.SetShardLeader(
            now_ms=now_ms,
            stream_uid=stream.uid,
            shard_index=shard.index,
            leader=leader,
            epoch=shard.epoch + 1,
            expected_epoch=shard.epoch,
            replicas=replicas,
        )
    if kind == 7 and stream is not None:
        return cmd.ForgetStream(now_ms=now_ms, uid=StreamUid(stream.uid))
    if kind == 8 and stream is not None and stream.shards:
        shard = rng.choice(stream.shards)
        if rng.random() < 0.5:
            return cmd.BeginReshard(
                now_ms=now_ms,
                name=name,
                kind=ReshardKind.SPLIT,
                shard_index=ShardIndex(shard.index),
                new_starting_hash_key=(shard.hash_key_start + shard.hash_key_end) // 2 + 1,
                shard_count_per_account_max=64,
            )
        return cmd.BeginReshard(
            now_ms=now_ms,
            name=name,
            kind=ReshardKind.UNIFORM_SCALING,
            target_shard_count=rng.randint(1, 6),
            shard_count_per_account_max=64,
        )
    if kind == 9 and stream is not None and stream.reshard is not None:
        return cmd.CompleteReshard(
            now_ms=now_ms,
            stream_uid=stream.uid,
            end_offsets=tuple((index, Offset(0)) for index in stream.reshard.sealed),
            updating_ms=0,
        )
    return cmd.SetEnhancedMonitoring(
        now_ms=now_ms, name=name, metrics=("IncomingBytes",), enable=rng.random() < 0.5
    )


def run_metadata_seed(
    seed: int,
    *,
    entries: int = 200,
    voters: int = 3,
    restore: Callable[[dict[str, Any]], MetadataImage] = image_from_document,
) -> MetadataSimResult:
    """One run: a committed log of `entries` commands applied by `voters` voters, with
    snapshots, restarts and wiped disks (module docstring). `restore` reads a snapshot back
    (the codec's; tests pass a broken one to see the check fail)."""
    rng = random.Random(seed)
    log: list[bytes] = []  # the committed log, encoded as it travels
    proposer = MetadataImage()
    for index in range(entries):
        try:
            command = _command(rng, proposer, now_ms=1_000 + index * 10)
        except (TypeError, ValueError):
            continue  # a command this generator could not build against this image
        log.append(cmd.encode_command(command))
        proposer = apply(proposer, command).image
    group = [_Voter() for _ in range(voters)]
    seen: dict[int, MetadataImage] = {}  # applied commands -> the image every voter must have
    events = 0
    while any(v.applied < len(log) for v in group) and events < 50 * len(log):
        events += 1
        voter = group[rng.randrange(voters)]
        action = rng.random()
        rebuilt = False
        if action < 0.80 and voter.applied < len(log):
            voter.image = apply(voter.image, cmd.decode_command(log[voter.applied])).image
            voter.applied += 1
        elif action < 0.90:
            voter.snapshot = (voter.applied, voter.image)
            continue
        elif action < 0.97:
            _restart(voter, log, restore)  # a crash: snapshot plus journal, replayed
            rebuilt = True
        else:
            _wipe_and_install(voter, group, rng, restore)  # a lost disk: a peer's snapshot
            rebuilt = True
        image = voter.image
        # Compare every image rebuilt from a snapshot, and the others at every CHECK_EVERY-th
        # count (a divergence persists, so it shows there). Images compare by value (frozen
        # dataclasses): every field, as the snapshot codec's canonical document would.
        if not rebuilt and image.applied_commands % CHECK_EVERY:
            continue
        expected = seen.setdefault(image.applied_commands, image)
        if image != expected:
            return MetadataSimResult(
                seed=seed,
                entries=len(log),
                events=events,
                violation=(
                    f"after {image.applied_commands} applied commands a voter's image differs "
                    f"from another's (event {events})"
                ),
            )
    return MetadataSimResult(seed=seed, entries=len(log), events=events, violation=None)


def _restart(
    voter: _Voter, log: list[bytes], restore: Callable[[dict[str, Any]], MetadataImage]
) -> None:
    applied = voter.applied
    if voter.snapshot is None:
        voter.image, voter.applied = MetadataImage(), 0
    else:
        voter.applied, snapshot = voter.snapshot
        voter.image = restore(image_to_document(snapshot))
    while voter.applied < applied:  # the journal past the snapshot, re-applied
        voter.image = apply(voter.image, cmd.decode_command(log[voter.applied])).image
        voter.applied += 1


def _wipe_and_install(
    voter: _Voter,
    group: list[_Voter],
    rng: random.Random,
    restore: Callable[[dict[str, Any]], MetadataImage],
) -> None:
    source = group[rng.randrange(len(group))]
    voter.applied = source.applied
    voter.image = restore(image_to_document(source.image))
    voter.snapshot = None
