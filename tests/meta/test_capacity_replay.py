"""Determinism of the capacity and limits commands (issue 6): every replica applies the same
log, so the same commands must give byte-identical images in any process.

Method: a seeded mix of every new command (load reports from three leaders with heavy keys,
scaling events, automatic splits and their completion, stream limits, account settings and
limits, mode switches, leader changes, a deleted stream) is encoded and decoded (as a follower
reads the log), applied, and the image encoded after every step. The digest of those bytes is
computed in two fresh interpreters with different string-hash seeds, so set or dict order that
depended on hashing would show as different bytes; the image must also survive its codec, and
the tables must stay bounded however long the log runs."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

from broker.meta.capacity_table import EVENTS_PER_STREAM_MAX, ReportedLoad, ScalingEvent
from broker.meta.capacity_table import ScalingEventKind as Kind
from broker.meta.commands import (
    BeginReshard,
    Command,
    CompleteReshard,
    DeleteStream,
    RecordScalingEvent,
    ReportShardLoads,
    SetShardLeader,
    UpdateAccountLimits,
    UpdateAccountSettings,
    UpdateStreamLimits,
    UpdateStreamMode,
    decode_command,
    encode_command,
)
from broker.meta.image import MetadataImage, ReshardKind, ShardState, StreamMode
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import apply
from broker.streams.throttling import StreamLimits
from broker.types import NodeId, Offset, ShardIndex
from tests.meta.factories import create_stream, init_cluster, nodes_image

NODES = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
KEYS = ("ü-user", "order-7", "k", "日本", "x" * 40, "a b")


def _next_command(image: MetadataImage, rng: random.Random, now_ms: int) -> Command:
    """One command drawn from the mix, valid or not against `image` (refusals count too)."""
    live = [s for s in image.streams.values() if not s.is_gone(now_ms=now_ms)]
    stream = rng.choice(live) if live else None
    roll = rng.random()
    if stream is None or roll < 0.45:
        node = rng.choice(NODES)
        loads = []
        for meta in live:
            for shard in meta.open_shards():
                if shard.leader != node or rng.random() < 0.3:
                    continue
                records = rng.choice((0, rng.randrange(1, 100_000)))
                keys = rng.sample(KEYS, rng.randrange(0, 4)) if records else []
                loads.append(
                    ReportedLoad(
                        stream_uid=meta.uid,
                        shard_index=shard.index,
                        node_id=node,
                        epoch=shard.epoch - rng.choice((0, 0, 0, 1)),  # now and then stale
                        reported_ms=now_ms,
                        span_ms=rng.randrange(1_000, 60_001),
                        records=records,
                        size_bytes=records * rng.randrange(1, 2_000),
                        bytes_bound=rng.random() < 0.5,
                        split_at_ppm=rng.choice((None, rng.randrange(0, 1_000_001))),
                        hot_key=rng.choice((None, *keys)) if keys else None,
                        hot_key_share_ppm=rng.randrange(0, 1_000_001),
                        heavy_keys=tuple(
                            (key, 100 - i, 3, 10_000 - i, 30) for i, key in enumerate(keys)
                        ),
                    )
                )
        return ReportShardLoads(now_ms=now_ms, node_id=node, loads=tuple(loads))
    if roll < 0.6:
        return RecordScalingEvent(
            now_ms=now_ms,
            stream_uid=stream.uid,
            event=ScalingEvent(
                time_ms=now_ms,
                kind=rng.choice(list(Kind)),
                shard_ids=(f"shardId-{rng.randrange(8):012d}",),
                reason=f"{rng.random():.3f} of one shard, ünïcode",
            ),
        )
    if roll < 0.7:
        if stream.reshard is not None:
            return CompleteReshard(
                now_ms=now_ms,
                stream_uid=stream.uid,
                end_offsets=tuple((index, Offset(0)) for index in stream.reshard.sealed),
                updating_ms=0,
            )
        shard = rng.choice(stream.open_shards())
        return BeginReshard(
            now_ms=now_ms,
            name=stream.name,
            kind=ReshardKind.SPLIT,
            shard_index=shard.index,
            new_starting_hash_key=(shard.hash_key_start + shard.hash_key_end) // 2,
            shard_count_per_account_max=12,
            automatic_reason=rng.choice((None, "hot for 2m 00s")),
        )
    if roll < 0.78:
        shard = rng.choice(stream.open_shards())
        if shard.state is not ShardState.OPEN:
            return UpdateAccountSettings(now_ms=now_ms, commitment_enabled=rng.random() < 0.5)
        leader = rng.choice([n for n in shard.replicas if n != shard.leader] or [shard.leader])
        return SetShardLeader(
            now_ms=now_ms,
            stream_uid=stream.uid,
            shard_index=ShardIndex(shard.index),
            leader=leader,
            epoch=shard.epoch + 1,
            expected_epoch=shard.epoch,
            replicas=shard.replicas,
        )
    if roll < 0.84:
        return UpdateStreamLimits(
            now_ms=now_ms,
            name=stream.name,
            changes=StreamLimits(write_records_per_second=rng.randrange(0, 5_000)),
        )
    if roll < 0.9:
        return UpdateAccountLimits(
            now_ms=now_ms,
            shard_limit=rng.choice((None, rng.randrange(0, 20))),
            reset=rng.choice(((), ("on_demand_stream_limit",))),
        )
    if roll < 0.95:
        return UpdateStreamMode(
            now_ms=now_ms,
            name=stream.name,
            mode=rng.choice(list(StreamMode)),
            updating_ms=0,
            on_demand_streams_max=2,
        )
    if roll < 0.97:
        return DeleteStream(now_ms=now_ms, name=stream.name, deleting_ms=0)
    return UpdateAccountSettings(now_ms=now_ms, commitment_enabled=rng.random() < 0.5)


def replay(seed: int = 6, steps: int = 600) -> tuple[str, MetadataImage, int]:
    """The digest of every image along a seeded run, the last image, and the most load
    entries any image held (each checked against its open shards on the way)."""
    rng = random.Random(seed)
    image = apply(nodes_image(3, apply(MetadataImage(), init_cluster()).image), init_cluster())
    current = image.image
    for name, mode in (("s1", StreamMode.PROVISIONED), ("s2", StreamMode.ON_DEMAND)):
        created = apply(
            current,
            create_stream(name, shard_count=3, mode=mode, creating_ms=0, replication_factor=3),
        )
        assert created.error is None, created.error
        current = created.image
    digest = hashlib.sha256()
    peak_loads = 0
    now_ms = 1_000
    for step in range(steps):
        now_ms += rng.randrange(0, 4 * 3_600_000 if step % 50 == 0 else 5_000)
        if step % 97 == 0:  # a recreated name: a new incarnation with a new uid
            current = apply(current, create_stream("s1", now_ms=now_ms, creating_ms=0)).image
        command = _next_command(current, rng, now_ms)
        command = decode_command(encode_command(command))  # what a follower reads
        current = apply(current, command).image
        digest.update(encode_image(current))
        open_shards = sum(len(s.open_shards()) for s in current.streams.values())
        assert len(current.capacity.loads) <= open_shards
        peak_loads = max(peak_loads, len(current.capacity.loads))
    return digest.hexdigest(), current, peak_loads


def test_the_run_exercises_the_tables_and_keeps_them_bounded() -> None:
    _, image, peak_loads = replay()
    table = image.capacity
    assert peak_loads >= 3 and table.scaling_logs and table.reporters
    assert len(table.reporters) <= len(image.nodes)
    assert all(len(log.events) <= EVENTS_PER_STREAM_MAX for log in table.scaling_logs)
    assert len(table.scaling_logs) <= len(image.streams)
    assert image.account.billing_commitment.started_ms is not None
    assert decode_image(encode_image(image)) == image


def test_a_replay_gives_byte_identical_images_whatever_the_hash_seed() -> None:
    script = "from tests.meta.test_capacity_replay import replay; print(replay()[0])"
    digests = set()
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        digests.add(done.stdout.strip())
    assert digests == {replay()[0]}
