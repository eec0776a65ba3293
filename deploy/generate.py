"""Generate the deployment files that are derived from others, and keep them in sync.

    .venv/bin/python deploy/generate.py          # rewrite them
    .venv/bin/python deploy/generate.py --check  # exit 1 if any is stale (tests/deploy does this)

Outputs:
- deploy/grafana/shoal-dashboard.json: the Grafana dashboard, built from the panel table below
  (edit the table, not the JSON).
- k8s/components/monitoring/shoal-dashboard.json: a copy, for the ConfigMap generator
  (kustomize reads files only from inside the kustomization's directory).
- k8s/components/monitoring/prometheusrule.yaml: deploy/prometheus/rules.yml wrapped in a
  PrometheusRule, comments and all.

Runbook links: every alert carries `runbook` (the docs/operations.md section) and
`runbook_url`, the same section as a full URL for Alertmanager and Grafana. Point them at
where your team reads these docs (a Git host's page of docs/operations.md, a wiki copy):

    .venv/bin/python deploy/generate.py --runbook-base https://git.example.com/shoal/docs/operations.md

rewrites the base in rules.yml and rules_test.yml, then regenerates the PrometheusRule.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy/grafana/shoal-dashboard.json"
RULES = REPO / "deploy/prometheus/rules.yml"
RULES_TEST = REPO / "deploy/prometheus/rules_test.yml"
# The default base of the alerts' runbook_url: a placeholder until `--runbook-base` names yours.
RUNBOOK_BASE = "https://shoal.example.com/docs/operations.md"
_RUNBOOK_URL = re.compile(r'(runbook_url: ")([^"#]*)(#[a-z0-9]+")')
K8S_MONITORING = REPO / "k8s/components/monitoring"

# Every query selects through the dashboard's variables; `namespace` is absent under compose,
# which `=~".*"` (the "All" value) still matches.
S = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'
ST = S + ', stream=~"$stream"'
SH = ST + ', shard=~"$shard"'
RATE = "[$__rate_interval]"
NODE = "{{node_id}}"  # legends name nodes by id, not by scrape address


def by_node(expr: str) -> str:
    """`expr` (per instance) with the node's id as a label, filtered by the node variable."""
    return (
        f"({expr}) * on (namespace, job, instance) group_left (node_id) "
        f'max by (namespace, job, instance, node_id) (kinesis_node_info{{{S}, node_id=~"$node"}})'
    )

Panel = dict[str, Any]


