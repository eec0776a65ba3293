"""The 3-node cluster the cluster tests share: real node processes on loopback ports, formed
before the test starts, their logs printed when it fails, stopped afterwards. Defined here once.

`cluster` is one per test; `module_cluster` one per module, for tests that leave every node
running, formed and caught up when they end (a test that stops a node for good, or changes
what the next one assumes about placement, takes `cluster`). A module whose nodes need other
settings overrides `cluster_env` (module-scoped); a module that needs two differently set
clusters builds them with `formed_cluster`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.cluster.helpers import wait_formed
from tests.support import ClusterProcesses


@pytest.fixture(scope="module")
def cluster_env() -> Mapping[str, str]:
    """Extra environment of this module's nodes (knobs such as shorter failover times)."""
    return {}


@pytest.fixture
def cluster(tmp_path: Path, cluster_env: Mapping[str, str]) -> Iterator[ClusterProcesses]:
    yield from formed_cluster(tmp_path, cluster_env)


@pytest.fixture(scope="module")
def module_cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_env: Mapping[str, str]
) -> Iterator[ClusterProcesses]:
    yield from formed_cluster(tmp_path_factory.mktemp("cluster"), cluster_env)


def formed_cluster(
    tmp_path: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[ClusterProcesses]:
    """A formed 3-node cluster under `tmp_path` for the duration of a fixture."""
    processes = ClusterProcesses(tmp_path, extra_env=dict(extra_env or {}))
    processes.start()
    try:
        wait_formed(processes)
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()
