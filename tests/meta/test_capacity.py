"""The capacity table's rules (meta/capacity.py) through `state_machine.apply`: which load
reports count, what "no entry" means, the bounded scaling log, and automatic reshards."""

from __future__ import annotations

import dataclasses

import pytest

from broker import limits
from broker.errors import ErrorCode
from broker.meta import capacity
from broker.meta.capacity_table import (
    EVENTS_PER_STREAM_MAX,
    REPORT_KEYS_MAX,
    ReportedLoad,
    ScalingEvent,
    ScalingEventKind,
    split_hash_key,
    split_position_ppm,
)
from broker.meta.commands import (
    BeginReshard,
    Command,
    DeleteStream,
    ForgetStream,
    RecordScalingEvent,
    ReportShardLoads,
    SetNodeState,
    SetShardLeader,
    UpdateStreamMode,
)
from broker.meta.image import MetadataImage, NodeState, ReshardKind, StreamMode
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import apply
from broker.streams.hot_keys import KeyLoad, ShardLoad
from broker.types import NodeId, ShardIndex, StreamName, StreamUid
from tests.meta.factories import create_stream, nodes_image

NOW = 1_000_000
N1, N2 = NodeId("n1"), NodeId("n2")


def _ok(image: MetadataImage, command: Command) -> tuple[MetadataImage, object]:
    applied = apply(image, command)
    assert applied.error is None, applied.error
    return applied.image, applied.result


def _stream_image(*, mode: StreamMode = StreamMode.PROVISIONED, nodes: int = 1) -> MetadataImage:
    image, _ = _ok(nodes_image(nodes), create_stream("s1", mode=mode, shard_count=2))
    return image


def _load(
    shard: int,
    *,
    node: NodeId = N1,
    epoch: int = 1,
    records: int = 600,
    reported_ms: int = NOW,
    hot_key: str | None = None,
) -> ReportedLoad:
    return ReportedLoad(
        stream_uid=StreamUid(1),
        shard_index=ShardIndex(shard),
        node_id=node,
        epoch=epoch,
        reported_ms=reported_ms,
        span_ms=60_000,
        records=records,
        size_bytes=records * 100,
        hot_key=hot_key,
        hot_key_share_ppm=950_000 if hot_key else 0,
        heavy_keys=(("k", records, 0, 1, 0),) if records else (),
    )


def _report(
    image: MetadataImage, *loads: ReportedLoad, node: NodeId = N1, now_ms: int = NOW
) -> tuple[MetadataImage, int]:
    image, accepted = _ok(image, ReportShardLoads(now_ms=now_ms, node_id=node, loads=loads))
    assert isinstance(accepted, int)
    return image, accepted


def test_a_leader_report_is_kept_and_read_back_as_rates() -> None:
    image, accepted = _report(_stream_image(), _load(0), _load(1, records=60))
    assert accepted == 2
    stream = image.streams[StreamName("s1")]
    loads = capacity.loads_for_stream(image, stream, now_ms=NOW, stale_ms=30_000)
    assert loads[ShardIndex(0)].records_per_second == pytest.approx(10.0)
    assert loads[ShardIndex(1)].records_per_second == pytest.approx(1.0)
    assert loads[ShardIndex(0)].top_keys[0].partition_key == "k"


def test_reports_from_a_non_leader_or_an_old_epoch_are_ignored() -> None:
    image = _stream_image(nodes=2)
    stream = image.streams[StreamName("s1")]
    leader = stream.shards[0].leader
    assert leader is not None
    other = N2 if leader == N1 else N1
    image, accepted = _report(image, _load(0, node=other), node=other)
    assert accepted == 0
    image, accepted = _report(image, _load(0, node=leader, epoch=7), node=leader)
    assert accepted == 0
    # An entry naming another node than the proposer is not taken either.
    image, accepted = _report(image, _load(0, node=leader), node=other)
    assert accepted == 0
    assert image.capacity.loads == ()