def q(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    return {"expr": expr, "legend": legend, "instant": instant, "table": table}


def timeseries(
    title: str, unit: str, *targets: dict[str, Any], w: int = 8, desc: str = "",
    steps: tuple[tuple[str, float | None], ...] = (),
) -> Panel:
    """`steps`: (colour, from value) threshold steps, drawn as lines (the healthy range)."""
    return {"type": "timeseries", "title": title, "unit": unit, "targets": targets, "w": w,
            "desc": desc, "steps": steps}


def stat(title: str, unit: str, target: dict[str, Any], *, w: int = 4, desc: str = "",
         red_above: float | None = None) -> Panel:
    return {"type": "stat", "title": title, "unit": unit, "targets": (target,), "w": w,
            "desc": desc, "red_above": red_above}


def table(title: str, target: dict[str, Any], *, w: int = 8, desc: str = "") -> Panel:
    return {"type": "table", "title": title, "unit": "none", "targets": (target,), "w": w,
            "desc": desc}


def _legend(label: str) -> str:
    return "{{" + label + "}}"


def quantiles(metric: str, by: str, selector: str) -> tuple[dict[str, Any], ...]:
    """p50 and p99 by `by`; with `instance` among them, by node id instead (`by_node`)."""
    labels = [label for label in by.split(", ") if label != "instance"]
    per_node = "instance" in by
    result = []
    grouping = f"namespace, job, {by}" if per_node else by  # the join needs them
    for quantile in (0.5, 0.99):
        expr = (f"histogram_quantile({quantile}, sum by ({grouping}, le) "
                f"(rate({metric}_bucket{{{selector}}}{RATE})))")
        legend_labels = (["node_id"] if per_node else []) + labels
        result.append(q(
            by_node(expr) if per_node else expr,
            f"p{int(quantile * 100)} " + " ".join(_legend(label) for label in legend_labels),
        ))
    return tuple(result)


ROWS: list[tuple[str, list[Panel]]] = [
    ("Cluster", [
        stat("Nodes up", "none", q(f'sum(up{{{S}}})'), desc="Scrape targets answering."),
        stat("Quorum leaders", "none", q(f"sum(kinesis_raft_is_leader{{{S}}})"),
             desc="Nodes that lead the metadata quorum: 1 when healthy."),
        stat("Leaderless shards", "none", q(f"max(kinesis_leaderless_shards{{{S}}})"),
             red_above=0.5, desc="Open shards without a leader: writes to them fail."),
        stat("Under-replicated shards", "none",
             q(f"sum(kinesis_under_replicated_shards{{{S}}})"), red_above=0.5),
        stat("Streams", "none", q(f"max(kinesis_streams{{{S}}})")),
        stat("Open shards", "none", q(f"max(kinesis_open_shards{{{S}}})")),
        timeseries("Shard leaders per node", "none",
                   q(by_node(f'sum by (namespace, job, instance) (kinesis_replicas{{{S}, '
                             f'role="leader"}})'), NODE)),
        timeseries("Nodes by state", "none",
                   q(f"max by (state) (kinesis_cluster_nodes{{{S}}})", "{{state}}")),
        timeseries("Leader changes (15 min)", "none",
                   q(f"max(increase(kinesis_raft_leader_changes_total{{{S}}}[15m]))",
                     "metadata quorum"),
                   q(f"sum by (change) (increase(kinesis_replica_leadership_changes_total"
                     f"{{{S}}}[15m]))", "shards {{change}}")),
        timeseries("Raft commit index", "none",
                   q(by_node(f"max by (namespace, job, instance) "
                             f"(kinesis_raft_commit_index{{{S}}})"), NODE),
                   desc="Followers should track the leader closely."),
        timeseries("Replication lag", "none",
                   q(by_node(f"max by (namespace, job, instance, follower) "
                             f"(kinesis_replication_lag_records{{{S}}})"), NODE + " → {{follower}}"),
                   q(by_node(f"max by (namespace, job, instance) "
                             f"(kinesis_high_watermark_lag_records{{{S}}})"), NODE + " uncommitted"),
                   desc="Records a follower is behind its leader; records not yet committed."),
        table("Build", q(f"max by (instance, version, revision, python_version) "
                         f"(kinesis_build_info{{{S}}})", instant=True, table=True)),
    ]),
    ("Throughput", [
        timeseries("Incoming bytes", "Bps",
                   q(f"sum by (stream) (rate(kinesis_incoming_bytes_total{{{ST}}}{RATE}))",
                     "{{stream}}")),
        timeseries("Incoming records", "rps",
                   q(f"sum by (stream) (rate(kinesis_incoming_records_total{{{ST}}}{RATE}))",
                     "{{stream}}")),
        timeseries("Requests by operation", "reqps",
                   q(f"sum by (operation) (rate(kinesis_api_requests_total{{{S}}}{RATE}))",
                     "{{operation}}")),
        timeseries("Outgoing bytes", "Bps",
                   q(f"sum by (stream, api) (rate(kinesis_outgoing_bytes_total{{{ST}}}{RATE}))",
                     "{{stream}} {{api}}")),
        timeseries("Outgoing records", "rps",
                   q(f"sum by (stream, api) (rate(kinesis_outgoing_records_total{{{ST}}}{RATE}))",
                     "{{stream}} {{api}}")),
        timeseries("Incoming bytes by shard (enhanced monitoring)", "Bps",
                   q(f"sum by (stream, shard) (rate(kinesis_shard_incoming_bytes_total"
                     f"{{{SH}}}{RATE}))", "{{stream}} {{shard}}"),
                   desc="Only streams with shard-level metrics enabled appear here."),
    ]),
    ("Latency", [
        timeseries("Put latency", "s",
                   *quantiles("kinesis_api_request_duration_seconds", "operation",
                              S + ', operation=~"PutRecord|PutRecords"'),
                   steps=(("green", None), ("orange", 0.2), ("red", 0.5)),
                   desc="The alert ShoalPutLatencyHigh fires at a p99 above 500 ms."),
        timeseries("GetRecords latency", "s",
                   *quantiles("kinesis_api_request_duration_seconds", "operation",
                              S + ', operation="GetRecords"')),
        timeseries("p99 by operation", "s",
                   q(f"histogram_quantile(0.99, sum by (operation, le) "
                     f"(rate(kinesis_api_request_duration_seconds_bucket{{{S}}}{RATE})))",
                     "{{operation}}")),
    ]),
    ("Throttling and errors", [
        timeseries("Write throughput exceeded", "rps",
                   q(f"sum by (stream) (rate(kinesis_write_throughput_exceeded_total"
                     f"{{{ST}}}{RATE}))", "{{stream}}"),
                   desc="Records refused by a shard's write limit."),
        timeseries("Read throughput exceeded", "reqps",
                   q(f"sum by (stream) (rate(kinesis_read_throughput_exceeded_total"
                     f"{{{ST}}}{RATE}))", "{{stream}}"),
                   desc="GetRecords calls refused by a shard's read limit."),
        timeseries("PutRecords record outcomes", "rps",
                   q(f"sum by (result) (rate(kinesis_put_records_records_total{{{ST}}}{RATE}))",
                     "{{result}}")),
        timeseries("Errors by code", "reqps",
                   q(f'sum by (operation, code) (rate(kinesis_api_requests_total{{{S}, '
                     f'code!="OK"}}{RATE}))', "{{operation}} {{code}}"), w=24),
    ]),
    ("Consumer lag", [
        timeseries("Iterator age by stream", "s",
                   q(f"max by (stream) (kinesis_iterator_age_seconds{{{ST}}})", "{{stream}}"),
                   w=12, desc="How far the slowest GetRecords consumer is behind the tip.",
                   steps=(("green", None), ("orange", 60), ("red", 43200))),
        timeseries("Iterator age by shard (enhanced monitoring)", "s",
                   q(f"max by (stream, shard) (kinesis_shard_iterator_age_seconds{{{SH}}})",
                     "{{stream}} {{shard}}"), w=12),
        timeseries("Fan-out MillisBehindLatest", "s",
                   q(f"max by (stream) (kinesis_subscription_behind_latest_seconds{{{ST}}})",
                     "{{stream}}"),
                   w=6, desc="How far the slowest SubscribeToShard consumer's last event was "
                   "behind the tip (SubscribeToShardEvent.MillisBehindLatest)."),
        timeseries("Fan-out subscriptions", "none",
                   q(f"sum by (stream) (kinesis_subscriptions{{{ST}}})", "{{stream}}"),
                   w=6, desc="Open SubscribeToShard subscriptions, all nodes together."),
        timeseries("Registered consumers", "none",
                   q(f"max by (stream, status) (kinesis_stream_consumers{{{ST}}})",
                     "{{stream}} {{status}}"),
                   w=6, desc="Enhanced fan-out consumers (RegisterStreamConsumer) by status; "
                   "AWS's default limit is 20 per stream."),
        timeseries("Fan-out events and refusals", "reqps",
                   q(f"sum by (stream) (rate(kinesis_subscription_events_total{{{ST}}}{RATE}))",
                     "{{stream}} events"),
                   q(f"sum by (stream) (rate(kinesis_subscribe_to_shard_rate_exceeded_total"
                     f"{{{ST}}}{RATE}))", "{{stream}} refused"),
                   w=6, desc="SubscribeToShardEvent.Success and SubscribeToShard.RateExceeded: "
                   "a second subscription of one consumer to one shard, or a node at its "
                   "subscription limit."),
    ]),
    ("Scaling and certificates", [
        timeseries("Open shards by stream", "none",
                   q(f"max by (stream, mode) (kinesis_stream_open_shards{{{ST}}})",
                     "{{stream}} {{mode}}"),
                   q(f"max(kinesis_on_demand_max_open_shards{{{S}}})", "on-demand ceiling"),
                   desc="An ON_DEMAND stream stays at or below the ceiling "
                   "(on_demand_max_shards)."),
        timeseries("Autoscaler actions (15 min)", "none",
                   q(f"sum by (stream, action) (increase(kinesis_autoscaler_actions_total"
                     f"{{{ST}}}[15m]))", "{{stream}} {{action}}"),
                   desc="Splits and merges of ON_DEMAND streams, hot-key notices, and "
                   "decisions the metadata refused (details: shoal scaling-events STREAM)."),
        timeseries("Time to certificate expiry", "s",
                   q(f"min by (instance, file, usage) "
                     f"(kinesis_tls_certificate_expiry_timestamp_seconds{{{S}}}) - time()",
                     "{{instance}} {{file}}"),
                   desc="Nodes with TLS only. The alert fires 7 days before expiry."),
    ]),
    ("Media streams (Kinesis Video Streams)", [
        timeseries("PutMedia incoming bytes", "Bps",
                   q(f"sum by (stream) (rate(kinesis_video_put_media_incoming_bytes_total"
                     f"{{{ST}}}{RATE}))", "{{stream}}"),
                   desc="PutMedia.IncomingBytes: MKV from producers (cameras)."),
        timeseries("Fragment persist latency", "s",
                   *quantiles("kinesis_video_put_media_fragment_persist_latency_seconds",
                              "instance", S),
                   desc="PutMedia.FragmentPersist.Latency: from a fragment's RECEIVED to its "
                   "PERSISTED (durable on a majority)."),
        timeseries("GetMedia outgoing bytes", "Bps",
                   q(f"sum by (stream) (rate(kinesis_video_get_media_outgoing_bytes_total"
                     f"{{{ST}}}{RATE}))", "{{stream}}"),
                   desc="GetMedia.OutgoingBytes (GetMediaForFragmentList included)."),
        timeseries("PutMedia sessions and errors", "none",
                   q(f"sum(kinesis_video_put_media_connections{{{S}}})", "open sessions"),
                   q(f"sum by (stream, error) (increase(kinesis_video_put_media_error_acks_total"
                     f"{{{ST}}}[5m]))", "{{stream}} {{error}}"),
                   desc="PutMedia.ActiveConnections and ERROR acknowledgements (5 min)."),
    ]),
    ("Storage", [
        timeseries("Disk free", "percentunit",
                   q(by_node(f"kinesis_storage_disk_free_bytes{{{S}}} / "
                             f"kinesis_storage_disk_capacity_bytes{{{S}}}"), NODE),
                   steps=(("red", None), ("orange", 0.1), ("green", 0.4)),
                   desc="ShoalDiskAlmostFull fires below 10 %; ShoalDiskFilling watches 40 %."),
        timeseries("RocksDB size", "bytes",
                   q(by_node(f"kinesis_rocksdb_sst_files_bytes{{{S}}}"), NODE + " SST files"),
                   q(by_node(f"kinesis_rocksdb_live_data_bytes{{{S}}}"), NODE + " live data")),
        timeseries("Compaction", "bytes",
                   q(by_node(f"kinesis_rocksdb_pending_compaction_bytes{{{S}}}"),
                     NODE + " pending"),
                   q(by_node(f"kinesis_rocksdb_memtable_bytes{{{S}}}"), NODE + " memtables")),
        timeseries("fsync latency", "s",
                   *quantiles("kinesis_fsync_duration_seconds", "instance, log", S),
                   steps=(("green", None), ("red", 0.1)),
                   desc="ShoalSlowFsync fires at a p99 above 100 ms."),
        timeseries("Records per group commit", "none",
                   *quantiles("kinesis_group_commit_records", "instance", S)),
        timeseries("Log writes", "Bps",
                   q(by_node(f"sum by (namespace, job, instance) "
                             f"(rate(kinesis_log_written_bytes_total{{{S}}}{RATE}))"), NODE)),
        timeseries("RocksDB writes stopped", "bool_yes_no",
                   q(by_node(f"max by (namespace, job, instance) "
                             f"(kinesis_rocksdb_write_stopped{{{S}}})"), NODE),
                   steps=(("green", None), ("red", 1)),
                   desc="1 while RocksDB stops writes for compaction (ShoalRocksDBWritesStopped)."),
    ]),
    ("Process", [
        timeseries("CPU", "percentunit",
                   q(by_node(f"rate(process_cpu_seconds_total{{{S}}}{RATE})"), NODE),
                   desc="Cores used (1.0 = one core)."),
        timeseries("Resident memory", "bytes",
                   q(by_node(f"process_resident_memory_bytes{{{S}}}"), NODE)),
        timeseries("Open file descriptors", "none",
                   q(by_node(f"process_open_fds{{{S}}}"), NODE)),
    ]),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _query_variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,  # on time range change: new streams and nodes show up
        "includeAll": True,
        "allValue": ".*",
        "multi": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int, height: int) -> dict[str, Any]:
    targets = []
    for index, target in enumerate(panel["targets"]):
        entry: dict[str, Any] = {
            "refId": chr(ord("A") + index),
            "datasource": DATASOURCE,
            "expr": target["expr"],
            "legendFormat": target["legend"] or "__auto",
            "range": not target["instant"],
            "instant": target["instant"],
        }
        if target["table"]:
            entry["format"] = "table"
        targets.append(entry)
    defaults: dict[str, Any] = {"unit": panel["unit"]}
    if panel.get("steps"):
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in panel["steps"]],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    if panel.get("red_above") is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red",
                                                           "value": panel["red_above"]}],
        }
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel["type"],
        "title": panel["title"],
        "description": panel["desc"],
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel["w"], "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if panel["type"] == "timeseries":
        result["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                             "tooltip": {"mode": "multi", "sort": "desc"}}
    elif panel["type"] == "stat":
        result["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                               "values": False},
                             "colorMode": "value", "graphMode": "area"}
    else:
        result["transformations"] = [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True}}}]
    return result


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for title, row_panels in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row_panels:
            height = 4 if panel["type"] == "stat" else 8
            if x + panel["w"] > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(panel, panel_id, x, y, height))
            panel_id, x, row_height = panel_id + 1, x + panel["w"], max(row_height, height)
        y += row_height
    return {
        "title": "Shoal",
        "uid": "shoal-overview",
        "description": "Shoal (Kinesis Data Streams replacement): cluster, throughput, latency, "
        "throttling, consumer lag, scaling, certificates and storage. Generated by "
        "deploy/generate.py.",
        "tags": ["shoal", "kinesis"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
             "includeAll": False, "multi": False},
            _query_variable("namespace", "Namespace",
                            "label_values(kinesis_build_info, namespace)", multi=False),
            _query_variable("job", "Job",
                            'label_values(kinesis_build_info{namespace=~"$namespace"}, job)',
                            multi=False),
            _query_variable("instance", "Node",
                            'label_values(kinesis_build_info{namespace=~"$namespace", '
                            'job=~"$job"}, instance)', multi=True),
            _query_variable("node", "Node id",
                            'label_values(kinesis_node_info{namespace=~"$namespace", '
                            'job=~"$job", instance=~"$instance"}, node_id)', multi=True),
            _query_variable("stream", "Stream",
                            'label_values(kinesis_incoming_records_total{namespace=~'
                            '"$namespace", job=~"$job"}, stream)', multi=True),
            _query_variable("shard", "Shard",
                            'label_values(kinesis_shard_incoming_records_total{namespace=~'
                            '"$namespace", job=~"$job", stream=~"$stream"}, shard)', multi=True),
        ]},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def prometheus_rule_yaml() -> str:
    rules = RULES.read_text()
    body = "\n".join(("  " + line) if line.strip() else "" for line in rules.splitlines())
    return (
        "# Generated by deploy/generate.py from deploy/prometheus/rules.yml: edit that file.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: shoal\n"
        "  labels:\n"
        "    # kube-prometheus-stack's default ruleSelector matches its release label; set\n"
        "    # yours in the overlay if it differs.\n"
        "    release: kube-prometheus-stack\n"
        "spec:\n" + body + "\n"
    )


def with_runbook_base(text: str, base: str) -> str:
    """`text` (rules or their tests) with every runbook_url on `base`."""
    return _RUNBOOK_URL.sub(lambda match: match.group(1) + base + match.group(3), text)


def runbook_bases(text: str) -> set[str]:
    return {match.group(2) for match in _RUNBOOK_URL.finditer(text)}


def outputs() -> dict[Path, str]:
    return {
        DASHBOARD: dashboard_json(),
        K8S_MONITORING / "shoal-dashboard.json": dashboard_json(),
        K8S_MONITORING / "prometheusrule.yaml": prometheus_rule_yaml(),
    }


def main(argv: list[str]) -> int:
    if "--runbook-base" in argv:
        base = argv[argv.index("--runbook-base") + 1].rstrip("/")
        for path in (RULES, RULES_TEST):
            path.write_text(with_runbook_base(path.read_text(), base))
            print(f"wrote {path.relative_to(REPO)} (runbook_url base {base})")
    stale = [path for path, text in outputs().items()
             if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run deploy/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outputs()[path])
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
