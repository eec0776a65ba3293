"""The console's pure parts: payload views, the streams page's search and paging, the lineage
drawing, actions as API calls, sessions."""

from __future__ import annotations

import dataclasses

from broker.client.kpl import UserRecord, aggregate
from broker.console import actions, payloads, sessions, views
from broker.console.peers import DiskUse, NodeStats, cluster_read_rates, cluster_shard_rates
from broker.console.rates import SAMPLE_INTERVAL_MS, SAMPLES_KEPT, CounterRates, RateHistory
from broker.consumers.leases import Checkpoint, Lease, LeaseTable
from broker.meta.capacity_table import CapacityTable, ReportedLoad
from broker.meta.image import MetadataImage, ShardMeta, ShardState, StreamMeta, StreamMode
from broker.types import NodeId, ShardIndex, ShardUid, StreamName, StreamUid

TOP = 2**128 - 1


def _shard(
    index: int,
    start: int,
    end: int,
    *,
    state: ShardState = ShardState.OPEN,
    parent: int | None = None,
    adjacent: int | None = None,
) -> ShardMeta:
    return ShardMeta(
        index=ShardIndex(index),
        uid=ShardUid(100 + index),
        hash_key_start=start,
        hash_key_end=end,
        parent_index=None if parent is None else ShardIndex(parent),
        adjacent_parent_index=None if adjacent is None else ShardIndex(adjacent),
        created_ms=0,
        state=state,
    )


def _stream(name: str, uid: int, shards: tuple[ShardMeta, ...]) -> StreamMeta:
    return StreamMeta(
        name=StreamName(name),
        uid=StreamUid(uid),
        arn=f"arn:aws:kinesis:us-east-1:0:stream/{name}",
        created_ms=0,
        mode=StreamMode.PROVISIONED,
        retention_hours=24,
        shards=shards,
        next_shard_index=ShardIndex(len(shards)),
        transient_status=None,
    )


def test_payload_views() -> None:
    assert payloads.render(b"h\xc3\xa9", "text") == ("text", "hé", None)
    assert payloads.render(b'{"a":[1,2]}', "json") == (
        "json",
        '{\n  "a": [\n    1,\n    2\n  ]\n}',
        None,
    )
    assert payloads.render(b"<x>", "json") == ("text", "<x>", "not JSON; shown as text")
    assert payloads.render(bytes(range(18)), "hex")[1].splitlines()[1] == "10 11"
    assert payloads.render(b"\xff\x00", "base64")[1] == "/wA="
    _view, body, note = payloads.render(b"a" * (payloads.PREVIEW_BYTES_MAX + 5), "text")
    assert len(body) == payloads.PREVIEW_BYTES_MAX and note is not None and "first" in note


def test_kpl_aggregates_are_expanded() -> None:
    blob = aggregate(
        [UserRecord(partition_key="a", data=b"one"), UserRecord(partition_key="b", data=b"two")]
    )
    shown = payloads.shown_records(
        [{"SequenceNumber": "49", "PartitionKey": "agg", "Data": blob.data}], "text"
    )
    assert [(r.partition_key, r.body, r.sub_sequence_number) for r in shown] == [
        ("a", "one", 0),
        ("b", "two", 1),
    ]


def test_stream_page_searches_pages_and_hides_internal_streams() -> None:
    streams = {
        StreamName(n): _stream(n, i + 1, (_shard(0, 0, TOP),))
        for i, n in enumerate(["alpha", "beta", "alphabet", "__shoal.leases", "gamma"])
    }
    image = MetadataImage(streams=streams)
    page = views.stream_page(image, query="ALPHA", page=1, page_size=1, now_ms=0)
    assert (page.total, page.page_count, [r.name for r in page.rows]) == (2, 2, ["alpha"])
    last = views.stream_page(image, query="", page=99, page_size=2, now_ms=0)
    assert last.page == 2 and [r.name for r in last.rows] == ["beta", "gamma"]
    assert "__shoal.leases" not in [s.name for s in views.visible_streams(image, now_ms=0)]


