"""broker/metrics/: every declared family renders, names pass promtool's lint, shard-level
series follow enhanced monitoring, and nodes in one process keep separate registries."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import metrics
from broker.metrics import FAMILIES, NodeMetrics, ReplicationView
from tests.deploy import samples
from tests.deploy.tools import run, tool

SHARD = "shardId-000000000000"


def scrape(node: NodeMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name (as PromQL spells it) -> [(labels, value)] of the plain samples."""
    body, content_type = node.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            result.setdefault(sample.name, []).append((sample.labels, sample.value))
    return result


def names(node: NodeMetrics) -> set[str]:
    return set(scrape(node))


def test_every_declared_family_renders(tmp_path: Path) -> None:
    node = samples.populated("shoal-0", leader=True, data_dir=tmp_path)
    rendered = names(node)
    for family in FAMILIES.values():
        expected = family.name + ("_count" if family.kind == "histogram" else "")
        assert expected in rendered, f"{family.name} was not rendered"


def test_nothing_is_rendered_that_is_not_declared(tmp_path: Path) -> None:
    node = samples.populated("shoal-0", leader=True, data_dir=tmp_path)
    declared = set(FAMILIES)
    for name in names(node):
        if name.startswith("process_"):
            continue
        base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        assert name in declared or base in declared, f"{name} is not in metrics.FAMILIES"


def test_no_created_series_and_no_global_switch(tmp_path: Path) -> None:
    """`_created` series are dropped by the node's registry, not by prometheus_client's
    process-wide `disable_created_metrics()`, which other code in the process may rely on."""
    node = samples.populated("shoal-0", leader=True, data_dir=tmp_path)
    assert not [name for name in names(node) if name.endswith("_created")]
    from prometheus_client import metrics as client_metrics

    assert client_metrics._use_created, "the process-wide switch must be left alone"


def test_families_follow_prometheus_naming() -> None:
    for family in FAMILIES.values():
        assert family.name.startswith("kinesis_")
        assert family.name == family.name.lower()
        assert not family.name.endswith(("_ms", "_milliseconds", "_kb"))
        if family.kind == "counter":
            assert family.name.endswith("_total")
        assert "partition_key" not in family.labels
        assert "sequence_number" not in family.labels


def test_promtool_check_metrics_is_clean(tmp_path: Path) -> None:
    promtool = tool("promtool")
    body, _ = samples.populated("shoal-0", leader=True, data_dir=tmp_path).exposition()
    output = run([promtool, "check", "metrics"], stdin=body)
    assert output.strip() == "", output


def test_shard_series_only_for_enabled_enhanced_metrics() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.streams.records_written("plain", SHARD, 2, 20, ())
    node.streams.records_read("plain", SHARD, 2, 20, 1000, ())
    node.streams.write_throttled("plain", SHARD, 1, ())
    node.streams.read_throttled("plain", SHARD, ())
    node.streams.records_written("some", SHARD, 2, 20, ("IncomingBytes",))
    node.streams.records_read("some", SHARD, 2, 20, 3000, ("IteratorAgeMilliseconds",))
    series = scrape(node)

    shard_streams = {
        labels["stream"] for name, rows in series.items() if "_shard_" in name for labels, _ in rows
    }
    assert shard_streams == {"some"}
    assert series["kinesis_shard_incoming_bytes_total"] == [
        ({"stream": "some", "shard": SHARD}, 20.0)
    ]
    assert "kinesis_shard_incoming_records_total" not in series
    assert series["kinesis_shard_iterator_age_seconds"] == [
        ({"stream": "some", "shard": SHARD}, 3.0)
    ]
    # Stream-level series exist whatever the setting.
    incoming = {row["stream"]: value for row, value in series["kinesis_incoming_bytes_total"]}
    assert incoming == {"plain": 20.0, "some": 20.0}


def test_all_enables_every_shard_level_metric() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.streams.records_written("s", SHARD, 1, 10, ("ALL",))
    node.streams.records_read("s", SHARD, 1, 10, 0, ("ALL",))
    node.streams.write_throttled("s", SHARD, 1, ("ALL",))
    node.streams.read_throttled("s", SHARD, ("ALL",))
    rendered = names(node)
    for family in metrics.SHARD_LEVEL.values():
        assert family.name in rendered


def test_disabling_enhanced_monitoring_drops_shard_series_only() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.streams.records_written("s", SHARD, 1, 10, ("ALL",))
    node.streams.records_read("s", SHARD, 1, 10, 500, ("ALL",))
    node.streams.enhanced_monitoring_changed("s", ("IncomingRecords",))
    series = scrape(node)
    shard_names = {name for name in series if name.startswith("kinesis_shard_")}
    assert shard_names == {"kinesis_shard_incoming_records_total"}
    assert series["kinesis_incoming_bytes_total"] == [({"stream": "s"}, 10.0)]
    assert series["kinesis_iterator_age_seconds"] == [({"stream": "s"}, 0.5)]


def test_deleted_stream_series_are_forgotten() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    for stream in ("gone", "kept"):
        node.streams.records_written(stream, SHARD, 1, 10, ("ALL",))
        node.streams.records_read(stream, SHARD, 1, 10, 500, ("ALL",))
        node.streams.put_records_finished(stream, 1, 0, 0)
    node.streams.stream_deleted("gone")
    streams = {
        labels["stream"]
        for rows in scrape(node).values()
        for labels, _ in rows
        if "stream" in labels
    }
    assert streams == {"kept"}


