"""deploy/Dockerfile and deploy/compose.yaml: hadolint-clean, the Compose Spec schema, and the
properties the operations guide relies on. Neither is built or run here (no container engine
on the build machines; podman works with extra setup, ECOSYSTEM §6.3)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import load_yaml, run, tool, unknown_settings
from tests.support import REPO

DOCKERFILE = REPO / "deploy/Dockerfile"
COMPOSE = REPO / "deploy/compose.yaml"
NODES = ("shoal-0", "shoal-1", "shoal-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE.read_text())
    return loaded


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_hadolint_is_clean() -> None:
    run([tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE)])


def test_dockerfile_shape() -> None:
    steps = instructions()
    assert steps[0] == ("ARG", "BASE=python:3.11-slim-bookworm")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms == ["${BASE} AS build", "${BASE}"]  # multi-stage, one base
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    assert ("USER", "10001:10001") in final
    entrypoint = [json.loads(args) for keyword, args in final if keyword == "ENTRYPOINT"]
    assert entrypoint == [["tini", "--", "shoal", "serve"]]
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    for setting in ("SHOAL_DATA_DIR=/data", "SHOAL_GRPC_PORT=50051", "SHOAL_HTTP_PORT=4567"):
        assert setting in env
    assert not unknown_settings(set(re.findall(r"(SHOAL_\w+)=", env)))
    labels = " ".join(args for keyword, args in final if keyword == "LABEL")
    for label in ("title", "description", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in labels
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert "pip uninstall --yes --no-input pip setuptools" in runs  # not in the runtime venv
    assert "apt-get clean" in runs and "/var/lib/apt/lists/*" in runs
    exposed = " ".join(args for keyword, args in final if keyword == "EXPOSE").split()
    assert set(exposed) == {"4567", "50051", "50052", "50055", "9464"}


def test_dockerignore_admits_only_the_package() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"broker", "pyproject.toml", "setup.py", "README.md", "LICENSE", "wheels"}


def test_compose_matches_the_compose_spec() -> None:
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])


def test_compose_validator_rejects_a_typo(tmp_path: Path) -> None:
    """Guards the check above: the schema must reject a misspelt service key."""
    checker = tool("check-jsonschema")
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0


def test_compose_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*NODES, "prometheus", "grafana"}
    for name in NODES:
        node = services[name]
        assert node["read_only"] is True
        assert node["user"] == "10001:10001"
        assert node["tmpfs"] == ["/tmp"]
        assert node["secrets"][0]["source"] == "shoal"
        assert node["command"] == ["--config", "/run/secrets/shoal.toml"]
        assert node["environment"]["SHOAL_NODE_ID"] == name
        assert node["environment"]["SHOAL_HOST"] == name
        assert "healthcheck" in node
        others = [f"{other}:50052" for other in NODES if other != name]
        assert node["environment"]["SHOAL_PEERS"].split(",") == others
        assert not unknown_settings(set(node["environment"]))
    assert compose["secrets"]["shoal"]["file"] == "./secrets/shoal.toml"


def test_compose_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", ()):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
        assert "healthcheck" in service, name


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE.parent / source).exists(), source
    example = REPO / "deploy/secrets/shoal.example.toml"
    assert "EXAMPLE ONLY" in example.read_text()


def test_example_secrets_file_loads_as_node_config(tmp_path: Path) -> None:
    """What compose mounts is a `--config` TOML file: the example must load as one."""
    from broker.config import load_config

    config_file = tmp_path / "shoal.toml"
    shutil.copy(REPO / "deploy/secrets/shoal.example.toml", config_file)
    config = load_config(flags={}, environ={}, config_file=config_file)
    assert config.raft_password != "shoal-development-only"
    assert config.access_keys