def test_lineage_generations_after_a_split_and_a_merge() -> None:
    half = 2**127
    shards = (
        _shard(0, 0, TOP, state=ShardState.CLOSED),
        _shard(1, 0, half - 1, state=ShardState.CLOSED, parent=0),
        _shard(2, half, TOP, state=ShardState.CLOSED, parent=0),
        _shard(3, 0, TOP, parent=1, adjacent=2),
    )
    view = views.stream_view(MetadataImage(), _stream("s", 1, shards), now_ms=0)
    assert [[s.shard_id[-1] for s in g] for g in view.generations] == [["0"], ["1", "2"], ["3"]]
    assert view.generations[1][1].left_percent == 50.0
    assert view.generations[0][0].children == ("shardId-000000000001", "shardId-000000000002")
    assert view.open_shards[0].parents == ("shardId-000000000001", "shardId-000000000002")


def test_hot_keys_from_the_leaders_load_reports() -> None:
    stream = _stream("s", 7, (_shard(0, 0, 2**127 - 1), _shard(1, 2**127, TOP)))
    loads = (
        ReportedLoad(
            stream_uid=StreamUid(7),
            shard_index=ShardIndex(1),
            node_id=NodeId("n"),
            epoch=1,
            reported_ms=0,
            span_ms=10_000,
            records=1_000,
            size_bytes=100_000,
            heavy_keys=(("user-<1>", 600, 10, 60_000, 1_000), ("user-2", 100, 10, 10_000, 1_000)),
        ),
    )
    view = views.stream_view(MetadataImage(capacity=CapacityTable(loads=loads)), stream, now_ms=0)
    assert [
        (k.partition_key, k.shard_id, k.records_per_second, k.share_percent) for k in view.hot_keys
    ] == [
        ("user-<1>", "shardId-000000000001", 60.0, 60.0),
        ("user-2", "shardId-000000000001", 10.0, 10.0),
    ]
    assert view.open_shards[1].records_per_second == 100.0


def test_actions_are_the_api_calls() -> None:
    stream = _stream("s", 1, (_shard(0, 0, TOP),))
    plan = actions.retention(stream, {"retention_hours": "12"})
    assert plan.operation == "DecreaseStreamRetentionPeriod" and plan.destructive
    plan = actions.shard_count(stream, {"target_shard_count": "3"})
    assert plan.request == {
        "StreamName": "s",
        "TargetShardCount": 3,
        "ScalingType": "UNIFORM_SCALING",
    }
    created = actions.create(None, {"name": "n", "mode": "ON_DEMAND"})
    assert created.request == {"StreamName": "n", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}


def test_sessions_expire_and_are_bound_to_the_cluster() -> None:
    keys = {"AK": "secret"}
    token = sessions.sign_in(keys.get, "AK", "secret", cluster_secret=b"c1", now_ms=0)
    assert token is not None
    assert sessions.sign_in(keys.get, "AK", "wrong", cluster_secret=b"c1", now_ms=0) is None
    assert sessions.session_key(token, keys.get, cluster_secret=b"c1", now_ms=1) == "AK"
    assert sessions.session_key(token, keys.get, cluster_secret=b"c2", now_ms=1) is None
    late = sessions.SESSION_LIFETIME_MS + 1
    assert sessions.session_key(token, keys.get, cluster_secret=b"c1", now_ms=late) is None
    assert sessions.session_key(token, lambda key: None, cluster_secret=b"c1", now_ms=1) is None
    forged = token.rsplit(".", 1)[0] + "." + "0" * 64
    assert sessions.session_key(forged, keys.get, cluster_secret=b"c1", now_ms=1) is None
    assert dataclasses.is_dataclass(views.StreamRow)