def test_iterator_age_is_the_slowest_shard_in_seconds() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.streams.records_read("s", "shardId-000000000000", 1, 1, 2_500, ())
    node.streams.records_read("s", "shardId-000000000001", 1, 1, 40_000, ())
    node.streams.records_read("s", "shardId-000000000000", 1, 1, 100, ())
    assert scrape(node)["kinesis_iterator_age_seconds"] == [({"stream": "s"}, 40.0)]


def test_two_nodes_in_one_process_keep_separate_values(tmp_path: Path) -> None:
    first = samples.populated("shoal-0", leader=True, data_dir=tmp_path)
    second = NodeMetrics(node_id="shoal-1")  # same families, own registry: no collision
    second.gateway.request_finished("PutRecord", "OK", 0.001)
    assert scrape(second)["kinesis_api_requests_total"] == [
        ({"operation": "PutRecord", "code": "OK"}, 1.0)
    ]
    assert scrape(second)["kinesis_node_info"] == [({"node_id": "shoal-1"}, 1.0)]
    assert scrape(first)["kinesis_node_info"] == [({"node_id": "shoal-0"}, 1.0)]
    assert len(scrape(first)["kinesis_api_requests_total"]) == 4


def test_request_counts_and_latency_by_operation_and_code() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.gateway.request_finished("GetRecords", "OK", 0.003)
    node.gateway.request_finished("GetRecords", "ExpiredIteratorException", 0.001)
    node.gateway.request_finished("GetRecords", "OK", 0.2)
    series = scrape(node)
    codes = {row["code"]: value for row, value in series["kinesis_api_requests_total"]}
    assert codes == {"OK": 2.0, "ExpiredIteratorException": 1.0}
    assert series["kinesis_api_request_duration_seconds_count"] == [
        ({"operation": "GetRecords"}, 3.0)
    ]
    buckets = {
        row["le"]: value for row, value in series["kinesis_api_request_duration_seconds_bucket"]
    }
    assert buckets["0.005"] == 2.0
    assert buckets["+Inf"] == 3.0


def test_put_records_outcomes() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.streams.put_records_finished("s", 7, 2, 1)
    node.streams.put_records_finished("s", 3, 0, 0)
    rows = scrape(node)["kinesis_put_records_records_total"]
    assert {row["result"]: value for row, value in rows} == {
        "success": 10.0,
        "throttled": 2.0,
        "failed": 1.0,
    }


def test_quorum_gauges_and_leader_changes() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    leader: list[str | None] = ["a:1"]
    node.quorum.watch(
        lambda: samples.FakeQuorumStatistics(
            role="follower", term=7, commit_index=30, last_applied=29, quorum_leader=leader[0]
        )
    )
    assert scrape(node)["kinesis_raft_leader_changes_total"] == [({}, 0.0)]
    leader[0] = None  # an election in progress is not a change by itself
    assert scrape(node)["kinesis_raft_has_leader"] == [({}, 0.0)]
    leader[0] = "b:1"
    series = scrape(node)
    assert series["kinesis_raft_leader_changes_total"] == [({}, 1.0)]
    assert series["kinesis_raft_is_leader"] == [({}, 0.0)]
    assert series["kinesis_raft_term"] == [({}, 7.0)]
    assert series["kinesis_raft_commit_index"] == [({}, 30.0)]
    assert series["kinesis_raft_applied_index"] == [({}, 29.0)]


def test_replication_view_renders_per_follower_lag() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.replication.watch(
        lambda: ReplicationView(
            leaders=4, followers=8, under_replicated=1, follower_lag_records={"b": 12, "c": 0}
        )
    )
    series = scrape(node)
    assert {r["role"]: v for r, v in series["kinesis_replicas"]} == {"leader": 4, "follower": 8}
    assert series["kinesis_under_replicated_shards"] == [({}, 1.0)]
    assert {r["follower"]: v for r, v in series["kinesis_replication_lag_records"]} == {
        "b": 12.0,
        "c": 0.0,
    }


def test_a_failing_statistics_callback_does_not_break_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)

    def broken() -> ReplicationView:
        raise RuntimeError("driver stopped")

    node.replication.watch(broken)
    node.gateway.request_finished("ListStreams", "OK", 0.001)
    with caplog.at_level(logging.WARNING, logger="broker.metrics"):
        series = scrape(node)
        scrape(node)
    assert "kinesis_api_requests_total" in series
    assert "kinesis_replicas" not in series
    assert [r.message for r in caplog.records] == ["metrics_statistics_failed"]  # once


def test_unwired_callbacks_render_no_series() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    rendered = names(node)
    assert "kinesis_raft_term" not in rendered
    assert "kinesis_storage_disk_free_bytes" not in rendered
    assert "kinesis_build_info" in rendered


def test_disk_space_of_the_data_dir(tmp_path: Path) -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.storage.watch_disk(tmp_path)
    series = scrape(node)
    free = series["kinesis_storage_disk_free_bytes"][0][1]
    capacity = series["kinesis_storage_disk_capacity_bytes"][0][1]
    assert 0 < free <= capacity
    node.storage.watch_disk(tmp_path / "missing")
    assert "kinesis_storage_disk_free_bytes" not in names(node)


@pytest.mark.integration
def test_serve_answers_over_http() -> None:
    node = NodeMetrics(node_id="n", process_metrics=False)
    node.gateway.request_finished("PutRecord", "OK", 0.001)
    server = node.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            body = r.read().decode()
    finally:
        server.close()
    assert 'kinesis_api_requests_total{code="OK",operation="PutRecord"} 1.0' in body
