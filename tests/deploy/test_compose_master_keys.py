"""deploy/compose.master-keys.yaml: the compose cluster with an operator's master key file
instead of the default cluster key. Valid Compose (check-jsonschema's Compose Spec schema),
the same secret on every node, and settings the node's own config loader reads as a key file
at the secret's path. Nothing is built or run (no container engine here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.config import load_config
from tests.deploy.tools import load_yaml, run, tool, unknown_settings
from tests.support import REPO

OVERRIDE = REPO / "deploy/compose.master-keys.yaml"
BASE = REPO / "deploy/compose.yaml"


def test_override_gives_every_node_the_same_key_file(tmp_path: Path) -> None:
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(OVERRIDE)])
    override: dict[str, Any] = load_yaml(OVERRIDE.read_text())
    base: dict[str, Any] = load_yaml(BASE.read_text())
    nodes = {name for name in base["services"] if name.startswith("shoal-")}
    assert set(override["services"]) == nodes
    assert override["secrets"]["master-keys"]["file"] == "./secrets/master-keys.json"
    ignored = (REPO / "deploy/secrets/.gitignore").read_text().split()
    assert "master-keys.json" in ignored  # a real key file never goes into git
    for name in nodes:
        node = override["services"][name]
        (secret,) = node["secrets"]
        assert (secret["source"], secret["mode"]) == ("master-keys", 0o400)
        environment = {**base["services"][name]["environment"], **node["environment"]}
        assert not unknown_settings(set(environment))
        assert environment["SHOAL_ENCRYPTION_KEY_FILE"] == f"/run/secrets/{secret['target']}"
        config = load_config(
            flags={"data_dir": str(tmp_path / name)},
            environ={k: str(v) for k, v in environment.items()},
        )
        assert config.encryption_master_key == "file"