def test_an_idle_entry_removes_the_shard_and_no_entry_means_idle() -> None:
    image, _ = _report(_stream_image(), _load(0), _load(1))
    image, accepted = _report(image, _load(0, records=0))
    assert accepted == 1
    assert [e.shard_index for e in image.capacity.loads] == [1]
    stream = image.streams[StreamName("s1")]
    loads = capacity.loads_for_stream(image, stream, now_ms=NOW, stale_ms=30_000)
    assert loads[ShardIndex(0)] is capacity.IDLE_LOAD
    assert loads[ShardIndex(1)].records_per_second > 0


def test_a_stale_report_is_unknown_and_so_is_a_shard_whose_leader_is_not_active() -> None:
    old = NOW - 60_000
    image, _ = _report(_stream_image(), _load(0, reported_ms=old), now_ms=old)
    stream = image.streams[StreamName("s1")]
    loads = capacity.loads_for_stream(image, stream, now_ms=NOW, stale_ms=30_000)
    assert ShardIndex(0) not in loads  # neither hot nor cold
    # An empty report of its node since confirms the entry (delta reporting).
    confirmed, accepted = _report(image, now_ms=NOW - 10_000)
    assert accepted == 0
    assert ShardIndex(0) in capacity.loads_for_stream(
        confirmed, stream, now_ms=NOW, stale_ms=30_000
    )
    # An unknown node is not remembered (the reporters stay bounded by the nodes); a late
    # (older) report never rewinds a node's confirmation.
    stranger, _ = _report(confirmed, node=NodeId("n9"))
    assert stranger.capacity.reporters == confirmed.capacity.reporters
    rewound, _ = _report(confirmed, now_ms=old)
    assert rewound.capacity.reporters == confirmed.capacity.reporters
    assert loads[ShardIndex(1)] is capacity.IDLE_LOAD
    fenced, _ = _ok(
        image,
        SetNodeState(now_ms=NOW, node_id=N1, state=NodeState.FENCED, expected_incarnation=1),
    )
    assert capacity.loads_for_stream(fenced, stream, now_ms=NOW, stale_ms=30_000) == {}


def _lead_shard_0(image: MetadataImage, leader: NodeId) -> MetadataImage:
    """Stream s1's shard 0 in a new epoch led by `leader` (added to its replicas if needed)."""
    shard = image.streams[StreamName("s1")].shards[0]
    replicas = shard.replicas if leader in shard.replicas else (leader, *shard.replicas)
    image, _ = _ok(
        image,
        SetShardLeader(
            now_ms=NOW,
            stream_uid=StreamUid(1),
            shard_index=ShardIndex(0),
            leader=leader,
            epoch=shard.epoch + 1,
            expected_epoch=shard.epoch,
            replicas=replicas,
        ),
    )
    return image


def test_a_leader_change_makes_the_old_entry_stale_and_the_next_report_prunes_it() -> None:
    image, _ = _report(_stream_image(), _load(0), _load(1))
    image = _lead_shard_0(image, N1)  # the same node, a new epoch
    stream = image.streams[StreamName("s1")]
    loads = capacity.loads_for_stream(image, stream, now_ms=NOW, stale_ms=30_000)
    assert loads[ShardIndex(0)] is capacity.IDLE_LOAD  # the old epoch's report is not current
    image, _ = _report(image, _load(1))
    assert [e.shard_index for e in image.capacity.loads] == [1]


def test_a_shard_that_just_changed_leader_is_unknown_not_idle_until_the_new_one_reports() -> None:
    """The old leader's busy entry stops counting at the change; the new leader has not
    reported yet. Reading its silence as "idle" would start a cold spell on a busy shard."""
    image, _ = _report(_stream_image(nodes=2), _load(0), _load(1))
    image = _lead_shard_0(image, NodeId("n2"))
    stream = image.streams[StreamName("s1")]
    assert stream.shards[0].leader_since_ms == NOW
    loads = capacity.loads_for_stream(image, stream, now_ms=NOW + 29_999, stale_ms=30_000)
    assert ShardIndex(0) not in loads  # neither the old report nor "idle"
    assert ShardIndex(1) in loads
    later = capacity.loads_for_stream(image, stream, now_ms=NOW + 30_000, stale_ms=30_000)
    assert later[ShardIndex(0)] is capacity.IDLE_LOAD  # n2 had time to report, and did not


