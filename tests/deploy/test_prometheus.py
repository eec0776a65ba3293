"""deploy/prometheus: the alert rules parse, their unit tests pass, each alert is tested and
documented, and the compose scrape config is valid."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import load_yaml, run, tool
from tests.support import REPO

PROMETHEUS_DIR = REPO / "deploy/prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
OPERATIONS = REPO / "docs/operations.md"
RULES_PATH = RULES


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_generate", REPO / "deploy/generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GENERATE = _generator()
RUNBOOK_BASE: str = _GENERATE.RUNBOOK_BASE
with_runbook_base = _GENERATE.with_runbook_base
runbook_bases = _GENERATE.runbook_bases


def alerts() -> list[dict[str, Any]]:
    groups = load_yaml(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    output = run([tool("promtool"), "check", "rules", str(RULES)])
    assert "SUCCESS" in output


@pytest.mark.slow
def test_promtool_rule_unit_tests() -> None:
    output = run([tool("promtool"), "test", "rules", str(PROMETHEUS_DIR / "rules_test.yml")])
    assert "SUCCESS" in output


def test_compose_prometheus_config(tmp_path: Path) -> None:
    """The config as compose mounts it: rules at /etc/prometheus/rules.yml (rewritten to the
    copy here, since promtool also loads the rule files it names)."""
    shutil.copy(RULES, tmp_path / "rules.yml")
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules.yml" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/rules.yml", str(tmp_path / "rules.yml"))
    )
    run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = load_yaml((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    assert {alert["alert"] for alert in alerts()} <= fired


def test_the_runbook_base_is_one_setting() -> None:
    rules = RULES_PATH.read_text()
    assert runbook_bases(rules) == {RUNBOOK_BASE}
    moved = with_runbook_base(rules, "https://wiki.example.org/shoal")
    assert runbook_bases(moved) == {"https://wiki.example.org/shoal"}
    assert moved.count("runbook_url") == rules.count("runbook_url")


def test_every_alert_is_documented_with_a_severity() -> None:
    anchors = {
        re.sub(r"[^a-z0-9]+", "", line.lstrip("#").strip().lower())
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in alerts():
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        runbook = alert["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{alert['alert'].lower()}"
        # A full URL on one configurable base (deploy/generate.py --runbook-base).
        url = alert["annotations"]["runbook_url"]
        assert url == f"{RUNBOOK_BASE}#{alert['alert'].lower()}", url
        assert alert["alert"].lower() in anchors, f"no section {alert['alert']} in {OPERATIONS}"
