"""What a node's ReportShardLoads costs the metadata log at 1,000 busy shards.

Method: 5 streams of 200 shards led by one node, each shard written at ~600 records/s of
~1 KiB (60 % of a shard's capacity) for a whole load window through the real recorder, then
one report encoded as the Raft log entry it becomes. Three key mixes: every record its own
partition key (the common UUID-key case), a zipf-like mix (a few keys carry most of each
shard), and every shard one hot key. `pytest -s` prints the figures; the bounds fail if a
change makes the entry large again (it was ~1.2 MB before the heavy-key filter)."""

from __future__ import annotations

import random

import pytest

from broker.clock import ManualClock
from broker.log.records import NewRecords
from broker.meta.capacity_table import REPORT_KEYS_MAX
from broker.meta.commands import ReportShardLoads, encode_command
from broker.meta.image import MetadataImage, StreamMeta
from broker.meta.state_machine import apply
from broker.service.shard_load import ShardLoadRecorder
from broker.streams.hot_keys import LoadTrackerConfig
from broker.types import NodeId
from tests.meta.factories import create_stream, nodes_image

N1 = NodeId("n1")
STREAMS = 5
SHARDS_PER_STREAM = 200
RECORDS_PER_SHARD = 600  # one batch per window, 6 windows: 600 records/s over a 6 s span
RECORD_BYTES = 1_000


def _image() -> MetadataImage:
    image = nodes_image(1)
    for number in range(STREAMS):
        applied = apply(
            image,
            create_stream(
                f"s{number}",
                shard_count=SHARDS_PER_STREAM,
                shard_count_per_account_max=STREAMS * SHARDS_PER_STREAM,
            ),
        )
        assert applied.error is None, applied.error
        image = applied.image
    return image


def _keys(mix: str, rng: random.Random, count: int) -> list[str]:
    if mix == "unique":
        return [f"{rng.getrandbits(128):032x}" for _ in range(count)]
    if mix == "zipf":
        weights = [1 / (rank + 1) for rank in range(200)]
        return [f"user-{k:04d}" for k in rng.choices(range(200), weights=weights, k=count)]
    assert mix == "one-hot"
    return ["the-hot-key"] * (count * 9 // 10) + [f"k{i}" for i in range(count // 10)]


def _busy_report(mix: str, *, steady_reports: list[int] | None = None) -> ReportShardLoads:
    rng = random.Random(7)
    image = _image()
    clock = ManualClock(wall_ms=1_800_000_000_000, monotonic_ms=0)
    config = LoadTrackerConfig(window_ms=1_000, window_count=6)
    recorder = ShardLoadRecorder(node_id=N1, clock=clock, image=lambda: image, config=config)
    streams: list[StreamMeta] = list(image.streams.values())
    sizes = [RECORD_BYTES] * RECORDS_PER_SHARD
    # One draw of keys and of offsets into a shard per window serves every shard (uniform
    # streams: shards differ in width by at most one; each shard's recorder state is its own).
    width = min(shard.hash_key_end - shard.hash_key_start for s in streams for shard in s.shards)
    for _ in range(config.window_count):
        keys = _keys(mix, rng, RECORDS_PER_SHARD)
        offsets = [rng.randint(0, width) for _ in keys]
        for stream in streams:
            for shard in stream.shards:
                hash_keys = [shard.hash_key_start + offset for offset in offsets]
                recorder.written(shard.uid, _records(keys, sizes, hash_keys))
        clock.advance(ms=config.window_ms)
    command = recorder.report()
    assert command is not None
    assert len(command.loads) == STREAMS * SHARDS_PER_STREAM
    if steady_reports is not None:
        image = _applied(image, command)
        recorder.reported(command)
        for period in range(6):  # the same load keeps coming, reported every 5 s for 30 s
            for _ in range(5):
                keys = _keys(mix, rng, RECORDS_PER_SHARD)
                for stream in streams:
                    for shard in stream.shards:
                        hash_keys = [shard.hash_key_start + 2 + period] * len(keys)
                        recorder.written(shard.uid, _records(keys, sizes, hash_keys))
                clock.advance(ms=config.window_ms)
            steady = recorder.report()
            steady_reports.append(0 if steady is None else len(encode_command(steady)))
            if steady is not None:
                image = _applied(image, steady)
                recorder.reported(steady)
    return command


def _applied(image: MetadataImage, command: ReportShardLoads) -> MetadataImage:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    return applied.image


def _records(keys: list[str], sizes: list[int], hash_keys: list[int]) -> NewRecords:
    """What the recorder reads of an append: keys, sizes and hash keys (no data needed)."""
    return NewRecords(keys, map(str.encode, keys), [b""] * len(keys), sizes, hash_keys)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mix", "bytes_max"),
    [("unique", 300_000), ("zipf", 800_000), ("one-hot", 400_000)],
)
def test_a_report_of_1000_busy_shards_stays_small(mix: str, bytes_max: int) -> None:
    command = _busy_report(mix)
    size = len(encode_command(command))
    keys = sum(len(entry.top_keys) for entry in command.loads)
    print(f"\n{mix}: {size:,} bytes for {len(command.loads)} shards, {keys} keys")
    assert size <= bytes_max
    assert all(len(entry.top_keys) <= REPORT_KEYS_MAX for entry in command.loads)


@pytest.mark.slow
def test_steady_load_costs_one_small_confirmation_per_refresh() -> None:
    sizes: list[int] = []
    _busy_report("zipf", steady_reports=sizes)
    print(f"\nsteady zipf, one report every 5 s: {sizes} bytes")
    # Nothing moves by more than a tenth: no entry is sent again, and the recorder's default
    # refresh (15 s) confirms every entry with one empty report.
    assert all(size <= 200 for size in sizes)
    assert sum(1 for size in sizes if size) == 2
