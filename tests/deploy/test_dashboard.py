"""deploy/grafana/shoal-dashboard.json: its shape, every query parsed by promtool, and every
query returning data from a real Prometheus scraping three nodes' metrics under load.

There is no Grafana server on these machines (ECOSYSTEM §3.5), so the dashboard is never
rendered; what can be checked is that Grafana would send valid queries that find series. Until
the metrics are wired into nodes, the live test serves `NodeMetrics` registries filled by a load
loop (tests/deploy/samples.py); the 3-node cluster test will reuse `PrometheusServer`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.metrics import FAMILIES, MetricsServer
from tests.deploy import samples
from tests.deploy.prometheus_harness import (
    PanelQuery,
    PrometheusServer,
    dashboard_queries,
    recording_rules,
    substitute,
)
from tests.deploy.tools import load_yaml, run, tool
from tests.support import REPO, wait_until

DASHBOARD_PATH = REPO / "deploy/grafana/shoal-dashboard.json"
RULES = REPO / "deploy/prometheus/rules.yml"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    return loaded


@pytest.fixture(scope="module")
def queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return dashboard_queries(dashboard)


def test_generated_files_are_up_to_date() -> None:
    """The dashboard and its k8s copies come from deploy/generate.py; edit the generator."""
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy/generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_datasource_variable_drives_every_panel(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "instance", "stream"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_rows(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    for wanted in ("Cluster", "Throughput", "Latency", "Throttling", "Consumer lag", "Storage"):
        assert any(row.startswith(wanted) for row in rows), f"no {wanted} row in {rows}"


def test_layout(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_rates_use_rate_interval(queries: list[PanelQuery]) -> None:
    for query in queries:
        for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", query.expr):
            assert window == "$__rate_interval", query.name


def test_queries_name_only_declared_metrics(queries: list[PanelQuery]) -> None:
    """Catches a misspelt family before any Prometheus runs."""
    known = set(FAMILIES) | {"up"}
    for query in queries:
        for name in re.findall(r"\b((?:kinesis|process)_\w+|up)\s*\{", query.expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            if name.startswith("process_"):
                continue
            assert name in known or base in known, f"{query.name}: unknown metric {name}"


def test_promtool_parses_every_query(queries: list[PanelQuery], tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text(json.dumps(recording_rules(queries, rate_interval="1m")))
    output = run([promtool, "check", "rules", str(rules)])
    assert f"SUCCESS: {len(queries)} rules found" in output


def test_substitute() -> None:
    expr = 'rate(x{a=~"$stream", b=~"${job}", c=~"[[node]]", d="${ns:regex}"}[$__rate_interval])'
    assert substitute(expr, rate_interval="5s", variables={"job": "shoal"}) == (
        'rate(x{a=~".*", b=~"shoal", c=~".*", d=".*"}[5s])'
    )


@pytest.mark.slow
def test_every_panel_returns_data_from_a_real_prometheus(
    queries: list[PanelQuery], tmp_path: Path
) -> None:
    """Three nodes' registries served over HTTP under a steady load loop, a real Prometheus
    scraping them every second with the alert rules loaded; then each panel's query, as
    Grafana would send it, must come back with at least one series, and every alert rule must
    evaluate without error."""
    prometheus = tool("prometheus")
    nodes = [samples.populated(f"shoal-{i}", leader=i == 0, data_dir=tmp_path) for i in range(3)]
    servers: list[MetricsServer] = [node.serve("127.0.0.1", 0) for node in nodes]
    try:
        targets = [f"127.0.0.1:{server.port}" for server in servers]
        with (
            samples.Load(nodes, interval_s=0.2),
            PrometheusServer(prometheus, tmp_path, targets, rule_files=[RULES]) as prom,
        ):
            prom.wait_for_targets_up(deadline_s=30)

            def empty_queries() -> list[str]:
                return [
                    query.name
                    for query in queries
                    if not prom.query_range(substitute(query.expr, rate_interval="10s"), seconds=30)
                ]

            # rate() over 10 s needs two scrapes in the window; give it a few.
            missing: list[str] = []

            def all_have_data() -> bool:
                missing[:] = empty_queries()
                return not missing

            try:
                wait_until(all_have_data, deadline_s=45, what="every panel query to return data")
            except AssertionError as error:
                raise AssertionError(f"panels without data: {missing}") from error

            health = prom.rule_health()
            assert len(health) == sum(
                len(group["rules"]) for group in load_yaml(RULES.read_text())["groups"]
            )
            broken = {name: h for name, h in health.items() if h[0] == "err"}
            assert not broken, broken
    finally:
        for server in servers:
            server.close()