def test_leases_of_the_stream_are_listed_by_application_and_shard() -> None:
    table = LeaseTable().with_leases(
        [
            Lease(
                application="billing",
                stream_name="s",
                lease_key="shardId-000000000001",
                lease_owner="worker-2",
                lease_counter=7,
                checkpoint=Checkpoint("4959033827149025660855969253836157109592"),
            ),
            Lease(
                application="audit",
                stream_name="s",
                lease_key="shardId-000000000000",
                lease_owner=None,
                lease_counter=0,
                checkpoint=Checkpoint("TRIM_HORIZON"),
            ),
            Lease(
                application="audit",
                stream_name="other",
                lease_key="shardId-000000000000",
                lease_owner="w",
                lease_counter=1,
                checkpoint=Checkpoint("LATEST"),
            ),
        ]
    )
    image = MetadataImage(leases=table)
    view = views.stream_view(image, _stream("s", 1, (_shard(0, 0, TOP),)), now_ms=0)
    assert [
        (lease.application, lease.shard_id, lease.owner, lease.checkpoint) for lease in view.leases
    ] == [
        ("audit", "shardId-000000000000", None, "TRIM_HORIZON"),
        (
            "billing",
            "shardId-000000000001",
            "worker-2",
            "4959033827149025660855969253836157109592",
        ),
    ]


def test_rate_history_keeps_recent_samples_of_existing_streams() -> None:
    history = RateHistory()
    assert history.due(0)
    for step in range(SAMPLES_KEPT + 5):
        history.sample(step * SAMPLE_INTERVAL_MS, {"a": (float(step), 10.0), "b": (0.0, 0.0)})
    series = history.series("a")
    assert len(series) == SAMPLES_KEPT and series[-1].records_per_second == SAMPLES_KEPT + 4
    assert not history.due((SAMPLES_KEPT + 4) * SAMPLE_INTERVAL_MS + 1)
    history.sample(10**9, {"b": (1.0, 2.0)})  # "a" was deleted
    assert history.series("a") == () and len(history.series("b")) == SAMPLES_KEPT


def test_read_rates_come_from_two_readings_of_the_outgoing_counters() -> None:
    reads = CounterRates()
    reads.sample(0, {"a": (100.0, 1000.0)})
    assert reads.rates() == {}  # one reading gives no rate yet
    reads.sample(5_000, {"a": (600.0, 6000.0), "b": (50.0, 80.0)})
    assert reads.rates() == {"a": (100.0, 1000.0)}  # "b" appeared: a rate from the next one
    reads.sample(10_000, {"b": (100.0, 180.0)})
    assert reads.rates() == {"b": (10.0, 20.0)}


def test_node_statistics_round_trip_and_sum_over_the_cluster() -> None:
    one = NodeStats(node_id="node-1", disk=DiskUse("/data", 25, 100), reads={"a": (2.0, 20.0)})
    two = NodeStats(
        node_id="node-2",
        disk=None,
        reads={"a": (1.0, 5.0), "b": (7.0, 70.0)},
        shards={"a/shardId-000000000000": (1.0, 5.0, 0.5, 2.0)},
    )
    three = NodeStats(
        node_id="node-3", disk=None, shards={"a/shardId-000000000000": (2.0, 5.0, 0.0, 1.0)}
    )
    assert NodeStats.from_json(one.to_json()) == one
    assert NodeStats.from_json(two.to_json()) == two
    assert one.disk is not None and one.disk.percent == 25.0
    assert cluster_read_rates([one, two], "a") == (3.0, 25.0)
    assert two.read_records_per_second == 8.0
    assert cluster_shard_rates([one, two, three], "a") == {
        "shardId-000000000000": (3.0, 10.0, 0.5, 3.0)
    }
    assert cluster_shard_rates([one, two, three], "b") == {}


def test_peer_tokens_need_the_cluster_secret_and_a_recent_minute() -> None:
    token = sessions.peer_token(cluster_secret=b"s" * 32, now_ms=600_000)
    assert sessions.peer_token_valid(token, cluster_secret=b"s" * 32, now_ms=600_000)
    assert sessions.peer_token_valid(token, cluster_secret=b"s" * 32, now_ms=659_999)
    assert not sessions.peer_token_valid(token, cluster_secret=b"t" * 32, now_ms=600_000)
    assert not sessions.peer_token_valid(token, cluster_secret=b"s" * 32, now_ms=800_000)
    assert not sessions.peer_token_valid("10.abc", cluster_secret=b"s" * 32, now_ms=600_000)
    assert not sessions.peer_token_valid("", cluster_secret=b"s" * 32, now_ms=600_000)