def test_the_scaling_log_keeps_the_newest_events_and_forgets_deleted_streams() -> None:
    image = _stream_image()
    for i in range(EVENTS_PER_STREAM_MAX + 5):
        image, _ = _ok(
            image,
            RecordScalingEvent(
                now_ms=NOW + i,
                stream_uid=StreamUid(1),
                event=ScalingEvent(
                    time_ms=NOW + i, kind=ScalingEventKind.HOT_KEY, shard_ids=(), reason=str(i)
                ),
            ),
        )
    events = capacity.scaling_events(image, image.streams[StreamName("s1")])
    assert len(events) == EVENTS_PER_STREAM_MAX
    assert events[0].reason == "5" and events[-1].reason == str(EVENTS_PER_STREAM_MAX + 4)
    assert decode_image(encode_image(image)) == image  # the table survives a snapshot

    image, _ = _ok(image, DeleteStream(now_ms=NOW, name="s1", deleting_ms=0))
    applied = apply(
        image,
        RecordScalingEvent(
            now_ms=NOW + 1,
            stream_uid=StreamUid(1),
            event=ScalingEvent(time_ms=NOW, kind=ScalingEventKind.REFUSED, shard_ids=(), reason=""),
        ),
    )
    assert applied.error is not None and applied.error.code is ErrorCode.RESOURCE_NOT_FOUND
    image, _ = _ok(image, create_stream("s1", now_ms=NOW + 2))
    image, _ = _ok(
        image,
        RecordScalingEvent(
            now_ms=NOW + 3,
            stream_uid=image.streams[StreamName("s1")].uid,
            event=ScalingEvent(
                time_ms=NOW, kind=ScalingEventKind.HOT_KEY, shard_ids=(), reason="new"
            ),
        ),
    )
    assert [log.stream_uid for log in image.capacity.scaling_logs] == [StreamUid(2)]


def _split(*, automatic_reason: str | None) -> BeginReshard:
    return BeginReshard(
        now_ms=NOW,
        name="s1",
        kind=ReshardKind.SPLIT,
        shard_index=ShardIndex(0),
        new_starting_hash_key=2**120,
        automatic_reason=automatic_reason,
    )


def test_automatic_reshards_only_on_demand_and_logged_in_the_same_command() -> None:
    on_demand = _stream_image(mode=StreamMode.ON_DEMAND)
    refused = apply(on_demand, _split(automatic_reason=None))  # a client's SplitShard
    assert refused.error is not None and refused.error.code is ErrorCode.VALIDATION
    image, sealed = _ok(on_demand, _split(automatic_reason="hot for 2 minutes"))
    assert sealed == (ShardIndex(0),)
    (event,) = capacity.scaling_events(image, image.streams[StreamName("s1")])
    assert event.kind is ScalingEventKind.SPLIT
    assert event.shard_ids == ("shardId-000000000000",)
    assert event.reason == "hot for 2 minutes"

    provisioned = _stream_image()
    refused = apply(provisioned, _split(automatic_reason="hot"))
    assert refused.error is not None and refused.error.code is ErrorCode.VALIDATION
    assert "no longer in ON_DEMAND" in refused.error.message
    switched, _ = _ok(
        on_demand,
        UpdateStreamMode(
            now_ms=NOW,
            name="s1",
            mode=StreamMode.PROVISIONED,
            updating_ms=0,
            on_demand_streams_max=10,
        ),
    )
    assert apply(switched, _split(automatic_reason="hot")).error is not None


