"""A real Prometheus (Debian's `prometheus` binary) scraping given targets, for tests.

    with PrometheusServer(binary, tmp_path, ["127.0.0.1:9464"], rule_files=[RULES]) as prom:
        prom.wait_for_targets_up(deadline_s=30)
        prom.query_range('sum(rate(kinesis_incoming_bytes_total[10s]))', seconds=30)

Plus the dashboard side: `dashboard_queries` walks a Grafana dashboard for every `expr`, and
`substitute` replaces Grafana's variables so Prometheus accepts the query (ECOSYSTEM §3.5).
The 3-node cluster test reuses all of it against real nodes once metrics are wired.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import free_port, wait_until

JOB = "shoal"  # the alert rules match job="shoal"


@dataclass(frozen=True)
class PanelQuery:
    panel: str  # the panel's title
    ref_id: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref_id}]"


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every target expression of every panel, rows' nested panels included."""

    def walk(panels: Sequence[dict[str, Any]]) -> Iterator[PanelQuery]:
        for panel in panels:
            for target in panel.get("targets", ()):
                if "expr" in target:
                    yield PanelQuery(
                        panel.get("title", "?"), target.get("refId", "?"), target["expr"]
                    )
            yield from walk(panel.get("panels", ()))

    return list(walk(dashboard.get("panels", ())))


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, *, rate_interval: str, variables: dict[str, str] | None = None) -> str:
    """Grafana's built-ins (`$__rate_interval`, `$__interval`, `$__range`) become a fixed
    duration; template variables become their value in `variables`, or `.*` ("All")."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": rate_interval,
        **(variables or {}),
    }

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values.get(name, ".*")

    return _VARIABLE.sub(replace, expr)


def recording_rules(queries: Sequence[PanelQuery], *, rate_interval: str) -> dict[str, Any]:
    """The queries as recording rules, so `promtool check rules` parses each with Prometheus's
    own PromQL parser."""
    return {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard_query_{index}",
                        "expr": substitute(query.expr, rate_interval=rate_interval),
                    }
                    for index, query in enumerate(queries)
                ],
            }
        ]
    }


class PrometheusError(AssertionError):
    pass


class PrometheusServer:
    """`prometheus` on a free 127.0.0.1 port with a generated config: one job scraping
    `targets` every `scrape_interval_s`, evaluating `rule_files` as often."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Sequence[str],
        *,
        scrape_interval_s: int = 1,
        rule_files: Sequence[Path] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.targets = list(targets)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._scrape_interval_s = scrape_interval_s
        self._rule_files = [Path(path).resolve() for path in rule_files]
        self._process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        interval = f"{self._scrape_interval_s}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in self._rule_files],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": self.targets}]},
            ],
        }

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, *, deadline_s: float = 30) -> None:
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML
        data = self.workdir / "tsdb"
        data.mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, deadline_s=deadline_s, what=f"prometheus ready ({self.log_path})")

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise PrometheusError(
                f"prometheus exited {self._process.returncode}:\n{self.log_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` member, or PrometheusError with the error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise PrometheusError(f"{path} {params}: HTTP {error.code} {error.read()!r}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def targets_health(self) -> dict[str, str]:
        """Scrape URL -> "up" / "down" / "unknown" for our job's targets."""
        data = self.api("targets", state="active")
        return {t["scrapeUrl"]: t["health"] for t in data["activeTargets"]}

    def wait_for_targets_up(self, *, deadline_s: float) -> None:
        def all_up() -> bool:
            health = self.targets_health()
            return len(health) == len(self.targets) and set(health.values()) == {"up"}

        wait_until(all_up, deadline_s=deadline_s, what=f"all targets up: {self.targets}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, *, seconds: float, step_s: float = 1) -> list[dict[str, Any]]:
        """The series `expr` returns over the last `seconds`, as Grafana would ask."""
        end = time.time()
        data = self.api(
            "query_range",
            query=expr,
            start=f"{end - seconds:.3f}",
            end=f"{end:.3f}",
            step=f"{step_s}",
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def rule_health(self) -> dict[str, tuple[str, str]]:
        """Rule name -> (health, last error) for every loaded rule."""
        data = self.api("rules")
        return {
            rule["name"]: (rule["health"], rule.get("lastError", ""))
            for group in data["groups"]
            for rule in group["rules"]
        }