def test_reports_for_a_sealing_shard_are_not_kept() -> None:
    image = _stream_image(mode=StreamMode.ON_DEMAND)
    image, _ = _report(image, _load(0), _load(1))
    image, _ = _ok(image, _split(automatic_reason="hot"))
    image, accepted = _report(image, _load(0), _load(1))
    assert accepted == 1
    assert [e.shard_index for e in image.capacity.loads] == [1]


def test_reported_load_keeps_totals_exact_and_bounds_keys() -> None:
    tracker_load = dataclasses.replace(
        capacity.IDLE_LOAD,
        span_ms=7_000,
        records_per_second=123 * 1000 / 7_000,
        bytes_per_second=98_765 * 1000 / 7_000,
        top_keys=tuple(
            KeyLoad(
                partition_key=str(i),
                records=20 - i,
                records_error=0,
                size_bytes=1,
                size_bytes_error=0,
            )
            for i in range(10)
        ),
        hot_key_share=0.5,
    )

    def entry_of(load: ShardLoad, keys_max: int = REPORT_KEYS_MAX) -> ReportedLoad:
        return capacity.reported_load(
            load,
            stream_uid=StreamUid(1),
            shard_index=ShardIndex(0),
            node_id=N1,
            epoch=1,
            reported_ms=NOW,
            hash_key_start=0,
            hash_key_end=limits.hash_key_max,
            keys_max=keys_max,
        )

    entry = entry_of(tracker_load, keys_max=3)
    assert (entry.records, entry.size_bytes, len(entry.top_keys)) == (123, 98_765, 3)
    light = dataclasses.replace(
        tracker_load,
        top_keys=(
            *(dataclasses.replace(k, records=6) for k in tracker_load.top_keys[:2]),
            dataclasses.replace(tracker_load.top_keys[2], records=7, records_error=2),
        ),
    )
    # 6 of 123 records is 4.9 %, under the 5 % a key needs; 7 - 2 surely carried is 4.1 %.
    assert entry_of(light).top_keys == ()
    assert entry.hot_key_share_ppm == 500_000
    whole = {"hash_key_start": 0, "hash_key_end": limits.hash_key_max}
    assert entry.to_shard_load(**whole).records_per_second == pytest.approx(123 / 7)


@pytest.mark.parametrize(
    ("start", "end"), [(0, limits.hash_key_max), (10, 13), (2**100, 2**101 - 1), (7, 1_000_006)]
)
def test_a_split_position_survives_quantization_within_a_millionth(start: int, end: int) -> None:
    for key in (start + 2, (start + end) // 2, end - 1, start + (end - start) // 3):
        ppm = split_position_ppm(key, start, end)
        back = split_hash_key(ppm, start, end)
        assert back is not None and start + 1 < back < end  # a valid NewStartingHashKey
        assert abs(back - key) <= max(2, (end + 1 - start) // 1_000_000 + 1)
    assert split_hash_key(500_000, 5, 7) is None  # SplitShard needs two keys on either side


def test_a_forgotten_stream_leaves_no_log_and_no_load_behind() -> None:
    """Without this, a cluster that creates and forgets streams and then records no event
    and no report keeps every forgotten stream's log (up to 100 events each) forever."""
    image, _ = _report(_stream_image(), _load(0))
    image, _ = _ok(
        image,
        RecordScalingEvent(
            now_ms=NOW,
            stream_uid=StreamUid(1),
            event=ScalingEvent(time_ms=NOW, kind=ScalingEventKind.HOT_KEY, shard_ids=(), reason=""),
        ),
    )
    image, _ = _ok(image, DeleteStream(now_ms=NOW, name="s1", deleting_ms=0))
    image, _ = _ok(image, ForgetStream(now_ms=NOW + 1, uid=StreamUid(1)))
    assert image.streams == {}
    assert image.capacity.scaling_logs == () and image.capacity.loads == ()
